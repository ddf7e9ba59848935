"""Hypothesis strategies for tests/test_fuzz.py: per dialect, a connection plan (the upgrade's path, query and
headers, then a sequence of client actions and how the client leaves).

The sequences mix the dialect's valid frames (start/config message, audio, end of stream, its other client
messages) with mutations of them (bad and truncated JSON, wrong field types, missing and extra fields, unknown
message types, huge numbers, odd unicode, nested junk), binary where text is expected and text where binary is,
empty frames, frames over the fuzz server's message limit, pings and pauses, in random order; the plan ends by
waiting for the server to close, by closing with a random valid code, or by dropping the TCP connection
without a close frame (with or without a reset). Where a dialect reads its handshake (query string, headers,
path) that is drawn too, mostly valid so that the sequences reach the deeper states.

Strategies choose among kinds with a drawn integer whose low values are the valid kinds, so that shrinking
moves a failing example towards valid frames and the minimal example shows only the frames that matter.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import struct
from typing import Any
from urllib.parse import quote, urlencode

import attrs
import numpy as np
from hypothesis import strategies as st

#: The key the fuzz server accepts (tests/test_fuzz.py configures it); most plans present it.
API_KEY = "fuzz-key"
#: The fuzz server's largest message (SessionLimits.max_message_bytes): small, so that over-size frames are cheap.
MAX_MESSAGE_BYTES = 64 * 1024

#: Kinds of frames and endings left out of the plans (comma-separated in STT_FUZZ_SKIP: ping, huge, deep, drop, badurl, raw): for long runs
#: that should look past a known bug those frames trigger. CI leaves nothing out.
SKIP = set(filter(None, os.environ.get("STT_FUZZ_SKIP", "").split(",")))

# --- actions --------------------------------------------------------------------------------------------


@attrs.frozen
class Text:
    data: str

    def __repr__(self) -> str:
        return f"Text({_short(self.data)})"


@attrs.frozen
class Binary:
    data: bytes

    def __repr__(self) -> str:
        return f"Binary({_short(self.data)})"


@attrs.frozen
class Huge:
    """A frame `extra` bytes (or characters) over the server's limit, built when sent (cheap to draw)."""

    text: bool
    extra: int

    def frame(self) -> str | bytes:
        size = MAX_MESSAGE_BYTES + self.extra
        return "a" * size if self.text else b"\x00" * size


@attrs.frozen
class Expect:
    """Wait (a second at most) until a frame from the server holds this text: a client that waits for the
    server's answer to its start message before it streams, as the vendors ask."""

    text: str


@attrs.frozen
class Pause:
    seconds: float


@attrs.frozen
class Ping:
    payload: bytes


@attrs.frozen
class Raw:
    """Bytes written to the TCP stream under the client's WebSocket: a frame that breaks RFC 6455, which the
    server must answer with a Close `code` (1002, or 1007 for text that is not UTF-8)."""

    data: bytes
    code: int
    what: str

    def __repr__(self) -> str:
        return f"Raw({self.what}: {self.data[:24]!r})"


@attrs.frozen
class Plan:
    dialect: str
    resource: str  # path and query string, as sent in the request line
    headers: tuple[tuple[str, str], ...]
    actions: tuple
    ending: tuple  # ("wait",) | ("close", code, reason) | ("drop", reset)


def _short(value: str | bytes, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}...<{len(value)} long>"


# --- generic values ---------------------------------------------------------------------------------------

HUGE_NUMBERS = [10**400, -(10**400), 2**63, 2**64, -(2**63) - 1, 1e308, -1e308, 5e-324, float("inf"),
                float("-inf"), float("nan"), -1, 0, 1]
ODD_STRINGS = ["", " ", "\x00", "\udc80", "\ud800\udc00", "\u202e", "\ufeff", "é", "💥" * 3, "\n", "null",
               "a" * 300, "%00", "../../etc/passwd", "{}", "[]", "\\", '"']
#: Those a text frame can carry as they are (lone surrogates only travel escaped, inside JSON).
SENDABLE_ODD_STRINGS = [s for s in ODD_STRINGS if not any("\ud800" <= c <= "\udfff" for c in s)]

json_leaves = st.one_of(
    st.none(), st.booleans(), st.integers(), st.sampled_from(HUGE_NUMBERS),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20), st.sampled_from(ODD_STRINGS))
json_values = st.recursive(
    json_leaves,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10)
#: Text without lone surrogates (what a query string or a header can carry once encoded).
plain_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=24)


def dump(obj: Any) -> str:
    return json.dumps(obj, allow_nan=True)


def _dict_paths(obj: Any, path: tuple = ()) -> list[tuple]:
    """The paths of every dict inside obj (obj itself first)."""
    out = []
    if isinstance(obj, dict):
        out.append(path)
        for key, value in obj.items():
            out += _dict_paths(value, path + (key,))
    return out


def _at(obj: Any, path: tuple) -> Any:
    for key in path:
        obj = obj[key]
    return obj


@st.composite
def mutated_json(draw, template: dict, discriminator: str, names: list[str]) -> str:
    """A valid message of the dialect, mutated: fields dropped, retyped, added; the message's type changed;
    then perhaps the serialised text truncated, garbled or wrapped."""
    obj = copy.deepcopy(template)
    for _ in range(draw(st.integers(1, 3))):
        paths = _dict_paths(obj)
        if not paths:
            break
        target = _at(obj, draw(st.sampled_from(paths)))
        kind = draw(st.integers(0, 5))
        keys = list(target)
        if kind == 0 and keys:  # a field of the wrong type (or a huge or odd value)
            target[draw(st.sampled_from(keys))] = draw(json_values)
        elif kind == 1 and keys:  # a field missing
            del target[draw(st.sampled_from(keys))]
        elif kind == 2:  # an extra field
            target[draw(st.text(max_size=12))] = draw(json_values)
        elif kind == 3 and discriminator in obj:  # another or an unknown message type
            obj[discriminator] = draw(st.sampled_from(names) | st.text(max_size=16)
                                      | st.sampled_from([n.upper() for n in names]))
        elif kind == 4 and keys:  # a nested object where a value was
            target[draw(st.sampled_from(keys))] = {"nested": [draw(json_values), {"deeper": draw(json_values)}]}
        else:  # the whole message replaced by another JSON value
            obj = draw(json_values)
            break
    text = dump(obj)
    post = draw(st.integers(0, 5))
    if post == 3:  # truncated
        text = text[:draw(st.integers(0, max(0, len(text) - 1)))]
    elif post == 4:  # one character changed
        i = draw(st.integers(0, max(0, len(text) - 1)))
        text = text[:i] + draw(st.text(min_size=1, max_size=2)) + text[i + 1:]
    elif post == 5:  # wrapped in an array, or doubled
        text = draw(st.sampled_from([f"[{text}]", text + text, text + "\n", " " + text]))
    return text


@st.composite
def junk_text(draw) -> str:
    """Text frames that are no message of any dialect."""
    kind = draw(st.integers(0, 6))
    if kind == 0:
        return draw(st.text(max_size=40))
    if kind == 1:
        return dump(draw(json_values))
    if kind == 2 and "deep" not in SKIP:  # deep nesting (over Python's recursion limit, under the message limit)
        depth = draw(st.integers(1, MAX_MESSAGE_BYTES // 6))
        opener = draw(st.sampled_from(["[", '{"a":']))
        closer = "]" if opener == "[" else "}"
        return opener * depth + ("1" if opener == "[" else "1") + closer * draw(st.integers(0, depth))
    if kind == 3:
        return draw(st.sampled_from(["", " ", "null", "true", "0", "[]", "{}", '""', "{", "}", "NaN", "-Infinity",
                                     "\x00", "\ufeff{}", '{"":""}', "1" * 5000]))
    if kind == 4:  # a huge integer literal (json refuses those over 4300 digits with ValueError)
        return '{"n":' + "9" * draw(st.integers(300, 5000)) + "}"
    if kind == 5:
        return draw(st.sampled_from(SENDABLE_ODD_STRINGS))
    return dump({draw(st.text(max_size=10)): draw(json_values) for _ in range(draw(st.integers(0, 3)))})


# --- audio ------------------------------------------------------------------------------------------------

def silence(seconds: float, rate: int = 16000, width: int = 2) -> bytes:
    return b"\x00" * (int(seconds * rate) * width)


def tone(samples: int, rate: int = 16000) -> bytes:
    t = np.arange(samples) / rate
    return (np.sin(2 * np.pi * 440 * t) * 8000).astype("<i2").tobytes()


def wav_header(rate: int = 16000, channels: int = 1, bits: int = 16, tag: int = 1,
               data_size: int = 0xFFFFFFFF) -> bytes:
    block = channels * max(1, bits // 8)
    fmt = struct.pack("<HHIIHH", tag, channels, rate, (rate * block) & 0xFFFFFFFF, block, bits)
    riff_size = 0xFFFFFFFF if data_size == 0xFFFFFFFF else 36 + data_size
    return b"RIFF" + struct.pack("<I", riff_size) + b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt + \
        b"data" + struct.pack("<I", data_size)


MAGICS = [b"RIFF\x00\x00\x00\x00WAVE", b"RIFX", b"RF64", b"fLaC", b"OggS", b"ID3\x03\x00", b"\xff\xfb\x90",
          b"\xff\xf1", b"#!AMR\n", b"\x1aE\xdf\xa3", b"FORM\x00\x00\x00\x00AIFF", b"\x00\x00\x00\x18ftypM4A ",
          b"fLaC\x00\x00\x00\x22", b"OggS\x00\x02"]


@st.composite
def audio_bytes(draw, rate: int = 16000) -> bytes:
    kind = draw(st.integers(0, 5))
    if kind == 0:
        return silence(draw(st.sampled_from([0.02, 0.1, 0.25, 0.5])), rate)
    if kind == 1:
        return tone(draw(st.integers(1, 8000)), rate)
    if kind == 2:
        return draw(st.binary(max_size=2048))
    if kind == 3:  # odd lengths: half a sample, one byte
        return draw(st.binary(min_size=1, max_size=3))
    if kind == 4:  # a container's magic bytes and junk
        return draw(st.sampled_from(MAGICS)) + draw(st.binary(max_size=1024))
    return wav_header(draw(st.sampled_from([8000, 16000, 44100, 1, 0, 2**31])), draw(st.integers(0, 3)),
                      draw(st.sampled_from([8, 16, 24, 32, 0, 7])), draw(st.sampled_from([1, 3, 6, 7, 0xFFFE, 2, 0])),
                      draw(st.sampled_from([0, 0xFFFFFFFF, 3200]))) + draw(st.binary(max_size=512))


# --- frames below the WebSocket layer -------------------------------------------------------------------------

def client_frame(first: int, payload: bytes, *, length: bytes | None = None, mask: bytes | None = b"\x01\x02\x03\x04"
                 ) -> bytes:
    """A client frame as bytes: `first` is FIN, the RSV bits and the opcode; the length as RFC 6455 packs it unless
    `length` (the length bytes, mask bit clear) is given; masked with `mask`, or not masked at all with None."""
    if length is None:
        n = len(payload)
        length = (bytes([n]) if n < 126 else bytes([126]) + struct.pack(">H", n) if n < 1 << 16
                  else bytes([127]) + struct.pack(">Q", n))
    if mask is None:
        return bytes([first]) + length + payload
    return bytes([first, length[0] | 0x80]) + length[1:] + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


@st.composite
def raw_frame(draw) -> Raw:
    """A frame that breaks RFC 6455 below what any WebSocket library lets a client send: a reserved opcode, no
    mask, a reserved bit, a fragmented or over-long control frame, a length with its top bit set or not in its
    shortest form, a continuation with no message begun, text or a close reason that is not UTF-8, a bad close."""
    payload = draw(st.binary(max_size=32))
    kind = draw(st.integers(0, 11))
    if kind == 0:
        opcode = draw(st.sampled_from([0x3, 0x4, 0x5, 0x6, 0x7, 0xB, 0xC, 0xD, 0xE, 0xF]))
        return Raw(client_frame(0x80 | opcode, payload if opcode < 8 else payload[:8]), 1002, f"opcode {opcode:#x}")
    if kind == 1:
        return Raw(client_frame(draw(st.sampled_from([0x81, 0x82, 0x89])), b"ab", mask=None), 1002, "unmasked")
    if kind == 2:
        rsv = draw(st.sampled_from([0x40, 0x20, 0x10, 0x70]))
        return Raw(client_frame(0x80 | rsv | draw(st.sampled_from([0x1, 0x2, 0x9])), b""), 1002, f"rsv {rsv:#x}")
    if kind == 3:
        return Raw(client_frame(draw(st.sampled_from([0x08, 0x09, 0x0A])), payload[:8]), 1002, "fragmented control")
    if kind == 4:
        return Raw(client_frame(0x89, b"p" * draw(st.integers(126, 300))), 1002, "control over 125 bytes")
    if kind == 5:
        size = draw(st.sampled_from([1 << 63, (1 << 64) - 1, (1 << 63) + 5]))
        return Raw(client_frame(0x82, b"", length=bytes([127]) + struct.pack(">Q", size)), 1002, "length 2^63+")
    if kind == 6:
        size = draw(st.integers(0, 125))
        return Raw(client_frame(0x82, b"", length=bytes([126]) + struct.pack(">H", size)), 1002, "long length form")
    if kind == 7:
        return Raw(client_frame(draw(st.sampled_from([0x00, 0x80])), payload), 1002, "stray continuation")
    if kind == 8:
        bad = draw(st.sampled_from([b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"a\x80b"]))
        return Raw(client_frame(0x81, bad), 1007, "text not UTF-8")
    if kind == 9:
        return Raw(client_frame(0x88, struct.pack(">H", 1000) + b"\xff\xfe"), 1007, "close reason not UTF-8")
    if kind == 10:
        code = draw(st.sampled_from([0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535]))
        return Raw(client_frame(0x88, struct.pack(">H", code)), 1002, f"close code {code}")
    return Raw(client_frame(0x88, b"\x03"), 1002, "close with one byte")


#: One frame of each kind raw_frame draws, for the deterministic test of every dialect (tests/test_fuzz.py).
RAW_CASES = [
    Raw(client_frame(0x83, b"abc"), 1002, "opcode 0x3"),
    Raw(client_frame(0x8B, b""), 1002, "opcode 0xb"),
    Raw(client_frame(0x82, b"ab", mask=None), 1002, "unmasked"),
    Raw(client_frame(0xC1, b"{}"), 1002, "rsv 0x40"),
    Raw(client_frame(0x09, b"ping"), 1002, "fragmented control"),
    Raw(client_frame(0x89, b"p" * 126), 1002, "control over 125 bytes"),
    Raw(client_frame(0x82, b"", length=bytes([127]) + struct.pack(">Q", 1 << 63)), 1002, "length 2^63"),
    Raw(client_frame(0x82, b"", length=bytes([126]) + struct.pack(">H", 5)), 1002, "long length form"),
    Raw(client_frame(0x80, b"abc"), 1002, "stray continuation"),
    Raw(client_frame(0x81, b"\xff\xfe\xfd"), 1007, "text not UTF-8"),
    Raw(client_frame(0x88, struct.pack(">H", 1000) + b"\xff"), 1007, "close reason not UTF-8"),
    Raw(client_frame(0x88, struct.pack(">H", 1005)), 1002, "close code 1005"),
    Raw(client_frame(0x88, b"\x03"), 1002, "close with one byte"),
]


# --- what every dialect's sequence may hold ------------------------------------------------------------------

@st.composite
def transport_action(draw):
    """Frames any dialect may get: empty, binary junk, text junk, over-size, a ping, a pause, a frame that breaks
    RFC 6455 (rarely: it ends the connection)."""
    kind = draw(st.integers(0, 8))
    if kind == 0:
        return Pause(draw(st.sampled_from([0.0, 0.005, 0.02, 0.05])))
    if kind == 1:
        return Text("")
    if kind == 2:
        return Binary(b"")
    if kind == 3:
        return Binary(draw(audio_bytes()))
    if kind == 4:
        return Text(draw(junk_text()))
    if kind == 5 and "huge" not in SKIP:
        return Huge(draw(st.booleans()), draw(st.integers(1, 4096)))
    if kind == 6 and "ping" not in SKIP:
        return Ping(draw(st.binary(max_size=16)))
    if kind == 8 and "raw" not in SKIP:
        return draw(raw_frame())
    return Text(draw(st.text(max_size=40)))


#: Close codes a client may send (RFC 6455 §7.4: 1004-1006 and 1015 are never sent; 3000-4999 are free).
CLOSE_CODES = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 4000, 4001, 4999]


@st.composite
def ending(draw):
    kind = draw(st.integers(0, 4))
    if kind <= 1:
        return ("close", draw(st.sampled_from(CLOSE_CODES) | st.integers(3000, 4999)),
                draw(st.sampled_from(["", "bye"]) | st.text(max_size=20).filter(lambda s: len(s.encode()) <= 120)))
    if kind <= 3 or "drop" in SKIP:
        return ("wait",)
    return ("drop", draw(st.booleans()))


@st.composite
def sequence(draw, valid, start=None, end=None, extra=None, expect=None):
    """A sequence: maybe the dialect's start message first, then valid, mutated and transport frames in any
    order, maybe its end of stream, then how the client leaves."""
    actions = []
    if start is not None and draw(st.integers(0, 3)) > 0:
        actions.append(draw(start))
        if expect is not None and draw(st.integers(0, 3)) > 0:
            actions.append(Expect(expect))
    for _ in range(draw(st.integers(0, 10))):
        kind = draw(st.integers(0, 9))
        if kind <= 4:
            actions.append(draw(valid))
        elif kind <= 6 and extra is not None:
            actions.append(draw(extra))
        else:
            actions.append(draw(transport_action()))
    if end is not None and draw(st.booleans()):
        actions.append(draw(end))
    return tuple(actions), draw(ending())


def _query(params: dict[str, str]) -> str:
    return ("?" + urlencode(params, quote_via=quote)) if params else ""


@st.composite
def query_params(draw, values: dict[str, st.SearchStrategy], base: dict[str, str] | None = None,
                 most: int = 4) -> dict[str, str]:
    """Query parameters: a few of the dialect's (their strategies hold valid and bad values), now and then one
    with any text, or one the dialect does not know."""
    params = dict(base or {})
    for name in draw(st.lists(st.sampled_from(sorted(values)), max_size=most, unique=True)):
        params[name] = draw(plain_text) if draw(st.integers(0, 7)) == 7 else draw(values[name])
    if draw(st.integers(0, 7)) == 0:
        params[draw(plain_text.filter(bool))] = draw(plain_text)
    return params


@st.composite
def credential(draw) -> str | None:
    """The key the client presents: mostly the right one."""
    pick = draw(st.integers(0, 9))
    if pick <= 6:
        return API_KEY
    if pick == 7:
        return None
    if pick == 8:
        return ""
    return draw(st.sampled_from(["wrong", API_KEY.upper(), API_KEY + " ", "é"]))


# --- Speechmatics ------------------------------------------------------------------------------------------

SM_NAMES = ["StartRecognition", "AddAudio", "SetRecognitionConfig", "ForceEndOfUtterance", "EndOfStream"]


@st.composite
def sm_start(draw) -> dict:
    if draw(st.integers(0, 4)) == 0:
        audio = {"type": "file"}
    else:
        audio = {"type": "raw", "encoding": draw(st.sampled_from(["pcm_s16le", "pcm_f32le", "mulaw"])),
                 "sample_rate": draw(st.sampled_from([16000, 8000, 44100, 4000, 192000]))}
    config: dict[str, Any] = {"language": "en"}
    if draw(st.booleans()):
        config["enable_partials"] = draw(st.booleans())
    if draw(st.booleans()):
        config["max_delay"] = draw(st.sampled_from([0.7, 1, 2.5, 4]))
    if draw(st.integers(0, 3)) == 0:
        config["additional_vocab"] = ["hello", {"content": "world", "sounds_like": ["wurld"]}]
    if draw(st.integers(0, 3)) == 0:
        config["max_delay_mode"] = draw(st.sampled_from(["flexible", "fixed"]))
    if draw(st.integers(0, 3)) == 0:
        config["operating_point"] = draw(st.sampled_from(["standard", "enhanced"]))
    return {"message": "StartRecognition", "audio_format": audio, "transcription_config": config}


SM_TEMPLATES = [
    {"message": "SetRecognitionConfig", "transcription_config": {"enable_partials": True, "max_delay": 2}},
    {"message": "ForceEndOfUtterance"},
    {"message": "EndOfStream", "last_seq_no": 3},
]


@st.composite
def sm_valid(draw):
    kind = draw(st.integers(0, 5))
    if kind <= 2:
        return Binary(draw(audio_bytes()))
    if kind == 3:
        return Text(dump(draw(st.sampled_from(SM_TEMPLATES))))
    if kind == 4:
        return Text(dump(draw(sm_start())))
    return Text(dump({"message": "EndOfStream", "last_seq_no": draw(st.integers(0, 50))}))


@st.composite
def sm_mutated(draw):
    template = draw(sm_start() | st.sampled_from(SM_TEMPLATES))
    return Text(draw(mutated_json(template, "message", SM_NAMES)))


@st.composite
def sm_plan(draw) -> Plan:
    path = draw(st.sampled_from(["/v2", "/v2/", "/v2/en"]) | st.sampled_from(["/v2/fr", "/v2/EN"])
                | plain_text.filter(bool).map(lambda s: "/v2/" + quote(s, safe="")))
    key = draw(credential())
    headers, query = [], {}
    if key is not None:
        if draw(st.booleans()):
            headers.append(("Authorization", f"Bearer {key}"))
        else:
            query["jwt"] = key
    start = st.builds(lambda m: Text(dump(m)), sm_start())
    end = st.integers(0, 20).map(lambda n: Text(dump({"message": "EndOfStream", "last_seq_no": n})))
    actions, leave = draw(sequence(sm_valid(), start, end, sm_mutated(), expect="RecognitionStarted"))
    return Plan("speechmatics", path + _query(query), tuple(headers), actions, leave)


# --- VoiceRun ------------------------------------------------------------------------------------------------

VR_NAMES = ["session.update", "audio.append", "session.close"]
VR_MODELS = {"nova-3": "DEEPGRAM", "gpt-4o-transcribe": "OPENAI", "ink-whisper": "CARTESIA",
             "scribe-v2-realtime": "ELEVENLABS", "stt-rt-v4": "SONIOX"}


@st.composite
def vr_update(draw) -> dict:
    model = draw(st.sampled_from(sorted(VR_MODELS)))
    session: dict[str, Any] = {"model": model, "provider": VR_MODELS[model]}
    if draw(st.booleans()):
        session["language"] = draw(st.sampled_from(["en", "en-US", "multi"]))
    if draw(st.booleans()):
        session["input_audio_format"] = draw(st.sampled_from(["pcm16", "mulaw"]))
    if draw(st.booleans()):
        session["sample_rate"] = draw(st.sampled_from([8000, 16000, 24000, 48000]))
    if draw(st.booleans()):
        session["prompt"] = draw(st.sampled_from(["hello, world", "", "stt fuzz"]))
    return {"type": "session.update", "session": session}


@st.composite
def vr_append(draw) -> dict:
    return {"type": "audio.append", "audio": base64.b64encode(draw(audio_bytes())).decode()}


@st.composite
def vr_valid(draw):
    kind = draw(st.integers(0, 5))
    if kind <= 2:
        return Text(dump(draw(vr_append())))
    if kind == 3:
        return Text(dump(draw(vr_update())))
    if kind == 4:
        return Text('{"type":"session.close"}')
    return Text(dump({"type": "audio.append", "audio": draw(st.sampled_from(["", "=", "AAA", "AA==\n", "!!!!"]))}))


@st.composite
def vr_mutated(draw):
    template = draw(vr_update() | vr_append() | st.just({"type": "session.close"}))
    return Text(draw(mutated_json(template, "type", VR_NAMES)))


@st.composite
def vr_plan(draw) -> Plan:
    key = draw(credential())
    headers = () if key is None else (("Authorization", draw(st.sampled_from(["Bearer ", "bearer ", "Basic "])) + key),)
    start = st.builds(lambda m: Text(dump(m)), vr_update())
    actions, leave = draw(sequence(vr_valid(), start, st.just(Text('{"type":"session.close"}')), vr_mutated(),
                                   expect="session.updated"))
    return Plan("voicerun", draw(st.sampled_from(["/ws", "/ws/"])), headers, actions, leave)


# --- YourVoic ------------------------------------------------------------------------------------------------

YV_BOOL = st.sampled_from(["true", "false", "1", "0", "TRUE", "False"])
YV_PARAMS = {
    "model": st.sampled_from(["lucid-mono", "lucid-multi", "lucid-agent", "lucid-lite", "lucid"]),
    "interim_results": YV_BOOL,
    "endpointing": st.sampled_from(["10", "300", "5000", "9", "5001", "-1", "1e3", "٣٠٠"]),
    "keywords": st.sampled_from(["a,b,c", ",".join(["k"] * 101), "x" * 101, ""]),
    "language": st.sampled_from(["en", "en-US", "en_gb", "fr", "english"]),
    "punctuate": YV_BOOL,
    "smart_format": YV_BOOL,
}


@st.composite
def yv_valid(draw):
    kind = draw(st.integers(0, 4))
    if kind <= 3:
        return Binary(draw(audio_bytes()))
    return Text('{"type":"close"}')


@st.composite
def yv_mutated(draw):
    return Text(draw(mutated_json({"type": "close"}, "type", ["close", "audio", "configure", "keepalive"])))


@st.composite
def yv_plan(draw) -> Plan:
    key = draw(credential())
    params = draw(query_params(YV_PARAMS, {} if key is None else {"api_key": key}))
    actions, leave = draw(sequence(yv_valid(), None, st.just(Text('{"type":"close"}')), yv_mutated()))
    return Plan("yourvoic", "/api/v1/stt/realtime/stream" + _query(params), (), actions, leave)


# --- Scriptix --------------------------------------------------------------------------------------------------

SX_PARAMS = {
    "type": st.sampled_from(["fast", "quality", "slow"]),
    "language": st.sampled_from(["en", "en-US", "nl", ""]),
    "shape": st.sampled_from(["k", "v", "K", "x"]),
}
#: Stream-mode URLs that never leave the machine: private and loopback hosts (refused: the fuzz server does
#: not allow private URLs), bad schemes, malformed hosts and ports. No public host: nothing is reachable.
SX_URL_HOSTS = ["127.0.0.1", "10.0.0.1", "192.168.1.1", "169.254.0.1", "0.0.0.0", "[::1]", "localhost",
                "224.0.0.1", "", "@", "127.1"]
SX_URL_PORTS = ["", ":0", ":1", ":80", ":65535"]
if "badurl" not in SKIP:  # hosts and ports urllib cannot parse
    SX_URL_HOSTS += ["[", "[::1", "::1", "127.0.0.1:"]
    SX_URL_PORTS += [":65536", ":99999", ":-1", ":abc", ":"]


@st.composite
def sx_url(draw) -> str:
    if draw(st.integers(0, 4)) == 0:
        return draw(plain_text.map(lambda s: s.replace(":", "").replace("/", "")))
    scheme = draw(st.sampled_from(["http", "https", "ftp", "file", "HTTP", ""]))
    return f"{scheme}://{draw(st.sampled_from(SX_URL_HOSTS))}{draw(st.sampled_from(SX_URL_PORTS))}" \
           f"/{draw(st.sampled_from(['a.wav', 'x.m3u8', '', '%zz', '..']))}"


@st.composite
def sx_start(draw) -> dict:
    msg: dict[str, Any] = {"action": "start"}
    if draw(st.booleans()):
        msg["partial"] = draw(st.booleans())
    if draw(st.booleans()):
        msg["actual_numbers"] = draw(st.booleans())
    return msg


@st.composite
def sx_valid(draw):
    kind = draw(st.integers(0, 5))
    if kind <= 2:
        return Binary(draw(audio_bytes()))
    if kind == 3:
        return Text(dump(draw(sx_start())))
    if kind == 4:
        return Text('{"action":"stop"}')
    return Text(dump({"action": draw(st.sampled_from(["pause", "flush", "START", ""]))}))


@st.composite
def sx_mutated(draw):
    template = draw(sx_start() | st.just({"action": "stop"}) | st.just({"action": "start", "key": API_KEY}))
    return Text(draw(mutated_json(template, "action", ["start", "stop"])))


@st.composite
def sx_plan(draw) -> Plan:
    key = draw(credential())
    params = draw(query_params(SX_PARAMS))
    headers: list[tuple[str, str]] = []
    start_key = None
    if draw(st.integers(0, 4)) == 0:  # stream mode: the token in the path, the audio at a URL
        token = quote(key or "none", safe="")
        if draw(st.integers(0, 5)):
            params["url"] = draw(sx_url())
        resource = f"/v2/client/{token}" + _query(params)
        actions, leave = draw(sequence(sx_valid(), None, st.just(Text('{"action":"stop"}')), sx_mutated()))
        return Plan("scriptix", resource, (), actions, leave)
    where = draw(st.integers(0, 3))
    if key is not None:
        if where == 0:
            params["token"] = key
        elif where == 1:
            headers.append((draw(st.sampled_from(["x-zoom-s2t-key", "x-api-key", "api-key"])), key))
        else:
            start_key = key  # in the start action
    start = st.builds(lambda m: Text(dump(m if start_key is None else {**m, "key": start_key})), sx_start())
    actions, leave = draw(sequence(sx_valid(), start, st.just(Text('{"action":"stop"}')), sx_mutated(),
                                   expect="listening"))
    resource = draw(st.sampled_from(["/v2/realtime", "/v2/realtime/"])) + _query(params)
    return Plan("scriptix", resource, tuple(headers), actions, leave)


# --- V-Blaze -----------------------------------------------------------------------------------------------------

VB_BOOL = st.sampled_from(["true", "false", "1", "0", "yes", "no", "maybe"])
VB_TAGS = {
    "model": st.sampled_from(["eng1:callcenter", "eng1", "en-us:x", "fra1:callcenter", "eng1:a,eng1:b", "::"]),
    "output": st.sampled_from(["json", "jsontop", "text", "jsonlist", "xml"]),
    "utterance_fmt": st.sampled_from(["json", "jsontop", "text"]),
    "realtime": VB_BOOL,
    "outstream": VB_BOOL,
    "datahdr": st.sampled_from(["WAVE", "NONE", "none", "RIFF"]),
    "samprate": st.sampled_from(["8000", "16000", "48000", "7999", "0", "x"]),
    "sampwidth": st.sampled_from(["1", "2", "3", "4", "8", "16", "24", "32", "64", "0", "99999999"]),
    "encoding": st.sampled_from(["SPCM", "LPCM", "UPCM", "FLOAT", "ULAW", "ALAW", "MP3"]),
    "endian": st.sampled_from(["LITTLE", "BIG", "MIDDLE"]),
    "requestid": st.sampled_from(["req-1", "é", ""]),
    "punctuate": VB_BOOL,
    "numtrans": VB_BOOL,
    "scrubtext": VB_BOOL,
    "scrubconf": st.sampled_from(['[{"regex":"o","repl":"0"}]', '{"regex":"\\\\w","repl":""}', "[]", "[{}]",
                                  '[{"regex":"("}]', "not json", '[{"regex":"e","repl":5}]']),
    "outzip": st.sampled_from(["true", "false", "zip", "7z", "gz"]),
    "scrubaudio": VB_BOOL,
    "notext": VB_BOOL,
    "diarize": st.sampled_from(["false", "true", "noise"]),
    "uttmaxsilence": st.sampled_from(["100", "800", "10000", "99", "10001"]),
    "uttmaxtime": st.sampled_from(["1", "80", "150", "0", "151"]),
    "uttmaxgap": st.sampled_from(["0", "5"]),
    "vadtype": st.sampled_from(["energy", "level", "none"]),
    "activitylevel": st.sampled_from(["0", "175", "32768", "32769"]),
    "uttminactivity": st.sampled_from(["0", "500", "10001"]),
    "uttpadding": st.sampled_from(["0", "300", "5001"]),
    "insecure": VB_BOOL,
    "emotion": VB_BOOL,
    "callback": st.sampled_from(["false", "http://127.0.0.1/"]),
}


@st.composite
def vb_valid(draw):
    kind = draw(st.integers(0, 4))
    if kind <= 2:
        return Binary(draw(audio_bytes(8000)))
    if kind == 3:
        return Binary(wav_header(draw(st.sampled_from([8000, 16000])), draw(st.sampled_from([1, 2]))))
    return Binary(b"")


@st.composite
def vb_plan(draw) -> Plan:
    key = draw(credential())
    tags = draw(query_params(VB_TAGS))
    headers: list[tuple[str, str]] = []
    if key is not None:
        if draw(st.booleans()):
            tags["token"] = key
        else:
            headers.append(("X-Voci-Token", quote(key)))
    if draw(st.integers(0, 4)) == 0:  # a tag as a header too (URL-quoted value)
        name = draw(st.sampled_from(sorted(VB_TAGS)))
        headers.append((f"X-Voci-{name}", quote(draw(VB_TAGS[name]))))
    wave = tags.get("datahdr", "WAVE").upper() != "NONE"
    start = st.builds(lambda rate, channels: Binary(wav_header(rate, channels)), st.sampled_from([8000, 16000]),
                      st.sampled_from([1, 2])) if wave else None
    actions, leave = draw(sequence(vb_valid(), start, st.just(Binary(b"")), None))
    return Plan("vblaze", draw(st.sampled_from(["/transcribe", "/transcribe/"])) + _query(tags), tuple(headers),
                actions, leave)


# --- Deepgram --------------------------------------------------------------------------------------------------

DG_BOOL = st.sampled_from(["true", "false", "True", "FALSE", "1", "yes"])
DG_PARAMS = {
    "model": st.sampled_from(["nova-3", "nova-2-phonecall", "base", "enhanced-general", "flux", "Nova-3"]),
    "language": st.sampled_from(["en", "en-US", "multi", "fr", "english"]),
    "encoding": st.sampled_from(["linear16", "linear16", "mulaw", "alaw", "linear32", "flac", "opus", "speex", "mp3"]),
    "sample_rate": st.sampled_from(["16000", "16000", "8000", "48000", "7999", "0", "-1", "1e4"]),
    "channels": st.sampled_from(["1", "2", "0", "9"]),
    "multichannel": DG_BOOL,
    "interim_results": DG_BOOL,
    "endpointing": st.sampled_from(["10", "300", "false", "true", "9", "10001", "-5"]),
    "utterance_end_ms": st.sampled_from(["1000", "999", "5000", "x"]),
    "vad_events": DG_BOOL,
    "punctuate": DG_BOOL,
    "smart_format": DG_BOOL,
    "numerals": DG_BOOL,
    "keyterm": st.sampled_from(["stt", "deep gram", ""]),
    "diarize": DG_BOOL,
    "callback": st.sampled_from(["http://127.0.0.1:1/", ""]),
}
DG_NAMES = ["KeepAlive", "Finalize", "CloseStream", "Configure", "Results", "Metadata"]


@st.composite
def dg_valid(draw):
    kind = draw(st.integers(0, 6))
    if kind <= 3:
        return Binary(draw(audio_bytes()))
    if kind == 4:
        return Text(dump({"type": draw(st.sampled_from(["KeepAlive", "Finalize"]))}))
    if kind == 5:
        return Text(dump({"type": "Configure", "features": {"numerals": draw(st.booleans())}}))
    return Text('{"type":"CloseStream"}')


@st.composite
def dg_mutated(draw):
    template = draw(st.sampled_from([{"type": "KeepAlive"}, {"type": "Finalize"}, {"type": "CloseStream"},
                                     {"type": "Configure", "features": {"punctuate": True}, "keyterms": ["a"]}]))
    return Text(draw(mutated_json(template, "type", DG_NAMES)))


@st.composite
def dg_plan(draw) -> Plan:
    key = draw(credential())
    params = draw(query_params(DG_PARAMS, {"encoding": "linear16", "sample_rate": "16000"}))
    headers: tuple = ()
    if key is not None:
        scheme = draw(st.sampled_from(["Token ", "token ", "Bearer ", "Basic "]))
        headers = (("Authorization", scheme + key),)
    actions, leave = draw(sequence(dg_valid(), None, st.just(Text('{"type":"CloseStream"}')), dg_mutated()))
    return Plan("deepgram", draw(st.sampled_from(["/v1/listen", "/v1/listen/"])) + _query(params), headers,
                actions, leave)


# --- AssemblyAI ------------------------------------------------------------------------------------------------

AA_BOOL = st.sampled_from(["True", "False", "true", "false", "1", "0", "yes"])
AA_PARAMS = {
    "sample_rate": st.sampled_from(["16000", "8000", "48000", "7999", "16k", ""]),
    "encoding": st.sampled_from(["pcm_s16le", "pcm_mulaw", "opus", "PCM_S16LE"]),
    "speech_model": st.sampled_from(["universal-streaming-english", "universal-streaming-multilingual", "u3-rt-pro",
                                     "whisper-rt", "nova-3"]),
    "format_turns": AA_BOOL,
    "end_of_turn_confidence_threshold": st.sampled_from(["0.4", "0", "1", "1.5", "-0.1", "nan", "inf"]),
    "min_turn_silence": st.sampled_from(["400", "0", "160", "10001", "-5", "1.5"]),
    "max_turn_silence": st.sampled_from(["1280", "100", "10000", "x"]),
    "keyterms_prompt": st.sampled_from(['["Sonny","voice agent"]', "[]", "Sonny", '["' + "x" * 51 + '"]', "[1]",
                                        json.dumps(["k"] * 101)]),
    "inactivity_timeout": st.sampled_from(["5", "3600", "4", "3601", "30"]),
}
AA_NAMES = ["UpdateConfiguration", "ForceEndpoint", "KeepAlive", "Terminate"]
AA_TEMPLATES = [
    {"type": "UpdateConfiguration", "end_of_turn_confidence_threshold": 0.5, "min_turn_silence": 200,
     "max_turn_silence": 1000, "format_turns": True},
    {"type": "ForceEndpoint"},
    {"type": "KeepAlive"},
    {"type": "Terminate"},
]


@st.composite
def aa_valid(draw):
    kind = draw(st.integers(0, 6))
    if kind <= 2:  # 50 to 1000 ms, as the vendor requires (at 16 kHz pcm_s16le)
        return Binary(silence(draw(st.sampled_from([0.05, 0.1, 0.25, 1.0]))))
    if kind == 3:
        return Binary(tone(draw(st.integers(800, 16000))))
    if kind == 4:
        return Binary(draw(audio_bytes()))  # mostly outside 50 to 1000 ms: closed 3007
    return Text(dump(draw(st.sampled_from(AA_TEMPLATES))))


@st.composite
def aa_mutated(draw):
    return Text(draw(mutated_json(draw(st.sampled_from(AA_TEMPLATES)), "type", AA_NAMES)))


@st.composite
def aa_plan(draw) -> Plan:
    key = draw(credential())
    params = draw(query_params(AA_PARAMS, {"sample_rate": "16000"}))
    headers: list[tuple[str, str]] = []
    if key is not None:
        if draw(st.booleans()):
            headers.append(("Authorization", key))  # the raw key, no scheme
        else:
            params["token"] = key
    actions, leave = draw(sequence(aa_valid(), None, st.just(Text('{"type":"Terminate"}')), aa_mutated()))
    return Plan("assemblyai", draw(st.sampled_from(["/v3/ws", "/v3/ws/"])) + _query(params), tuple(headers),
                actions, leave)


# --- OpenAI Realtime (transcription) ---------------------------------------------------------------------------

OA_NAMES = ["session.update", "transcription_session.update", "input_audio_buffer.append",
            "input_audio_buffer.commit", "input_audio_buffer.clear", "response.create", "conversation.item.create"]


@st.composite
def oa_ga_update(draw) -> dict:
    given: dict[str, Any] = {}
    if draw(st.booleans()):
        given["format"] = draw(st.sampled_from([{"type": "audio/pcm", "rate": 24000}, {"type": "audio/pcm"},
                                                {"type": "audio/pcmu"}, {"type": "audio/pcma"},
                                                {"type": "audio/pcm", "rate": 16000}]))
    if draw(st.booleans()):
        given["transcription"] = draw(st.sampled_from([
            {"model": "gpt-4o-transcribe", "language": "en"}, {"model": "whisper-1", "prompt": "names"},
            {"model": "gpt-transcribe", "keywords": ["stt", "fuzz"]}, None, {"language": "fr"}]))
    if draw(st.booleans()):
        given["turn_detection"] = draw(st.sampled_from([
            None, {"type": "server_vad", "silence_duration_ms": 200}, {"type": "semantic_vad", "eagerness": "high"},
            {"type": "server_vad", "threshold": 0.9, "prefix_padding_ms": 0}]))
    if draw(st.integers(0, 3)) == 0:
        given["noise_reduction"] = draw(st.sampled_from([None, {"type": "near_field"}, {"type": "far_field"}]))
    session: dict[str, Any] = {"type": draw(st.sampled_from(["transcription"] * 5 + ["realtime"]))}
    if given:
        session["audio"] = {"input": given}
    if draw(st.integers(0, 3)) == 0:
        session["include"] = ["item.input_audio_transcription.logprobs"]
    return {"type": "session.update", "session": session}


@st.composite
def oa_beta_update(draw) -> dict:
    session: dict[str, Any] = {}
    if draw(st.booleans()):
        session["input_audio_format"] = draw(st.sampled_from(["pcm16", "g711_ulaw", "g711_alaw", "pcm24"]))
    if draw(st.booleans()):
        session["input_audio_transcription"] = {"model": draw(st.sampled_from(["gpt-4o-mini-transcribe",
                                                                                "whisper-1"]))}
    if draw(st.booleans()):
        session["turn_detection"] = draw(st.sampled_from([None, {"type": "server_vad"}]))
    return {"type": "transcription_session.update", "session": session}


@st.composite
def oa_append(draw) -> dict:
    return {"type": "input_audio_buffer.append", "audio": base64.b64encode(draw(audio_bytes(24000))).decode()}


@st.composite
def oa_valid(draw):
    kind = draw(st.integers(0, 7))
    if kind <= 2:
        return Text(dump(draw(oa_append())))
    if kind == 3:
        return Text(dump(draw(oa_ga_update() | oa_beta_update())))
    if kind == 4:
        return Text('{"type":"input_audio_buffer.commit"}')
    if kind == 5:
        return Text('{"type":"input_audio_buffer.clear","event_id":"evt_1"}')
    if kind == 6:
        return Text(dump({"type": "input_audio_buffer.append",
                          "audio": draw(st.sampled_from(["", "=", "AAA", "AA==\n", "!!!!"]))}))
    return Text(dump({"type": "input_audio_buffer.append", "audio": base64.b64encode(silence(0.1, 24000)).decode()}))


@st.composite
def oa_mutated(draw):
    template = draw(oa_ga_update() | oa_beta_update() | oa_append()
                    | st.sampled_from([{"type": "input_audio_buffer.commit"}, {"type": "input_audio_buffer.clear"}]))
    return Text(draw(mutated_json(template, "type", OA_NAMES)))


@st.composite
def oa_plan(draw) -> Plan:
    key = draw(credential())
    headers = [] if key is None else [("Authorization", draw(st.sampled_from(["Bearer ", "bearer ", "Basic "])) + key)]
    if draw(st.integers(0, 3)) == 0:
        headers.append(("OpenAI-Beta", "realtime=v1"))
    query = {"intent": draw(st.sampled_from(["transcription"] * 8 + ["conversation", ""]))}
    if draw(st.integers(0, 4)) == 0:
        del query["intent"]
    if draw(st.integers(0, 3)) == 0:
        query["model"] = draw(st.sampled_from(["gpt-4o-transcribe", "gpt-realtime", "whisper-1"]))
    start = st.builds(lambda m: Text(dump(m)), oa_ga_update() | oa_beta_update())
    end = st.just(Text('{"type":"input_audio_buffer.commit"}'))
    actions, leave = draw(sequence(oa_valid(), start, end, oa_mutated(), expect="updated"))
    path = draw(st.sampled_from(["/v1/realtime", "/v1/realtime/"]))
    return Plan("openai", path + _query(query), tuple(headers), actions, leave)


PLANS = {"speechmatics": sm_plan, "voicerun": vr_plan, "yourvoic": yv_plan, "scriptix": sx_plan,
         "vblaze": vb_plan, "deepgram": dg_plan, "assemblyai": aa_plan, "openai": oa_plan}


def plans(dialect: str) -> st.SearchStrategy[Plan]:
    return PLANS[dialect]()
