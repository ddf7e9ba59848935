"""Raw codecs and resampling: G.711 reference values, frames split anywhere, rates changed faithfully."""

import numpy as np
import pytest

from stt.audio import UnsupportedAudio, open_decoder
from stt.audio.pcm import MULAW_TO_LINEAR
from stt.events import AudioFormat


def tone(freq, rate, seconds=1.0, amplitude=0.5):
    t = np.arange(int(rate * seconds)) / rate
    return amplitude * np.sin(2 * np.pi * freq * t)


def dominant_frequency(samples, rate):
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return np.fft.rfftfreq(len(samples), 1 / rate)[np.argmax(spectrum)]


def decode_in_chunks(fmt, data, sizes, target_rate=16000):
    decoder = open_decoder(fmt, target_rate)
    out, i, k = [], 0, 0
    while i < len(data):
        n = sizes[k % len(sizes)]
        out.append(decoder.decode(data[i:i + n]))
        i, k = i + n, k + 1
    out.append(decoder.finish())
    return np.concatenate(out)


def test_mulaw_matches_g711_reference_values():
    # ITU-T G.711 µ-law decoder outputs (Sun g711.c ulaw2linear): byte -> 16-bit linear
    reference = {0x00: -32124, 0x0F: -16764, 0x10: -15996, 0x7E: -8, 0x7F: 0, 0x80: 32124, 0x8F: 16764,
                 0xF0: 120, 0xFE: 8, 0xFF: 0}
    for byte, value in reference.items():
        assert MULAW_TO_LINEAR[byte] == value, hex(byte)
    assert np.all(np.diff(MULAW_TO_LINEAR[0x80:0x100].astype(int)) < 0)  # monotone within each sign


@pytest.mark.parametrize("sizes", [[1], [3], [7, 1, 640], [100000]])
def test_s16_split_anywhere_decodes_to_the_same_samples(sizes):
    samples = (tone(440, 16000) * 32767).astype("<i2")
    out = decode_in_chunks(AudioFormat("pcm_s16le", 16000), samples.tobytes(), sizes)
    assert np.array_equal(out, samples)


def test_f32_decodes_with_clipping_and_no_nan():
    values = np.array([0.0, 0.5, -0.5, 1.5, -2.0, np.nan], dtype="<f4")
    out = decode_in_chunks(AudioFormat("pcm_f32le", 16000), values.tobytes(), [5])
    assert out.tolist() == [0, 16384, -16384, 32767, -32768, 0]


def test_mulaw_split_anywhere():
    data = bytes(range(256)) * 10
    out = decode_in_chunks(AudioFormat("mulaw", 16000), data, [1, 2, 13])
    assert np.array_equal(out, np.tile(MULAW_TO_LINEAR, 10))


@pytest.mark.parametrize("rate", [8000, 11025, 22050, 44100, 48000])
def test_resampling_keeps_length_and_pitch(rate):
    samples = (tone(440, rate, 2.0) * 32767).astype("<i2")
    out = decode_in_chunks(AudioFormat("pcm_s16le", rate), samples.tobytes(), [rate // 50 * 2 + 1])
    assert abs(len(out) - 32000) <= 2  # 2 s at 16 kHz, whatever the chunking
    assert abs(dominant_frequency(out.astype(float), 16000) - 440) < 2
    # the steady middle of the tone keeps its level (HQ resampler: well under 1 dB)
    middle = out[4000:-4000].astype(float)
    assert np.sqrt(np.mean(middle ** 2)) == pytest.approx(0.5 * 32767 / np.sqrt(2), rel=0.02)


def test_stereo_is_mixed_to_mono():
    left, right = np.full(100, 1000, "<i2"), np.full(100, 3000, "<i2")
    interleaved = np.stack([left, right], axis=1).ravel().tobytes()
    out = decode_in_chunks(AudioFormat("pcm_s16le", 16000, channels=2), interleaved, [3])
    assert np.all(out == 2000) and len(out) == 100


def test_unsupported_encoding_is_refused():
    with pytest.raises(UnsupportedAudio):
        open_decoder(AudioFormat("opus", 48000), 16000)
