"""OpenAI Realtime API, transcription sessions, sans-IO (../shared/protocols.md §7; chart: statecharts/openai.yaml).

    connect /v1/realtime?intent=transcription → session.created → [session.update → session.updated] →
    input_audio_buffer.append* → (server_vad) speech_started → …transcription.delta* → committed → completed →
    speech_stopped …   (turn_detection null) append* → commit → committed → delta → completed …

GA and beta share the path: the OpenAI-Beta: realtime=v1 header (or the browser's subprotocol
openai-beta.realtime-v1) makes the greeting transcription_session.created; each update is answered in the shape of
its own protocol (session.updated for session.update, transcription_session.updated for transcription_session.update).
Every server event carries a unique event_id. Audio is base64 inside input_audio_buffer.append: PCM16 at 24 kHz
(audio/pcm, pcm16), or G.711 µ-law / A-law at 8 kHz (audio/pcmu, audio/pcma; g711_ulaw, g711_alaw).

Items, and the choices where the vendor is silent:
  * The recognizer opens with the first audio (the defaults apply if no update came: audio/pcm, server_vad,
    gpt-4o-transcribe); its audio format is fixed from then on. The engine's endpointing is the first
    turn_detection's (server_vad silence_duration_ms; semantic_vad eagerness low 1 s, medium and auto 0.6 s, high
    0.3 s); later changes of those are echoed but the recognizer keeps them. The prompt, noise_reduction, threshold
    and prefix_padding_ms are echoed and have no effect; keywords are passed to the engine as hints.
  * server_vad / semantic_vad: speech_started and speech_stopped are the engine's SpeechStarted/SpeechStopped, and
    each of its finals is one item: committed, the rest of the text as a delta, then completed. Deltas stream while
    the item is spoken, so they come before its committed (OpenAI transcribes only after the commit), and
    speech_stopped comes after the completed of the item it ends (the engine stops speech after its final).
  * turn_detection null: nothing is sent until input_audio_buffer.commit; then committed at once, and, once the
    engine has finished the utterance (a Flush: the engine finalises what it heard), one delta with the whole text
    of the audio since the last commit and completed. A commit with server_vad does the same for the item under way.
  * input_audio_buffer.clear: the engine finishes the utterance and its text is dropped; cleared then (its partial
    text, already sent as deltas with server_vad, gets no completed).
  * Deltas are append-only, word by word: a delta is the words added since the item's last delta (with the space
    before them). The last word of a partial is held back (it is the one the engine revises most: "go for" becomes
    "go forward"); the item's final releases the rest. A partial that still revises words already sent gives no
    delta: nothing can take text back, so the deltas wait until the text again extends what was sent; the completed
    transcript is the engine's final and is authoritative (clients replace the deltas with it, as OpenAI's guide
    says). Without revisions the deltas joined are the transcript.
  * logprobs (include item.input_audio_transcription.logprobs): one token per word (with its leading space), the
    log of the engine's word confidence. usage: whisper-1 {"type":"duration","seconds"} (the item's audio); the
    other models {"type":"tokens"}, 10 audio tokens a second of the item's audio as input, a token a word as output
    (our estimate: the engine counts no tokens).
  * The words are the engine's, as they are (no casing or punctuation is added).
"""

from __future__ import annotations

import base64
import binascii
import math
import re
import secrets
from collections import deque
from typing import Any

import attrs

from stt.dialects.base import (
    BEARER,
    Credential,
    DialectBase,
    Handshake,
    HandshakeRefused,
    Route,
    RuleBroken,
    dump,
    parse_json,
)
from stt.events import (
    Audio,
    AudioAccepted,
    AudioFormat,
    Configure,
    EndOfTranscript,
    Final,
    Flush,
    Partial,
    Reply,
    SessionStarted,
    SessionStatus,
    SpeechStarted,
    SpeechStopped,
    Violation,
    Word,
)
from stt.statechart import Refused, load_chart

#: The browser's form of the key: Sec-WebSocket-Protocol: realtime, openai-insecure-api-key.<key>.
KEY_SUBPROTOCOL = "openai-insecure-api-key."
#: The browser's form of the OpenAI-Beta: realtime=v1 header.
BETA_SUBPROTOCOL = "openai-beta.realtime-v1"
INTENT = "transcription"
#: The published transcription models (openai.types.realtime.AudioTranscription); every one is served by the engine.
MODELS = ("whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe", "gpt-4o-mini-transcribe-2025-12-15",
          "gpt-4o-transcribe-diarize", "gpt-transcribe", "gpt-live-transcribe", "gpt-realtime-whisper")
DEFAULT_MODEL = "gpt-4o-transcribe"
NO_VAD_MODEL = "gpt-realtime-whisper"  # turn_detection must be null
DELAYS = ("minimal", "low", "medium", "high", "xhigh")
#: GA format type -> (the GA object echoed, the beta name, how stt decodes it, bytes per second).
FORMATS = {
    "audio/pcm": ({"type": "audio/pcm", "rate": 24000}, "pcm16", AudioFormat("pcm_s16le", 24000), 48000),
    "audio/pcmu": ({"type": "audio/pcmu"}, "g711_ulaw", AudioFormat("mulaw", 8000), 8000),
    "audio/pcma": ({"type": "audio/pcma"}, "g711_alaw", AudioFormat("alaw", 8000), 8000),
}
BETA_FORMATS = {beta: ga for ga, (_, beta, _, _) in FORMATS.items()}
LOGPROBS = "item.input_audio_transcription.logprobs"
SERVER_VAD_DEFAULTS = {"threshold": 0.5, "prefix_padding_ms": 300, "silence_duration_ms": 500}
DEFAULT_TURN_DETECTION = {"type": "server_vad", **SERVER_VAD_DEFAULTS}
EAGERNESS = {"low": 1.0, "medium": 0.6, "auto": 0.6, "high": 0.3}  # semantic_vad -> endpointing seconds
SILENCE_MS = (1, 10000)
NOISE_REDUCTION = ("near_field", "far_field")
MIN_COMMIT_MS = 100
AUDIO_TOKENS_PER_SECOND = 10
_LANGUAGE = re.compile(r"^en(?:[-_][A-Za-z]{2,3})?$", re.IGNORECASE)

_TRANSCRIPTION_FIELDS = {"model": str, "language": str, "prompt": str}
_GA_TRANSCRIPTION_FIELDS = {**_TRANSCRIPTION_FIELDS, "delay": str, "keywords": list, "languages": list}
_VAD_FIELDS = {
    "server_vad": {"type": str, "threshold": float, "prefix_padding_ms": int, "silence_duration_ms": int,
                   "idle_timeout_ms": int, "create_response": bool, "interrupt_response": bool},
    "semantic_vad": {"type": str, "eagerness": str, "create_response": bool, "interrupt_response": bool},
}
_BETA_VAD_FIELDS = {"type", "threshold", "prefix_padding_ms", "silence_duration_ms", "eagerness", "create_response",
                    "interrupt_response"}


class Invalid(RuleBroken):
    """A rule broken by a client event, with the parameter it names (error.param)."""

    def __init__(self, rule_id: str, detail: str, param: str | None = None):
        super().__init__(rule_id, detail)
        self.param = param


@attrs.frozen
class ClientError(Violation):
    """A Violation that remembers the parameter at fault and the client event's own event_id, for the error."""

    param: str | None = None
    event_id: str | None = None


@attrs.frozen
class SessionConfig:
    """The effective configuration, in the GA's terms; echoed in the GA or the beta shape."""

    format: str = "audio/pcm"
    transcription: dict | None = attrs.field(factory=lambda: {"model": DEFAULT_MODEL, "language": None,
                                                                  "prompt": ""})
    turn_detection: dict | None = attrs.field(factory=lambda: dict(DEFAULT_TURN_DETECTION))
    noise_reduction: dict | None = None
    include: tuple[str, ...] = ()

    @property
    def logprobs(self) -> bool:
        return LOGPROBS in self.include

    @property
    def model(self) -> str:
        return (self.transcription or {}).get("model") or DEFAULT_MODEL

    def ga(self, session_id: str) -> dict:
        return {"id": session_id, "object": "realtime.transcription_session", "type": "transcription",
                "audio": {"input": {"format": dict(FORMATS[self.format][0]), "transcription": self.transcription,
                                    "noise_reduction": self.noise_reduction, "turn_detection": self.turn_detection}},
                "include": list(self.include)}

    def beta(self, session_id: str) -> dict:
        transcription = None if self.transcription is None else {
            k: v for k, v in self.transcription.items() if k in _TRANSCRIPTION_FIELDS}
        turn = None if self.turn_detection is None else {
            k: v for k, v in self.turn_detection.items() if k in _BETA_VAD_FIELDS}
        return {"id": session_id, "object": "realtime.transcription_session",
                "input_audio_format": FORMATS[self.format][1], "input_audio_transcription": transcription,
                "turn_detection": turn, "input_audio_noise_reduction": self.noise_reduction,
                "include": list(self.include)}

    def configure(self) -> Configure:
        turn = self.turn_detection
        if turn is None:
            endpointing = None
        elif turn["type"] == "server_vad":
            endpointing = turn.get("silence_duration_ms", SERVER_VAD_DEFAULTS["silence_duration_ms"]) / 1000
        else:
            endpointing = EAGERNESS[turn.get("eagerness", "auto")]
        hints = tuple(dict.fromkeys(k.strip() for k in (self.transcription or {}).get("keywords") or () if k.strip()))
        return Configure(FORMATS[self.format][2], language="en", partials=True, endpointing=endpointing, hints=hints)


@attrs.define
class _Item:
    """An item being transcribed (render side): its words so far, the partial after them, what deltas sent."""

    id: str
    words: list[Word] = attrs.field(factory=list)  # of the engine's finals
    partial: tuple[Word, ...] = ()
    sent: list[str] = attrs.field(factory=list)  # the words the deltas carried
    announced: bool = False  # speech_started or a delta named it
    start: float | None = None


class OpenAIDialect(DialectBase):
    name = "openai"
    title = "OpenAI Realtime (transcription)"
    chart = load_chart("openai").with_endings_from(load_chart("lifecycle"))
    routes = (Route("/v1/realtime", query="?intent=transcription"),)
    credentials = (BEARER, Credential("subprotocol", KEY_SUBPROTOCOL))
    subprotocol = "realtime"  # accepted when the browser form offers it

    closes_after_end = False  # OpenAI has no end of stream: the client closes; an end of transcript never comes
    rejects_unauthorised = True  # HTTP 401 at the upgrade
    ends_with_client_close = True  # and its close with 1000 is the normal end of the session, not an early leave

    def __init__(self, handshake: Handshake):
        intent = handshake.query.get("intent")
        if intent is not None and intent != INTENT:
            raise HandshakeRefused(400, f"intent {intent!r} is not served: this server serves transcription "
                                        f"sessions only; connect to /v1/realtime?intent={INTENT}")
        super().__init__(handshake)
        beta_header = handshake.headers.get("openai-beta", "").replace(" ", "").lower()
        self.beta = "realtime=v1" in beta_header.split(",") or BETA_SUBPROTOCOL in handshake.subprotocols
        self.session_id = "sess_" + secrets.token_hex(12)
        self._event_prefix = "event_" + secrets.token_hex(5)
        self._events = 0
        config = SessionConfig()
        model = handshake.query.get("model")
        if model in MODELS and model != NO_VAD_MODEL:  # the beta SDK always names one: taken as the default
            config = attrs.evolve(config, transcription={**config.transcription, "model": model})
        self.config = config
        self._configured = False  # the Configure went out (with the first audio)
        self._buffered = 0  # bytes appended since the last commit or clear
        self._flushes: deque[tuple[str, float]] = deque()  # ("commit" | "clear", seconds of audio) per Flush sent
        self._item: _Item | None = None
        self._previous_item_id: str | None = None  # the last committed item
        self._last_item_id: str | None = None  # the last item named (speech_stopped names it after its completed)

    def _event_id(self) -> str:
        self._events += 1
        return f"{self._event_prefix}{self._events:05d}"

    def _frame(self, kind: str, **fields) -> str:
        return dump({"type": kind, "event_id": self._event_id(), **fields})

    def greeting(self) -> list[str]:
        if self.beta:
            return [self._frame("transcription_session.created", session=self.config.beta(self.session_id))]
        return [self._frame("session.created", session=self.config.ga(self.session_id))]

    # --- frames in ----------------------------------------------------------------------------------------

    def receive(self, frame: str | bytes) -> list:
        if isinstance(frame, (bytes, bytearray)):
            return [self._error("OA-MSG-004", f"a binary frame of {len(frame)} bytes")]
        try:
            msg = parse_json(frame)
        except ValueError as exc:
            return [self._error("OA-MSG-001", f"not JSON ({exc})")]
        if not isinstance(msg, dict):
            return [self._error("OA-MSG-001", f"a JSON {type(msg).__name__}, not an object")]
        event_id = msg.get("event_id") if isinstance(msg.get("event_id"), str) else None
        kind = msg.get("type")
        if not isinstance(kind, str):
            return [self._error("OA-MSG-002", "missing required parameter 'type'" if kind is None
                                else f"'type' is {kind!r}, not a string", "type", event_id)]
        if kind not in self.chart.client_events:
            return [self._error("OA-MSG-003", f"invalid value {kind[:80]!r}: a transcription session takes "
                                              f"{', '.join(self.chart.client_events)}", "type", event_id)]
        # The chart's verdict first, then the event's content; the machine moves only when both pass, so an update
        # with a bad field leaves the session as it was.
        outcome = self.machine.peek(kind)
        if isinstance(outcome, Refused):
            return [ClientError(outcome.rule, self._refusal(kind), None, event_id)]
        try:
            events = self._handlers[kind](self, msg)
        except Invalid as exc:
            return [self._error(exc.rule_id, str(exc), exc.param, event_id)]
        self.machine.fire(kind)
        return events

    def _refusal(self, kind: str) -> str:
        if kind == "input_audio_buffer.commit":
            return "buffer only has 0.00ms of audio"
        return f"{kind} in state {self.machine.state}"

    def _error(self, rule_id: str, detail: str, param: str | None = None, event_id: str | None = None) -> ClientError:
        return ClientError(self.chart.rule(rule_id), detail, param, event_id)

    def _on_session_update(self, msg: dict) -> list:
        session = msg.get("session")
        if session is None:
            raise Invalid("OA-CFG-003", "missing required parameter 'session'", "session")
        self._update(_ga_changes(session))
        return [Reply((self._frame("session.updated", session=self.config.ga(self.session_id)),))]

    def _on_transcription_session_update(self, msg: dict) -> list:
        session = msg.get("session")
        if session is None:
            raise Invalid("OA-CFG-003", "missing required parameter 'session'", "session")
        self._update(_beta_changes(session))
        return [Reply((self._frame("transcription_session.updated", session=self.config.beta(self.session_id)),))]

    def _update(self, changes: dict) -> None:
        config = self.config
        if "format" in changes and changes["format"] != config.format and self._configured:
            raise Invalid("OA-CFG-006", f"the audio is {config.format}; it cannot become {changes['format']}",
                          "session.audio.input.format")
        merged = {}
        for key, value in changes.items():
            old = getattr(config, key)
            if isinstance(value, dict) and isinstance(old, dict) and value.get("type", old.get("type")) == old.get("type"):
                value = {**old, **value}  # only the fields given change (noise_reduction's strength, ...)
            merged[key] = value
        if isinstance(merged.get("turn_detection"), dict):
            merged["turn_detection"] = _vad_with_defaults(merged["turn_detection"])
        if isinstance(merged.get("transcription"), dict):
            merged["transcription"] = {"model": DEFAULT_MODEL, "language": None, "prompt": "",
                                       **merged["transcription"]}
        config = attrs.evolve(config, **merged)
        if config.model == NO_VAD_MODEL and config.turn_detection is not None:
            raise Invalid("OA-CFG-004", f"{NO_VAD_MODEL} needs turn_detection null (it does no voice activity "
                                        "detection)", "session.audio.input.turn_detection")
        self.config = config

    def _on_append(self, msg: dict) -> list:
        audio = msg.get("audio")
        if not isinstance(audio, str):
            raise Invalid("OA-AUDIO-001", "missing required parameter 'audio'" if audio is None
                          else "'audio' is not a string", "audio")
        if "\n" in audio or "\r" in audio:  # MIME-style line breaks (base64.encodebytes) are harmless
            audio = audio.replace("\r", "").replace("\n", "")
        try:
            data = base64.b64decode(audio, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise Invalid("OA-AUDIO-001", f"invalid base64 ({exc})", "audio") from None
        events: list = []
        if not self._configured:  # the first audio opens the recognizer, with the configuration so far
            self._configured = True
            events.append(self.config.configure())
        self._buffered += len(data)
        if data:
            events.append(Audio(data))
        return events

    def _buffered_ms(self) -> float:
        return self._buffered / FORMATS[self.config.format][3] * 1000

    def _on_commit(self, msg: dict) -> list:
        ms = self._buffered_ms()
        if ms < MIN_COMMIT_MS:
            raise Invalid("OA-BUF-001", f"buffer only has {ms:.2f}ms of audio")
        self._flushes.append(("commit", ms / 1000))
        self._buffered = 0
        return [Flush()]

    def _on_clear(self, msg: dict) -> list:
        self._buffered = 0
        if not self._configured:  # no audio yet: nothing in the engine to drop
            return [Reply((self._frame("input_audio_buffer.cleared"),))]
        self._flushes.append(("clear", 0.0))
        return [Flush()]  # cleared goes out once the engine has finished what came before

    _handlers = {
        "session.update": _on_session_update,
        "transcription_session.update": _on_transcription_session_update,
        "input_audio_buffer.append": _on_append,
        "input_audio_buffer.commit": _on_commit,
        "input_audio_buffer.clear": _on_clear,
    }

    # --- frames out ---------------------------------------------------------------------------------------

    @property
    def _vad(self) -> bool:
        return self.config.turn_detection is not None

    @property
    def _transcribing(self) -> bool:
        return self.config.transcription is not None

    def render(self, item: Any) -> list[str]:
        if isinstance(item, Partial):
            return self._on_partial(item)
        if isinstance(item, Final):
            if item.forced and self._flushes:
                return self._on_flushed(item, *self._flushes.popleft())
            return self._on_final(item)
        if isinstance(item, SpeechStarted):
            if not self._vad:
                return []
            current = self._current(item.time)
            current.announced = True
            return [self._frame("input_audio_buffer.speech_started", audio_start_ms=_ms(item.time),
                                item_id=current.id)]
        if isinstance(item, SpeechStopped):
            if not self._vad:
                return []
            item_id = self._item.id if self._item is not None else self._last_item_id or self._current(item.time).id
            return [self._frame("input_audio_buffer.speech_stopped", audio_end_ms=_ms(item.time), item_id=item_id)]
        if isinstance(item, (AudioAccepted, SessionStarted, EndOfTranscript, SessionStatus)):
            # No acknowledgement of audio; session.created went out at the upgrade and the recognizer opening
            # with the first audio is not announced; no end of stream, no status.
            return []
        if isinstance(item, Violation):
            return self.render_violation(item)
        raise TypeError(f"openai cannot render {item!r}")

    def _current(self, start: float | None = None) -> _Item:
        if self._item is None:
            self._item = _Item("item_" + secrets.token_hex(11), start=start)
            self._last_item_id = self._item.id
        return self._item

    def _on_partial(self, result: Partial) -> list[str]:
        if not self._vad or not self._transcribing or not result.words:
            return []  # without turn detection nothing is sent before the commit
        current = self._current(result.start)
        current.partial = result.words[:-1]  # the last word of a partial is the likeliest to change: held back
        return self._delta(current)

    def _on_final(self, result: Final) -> list[str]:
        if not self._vad:
            if result.words:
                self._current(result.start).words.extend(result.words)
            return []  # held until the commit
        current = self._item
        if not result.words and (current is None or not current.announced):
            self._item = None  # nothing was said, and nothing named the item: there is no item
            return []
        current = self._current(result.start)
        current.words.extend(result.words)
        current.partial = ()
        return self._complete(current, max(0.0, result.end - (current.start if current.start is not None
                                                               else result.start)))

    def _on_flushed(self, result: Final, action: str, seconds: float) -> list[str]:
        if action == "clear":
            self._item = None
            return [self._frame("input_audio_buffer.cleared")]
        current = self._current(result.start)
        current.words.extend(result.words)
        current.partial = ()
        if self._vad and current.start is not None:
            seconds = max(0.0, result.end - current.start)
        return self._complete(current, seconds)

    def _complete(self, current: _Item, seconds: float) -> list[str]:
        """committed, the rest of the text as a delta, completed; the item is done."""
        frames = [self._frame("input_audio_buffer.committed", previous_item_id=self._previous_item_id,
                              item_id=current.id)]
        self._previous_item_id = current.id
        self._item = None
        if not self._transcribing:
            return frames
        frames += self._delta(current)
        fields: dict[str, Any] = {"item_id": current.id, "content_index": 0,
                                  "transcript": " ".join(w.text for w in current.words),
                                  "usage": self._usage(seconds, len(current.words))}
        if self.config.logprobs:
            fields["logprobs"] = _logprobs(current.words, first=True)
        frames.append(self._frame("conversation.item.input_audio_transcription.completed", **fields))
        return frames

    def _delta(self, current: _Item) -> list[str]:
        words = [*current.words, *current.partial]
        texts = [w.text for w in words]
        sent = current.sent
        if len(texts) <= len(sent) or texts[:len(sent)] != sent:
            return []  # nothing new, or a revision of what was sent: no delta (see the module's docstring)
        new = words[len(sent):]
        tokens = _tokens(new, first=not sent)
        current.sent = texts
        current.announced = True
        fields: dict[str, Any] = {"item_id": current.id, "content_index": 0, "delta": "".join(tokens)}
        if self.config.logprobs:
            fields["logprobs"] = _logprobs(new, first=not sent)
        return [self._frame("conversation.item.input_audio_transcription.delta", **fields)]

    def _usage(self, seconds: float, words: int) -> dict:
        if self.config.model == "whisper-1":
            return {"type": "duration", "seconds": round(seconds, 3)}
        audio = math.ceil(seconds * AUDIO_TOKENS_PER_SECOND)
        return {"type": "tokens", "input_tokens": audio, "output_tokens": words, "total_tokens": audio + words,
                "input_token_details": {"text_tokens": 0, "audio_tokens": audio}}

    def render_violation(self, violation: Violation) -> list[str]:
        rule = violation.rule
        if rule.error is None:
            return []
        frames = []
        kind = "server_error" if rule.id == "OA-INT-001" else "invalid_request_error"
        if rule.id == "OA-INT-001" and self._item is not None and self._transcribing:
            frames.append(self._frame("conversation.item.input_audio_transcription.failed", item_id=self._item.id,
                                      content_index=0, error={"type": kind, "code": rule.error,
                                                              "message": rule.message, "param": None}))
        message = f"{rule.message}: {violation.detail}" if violation.detail else rule.message
        param = violation.param if isinstance(violation, ClientError) else None
        event_id = violation.event_id if isinstance(violation, ClientError) else None
        frames.append(self._frame("error", error={"type": kind, "code": rule.error, "message": message,
                                                  "param": param, "event_id": event_id}))
        return frames


# --- the session of an update, validated ------------------------------------------------------------------


def _ga_changes(session: Any) -> dict:
    """session.update's session -> the SessionConfig fields it changes."""
    _object(session, "session")
    _known(session, {"type", "audio", "include"}, "session")
    if "type" not in session:
        raise Invalid("OA-CFG-003", "missing required parameter 'session.type'", "session.type")
    if session["type"] != "transcription":
        raise Invalid("OA-CFG-004", f"session.type {session['type']!r}: this server serves transcription sessions "
                                    "only (session.type \"transcription\")", "session.type")
    changes: dict = {}
    audio = session.get("audio")
    if audio is not None:
        _object(audio, "session.audio")
        _known(audio, {"input"}, "session.audio")
        given = audio.get("input")
        if given is not None:
            where = "session.audio.input"
            _object(given, where)
            _known(given, {"format", "transcription", "noise_reduction", "turn_detection"}, where)
            if given.get("format") is not None:
                changes["format"] = _ga_format(given["format"])
            if "transcription" in given:
                changes["transcription"] = _transcription(given["transcription"], f"{where}.transcription", ga=True)
            if "noise_reduction" in given:
                changes["noise_reduction"] = _noise_reduction(given["noise_reduction"], f"{where}.noise_reduction")
            if "turn_detection" in given:
                changes["turn_detection"] = _turn_detection(given["turn_detection"], f"{where}.turn_detection")
    if "include" in session:
        changes["include"] = _include(session["include"], "session.include")
    return changes


def _beta_changes(session: Any) -> dict:
    """transcription_session.update's session -> the SessionConfig fields it changes."""
    _object(session, "session")
    _known(session, {"input_audio_format", "input_audio_transcription", "turn_detection",
                     "input_audio_noise_reduction", "include", "client_secret", "modalities"}, "session")
    changes: dict = {}
    fmt = session.get("input_audio_format")
    if fmt is not None:
        if not isinstance(fmt, str):
            raise Invalid("OA-CFG-002", "session.input_audio_format must be a string", "session.input_audio_format")
        if fmt not in BETA_FORMATS:
            raise Invalid("OA-CFG-004", f"session.input_audio_format {fmt!r} is not one of "
                                        f"{', '.join(BETA_FORMATS)}", "session.input_audio_format")
        changes["format"] = BETA_FORMATS[fmt]
    if "input_audio_transcription" in session:
        changes["transcription"] = _transcription(session["input_audio_transcription"],
                                                  "session.input_audio_transcription", ga=False)
    if "input_audio_noise_reduction" in session:
        changes["noise_reduction"] = _noise_reduction(session["input_audio_noise_reduction"],
                                                      "session.input_audio_noise_reduction")
    if "turn_detection" in session:
        value = session["turn_detection"]
        if isinstance(value, dict):
            _known(value, _BETA_VAD_FIELDS, "session.turn_detection")
        changes["turn_detection"] = _turn_detection(value, "session.turn_detection")
    if "include" in session:
        changes["include"] = _include(session["include"], "session.include")
    modalities = session.get("modalities")  # the beta's, of no use to a transcription: accepted and ignored
    if modalities is not None and (not isinstance(modalities, list)
                                   or not all(m in ("text", "audio") for m in modalities)):
        raise Invalid("OA-CFG-004", "session.modalities must be a list of \"text\" and \"audio\"",
                      "session.modalities")
    if session.get("client_secret") is not None:  # the REST call's; accepted and ignored
        _object(session["client_secret"], "session.client_secret")
    return changes


def _object(value: Any, where: str) -> None:
    if not isinstance(value, dict):
        raise Invalid("OA-CFG-002", f"{where} must be an object, not {_kind(value)}", where)


def _known(value: dict, fields: set[str], where: str) -> None:
    for key in value:
        if key not in fields:
            raise Invalid("OA-CFG-001", f"unknown parameter '{where}.{key}'", f"{where}.{key}")


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number")


def _typed(value: Any, expected: type, where: str) -> None:
    if expected is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    elif expected is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, expected)
    if not ok:
        name = {float: "a number", int: "an integer", str: "a string", bool: "a boolean", list: "a list"}[expected]
        raise Invalid("OA-CFG-002", f"{where} must be {name}, not {_kind(value)}", where)


def _ga_format(value: Any) -> str:
    where = "session.audio.input.format"
    _object(value, where)
    _known(value, {"type", "rate"}, where)
    kind = value.get("type")
    if kind not in FORMATS:
        raise Invalid("OA-CFG-004", f"{where}.type {kind!r} is not one of {', '.join(FORMATS)}", f"{where}.type")
    if "rate" in value and (kind != "audio/pcm" or value["rate"] != 24000 or isinstance(value["rate"], bool)):
        raise Invalid("OA-CFG-004", f"{where}.rate {value['rate']!r}: audio/pcm is 24000 Hz only, and the G.711 "
                                    "formats take no rate", f"{where}.rate")
    return kind


def _transcription(value: Any, where: str, ga: bool) -> dict | None:
    if value is None:
        return None  # transcription off: committed items, no transcripts
    _object(value, where)
    fields = _GA_TRANSCRIPTION_FIELDS if ga else _TRANSCRIPTION_FIELDS
    _known(value, set(fields), where)
    given = {k: v for k, v in value.items() if v is not None}
    for key, v in given.items():
        _typed(v, fields[key], f"{where}.{key}")
    model = given.get("model")
    if model is not None and model not in MODELS:
        raise Invalid("OA-CFG-004", f"{where}.model {model!r} is not one of {', '.join(MODELS)}", f"{where}.model")
    if given.get("delay") is not None and given["delay"] not in DELAYS:
        raise Invalid("OA-CFG-004", f"{where}.delay {given['delay']!r} is not one of {', '.join(DELAYS)}",
                      f"{where}.delay")
    for key in ("keywords", "languages"):
        if key in given and not all(isinstance(k, str) for k in given[key]):
            raise Invalid("OA-CFG-002", f"{where}.{key} must be a list of strings", f"{where}.{key}")
    language = given.get("language")
    if language and not _LANGUAGE.match(language):
        raise Invalid("OA-CFG-005", f"{where}.language {language!r} is not supported (supported: en, en-<region>)",
                      f"{where}.language")
    languages = given.get("languages")
    if languages and not any(_LANGUAGE.match(lang) for lang in languages):
        raise Invalid("OA-CFG-005", f"{where}.languages {languages!r} name no language the server recognises "
                                    "(en)", f"{where}.languages")
    return {k: value[k] for k in value}


def _turn_detection(value: Any, where: str) -> dict | None:
    if value is None:
        return None  # turn detection off: the client commits
    _object(value, where)
    kind = value.get("type", "server_vad")
    if kind not in _VAD_FIELDS:
        raise Invalid("OA-CFG-004", f"{where}.type {kind!r} is not server_vad or semantic_vad (or turn_detection "
                                    "null)", f"{where}.type")
    fields = _VAD_FIELDS[kind]
    _known(value, set(fields), where)
    for key, v in value.items():
        if v is not None:
            _typed(v, fields[key], f"{where}.{key}")
    threshold = value.get("threshold")
    if threshold is not None and not 0 <= threshold <= 1:
        raise Invalid("OA-CFG-004", f"{where}.threshold must be from 0 to 1, not {threshold}", f"{where}.threshold")
    for key in ("prefix_padding_ms", "idle_timeout_ms"):
        if value.get(key) is not None and value[key] < 0:
            raise Invalid("OA-CFG-004", f"{where}.{key} must not be negative", f"{where}.{key}")
    silence = value.get("silence_duration_ms")
    if silence is not None and not SILENCE_MS[0] <= silence <= SILENCE_MS[1]:
        raise Invalid("OA-CFG-004", f"{where}.silence_duration_ms must be from {SILENCE_MS[0]} to {SILENCE_MS[1]}, "
                                    f"not {silence}", f"{where}.silence_duration_ms")
    eagerness = value.get("eagerness")
    if eagerness is not None and eagerness not in EAGERNESS:
        raise Invalid("OA-CFG-004", f"{where}.eagerness {eagerness!r} is not one of {', '.join(EAGERNESS)}",
                      f"{where}.eagerness")
    return {"type": kind, **{k: v for k, v in value.items() if v is not None and k != "type"}}


def _vad_with_defaults(turn: dict) -> dict:
    if turn["type"] == "server_vad":
        return {"type": "server_vad", **SERVER_VAD_DEFAULTS, **{k: v for k, v in turn.items() if k != "type"}}
    return {"type": "semantic_vad", "eagerness": "auto", **{k: v for k, v in turn.items() if k != "type"}}


def _noise_reduction(value: Any, where: str) -> dict | None:
    if value is None:
        return None
    _object(value, where)
    _known(value, {"type", "strength"}, where)
    if value.get("type") is not None and value["type"] not in NOISE_REDUCTION:
        raise Invalid("OA-CFG-004", f"{where}.type {value['type']!r} is not near_field or far_field", f"{where}.type")
    if value.get("strength") is not None:
        _typed(value["strength"], float, f"{where}.strength")
    return dict(value)


def _include(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise Invalid("OA-CFG-002", f"{where} must be a list, not {_kind(value)}", where)
    for entry in value:
        if entry != LOGPROBS:
            raise Invalid("OA-CFG-004", f"{where} entry {entry!r} is not {LOGPROBS!r}", where)
    return tuple(dict.fromkeys(value))


# --- results ----------------------------------------------------------------------------------------------


def _ms(seconds: float) -> int:
    return max(0, round(seconds * 1000))


def _tokens(words: list[Word] | tuple[Word, ...], first: bool) -> list[str]:
    """One token a word, with the space before it (none before an item's first word)."""
    return [("" if first and i == 0 else " ") + w.text for i, w in enumerate(words)]


def _logprobs(words: list[Word] | tuple[Word, ...], first: bool) -> list[dict]:
    return [{"token": token, "logprob": round(math.log(max(w.confidence, 1e-6)), 4), "bytes": list(token.encode())}
            for token, w in zip(_tokens(words, first), words)]
