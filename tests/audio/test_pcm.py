"""Raw codecs and resampling: G.711 reference values, frames split anywhere, rates changed faithfully."""

import av
import numpy as np
import pytest

from stt.audio import UnsupportedAudio, open_decoder
from stt.audio.pcm import ALAW_TO_LINEAR, MULAW_TO_LINEAR, RAW_ENCODINGS, raw_encoding
from stt.events import AudioFormat
from tests.helpers import feed_in_chunks


def tone(freq, rate, seconds=1.0, amplitude=0.5):
    t = np.arange(int(rate * seconds)) / rate
    return amplitude * np.sin(2 * np.pi * freq * t)


def dominant_frequency(samples, rate):
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return np.fft.rfftfreq(len(samples), 1 / rate)[np.argmax(spectrum)]


def decode_in_chunks(fmt, data, sizes, target_rate=16000):
    with open_decoder(fmt, target_rate) as decoder:
        return feed_in_chunks(decoder, data, sizes)


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


# --- G.711: reference values, and FFmpeg's own decoders as an independent implementation --------------------


@pytest.mark.parametrize(("table", "byte", "value"), [
    # µ-law (Sun g711.c ulaw2linear): the extremes and the two zeros
    (MULAW_TO_LINEAR, 0x00, -32124), (MULAW_TO_LINEAR, 0x80, 32124),
    (MULAW_TO_LINEAR, 0x7F, 0), (MULAW_TO_LINEAR, 0xFF, 0),
    # A-law (Sun g711.c alaw2linear): the smallest levels either side of zero, and the extremes
    (ALAW_TO_LINEAR, 0xD5, 8), (ALAW_TO_LINEAR, 0x55, -8),
    (ALAW_TO_LINEAR, 0xAA, 32256), (ALAW_TO_LINEAR, 0x2A, -32256),
])
def test_g711_reference_values(table, byte, value):
    assert table[byte] == value


@pytest.mark.parametrize(("codec", "table"), [("pcm_mulaw", MULAW_TO_LINEAR), ("pcm_alaw", ALAW_TO_LINEAR)])
def test_g711_tables_equal_ffmpeg_decoders(codec, table):
    context = av.CodecContext.create(codec, "r")
    context.sample_rate = 8000
    context.layout = "mono"
    frames = context.decode(av.Packet(bytes(range(256))))
    ffmpeg = np.concatenate([frame.to_ndarray().ravel() for frame in frames])
    assert ffmpeg.dtype == np.int16 and len(ffmpeg) == 256
    assert np.array_equal(table, ffmpeg)


@pytest.mark.parametrize("table", [MULAW_TO_LINEAR, ALAW_TO_LINEAR], ids=["mulaw", "alaw"])
def test_g711_tables_are_odd_symmetric(table):
    # each law's 128 positive levels mirror its 128 negative ones: the sign bit flips nothing else
    levels = np.sort(table.astype(int))
    assert np.array_equal(levels, -levels[::-1])


# --- every raw encoding round-trips, split anywhere ---------------------------------------------------------

def _source_int16():
    """A 440 Hz sine at nearly full scale, and the values where encodings go wrong: extremes, 0, ±1."""
    sine = np.rint(tone(440, 16000, 0.05, amplitude=0.99) * 32767)
    edges = [-32768, -32767, -256, -129, -128, -1, 0, 1, 127, 128, 255, 256, 32766, 32767]
    return np.concatenate([edges, sine]).astype(np.int16)


def _pack24(values, big_endian):
    """int32 holding 24-bit values -> 3 packed bytes each, in the given byte order."""
    raw = (values.astype(np.int64) & 0xFFFFFF).astype("<u4").view(np.uint8).reshape(-1, 4)[:, :3]
    return (raw[:, ::-1] if big_endian else raw).tobytes()


def _nearest_code(table, values):
    """A G.711 encoder by brute force: the byte whose level is nearest each value."""
    return np.abs(table.astype(int)[None, :] - values.astype(int)[:, None]).argmin(axis=1).astype(np.uint8)


def _encode(name, x):
    """`x` (int16) written in encoding `name` by hand -> (bytes, the int16 the decoder should return, how far
    the decoder may be from that, how far from `x`)."""
    rng = np.random.default_rng(7)
    x32 = x.astype(np.int64)
    if name in ("pcm_s16le", "pcm_s16be"):
        return x.astype("<i2" if name.endswith("le") else ">i2").tobytes(), x, 0, 0  # 16 bits both ways: exact
    if name in ("pcm_s8", "pcm_u8"):
        top = (x32 >> 8).astype(np.int8)  # 8 bits keep the top byte: the low byte (< 256) is lost
        data = top.tobytes() if name == "pcm_s8" else (top.astype(np.int16) + 128).astype(np.uint8).tobytes()
        return data, top.astype(np.int16) * 256, 0, 255
    if name in ("pcm_s24le", "pcm_s24be"):
        wide = (x32 << 8) | rng.integers(0, 256, len(x))  # 8 bits below int16's last: < 1 step
        expect = np.clip(np.rint(wide / 256), -32768, 32767)  # rounded to the nearest int16 (x or x + 1)
        return _pack24(wide, name.endswith("be")), expect.astype(np.int16), 0, 1
    if name in ("pcm_s32le", "pcm_s32be"):
        wide = (x32 << 16) | rng.integers(0, 65536, len(x))
        expect = np.clip(np.rint(wide / 65536), -32768, 32767)
        # float32 keeps 24 of the 32 bits (an error of up to 2^-8 int16 step), so a value within that of a .5
        # tie may round the other way: one step from exact rounding; against x, the low bits add one step more
        return wide.astype("<i4" if name.endswith("le") else ">i4").tobytes(), expect.astype(np.int16), 1, 1
    if name.startswith("pcm_f"):
        # off the int16 grid by up to 0.45 step; float32 holds values to 2^-8 step, so each rounds back to x
        value = (x + rng.uniform(-0.45, 0.45, len(x))) / 32768
        dtype = ("<" if name.endswith("le") else ">") + ("f4" if "f32" in name else "f8")
        return value.astype(dtype).tobytes(), x, 0, 0
    table = MULAW_TO_LINEAR if name == "mulaw" else ALAW_TO_LINEAR
    codes = _nearest_code(table, x)
    # the nearest level is at most half the widest gap between levels (1024 in both laws' top segment) away,
    # or past the outermost level (µ-law ±32124, A-law ±32256): 644 and 512 at -32768
    bound = max(np.diff(np.sort(table.astype(int))).max() // 2, 32768 - int(table.max()))
    return codes.tobytes(), table[codes], 0, bound


def test_raw_encodings_are_ffmpegs_names():
    assert set(RAW_ENCODINGS) == {
        "pcm_s8", "pcm_u8", "mulaw", "alaw", "pcm_s16le", "pcm_s16be", "pcm_s24le", "pcm_s24be",
        "pcm_s32le", "pcm_s32be", "pcm_f32le", "pcm_f32be", "pcm_f64le", "pcm_f64be"}


@pytest.mark.parametrize("sizes", [[1], [3], [7, 13], [1 << 20]], ids=["1", "3", "7+13", "whole"])
@pytest.mark.parametrize("name", sorted(RAW_ENCODINGS))
def test_every_raw_encoding_round_trips(name, sizes):
    x = _source_int16()
    data, expect, tolerance, bound = _encode(name, x)
    out = decode_in_chunks(AudioFormat(name, 16000), data, sizes)
    assert out.dtype == np.int16 and len(out) == len(x)
    assert np.abs(out.astype(int) - expect).max() <= tolerance
    assert np.abs(out.astype(int) - x).max() <= bound


@pytest.mark.parametrize("name", ["pcm_s24be", "pcm_f32be", "pcm_u8"])
def test_raw_stereo_frames_split_mid_sample_are_reassembled(name):
    # two channels interleaved, split every 5 bytes: frames are 2, 6 or 8 bytes, so splits fall inside them
    x = _source_int16()
    data, expect, _, _ = _encode(name, np.stack([x, -x // 2], axis=1).ravel().astype(np.int16))
    decoder = open_decoder(AudioFormat(name, 16000, channels=2), 16000, split_channels=True)
    parts = [decoder.decode(data[i:i + 5]) for i in range(0, len(data), 5)] + [decoder.finish()]
    out = np.concatenate(parts, axis=1)
    assert np.array_equal(out, expect.reshape(-1, 2).T)


@pytest.mark.parametrize(("kind", "width", "big_endian", "name"), [
    ("signed", 1, False, "pcm_s8"), ("signed", 1, True, "pcm_s8"),  # one byte has no byte order
    ("unsigned", 1, False, "pcm_u8"), ("unsigned", 1, True, "pcm_u8"),
    ("mulaw", 1, False, "mulaw"), ("alaw", 1, True, "alaw"),
    ("signed", 2, False, "pcm_s16le"), ("signed", 2, True, "pcm_s16be"),
    ("signed", 3, False, "pcm_s24le"), ("signed", 3, True, "pcm_s24be"),
    ("signed", 4, False, "pcm_s32le"), ("signed", 4, True, "pcm_s32be"),
    ("float", 4, False, "pcm_f32le"), ("float", 4, True, "pcm_f32be"),
    ("float", 8, False, "pcm_f64le"), ("float", 8, True, "pcm_f64be"),
    # no such encodings
    ("signed", 0, False, None), ("signed", 5, False, None), ("signed", 8, False, None),
    ("unsigned", 2, False, None), ("float", 1, False, None), ("float", 2, False, None), ("float", 3, True, None),
    ("mulaw", 2, False, None), ("alaw", 2, True, None), ("adpcm", 1, False, None),
])
def test_raw_encoding_lookup(kind, width, big_endian, name):
    enc = raw_encoding(kind, width, big_endian)
    assert (enc.name if enc else None) == name
    if enc:
        assert enc is RAW_ENCODINGS[name] and enc.width == width
