"""AssemblyAI Universal-Streaming v3, sans-IO (../shared/protocols.md §8; chart: statecharts/assemblyai.yaml).

    upgrade /v3/ws?sample_rate=16000&encoding=pcm_s16le&... → Begin → binary audio* → Turn* → Terminate →
    the last Turns → Termination → the server closes 1000

There is no start message: the query string configures the session (`on_open`), and binary audio is accepted
from the first frame. Text frames carry UpdateConfiguration, ForceEndpoint, KeepAlive and Terminate. The vendor
has no error message: a broken rule is a close code and a reason text (the chart's rule message, with ": <detail>"
where the vendor's reason carries one). The vendor's SDK validates every Begin and Turn against its schema and
its reader thread dies on a mismatch, so every field it requires is always sent, of its type.

How results become Turns (the chart's header says why):
* a turn is the speech between SpeechStarted and SpeechStopped; its Turns share a turn_order;
* a Partial: a Turn with end_of_turn false, the turn's final words (word_is_final true) then the partial's
  (word_is_final false); `transcript` holds the final words only;
* a Final makes its words final: a Turn with end_of_turn false whose `utterance` is the utterance just finished;
  a forced one (ForceEndpoint) ends the turn at once;
* SpeechStopped (or the end of the transcript) ends the turn: a Turn with end_of_turn true, and with
  format_turns a second one with turn_is_formatted true and the formatted words.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

import attrs

from stt.dialects.base import DialectBase, Handshake, Route, RuleBroken, dump, in_header, in_query, parse_json, refused
from stt.events import (
    Audio,
    AudioAccepted,
    AudioFormat,
    Configure,
    EndOfAudio,
    EndOfTranscript,
    Final,
    Flush,
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

#: encoding query value -> (stt.audio encoding, bytes per sample).
ENCODINGS = {"pcm_s16le": ("pcm_s16le", 2), "pcm_mulaw": ("mulaw", 1)}
DEFAULT_ENCODING = "pcm_s16le"
SAMPLE_RATE_RANGE = (8000, 48000)
DEFAULT_SAMPLE_RATE = 16000
#: The published speech models (the SDK's SpeechModel); every one is served by the English recognizer.
SPEECH_MODELS = ("universal-streaming-english", "universal-streaming-multilingual", "u3-rt-pro", "u3-rt-pro-beta-1",
                 "whisper-rt", "universal-3-5-pro", "universal-3-6", "universal-3-6-pro", "u3-pro")
CHUNK_MS = (50, 1000)  # each binary frame's audio (AA-AUDIO-001, close 3007)
SILENCE_MS = (0, 10000)  # min_turn_silence and max_turn_silence
INACTIVITY_S = (5, 3600)
MAX_KEYTERMS = 100
MAX_KEYTERM_CHARS = 50
SESSION_SECONDS = 3 * 3600  # the vendor's maximum session: Begin's expires_at
MAX_DETAIL = 200  # characters of a client's frame a Violation's detail keeps
MAX_REASON_BYTES = 120  # a close reason's room (RFC 6455: 123 bytes), as the session cuts it
_TRUE, _FALSE = {"true", "1"}, {"false", "0"}


@attrs.frozen
class TurnSettings:
    """What the query string (and UpdateConfiguration) set for turn detection and formatting."""

    end_of_turn_confidence_threshold: float = 0.4
    min_turn_silence: int = 400  # ms
    max_turn_silence: int = 1280  # ms
    format_turns: bool = False

    def endpointing(self) -> float:
        """Seconds of silence that end an utterance: from min_turn_silence (a threshold of 0: every turn is
        confident) to max_turn_silence (a threshold of 1: none is)."""
        low, high = self.min_turn_silence, self.max_turn_silence
        return (low + (high - low) * self.end_of_turn_confidence_threshold) / 1000


class AssemblyAIDialect(DialectBase):
    name = "assemblyai"
    title = "AssemblyAI Universal-Streaming v3"
    chart = load_chart("assemblyai").with_endings_from(load_chart("lifecycle"))
    routes = (Route("/v3/ws"),)
    credentials = (in_header("authorization"), in_query("token"))  # the raw key, no scheme; a temporary token

    closes_after_end = True  # Termination is the last message; the server closes 1000 at once
    rejects_unauthorised = False  # a bad key is close 1008 after the upgrade (the vendor's documented code)

    def __init__(self, handshake: Handshake):
        super().__init__(handshake)
        self._opened = time.monotonic()
        self._configure: Configure | Violation | None = None
        self.encoding = DEFAULT_ENCODING
        self.sample_rate = DEFAULT_SAMPLE_RATE
        self.speech_model = SPEECH_MODELS[0]
        self.settings = TurnSettings()
        self.audio_bytes = 0
        # The turn under way: its order, the words made final so far, whether a Turn of it was sent.
        self.turn_order = 0
        self._final_words: list[tuple[Word, bool]] = []  # (word, True)
        self._turn_open = False
        try:
            self._configure = self._configuration(handshake.query)
        except RuleBroken as exc:
            self._configure = self._broken(exc)
        # Set per connection before the session starts its timers: inactivity_timeout ends a silent session.
        self.speech_idle_timeout = self._inactivity

    # --- the query string ---------------------------------------------------------------------------------

    _inactivity: float | None = None

    def _configuration(self, query: dict[str, str]) -> Configure:
        encoding = query.get("encoding", DEFAULT_ENCODING)
        if encoding not in ENCODINGS:
            raise RuleBroken("AA-PARAM-001", f"encoding must be {' or '.join(ENCODINGS)}, not {encoding!r}")
        rate = _integer(query, "sample_rate", DEFAULT_SAMPLE_RATE, SAMPLE_RATE_RANGE, "AA-PARAM-001", "Hz")
        model = query.get("speech_model", SPEECH_MODELS[0])
        if model not in SPEECH_MODELS:
            raise RuleBroken("AA-PARAM-002", f"speech_model {model!r} is not a published model")
        settings = TurnSettings()
        changes: dict[str, Any] = {}
        if "format_turns" in query:
            changes["format_turns"] = _boolean(query["format_turns"], "format_turns", "AA-PARAM-003")
        if "end_of_turn_confidence_threshold" in query:
            changes["end_of_turn_confidence_threshold"] = _threshold(
                query["end_of_turn_confidence_threshold"], "AA-PARAM-003")
        for name in ("min_turn_silence", "max_turn_silence"):
            if name in query:
                changes[name] = _integer(query, name, 0, SILENCE_MS, "AA-PARAM-003", "ms")
        settings = _settled(settings, changes, "AA-PARAM-003")
        hints = _keyterms(query.get("keyterms_prompt"))
        if "inactivity_timeout" in query:
            self._inactivity = float(_integer(query, "inactivity_timeout", 0, INACTIVITY_S, "AA-PARAM-005", "s"))
        self.encoding, self.sample_rate, self.speech_model, self.settings = encoding, rate, model, settings
        return Configure(AudioFormat(ENCODINGS[encoding][0], rate), language="en", partials=True,
                         endpointing=settings.endpointing(), hints=hints)

    def on_open(self) -> list:
        return [self._configure]

    # --- frames in ----------------------------------------------------------------------------------------

    def receive(self, frame: str | bytes) -> list:
        if isinstance(frame, (bytes, bytearray)):
            rejected = refused(self.machine.peek("audio"))
            if rejected:
                return rejected
            width = ENCODINGS[self.encoding][1]
            low, high = CHUNK_MS
            # Exact in integers: low <= 1000 * bytes / (rate * width) <= high.
            if not low * self.sample_rate * width <= 1000 * len(frame) <= high * self.sample_rate * width:
                ms = 1000 * len(frame) / (self.sample_rate * width)
                shown = f"{ms:.0f}" if abs(ms - round(ms)) < 0.05 else f"{ms:.1f}"
                return [self._broken(RuleBroken("AA-AUDIO-001", f"{shown} ms. Expected between {low} and {high} ms"))]
            self.machine.fire("audio")
            self.audio_bytes += len(frame)
            return [Audio(bytes(frame))]
        try:
            msg = parse_json(frame)
        except ValueError:
            return [self._broken(RuleBroken("AA-MSG-001", frame[:MAX_DETAIL]))]
        if not isinstance(msg, dict):
            return [self._broken(RuleBroken("AA-MSG-002", frame[:MAX_DETAIL]))]
        kind = msg.get("type")
        if not isinstance(kind, str) or kind not in self._handlers:
            return [self._broken(RuleBroken("AA-MSG-003", (kind if isinstance(kind, str) else _shown(kind))[:MAX_DETAIL]))]
        rejected = refused(self.machine.peek(kind))
        if rejected:
            return rejected
        try:
            events = self._handlers[kind](self, msg)
        except RuleBroken as exc:
            return [self._broken(exc)]
        self.machine.fire(kind)
        return events

    def _on_update(self, msg: dict) -> list:
        changes: dict[str, Any] = {}
        for name in ("end_of_turn_confidence_threshold", "min_turn_silence", "max_turn_silence", "format_turns"):
            value = msg.get(name)
            if value is None:
                continue
            if name == "format_turns":
                if not isinstance(value, bool):
                    raise RuleBroken("AA-MSG-004", f"format_turns must be a boolean, not {_shown(value)}")
            elif name == "end_of_turn_confidence_threshold":
                if not _number(value) or not 0 <= value <= 1:
                    raise RuleBroken("AA-MSG-004", f"{name} must be a number from 0 to 1, not {_shown(value)}")
            else:
                low, high = SILENCE_MS
                if not (isinstance(value, int) and not isinstance(value, bool)) or not low <= value <= high:
                    raise RuleBroken("AA-MSG-004", f"{name} must be whole milliseconds from {low} to {high}, "
                                                   f"not {_shown(value)}")
            changes[name] = value
        # The recognizer's endpointing is fixed when its stream opens: only format_turns changes what is sent.
        self.settings = _settled(self.settings, changes, "AA-MSG-004")
        return []

    def _on_force_endpoint(self, msg: dict) -> list:
        return [Flush()]

    def _on_keep_alive(self, msg: dict) -> list:
        return []

    def _on_terminate(self, msg: dict) -> list:
        return [EndOfAudio()]

    _handlers = {
        "UpdateConfiguration": _on_update,
        "ForceEndpoint": _on_force_endpoint,
        "KeepAlive": _on_keep_alive,
        "Terminate": _on_terminate,
    }

    def _broken(self, exc: RuleBroken) -> Violation:
        """The Violation of exc's rule, its close reason the vendor's: the rule's message, ": ", the detail."""
        rule = self.chart.rule(exc.rule_id)
        return Violation(attrs.evolve(rule, message=close_reason(rule.message, str(exc))), str(exc))

    # --- frames out ---------------------------------------------------------------------------------------

    def render(self, item: Any) -> list[str]:
        if isinstance(item, Partial):
            if not item.words and not self._turn_open:
                return []
            return [self._turn(self._final_words + [(w, False) for w in item.words])]
        if isinstance(item, Final):
            return self._on_final(item)
        if isinstance(item, SpeechStopped):
            return self._end_turn()
        if isinstance(item, SpeechStarted):
            return [dump({"type": "SpeechStarted", "timestamp": _ms(item.time)})]
        if isinstance(item, SessionStarted):
            return [dump({"type": "Begin", "id": item.session_id, "expires_at": int(time.time()) + SESSION_SECONDS})]
        if isinstance(item, EndOfTranscript):
            frames = self._end_turn()
            self.machine.advance("termination")
            return frames + [self._termination()]
        if isinstance(item, Violation):
            return self.render_violation(item)
        if isinstance(item, (AudioAccepted, SessionStatus)):
            return []  # AssemblyAI acknowledges no audio; status_interval is None
        raise TypeError(f"assemblyai cannot render {item!r}")

    def render_violation(self, violation: Violation) -> list[str]:
        if violation.rule.id == "AA-IDLE-001":  # inactivity ends the session as a Terminate would
            return self._end_turn() + [self._termination()]
        return []  # the vendor sends no error message: the close code and its reason say it

    def _on_final(self, final: Final) -> list[str]:
        self._final_words = self._final_words + [(w, True) for w in final.words]
        frames = []
        if final.words or self._turn_open:
            frames.append(self._turn(self._final_words, utterance=_capitalised([w.text for w in final.words])))
        if final.forced:  # ForceEndpoint: the turn ends now
            frames += self._end_turn()
        return frames

    def _end_turn(self) -> list[str]:
        if not self._turn_open and not self._final_words:
            return []
        frames = [self._turn(self._final_words, end=True)]
        if self.settings.format_turns:
            frames.append(self._turn(self._final_words, end=True, formatted=True))
        self.turn_order += 1
        self._final_words = []
        self._turn_open = False
        return frames

    def _turn(self, words: list[tuple[Word, bool]], *, end: bool = False, formatted: bool = False,
              utterance: str = "") -> str:
        """A Turn of the turn under way: `words` are (word, word_is_final)."""
        self._turn_open = True
        if formatted:  # an end of turn: every word is final
            out = [_word(w, True) for w in _formatted([w for w, _ in words])]
            transcript = " ".join(w["text"] for w in out)
        else:
            out = [_word(w, final) for w, final in words]
            transcript = " ".join(w.text for w, final in words if final)
        return dump({
            "type": "Turn",
            "turn_order": self.turn_order,
            "turn_is_formatted": formatted,
            "end_of_turn": end,
            "transcript": transcript,
            "end_of_turn_confidence": 1.0 if end else 0.0,
            "words": out,
            "utterance": utterance,
        })

    def _termination(self) -> str:
        width = ENCODINGS[self.encoding][1]
        return dump({"type": "Termination",
                     "audio_duration_seconds": round(self.audio_bytes / (self.sample_rate * width)),
                     "session_duration_seconds": round(time.monotonic() - self._opened)})


# --- helpers ------------------------------------------------------------------------------------------------


def close_reason(head: str, detail: str) -> str:
    """The vendor's close reason, `head: detail`, cut to MAX_REASON_BYTES of UTF-8 at a character boundary."""
    text = f"{head}: {detail}" if detail else head
    return text.encode("utf-8", "replace")[:MAX_REASON_BYTES].decode("utf-8", "ignore")


def _ms(seconds: float) -> int:
    return int(round(seconds * 1000))


def _word(w: Word, final: bool) -> dict:
    return {"start": _ms(w.start), "end": _ms(w.end), "confidence": round(float(w.confidence), 6), "text": w.text,
            "word_is_final": final}


def _capitalised(tokens: list[str]) -> str:
    text = " ".join(tokens)
    return text[:1].upper() + text[1:]


def _formatted(words: list[Word]) -> list[Word]:
    """The turn's words formatted: numbers as digits (stt.text.smart_format, a number's words merged into one),
    "i" as "I", the first word capitalised, a period after the last."""
    tokens = smart_format([w.text for w in words])
    texts = punctuate([token.text for token in tokens], final=True)
    return [Word(text, words[token.start].start, words[token.end - 1].end,
                 min(w.confidence for w in words[token.start:token.end])) for token, text in zip(tokens, texts)]


def _shown(value: Any) -> str:
    """A client's JSON value as a reason shows it: its JSON, cut short."""
    try:
        text = json.dumps(value)
    except (ValueError, RecursionError):
        text = type(value).__name__
    return text if len(text) <= 60 else text[:57] + "..."


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _boolean(value: str, name: str, rule_id: str) -> bool:
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise RuleBroken(rule_id, f"{name} must be true or false, not {value!r}")


def _threshold(value: str, rule_id: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not value.isascii() or not math.isfinite(number) or not 0 <= number <= 1:
        raise RuleBroken(rule_id, f"end_of_turn_confidence_threshold must be a number from 0 to 1, not {value!r}")
    return number


def _integer(query: dict[str, str], name: str, default: int, bounds: tuple[int, int], rule_id: str, unit: str) -> int:
    if name not in query:
        return default
    value = query[name]
    low, high = bounds
    if not (value.isascii() and value.isdigit()) or not low <= int(value) <= high:
        raise RuleBroken(rule_id, f"{name} must be a whole number of {unit} from {low} to {high}, not {value!r}")
    return int(value)


def _settled(settings: TurnSettings, changes: dict[str, Any], rule_id: str) -> TurnSettings:
    new = attrs.evolve(settings, **changes)
    if new.min_turn_silence > new.max_turn_silence:
        raise RuleBroken(rule_id, f"min_turn_silence ({new.min_turn_silence} ms) is above max_turn_silence "
                                  f"({new.max_turn_silence} ms)")
    return new


def _keyterms(value: str | None) -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    try:
        terms = json.loads(value)
    except ValueError:
        raise RuleBroken("AA-PARAM-004", "keyterms_prompt must be a JSON list of strings") from None
    if not isinstance(terms, list) or not all(isinstance(t, str) for t in terms):
        raise RuleBroken("AA-PARAM-004", "keyterms_prompt must be a JSON list of strings")
    if len(terms) > MAX_KEYTERMS:
        raise RuleBroken("AA-PARAM-004", f"{len(terms)} keyterms; at most {MAX_KEYTERMS}")
    for term in terms:
        if len(term) > MAX_KEYTERM_CHARS:
            raise RuleBroken("AA-PARAM-004", f"keyterm {term[:20]!r}... is longer than {MAX_KEYTERM_CHARS} characters")
    return tuple(dict.fromkeys(t.strip() for t in terms if t.strip()))
