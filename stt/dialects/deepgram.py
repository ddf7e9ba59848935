"""Deepgram live streaming, /v1/listen, sans-IO (../shared/protocols.md §6; chart: statecharts/deepgram.yaml).

    upgrade (the query string is the whole configuration) → binary audio* (KeepAlive, Finalize, Configure) →
    Results (is_final false, then true) / SpeechStarted / UtteranceEnd → CloseStream → the last Results →
    Metadata → the server closes 1000

A bad option or key never reaches a session: the constructor raises HandshakeRefused (HTTP 400) and the server
answers 401 for a key, each with Deepgram's `dg-error` header (refusal_headers). Choices where the vendor is
silent or where this recognizer differs (the chart's header has the protocol's):
* endpointing: Deepgram's default is 10 ms of silence, which would end an utterance at every short pause of
  this recognizer; without the parameter the engine's own endpointing applies. `endpointing=false` keeps the
  engine's segments (is_final) but no Result is speech_final, as with Deepgram.
* speech_final is true on a final the recognizer ended at a pause; a final that Finalize forced carries
  from_finalize true and speech_final false.
* UtteranceEnd (interim_results=true and utterance_end_ms given) is sent when the recognizer hears speech
  stop after words, with last_word_end the end of the last word; its silence measure is the engine's, not
  utterance_end_ms exactly.
* punctuate / smart_format / numerals: `punctuated_word` and the transcript are formatted (numbers as digits,
  stt.text.smart_format; first word capitalised and a period on a final, stt.text.punctuate); `word` stays
  the recognizer's lower-case word, or the number in digits where numbers are formatted (as Deepgram does).
* Metadata: request_id is the session's, sha256 the digest of the audio bytes received, duration the seconds
  of audio (from the bytes for raw encodings, from the last result for containers), model_info names the
  model asked for and the engine that served it.
* Options that would change the answer in ways this server cannot (callback, diarize, redact, search,
  replace, detect_entities, dictation, profanity_filter, a language but English) are refused with 400 naming
  them, not ignored; options that change nothing here (tag, extra, version, mip_opt_out, filler_words, ...)
  are accepted.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from datetime import datetime, timezone
from typing import Any

from stt import __version__
from stt.dialects.base import (
    BEARER,
    TOKEN,
    Credential,
    DialectBase,
    Handshake,
    HandshakeRefused,
    Route,
    RuleBroken,
    dump,
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
from stt.statechart import load_chart
from stt.text import punctuate, smart_format

#: Deepgram's encoding -> how the audio decoder reads it: a raw encoding, or "file" (a container it recognises).
ENCODINGS = {
    "linear16": "pcm_s16le",
    "linear32": "pcm_s32le",
    "mulaw": "mulaw",
    "alaw": "alaw",
    "flac": "file",
    "opus": "file",  # Opus in Ogg, as Deepgram streams it
    "ogg-opus": "file",
    "amr-nb": "file",  # an AMR stream with its #!AMR header
    "amr-wb": "file",
}
UNSUPPORTED_ENCODINGS = ("speex", "g729")
#: Model families Deepgram publishes (nova-3, nova-3-medical, nova-2-phonecall, enhanced-general, base, ...):
#: every one is served by the same recognizer.
MODEL = re.compile(r"^(nova-3|nova-2|nova|enhanced|base|whisper)(-[a-z0-9]+)*$")
DEFAULT_MODEL = "base"
LANGUAGE = re.compile(r"^en(-[A-Za-z]{2,3})?$")
AUTO_LANGUAGE = "multi"
SAMPLE_RATES = (8000, 48000)
MAX_CHANNELS = 8
#: Options that would change the answer in a way this server cannot: refused, with what a client may do.
UNSUPPORTED = {
    "callback": "results are sent on the WebSocket only",
    "callback_method": "results are sent on the WebSocket only",
    "diarize": "speaker labels are not available",
    "diarize_model": "speaker labels are not available",
    "redact": "redaction is not available",
    "search": "search is not available",
    "replace": "find-and-replace is not available",
    "detect_entities": "entity detection is not available",
    "dictation": "dictation is not available",
    "profanity_filter": "the profanity filter is not available",
}
#: Options that change nothing here, accepted as they are.
ACCEPTED = ("tag", "extra", "version", "mip_opt_out", "filler_words", "language_hint", "no_delay", "alternatives",
            "keyterm", "keywords", "model", "language", "encoding", "sample_rate", "channels", "multichannel",
            "interim_results", "endpointing", "utterance_end_ms", "vad_events", "punctuate", "smart_format",
            "numerals")
BOOLEANS = ("interim_results", "vad_events", "punctuate", "smart_format", "numerals", "multichannel")
MAX_KEYTERMS = 100
MESSAGES = ("KeepAlive", "Finalize", "CloseStream", "Configure")
#: Formatting features a Configure may switch.
FEATURES = ("punctuate", "smart_format", "numerals")
IDLE_SECONDS = 10.0  # NET-0001: no audio or KeepAlive for this long


class DeepgramDialect(DialectBase):
    name = "deepgram"
    title = "Deepgram live streaming"
    chart = load_chart("deepgram").with_endings_from(load_chart("lifecycle"))
    routes = (Route("/v1/listen"),)
    credentials = (TOKEN, BEARER, Credential("subprotocol_after", "token"), Credential("subprotocol_after", "bearer"))
    subprotocol = "token"  # the browser form offers `token, KEY`: the server answers with `token`

    closes_after_end = True  # after CloseStream: the last Results, Metadata, then the server closes 1000
    rejects_unauthorised = True  # HTTP 401 with dg-error at the upgrade
    refuses_busy_at_upgrade = True
    busy_status = 429
    message_idle_timeout = IDLE_SECONDS

    def __init__(self, handshake: Handshake):
        super().__init__(handshake)
        self.request_id = str(uuid.uuid4())
        self.stream_config = self._configure(handshake)
        self._model_info = self._model_for("")
        self._bad_message: str | None = None  # the client's text that the next SchemaError quotes
        self._digest = hashlib.sha256()
        self._bytes = 0
        self._last_end = 0.0
        self._words_since_utterance_end: dict[int, float] = {}  # channel -> end of the last word not yet closed

    @classmethod
    def refusal_headers(cls, status: int, body: str) -> list[tuple[str, str]]:
        return [("dg-error", body.strip().replace("\r", " ").replace("\n", " ")[:200]),
                ("dg-request-id", str(uuid.uuid4()))]

    # --- the query string ---------------------------------------------------------------------------------

    def _configure(self, handshake: Handshake) -> Configure:
        query = handshake.query
        for name, why in UNSUPPORTED.items():
            value = query.get(name)
            if value is not None and value.strip().lower() not in ("", "false"):
                raise HandshakeRefused(400, f"{name} is not supported by this server: {why}")
        self.model = query.get("model", DEFAULT_MODEL)
        if not MODEL.match(self.model):
            raise HandshakeRefused(400, f"model {self.model!r} is not a Deepgram model (nova-3, nova-2, enhanced, "
                                        f"base, ... and their variants)")
        language = query.get("language", "en")
        if language != AUTO_LANGUAGE and not LANGUAGE.match(language):
            raise HandshakeRefused(400, f"language {language!r} is not supported (supported: en, en-XX, "
                                        f"{AUTO_LANGUAGE})")
        flags = {name: _boolean(query, name) for name in BOOLEANS}
        self.interim_results = bool(flags["interim_results"])
        self.vad_events = bool(flags["vad_events"])
        self.punctuate = bool(flags["punctuate"])
        self.smart_format = bool(flags["smart_format"])
        self.numerals = bool(flags["numerals"])
        self.channels = _integer(query, "channels", 1, 1, MAX_CHANNELS)
        self.multichannel = bool(flags["multichannel"])
        audio = self._audio_format(query)
        self.endpointing, self.speech_final = _endpointing(query.get("endpointing"))
        self.utterance_end = None
        if "utterance_end_ms" in query:
            if not self.interim_results:
                raise HandshakeRefused(400, "utterance_end_ms needs interim_results=true")
            self.utterance_end = _integer(query, "utterance_end_ms", 1000, 1000, 5000) / 1000
        keyterms = tuple(t.strip() for name in ("keyterm", "keywords") for t in handshake.values(name) if t.strip())
        keyterms = tuple(t.rsplit(":", 1)[0] if re.search(r":-?\d+(\.\d+)?$", t) else t for t in keyterms)
        if len(keyterms) > MAX_KEYTERMS:
            raise HandshakeRefused(400, f"{len(keyterms)} keyterms and keywords; at most {MAX_KEYTERMS}")
        return Configure(audio=audio, language="en", partials=self.interim_results, endpointing=self.endpointing,
                         hints=keyterms, split_channels=self.multichannel and self.channels > 1)

    def _audio_format(self, query: dict[str, str]) -> AudioFormat:
        encoding = query.get("encoding")
        if encoding is None:
            if "sample_rate" in query:
                raise HandshakeRefused(400, "sample_rate needs encoding (leave both out for containerised audio)")
            self.raw = None
            return AudioFormat("file")  # containerised audio: WAV, FLAC, Ogg, ... recognised from its bytes
        if encoding in UNSUPPORTED_ENCODINGS:
            raise HandshakeRefused(400, f"encoding {encoding} is not supported by this server")
        if encoding not in ENCODINGS:
            raise HandshakeRefused(400, f"encoding {encoding!r} is not one of {', '.join(ENCODINGS)}")
        decoder = ENCODINGS[encoding]
        if decoder == "file":
            self.raw = None
            return AudioFormat("file")
        if "sample_rate" not in query:
            raise HandshakeRefused(400, f"encoding {encoding} needs sample_rate")
        rate = _integer(query, "sample_rate", 16000, *SAMPLE_RATES)
        width = {"pcm_s16le": 2, "pcm_s32le": 4}.get(decoder, 1)
        self.raw = rate * width * self.channels  # bytes per second
        return AudioFormat(decoder, rate, self.channels)

    # --- frames in ----------------------------------------------------------------------------------------

    def receive(self, frame: str | bytes) -> list:
        if isinstance(frame, (bytes, bytearray)):
            if not frame:
                return refused(self.machine.fire("empty_audio")) or [EndOfAudio()]
            rejected = refused(self.machine.fire("audio"))
            if rejected:
                return rejected
            self._digest.update(frame)
            self._bytes += len(frame)
            return [Audio(bytes(frame))]
        try:
            msg = parse_json(frame)
        except ValueError as exc:
            return [self._schema_error("DG-MSG-001", f"not JSON ({exc})", frame)]
        if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
            return [self._schema_error("DG-MSG-001", 'not an object with a string "type"', frame)]
        kind = msg["type"]
        if kind not in MESSAGES:
            return [self._schema_error("DG-MSG-002", f"{kind!r} is not one of {', '.join(MESSAGES)}", frame)]
        rejected = refused(self.machine.peek(kind))
        if rejected:
            return rejected
        try:
            events = self._handlers[kind](self, msg)
        except RuleBroken as exc:
            return [self._schema_error(exc.rule_id, str(exc), frame)]
        self.machine.fire(kind)
        return events

    def _schema_error(self, rule_id: str, detail: str, frame: str) -> Violation:
        self._bad_message = frame[:500]
        return self._violation(rule_id, detail)

    def _on_keep_alive(self, msg: dict) -> list:
        return []  # it only keeps the stream open: the session's idle timer saw the frame

    def _on_finalize(self, msg: dict) -> list:
        return [Flush()]

    def _on_close_stream(self, msg: dict) -> list:
        return [EndOfAudio()]

    def _on_configure(self, msg: dict) -> list:
        features, keyterms = msg.get("features"), msg.get("keyterms")
        if features is not None and not (isinstance(features, dict)
                                         and all(isinstance(v, bool) for v in features.values())):
            raise RuleBroken("DG-CFG-001", '"features" must be an object of booleans')
        if keyterms is not None and not (isinstance(keyterms, list) and all(isinstance(t, str) for t in keyterms)):
            raise RuleBroken("DG-CFG-001", '"keyterms" must be a list of strings')
        if keyterms is not None:
            return [self._violation("DG-CFG-002", f"{len(keyterms)} keyterms")]
        for name, on in (features or {}).items():
            if name in FEATURES:
                setattr(self, name, on)
        return [Reply((dump({"type": "ConfigureSuccess", "request_id": self.request_id}),))]

    _handlers = {
        "KeepAlive": _on_keep_alive,
        "Finalize": _on_finalize,
        "CloseStream": _on_close_stream,
        "Configure": _on_configure,
    }

    def on_open(self) -> list:
        return [self.stream_config]

    # --- frames out ---------------------------------------------------------------------------------------

    def render(self, item: Any) -> list[str]:
        if isinstance(item, Partial):
            return [dump(self._results(item, final=False))] if self.interim_results else []
        if isinstance(item, Final):
            self._last_end = max(self._last_end, item.end)
            if item.words:
                self._words_since_utterance_end[item.channel] = item.words[-1].end
            elif not item.forced:
                return []  # nothing was said: Deepgram sends no empty final but for Finalize
            return [dump(self._results(item, final=True))]
        if isinstance(item, SpeechStarted):
            if not self.vad_events:
                return []
            return [dump({"type": "SpeechStarted", "channel": self._channel(item.channel),
                          "timestamp": round(item.time, 3)})]
        if isinstance(item, SpeechStopped):
            last = self._words_since_utterance_end.pop(item.channel, None)
            if self.utterance_end is None or last is None:
                return []
            return [dump({"type": "UtteranceEnd", "channel": self._channel(item.channel),
                          "last_word_end": round(last, 3)})]
        if isinstance(item, EndOfTranscript):
            self.machine.advance("end_of_transcript")
            return [dump(self._metadata())]
        if isinstance(item, SessionStarted):
            self._model_info = self._model_for(item.engine)
            return []  # Deepgram announces no session
        if isinstance(item, (AudioAccepted, SessionStatus)):
            return []
        if isinstance(item, Violation):
            return self.render_violation(item)
        raise TypeError(f"deepgram cannot render {item!r}")

    def render_violation(self, violation: Violation) -> list[str]:
        rule = violation.rule
        if rule.fatal or rule.error is None:
            return []  # a closing error is the close frame's payload (DATA-0000, NET-0001); a warning is silent
        description = f"{rule.message}: {violation.detail}" if violation.detail else rule.message
        if rule.error.startswith("CONFIGURE_"):
            return [dump({"type": "ConfigureFailure", "request_id": self.request_id, "code": rule.error,
                          "description": description})]
        error = {"type": "Error", "variant": rule.error, "description": description}
        if self._bad_message is not None:
            error["message"], self._bad_message = self._bad_message, None
        return [dump(error)]

    def _model_for(self, engine: str) -> tuple[str, dict]:
        """(model_uuid, model_info) of the Results and Metadata: the model asked for, served by `engine`."""
        return (str(uuid.uuid5(uuid.NAMESPACE_URL, f"stt:{self.model}:{engine}")),
                {"name": self.model, "version": __version__, "arch": engine or "stt"})

    def _channel(self, channel: int) -> list[int]:
        return [channel, self.channels]

    def _results(self, result: Partial | Final, final: bool) -> dict:
        words = self._words(result.words, final)
        spoken = " ".join(w["punctuated_word"] if self._formatted() else w["word"] for w in words)
        confidence = sum(w.confidence for w in result.words) / len(result.words) if result.words else 0.0
        forced = final and result.forced
        return {
            "type": "Results",
            "channel_index": self._channel(result.channel),
            "duration": round(max(result.end - result.start, 0.0), 3),
            "start": round(result.start, 3),
            "is_final": final,
            "speech_final": final and not forced and self.speech_final and bool(result.words),
            "channel": {"alternatives": [{"transcript": spoken, "confidence": round(confidence, 4),
                                          "words": words}]},
            "metadata": {"request_id": self.request_id, "model_info": self._model_info[1],
                         "model_uuid": self._model_info[0]},
            "from_finalize": forced,
        }

    def _formatted(self) -> bool:
        return self.punctuate or self.smart_format

    def _words(self, words: tuple[Word, ...], final: bool) -> list[dict]:
        """Deepgram's words: one per formatted token (numbers in digits where asked), each with its times and
        confidence, and punctuated_word where punctuation or smart formatting is on."""
        texts = [w.text for w in words]
        if self.smart_format or self.numerals:
            tokens = [(t.text, words[t.start:t.end]) for t in smart_format(texts)]
        else:
            tokens = [(w.text, (w,)) for w in words]
        shown = punctuate([text for text, _ in tokens], final) if self._formatted() else None
        out = []
        for i, (text, covered) in enumerate(tokens):
            word = {"word": text.lower(), "start": round(covered[0].start, 3), "end": round(covered[-1].end, 3),
                    "confidence": round(sum(w.confidence for w in covered) / len(covered), 4)}
            if shown is not None:
                word["punctuated_word"] = shown[i]
            out.append(word)
        return out

    def _metadata(self) -> dict:
        duration = self._bytes / self.raw if self.raw else self._last_end
        model_uuid, model_info = self._model_info
        return {"type": "Metadata", "transaction_key": "deprecated", "request_id": self.request_id,
                "sha256": self._digest.hexdigest(),
                "created": datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                "duration": round(duration, 3), "channels": self.channels,
                "models": [model_uuid], "model_info": {model_uuid: model_info}}


def _boolean(query: dict[str, str], name: str) -> bool | None:
    """A boolean option: true or false, in any case (the SDK passes Python's True as "True")."""
    if name not in query:
        return None
    value = query[name].strip().lower()
    if value in ("true", "false"):
        return value == "true"
    raise HandshakeRefused(400, f"{name} must be true or false, not {query[name]!r}")


def _integer(query: dict[str, str], name: str, default: int, low: int, high: int) -> int:
    value = query.get(name)
    if value is None:
        return default
    if not (value.isascii() and value.isdigit()) or not low <= int(value) <= high:
        raise HandshakeRefused(400, f"{name} must be a whole number from {low} to {high}, not {value!r}")
    return int(value)


def _endpointing(value: str | None) -> tuple[float | None, bool]:
    """The endpointing option -> (seconds of silence that end an utterance, None: the engine's own; whether a
    final at a pause is speech_final)."""
    if value is None or value.strip().lower() == "true":
        return None, True
    if value.strip().lower() == "false":
        return None, False
    if not (value.isascii() and value.isdigit()) or not 10 <= int(value) <= 10000:
        raise HandshakeRefused(400, f"endpointing must be false or a whole number of milliseconds from 10 to "
                                    f"10000, not {value!r}")
    return int(value) / 1000, True


__all__ = ["DeepgramDialect"]
