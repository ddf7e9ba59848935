"""Voci V-Blaze WebSocket API, sans-IO (../shared/protocols.md §1; chart: statecharts/vblaze.yaml).

    upgrade with every tag (query string or X-Voci-<Tag> headers) → binary audio … → one empty binary frame
    → [one text frame per utterance, one empty text frame] → the whole transcript → the server closes 1000

All configuration is in the handshake: the constructor reads the tags and refuses the upgrade with HTTP 400
and a text body naming the tag (HandshakeRefused) when one is unknown or bad, as the vendor's REST interface
answers a bad request; `on_open` then hands the session the Configure. The client sends nothing but audio.

Choices where the vendor's documents are silent (README, V-Blaze section; the tag table is TAGS below):
* A tag given both ways: the query string wins. Tag names are case-insensitive; header values are URL-quoted.
* Booleans are true/false (also 1/0, yes/no, any case).
* datahdr=NONE: samprate (Hz, 8000-48000, default 8000), sampwidth (BYTES per sample, 1-4; 8/16/24/32 are
  read as bits), encoding SPCM (alias LPCM: signed PCM, the default), UPCM (unsigned, 1 byte), FLOAT (4 or
  8 bytes), ULAW, ALAW (1 byte), endian LITTLE (default) | BIG. datahdr=WAVE (the default): the stream must
  start with a RIFF/RF64 WAVE header ("missing data WAVE header" otherwise, close 1007); each channel of a
  stereo file is recognised on its own, and its utterances carry metadata.channel.
* An utterance is a Final with words. Its JSON is the object as it appears inside `utterances`
  (protocols §1.8); jsontop replaces `events` with `text`; text is the utterance's words. The whole
  transcript in `text` puts one utterance per line.
* punctuate (default true): the first word of an utterance capitalised, "i" as "I", a period after the last
  word. numtrans (default true): spoken numbers written as digits (stt.text.smart_format), the number's words
  merged into one event. scrubtext: every scrubconf rule ({"regex","repl"}, applied in order to each word;
  default [{"regex":"\\d","repl":"#"}]) after numtrans and punctuate, so "4111" becomes "####".
* outzip=true (or zip): the complete transcript is a binary frame, a ZIP holding transcript.json (or .txt
  for output=text); streamed utterances stay text frames. scrubaudio=true: the same rules redact the audio
  too: the words they change are silenced in a 16-bit WAV of the audio sent (its rate and channels), returned
  in the ZIP beside the transcript (scrubbed.wav), or, streaming, as a binary frame before the empty frame
  and the transcript; notext=true leaves the transcript out. 7z, diarize, callbacks and subst_rules are
  refused with 400 "not supported".
* audiosecs: the length of the audio received, from the WAV header's byte rate (or the raw format) and the
  byte count; `started` and `donedate` are wall-clock times (the vendor's fields are).
"""

from __future__ import annotations

import datetime
import io
import re
import struct
import wave
import zipfile
from typing import Any, Callable
from urllib.parse import unquote

import numpy as np

from stt import __version__
from stt.audio import RawReader
from stt.audio.pcm import RAW_ENCODINGS, raw_encoding
from stt.audio.wav import WavReader
from stt.dialects.base import (
    DialectBase,
    Handshake,
    HandshakeRefused,
    Route,
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

def asr_version(engine: str) -> str:
    """The transcript's "asr": stt's version and the engine that served the session."""
    return f"stt-{__version__} ({engine or 'unknown engine'})"

DEFAULT_MODEL = "eng1:callcenter"
#: model names: <language>[:<domain>], the language English (eng, eng1, en, en-us, eng-us, ...)
MODEL = re.compile(r"^(?P<lang>[A-Za-z]{2,3}\d*(?:[-_][A-Za-z]{2,3})?)(?::[A-Za-z0-9_.+-]+)?$")
ENGLISH = re.compile(r"^eng?\d*(?:[-_][A-Za-z]{2,3})?$", re.IGNORECASE)
FORMATS = ("json", "jsontop", "text")
LEGACY_FORMATS = ("jsonlist", "jsontext", "jsontextlist", "noutts", "noutt")
ENCODINGS = {"SPCM": "signed", "LPCM": "signed", "UPCM": "unsigned", "FLOAT": "float", "ULAW": "mulaw",
             "ALAW": "alaw"}
SAMPLE_RATES = (8000, 48000)
DEFAULT_SCRUBCONF = ({"regex": r"\d", "repl": "#"},)
MAX_SCRUBAUDIO_BYTES = 64 << 20  # scrubaudio keeps the audio to return it redacted: at most this much
_TRUE, _FALSE = {"true", "1", "yes"}, {"false", "0", "no"}

#: tag -> (kind, default, (low, high)) for the tags this server honours; ms and s are whole numbers.
TAGS: dict[str, tuple[str, Any, tuple[int, int] | None]] = {
    "model": ("model", DEFAULT_MODEL, None),
    "output": ("format", "json", None),
    "utterance_fmt": ("format", "json", None),
    "realtime": ("bool", False, None),
    "outstream": ("bool", None, None),  # default: realtime
    "datahdr": ("choice:WAVE,NONE", "WAVE", None),
    "samprate": ("int", 8000, SAMPLE_RATES),
    "sampwidth": ("int", 2, None),
    "encoding": ("choice:" + ",".join(ENCODINGS), "SPCM", None),
    "endian": ("choice:LITTLE,BIG", "LITTLE", None),
    "requestid": ("str", None, None),
    "token": ("str", None, None),
    "punctuate": ("bool", True, None),
    "numtrans": ("bool", True, None),
    "scrubtext": ("bool", False, None),
    "scrubconf": ("scrubconf", None, None),
    "outzip": ("choice:TRUE,FALSE,ZIP,7Z", "FALSE", None),
    "scrubaudio": ("bool", False, None),
    "notext": ("bool", False, None),
    "diarize": ("choice:FALSE,TRUE,NOISE", "FALSE", None),
    "insecure": ("bool", False, None),
    "uttmaxsilence": ("int", 800, (100, 10000)),  # ms -> Configure.endpointing
    "uttminactivity": ("int", 500, (0, 10000)),  # ms; validated, not used by the recognizer
    "uttpadding": ("int", 300, (0, 5000)),  # ms; validated, not used
    "uttmaxtime": ("int", 80, (1, 150)),  # s -> Configure.max_delay
    "uttmaxgap": ("int", 0, (0, 10000)),  # must be 0 with realtime
    "vadtype": ("choice:ENERGY,LEVEL", "ENERGY", None),
    "activitylevel": ("int", 175, (0, 32768)),
}
#: tags of the vendor this server knows but does not serve: given with any value but false, 400.
UNSUPPORTED = {
    "utterance_callback": "utterance callbacks (this server makes no HTTP requests)",
    "callback": "result callbacks (this server makes no HTTP requests)",
    "subst_rules": "substitution rules",
    "emotion": "emotion detection",
    "sentiment": "sentiment analysis",
    "gender": "gender detection",
    "music": "music detection",
    "lid": "language identification",
    "agentid": "agent identification",
    "luhn": "Luhn checks",
    "scrubmindist": "scrubbed audio (scrubaudio)",
    "scrubsil": "scrubbed audio (scrubaudio)",
    "scruboffset": "scrubbed audio (scrubaudio)",
    "scruboutfmt": "scrubbed audio (scrubaudio)",
}


def _refuse(tag: str, problem: str) -> HandshakeRefused:
    return HandshakeRefused(400, f"bad tag {tag}: {problem}")


class VBlazeDialect(DialectBase):
    name = "vblaze"
    title = "Voci V-Blaze WebSocket API"
    chart = load_chart("vblaze").with_endings_from(load_chart("lifecycle"))
    routes = (Route("/transcribe"),)
    #: The `token` tag, either way a tag comes (credential() reads it from the tags: any case, URL-quoted).
    credentials = (in_query("token"), in_header("x-voci-token"))

    closes_after_end = True  # the complete transcript is the last message; the server closes 1000 (§1.3)
    rejects_unauthorised = True  # with API keys configured, a missing or wrong `token` tag is HTTP 401
    refuses_busy_at_upgrade = True  # at the session limit: HTTP 503 and the chart's busy message (VB-BUSY-001)

    def __init__(self, handshake: Handshake, clock: Callable[[], datetime.datetime] | None = None):
        super().__init__(handshake)
        self.engine = ""  # the engine serving the session, once SessionStarted says (the transcript's "asr")
        self._clock = clock or (lambda: datetime.datetime.now(datetime.timezone.utc))
        self.started = self._clock()
        self.tags = tags_of(handshake)
        self._settle(self.tags)
        self.utterances: list[dict] = []
        self._head = b""  # the first bytes of the audio (the WAV header)
        self._audio_bytes = 0
        self._kept = bytearray()  # the audio, when scrubaudio asks for it back
        self._redacted: list[tuple[int, float, float]] = []  # (channel, start, end) of each redacted word
        self._header_checked = False

    # --- the tags -----------------------------------------------------------------------------------------

    def _settle(self, given: dict[str, str]) -> None:
        for tag in given:
            if tag in UNSUPPORTED:
                if given[tag].strip().lower() not in ("", *_FALSE):
                    raise HandshakeRefused(400, f"tag {tag} is not supported: {UNSUPPORTED[tag]}")
            elif tag not in TAGS:
                raise HandshakeRefused(400, f"unknown tag {tag}")
        v = {tag: _value(tag, given.get(tag)) for tag in TAGS}
        models = [m.strip() for m in v["model"].split(",")]
        for model in models:
            m = MODEL.match(model)
            if m is None:
                raise _refuse("model", f"{model!r} is not a model name such as {DEFAULT_MODEL}")
            if not ENGLISH.match(m["lang"]):
                raise _refuse("model", f"{model!r} is not served (this server recognises English: eng1:<domain>)")
        self.model = models[0]
        self.output, self.utterance_fmt = v["output"], v["utterance_fmt"]
        self.realtime = v["realtime"]
        self.outstream = v["realtime"] if v["outstream"] is None else v["outstream"]
        self.requestid = given.get("requestid") or self.handshake.headers.get("x-request-id") or None
        self.punctuate, self.numtrans = v["punctuate"], v["numtrans"]
        self.scrubaudio = v["scrubaudio"]  # return the audio with the redacted words silenced
        self.notext = v["notext"]  # with scrubaudio: the redacted audio only, no transcript
        self.scrubtext = v["scrubtext"] or self.scrubaudio  # the same rules decide what is redacted
        self.scrub_rules = v["scrubconf"] or _scrub_rules(DEFAULT_SCRUBCONF, "scrubconf")
        if v["scrubconf"] is not None and not self.scrubtext:
            raise _refuse("scrubconf", "scrubconf needs scrubtext=true or scrubaudio=true")
        if v["outzip"] == "7Z":
            raise _refuse("outzip", "7z is not supported (true or zip: a ZIP archive)")
        self.outzip = v["outzip"] in ("TRUE", "ZIP")
        if self.notext and not self.scrubaudio:
            raise _refuse("notext", "applies to scrubaudio=true (the redacted audio without a transcript)")
        if v["diarize"] != "FALSE":
            raise HandshakeRefused(400, "tag diarize is not supported yet (false only)")
        if self.realtime and v["uttmaxgap"] != 0:
            raise _refuse("uttmaxgap", "must be 0 with realtime=true")
        self.audio = self._audio_format(v)
        self.endpointing = v["uttmaxsilence"] / 1000
        self.max_delay = float(v["uttmaxtime"])

    def _audio_format(self, v: dict) -> AudioFormat:
        if v["datahdr"] == "WAVE":
            for tag in ("samprate", "sampwidth", "encoding", "endian"):
                if tag in self.tags:
                    raise _refuse(tag, "applies to datahdr=NONE only (the WAVE header describes the audio)")
            return AudioFormat("file")
        width = v["sampwidth"]
        if width in (8, 16, 24, 32):
            width //= 8  # bits
        if not 1 <= width <= 8:
            raise _refuse("sampwidth", f"{v['sampwidth']} is not a sample width (bytes: 1, 2, 3, 4; or bits)")
        kind = ENCODINGS[v["encoding"]]
        encoding = raw_encoding(kind, width, v["endian"] == "BIG")
        if encoding is None:
            raise _refuse("sampwidth", f"{v['encoding']} audio has no {width}-byte samples")
        self._byte_rate = v["samprate"] * width
        return AudioFormat(encoding.name, v["samprate"])

    def credential(self) -> str | None:
        return self.tags.get("token") or None

    def on_open(self) -> list:
        return [Configure(audio=self.audio, language="en", partials=False, max_delay=self.max_delay,
                          endpointing=self.endpointing, split_channels=True)]  # each channel on its own

    # --- frames in ----------------------------------------------------------------------------------------

    def receive(self, frame: str | bytes) -> list:
        if isinstance(frame, str):
            return [self._violation("VB-MSG-001", f"a text frame of {len(frame)} characters")]
        if not frame:
            return refused(self.machine.fire("end_of_audio")) or [EndOfAudio()]
        outcome = refused(self.machine.peek("audio"))
        if outcome:
            return outcome
        self._audio_bytes += len(frame)
        if self.scrubaudio:  # kept to be returned redacted; bounded like a file decoded whole
            if len(self._kept) + len(frame) > MAX_SCRUBAUDIO_BYTES:
                return [self._violation("VB-SCRUB-001", f"over {MAX_SCRUBAUDIO_BYTES} bytes")]
            self._kept += frame
        if len(self._head) < 4096:
            self._head += bytes(frame[:4096 - len(self._head)])
        if self.audio.encoding == "file" and not self._header_checked and len(self._head) >= 12:
            self._header_checked = True
            if self._head[:4] not in (b"RIFF", b"RIFX", b"RF64") or self._head[8:12] != b"WAVE":
                return [self._violation("VB-AUDIO-002", f"the audio starts with {self._head[:12]!r}")]
        self.machine.fire("audio")
        return [Audio(bytes(frame))]

    # --- frames out ---------------------------------------------------------------------------------------

    def render(self, item: Any) -> list[str | bytes]:
        if isinstance(item, Final):
            if not item.words:
                return []
            utterance = self._utterance(item)
            self.utterances.append(utterance)
            return [self._format_utterance(utterance)] if self.outstream and not self.notext else []
        if isinstance(item, EndOfTranscript):
            self.machine.advance("end_of_transcript")
            if self.scrubaudio:
                return self._scrubbed_frames()
            frames: list[str | bytes] = [""] if self.outstream else []
            return [*frames, self.transcript_frame()]
        if isinstance(item, SessionStarted):
            self.engine = item.engine
            return []
        if isinstance(item, (Partial, SpeechStarted, SpeechStopped, AudioAccepted, SessionStatus)):
            return []  # V-Blaze sends results only
        if isinstance(item, Violation):
            return self.render_violation(item)
        raise TypeError(f"vblaze cannot render {item!r}")

    @property
    def kept_bytes(self) -> int:
        """Bytes of the client's audio kept whole for the end (scrubaudio), which the session counts against the
        server's budget for whole files (--max-file-buffer-bytes)."""
        return len(self._kept)

    def costly(self, item: Any) -> bool:
        """Whether rendering `item` takes long enough (a ZIP, scrubbed audio: about a second per 32 MiB) that the
        session runs it in a worker thread, off the event loop."""
        return isinstance(item, EndOfTranscript) and (self.outzip or self.scrubaudio)

    def render_violation(self, violation: Violation) -> list[str]:
        return []  # V-Blaze has no error message on the socket: the close code and reason say it

    # --- the transcript -----------------------------------------------------------------------------------

    def _scrubbed_frames(self) -> list[str | bytes]:
        """scrubaudio: the audio with every redacted word silenced, as a WAV. Streaming: a binary frame of it,
        then (unless notext) the empty frame and the transcript; otherwise one ZIP with both."""
        audio = scrubbed_wav(self._kept, self.audio, self._redacted)
        text = None if self.notext else self._transcript_text()
        if self.outstream:
            return [audio] + ([] if text is None else ["", text])
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
            if text is not None:
                archive.writestr("transcript.txt" if self.output == "text" else "transcript.json", text)
            archive.writestr("scrubbed.wav", audio)
        return [buf.getvalue()]

    def words_of(self, words: tuple[Word, ...]) -> list[Word]:
        """The words as written: numbers as digits (numtrans), punctuated, scrubbed."""
        out = list(words)
        if self.numtrans:
            out = [_merge(words[t.start:t.end], t.text) for t in smart_format([w.text for w in words])]
        if self.punctuate:
            out = [_with(w, text) for w, text in zip(out, punctuate([w.text for w in out], final=True))]
        if self.scrubtext:
            out = [_with(w, _scrub(w.text, self.scrub_rules)) for w in out]
        return out

    def _note_redactions(self, final: Final) -> None:
        """The time spans of the words the rules change, for scrubaudio."""
        scrubtext, self.scrubtext = self.scrubtext, False
        plain = self.words_of(final.words)
        self.scrubtext = scrubtext
        self._redacted += [(final.channel, w.start, w.end) for w in plain
                           if _scrub(w.text, self.scrub_rules) != w.text]

    def _utterance(self, final: Final) -> dict:
        if self.scrubaudio:
            self._note_redactions(final)
        words = self.words_of(final.words)
        return {
            "start": _t(final.words[0].start),
            "end": _t(final.words[-1].end),
            "confidence": _mean(w.confidence for w in words),
            "metadata": {"uttid": len(self.utterances), "channel": final.channel, "model": self.model},
            "events": [{"word": w.text, "start": _t(w.start), "end": _t(w.end), "confidence": round(w.confidence, 3)}
                       for w in words],
        }

    def _format_utterance(self, utterance: dict) -> str:
        if self.utterance_fmt == "text":
            return _text(utterance)
        if self.utterance_fmt == "jsontop":
            return dump(_top(utterance))
        return dump(utterance)

    def audio_seconds(self) -> float:
        """The length of the audio received: its byte count over the byte rate of its header or tags."""
        if self.audio.encoding != "file":
            return self._audio_bytes / self._byte_rate
        parsed = _wav_layout(self._head)
        if parsed is None:
            return self.utterances[-1]["end"] if self.utterances else 0.0
        data_offset, byte_rate = parsed
        return max(0, self._audio_bytes - data_offset) / byte_rate

    def transcript(self) -> dict | str:
        """The complete transcript in the `output` format: utterances in time order, channels interleaved."""
        self.utterances.sort(key=lambda u: (u["start"], u["metadata"]["channel"]))
        if self.output == "text":
            return "\n".join(_text(u) for u in self.utterances)
        words = [e for u in self.utterances for e in u["events"]]
        result: dict[str, Any] = {
            "asr": asr_version(self.engine),
            "model": self.model,
            "confidence": _mean(e["confidence"] for e in words),
            "audiosecs": round(self.audio_seconds(), 2),
            "started": _date(self.started),
            "donedate": _date(self._clock()),
        }
        if self.requestid is not None:
            result["requestid"] = self.requestid
        channels = sorted({u["metadata"]["channel"] for u in self.utterances})
        if channels and channels != [0]:  # stereo: what each channel holds
            result["chaninfo"] = [{"channel": c, "utterances": sum(u["metadata"]["channel"] == c
                                                                   for u in self.utterances)} for c in channels]
        if self.output == "jsontop":
            result["text"] = " ".join(_text(u) for u in self.utterances)
        else:
            result["utterances"] = self.utterances
        return result

    def _transcript_text(self) -> str:
        body = self.transcript()
        return body if isinstance(body, str) else dump(body)

    def transcript_frame(self) -> str | bytes:
        text = self._transcript_text()
        if not self.outzip:
            return text
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("transcript.txt" if self.output == "text" else "transcript.json", text)
        return buf.getvalue()


def scrubbed_wav(data: bytes | bytearray, fmt: AudioFormat, spans: list[tuple[int, float, float]]) -> bytes:
    """The audio the client sent, as 16-bit PCM WAV at its own rate and channels, with each (channel, start,
    end) span silenced."""
    reader = WavReader() if fmt.encoding == "file" else RawReader(RAW_ENCODINGS[fmt.encoding], fmt.sample_rate,
                                                                   fmt.channels)
    # A MiB at a time, each piece made 16-bit at once: the float samples of 64 MiB of audio are never all held.
    pieces = [_int16(reader.feed(bytes(data[i:i + _PIECE]))) for i in range(0, len(data), _PIECE)]
    pieces.append(_int16(reader.finish()))
    pieces = [p for p in pieces if len(p)]  # before the header was complete, a piece has no channels yet
    samples = np.concatenate(pieces) if pieces else np.zeros((0, reader.channels or 1), "<i2")
    del pieces
    rate = reader.sample_rate
    for channel, start, end in spans:
        if channel < samples.shape[1]:
            samples[int(start * rate): int(np.ceil(end * rate)), channel] = 0
    buf = io.BytesIO()
    with wave.open(buf, "wb") as out:
        out.setnchannels(samples.shape[1]), out.setsampwidth(2), out.setframerate(rate)
        out.writeframes(samples.tobytes())
    return buf.getvalue()


_PIECE = 1 << 20


def _int16(frames: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(frames * 32768.0), -32768, 32767).astype("<i2")


def tags_of(handshake: Handshake) -> dict[str, str]:
    """The stream tags: X-Voci-<Tag> headers (values URL-quoted), then the query string (which wins)."""
    tags = {name[len("x-voci-"):]: unquote(value) for name, value in handshake.headers.items()
            if name.startswith("x-voci-") and len(name) > len("x-voci-")}
    tags.update({name.lower(): value for name, value in handshake.query.items()})
    return tags


def _value(tag: str, raw: str | None) -> Any:
    kind, default, bounds = TAGS[tag]
    if raw is None:
        return default
    value = raw.strip()
    if kind == "bool":
        if value.lower() in _TRUE:
            return True
        if value.lower() in _FALSE:
            return False
        raise _refuse(tag, f"must be true or false, not {raw!r}")
    if kind == "int":
        if not (value.isascii() and value.isdigit()):
            raise _refuse(tag, f"must be a whole number, not {raw!r}")
        number = int(value)
        if bounds and not bounds[0] <= number <= bounds[1]:
            raise _refuse(tag, f"must be from {bounds[0]} to {bounds[1]}, not {number}")
        return number
    if kind == "format":
        if value.lower() in FORMATS:
            return value.lower()
        if value.lower() in LEGACY_FORMATS:
            raise _refuse(tag, f"the legacy format {value!r} is not supported (json, jsontop or text)")
        raise _refuse(tag, f"{raw!r} is not json, jsontop or text")
    if kind.startswith("choice:"):
        choices = kind[len("choice:"):].split(",")
        if value.upper() in choices:
            return value.upper()
        raise _refuse(tag, f"{raw!r} is not one of {', '.join(choices)}")
    if kind == "scrubconf":
        try:
            rules = parse_json(value)
        except ValueError as exc:
            raise _refuse(tag, f"not JSON ({exc})") from None
        return _scrub_rules(rules, tag)
    if not value:
        raise _refuse(tag, "is empty")
    if len(value) > 256:
        raise _refuse(tag, "is too long")
    return value


def _scrub_rules(rules: Any, tag: str) -> list[tuple[re.Pattern, str]]:
    if isinstance(rules, dict):
        rules = [rules]
    if not isinstance(rules, (list, tuple)) or not rules:
        raise _refuse(tag, 'must be a JSON list of {"regex": ..., "repl": ...}')
    compiled = []
    for rule in rules:
        if not (isinstance(rule, dict) and isinstance(rule.get("regex"), str)
                and isinstance(rule.get("repl", ""), str)):
            raise _refuse(tag, 'each rule is {"regex": "<pattern>", "repl": "<text>"}')
        try:
            compiled.append((re.compile(rule["regex"]), rule.get("repl", "")))
        except re.error as exc:
            raise _refuse(tag, f"bad regex {rule['regex']!r} ({exc})") from None
    return compiled


def _scrub(text: str, rules: list[tuple[re.Pattern, str]]) -> str:
    for pattern, repl in rules:
        text = pattern.sub(lambda _m, r=repl: r, text)  # the replacement is literal text
    return text


def _wav_layout(head: bytes) -> tuple[int, int] | None:
    """(offset of the data, bytes per second) from a RIFF WAVE header, or None."""
    if len(head) < 12 or head[:4] not in (b"RIFF", b"RIFX", b"RF64") or head[8:12] != b"WAVE":
        return None
    order = ">" if head[:4] == b"RIFX" else "<"
    pos, byte_rate = 12, None
    while pos + 8 <= len(head):
        chunk, size = head[pos:pos + 4], struct.unpack(order + "I", head[pos + 4:pos + 8])[0]
        if chunk == b"fmt " and pos + 20 <= len(head):
            byte_rate = struct.unpack(order + "I", head[pos + 16:pos + 20])[0]
        if chunk == b"data":
            return (pos + 8, byte_rate) if byte_rate else None
        pos += 8 + size + (size & 1)
    return None


def _merge(words: tuple[Word, ...], text: str) -> Word:
    if len(words) == 1:
        return _with(words[0], text)
    return Word(text, words[0].start, words[-1].end, sum(w.confidence for w in words) / len(words))


def _with(word: Word, text: str) -> Word:
    return Word(text, word.start, word.end, word.confidence)


def _text(utterance: dict) -> str:
    return " ".join(e["word"] for e in utterance["events"])


def _top(utterance: dict) -> dict:
    out = {k: v for k, v in utterance.items() if k != "events"}
    out["text"] = _text(utterance)
    return out


def _mean(values) -> float:
    values = list(values)
    return round(sum(values) / len(values), 3) if values else 0.0


def _t(seconds: float) -> float:
    return round(seconds, 2)


def _date(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")
