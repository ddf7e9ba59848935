"""YourVoic real-time STT, sans-IO (../shared/protocols.md §2; chart: statecharts/yourvoic.yaml).

There is no start message: the query string of the upgrade configures the session (`on_open`), and binary
audio frames are accepted from the first one. Text frames carry only {"type":"close"}. The server answers
with JSON text frames discriminated by "type": transcript, speech_started, speech_ended, session_status and
error.

Choices where the vendor's documents are silent (README, YourVoic section):
* speech_started / speech_ended `timestamp`: seconds of audio since the stream began (the vendor's example
  looks like Unix time, but audio time is what a client can line up with the transcripts' start and end).
* session_status every STATUS_INTERVAL seconds: duration = seconds of audio received, credits_used = that
  times the model's credits per second, credits_remaining = null (this server keeps no balance).
* `text` is formatted, `words[]` are the recognizer's words and times as they are: text is smart_format
  (numbers as digits, stt.text.numbers) and then punctuate (first word capitalised, "i" as "I", a final ends
  with a period) applied to the words, in that order, so it can always be rebuilt from words[].
"""

from __future__ import annotations

import re
from typing import Any

from stt.dialects.base import DialectBase, Handshake, Route, RuleBroken, dump, in_query, parse_json, refused
from stt.events import (
    Audio,
    AudioAccepted,
    AudioFormat,
    Configure,
    EndOfAudio,
    EndOfTranscript,
    Final,
    Partial,
    SessionStarted,
    SessionStatus,
    SpeechStarted,
    SpeechStopped,
    Violation,
    Word,
)
from stt.statechart import load_chart
from stt.text import punctuate, smart_format

#: model -> credits per second of audio (§2.4). Every model is served by the same recognizer.
MODELS = {"lucid-mono": 3, "lucid-multi": 3, "lucid-agent": 3, "lucid-lite": 2}
DEFAULT_MODEL = "lucid-agent"
LANGUAGE = re.compile(r"^en(?:[-_][a-z]{2,3})?$", re.IGNORECASE)  # en, en-US, en_gb, ...
ENDPOINTING_MS = (10, 5000)
DEFAULT_ENDPOINTING_MS = 300
MAX_KEYWORDS = 100
MAX_KEYWORD_CHARS = 100
STATUS_INTERVAL = 5.0  # seconds between session_status messages
SPEECH_IDLE_TIMEOUT = 60.0  # seconds without speech that end the session (§2.4)
_TRUE, _FALSE = {"true", "1"}, {"false", "0"}


class YourVoicDialect(DialectBase):
    name = "yourvoic"
    title = "YourVoic real-time STT"
    chart = load_chart("yourvoic").with_endings_from(load_chart("lifecycle"))
    routes = (Route("/api/v1/stt/realtime/stream"),)
    credentials = (in_query("api_key"),)

    closes_after_end = True  # after {"type":"close"}: the pending finals, then close 1000 (§2.6)
    rejects_unauthorised = True  # a missing or wrong api_key is HTTP 401 at the upgrade (§2.6)
    status_interval: float | None = STATUS_INTERVAL
    speech_idle_timeout: float | None = SPEECH_IDLE_TIMEOUT

    def __init__(self, handshake: Handshake):
        super().__init__(handshake)
        self.model = DEFAULT_MODEL
        self.interim_results = True
        self.punctuate = True
        self.smart_format = True
        self._interim_shown = False  # an interim transcript is on screen that a final has not replaced

    # --- the query string ---------------------------------------------------------------------------------

    def on_open(self) -> list:
        try:
            return [self._configure(self.handshake.query)]
        except RuleBroken as exc:
            return [Violation(self.chart.rule(exc.rule_id), str(exc))]

    def _configure(self, query: dict[str, str]) -> Configure:
        model = query.get("model", DEFAULT_MODEL)
        if model not in MODELS:
            raise RuleBroken("YV-PARAM-001", f"model {model!r} is not one of {', '.join(MODELS)}")
        language = query.get("language", "en")
        if not LANGUAGE.match(language):
            raise RuleBroken("YV-PARAM-002", f"language {language!r} is not supported (supported: en)")
        self.model = model
        self.interim_results = _boolean(query, "interim_results", True)
        self.punctuate = _boolean(query, "punctuate", True)
        self.smart_format = _boolean(query, "smart_format", True)
        return Configure(
            audio=AudioFormat("pcm_s16le", 16000, sniff=True),  # FLAC and Ogg Opus announce themselves
            language="en",
            partials=self.interim_results,
            endpointing=_endpointing(query.get("endpointing")),
            hints=_keywords(query.get("keywords", "")),
        )

    # --- frames in ----------------------------------------------------------------------------------------

    def receive(self, frame: str | bytes) -> list:
        if isinstance(frame, (bytes, bytearray)):
            return refused(self.machine.fire("audio")) or [Audio(bytes(frame))]
        try:
            msg = parse_json(frame)
        except ValueError as exc:
            return [self._violation("YV-MSG-001", f"not JSON ({exc})")]
        if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
            return [self._violation("YV-MSG-001", 'no "type" field')]
        if msg["type"] != "close":
            return [self._violation("YV-MSG-002", repr(msg["type"]))]
        return refused(self.machine.fire("close_request")) or [EndOfAudio()]

    # --- frames out ---------------------------------------------------------------------------------------

    def render(self, item: Any) -> list[str]:
        if isinstance(item, Partial):
            if not self.interim_results:
                return []
            self._interim_shown = True
            return [dump(self._transcript(item, final=False))]
        if isinstance(item, Final):
            # An empty final is sent only to replace an interim transcript that came to nothing.
            if not item.words and not self._interim_shown:
                return []
            self._interim_shown = False
            return [dump(self._transcript(item, final=True))]
        if isinstance(item, SpeechStarted):
            return [dump({"type": "speech_started", "timestamp": round(item.time, 3)})]
        if isinstance(item, SpeechStopped):
            return [dump({"type": "speech_ended", "timestamp": round(item.time, 3)})]
        if isinstance(item, SessionStatus):
            return [dump({"type": "session_status", "duration": round(item.audio_seconds, 3),
                           "credits_used": round(item.audio_seconds * MODELS[self.model], 2),
                           "credits_remaining": None})]
        if isinstance(item, EndOfTranscript):
            self.machine.advance("end_of_transcript")
            return []  # no message follows {"type":"close"} but the finals; the server closes with 1000
        if isinstance(item, (SessionStarted, AudioAccepted)):
            return []  # YourVoic announces no session and acknowledges no audio
        if isinstance(item, Violation):
            return self.render_violation(item)
        raise TypeError(f"yourvoic cannot render {item!r}")

    def render_violation(self, violation: Violation) -> list[str]:
        rule = violation.rule
        if not rule.error:
            return []  # YourVoic has no warning message: the frame is ignored silently
        reason = f"{rule.message}: {violation.detail}" if violation.detail else rule.message
        return [dump({"type": "error", "code": rule.error, "message": reason})]

    def _transcript(self, result: Partial | Final, final: bool) -> dict:
        words = result.words
        return {
            "type": "transcript",
            "text": self.format_text(words, final),
            "is_final": final,
            "confidence": round(sum(w.confidence for w in words) / len(words), 4) if words else 0.0,
            "start": round(result.start, 3),
            "end": round(result.end, 3),
            "words": [{"word": w.text, "start": round(w.start, 3), "end": round(w.end, 3)} for w in words],
        }

    def format_text(self, words: tuple[Word, ...] | list[Word], final: bool) -> str:
        """The transcript text of `words`: smart_format, then punctuate, as the query string asked."""
        tokens = [w.text for w in words]
        if self.smart_format:
            tokens = [t.text for t in smart_format(tokens)]
        if self.punctuate:
            tokens = punctuate(tokens, final)
        return " ".join(tokens)


def _boolean(query: dict[str, str], name: str, default: bool) -> bool:
    if name not in query:
        return default
    value = query[name].lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise RuleBroken("YV-PARAM-003", f"{name} must be true or false (or 1 or 0), not {query[name]!r}")


def _endpointing(value: str | None) -> float:
    """The endpointing parameter (ms) -> seconds."""
    if value is None:
        return DEFAULT_ENDPOINTING_MS / 1000
    low, high = ENDPOINTING_MS
    if not (value.isascii() and value.isdigit()) or not low <= int(value) <= high:
        raise RuleBroken("YV-PARAM-004", f"endpointing must be a whole number of milliseconds from {low} to "
                                         f"{high}, not {value!r}")
    return int(value) / 1000


def _keywords(value: str) -> tuple[str, ...]:
    keywords = tuple(k.strip() for k in value.split(",") if k.strip())
    if len(keywords) > MAX_KEYWORDS:
        raise RuleBroken("YV-PARAM-005", f"{len(keywords)} keywords; at most {MAX_KEYWORDS}")
    for k in keywords:
        if len(k) > MAX_KEYWORD_CHARS:
            raise RuleBroken("YV-PARAM-005", f"keyword {k[:20]!r}... is longer than {MAX_KEYWORD_CHARS} characters")
    return keywords
