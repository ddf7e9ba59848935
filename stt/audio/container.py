"""Compressed containers (MP3, AAC, FLAC, Ogg Opus/Vorbis, AMR, WebM/Matroska, AIFF, MP4/M4A) decoded with
PyAV, whose wheels bundle FFmpeg's libraries: nothing to install beside the package.

FFmpeg's demuxers pull bytes through a read callback and cannot stop half-way and resume later, while our
bytes arrive whenever the client sends them. So each streamed container gets one thread that runs the
demuxer and decoder, and a hand-off on a condition variable: `feed` gives the thread the new bytes and
waits until it has decoded all it can and is blocked asking for more (or has ended). Each call therefore
returns every sample its bytes completed, as a synchronous decoder would, and the thread never runs ahead
of or behind the caller. `close` ends the thread: its next read returns end-of-file.

MP4/M4A/MOV keep their index (`moov`) where the writer chose, usually at the end, and the demuxer must seek
to it, so those files are collected whole (up to `max_file_bytes`, and, with `file_buffers`, within the bytes
all sessions' whole files may hold together: FileBuffersFull past it) and decoded by `finish`, in pieces.

Each call decodes at most `max_samples` samples (all channels, at the stream's rate; 0: no limit): past it the
thread stops with AudioLimitExceeded, so one small message of a compressed bomb (a FLAC of an hour of silence)
never becomes more than that in memory. A file decoded whole comes out of `finish` a piece of at most that many
samples a call, for as long as `more` says.
"""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Iterator

import av
import numpy as np

from stt.audio.errors import AudioLimitExceeded, BadAudio
from stt.audio.limits import FileBuffers
from stt.audio.pcm import SAMPLE_RATE_RANGE

log = logging.getLogger("stt.audio")

#: Containers that must be complete before they can be decoded.
WHOLE_FILE = frozenset({"mp4"})

#: Our container names -> FFmpeg demuxer names (None: let FFmpeg probe).
_DEMUXER = {"flac": "flac", "ogg": "ogg", "mp3": "mp3", "aac": "aac", "id3": None, "mp4": "mp4", "amr": "amr",
            "matroska": "matroska", "aiff": "aiff", "wav": "wav"}

_OPEN_OPTIONS = {"probesize": "32"}
_MAX_BAD_PACKETS = 3  # consecutive packets that fail to decode before the stream counts as not audio

_SCALE = {"u8": None, "s16": 1 / 32768.0, "s32": 1 / 2.0**31, "s64": 1 / 2.0**63, "flt": 1.0, "dbl": 1.0}


def frame_samples(frame: av.AudioFrame) -> np.ndarray:
    """An FFmpeg audio frame -> float32 (samples, channels) in [-1, 1)."""
    channels = len(frame.layout.channels)
    data = frame.to_ndarray()
    data = data.T if frame.format.is_planar else data.reshape(-1, channels)
    data = data[: frame.samples]
    base = frame.format.name.rstrip("p")
    if base == "u8":
        return (data.astype(np.float32) - 128.0) / 128.0
    return data.astype(np.float32) * np.float32(_SCALE[base])


class _Feed:
    """The read side FFmpeg sees: a non-seekable file whose read blocks until the caller feeds more."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.pending = bytearray()
        self.eof = False  # no more bytes will come
        self.starved = False  # the thread is blocked in read with nothing pending
        self.done = False  # the thread has ended
        self.error: BaseException | None = None
        self.output: list[np.ndarray] = []

    def read(self, n: int) -> bytes:
        with self.cond:
            while not self.pending and not self.eof:
                self.starved = True
                self.cond.notify_all()
                self.cond.wait()
            self.starved = False
            data = bytes(self.pending[:n])
            del self.pending[:n]
            return data


class ContainerReader:
    """feed(bytes) -> float32 frames (n, channels), decoded by FFmpeg as the bytes stream in."""

    def __init__(self, container: str, *, max_file_bytes: int = 64 << 20, max_samples: int = 0,
                 file_buffers: FileBuffers | None = None) -> None:
        if container not in _DEMUXER:
            raise ValueError(f"unknown container {container!r}")
        self.container = container
        self.sample_rate: int | None = None
        self.channels: int | None = None
        self.max_file_bytes = max_file_bytes
        self.samples_out = 0
        self.max_samples = max_samples
        self._emitted = 0  # samples the current call has decoded (max_samples)
        self.samples_decoded = 0  # samples FFmpeg decoded in all (all channels), handed out or not
        self._file_buffers = file_buffers
        self._taken = 0  # bytes of file_buffers this reader holds
        self._whole = bytearray() if container in WHOLE_FILE else None
        self._open_whole = None  # the file decoded whole, open in FFmpeg while finish() hands it out in pieces
        self._pieces: Iterator[np.ndarray] | None = None
        self._feed: _Feed | None = None
        self._thread: threading.Thread | None = None

    # --- the caller's side ----------------------------------------------------------------------------------

    def feed(self, data: bytes) -> np.ndarray:
        if self._whole is not None:
            if len(self._whole) + len(data) > self.max_file_bytes:
                raise BadAudio(f"{self.container} files are decoded whole, and this one is over "
                               f"{self.max_file_bytes} bytes")
            if self._file_buffers is not None:
                self._file_buffers.take(len(data))
                self._taken += len(data)
            self._whole += data
            return self._empty()
        if self._thread is None:
            self._start()
        return self._hand_over(data, last=False)

    def finish(self) -> np.ndarray:
        """The rest of the audio. For a file decoded whole, a piece of it: while `more`, call it again."""
        if self._whole is not None or self._pieces is not None:
            out = self._decode_whole()
        elif self._thread is None:
            out = self._empty()
        else:
            out = self._hand_over(b"", last=True)
            self._thread.join()
        if self.samples_out == 0 and not self.more:
            raise BadAudio(f"no audio could be decoded from the {self.container} stream")
        return out

    def close(self) -> None:
        """Stop the thread (if any); safe to call at any time, more than once."""
        self._whole = None
        self._end_whole()
        feed = self._feed
        if feed is not None:
            with feed.cond:
                feed.eof = True
                feed.pending.clear()
                feed.cond.notify_all()
            self._thread.join(timeout=2.0)
            if self._thread.is_alive():  # only a stuck FFmpeg could do this; the thread is a daemon
                log.warning("audio decoder thread for %s did not stop", self.container)

    # --- the hand-off ---------------------------------------------------------------------------------------

    def _start(self) -> None:
        self._feed = _Feed()
        self._thread = threading.Thread(target=self._run, name=f"stt-audio-{self.container}", daemon=True)
        self._thread.start()

    def _hand_over(self, data: bytes, *, last: bool) -> np.ndarray:
        feed = self._feed
        with feed.cond:
            if feed.error is None and not feed.done:
                self._emitted = 0  # the thread is blocked in read (or not yet started): a new call's count
                feed.pending += data
                feed.eof = feed.eof or last
                feed.starved = False
                feed.cond.notify_all()
                while not feed.done and not (feed.starved and not feed.pending and not feed.eof):
                    feed.cond.wait()
            output, feed.output = feed.output, []
            error = feed.error
        if error is not None:
            output = None  # not kept alive by the traceback: the memory is free when the caller closes us
            if isinstance(error, AudioLimitExceeded):
                raise error
            raise BadAudio(f"the {self.container} audio could not be decoded: {error}") from error
        return self._collect(output)

    def _run(self) -> None:
        feed = self._feed
        try:
            # probesize: FFmpeg reads up to this much before the first frame to learn the stream's parameters;
            # its default (5 MB) holds back seconds of a stream. The codec headers fill in what it skips.
            with av.open(feed, "r", format=_DEMUXER[self.container], options=_OPEN_OPTIONS) as container:
                self._decode_all(container, feed)
        except Exception as exc:  # FFmpeg's errors are av.error.FFmpegError (an OSError), and ValueError
            with feed.cond:
                if feed.eof and self.sample_rate is not None and not isinstance(exc, BadAudio):
                    # A file cut short: its last packet is incomplete. Everything before it was decoded.
                    log.info("%s stream ends in an incomplete packet: %s", self.container, exc)
                else:
                    feed.error = exc
        finally:
            with feed.cond:
                feed.done = True
                feed.cond.notify_all()

    def _decode_all(self, container, feed: _Feed) -> None:
        for samples in self._frames(container):
            self._emitted += samples.size
            self.samples_decoded += samples.size
            if self.max_samples and self._emitted > self.max_samples:
                raise AudioLimitExceeded(f"one message of {self.container} audio decodes into more than "
                                         f"{self.max_samples} samples (--max-message-samples)")
            with feed.cond:
                feed.output.append(samples)

    def _frames(self, container) -> Iterator[np.ndarray]:
        """The container's audio, frame by frame, as float32 (n, channels)."""
        if not container.streams.audio:
            raise BadAudio("the file has no audio stream")
        stream, bad_packets = container.streams.audio[0], 0
        for packet in container.demux(stream):
            try:
                frames = packet.decode()
            except av.error.FFmpegError:
                # A damaged frame is skipped, as FFmpeg's own tools do; a run of them is not audio at all.
                bad_packets += 1
                if bad_packets > _MAX_BAD_PACKETS:
                    raise
                continue
            bad_packets = 0
            for frame in frames:
                yield self._checked(frame)

    def _checked(self, frame: av.AudioFrame) -> np.ndarray:
        samples = frame_samples(frame)
        if self.sample_rate is None:
            if not SAMPLE_RATE_RANGE[0] <= frame.sample_rate <= SAMPLE_RATE_RANGE[1]:
                raise BadAudio(f"the stream is at {frame.sample_rate} Hz (rates from {SAMPLE_RATE_RANGE[0]} to "
                               f"{SAMPLE_RATE_RANGE[1]} Hz are supported)")
            self.sample_rate, self.channels = frame.sample_rate, samples.shape[1]
        elif (frame.sample_rate, samples.shape[1]) != (self.sample_rate, self.channels):
            raise BadAudio(f"the stream changes from {self.channels} channels at {self.sample_rate} Hz to "
                           f"{samples.shape[1]} at {frame.sample_rate} Hz, which is not supported")
        return samples

    # --- a file decoded whole, in pieces ------------------------------------------------------------------

    @property
    def more(self) -> bool:
        """finish() returned a piece of a file decoded whole, and more of it is to come: call finish again."""
        return self._pieces is not None

    def _decode_whole(self) -> np.ndarray:
        """The next piece of the file: at most max_samples samples, so that a long file (or a bomb) is never
        all in memory at once."""
        collected, self._emitted = [], 0
        try:
            if self._pieces is None:
                data, self._whole = io.BytesIO(self._whole), None  # a copy; the buffer goes (still counted)
                self._open_whole = av.open(data, "r", format=_DEMUXER[self.container])
                del data
                self._pieces = self._frames(self._open_whole)
            for samples in self._pieces:
                collected.append(samples)
                self._emitted += samples.size
                self.samples_decoded += samples.size
                if self.max_samples and self._emitted >= self.max_samples:
                    break
            else:
                self._end_whole()
        except BadAudio:
            collected.clear()
            self._end_whole()
            raise
        except Exception as exc:
            collected.clear()
            self._end_whole()
            raise BadAudio(f"the {self.container} audio could not be decoded: {exc}") from exc
        return self._collect(collected)

    def _end_whole(self) -> None:
        pieces, container, self._pieces, self._open_whole = self._pieces, self._open_whole, None, None
        if pieces is not None:
            pieces.close()
        if container is not None:
            container.close()
        self._give_back()

    def _give_back(self) -> None:
        if self._taken:
            self._file_buffers.give_back(self._taken)
            self._taken = 0

    def _collect(self, output: list[np.ndarray]) -> np.ndarray:
        if not output:
            return self._empty()
        samples = output[0] if len(output) == 1 else np.concatenate(output)
        self.samples_out += len(samples)
        return samples

    def _empty(self) -> np.ndarray:
        return np.zeros((0, self.channels or 1), np.float32)


__all__ = ["ContainerReader", "WHOLE_FILE", "frame_samples"]
