"""The engine interface: what a recognizer does, knowing nothing of dialects.

A Recognizer decodes one stream: blocking, single-threaded, fed mono (1-D) int16 samples at the engine's
`sample_rate`, in order and in bounded chunks. It answers with recognition results (stt.events.Partial /
Final). Hosts give it an async face (EngineStream): stt.engines.inline_host runs a cheap one on the event loop,
stt.engines.process_host runs one in worker processes.

Results: times are seconds of audio since the stream began. A Partial spans the current utterance so far and
is replaced by the next Partial or Final; a Final spans the audio it covers, so finals tile the speech. An
empty Final answers a flush when nothing was said, or replaces partials that came to nothing.
Voice activity: an engine with a detector also returns SpeechStarted / SpeechStopped, in audio time, in order
with the results (SpeechStarted before the utterance's first partial, SpeechStopped after its final). They
alternate, starting with SpeechStarted; a Final at max_delay or on a flush does not stop speech, and finish()
stops speech still going. SpeechStopped.time is where speech ended, not where the silence was long enough.
Endpointing: an utterance ends once `StreamSettings.endpointing` seconds of silence follow it (None: the
engine's own default), so its Final and SpeechStopped come about that long after the speech ended.
max_delay: a Final comes at a pause, or once an utterance holds max_delay seconds of audio (then at the word
boundary before that point), so a word is final at most about max_delay (plus the engine's endpointing
window) after it was spoken.
"""

from __future__ import annotations

from typing import Protocol

import attrs
import numpy as np

from stt.events import Final, Partial, SpeechStarted, SpeechStopped

Results = list[Partial | Final | SpeechStarted | SpeechStopped]


class EngineError(Exception):
    """A recognizer call failed: the recognizer raised, or the process hosting it is gone."""


def streams_for_cores(cores: float, cores_per_stream: float, utilisation: float = 0.8) -> int:
    """The streams `cores` serve at real time when each takes `cores_per_stream`, keeping `utilisation` of them
    busy at most (the rest is headroom for bursts, so latency holds); at least 1. Sphinx, 0.39 cores a stream
    (docs/engines.md): 4 on 2 cores, where bench_engines measured that 4 held the latency target and 6 did not."""
    if cores_per_stream <= 0:
        raise ValueError(f"cores_per_stream must be positive, not {cores_per_stream!r}")
    return max(1, int(cores * utilisation / cores_per_stream))


@attrs.frozen
class StreamSettings:
    """What a recognizer needs to know about its stream; nothing vendor-specific."""

    language: str = "en"
    partials: bool = False
    max_delay: float = 4.0  # a final covers audio at most this many seconds old
    endpointing: float | None = None  # seconds of silence that end an utterance; None: the engine's default
    hints: tuple[str, ...] = ()  # words to favour where the engine can; an engine that cannot ignores them


class Recognizer(Protocol):
    sample_rate: int

    def feed(self, samples: np.ndarray) -> list[Partial | Final]:
        """Decode more audio; return new partials and finals (finals at an endpoint or at max_delay), with the
        voice-activity events among them."""

    def flush(self) -> list[Partial | Final]:
        """Finalise the current utterance now; its Final has forced=True. Not a speech stop."""

    def finish(self) -> list[Partial | Final]:
        """No more audio: return the remaining finals, then SpeechStopped if speech was still going."""

    def configure(self, partials: bool | None = None, max_delay: float | None = None) -> None:
        """Change settings mid-stream; None leaves a setting as it is."""

    def close(self) -> None:
        """Release the recognizer's resources (idempotent)."""


class EngineStream(Protocol):
    """The async face of one Recognizer, as the session sees it (stt.engines.inline_host or
    stt.engines.process_host runs the blocking work; the whisper engine hosts its own, stt.engines.whisper)."""

    async def feed(self, samples: np.ndarray) -> list[Partial | Final]: ...

    async def flush(self) -> list[Partial | Final]: ...

    async def finish(self) -> list[Partial | Final]: ...

    async def configure(self, partials: bool | None = None, max_delay: float | None = None) -> None: ...


class Engine(Protocol):
    """A loaded engine: opens streams. `open_stream` is an async context manager that closes the stream.

    `capacity`: how many streams at once the engine serves within its latency targets (docs/engines.md), from
    its decoders and a measured cost per stream; None where that is not known. The server's `--max-sessions
    auto` (the default) admits that many sessions (stt.settings.session_limit)."""

    name: str
    sample_rate: int
    capacity: int | None

    def open_stream(self, settings: StreamSettings):  # -> AsyncContextManager[EngineStream]
        ...
