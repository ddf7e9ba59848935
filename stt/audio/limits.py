"""What decoding one client's audio may cost: channels, decoded samples per message and per second of wall time,
and the bytes of whole-file buffers that all sessions of a process hold together.

Compressed audio can expand without bound: a 1 MB FLAC of silence is 90 minutes, 86 million samples. So a
decoder counts the samples each message decodes into (at the audio's own rate, all channels: what it holds in
memory) and stops, with AudioLimitExceeded (a BadAudio), past a limit (stt.session.SessionLimits). `DecodeRate`
bounds the samples decoded per second of wall time, for a bomb spread over many small messages, by making the
session wait (and so its client: TCP pushes back), not by an error.
`FileBuffers` is the one budget for the files decoded whole (MP4/M4A) of every session of a process: a file that
would take it past its bytes raises FileBuffersFull, which is no fault of the audio (the client may retry).

No clock here: the caller says what time it is (sans-IO, like the rest of stt.audio).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading

from stt.audio.errors import FileBuffersFull


#: The default of --max-file-buffer-bytes: four files of the largest size a session may send (64 MiB).
MAX_FILE_BUFFER_BYTES = 256 << 20


class DecodeRate:
    """A token bucket of decoded samples: `rate` a second, and at most `burst` (one message's worth) ahead.

    Going faster is not an error: audio with long silences, sent as fast as the network allows, legitimately
    decodes as fast as a bomb does. The caller waits instead (`spend` says how long), and its client with it."""

    def __init__(self, rate: int, burst: int, now: float) -> None:
        self.rate, self.burst = rate, burst
        self._tokens = float(burst)
        self._at = now

    def spend(self, samples: int, now: float) -> float:
        """Count `samples` decoded at `now`; the seconds to wait before decoding more (0: none)."""
        if self.rate <= 0:
            return 0.0
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        self._tokens -= samples
        return -self._tokens / self.rate if self._tokens < 0 else 0.0


class FileBuffers:
    """Bytes held for files decoded whole, all sessions of a process together; 0: no limit. Thread-safe: the
    decoders that take from it run in worker threads."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self._lock = threading.Lock()

    def take(self, n: int) -> None:
        with self._lock:
            if self.limit and self.held + n > self.limit:
                raise FileBuffersFull(f"the server holds {self.limit} bytes of files decoded whole for all its "
                                      f"sessions, and has no room for this one now; retry later "
                                      f"(--max-file-buffer-bytes)")
            self.held += n

    def give_back(self, n: int) -> None:
        with self._lock:
            self.held = max(0, self.held - n)


def _malloc_trim():
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim
        return None


_TRIM = _malloc_trim()

#: Decoding more samples than this in one decoder leaves enough freed memory behind to give back.
TRIM_AFTER_SAMPLES = 1 << 22


def release_memory() -> None:
    """Give the memory a large decode freed back to the system. FFmpeg's frames become many small numpy arrays,
    allocated in the decoding thread's malloc arena; glibc keeps an arena's freed memory for the next use, so a
    decode of 16 million samples would keep hundreds of MB held after its session ended."""
    if _TRIM is not None:
        _TRIM(0)


__all__ = ["MAX_FILE_BUFFER_BYTES", "DecodeRate", "FileBuffers", "TRIM_AFTER_SAMPLES", "release_memory"]
