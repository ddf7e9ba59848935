"""The common vocabulary shared by dialects, session and engines.

Client side (a dialect turns frames into these): Configure, Reconfigure, Audio, EndOfAudio, Flush, Close,
and Violation when a frame breaks a rule of the dialect's chart.
Recognition side (an engine produces these, a dialect renders them): Partial, Final, EndOfTranscript.
Session side (the session tells the dialect what it did): AudioAccepted, SessionStarted, and ShuttingDown
(the server is going away).

Times are audio time in seconds since the start of the stream, never wall time.
"""

from __future__ import annotations

import attrs

from stt.statechart import Rule

# --- audio description ------------------------------------------------------------------------------------

@attrs.frozen
class AudioFormat:
    """How the client's audio bytes are laid out (stt.audio decodes them)."""

    encoding: str  # a raw encoding (stt.audio.RAW_ENCODINGS), or "file": a container recognised from its bytes
    sample_rate: int = 0  # raw only
    channels: int = 1  # raw only
    sniff: bool = False  # raw only: a container header at the start of the stream (RIFF, fLaC, ...) overrides


# --- from the client ---------------------------------------------------------------------------------------


@attrs.frozen
class Configure:
    """The client's recognition settings, validated by the dialect; opens the recognizer."""

    audio: AudioFormat
    language: str = "en"
    partials: bool = False
    max_delay: float = 4.0
    endpointing: float | None = None  # seconds of silence that end an utterance; None: the engine's own
    hints: tuple[str, ...] = ()  # words or phrases to favour, where the engine can (keywords, prompts)
    split_channels: bool = False  # recognise each channel on its own (results carry `channel`), not the mix


@attrs.frozen
class Reconfigure:
    """A mid-session change; None means unchanged."""

    partials: bool | None = None
    max_delay: float | None = None


@attrs.frozen
class FetchAudio:
    """The server reads the audio itself from `url` (Scriptix stream mode) instead of from client frames; it
    is decoded like client audio (send a Configure first), and its end is the end of the audio."""

    url: str


@attrs.frozen
class Audio:
    data: bytes = attrs.field(repr=lambda b: f"<{len(b)} bytes>")


@attrs.frozen
class EndOfAudio:
    """No more audio will come: finish, send the remaining finals, then EndOfTranscript."""


@attrs.frozen
class Flush:
    """Finish the current utterance now (the client forced an end of utterance)."""


@attrs.frozen
class Close:
    """The client asked to end the session."""


@attrs.frozen
class Violation:
    """A frame broke a rule. Fatal rules end the session with the rule's error and close code;
    warnings are reported and the frame is ignored."""

    rule: Rule
    detail: str = ""


# --- from the recognizer -----------------------------------------------------------------------------------


@attrs.frozen
class Word:
    text: str
    start: float
    end: float
    confidence: float = 1.0


@attrs.frozen
class Partial:
    """The not-yet-final words of the current utterance; a later Partial or Final replaces it."""

    words: tuple[Word, ...]
    start: float
    end: float
    channel: int = 0  # which channel of the audio, when the session recognises channels apart


@attrs.frozen
class Final:
    """Words that will not change. `forced` is true when a Flush caused it."""

    words: tuple[Word, ...]
    start: float
    end: float
    forced: bool = False
    channel: int = 0  # which channel of the audio, when the session recognises channels apart


@attrs.frozen
class SpeechStarted:
    """The engine's voice activity detector heard speech begin at `time` (seconds of audio)."""

    time: float
    channel: int = 0  # which channel of the audio, when the session recognises channels apart


@attrs.frozen
class SpeechStopped:
    """Speech ended at `time` (seconds of audio): silence for the endpointing time followed it."""

    time: float
    channel: int = 0  # which channel of the audio, when the session recognises channels apart


@attrs.frozen
class EndOfTranscript:
    """Every final has been sent."""


# --- from the session --------------------------------------------------------------------------------------


@attrs.frozen
class SessionStarted:
    """The recognizer is open; the dialect announces the session."""

    session_id: str
    config: Configure
    engine: str = ""  # the engine that serves it (stt.engines: whisper, sphinx, scripted), for dialects that say


@attrs.frozen
class AudioAccepted:
    """One audio frame was taken into the bounded decode queue."""

    seq_no: int


@attrs.frozen
class Reply:
    """Frames a dialect answers a client message with, sent in order with everything else (an ack of a
    configuration change, say)."""

    frames: tuple[str, ...]


@attrs.frozen
class ShuttingDown:
    """The server stopped accepting connections and will end this session at `at` (Unix seconds, wall time)
    unless it ends before. Rendered only by dialects whose vendor has a message for it (stt.dialects.base)."""

    at: float


@attrs.frozen
class SessionStatus:
    """Sent every `Dialect.status_interval` seconds: how much audio has been received, and wall time."""

    audio_seconds: float
    elapsed: float


Result = Partial | Final | SpeechStarted | SpeechStopped | EndOfTranscript
