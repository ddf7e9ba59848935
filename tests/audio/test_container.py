"""Compressed containers through FFmpeg's demuxers, fed as bytes stream in: the real speech clip encoded by
PyAV itself into each container, then decoded split into 1-byte, odd-sized and whole frames.

Every blocking call runs under a hard timeout (`bounded`), so a decoder thread that hangs fails the test
instead of the run.
"""

from __future__ import annotations

import io
import threading
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np
import pytest
import soxr

from stt.audio import BadAudio, open_decoder
from stt.audio.container import ContainerReader
from stt.events import AudioFormat

CLIP = Path(__file__).parent.parent / "data" / "ps_goforward.wav"
RATE = 16000
TIMEOUT = 10.0  # seconds any one decode may take before it counts as a hang


# --- encoding the clip ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Codec:
    muxer: str  # FFmpeg's muxer (format) name
    encoder: str
    container: str  # what open_decoder should report (sniff's name)
    rate: int = RATE  # the encoder's rate; the clip is resampled to it
    layout: str = "mono"
    bit_rate: int | None = None
    codec_options: dict = field(default_factory=dict)
    muxer_options: dict = field(default_factory=dict)
    streamed: bool = True  # decoded as the bytes arrive (not collected whole)
    fixture: str | None = None  # the clip encoded once, kept in tests/data: for an encoder not every PyAV ships


CODECS = {
    # MP3 as FFmpeg writes it: an ID3v2 tag, then a Xing/LAME frame (gapless info), then MPEG-2 layer III.
    "mp3": Codec("mp3", "libmp3lame", "id3"),
    # The same without the ID3v2 tag: starts with a bare MPEG frame sync.
    "mp3-bare": Codec("mp3", "libmp3lame", "mp3", muxer_options={"id3v2_version": "0"}),
    "flac": Codec("flac", "flac", "flac"),
    "ogg-opus": Codec("ogg", "libopus", "ogg", rate=48000),
    # FFmpeg's native Vorbis encoder is experimental and only encodes stereo. Its packets would all land in one
    # Ogg page (which no demuxer can deliver before the page ends), so ask the muxer for shorter pages.
    "ogg-vorbis": Codec("ogg", "vorbis", "ogg", layout="stereo", codec_options={"strict": "-2"},
                        muxer_options={"page_duration": "100000"}),
    "aac": Codec("adts", "aac", "aac"),
    "m4a": Codec("mp4", "aac", "mp4", streamed=False),
    # AMR-NB at its top mode (12.2 kbit/s, GSM EFR); PyAV's default would be the lowest, 4.75 kbit/s. PyAV's
    # wheels from 18.1.1 on have FFmpeg's AMR-NB decoder but no encoder (libopencore_amrnb), so the clip is read
    # from the file this encode made with PyAV 18.1.0.
    "amr": Codec("amr", "libopencore_amrnb", "amr", rate=8000, bit_rate=12200, fixture="ps_goforward.amr"),
    "webm": Codec("webm", "libopus", "matroska", rate=48000),
    "aiff": Codec("aiff", "pcm_s16be", "aiff"),
}


def read_clip() -> np.ndarray:
    with wave.open(str(CLIP)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (RATE, 1, 2)
        return np.frombuffer(w.readframes(w.getnframes()), "<i2").copy()


def encode(samples: np.ndarray, codec: Codec) -> bytes:
    buf = io.BytesIO()
    with av.open(buf, "w", format=codec.muxer, container_options=codec.muxer_options) as out:
        stream = out.add_stream(codec.encoder, rate=codec.rate, layout=codec.layout, options=codec.codec_options)
        if codec.bit_rate:
            stream.bit_rate = codec.bit_rate
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = RATE
        resampler = av.AudioResampler(format=stream.codec_context.format, layout=codec.layout, rate=codec.rate,
                                      frame_size=stream.codec_context.frame_size or None)
        for chunk in [*resampler.resample(frame), *resampler.resample(None), None]:
            for packet in stream.encode(chunk):
                out.mux(packet)
    return buf.getvalue()


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    return read_clip()


@pytest.fixture(scope="module")
def encoded(clip) -> dict[str, bytes]:
    return {name: (CLIP.parent / codec.fixture).read_bytes() if codec.fixture else encode(clip, codec)
            for name, codec in CODECS.items()}


# --- running the decoder under a hard timeout -----------------------------------------------------------------


def bounded(fn, *args, timeout: float = TIMEOUT):
    """fn(*args) in a thread: its result, or its exception re-raised here; a hang fails the test."""
    result = {}

    def target():
        try:
            result["value"] = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - handed to the test's thread
            result["error"] = exc

    thread = threading.Thread(target=target, name="test-bounded", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        pytest.fail(f"{getattr(fn, '__name__', fn)} did not return within {timeout} s (a hang)")
    if "error" in result:
        raise result["error"]
    return result["value"]


def chunks(data: bytes, sizes):
    """data cut into pieces of the given sizes (the last size repeats)."""
    i, k = 0, 0
    while i < len(data):
        n = sizes[min(k, len(sizes) - 1)]
        yield data[i:i + n]
        i, k = i + n, k + 1


def decode_pieces(data: bytes, sizes, **options):
    """(decoder, outputs of each decode call, finish's output) for data fed in pieces."""
    def run():
        with open_decoder(AudioFormat("file"), RATE, **options) as decoder:
            outputs = [decoder.decode(piece) for piece in chunks(data, sizes)]
            return decoder, outputs, decoder.finish()
    return bounded(run)


def decode_all(data: bytes, sizes) -> np.ndarray:
    _, outputs, tail = decode_pieces(data, sizes)
    return np.concatenate([*outputs, tail])


def audio_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("stt-audio-") and t.is_alive()}


def wait_for_no_new_threads(before: set, timeout: float = 2.0) -> set:
    deadline = time.monotonic() + timeout
    while (left := audio_threads() - before) and time.monotonic() < deadline:
        time.sleep(0.01)
    return left


# --- comparing with the source ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fidelity:
    """How close a codec's decoded output must be to the clip.

    min_corr: Pearson correlation after the best lag (None: the samples must be identical).
    max_lag: the codec's priming delay, in output samples at 16 kHz, that FFmpeg may leave in.
    max_pad: samples the output may run past the clip's end (the codec's last frame, padded).
    band: (low, high) Hz that both signals are compared in; None for the full band.
    """

    min_corr: float | None
    max_lag: int = 0
    max_pad: int = 0
    band: tuple[int, int] | None = None
    narrowband: bool = False  # compare with the clip resampled through 8 kHz, as the codec hears it


FIDELITY = {
    # Lossless, with no priming: bit-exact, same length.
    "flac": Fidelity(None),
    "aiff": Fidelity(None),
    # MPEG-2 layer III, ~24 kbit/s (PyAV's default bit rate for 16 kHz mono; measured 0.986). The Xing/LAME frame
    # carries the encoder delay, which FFmpeg removes (lag 0); the end keeps part of the last 576-sample frame.
    "mp3": Fidelity(0.97, max_lag=1105, max_pad=1152),
    "mp3-bare": Fidelity(0.97, max_lag=1105, max_pad=1152),
    # Opus at 48 kHz, ~64 kbit/s (measured 0.996): pre-skip and the end trim are in the Ogg/Matroska framing, so the
    # length is exact up to the 48 -> 16 kHz resampling.
    "ogg-opus": Fidelity(0.99, max_lag=16, max_pad=16),
    "webm": Fidelity(0.99, max_lag=16, max_pad=16),
    # Vorbis (FFmpeg's experimental encoder, measured 0.998); the decoder does not trim the last block.
    "ogg-vorbis": Fidelity(0.99, max_lag=16, max_pad=2048),
    # AAC-LC, ~64 kbit/s, is near-transparent for this clip (measured 0.9999). ADTS has nowhere to say
    # how long the priming is, so its 1024 samples stay in; FFmpeg's mp4 muxer does not write it either.
    "aac": Fidelity(0.999, max_lag=1024, max_pad=1024),
    "m4a": Fidelity(0.999, max_lag=1024, max_pad=1024),
    # AMR-NB is narrowband speech coding: 8 kHz, a 80 Hz high-pass in its pre-processing, and a CELP
    # synthesis that matches the waveform only where the speech is. This recording carries 39 % of its energy
    # below 300 Hz (rumble), which AMR drops, so the full-band correlation (even against the clip resampled
    # through 8 kHz) is only ~0.67. In the telephone band, 300-3400 Hz, 12.2 kbit/s measures 0.948.
    "amr": Fidelity(0.92, max_lag=320, max_pad=320, band=(300, 3400), narrowband=True),
}


def band_pass(samples: np.ndarray, low: float, high: float, rate: int = RATE) -> np.ndarray:
    spectrum = np.fft.rfft(samples.astype(np.float64))
    freqs = np.fft.rfftfreq(len(samples), 1 / rate)
    spectrum[(freqs < low) | (freqs > high)] = 0
    return np.fft.irfft(spectrum, len(samples))


def best_lag(out: np.ndarray, ref: np.ndarray, max_lag: int) -> int:
    """The delay (0..max_lag) of `ref` in `out` with the largest cross-correlation."""
    n = 1 << int(np.ceil(np.log2(len(out) + len(ref))))
    cross = np.fft.irfft(np.fft.rfft(out, n) * np.conj(np.fft.rfft(ref, n)), n)
    return int(np.argmax(cross[: max_lag + 1]))


def alignment(out: np.ndarray, ref: np.ndarray, fidelity: Fidelity) -> tuple[int, float]:
    """(lag, correlation) of out against ref over their overlap, at the lag that fits best."""
    a, b = out.astype(np.float64), ref.astype(np.float64)
    if fidelity.band:
        a, b = band_pass(a, *fidelity.band), band_pass(b, *fidelity.band)
    lag = best_lag(a, b, fidelity.max_lag + 64)  # look a little past the bound, to report a wrong delay
    a = a[lag:]
    n = min(len(a), len(b))
    return lag, float(np.corrcoef(a[:n], b[:n])[0, 1])


# --- decoding: fidelity and determinism -------------------------------------------------------------------------


def byte_split(size: int) -> list[int]:
    """1-byte pieces: the whole file where it is small, else its first 6000 bytes (all the headers and the
    first frames), then 4 KiB pieces. A thread hand-off costs ~20 us, so this keeps the suite fast."""
    return [1] if size <= 10_000 else [1] * 6000 + [4096]


@pytest.fixture(scope="module")
def decoded(encoded) -> dict[str, np.ndarray]:
    return {name: decode_all(data, [len(data)]) for name, data in encoded.items()}


def test_the_fixture_encodes_what_each_case_says(encoded):
    assert set(FIDELITY) == set(CODECS)
    for name, data in encoded.items():
        codec = CODECS[name]
        with av.open(io.BytesIO(data)) as probe:
            (stream,) = probe.streams.audio
            assert stream.codec_context.sample_rate == codec.rate, name
            assert len(stream.layout.channels) == (2 if codec.layout == "stereo" else 1), name
    assert encoded["mp3-bare"][:2] == b"\xff\xf3" and encoded["mp3"][:3] == b"ID3"


@pytest.mark.parametrize("name", [n for n, c in CODECS.items() if c.fixture])
def test_a_kept_file_is_what_its_case_encodes(name, clip):
    """Where this PyAV has the encoder, the file kept in tests/data is the bytes its case would make."""
    try:
        fresh = encode(clip, CODECS[name])
    except av.codec.codec.UnknownCodecError as exc:
        pytest.skip(f"this PyAV ({av.__version__}) has no encoder {exc}")
    assert fresh == (CLIP.parent / CODECS[name].fixture).read_bytes()


@pytest.mark.parametrize("name", CODECS)
def test_any_split_decodes_to_the_same_samples(name, encoded, decoded):
    data = encoded[name]
    decoder, outputs, tail = decode_pieces(data, byte_split(len(data)))
    assert decoder.container == CODECS[name].container
    assert decoder.sample_rate == CODECS[name].rate
    assert decoder.channels == (2 if CODECS[name].layout == "stereo" else 1)
    by_bytes = np.concatenate([*outputs, tail])
    by_odd = decode_all(data, [997])
    whole = decoded[name]
    assert whole.dtype == np.int16 and whole.ndim == 1
    assert len(whole) > 0
    assert np.array_equal(by_bytes, whole), f"{len(by_bytes)} vs {len(whole)} samples"
    assert np.array_equal(by_odd, whole), f"{len(by_odd)} vs {len(whole)} samples"


@pytest.mark.parametrize("name", CODECS)
def test_decoded_audio_matches_the_clip(name, clip, decoded):
    out, fidelity = decoded[name], FIDELITY[name]
    if fidelity.min_corr is None:
        assert np.array_equal(out, clip)
        return
    ref = clip
    if fidelity.narrowband:
        ref = soxr.resample(soxr.resample(clip.astype(np.float32), RATE, 8000, "HQ"), 8000, RATE, "HQ")
    lag, corr = alignment(out, ref, fidelity)
    assert lag <= fidelity.max_lag, f"{name}: the clip starts {lag} samples in"
    assert corr >= fidelity.min_corr, f"{name}: correlation {corr:.4f} at lag {lag}"
    pad = len(out) - lag - len(clip)
    assert -fidelity.max_pad <= pad <= fidelity.max_pad, f"{name}: {len(out)} samples, lag {lag}, clip {len(clip)}"


@pytest.mark.parametrize("name", [n for n, c in CODECS.items() if c.streamed])
def test_streamed_containers_give_audio_before_the_end(name, encoded, decoded):
    """A live stream must not wait for its end: after half of the bytes, samples have come out."""
    data = encoded[name]
    half = len(data) // 2

    def run():
        with open_decoder(AudioFormat("file"), RATE) as decoder:
            early = [decoder.decode(piece) for piece in chunks(data[:half], [997])]
            late = [decoder.decode(piece) for piece in chunks(data[half:], [997])]
            return early, late, decoder.finish()

    early, late, tail = bounded(run)
    samples_early = sum(len(o) for o in early)
    assert samples_early > 0, (f"{name}: nothing decoded from the first {half} of {len(data)} bytes "
                               f"({sum(len(o) for o in late)} samples came after, {len(tail)} at finish)")
    assert np.array_equal(np.concatenate([*early, *late, tail]), decoded[name])


def test_an_id3_tag_before_adts_aac(encoded, decoded):
    """ID3v2 leads MP3 files and some AAC streams: FFmpeg probes what follows the tag."""
    tag = encoded["mp3"][:header_length("mp3", encoded["mp3"])]
    data = tag + encoded["aac"]
    decoder, outputs, tail = decode_pieces(data, [997])
    assert decoder.container == "id3"
    assert sum(len(o) for o in outputs[:len(data) // 2 // 997]) > 0
    assert np.array_equal(np.concatenate([*outputs, tail]), decoded["aac"])


def test_mp4_gives_nothing_until_finish(encoded, decoded):
    data = encoded["m4a"]
    decoder, outputs, tail = decode_pieces(data, [997])
    assert decoder.container == "mp4"
    assert all(len(o) == 0 for o in outputs)
    assert np.array_equal(tail, decoded["m4a"])


# --- failures -------------------------------------------------------------------------------------------------


def expect_bad_audio(data: bytes, sizes=(997,), **options) -> list[np.ndarray]:
    """Feed data, expecting BadAudio from decode or finish (and nothing else, and no hang); the outputs
    returned before it."""
    outputs = []

    def run():
        with open_decoder(AudioFormat("file"), RATE, **options) as decoder:
            for piece in chunks(data, list(sizes)):
                outputs.append(decoder.decode(piece))
            outputs.append(decoder.finish())

    with pytest.raises(BadAudio):
        bounded(run)
    return outputs


def garbage(size: int, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()


def header_length(name: str, data: bytes) -> int:
    """Bytes before the first audio frame: what a file has that says what it is, but no audio."""
    if name == "flac":  # fLaC, then metadata blocks: 1 byte (last flag, type), 3 bytes length
        i = 4
        while True:
            last, size = data[i] & 0x80, int.from_bytes(data[i + 1:i + 4], "big")
            i += 4 + size
            if last:
                return i
    if name.startswith("ogg"):  # identification and comment (and setup) pages: audio starts on page 3
        pages = [i for i in range(len(data) - 3) if data[i:i + 4] == b"OggS"]
        return pages[2]
    if name == "mp3":  # the ID3v2 tag: 10 bytes, and a syncsafe size
        size = data[6] << 21 | data[7] << 14 | data[8] << 7 | data[9]
        return 10 + size
    if name == "amr":
        return len(b"#!AMR\n")
    if name == "webm":  # EBML header, Segment, Info and Tracks: up to the first Cluster
        return data.index(b"\x1f\x43\xb6\x75")
    raise KeyError(name)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_bytes_are_bad_audio(seed):
    expect_bad_audio(garbage(20_000, seed))
    expect_bad_audio(garbage(5, seed))  # too short to tell what it is: decided at finish


HEADED = ["mp3", "flac", "ogg-opus", "ogg-vorbis", "amr", "webm"]


@pytest.mark.parametrize("name", HEADED)
def test_a_header_then_garbage_is_bad_audio(name, encoded):
    data = encoded[name]
    head = data[:header_length(name, data)]
    for seed in (0, 1):
        outputs = expect_bad_audio(head + garbage(20_000, seed))
        assert sum(len(o) for o in outputs) == 0, f"{name}: audio decoded from garbage"


@pytest.mark.parametrize("name", HEADED + ["aac", "mp3-bare"])
def test_audio_then_garbage_ends_cleanly_or_bad_audio(name, encoded, decoded):
    """Some audio, then garbage: BadAudio, or the audio (and what FFmpeg made of the rest); never a hang or
    another error, and what came out before the garbage is what the clean file gives."""
    data = encoded[name]
    good = data[:int(len(data) * 0.4)]

    def run():
        with open_decoder(AudioFormat("file"), RATE) as decoder:
            before = np.concatenate([decoder.decode(p) for p in chunks(good, [997])])
            try:
                after = [decoder.decode(p) for p in chunks(garbage(20_000), [997])]
                after.append(decoder.finish())
            except BadAudio:
                after = None
            return before, after

    before, after = bounded(run)
    assert len(before) > 0
    assert np.array_equal(before, decoded[name][:len(before)])


@pytest.mark.parametrize("name", [n for n, c in CODECS.items() if c.streamed and n != "amr"])
def test_a_damaged_frame_mid_stream_loses_only_what_it_hits(name, encoded, decoded):
    """40 bytes overwritten half-way (one damaged frame, or one Ogg page that fails its CRC): FFmpeg skips
    what it cannot decode and goes on, as the ffmpeg tool does; the stream must not end in BadAudio.
    (Not AMR: its storage format has no sync word or CRC, so a damaged frame header desyncs all that follows.)"""
    data = bytearray(encoded[name])
    at = len(data) // 2
    data[at:at + 40] = garbage(40)
    full = decoded[name]

    def run():
        with open_decoder(AudioFormat("file"), RATE) as decoder:
            before = [decoder.decode(p) for p in chunks(bytes(data[:at]), [997])]
            after = [decoder.decode(p) for p in chunks(bytes(data[at:]), [997])]
            return np.concatenate(before), np.concatenate([*after, decoder.finish()])

    before, after = bounded(run)
    assert np.array_equal(before, full[:len(before)])
    assert len(after) > 0.1 * len(full), f"{name}: {len(after)} samples after the damage, of {len(full)}"


@pytest.mark.parametrize("name", [n for n, c in CODECS.items() if c.streamed])
def test_a_truncated_file_decodes_what_it_has(name, encoded, decoded):
    """A stream cut off at 60 % (a client that stops sending): the audio up to the cut, with no error. The
    last frame is incomplete, so its samples may be missing; resampled codecs may differ in their last few
    samples, where the resampler was flushed."""
    data = encoded[name]
    cut = data[:int(len(data) * 0.6)]
    decoder, outputs, tail = decode_pieces(cut, [997])
    out, full = np.concatenate([*outputs, tail]), decoded[name]
    assert 0.15 * len(full) < len(out) <= len(full)
    exact = len(out) - (256 if CODECS[name].rate != RATE else 0)
    assert np.array_equal(out[:exact], full[:exact])


def test_a_truncated_mp4_is_bad_audio(encoded):
    data = encoded["m4a"]
    assert data.rfind(b"moov") > 0.6 * len(data)  # FFmpeg writes the index last
    expect_bad_audio(data[:int(len(data) * 0.6)])


@pytest.mark.parametrize("pieces", [[], [b""], [b"", b""]])
def test_an_empty_stream_is_bad_audio_at_finish(pieces):
    def run():
        with open_decoder(AudioFormat("file"), RATE) as decoder:
            for piece in pieces:
                assert len(decoder.decode(piece)) == 0
            with pytest.raises(BadAudio):
                decoder.finish()
    bounded(run)


@pytest.mark.parametrize("name", ["flac", "ogg-opus", "mp3", "amr", "webm", "aiff"])
def test_a_header_alone_is_bad_audio_at_finish(name, encoded):
    data = encoded[name]
    length = data.index(b"SSND") + 16 if name == "aiff" else header_length(name, data)
    expect_bad_audio(data[:length], sizes=[1] * 200 + [97])


@pytest.mark.parametrize("container", ["ogg", "flac", "mp4"])
def test_a_reader_fed_nothing_is_bad_audio(container):
    reader = ContainerReader(container)
    with pytest.raises(BadAudio):
        bounded(reader.finish)
    reader.close()
    with pytest.raises(ValueError):
        ContainerReader("wma")


# --- the decoder thread ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [n for n, c in CODECS.items() if c.streamed])
def test_close_mid_stream_stops_the_thread(name, encoded):
    before = audio_threads()
    decoder = open_decoder(AudioFormat("file"), RATE)
    bounded(decoder.decode, encoded[name][:len(encoded[name]) // 2])
    started = audio_threads() - before
    assert [t.name for t in started] == [f"stt-audio-{CODECS[name].container}"]
    bounded(decoder.close)
    assert not wait_for_no_new_threads(before)
    bounded(decoder.close)  # again: harmless


def test_close_while_the_header_is_incomplete(encoded):
    before = audio_threads()
    decoder = open_decoder(AudioFormat("file"), RATE)
    bounded(decoder.decode, encoded["flac"][:20])
    assert audio_threads() - before
    bounded(decoder.close)
    assert not wait_for_no_new_threads(before)


def test_close_before_anything_and_after_finish(encoded):
    before = audio_threads()
    bounded(open_decoder(AudioFormat("file"), RATE).close)
    decoder, _, _ = decode_pieces(encoded["ogg-opus"], [4096])  # its context manager closes it, after finish
    assert not wait_for_no_new_threads(before)
    bounded(decoder.close)


def test_finish_ends_the_thread_without_close(encoded):
    before = audio_threads()
    decoder = open_decoder(AudioFormat("file"), RATE)
    bounded(decoder.decode, encoded["flac"])
    bounded(decoder.finish)
    assert not audio_threads() - before  # finish joins it


def test_an_error_inside_the_context_leaves_no_thread(encoded):
    before = audio_threads()

    def run():
        with open_decoder(AudioFormat("file"), RATE) as decoder:
            decoder.decode(encoded["webm"][:5000])
            assert audio_threads() - before
            raise RuntimeError("the session failed")

    with pytest.raises(RuntimeError, match="the session failed"):
        bounded(run)
    assert not wait_for_no_new_threads(before)


def test_bad_audio_leaves_no_thread(encoded):
    before = audio_threads()
    expect_bad_audio(encoded["flac"][:header_length("flac", encoded["flac"])] + garbage(20_000))
    assert not wait_for_no_new_threads(before)


# --- MP4 size cap ---------------------------------------------------------------------------------------------


def test_mp4_over_max_file_bytes_is_bad_audio(encoded, decoded):
    data = encoded["m4a"]
    outputs = expect_bad_audio(data, sizes=[4096], max_file_bytes=len(data) - 1)
    assert all(len(o) == 0 for o in outputs)
    expect_bad_audio(data, sizes=[len(data)], max_file_bytes=1000)
    # exactly at the cap is allowed
    assert np.array_equal(decode_all_capped(data, len(data)), decoded["m4a"])


def decode_all_capped(data: bytes, cap: int) -> np.ndarray:
    _, outputs, tail = decode_pieces(data, [4096], max_file_bytes=cap)
    return np.concatenate([*outputs, tail])


def test_max_file_bytes_does_not_cap_streamed_containers(encoded, decoded):
    data = encoded["flac"]
    assert np.array_equal(decode_all_capped(data, 1000), decoded["flac"])
