"""The vendor's own client, unmodified: the assemblyai SDK's StreamingClient (assemblyai.streaming.v3) against a real
`stt serve` subprocess on 127.0.0.1 (api_host="ws://127.0.0.1:PORT"), on real speech with the sphinx engine.

The SDK validates every Begin and Turn with pydantic, and its reader thread dies silently on a mismatch (no more
events, then disconnect sits out its 5 s): so every result type arriving, and Termination before the SDK's
5 s terminate timeout, is the schema test. Its booleans reach the query string as True/False."""

from __future__ import annotations

import json
import threading
import time
import wave
from urllib.parse import urlencode

import numpy as np
import pytest
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from stt.dialects.assemblyai import AssemblyAIDialect
from stt.dialects.base import Handshake
from stt.engines.base import StreamSettings
from stt.events import Final
from tests.helpers import DATA
from tests.serve_process import stt_serve

v3 = pytest.importorskip("assemblyai.streaming.v3")

API_KEY = "aai-test-key"
RATE = 16000
CHUNK = 3200  # 100 ms of pcm_s16le at 16 kHz: each frame must carry 50 to 1000 ms
SDK_TIMEOUT = 30.0  # seconds one SDK session may take in all


def pcm16(name: str) -> bytes:
    with wave.open(str(DATA / name)) as f:
        assert (f.getnchannels(), f.getsampwidth(), f.getframerate()) == (1, 2, RATE)
        return f.readframes(f.getnframes())


def chunks(audio: bytes, size: int = CHUNK) -> list[bytes]:
    """100 ms frames; the last, padded with silence to 50 ms at least, so that no frame breaks the 50 ms rule."""
    out = [audio[i:i + size] for i in range(0, len(audio), size)]
    if out and len(out[-1]) < size // 2:
        out[-1] += bytes(size // 2 - len(out[-1]))
    return out


class Session:
    """One StreamingClient session: every event its handlers got, in order, as (name, event)."""

    def __init__(self, port: int, api_key: str = API_KEY, **params):
        self.events: list[tuple[str, object]] = []
        self.done = threading.Event()
        self.client = v3.StreamingClient(v3.StreamingClientOptions(api_key=api_key, api_host=f"ws://127.0.0.1:{port}"))
        for kind in (v3.StreamingEvents.Begin, v3.StreamingEvents.Turn, v3.StreamingEvents.Termination,
                     v3.StreamingEvents.SpeechStarted, v3.StreamingEvents.Error):
            self.client.on(kind, lambda client, event, name=kind.name: self._got(name, event))
        self.params = v3.StreamingParameters(**{"sample_rate": RATE, "format_turns": True, **params})

    def _got(self, name: str, event) -> None:
        self.events.append((name, event))
        if name in ("Termination", "Error"):
            self.done.set()

    def of(self, name: str) -> list:
        return [event for kind, event in self.events if kind == name]

    def run(self, frames: list[bytes], *, between=None) -> float:
        """connect, stream the frames (calling between(client) halfway), disconnect(terminate=True); the seconds
        from Terminate to the end."""
        started = time.monotonic()
        self.client.connect(self.params)
        half = len(frames) // 2
        self.client.stream(frames[:half])
        if between is not None:
            between(self.client)
        self.client.stream(frames[half:])
        terminated = time.monotonic()
        self.client.disconnect(terminate=True)
        assert time.monotonic() - started < SDK_TIMEOUT
        return time.monotonic() - terminated


def batch_transcript(audio: bytes, query: dict) -> str:
    """The same engine, in this process, on the whole recording at once, with the settings the dialect gives it."""
    from stt.engines.sphinx import SphinxRecognizer

    [configure] = AssemblyAIDialect(Handshake("/v3/ws", {k: str(v) for k, v in query.items()})).on_open()
    recognizer = SphinxRecognizer(StreamSettings(configure.language, False, configure.max_delay, configure.endpointing,
                                                 configure.hints))
    try:
        results = recognizer.feed(np.frombuffer(audio, dtype="<i2")) + recognizer.finish()
    finally:
        recognizer.close()
    return " ".join(w.text for r in results if isinstance(r, Final) for w in r.words)


@pytest.fixture(scope="module")
def sphinx_server():
    with stt_serve("--engine", "sphinx", "--decode-workers", "1", "--api-key", API_KEY) as server:
        yield server


def raw_close(port: int, query: dict, frames: list[bytes | str] = ()) -> tuple[list[dict], int, str]:
    """A plain WebSocket client: the messages it read, and the close code and reason."""
    async def main():
        received = []
        async with open_websocket_url(f"ws://127.0.0.1:{port}/v3/ws?{urlencode(query)}",
                                      extra_headers=[("Authorization", API_KEY)]) as ws:
            with trio.fail_after(10):
                try:
                    for frame in frames:
                        await ws.send_message(frame)
                    while True:
                        received.append(json.loads(await ws.get_message()))
                except ConnectionClosed as exc:
                    return received, exc.reason.code, exc.reason.reason
    return trio.run(main)


# --- a whole session ------------------------------------------------------------------------------------------


def test_the_sdk_transcribes_real_speech_with_every_result_type_and_ends_cleanly(sphinx_server):
    audio = pcm16("ps_goforward.wav")
    session = Session(sphinx_server["port"])
    waited = session.run(chunks(audio))
    assert session.done.is_set() and waited < 5.0, "Termination did not come within the SDK's terminate timeout"
    kinds = [kind for kind, _ in session.events]
    assert kinds[0] == "Begin" and kinds[-1] == "Termination" and "Error" not in kinds, kinds
    [begin] = session.of("Begin")
    assert begin.id and begin.expires_at.timestamp() > time.time() + 3600
    turns = session.of("Turn")
    partial = [t for t in turns if not t.end_of_turn]
    ends = [t for t in turns if t.end_of_turn and not t.turn_is_formatted]
    formatted = [t for t in turns if t.end_of_turn and t.turn_is_formatted]
    assert partial and any(not w.word_is_final for t in partial for w in t.words)
    assert ends and len(formatted) == len(ends)
    assert [t.turn_order for t in ends] == list(range(len(ends)))
    transcript = " ".join(t.transcript for t in ends if t.transcript)
    assert transcript == batch_transcript(audio, {"sample_rate": RATE, "format_turns": True})
    assert transcript.startswith("go forward ten ")  # the engine's own words (it hears "years" for "meters")
    shown = " ".join(t.transcript for t in formatted if t.transcript)  # numbers as digits, capitalised, a period
    assert shown == "Go forward 10 " + transcript.split()[-1] + "."
    assert all(w.word_is_final for t in ends for w in t.words)
    assert ends[-1].words[-1].end <= len(audio) / (2 * RATE) * 1000 + 60  # word times in ms
    assert session.of("SpeechStarted")
    [termination] = session.of("Termination")
    assert termination.audio_duration_seconds == round(len(audio) / (2 * RATE))


def test_force_endpoint_ends_the_turn_and_update_configuration_is_accepted(sphinx_server):
    audio = pcm16("ps_goforward.wav")
    session = Session(sphinx_server["port"], format_turns=False)

    def midway(client):
        client.set_params(v3.StreamingSessionParameters(format_turns=True, end_of_turn_confidence_threshold=0.5))
        client.keep_alive()
        client.force_endpoint()

    session.run(chunks(audio), between=midway)
    kinds = [kind for kind, _ in session.events]
    assert kinds[0] == "Begin" and kinds[-1] == "Termination" and "Error" not in kinds, kinds
    turns = session.of("Turn")
    assert any(t.end_of_turn for t in turns) and any(t.turn_is_formatted for t in turns)


# --- refusals, the vendor's way ---------------------------------------------------------------------------------


def test_a_bad_key_is_closed_1008_with_the_vendors_reason_before_begin(sphinx_server):
    session = Session(sphinx_server["port"], api_key="wrong")
    session.client.connect(session.params)
    assert session.done.wait(10)
    session.client.disconnect()
    [error] = session.of("Error")
    assert error.code == 1008 and str(error) == "Unauthorized Connection: Missing Authorization header"
    assert not session.of("Begin")


def test_a_bad_query_parameter_is_closed_3006_after_the_upgrade(sphinx_server):
    session = Session(sphinx_server["port"], end_of_turn_confidence_threshold=2.0)
    session.client.connect(session.params)
    assert session.done.wait(10)
    session.client.disconnect()
    [error] = session.of("Error")
    assert error.code == 3006 and str(error) == "Input validation error"  # the SDK's own text for 3006
    assert not session.of("Begin")
    received, code, reason = raw_close(sphinx_server["port"], {"sample_rate": 16000, "encoding": "opus"})
    assert received == [] and code == 3006
    assert reason == "Invalid Query Parameter: encoding must be pcm_s16le or pcm_mulaw, not 'opus'"


def test_a_frame_shorter_than_50_ms_is_closed_3007(sphinx_server):
    session = Session(sphinx_server["port"])
    session.client.connect(session.params)
    session.client.stream(bytes(960))  # 30 ms
    assert session.done.wait(10)
    session.client.disconnect()
    [error] = session.of("Error")
    assert error.code == 3007 and str(error) == "Audio chunk duration violation"
    received, code, reason = raw_close(sphinx_server["port"], {"sample_rate": 16000}, [bytes(960)])
    assert [m["type"] for m in received] == ["Begin"] and code == 3007
    assert reason == "Input duration violation: 30 ms. Expected between 50 and 1000 ms"


# --- faults (stt/faults.py), as the SDK sees them ----------------------------------------------------------------


@pytest.mark.parametrize("plan, code, text", [
    ("error=AA-LIMIT-002@1s", 3008, "Session expired: maximum session duration exceeded"),
    ("close=3005@1s", 3005, "Server error"),
    ("drop@1s", 1006, None),
])
def test_injected_faults_reach_the_sdk_as_the_vendors_closes(plan, code, text):
    with stt_serve("--engine", "scripted", "--fault", plan) as server:
        session = Session(server["port"])
        session.run(chunks(bytes(2 * RATE * 3)))  # 3 s of silence
        assert session.done.is_set()
        [error] = session.of("Error")
        assert error.code == code
        if text is not None:
            assert str(error) == text
        assert session.of("Begin") and not session.of("Termination")
