"""Client profiles: for each dialect, what a well-behaved client sends for each client event of its chart, the
handshake it opens with, and for each server event how to see it on the wire and how to make it happen in a
sans-IO test. The catalogue (catalogue.py) walks the charts; these profiles give its cases frames.

Plain data and tiny functions, no I/O: the sans-IO tests (tests/conformance/test_catalogue.py) and the wire
runner (runner.py) read the same profile.

    profile = PROFILES["speechmatics"]
    profile.client["AddAudio"](Counter())      # -> [b"..."]: 100 ms of low noise, pcm_s16le 16 kHz
    profile.server["EndOfTranscript"].seen(frame)   # is this frame the server's EndOfTranscript?

The chart event `close` (the connection closed) is no frame: over the wire the client closes the connection;
in sans-IO the test advances the dialect's machine (`dialect.machine.advance("close")`), as the session does.
"""

from __future__ import annotations

import base64
import json
from collections import Counter
from typing import Any, Callable

import attrs
import numpy as np

from stt.dialects.base import Handshake
from stt.events import AudioFormat, Configure, EndOfTranscript, SessionStarted
from stt.statechart import Rule

Frame = str | bytes
#: client event -> the frames a well-behaved client sends for it, given how many of each client event it has
#: sent on this connection so far (Speechmatics' EndOfStream carries the count of AddAudio frames).
FrameMaker = Callable[[Counter], list[Frame]]

#: The chart event for the connection closing, which every chart has (the lifecycle ending).
CLOSE = "close"

#: 100 ms of low noise, 16-bit little-endian PCM at 16 kHz mono (what every dialect here accepts).
RATE = 16000
AUDIO_100MS: bytes = np.random.default_rng(0).integers(-8, 9, RATE // 10).astype("<i2").tobytes()


@attrs.frozen
class ServerEvent:
    """How a server event of a chart shows on the wire, and how a sans-IO test makes it happen."""

    #: Is this frame the one that shows the event? None: no frame shows it (YourVoic's end of the transcript);
    #: the server's normal close that follows does.
    seen: Callable[[Frame], bool] | None
    #: The stt.events object whose rendering fires the event in the dialect, given the Configure the client's
    #: frames (or the handshake) produced.
    make: Callable[[Configure | None], Any]


@attrs.frozen
class Profile:
    dialect: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    #: the API key -> (query parameters, headers) that present it, the dialect's way
    key: Callable[[str], tuple[dict[str, str], dict[str, str]]]
    client: dict[str, FrameMaker]
    server: dict[str, ServerEvent]
    #: The vendor's error or warning a frame carries, as `answer` names it; None for any other frame.
    problem: Callable[[Frame], str | None]
    #: What a frame breaking `rule` is answered with on the wire (compared with `problem`); None: no frame.
    answer: Callable[[Rule], str | None]
    #: The frame the server greets a new connection with (VoiceRun's session.created), if any.
    greeting: Callable[[Frame], bool] | None = None
    #: State -> the state the server moves it on to by itself (a server event): over the wire, a frame sent
    #: in such a state may be read after the move, so the answer of the next state is accepted as non-strict.
    transient: dict[str, str] = attrs.field(factory=dict)
    #: States in which the server ends the session normally by itself (after the client's end of stream).
    ending: frozenset[str] = frozenset()
    #: States the server closes the connection on entering: no client frame can be read there.
    closes_on_entry: frozenset[str] = frozenset()
    #: (state, event) -> why the case cannot be driven over the wire.
    skip: dict[tuple[str, str], str] = attrs.field(factory=dict)
    #: Transitions paths should not take to reach a state (the server fires them only in a mode the client
    #: profile does not drive): the breadth-first search uses them only when nothing else reaches the state.
    avoid: frozenset[tuple[str, str]] = frozenset()

    def handshake(self, api_key: str | None = None) -> Handshake:
        query, headers = self.credentials(api_key)
        return Handshake(self.path, query, {k.lower(): v for k, v in headers.items()})

    def credentials(self, api_key: str | None) -> tuple[dict[str, str], dict[str, str]]:
        """The query and headers of the handshake, with the key presented when one is given."""
        query, headers = dict(self.query), dict(self.headers)
        if api_key:
            more_query, more_headers = self.key(api_key)
            query.update(more_query)
            headers.update(more_headers)
        return query, headers


def _json(frame: Frame) -> Any:
    if not isinstance(frame, str):
        return None
    try:
        return json.loads(frame)
    except ValueError:
        return None


def _field(name: str, value: str) -> Callable[[Frame], bool]:
    """A predicate: the frame is a JSON object whose `name` is `value`."""

    def seen(frame: Frame) -> bool:
        msg = _json(frame)
        return isinstance(msg, dict) and msg.get(name) == value

    return seen


def _text(obj: dict) -> Callable[[Counter], list[Frame]]:
    frame = json.dumps(obj, separators=(",", ":"))
    return lambda sent: [frame]


def _audio(sent: Counter) -> list[Frame]:
    return [AUDIO_100MS]


def _bearer(key: str) -> tuple[dict, dict]:
    return {}, {"Authorization": f"Bearer {key}"}


def _in_query(name: str) -> Callable[[str], tuple[dict, dict]]:
    return lambda key: ({name: key}, {})


def _started(config: Configure | None) -> SessionStarted:
    return SessionStarted("00000000-0000-4000-8000-000000000000", config or Configure(AudioFormat("pcm_s16le", RATE)))


def _ended(config: Configure | None) -> EndOfTranscript:
    return EndOfTranscript()


# --- Speechmatics ---------------------------------------------------------------------------------------------


def _sm_problem(frame: Frame) -> str | None:
    msg = _json(frame)
    if isinstance(msg, dict) and msg.get("message") in ("Error", "Warning"):
        return msg["type"] if isinstance(msg.get("type"), str) else f"an {msg['message']} without a type"
    return None


SPEECHMATICS = Profile(
    dialect="speechmatics",
    path="/v2",
    query={},
    headers={},
    key=_bearer,
    client={
        "StartRecognition": _text({
            "message": "StartRecognition",
            "audio_format": {"type": "raw", "encoding": "pcm_s16le", "sample_rate": RATE},
            "transcription_config": {"language": "en", "enable_partials": True},
        }),
        "AddAudio": _audio,
        "SetRecognitionConfig": _text({"message": "SetRecognitionConfig", "transcription_config": {"max_delay": 2.0}}),
        "ForceEndOfUtterance": _text({"message": "ForceEndOfUtterance"}),
        "EndOfStream": lambda sent: [json.dumps({"message": "EndOfStream", "last_seq_no": sent["AddAudio"]},
                                                separators=(",", ":"))],
    },
    server={
        "RecognitionStarted": ServerEvent(_field("message", "RecognitionStarted"), _started),
        "EndOfTranscript": ServerEvent(_field("message", "EndOfTranscript"), _ended),
    },
    problem=_sm_problem,
    answer=lambda rule: rule.error or rule.warning,
    transient={"starting": "recognizing", "draining": "finished"},
    ending=frozenset({"draining", "finished"}),
)

# --- VoiceRun -----------------------------------------------------------------------------------------------


def _error_code(frame: Frame) -> str | None:
    """The error.code of {"type":"error","error":{"code",...}}: VoiceRun's error event, and OpenAI's."""
    msg = _json(frame)
    if isinstance(msg, dict) and msg.get("type") == "error":
        error = msg.get("error")
        code = error.get("code") if isinstance(error, dict) else None
        return code if isinstance(code, str) else "an error without error.code"
    return None


VOICERUN = Profile(
    dialect="voicerun",
    path="/ws",
    query={},
    headers={},
    key=_bearer,
    client={
        "session.update": _text({"type": "session.update", "session": {
            "model": "nova-3", "provider": "DEEPGRAM", "language": "en", "input_audio_format": "pcm16",
            "sample_rate": RATE}}),
        "audio.append": _text({"type": "audio.append", "audio": base64.b64encode(AUDIO_100MS).decode()}),
        "session.close": _text({"type": "session.close"}),
    },
    server={
        "session.updated": ServerEvent(_field("type", "session.updated"), _started),
        "session.closed": ServerEvent(_field("type", "session.closed"), _ended),
    },
    problem=_error_code,
    answer=lambda rule: rule.error,
    greeting=_field("type", "session.created"),
    transient={"updating": "updated", "closing": "finished"},
    ending=frozenset({"closing", "finished"}),
    closes_on_entry=frozenset({"finished"}),
)

# --- YourVoic -----------------------------------------------------------------------------------------------


def _yv_problem(frame: Frame) -> str | None:
    msg = _json(frame)
    if isinstance(msg, dict) and msg.get("type") == "error":
        return msg["code"] if isinstance(msg.get("code"), str) else "an error without a code"
    return None


YOURVOIC = Profile(
    dialect="yourvoic",
    path="/api/v1/stt/realtime/stream",
    query={"model": "lucid-agent", "interim_results": "true", "endpointing": "300"},
    headers={},
    key=_in_query("api_key"),
    client={
        "audio": _audio,
        "close_request": _text({"type": "close"}),
    },
    server={
        # Nothing follows {"type":"close"} but the finals: the end of the transcript shows as the close 1000.
        "end_of_transcript": ServerEvent(None, _ended),
    },
    problem=_yv_problem,
    answer=lambda rule: rule.error,  # YourVoic has no warning message
    transient={"draining": "finished"},
    ending=frozenset({"draining", "finished"}),
    closes_on_entry=frozenset({"finished"}),
)

# --- V-Blaze ------------------------------------------------------------------------------------------------


def _vb_transcript(frame: Frame) -> bool:
    msg = _json(frame)
    return isinstance(msg, dict) and "donedate" in msg


VBLAZE = Profile(
    dialect="vblaze",
    path="/transcribe",
    # Headerless samples keep every audio frame alike (with datahdr=WAVE the first must carry the header).
    query={"datahdr": "NONE", "samprate": str(RATE), "sampwidth": "2", "encoding": "SPCM"},
    headers={},
    key=_in_query("token"),
    client={
        "audio": _audio,
        "end_of_audio": lambda sent: [b""],
        "text": lambda sent: ['{"text":"a text frame"}'],  # no client text message exists: what breaks VB-MSG-001
    },
    server={
        "end_of_transcript": ServerEvent(_vb_transcript, _ended),
    },
    problem=lambda frame: None,  # V-Blaze has no error message on the socket: the close code says it
    answer=lambda rule: None,
    transient={"draining": "finished"},
    ending=frozenset({"draining", "finished"}),
    closes_on_entry=frozenset({"finished"}),
)

# --- Scriptix -----------------------------------------------------------------------------------------------


def _sx_problem(frame: Frame) -> str | None:
    msg = _json(frame)
    if isinstance(msg, dict) and isinstance(msg.get("error"), str):
        return msg["error"].split(": ", 1)[0]  # "<rule message>: <what was wrong>"
    return None


SCRIPTIX = Profile(
    dialect="scriptix",
    path="/v2/realtime",
    query={"type": "fast", "language": "en"},
    headers={},
    key=_in_query("token"),
    client={
        "start": _text({"action": "start"}),
        "audio": _audio,
        "stop": _text({"action": "stop"}),
    },
    server={
        "listening": ServerEvent(_field("state", "listening"), _started),
        "stopped": ServerEvent(_field("state", "stopped"), _ended),
    },
    problem=_sx_problem,
    # Scriptix puts only the text on the wire ({"error": "<message>"}); it has no warning message.
    answer=lambda rule: rule.message if rule.error else None,
    transient={"starting": "listening", "stopping": "stopped"},
    ending=frozenset({"stopping", "stopped"}),
    closes_on_entry=frozenset({"stopped"}),
    skip={("listening", "stopped"): "stream mode only (/v2/client/<token>?url=…): the server must read audio "
                                    "from a URL, which this client profile does not provide"},
    avoid=frozenset({("listening", "stopped")}),
)

# --- Deepgram -----------------------------------------------------------------------------------------------


def _dg_problem(frame: Frame) -> str | None:
    msg = _json(frame)
    if isinstance(msg, dict) and msg.get("type") == "Error":
        return msg["variant"] if isinstance(msg.get("variant"), str) else "an Error without a variant"
    if isinstance(msg, dict) and msg.get("type") == "ConfigureFailure":
        return msg["code"] if isinstance(msg.get("code"), str) else "a ConfigureFailure without a code"
    return None


DEEPGRAM = Profile(
    dialect="deepgram",
    path="/v1/listen",
    query={"model": "nova-3", "encoding": "linear16", "sample_rate": str(RATE), "interim_results": "true"},
    headers={},
    key=lambda key: ({}, {"Authorization": f"Token {key}"}),
    client={
        "audio": _audio,
        "empty_audio": lambda sent: [b""],
        "KeepAlive": _text({"type": "KeepAlive"}),
        "Finalize": _text({"type": "Finalize"}),
        "CloseStream": _text({"type": "CloseStream"}),
        "Configure": _text({"type": "Configure", "features": {"numerals": True}}),
    },
    server={
        "end_of_transcript": ServerEvent(_field("type", "Metadata"), _ended),
    },
    problem=_dg_problem,
    # A closing error is the close frame's payload (DATA-0000, NET-0001), not a message; a warning is silent.
    answer=lambda rule: None if rule.fatal else rule.error,
    transient={"closing": "finished"},
    ending=frozenset({"closing", "finished"}),
    closes_on_entry=frozenset({"finished"}),
)


# --- AssemblyAI -----------------------------------------------------------------------------------------------


ASSEMBLYAI = Profile(
    dialect="assemblyai",
    path="/v3/ws",
    query={"sample_rate": str(RATE), "encoding": "pcm_s16le", "format_turns": "True"},  # as the Python SDK writes it
    headers={},
    key=lambda key: ({}, {"Authorization": key}),  # the raw key, no scheme
    client={
        "audio": _audio,  # 100 ms: each frame must carry 50 to 1000 ms (AA-AUDIO-001)
        "UpdateConfiguration": _text({"type": "UpdateConfiguration", "end_of_turn_confidence_threshold": 0.5}),
        "ForceEndpoint": _text({"type": "ForceEndpoint"}),
        "KeepAlive": _text({"type": "KeepAlive"}),
        "Terminate": _text({"type": "Terminate"}),
    },
    server={
        "termination": ServerEvent(_field("type", "Termination"), _ended),
    },
    problem=lambda frame: None,  # AssemblyAI has no error message on the socket: the close code and reason say it
    answer=lambda rule: None,
    greeting=_field("type", "Begin"),
    transient={"terminating": "terminated"},
    ending=frozenset({"terminating", "terminated"}),
    closes_on_entry=frozenset({"terminated"}),
)

# --- OpenAI Realtime (transcription) --------------------------------------------------------------------------

#: 100 ms of low noise, PCM16 at 24 kHz (OpenAI's audio/pcm): a commit needs 100 ms at least.
OPENAI_AUDIO_100MS: bytes = np.random.default_rng(0).integers(-8, 9, 2400).astype("<i2").tobytes()


OPENAI = Profile(
    dialect="openai",
    path="/v1/realtime",
    query={"intent": "transcription"},
    headers={},
    key=_bearer,
    client={
        "session.update": _text({"type": "session.update", "session": {"type": "transcription", "audio": {"input": {
            "format": {"type": "audio/pcm", "rate": 24000}, "transcription": {"model": "gpt-4o-transcribe"},
            "turn_detection": None}}}}),
        "transcription_session.update": _text({"type": "transcription_session.update", "session": {
            "input_audio_format": "pcm16", "turn_detection": None}}),
        "input_audio_buffer.append": _text({"type": "input_audio_buffer.append",
                                            "audio": base64.b64encode(OPENAI_AUDIO_100MS).decode()}),
        "input_audio_buffer.commit": _text({"type": "input_audio_buffer.commit"}),
        "input_audio_buffer.clear": _text({"type": "input_audio_buffer.clear"}),
    },
    server={},  # the server moves the chart by no event of its own: the client alone moves it, and closes
    problem=_error_code,
    answer=lambda rule: rule.error,
    greeting=_field("type", "session.created"),
)

PROFILES: dict[str, Profile] = {p.dialect: p for p in (SPEECHMATICS, VOICERUN, YOURVOIC, VBLAZE, SCRIPTIX, DEEPGRAM,
                                                       ASSEMBLYAI, OPENAI)}
