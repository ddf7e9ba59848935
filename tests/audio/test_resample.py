"""Resampling and channels: every common rate to the engine's, fed in odd pieces, comes out the same signal.

The bounds:
- Length: soxr's stream resampler compensates its own delay and, flushed at finish, returns round(n * ratio)
  samples; the few samples allowed cover rounding of the ratio, nothing more.
- Accuracy: the output is compared with the same tones computed directly at the target rate. Quantising to
  int16 alone limits the SNR to about 90 dB for these levels; soxr's HQ filter measures about 90 dB here.
  40 dB still fails on the faults that matter: an output one sample late gives about 8 dB at 1 kHz (the
  phase moves 2*pi*1000/16000), a lost or repeated chunk, or a wrong ratio, far less.
- Edges: the filter's step response at the start and end of the stream is some ms long at these rates;
  10 ms (160 samples at 16 kHz) are left out at each end.
"""

import numpy as np
import pytest

from stt.audio import open_decoder
from stt.events import AudioFormat
from tests.helpers import feed_in_chunks

FREQS = (440.0, 1000.0)
EDGE = 160  # samples at the target rate left out at each end: 10 ms of filter transient
CHUNKS = [1, 7, 333, 1001]  # odd byte counts: the splits fall inside samples and frames


def tones(rate, n, freqs=FREQS, amplitude=0.4):
    t = np.arange(n) / rate
    return sum(amplitude * np.sin(2 * np.pi * f * t) for f in freqs)


def to_s16(signal):
    return np.rint(np.asarray(signal) * 32767).astype("<i2")


def feed(decoder, data, sizes=CHUNKS):
    return feed_in_chunks(decoder, data, sizes)


def snr_db(out, reference):
    out, reference = out[EDGE:-EDGE], reference[EDGE:-EDGE]
    return 10 * np.log10(np.sum(reference ** 2) / np.sum((out - reference) ** 2))


@pytest.mark.parametrize("rate", [8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000])
def test_one_second_at_any_rate_becomes_the_same_tones_at_16k(rate):
    data = to_s16(tones(rate, rate)).tobytes()  # 1 s
    out = feed(open_decoder(AudioFormat("pcm_s16le", rate), 16000), data)
    assert abs(len(out) - 16000) <= 2  # 1 s at 16 kHz
    assert snr_db(out / 32767, tones(16000, len(out))) > 40


@pytest.mark.parametrize("rate", [11025, 44100])
def test_length_follows_the_rate_ratio_for_odd_lengths(rate):
    # 0.3 s plus 7 samples: the exact count n * 16000 / rate is not a whole number
    n = int(rate * 0.3) + 7
    out = feed(open_decoder(AudioFormat("pcm_s16le", rate), 16000), to_s16(tones(rate, n)).tobytes())
    assert abs(len(out) - n * 16000 / rate) <= 2


def test_16k_down_to_8k():
    data = to_s16(tones(16000, 16000)).tobytes()
    out = feed(open_decoder(AudioFormat("pcm_s16le", 16000), 8000), data)
    assert abs(len(out) - 8000) <= 2
    assert snr_db(out / 32767, tones(8000, len(out))) > 40


def test_a_tone_above_the_target_nyquist_is_filtered_out():
    # 6 kHz at 48 kHz cannot exist at 8 kHz (Nyquist 4 kHz): the anti-alias filter must remove it, not fold
    # it to 2 kHz. What passes is the 440 Hz tone alone.
    data = to_s16(tones(48000, 48000, freqs=(440.0, 6000.0))).tobytes()
    out = feed(open_decoder(AudioFormat("pcm_s16le", 48000), 8000), data)
    assert snr_db(out / 32767, tones(8000, len(out), freqs=(440.0,))) > 40


def stereo(rate, n):
    """Left: 440 Hz, right: 1 kHz at a different level, interleaved s16le."""
    left, right = to_s16(tones(rate, n, (440.0,), 0.6)), to_s16(tones(rate, n, (1000.0,), 0.3))
    return left, right, np.stack([left, right], axis=1).ravel().tobytes()


def test_stereo_is_mixed_by_the_mean():
    left, right, data = stereo(16000, 4000)
    out = feed(open_decoder(AudioFormat("pcm_s16le", 16000, channels=2), 16000), data)
    # exact: the mean of two int16 is a half-integer at worst, and it is rounded to even
    assert np.array_equal(out, np.rint((left.astype(int) + right) / 2))


def test_stereo_mean_survives_a_resample():
    _, _, data = stereo(44100, 44100)
    out = feed(open_decoder(AudioFormat("pcm_s16le", 44100, channels=2), 16000), data)
    assert abs(len(out) - 16000) <= 2
    expect = (tones(16000, len(out), (440.0,), 0.6) + tones(16000, len(out), (1000.0,), 0.3)) / 2
    assert snr_db(out / 32767, expect) > 40


def test_split_channels_keeps_each_channel_intact():
    left, right, data = stereo(16000, 4000)
    out = feed(open_decoder(AudioFormat("pcm_s16le", 16000, channels=2), 16000, split_channels=True), data)
    assert out.shape == (2, 4000) and out.dtype == np.int16
    assert np.array_equal(out[0], left) and np.array_equal(out[1], right)


@pytest.mark.parametrize("rate", [8000, 44100, 48000])
def test_split_channels_survive_a_resample(rate):
    _, _, data = stereo(rate, rate)
    out = feed(open_decoder(AudioFormat("pcm_s16le", rate, channels=2), 16000, split_channels=True), data)
    assert out.shape[0] == 2 and abs(out.shape[1] - 16000) <= 2
    n = out.shape[1]
    # each channel is its own tone and nothing of the other: crosstalk would count as noise
    assert snr_db(out[0] / 32767, tones(16000, n, (440.0,), 0.6)) > 40
    assert snr_db(out[1] / 32767, tones(16000, n, (1000.0,), 0.3)) > 40


def test_split_channels_with_one_channel_is_one_row():
    data = to_s16(tones(16000, 1600)).tobytes()
    out = feed(open_decoder(AudioFormat("pcm_s16le", 16000), 16000, split_channels=True), data)
    assert out.shape == (1, 1600)
    assert np.array_equal(out[0], np.frombuffer(data, "<i2"))


def test_split_channels_with_one_channel_survives_a_resample():
    data = to_s16(tones(8000, 8000)).tobytes()
    out = feed(open_decoder(AudioFormat("pcm_s16le", 8000), 16000, split_channels=True), data)
    assert out.shape[0] == 1 and abs(out.shape[1] - 16000) <= 2
    assert snr_db(out[0] / 32767, tones(16000, out.shape[1])) > 40
