"""WAV: every layout we accept, split at every byte of its header, through WavReader and through the decoder's
sniffing; the rules for a data chunk's size in streamed WAVs; and the headers we refuse."""

import io
import struct
import wave

import numpy as np
import pytest

from stt.audio import BadAudio, open_decoder
from stt.audio.pcm import ALAW_TO_LINEAR, MULAW_TO_LINEAR, raw_encoding
from stt.audio.wav import WavReader
from stt.events import AudioFormat

N = 256  # frames per file: every 8-bit code once, and short enough to split at every header byte
RATE = 16000
_PCM, _FLOAT, _ALAW, _MULAW, _EXTENSIBLE = 1, 3, 6, 7, 0xFFFE
# the KSDATAFORMAT_SUBTYPE GUIDs' common tail, after their first 4 bytes (the format tag, little-endian)
_GUID_TAIL = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"

rng = np.random.default_rng(2024)


# --- building WAVs ------------------------------------------------------------------------------------------

def chunk(cid, body, order="<", size=None):
    """A RIFF chunk: id, size, body and the pad byte an odd body needs."""
    size = len(body) if size is None else size
    return cid + struct.pack(order + "I", size) + body + (b"\0" if len(body) % 2 else b"")


def fmt(tag, channels, bits, rate=RATE, order="<", block_align=None, extra=b""):
    block = (bits + 7) // 8 * channels if block_align is None else block_align
    return chunk(b"fmt ", struct.pack(order + "HHIIHH", tag, channels, rate, rate * block, block, bits) + extra,
                 order)


def extensible(subtag, channels, bits, valid_bits=None):
    """WAVE_FORMAT_EXTENSIBLE: cbSize 22, valid bits, channel mask, and the sub-format GUID."""
    mask = (1 << channels) - 1
    extra = struct.pack("<HHI", 22, valid_bits or bits, mask) + struct.pack("<I", subtag) + _GUID_TAIL
    return fmt(_EXTENSIBLE, channels, bits, extra=extra)


def riff(*chunks, magic=b"RIFF", order="<", size=None):
    body = b"WAVE" + b"".join(chunks)
    return magic + struct.pack(order + "I", len(body) if size is None else size) + body


def with_wave_module(width, channels, frames, rate=RATE):
    """The stdlib's writer: integer PCM, 8 to 32 bits."""
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(frames)
    return out.getvalue()


def pack24(values, big_endian=False):
    raw = (values.astype(np.int64) & 0xFFFFFF).astype("<u4").view(np.uint8).reshape(-1, 4)[:, :3]
    return (raw[:, ::-1] if big_endian else raw).tobytes()


def s16(n, channels=1):
    x = rng.integers(-32768, 32768, (n, channels))
    x[:2] = [[-32768], [32767]]  # the extremes
    return x


# Each case: (file bytes, rate, channels, the float32 frames (n, channels) the reader must give)
def _cases():
    x1, x2 = s16(N), s16(N, 2)
    u8 = np.arange(256).reshape(-1, 1)
    x24 = rng.integers(-(1 << 23), 1 << 23, (N, 2))
    x32 = rng.integers(-(1 << 31), 1 << 31, (N, 1))
    f = rng.uniform(-1, 1, (N, 2)).astype(np.float32)
    f64 = rng.uniform(-1, 1, (N, 1))
    codes = np.arange(256, dtype=np.uint8)
    fact = chunk(b"fact", struct.pack("<I", N))
    cb0 = struct.pack("<H", 0)  # cbSize 0: a non-PCM fmt chunk is 18 bytes
    ds64 = chunk(b"ds64", struct.pack("<QQQI", 0, 2 * N, N, 0))
    return {
        "s16-mono": (with_wave_module(2, 1, x1.astype("<i2").tobytes()), RATE, 1, x1 / 32768),
        "s16-stereo": (with_wave_module(2, 2, x2.astype("<i2").tobytes()), RATE, 2, x2 / 32768),
        "u8": (with_wave_module(1, 1, u8.astype(np.uint8).tobytes(), 8000), 8000, 1, (u8 - 128) / 128),
        "s24-stereo": (with_wave_module(3, 2, pack24(x24.ravel())), RATE, 2, x24 / 2**23),
        "s32": (with_wave_module(4, 1, x32.astype("<i4").tobytes()), RATE, 1, x32 / 2**31),
        "f32-stereo": (riff(fmt(_FLOAT, 2, 32, extra=cb0), fact, chunk(b"data", f.astype("<f4").tobytes())),
                       RATE, 2, f),
        "f64": (riff(fmt(_FLOAT, 1, 64, extra=cb0), fact, chunk(b"data", f64.astype("<f8").tobytes())),
                RATE, 1, f64),
        "alaw": (riff(fmt(_ALAW, 1, 8, 8000, extra=cb0), fact, chunk(b"data", codes.tobytes())),
                 8000, 1, ALAW_TO_LINEAR.reshape(-1, 1) / 32768),
        "mulaw": (riff(fmt(_MULAW, 1, 8, 8000, extra=cb0), fact, chunk(b"data", codes.tobytes())),
                  8000, 1, MULAW_TO_LINEAR.reshape(-1, 1) / 32768),
        "extensible-s16-stereo": (riff(extensible(_PCM, 2, 16), chunk(b"data", x2.astype("<i2").tobytes())),
                                  RATE, 2, x2 / 32768),
        "extensible-s24-in-32": (riff(extensible(_PCM, 1, 32, valid_bits=24),
                                      chunk(b"data", (x24[:, :1] << 8).astype("<i4").tobytes())),
                                 RATE, 1, x24[:, :1] / 2**23),
        "extensible-float": (riff(extensible(_FLOAT, 2, 32), fact, chunk(b"data", f.astype("<f4").tobytes())),
                             RATE, 2, f),
        "rifx-s16-stereo": (riff(fmt(_PCM, 2, 16, order=">"), chunk(b"data", x2.astype(">i2").tobytes(), ">"),
                                 magic=b"RIFX", order=">"), RATE, 2, x2 / 32768),
        "rifx-s24": (riff(fmt(_PCM, 2, 24, order=">"), chunk(b"data", pack24(x24.ravel(), True), ">"),
                          magic=b"RIFX", order=">"), RATE, 2, x24 / 2**23),
        "rifx-f32": (riff(fmt(_FLOAT, 2, 32, order=">"), chunk(b"data", f.astype(">f4").tobytes(), ">"),
                          magic=b"RIFX", order=">"), RATE, 2, f),
        "rf64": (riff(ds64, fmt(_PCM, 1, 16), chunk(b"data", x1.astype("<i2").tobytes(), size=0xFFFFFFFF),
                      magic=b"RF64", size=0xFFFFFFFF), RATE, 1, x1 / 32768),
    }


CASES = _cases()


def header_length(data):
    """Bytes up to the first audio byte: everything before it is header."""
    return data.index(b"data") + 8


def as_int16(frames):
    """What the decoder makes of float frames: scaled by 32768, rounded, clipped."""
    return np.clip(np.rint(np.asarray(frames, np.float64) * 32768), -32768, 32767).astype(np.int16)


def read(data, pieces):
    """WavReader over `data` cut at the offsets in `pieces`; every frame it returns, and the reader."""
    reader = WavReader()
    bounds = [0, *pieces, len(data)]
    out = [reader.feed(data[a:b]) for a, b in zip(bounds, bounds[1:])]
    out.append(reader.finish())
    # before the header is complete the channel count is unknown and an empty result is (0, 1)
    return np.concatenate([o for o in out if len(o)] or [np.zeros((0, reader.channels or 1), np.float32)]), reader


def decode_file(data, pieces, rate, **options):
    decoder = open_decoder(AudioFormat("file"), rate, **options)
    bounds = [0, *pieces, len(data)]
    out = [decoder.decode(data[a:b]) for a, b in zip(bounds, bounds[1:])]
    out.append(decoder.finish())
    return np.concatenate([o for o in out if o.shape[-1]], axis=-1), decoder


# float32 has a 24-bit significand: the 32-bit and 64-bit sources (and only they) are rounded to it, an error
# of at most 2^-24 for values in [-1, 1)
TOLERANCE = 2.0 ** -24


# --- every layout ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", CASES)
def test_reader_decodes_every_layout(name):
    data, rate, channels, expect = CASES[name]
    out, reader = read(data, [])
    assert (reader.sample_rate, reader.channels) == (rate, channels)
    assert out.dtype == np.float32 and out.shape == expect.shape
    np.testing.assert_allclose(out, expect, rtol=0, atol=TOLERANCE)


@pytest.mark.parametrize("name", CASES)
def test_reader_header_split_at_every_byte(name):
    data, _, _, expect = CASES[name]
    for k in range(header_length(data) + 1):
        out, _ = read(data, [k])
        np.testing.assert_allclose(out, expect, rtol=0, atol=TOLERANCE, err_msg=f"split at {k}")


@pytest.mark.parametrize("name", CASES)
def test_reader_in_one_byte_frames(name):
    data, _, _, expect = CASES[name]
    out, _ = read(data, range(1, len(data)))
    np.testing.assert_allclose(out, expect, rtol=0, atol=TOLERANCE)


@pytest.mark.parametrize("name", CASES)
def test_decoder_sniffs_every_layout_split_at_every_header_byte(name):
    data, rate, channels, expect = CASES[name]
    # at the file's own rate nothing is resampled, so the samples are the source's, channel by channel;
    # 32/64-bit sources went through float32 and may round one step the other way at a .5 tie
    tolerance = 1 if name in ("s32", "f64") else 0
    for k in range(header_length(data) + 1):
        out, decoder = decode_file(data, [k], rate, split_channels=True)
        assert decoder.container == "wav" and (decoder.sample_rate, decoder.channels) == (rate, channels)
        assert out.shape == (channels, len(expect))
        assert np.abs(out.astype(int) - as_int16(expect).T).max() <= tolerance, f"split at {k}"


@pytest.mark.parametrize("name", CASES)
def test_decoder_in_one_byte_frames_mixes_to_mono(name):
    data, rate, _, expect = CASES[name]
    out, _ = decode_file(data, range(1, len(data)), rate)
    # the mean of the channels, rounded once: one step for the rounding of float32 sums and the .5 ties
    assert out.shape == (len(expect),)
    assert np.abs(out.astype(int) - as_int16(expect.mean(axis=1))).max() <= 1


def test_decoder_resamples_a_wav_to_the_target_rate():
    data, _, _, expect = CASES["alaw"]  # 8 kHz
    out, decoder = decode_file(data, [7], 16000)
    assert decoder.sample_rate == 8000 and abs(len(out) - 2 * len(expect)) <= 2  # twice as many samples


def test_twelve_bit_pcm_is_read_as_its_16_bit_container():
    # WAV stores 12-bit samples left-justified in 16 bits (the low 4 bits zero), so reading the container as
    # 16-bit gives the right scale: 0x7FF0 is nearly full scale, as it should be, not 16 times louder.
    x = (rng.integers(-2048, 2048, (N, 1)) << 4)
    data = riff(fmt(_PCM, 1, 12), chunk(b"data", x.astype("<i2").tobytes()))
    out, reader = read(data, [])
    assert reader.encoding.name == "pcm_s16le" and raw_encoding("signed", (12 + 7) // 8).name == "pcm_s16le"
    assert np.array_equal(out, x / 32768)


# --- chunks around the data --------------------------------------------------------------------------------

X = s16(N)
AUDIO = X.astype("<i2").tobytes()
FMT16 = fmt(_PCM, 1, 16)
LIST = chunk(b"LIST", b"INFOISFT" + struct.pack("<I", 6) + b"Lavf\0\0")


@pytest.mark.parametrize("before", [
    [LIST, FMT16],  # LIST before fmt
    [FMT16, LIST, chunk(b"fact", struct.pack("<I", N))],
    [FMT16, chunk(b"odd ", b"abc")],  # a 3-byte chunk and its pad byte
    [chunk(b"JUNK", b"\0" * 28), FMT16, chunk(b"bext", b"x" * 601), chunk(b"id3 ", b"ID3" + b"\0" * 8)],
], ids=["list-fmt", "fmt-list-fact", "odd-chunk", "junk-bext-id3"])
def test_chunks_before_data_are_skipped(before):
    data = riff(*before, chunk(b"data", AUDIO))
    for pieces in ([], range(1, len(data))):
        out, _ = read(data, pieces)
        assert np.array_equal(out, X / 32768)


@pytest.mark.parametrize("after", [LIST, chunk(b"id3 ", b"ID3\x04" + b"\xff" * 40), chunk(b"odd ", b"\x80" * 5)])
def test_a_chunk_after_data_is_not_audio(after):
    data = riff(FMT16, chunk(b"data", AUDIO), after)
    for pieces in ([], range(1, len(data)), [len(data) - len(after) + 2]):  # whole, bytewise, header split
        out, _ = read(data, pieces)
        assert np.array_equal(out, X / 32768)


def test_an_odd_sized_data_chunk_is_followed_by_its_pad_byte_then_a_chunk():
    # 8-bit, 255 samples: the pad byte is not a sample, and the LIST chunk after it is not audio
    codes = np.arange(255, dtype=np.uint8)
    data = riff(fmt(_PCM, 1, 8), chunk(b"data", codes.tobytes()), LIST)
    for pieces in ([], range(1, len(data))):
        out, _ = read(data, pieces)
        assert np.array_equal(out[:, 0], (codes - 128.0) / 128)


@pytest.mark.parametrize("size", [0, 0xFFFFFFFF])
def test_streamed_data_size_means_everything_after_is_audio(size):
    # a pipe writes 0 or 0xFFFFFFFF; all that follows is audio, however much of it comes
    data = riff(FMT16, chunk(b"data", AUDIO * 3, size=size), size=size)
    for pieces in ([], range(1, len(data)), [header_length(data) + 1, len(data) - 1]):
        out, _ = read(data, pieces)
        assert np.array_equal(out[:, 0], np.tile(X[:, 0], 3) / 32768)
    out, _ = decode_file(data, range(0, len(data), 5), RATE)
    assert np.array_equal(out, np.tile(X[:, 0], 3))


@pytest.mark.parametrize("stated", [2, 100, len(AUDIO) // 2, len(AUDIO) - 6])
def test_a_data_size_too_small_keeps_all_the_audio_after_it(stated):
    # a client wrote the header once, then kept sending: no chunk header follows the stated end
    data = riff(FMT16, chunk(b"data", AUDIO, size=stated))
    for pieces in ([], range(1, len(data)), [header_length(data) + stated + 1]):
        out, _ = read(data, pieces)
        assert np.array_equal(out[:, 0], X[:, 0] / 32768)


def test_a_data_size_too_small_by_one_sample_keeps_that_sample():
    # The module's rule: the stated size is trusted only when a chunk header follows; nothing is lost.
    # Here 2 bytes (one sample) follow the stated end and then the stream ends: no chunk header can follow.
    data = riff(FMT16, chunk(b"data", AUDIO, size=len(AUDIO) - 2))
    out, _ = read(data, [])
    assert len(out) == N  # BUG: the reader waits for 4 bytes to look for a chunk id and finish() drops them


def test_rf64_trusts_the_data_size_in_its_ds64_chunk():
    # RF64 (EBU Tech 3306) always writes 0xFFFFFFFF in the data chunk's size and the real size in ds64; a
    # chunk after the data (BWF/ADM files put axml and chna there) must not be decoded as audio.
    ds64 = chunk(b"ds64", struct.pack("<QQQI", 0, len(AUDIO), N, 0))
    data = riff(ds64, FMT16, chunk(b"data", AUDIO, size=0xFFFFFFFF), LIST, magic=b"RF64", size=0xFFFFFFFF)
    out, _ = read(data, [])
    assert len(out) == N  # BUG: ds64 is skipped, so the 26-byte LIST chunk comes out as 13 more samples


def test_a_data_size_too_large_keeps_what_came_and_drops_a_partial_frame():
    # a truncated file: the audio that did arrive is decoded, the half sample at the end is not
    data = riff(FMT16, b"data" + struct.pack("<I", len(AUDIO) * 10) + AUDIO + b"\x01")
    out, _ = read(data, range(1, len(data), 3))
    assert np.array_equal(out[:, 0], X[:, 0] / 32768)


# --- refused ------------------------------------------------------------------------------------------------

def _refusals():
    """name -> (the stream, what the error says)."""
    data16 = chunk(b"data", AUDIO)
    return {
        "not-riff": (b"RIFZ" + struct.pack("<I", 100) + b"WAVE" + FMT16, "not a WAV file"),
        "riff-not-wave": (b"RIFF" + struct.pack("<I", 100) + b"AVI " + b"\0" * 60, "not a WAV file"),
        "data-before-fmt": (riff(data16, FMT16), "before its fmt"),
        "no-fmt": (riff(LIST, data16), "before its fmt"),
        "mp3-in-wav": (riff(fmt(0x0055, 1, 0, block_align=1), data16), "tag 0x0055"),
        "ima-adpcm": (riff(fmt(0x0011, 1, 4, block_align=256), data16), "tag 0x0011"),
        "ms-adpcm": (riff(fmt(0x0002, 1, 4, block_align=256), data16), "tag 0x0002"),
        "extensible-mp3": (riff(extensible(0x0055, 1, 16), data16), "tag 0x0055"),
        "extensible-too-short": (riff(fmt(_EXTENSIBLE, 1, 16, extra=struct.pack("<H", 0)), data16), "tag 0xfffe"),
        "float-16-bit": (riff(fmt(_FLOAT, 1, 16), data16), "16-bit float"),
        "float-24-bit": (riff(fmt(_FLOAT, 1, 24), data16), "24-bit float"),
        "mulaw-16-bit": (riff(fmt(_MULAW, 1, 16), data16), "16-bit mulaw"),
        "pcm-48-bit": (riff(fmt(_PCM, 1, 48), data16), "48-bit signed"),
        "pcm-0-bit": (riff(fmt(_PCM, 1, 0, block_align=0), data16), "0-bit"),
        "block-align": (riff(fmt(_PCM, 2, 16, block_align=2), data16), "block alignment 2"),
        "zero-channels": (riff(fmt(_PCM, 0, 16, block_align=0), data16), "0 channels"),
        "zero-rate": (riff(fmt(_PCM, 1, 16, rate=0), data16), "at 0 Hz"),
        "1-hz": (riff(fmt(_PCM, 1, 8, rate=1, block_align=1), data16), "at 1 Hz \\(rates from 4000 to 192000"),
        "over-192-khz": (riff(fmt(_PCM, 1, 16, rate=384000), data16), "at 384000 Hz"),
        "fmt-too-short": (riff(chunk(b"fmt ", struct.pack("<HHII", 1, 1, RATE, 2 * RATE)), data16), "too short"),
        "huge-chunk-before-data": (riff(FMT16, chunk(b"LIST", b"", size=4 << 20)), "too large"),
    }


REFUSALS = _refusals()


@pytest.mark.parametrize("name", REFUSALS)
def test_bad_headers_raise_bad_audio(name):
    data, message = REFUSALS[name]
    with pytest.raises(BadAudio, match=message):
        read(data, [])
    with pytest.raises(BadAudio, match=message):  # and bytewise: the error comes however the header arrives
        read(data, range(1, len(data)))
    # and through the decoder, sniffing (to it a stream without RIFF....WAVE is no WAV: a generic error)
    with pytest.raises(BadAudio, match="unrecognised audio file" if "riff" in name else message):
        decode_file(data, [], RATE)


def test_block_align_zero_is_accepted():
    # some writers leave it 0; the frame size follows from channels and bits
    out, _ = read(riff(fmt(_PCM, 1, 16, block_align=0), chunk(b"data", AUDIO)), [])
    assert np.array_equal(out, X / 32768)


@pytest.mark.parametrize("name", ["s16-stereo", "f32-stereo", "extensible-s16-stereo", "rf64"])
def test_a_stream_that_ends_inside_the_header_raises_at_finish(name):
    data = CASES[name][0]
    for k in range(header_length(data)):  # every cut before the first audio byte, even the empty stream
        reader = WavReader()
        assert len(reader.feed(data[:k])) == 0
        with pytest.raises(BadAudio):
            reader.finish()
        if k:
            decoder = open_decoder(AudioFormat("file"), RATE)
            decoder.decode(data[:k])
            with pytest.raises(BadAudio):
                decoder.finish()


def test_a_header_with_no_audio_yet_is_not_an_error():
    # the header ended and the data chunk is empty: no audio, but nothing wrong with the stream
    reader = WavReader()
    assert reader.feed(riff(FMT16, chunk(b"data", b""))).shape == (0, 1)
    assert reader.finish().shape == (0, 1)


# --- sniffing a declared raw format -------------------------------------------------------------------------

def sniffed(data, pieces, rate=16000):
    decoder = open_decoder(AudioFormat("pcm_s16le", 16000, sniff=True), rate)
    bounds = [0, *pieces, len(data)]
    out = [decoder.decode(data[a:b]) for a, b in zip(bounds, bounds[1:])] + [decoder.finish()]
    return np.concatenate(out), decoder


def test_sniff_a_leading_wav_header_overrides_the_declared_raw_format():
    # declared 16 kHz raw; the stream is an 8 kHz WAV: it is read as the WAV says and resampled to 16 kHz,
    # exactly as the same samples declared as 8 kHz raw are (one decode call each, so soxr sees the same input)
    tone = np.rint(6000 * np.sin(2 * np.pi * 440 * np.arange(800) / 8000)).astype("<i2")
    wav = with_wave_module(2, 1, tone.tobytes(), 8000)
    out, decoder = sniffed(wav, [])
    assert (decoder.container, decoder.sample_rate) == ("wav", 8000)
    raw = open_decoder(AudioFormat("pcm_s16le", 8000), 16000)
    assert np.array_equal(out, np.concatenate([raw.decode(tone.tobytes()), raw.finish()]))
    assert abs(len(out) - 1600) <= 2  # 0.1 s at 16 kHz
    split, _ = sniffed(wav, range(1, len(wav), 3))  # in pieces too: the same length
    assert abs(len(split) - 1600) <= 2


def test_sniff_without_a_header_decodes_raw():
    out, decoder = sniffed(AUDIO, [5, 11, 12, 13])
    assert decoder.container == "raw"
    assert np.array_equal(out, X[:, 0])


@pytest.mark.parametrize("n", [0, 1, 2, 10, 11])
def test_sniff_a_raw_stream_shorter_than_the_sniff_still_decodes_at_finish(n):
    decoder = open_decoder(AudioFormat("pcm_s16le", 16000, sniff=True), 16000)
    assert len(decoder.decode(AUDIO[:n])) == 0  # too short to tell yet
    tail = decoder.finish()
    assert decoder.container == "raw"
    assert np.array_equal(tail, X[: n // 2, 0])  # whole samples; an odd last byte is half a sample
