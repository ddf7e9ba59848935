"""Speechmatics Real-Time API v2, sans-IO (../shared/protocols.md §4; chart: statecharts/speechmatics.yaml).

Legacy (appliance/container 2.x) and current (SaaS) variants are served by one implementation: where they
agree both work, where they differ the current one wins (max_delay 0.7–4 s, default 4; RecognitionStarted
carries language_pack_info; Error types of the current spec).
"""

from __future__ import annotations

import math
import uuid
from typing import Any

from stt import __version__
from stt.audio.pcm import SAMPLE_RATE_RANGE
from stt.dialects.base import BEARER, DialectBase, Handshake, Route, RuleBroken, dump, in_query, parse_json, refused
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
    Reconfigure,
    SessionStarted,
    SpeechStarted,
    SpeechStopped,
    Violation,
)
from stt.statechart import load_chart

#: The path that names the session's language (which StartRecognition must then ask for).
LANGUAGE_ROUTE = Route("/v2/<language>")

#: Languages the server recognises, with the language_pack_info description.
LANGUAGES = {"en": "English"}

MAX_DELAY_RANGE = (0.7, 4.0)
DEFAULT_MAX_DELAY = 4.0
FORMAT = "2.1"

_ENUMS = {
    "max_delay_mode": {"flexible", "fixed"},
    "diarization": {"none", "speaker", "channel", "channel_and_speaker", "speaker_change"},
    "operating_point": {"standard", "enhanced"},
    "model": {"standard", "enhanced", "melia-1"},
}
_TYPES: dict[str, type | tuple[type, ...]] = {
    "language": str,
    "domain": str,
    "output_locale": str,
    "additional_vocab": list,
    "diarization": str,
    "speaker_change_sensitivity": (int, float),
    "speaker_diarization_config": dict,
    "max_delay": (int, float),
    "max_delay_mode": str,
    "enable_partials": bool,
    "enable_entities": bool,
    "punctuation_overrides": dict,
    "operating_point": str,
    "model": str,
    "audio_filtering_config": dict,
    "transcript_filtering_config": dict,
    "conversation_config": dict,
    "channel_diarization_labels": list,
    "n_best_limit": int,
}
#: What SetRecognitionConfig may carry (current spec).
_RECONFIGURABLE = {"language", "max_delay", "max_delay_mode", "enable_partials", "audio_filtering_config",
                   "conversation_config"}


class SpeechmaticsDialect(DialectBase):
    name = "speechmatics"
    title = "Speechmatics Real-Time API v2"
    chart = load_chart("speechmatics").with_endings_from(load_chart("lifecycle"))
    routes = (Route("/v2"), LANGUAGE_ROUTE)
    credentials = (BEARER, in_query("jwt"))

    def __init__(self, handshake: Handshake):
        super().__init__(handshake)
        m = LANGUAGE_ROUTE.pattern.match(handshake.path)
        self.path_language = m.group("language") if m else None
        self.language = "en"
        self.partials = False

    # --- frames in ----------------------------------------------------------------------------------------

    def receive(self, frame: str | bytes) -> list:
        if isinstance(frame, (bytes, bytearray)):
            return refused(self.machine.fire("AddAudio")) or [Audio(bytes(frame))]
        try:
            msg = parse_json(frame)
        except ValueError as exc:
            return [self._violation("SM-MSG-001", f"not JSON ({exc})")]
        if not isinstance(msg, dict) or not isinstance(msg.get("message"), str):
            return [self._violation("SM-MSG-001", 'no "message" field')]
        name = msg["message"]
        if name not in self.chart.client_events or name == "AddAudio":
            return [self._violation("SM-MSG-002", f"{name!r}")]
        # The chart's verdict, then the message's content; the machine moves only when both pass.
        rejected = refused(self.machine.peek(name))
        if rejected:
            return rejected
        try:
            event = getattr(self, f"_on_{name}")(msg)
        except RuleBroken as exc:
            return [self._violation(exc.rule_id, str(exc))]
        self.machine.fire(name)
        return [event]

    def _on_StartRecognition(self, msg: dict) -> Configure:
        audio = self._audio_format(msg.get("audio_format"))
        config = msg.get("transcription_config")
        if not isinstance(config, dict):
            raise RuleBroken("SM-CFG-002", "transcription_config is required and must be an object")
        self._check_fields(config, set(_TYPES), "transcription_config")
        language = config.get("language")
        if not isinstance(language, str) or not language:
            raise RuleBroken("SM-CFG-002", "transcription_config.language is required")
        if language not in LANGUAGES:
            raise RuleBroken("SM-CFG-003", f"language {language!r} is not supported (supported: "
                                            f"{', '.join(sorted(LANGUAGES))})")
        if self.path_language is not None and self.path_language != language:
            raise RuleBroken("SM-CFG-003", f"transcription_config.language {language!r} does not match the "
                                            f"language in the URL path {self.path_language!r}")
        if "translation_config" in msg:
            raise RuleBroken("SM-CFG-002", "translation is not supported by this server")
        self.language = language
        self.partials = config.get("enable_partials", False)
        return Configure(audio=audio, language=language, partials=self.partials,
                         max_delay=float(config.get("max_delay", DEFAULT_MAX_DELAY)),
                         hints=_vocabulary(config.get("additional_vocab", [])))

    def _audio_format(self, fmt: Any) -> AudioFormat:
        if not isinstance(fmt, dict):
            raise RuleBroken("SM-CFG-001", "audio_format is required and must be an object")
        kind = fmt.get("type")
        if kind == "file":  # a whole file in AddAudio chunks, headers included: stt.audio recognises it
            return AudioFormat("file")
        if kind != "raw":
            raise RuleBroken("SM-CFG-001", f'audio_format type {kind!r} is not "raw" or "file"')
        encoding, rate = fmt.get("encoding"), fmt.get("sample_rate")
        if encoding not in ("pcm_s16le", "pcm_f32le", "mulaw"):
            raise RuleBroken("SM-CFG-001", f"encoding {encoding!r} is not pcm_s16le, pcm_f32le or mulaw")
        if not isinstance(rate, int) or isinstance(rate, bool) or not SAMPLE_RATE_RANGE[0] <= rate <= SAMPLE_RATE_RANGE[1]:
            raise RuleBroken("SM-CFG-001", f"sample_rate must be an integer from {SAMPLE_RATE_RANGE[0]} "
                                            f"to {SAMPLE_RATE_RANGE[1]} Hz, not {rate!r}")
        return AudioFormat(encoding, rate)

    def _check_fields(self, config: dict, allowed: set[str], where: str, rule_id: str = "SM-CFG-002") -> None:
        for key, value in config.items():
            if key not in allowed:
                known = key in _TYPES
                raise RuleBroken(rule_id, f"{where}.{key} {'cannot be changed mid-session' if known else 'is not a known field'}")
            expected = _TYPES[key]
            if not isinstance(value, expected) or (isinstance(value, bool) and expected is not bool):
                raise RuleBroken("SM-CFG-002", f"{where}.{key} has the wrong type")
            if key in _ENUMS and value not in _ENUMS[key]:
                raise RuleBroken("SM-CFG-002", f"{where}.{key} must be one of {', '.join(sorted(_ENUMS[key]))}")
        if "max_delay" in config:
            low, high = MAX_DELAY_RANGE
            if not (math.isfinite(config["max_delay"]) and low <= config["max_delay"] <= high):
                raise RuleBroken("SM-CFG-002", f"{where}.max_delay must be from {low} to {high} seconds")

    def _on_SetRecognitionConfig(self, msg: dict) -> Reconfigure:
        config = msg.get("transcription_config")
        if not isinstance(config, dict):
            raise RuleBroken("SM-CFG-002", "transcription_config is required and must be an object")
        self._check_fields(config, _RECONFIGURABLE, "transcription_config", rule_id="SM-CFG-004")
        if "language" in config and config["language"] != self.language:
            raise RuleBroken("SM-CFG-004", "the language cannot be changed mid-session")
        if "enable_partials" in config:
            self.partials = config["enable_partials"]
        max_delay = config.get("max_delay")
        return Reconfigure(partials=config.get("enable_partials"),
                           max_delay=None if max_delay is None else float(max_delay))

    def _on_ForceEndOfUtterance(self, msg: dict) -> Flush:
        return Flush()

    def _on_EndOfStream(self, msg: dict) -> EndOfAudio:
        last = msg.get("last_seq_no")
        if not isinstance(last, int) or isinstance(last, bool) or last < 0:
            raise RuleBroken("SM-MSG-003", f"last_seq_no is {last!r}")
        return EndOfAudio()

    # --- frames out ---------------------------------------------------------------------------------------

    closes_after_end = False  # the client closes after EndOfTranscript (§4.6.8); the session waits close_grace
    rejects_unauthorised = False  # a bad key is an Error not_authorised and close 4001
    #: Before --max-session-seconds ends a session, a Warning session_timeout this many seconds ahead (§4.7:
    #: 45, 30 and 15 minutes; those longer than the limit are skipped); its chart rule.
    time_limit_warnings = (2700.0, 1800.0, 900.0)
    time_limit_warning_rule = "SM-LIMIT-003"

    def render(self, item: Any) -> list[str]:
        if isinstance(item, AudioAccepted):  # once per audio frame: formatted, not dumped
            return ['{"message":"AudioAdded","seq_no":%d}' % item.seq_no]
        if isinstance(item, Partial):
            return [dump(self._transcript("AddPartialTranscript", item))] if self.partials else []
        if isinstance(item, Final):
            frames = [dump(self._transcript("AddTranscript", item))]
            if item.forced:
                frames.append(dump({"message": "EndOfUtterance", "metadata": {"start_time": item.end,
                                     "end_time": item.end}, "forced": True}))
            return frames
        if isinstance(item, EndOfTranscript):
            self.machine.advance("EndOfTranscript")
            return [dump({"message": "EndOfTranscript"})]
        if isinstance(item, SessionStarted):
            self.machine.advance("RecognitionStarted")
            rate = item.config.audio.sample_rate  # 0 for a file: not known until it is decoded
            quality = "telephony" if 0 < rate < 16000 else "broadcast"
            return [
                dump({
                    "message": "RecognitionStarted",
                    "id": item.session_id,
                    "orchestrator_version": f"stt-{__version__}",
                    "language_pack_info": {
                        "language_description": LANGUAGES[self.language],
                        "word_delimiter": " ",
                        "writing_direction": "left-to-right",
                        "itn": False,
                        "adapted": False,
                    },
                }),
                dump({"message": "Info", "type": "recognition_quality", "quality": quality,
                       "reason": f"Running recognition using a {quality} model quality."}),
            ]
        if isinstance(item, Violation):
            return self.render_violation(item)
        if isinstance(item, (SpeechStarted, SpeechStopped)):
            return []  # Speechmatics has no voice-activity messages
        raise TypeError(f"speechmatics cannot render {item!r}")

    def render_violation(self, violation: Violation) -> list[str]:
        rule = violation.rule
        reason = f"{rule.message}: {violation.detail}" if violation.detail else rule.message
        if rule.error:
            return [dump({"message": "Error", "type": rule.error, "reason": reason})]
        if rule.warning:
            return [dump({"message": "Warning", "type": rule.warning, "reason": reason})]
        return []

    def _transcript(self, message: str, result: Partial | Final) -> dict:
        out: dict[str, Any] = {
            "message": message,
            "format": FORMAT,
            "metadata": {
                "start_time": result.start,
                "end_time": result.end,
                "transcript": " ".join(w.text for w in result.words),
            },
            "results": [
                {
                    "type": "word",
                    "start_time": w.start,
                    "end_time": w.end,
                    "alternatives": [{"content": w.text, "confidence": round(w.confidence, 4),
                                      "language": self.language}],
                }
                for w in result.words
            ],
        }
        if isinstance(result, Final) and result.forced:
            out["forced"] = True
        return out


def new_session_id() -> str:
    return str(uuid.uuid4())


def _vocabulary(entries: list) -> tuple[str, ...]:
    """additional_vocab's words, for an engine that favours them: strings, or objects' `content`."""
    words = []
    for entry in entries:
        content = entry.get("content") if isinstance(entry, dict) else entry
        if not isinstance(content, str) or not content.strip():
            raise RuleBroken("SM-CFG-002", "additional_vocab entries must be strings or objects with a content string")
        words.append(content.strip())
    return tuple(dict.fromkeys(words))
