"""The dialects as their clients speak them, sans-IO: the frames a client sends (for 16-bit PCM at 16 kHz, which
every dialect takes) and what each frame from the server means (results as Segments, ready, done, an error).
`stt transcribe --url` drives them over a WebSocket (stt.transcribe); no trio, no sockets here.

    client = CLIENTS["yourvoic"](partials=True)
    client.path, client.query(api_key), client.headers(api_key)   # the handshake
    client.opening(); client.audio(pcm); client.closing()          # frames to send
    client.read(frame)                                             # -> Reading(segments, ready, done, error)
"""

from __future__ import annotations

import base64
import json
from typing import Any

import attrs

from stt.events import Word

RATE = 16000  # what a client sends: 16-bit PCM, mono, 16 kHz


@attrs.frozen
class Segment:
    """A result as a client shows it: a final or partial text, and its words' times where the dialect
    sends them (VoiceRun sends text only)."""

    final: bool
    text: str
    words: tuple[Word, ...] = ()
    start: float | None = None
    end: float | None = None


@attrs.define
class Reading:
    """What a frame from the server meant."""

    segments: list[Segment] = attrs.field(factory=list)
    ready: bool = False  # the server is ready for audio
    done: bool = False  # the transcript is complete
    error: str | None = None  # the server reported an error


def _json(frame: str | bytes) -> Any:
    if not isinstance(frame, str):
        return None
    try:
        return json.loads(frame)
    except ValueError:
        return None


class DialectClient:
    """A dialect as its clients speak it, for 16 kHz s16le audio."""

    name: str
    path: str
    waits_for_ready = True  # send audio only once the server says it is ready
    ends_by_close = False  # the end of the transcript is the server's normal close
    has_times = True

    def __init__(self, partials: bool):
        self.partials = partials
        self.sent = 0

    def query(self, api_key: str | None) -> dict[str, str]:
        return {}

    def headers(self, api_key: str | None) -> list[tuple[str, str]]:
        return [("Authorization", f"Bearer {api_key}")] if api_key else []

    def opening(self) -> list[str | bytes]:
        return []

    def audio(self, pcm: bytes) -> list[str | bytes]:
        self.sent += 1
        return [pcm]

    def closing(self) -> list[str | bytes]:
        raise NotImplementedError

    def read(self, frame: str | bytes) -> Reading:
        raise NotImplementedError


class SpeechmaticsClient(DialectClient):
    name, path = "speechmatics", "/v2"

    def opening(self):
        return [json.dumps({"message": "StartRecognition",
                            "audio_format": {"type": "raw", "encoding": "pcm_s16le", "sample_rate": RATE},
                            "transcription_config": {"language": "en", "enable_partials": self.partials}})]

    def closing(self):
        return [json.dumps({"message": "EndOfStream", "last_seq_no": self.sent})]

    def read(self, frame):
        msg, out = _json(frame), Reading()
        if not isinstance(msg, dict):
            return out
        kind = msg.get("message")
        if kind == "RecognitionStarted":
            out.ready = True
        elif kind in ("AddTranscript", "AddPartialTranscript"):
            words = tuple(Word(r["alternatives"][0]["content"], r["start_time"], r["end_time"],
                               r["alternatives"][0].get("confidence", 1.0))
                          for r in msg.get("results", []) if r.get("alternatives"))
            meta = msg.get("metadata", {})
            out.segments.append(Segment(kind == "AddTranscript", meta.get("transcript", "").strip(), words,
                                        meta.get("start_time"), meta.get("end_time")))
        elif kind == "EndOfTranscript":
            out.done = True
        elif kind == "Error":
            out.error = f"{msg.get('type')}: {msg.get('reason')}"
        return out


class VoiceRunClient(DialectClient):
    name, path = "voicerun", "/ws"
    has_times = False

    def opening(self):
        return [json.dumps({"type": "session.update", "session": {
            "model": "nova-3", "provider": "DEEPGRAM", "language": "en", "input_audio_format": "pcm16",
            "sample_rate": RATE}})]

    def audio(self, pcm):
        self.sent += 1
        return [json.dumps({"type": "audio.append", "audio": base64.b64encode(pcm).decode()})]

    def closing(self):
        return [json.dumps({"type": "session.close"})]

    def read(self, frame):
        msg, out = _json(frame), Reading()
        if not isinstance(msg, dict):
            return out
        kind = msg.get("type")
        if kind == "session.updated":
            out.ready = True
        elif kind == "transcription.completed":
            out.segments.append(Segment(True, msg.get("text", "").strip()))
        elif kind == "transcription.partial" and self.partials:
            out.segments.append(Segment(False, msg.get("text", "").strip()))
        elif kind == "session.closed":
            out.done = True
        elif kind == "error":
            error = msg.get("error") if isinstance(msg.get("error"), dict) else {}
            out.error = f"{error.get('code')}: {error.get('message')}"
        return out


class YourVoicClient(DialectClient):
    name, path = "yourvoic", "/api/v1/stt/realtime/stream"
    waits_for_ready = False
    ends_by_close = True

    def query(self, api_key):
        query = {"model": "lucid-agent", "interim_results": "true" if self.partials else "false"}
        return {**query, "api_key": api_key} if api_key else query

    def headers(self, api_key):
        return []

    def closing(self):
        return [json.dumps({"type": "close"})]

    def read(self, frame):
        msg, out = _json(frame), Reading()
        if not isinstance(msg, dict):
            return out
        if msg.get("type") == "transcript":
            words = tuple(Word(w["word"], w["start"], w["end"]) for w in msg.get("words", []))
            out.segments.append(Segment(bool(msg.get("is_final")), msg.get("text", "").strip(), words,
                                        msg.get("start"), msg.get("end")))
        elif msg.get("type") == "error":
            out.error = f"{msg.get('code')}: {msg.get('message')}"
        return out


class VBlazeClient(DialectClient):
    name, path = "vblaze", "/transcribe"
    waits_for_ready = False
    ends_by_close = True

    def query(self, api_key):
        query = {"datahdr": "NONE", "samprate": str(RATE), "sampwidth": "2", "encoding": "SPCM", "output": "json",
                 "realtime": "true", "outstream": "true", "utterance_fmt": "json"}
        return {**query, "token": api_key} if api_key else query

    def headers(self, api_key):
        return []

    def closing(self):
        return [b""]

    def read(self, frame):
        msg, out = _json(frame), Reading()
        if isinstance(msg, dict) and "events" in msg and "donedate" not in msg:  # one utterance
            words = tuple(Word(e["word"], e["start"], e["end"], e.get("confidence", 1.0)) for e in msg["events"])
            out.segments.append(Segment(True, " ".join(w.text for w in words), words, msg.get("start"),
                                        msg.get("end")))
        return out  # the whole transcript after the empty frame repeats the utterances: not shown again


class ScriptixClient(DialectClient):
    name, path = "scriptix", "/v2/realtime"

    def query(self, api_key):
        query = {"type": "fast", "language": "en"}
        return {**query, "token": api_key} if api_key else query

    def headers(self, api_key):
        return []

    def opening(self):
        return [json.dumps({"action": "start", "partial": self.partials})]

    def closing(self):
        return [json.dumps({"action": "stop"})]

    def read(self, frame):
        msg, out = _json(frame), Reading()
        if not isinstance(msg, dict):
            return out
        if msg.get("state") == "listening":
            out.ready = True
        elif msg.get("state") == "stopped":
            out.done = True
        elif "partial" in msg:
            out.segments.append(Segment(False, str(msg["partial"]).strip()))
        elif "result" in msg:
            words = tuple(Word(w[0], w[1] / 1000, w[2] / 1000, w[3] if len(w) > 3 else 1.0) for w in msg["result"])
            out.segments.append(Segment(True, str(msg.get("text", "")).strip(), words,
                                        words[0].start if words else None, words[-1].end if words else None))
        elif isinstance(msg.get("error"), str):
            out.error = msg["error"]
        return out


class DeepgramClient(DialectClient):
    name, path = "deepgram", "/v1/listen"
    waits_for_ready = False

    def query(self, api_key):
        return {"model": "nova-3", "encoding": "linear16", "sample_rate": str(RATE),
                "interim_results": "true" if self.partials else "false", "smart_format": "true"}

    def headers(self, api_key):
        return [("Authorization", f"Token {api_key}")] if api_key else []

    def closing(self):
        return [json.dumps({"type": "CloseStream"})]

    def read(self, frame):
        msg, out = _json(frame), Reading()
        if not isinstance(msg, dict):
            return out
        if msg.get("type") == "Results":
            alternative = msg["channel"]["alternatives"][0]
            words = tuple(Word(w.get("punctuated_word", w["word"]), w["start"], w["end"], w.get("confidence", 1.0))
                          for w in alternative.get("words", []))
            start = msg.get("start", 0.0)
            out.segments.append(Segment(bool(msg.get("is_final")), alternative.get("transcript", "").strip(), words,
                                        start, start + msg.get("duration", 0.0)))
        elif msg.get("type") == "Metadata":
            out.done = True
        elif msg.get("type") == "Error":
            out.error = f"{msg.get('variant')}: {msg.get('description')}"
        return out


class AssemblyAIClient(DialectClient):
    name, path = "assemblyai", "/v3/ws"
    MIN_FRAME = RATE * 2 // 20  # 50 ms: each frame carries 50 to 1000 ms, or the server closes 3007

    def query(self, api_key):
        return {"sample_rate": str(RATE), "encoding": "pcm_s16le", "format_turns": "false"}

    def headers(self, api_key):
        return [("Authorization", api_key)] if api_key else []  # the raw key, no scheme

    def audio(self, pcm):
        self.sent += 1
        return [pcm + bytes(max(0, self.MIN_FRAME - len(pcm)))]  # the last, shorter frame padded with silence

    def closing(self):
        return [json.dumps({"type": "Terminate"})]

    def read(self, frame):
        msg, out = _json(frame), Reading()
        if not isinstance(msg, dict):
            return out
        kind = msg.get("type")
        if kind == "Begin":
            out.ready = True
        elif kind == "Turn":
            words = tuple(Word(w["text"], w["start"] / 1000, w["end"] / 1000, w.get("confidence", 1.0))
                          for w in msg.get("words", []))
            if msg.get("end_of_turn"):
                out.segments.append(Segment(True, msg.get("transcript", "").strip(), words,
                                            words[0].start if words else None, words[-1].end if words else None))
            elif self.partials and not all(w.get("word_is_final") for w in msg.get("words", [])):
                # A partial hypothesis (the Turns whose words are all final only say an utterance is done)
                out.segments.append(Segment(False, " ".join(w.text for w in words)))
        elif kind == "Termination":
            out.done = True
        return out  # AssemblyAI has no error message: the close code and its reason say it


CLIENTS: dict[str, type[DialectClient]] = {c.name: c for c in (SpeechmaticsClient, VoiceRunClient, YourVoicClient,
                                                                VBlazeClient, ScriptixClient, DeepgramClient,
                                                                AssemblyAIClient)}


__all__ = ["CLIENTS", "DialectClient", "Reading", "Segment"]
