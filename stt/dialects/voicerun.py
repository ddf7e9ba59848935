"""VoiceRun Transcribe, sans-IO (../shared/protocols.md §5; chart: statecharts/voicerun.yaml).

    connect → session.created → session.update → session.updated → audio.append* → speech.started →
    transcription.partial* → transcription.completed → speech.stopped → … → session.close → session.closed

Every message is a JSON text frame with a "type"; audio is base64 inside audio.append. The vendor confirms
only `type` on speech.started/stopped and `type` + `text` on transcriptions, so that is exactly what is sent.
Choices where the public reference is silent (its second half is cut off everywhere), as protocols.md §5.6
suggests:
  * Errors: {"type":"error","error":{"type","code","message"}}; which ones close, and with which code, is in
    the chart's header.
  * model and provider must come from the published table, and the model must be one of the provider's.
    ElevenLabs and Soniox provider strings are unpublished: we accept "ELEVENLABS" and "SONIOX".
  * language: BCP-47; the engine knows English only, so "en" and "en-*" are served, "multi" (auto-detect)
    is served as English and echoed as "multi" (what the client asked for); other languages are refused.
  * A later session.update is merged into the configuration (fields left out keep their values) and answered
    with session.updated echoing the whole of it. It may change model, provider and prompt; changing
    input_audio_format, sample_rate or language is refused (the audio already flowing depends on them).
  * null in an optional field means "not given".
  * transcription.partial is always sent (the vendor's client reads both kinds).
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from typing import Any

import attrs

from stt.dialects.base import BEARER, DialectBase, Handshake, Route, RuleBroken, dump, parse_json, refused
from stt.events import (
    Audio,
    AudioAccepted,
    AudioFormat,
    Configure,
    EndOfAudio,
    EndOfTranscript,
    Final,
    Partial,
    Reply,
    SessionStarted,
    SessionStatus,
    SpeechStarted,
    SpeechStopped,
    Violation,
)
from stt.statechart import load_chart

#: The published models (protocols.md §5.2, the vendor's table), each with its provider.
MODELS = {
    "nova-3": "DEEPGRAM",
    "flux-general-en": "DEEPGRAM",
    "gpt-4o-transcribe": "OPENAI",
    "gpt-4o-mini-transcribe": "OPENAI",
    "gpt-realtime": "OPENAI",
    "qwen3-asr-flash-realtime": "QWEN3",
    "ink-whisper": "CARTESIA",
    "scribe-v2-realtime": "ELEVENLABS",  # provider string unpublished: ours
    "stt-rt-v4": "SONIOX",  # provider string unpublished: ours
}
PROVIDERS = tuple(dict.fromkeys(MODELS.values()))
AUDIO_FORMATS = {"pcm16": "pcm_s16le", "mulaw": "mulaw"}
SAMPLE_RATE_RANGE = (8000, 48000)
AUTO_LANGUAGE = "multi"
_BCP47 = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*$")
_FIELDS: dict[str, type] = {
    "model": str,
    "provider": str,
    "language": str,
    "prompt": str,
    "input_audio_format": str,
    "sample_rate": int,
}
#: What the audio already flowing depends on: a later session.update may repeat these, not change them.
_FIXED = ("input_audio_format", "sample_rate", "language")


@attrs.frozen
class SessionConfig:
    """The effective configuration, as session.updated echoes it."""

    model: str
    provider: str
    language: str = "en"
    prompt: str | None = None
    input_audio_format: str = "pcm16"
    sample_rate: int = 16000

    def echo(self) -> dict:
        session = {"model": self.model, "provider": self.provider, "language": self.language,
                   "sample_rate": self.sample_rate, "input_audio_format": self.input_audio_format}
        if self.prompt is not None:
            session["prompt"] = self.prompt
        return session

    def hints(self) -> tuple[str, ...]:
        """The prompt's keywords: split on commas and whitespace, duplicates dropped."""
        words = re.split(r"[,\s]+", self.prompt or "")
        return tuple(dict.fromkeys(w for w in words if w))


class VoiceRunDialect(DialectBase):
    name = "voicerun"
    title = "VoiceRun Transcribe"
    chart = load_chart("voicerun").with_endings_from(load_chart("lifecycle"))
    routes = (Route("/ws"),)
    credentials = (BEARER,)

    closes_after_end = True  # session.closed is the last message; the server closes 1000 at once
    rejects_unauthorised = False  # a bad key is close 4001 "Unauthorized" after the upgrade (§5.1)

    def __init__(self, handshake: Handshake):
        super().__init__(handshake)
        self.session_id = "ts_" + secrets.token_hex(6)
        self.config: SessionConfig | None = None
        self._first_update: str | None = None  # session.updated for the first session.update
        self._partial_open = False  # a transcription.partial was sent since the last transcription.completed

    def greeting(self) -> list[str]:
        return [dump({"type": "session.created", "session": {"id": self.session_id}})]

    # --- frames in ----------------------------------------------------------------------------------------

    def receive(self, frame: str | bytes) -> list:
        if isinstance(frame, (bytes, bytearray)):
            return [self._violation("VR-MSG-004", f"a binary frame of {len(frame)} bytes")]
        try:
            msg = parse_json(frame)
        except ValueError as exc:
            return [self._violation("VR-MSG-001", f"not JSON ({exc})")]
        if not isinstance(msg, dict):
            return [self._violation("VR-MSG-001", f"a JSON {type(msg).__name__}, not an object")]
        kind = msg.get("type")
        if not isinstance(kind, str):
            return [self._violation("VR-MSG-002", 'no "type"' if kind is None else f'"type" is {kind!r}')]
        if kind not in self.chart.client_events:
            return [self._violation("VR-MSG-003", repr(kind))]
        # The chart's verdict first, then the message's content; the machine moves only when both pass, so a
        # session.update with a bad field leaves the session as it was.
        rejected = refused(self.machine.peek(kind))
        if rejected:
            return rejected
        try:
            events = self._handlers[kind](self, msg)
        except RuleBroken as exc:
            return [self._violation(exc.rule_id, str(exc))]
        self.machine.fire(kind)
        return events

    def _on_session_update(self, msg: dict) -> list:
        session = msg.get("session")
        if not isinstance(session, dict):
            raise RuleBroken("VR-CFG-001", '"session" is required and must be an object')
        given = {key: value for key, value in session.items() if value is not None}
        for key, value in given.items():
            if key not in _FIELDS:
                raise RuleBroken("VR-CFG-001", f"session.{key} is not a known field")
            expected = _FIELDS[key]
            if not isinstance(value, expected) or isinstance(value, bool):
                raise RuleBroken("VR-CFG-001", f"session.{key} must be {'an integer' if expected is int else 'a string'}")
        if self.config is None:
            for key in ("model", "provider"):
                if key not in given:
                    raise RuleBroken("VR-CFG-001", f"session.{key} is required")
            config = SessionConfig(**given)
        else:
            for key in _FIXED:
                if key in given and given[key] != getattr(self.config, key):
                    raise RuleBroken("VR-CFG-005", f"session.{key} is {getattr(self.config, key)!r}, "
                                                    f"not {given[key]!r}")
            config = attrs.evolve(self.config, **given)
        _validate(config)
        first = self.config is None
        self.config = config
        updated = dump({"type": "session.updated", "session": config.echo()})
        if not first:
            # The engine's stream takes only partials and max_delay mid-stream (Reconfigure), which VoiceRun
            # does not set; the prompt's hints are fixed when the stream opens. So the answer is the echo alone.
            return [Reply((updated,))]
        self._first_update = updated
        language = "en" if config.language == AUTO_LANGUAGE else config.language
        return [Configure(AudioFormat(AUDIO_FORMATS[config.input_audio_format], config.sample_rate),
                          language=language, partials=True, hints=config.hints())]

    def _on_audio_append(self, msg: dict) -> list:
        audio = msg.get("audio")
        if not isinstance(audio, str):
            raise RuleBroken("VR-AUDIO-001", '"audio" is missing' if audio is None else '"audio" is not a string')
        if "\n" in audio or "\r" in audio:  # MIME-style line breaks (base64.encodebytes) are harmless
            audio = audio.replace("\r", "").replace("\n", "")
        try:
            data = base64.b64decode(audio, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise RuleBroken("VR-AUDIO-001", f"not valid base64 ({exc})") from None
        return [Audio(data)] if data else []

    def _on_session_close(self, msg: dict) -> list:
        return [EndOfAudio()]

    _handlers = {
        "session.update": _on_session_update,
        "audio.append": _on_audio_append,
        "session.close": _on_session_close,
    }

    # --- frames out ---------------------------------------------------------------------------------------

    def render(self, item: Any) -> list[str]:
        if isinstance(item, AudioAccepted):
            return []  # VoiceRun does not acknowledge audio
        if isinstance(item, Partial):
            text = _text(item)
            if not text and not self._partial_open:
                return []
            self._partial_open = True
            return [dump({"type": "transcription.partial", "text": text})]
        if isinstance(item, Final):
            text = _text(item)
            if not text and not self._partial_open:
                return []  # nothing was said and nothing shown: nothing to complete
            self._partial_open = False
            return [dump({"type": "transcription.completed", "text": text})]
        if isinstance(item, SpeechStarted):
            return ['{"type":"speech.started"}']
        if isinstance(item, SpeechStopped):
            return ['{"type":"speech.stopped"}']
        if isinstance(item, SessionStarted):
            self.machine.advance("session.updated")
            return [self._first_update]
        if isinstance(item, EndOfTranscript):
            self.machine.advance("session.closed")
            return ['{"type":"session.closed"}']
        if isinstance(item, Violation):
            return self.render_violation(item)
        if isinstance(item, SessionStatus):
            return []  # status_interval is None: not sent
        raise TypeError(f"voicerun cannot render {item!r}")

    def render_violation(self, violation: Violation) -> list[str]:
        rule = violation.rule
        if rule.id == "VR-CLOSE-001":  # closed before it was configured: the normal answer, then 1000
            return ['{"type":"session.closed"}']
        code = rule.error
        if code is None:
            return []  # an unauthorised client gets nothing but the close (§5.1); lifecycle endings likewise
        message = f"{rule.message}: {violation.detail}" if violation.detail else rule.message
        kind = "server_error" if code in ("internal_error", "too_many_sessions") else "invalid_request_error"
        return [dump({"type": "error", "error": {"type": kind, "code": code, "message": message}})]


def _validate(config: SessionConfig) -> None:
    if config.provider not in PROVIDERS:
        raise RuleBroken("VR-CFG-002", f"provider {config.provider!r} is not one of {', '.join(PROVIDERS)}")
    provider = MODELS.get(config.model)
    if provider is None:
        raise RuleBroken("VR-CFG-002", f"model {config.model!r} is not one of {', '.join(MODELS)}")
    if provider != config.provider:
        raise RuleBroken("VR-CFG-002", f"model {config.model!r} is a {provider} model, not {config.provider}")
    language = config.language
    if language != AUTO_LANGUAGE:
        if not _BCP47.match(language):
            raise RuleBroken("VR-CFG-003", f"language {language!r} is not a BCP-47 tag")
        if language.split("-")[0].lower() != "en":
            raise RuleBroken("VR-CFG-003", f"language {language!r} is not supported (supported: en, en-*, "
                                            f"{AUTO_LANGUAGE})")
    if config.input_audio_format not in AUDIO_FORMATS:
        raise RuleBroken("VR-CFG-004", f"input_audio_format {config.input_audio_format!r} is not "
                                        f"{' or '.join(AUDIO_FORMATS)}")
    low, high = SAMPLE_RATE_RANGE
    if not low <= config.sample_rate <= high:
        raise RuleBroken("VR-CFG-004", f"sample_rate must be from {low} to {high} Hz, not {config.sample_rate}")


def _text(result: Partial | Final) -> str:
    return " ".join(w.text for w in result.words)
