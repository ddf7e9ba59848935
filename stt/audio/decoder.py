"""The one entry point: bytes as the client sends them -> int16 samples at the engine's rate.

    reader  : bytes -> float32 frames (n, channels) at the source rate   (raw codec, WAV, or FFmpeg container)
    output  : frames -> mono (mixed) or per-channel -> soxr resampling -> int16

The reader is chosen from the declared format, or from the stream's first bytes when the format is "file"
or when a raw format allows a container header to override it (AudioFormat.sniff).
"""

from __future__ import annotations

import numpy as np
import soxr

from stt.audio.container import ContainerReader
from stt.audio.errors import AudioLimitExceeded, BadAudio, UnsupportedAudio
from stt.audio.limits import TRIM_AFTER_SAMPLES, FileBuffers, release_memory
from stt.audio.pcm import RAW_ENCODINGS, RawEncoding
from stt.audio.sniff import CONTAINERS, SNIFF_BYTES, sniff
from stt.audio.wav import WavReader
from stt.events import AudioFormat

#: What `AudioFormat.encoding` may be: a raw encoding, or "file" (a container recognised from its bytes).
ENCODINGS = (*RAW_ENCODINGS, "file")


class RawReader:
    """Headerless samples of one encoding; a sample frame split across calls is carried to the next."""

    def __init__(self, encoding: RawEncoding, sample_rate: int, channels: int) -> None:
        self.encoding, self.sample_rate, self.channels = encoding, sample_rate, channels
        self._frame_bytes = encoding.width * channels
        self._carry = b""

    def feed(self, data: bytes) -> np.ndarray:
        if self._carry:
            data = self._carry + data
        whole = len(data) - len(data) % self._frame_bytes
        self._carry = data[whole:]
        return self.encoding.decode(data[:whole] if whole != len(data) else data).reshape(-1, self.channels)

    def finish(self) -> np.ndarray:
        self._carry = b""  # a trailing partial frame is dropped
        return np.zeros((0, self.channels), np.float32)

    def close(self) -> None:
        pass


def _mix(frames: np.ndarray) -> np.ndarray:
    """The mean of the channels (a column at a time: ndarray.mean over a short inner axis is 30x slower)."""
    out = frames[:, 0].copy()
    for c in range(1, frames.shape[1]):
        out += frames[:, c]
    out *= np.float32(1.0 / frames.shape[1])
    return out


class _Output:
    """float32 frames at the source rate -> int16 at the target rate, mixed to mono or kept per channel."""

    def __init__(self, rate: int, channels: int, target_rate: int, split: bool) -> None:
        self.channels, self.split = channels, split
        self._resampler = (
            soxr.ResampleStream(rate, target_rate, channels if split else 1, dtype="float32", quality="HQ")
            if rate != target_rate
            else None
        )

    def convert(self, frames: np.ndarray, last: bool = False) -> np.ndarray:
        if not len(frames):
            frames = np.zeros((0, self.channels), np.float32)
        if self.split:
            samples = np.ascontiguousarray(frames)
        else:
            samples = frames[:, 0] if self.channels == 1 else _mix(frames)
        if self._resampler is not None:
            samples = self._resampler.resample_chunk(np.ascontiguousarray(samples), last=last)
        out = np.clip(np.rint(samples * 32768.0), -32768, 32767).astype(np.int16)
        return out.T.copy() if self.split else out


class AudioDecoder:
    """Streams a client's audio bytes, split anywhere, into int16 at `target_rate`.

    `decode` and `finish` return mono samples (1-D), or with split_channels one row per channel (2-D).
    Audio that does not decode raises BadAudio, with a message for the client. Use it as a context manager
    (or call close), since a compressed container runs its decoder in a thread.

    Limits (stt.audio.limits; 0: none): audio of more than `max_channels` channels, and a call whose bytes
    decode into more than `max_message_samples` samples (all channels, at the audio's own rate), raise
    AudioLimitExceeded, a BadAudio; a file decoded whole takes its bytes from `file_buffers` (FileBuffersFull).
    `decoded` counts the samples decoded so far, in the same unit.
    """

    def __init__(self, fmt: AudioFormat, target_rate: int, *, split_channels: bool = False,
                 max_file_bytes: int = 64 << 20, max_channels: int = 0, max_message_samples: int = 0,
                 file_buffers: FileBuffers | None = None) -> None:
        if fmt.encoding != "file":
            if fmt.encoding not in RAW_ENCODINGS:
                raise UnsupportedAudio(f"unsupported encoding {fmt.encoding!r}")
            if fmt.channels < 1 or fmt.sample_rate <= 0:
                raise UnsupportedAudio(f"bad format {fmt}")
        self.format = fmt
        self.target_rate = target_rate
        self.split_channels = split_channels
        self.max_file_bytes = max_file_bytes
        self.max_channels = max_channels
        self.max_message_samples = max_message_samples
        self.file_buffers = file_buffers
        self.decoded = 0  # samples decoded (all channels, at the source's rate)
        if max_channels and fmt.encoding != "file" and fmt.channels > max_channels:
            raise AudioLimitExceeded(self._too_many_channels(fmt.channels))
        self.container: str | None = None  # what the stream turned out to be, once known ("raw" for headerless)
        self._head = b""  # bytes held until the container can be recognised
        self._reader = None
        self._output: _Output | None = None
        self._passthrough = False
        if fmt.encoding != "file" and not fmt.sniff:
            self._use_raw()

    # --- the reader ---------------------------------------------------------------------------------------

    def _use_raw(self) -> None:
        fmt = self.format
        self.container = "raw"
        self._reader = RawReader(RAW_ENCODINGS[fmt.encoding], fmt.sample_rate, fmt.channels)
        self._passthrough = (fmt.encoding == "pcm_s16le" and fmt.channels == 1
                             and fmt.sample_rate == self.target_rate and not self.split_channels)

    def _choose(self, head: bytes, final: bool) -> bool:
        """Pick the reader from the stream's first bytes; False if more bytes are needed to tell."""
        if len(head) < SNIFF_BYTES and not final:
            return False
        container = sniff(head, raw_fallback=self.format.encoding != "file")
        if container is None:
            if self.format.encoding != "file":
                self._use_raw()
                return True
            raise BadAudio(f"unrecognised audio file (it starts with {head[:8].hex(' ')}); "
                           f"send one of: {', '.join(c for c in CONTAINERS if c != 'id3')}")
        self.container = container
        self._reader = WavReader() if container == "wav" else ContainerReader(
            container, max_file_bytes=self.max_file_bytes, max_samples=self.max_message_samples,
            file_buffers=self.file_buffers)
        return True

    # --- decoding -----------------------------------------------------------------------------------------

    def decode(self, data: bytes) -> np.ndarray:
        if self._passthrough and not self._reader._carry and len(data) % 2 == 0:
            self.decoded += len(data) // 2
            return np.frombuffer(data, "<i2").astype(np.int16)  # s16le mono at the engine's rate: as it is
        if self._reader is None:
            self._head += data
            if not self._choose(self._head, final=False):
                return self._empty()
            data, self._head = self._head, b""
        return self._convert(self._reader.feed(data))

    @property
    def more(self) -> bool:
        """finish() returned a piece of a file decoded whole (MP4: at most max_message_samples at a time), and
        more is to come: call finish() again until this is False."""
        return getattr(self._reader, "more", False)

    def finish(self) -> np.ndarray:
        """The rest: what the reader and the resampler still hold (while `more`, a piece of it). Raises BadAudio
        for a file that ends before any audio in it could be decoded."""
        parts = []
        if self._reader is None:
            if not self._head and self.format.encoding == "file":
                raise BadAudio("no audio was received")
            self._choose(self._head, final=True)
            head, self._head = self._head, b""
            parts.append(self._convert(self._reader.feed(head)))
        frames = self._reader.finish()
        parts.append(self._convert(frames, last=not self.more))
        parts = [p for p in parts if p.shape[-1]]
        return np.concatenate(parts, axis=-1) if parts else self._empty()

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
        if getattr(self._reader, "samples_decoded", 0) > TRIM_AFTER_SAMPLES:
            release_memory()  # FFmpeg's frames, freed in its thread's malloc arena (stt.audio.limits)

    def __enter__(self) -> AudioDecoder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _too_many_channels(self, channels: int) -> str:
        return f"the audio has {channels} channels; at most {self.max_channels} are served (--max-channels)"

    def _convert(self, frames: np.ndarray, last: bool = False) -> np.ndarray:
        channels = self._reader.channels
        if self.max_channels and channels is not None and channels > self.max_channels:
            raise AudioLimitExceeded(self._too_many_channels(channels))
        self.decoded += frames.size
        if (self.max_message_samples and frames.size > self.max_message_samples
                and not isinstance(self._reader, ContainerReader)):  # raw or WAV (FFmpeg's thread checks its own)
            raise AudioLimitExceeded(f"one message decodes into {frames.size} samples, more than "
                                     f"{self.max_message_samples} (--max-message-samples)")
        if not len(frames) and not (last and self._output is not None):
            return self._empty()
        if self._output is None:
            if self._reader.sample_rate is None:  # the header is not complete yet
                return self._empty()
            self._output = _Output(self._reader.sample_rate, self._reader.channels, self.target_rate,
                                   self.split_channels)
        return self._output.convert(frames, last)

    def _empty(self) -> np.ndarray:
        if not self.split_channels:
            return np.zeros(0, np.int16)
        return np.zeros((self.channels or 0, 0), np.int16)  # no rows until the channel count is known

    @property
    def slow(self) -> bool:
        """True when decode and finish may call FFmpeg, which takes milliseconds per call (a whole MP4 at
        finish, seconds): an event loop should run them in a worker thread."""
        return isinstance(self._reader, ContainerReader) or (self._reader is None and self.format.encoding == "file")

    @property
    def sample_rate(self) -> int | None:
        """The source's rate, once known."""
        return self._reader.sample_rate if self._reader is not None else None

    @property
    def channels(self) -> int | None:
        """The source's channel count, once known."""
        return self._reader.channels if self._reader is not None else None


def open_decoder(fmt: AudioFormat, target_rate: int, **options) -> AudioDecoder:
    return AudioDecoder(fmt, target_rate, **options)


__all__ = ["AudioDecoder", "ENCODINGS", "RawReader", "open_decoder"]
