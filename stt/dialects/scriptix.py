"""Scriptix real-time, microphone mode, sans-IO (../shared/protocols.md §3; chart: statecharts/scriptix.yaml).

    connect /v2/realtime?token=…&type=fast|quality&language=en → {"action":"start"} →
    {"state":"listening","session_id":…} → binary PCM* → partials, finals → {"action":"stop"} →
    remaining finals → {"state":"stopped"} → the server closes with 1000

Frames are compact JSON (json.dumps with separators=(",", ":")): the vendor's own clients find control
messages by raw substring ('"state":"stopped"', '"listening"'), so no spaces and no extra keys.

Two result shapes (§3.3), chosen by our query parameter `shape` (not the vendor's):
  * k (default), the vendor's current wire:
      {"partial":"<text>"}
      {"result":[[word,start_ms,end_ms,confidence],…],"speaker":"Speaker 1","text":"<text>"}
  * v, the documented v2 shape:
      {"text":…,"is_final":false,"offset_ms":…,"stability":…}
      {"text":…,"is_final":true,"offset_ms":…,"words":[[word,start_ms,end_ms,confidence],…],"speaker":"Speaker 1"}

Our choices where the vendor is silent:
  * Times are integer ms of audio since the stream began. `offset_ms` is where the result ends (its last
    word's end; for an empty final, where the utterance was cut): it grows through a stream, like the
    documented example. `stability` is the partial's mean word confidence (2 decimals). Confidences have 2
    decimals. `speaker` is always "Speaker 1" (the vendor's new engine does the same).
  * actual_numbers: the words pass through stt.text.smart_format (Deepgram-style: "twenty five" → "25",
    "one two" and lone small numbers stay words). A number spoken in several words becomes one result item,
    from the first word's start to the last word's end, with the lowest confidence of its words; `text` is
    always the items joined by spaces, so it can be rebuilt from the items.
  * {"state":"loading"} (listed in the v2 documents) is never sent, in either shape: the vendor's own v2
    client (client_v2.py) takes the first message after its start action to be the one with "listening".
  * An empty partial is not sent; an empty final only to replace a partial that came to nothing.
  * {"state":"shutting_down","at":…} (the vendor sends it before maintenance) goes out when the server begins
    to shut down; `at` is the Unix second at which it will close the sessions still open (1001).
  * Audio before the start action is ignored (a warning rule; Scriptix sends nothing). Audio pipelined after
    the start action, before {"state":"listening"} arrives, is kept: the server reads nothing more until the
    recognizer is open, so it is never lost.
  * Errors: {"error":"<message>"} (plus what was wrong with the client's frame). Which ones close, and with
    which code, is in the chart's header.
  * The token: the query's `token`, else the headers x-zoom-s2t-key, x-api-key, api-key. A connection
    without one may bring it in the start action's "key" (credential_in_start: the session checks it when the
    start arrives); a connection that brings one is checked at once, and a "key" in its start is ignored.
  * Stream mode (/v2/client/{token}?url=…): the token is the path's; the server sends {"state":"loading"},
    opens the recognizer and reads the URL itself (a direct file, or an HLS playlist of MP3/AAC segments; see
    stt.fetch, which refuses private addresses unless --allow-private-urls), sends {"state":"listening"},
    transcribes as it reads, and ends with {"state":"stopped"} and close 1000. No start action is needed; a
    stop ends it early. A URL that cannot be read or is not audio: {"error":…} and close 1000. Binary frames
    from the client are ignored (a warning rule).
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from stt.dialects.base import (
    DialectBase,
    Handshake,
    Route,
    RuleBroken,
    dump,
    in_header,
    in_query,
    parse_json,
    refused,
)
from stt.events import (
    Audio,
    AudioAccepted,
    AudioFormat,
    Configure,
    EndOfAudio,
    EndOfTranscript,
    FetchAudio,
    Final,
    Partial,
    SessionStarted,
    SessionStatus,
    ShuttingDown,
    SpeechStarted,
    SpeechStopped,
    Violation,
    Word,
)
from stt.statechart import Refused, load_chart
from stt.text import smart_format

STREAM_ROUTE = Route("/v2/client/<token>", query="?url=<audio URL>", note="stream mode")
STREAM_PATH = STREAM_ROUTE.pattern
TYPES = ("fast", "quality")  # both served by the same recognizer
DEFAULT_TYPE = "fast"
LANGUAGE = re.compile(r"^en(?:[-_][a-z]{2,3})?$", re.IGNORECASE)
SHAPES = ("k", "v")
DEFAULT_SHAPE = "k"
SPEAKER = "Speaker 1"
TOKEN_HEADERS = ("x-zoom-s2t-key", "x-api-key", "api-key")
START_TIMEOUT = 15.0  # seconds the client has to send its start action (§3.5)
_START_OPTIONS = {"key": str, "partial": bool, "actual_numbers": bool}


class ScriptixDialect(DialectBase):
    name = "scriptix"
    title = "Scriptix real-time"
    chart = load_chart("scriptix").with_endings_from(load_chart("lifecycle"))
    routes = (Route("/v2/realtime", note="microphone mode"), STREAM_ROUTE)
    #: At the upgrade (stream mode: the path's token instead); or the start action's "key" (credential()).
    credentials = (in_query("token"), *(in_header(name) for name in TOKEN_HEADERS))

    closes_after_end = True  # {"state":"stopped"} is the last message; the server closes 1000 at once
    announces_shutdown = True  # {"state":"shutting_down","at":<Unix seconds>} (§3.3)
    rejects_unauthorised = False  # a bad token is {"error":…} and close 1008 after the upgrade (§3.7)
    start_timeout: float | None = START_TIMEOUT
    credential_in_start = True  # per connection: False when the upgrade brought a token (see __init__)
    secret_path = STREAM_PATH  # its `token` group is the key: never logged (stt.redaction.redact_path)
    url_not_allowed_rule = "SX-STREAM-003"  # the stream URL's host is not public (stt.fetch.UrlNotAllowed)

    def __init__(self, handshake: Handshake):
        super().__init__(handshake)
        stream = STREAM_PATH.match(handshake.path)
        self.stream_mode = stream is not None
        self._handshake_token = stream.group("token") if stream else handshake.credential(self.credentials)
        #: No token at the upgrade: the start action's "key" may bring it (the session checks it then).
        self.credential_in_start = self._handshake_token is None
        self._start_key: str | None = None
        self.shape = DEFAULT_SHAPE
        self.model_type = DEFAULT_TYPE
        self.partial = True
        self.actual_numbers = False
        self._partial_shown = False  # a partial was sent that no final has replaced yet

    def credential(self) -> str | None:
        return self._handshake_token if self._handshake_token is not None else self._start_key

    def greeting(self) -> list[str]:
        return ['{"state":"loading"}'] if self.stream_mode else []

    # --- the query string ---------------------------------------------------------------------------------

    def on_open(self) -> list:
        try:
            self._read_query(self.handshake.query)
        except RuleBroken as exc:
            return [self._violation(exc.rule_id, str(exc))]
        if not self.stream_mode:
            return []  # the start action opens the recognizer
        url = self.handshake.query.get("url")
        if not url:
            return [self._violation("SX-STREAM-001", "")]
        self.machine.fire("start")  # the server starts by itself
        return [Configure(AudioFormat("file"), language="en", partials=True), FetchAudio(url)]

    def _read_query(self, query: dict[str, str]) -> None:
        model_type = query.get("type") or DEFAULT_TYPE
        if model_type not in TYPES:
            raise RuleBroken("SX-PARAM-001", f"type {model_type!r} is not fast or quality")
        language = query.get("language") or "en"
        if not LANGUAGE.match(language):
            raise RuleBroken("SX-PARAM-002", f"language {language!r} is not supported (supported: en)")
        shape = (query.get("shape") or DEFAULT_SHAPE).lower()
        if shape not in SHAPES:
            raise RuleBroken("SX-PARAM-003", f"shape {shape!r} is not k or v")
        self.model_type, self.shape = model_type, shape

    # --- frames in ----------------------------------------------------------------------------------------

    def receive(self, frame: str | bytes) -> list:
        if isinstance(frame, (bytes, bytearray)):
            if self.stream_mode:  # the server reads the audio itself
                return [self._violation("SX-STREAM-002", f"{len(frame)} bytes")]
            return refused(self.machine.fire("audio")) or ([Audio(bytes(frame))] if frame else [])
        try:
            msg = parse_json(frame)
        except ValueError as exc:
            return [self._violation("SX-MSG-001", f"not JSON ({exc})")]
        if not isinstance(msg, dict) or not isinstance(msg.get("action"), str):
            return [self._violation("SX-MSG-001", 'no "action"')]
        action = msg["action"]
        if action == "start":
            outcome = self.machine.peek("start")
            if isinstance(outcome, Refused):
                return [Violation(outcome.rule, "")]
            try:
                configure = self._start(msg)
            except RuleBroken as exc:
                return [self._violation(exc.rule_id, str(exc))]
            self.machine.fire("start")
            return [configure]
        if action == "stop":
            return refused(self.machine.fire("stop")) or [EndOfAudio()]
        return [self._violation("SX-MSG-002", repr(action))]

    def _start(self, msg: dict) -> Configure:
        for name, kind in _START_OPTIONS.items():
            value = msg.get(name)
            if value is not None and not isinstance(value, kind):
                raise RuleBroken("SX-START-001", f'"{name}" must be {"a string" if kind is str else "true or false"}')
        if self.credential_in_start:
            self._start_key = msg.get("key") or None
        self.partial = msg.get("partial", True) is not False
        self.actual_numbers = msg.get("actual_numbers") is True
        return Configure(AudioFormat("pcm_s16le", 16000, sniff=True), language="en", partials=self.partial)

    # --- frames out ---------------------------------------------------------------------------------------

    def render(self, item: Any) -> list[str]:
        if isinstance(item, Partial):
            items = self.items(item.words)
            if not self.partial or not items:
                return []
            self._partial_shown = True
            text = _text(items)
            if self.shape == "k":
                return [dump({"partial": text})]
            stability = round(sum(w.confidence for w in item.words) / len(item.words), 2)
            return [dump({"text": text, "is_final": False, "offset_ms": _ms(item.end), "stability": stability})]
        if isinstance(item, Final):
            items = self.items(item.words)
            if not items and not self._partial_shown:
                return []  # nothing was said and nothing shown
            self._partial_shown = False
            text = _text(items)
            if self.shape == "k":
                return [dump({"result": items, "speaker": SPEAKER, "text": text})]
            return [dump({"text": text, "is_final": True, "offset_ms": _ms(item.end), "words": items,
                           "speaker": SPEAKER})]
        if isinstance(item, SessionStarted):
            self.machine.advance("listening")
            return [dump({"state": "listening", "session_id": _hex(item.session_id)})]
        if isinstance(item, EndOfTranscript):
            self.machine.advance("stopped")
            return ['{"state":"stopped"}']
        if isinstance(item, ShuttingDown):  # the chart's state is unchanged: the session goes on until it ends
            return [dump({"state": "shutting_down", "at": int(item.at)})]
        if isinstance(item, (SpeechStarted, SpeechStopped, AudioAccepted, SessionStatus)):
            return []  # Scriptix reports no voice activity, acknowledges no audio and sends no status
        if isinstance(item, Violation):
            return self.render_violation(item)
        raise TypeError(f"scriptix cannot render {item!r}")

    def render_violation(self, violation: Violation) -> list[str]:
        rule = violation.rule
        if rule.id == "SX-ORDER-002":  # stop before start: the normal answer to a stop, then 1000
            return ['{"state":"stopped"}']
        if rule.error is None:
            return []  # warnings and the lifecycle's own endings: Scriptix has no message for them
        # Timeouts, a bad token and internal failures carry the vendor-like text alone; a client's frame that
        # broke a rule, and audio that could not be read or decoded, also say what was wrong.
        terse = rule.id in self.chart.endings.values() and rule.id != "SX-AUDIO-001"
        text = rule.message if terse or not violation.detail else f"{rule.message}: {violation.detail}"
        return [dump({"error": text})]

    def items(self, words: tuple[Word, ...] | list[Word]) -> list[list]:
        """The result items [word, start_ms, end_ms, confidence] of `words`; with actual_numbers, a number
        spoken in several words is one item spanning them, with their lowest confidence."""
        if not self.actual_numbers:
            return [[w.text, _ms(w.start), _ms(w.end), round(w.confidence, 2)] for w in words]
        out = []
        for token in smart_format([w.text for w in words]):
            span = words[token.start:token.end]
            out.append([token.text, _ms(span[0].start), _ms(span[-1].end), round(min(w.confidence for w in span), 2)])
        return out


def _text(items: list[list]) -> str:
    return " ".join(item[0] for item in items)


def _ms(seconds: float) -> int:
    return int(round(seconds * 1000))


def _hex(session_id: str) -> str:
    try:
        return uuid.UUID(session_id).hex
    except ValueError:
        return session_id
