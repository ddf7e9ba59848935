"""YourVoic through the server: over localhost sockets with the scripted engine (it hears "one two three four
..." one word per 0.5 s of audio, whatever the audio), and over in-memory streams with virtual time for the
periodic session_status and the 60 s idle timeout. Every error ends in the chart's code and close code, and
the server goes on serving."""

import json
from contextlib import asynccontextmanager
from urllib.parse import urlencode

import attrs
import numpy as np
import pytest
import trio
import trio.testing
from trio_websocket import ConnectionClosed, ConnectionRejected, open_websocket_url

from stt.session import SessionLimits
from tests.helpers import encode_audio, frames_of, running_server, session_pair, silence, wait_until

PATH = "/api/v1/stt/realtime/stream"


def url(server, **query) -> str:
    return f"ws://127.0.0.1:{server.port}{PATH}" + (f"?{urlencode(query)}" if query else "")


def without_status(messages: list[dict]) -> list[dict]:
    """The messages less the periodic session_status (every 5 s of wall time: a slow machine may see one)."""
    return [m for m in messages if m["type"] != "session_status"]


async def receive_all(ws, until=None) -> tuple[list[dict], int | None]:
    """Messages until one satisfies `until` (then stop) or the server closes (then also its close code)."""
    received = []
    try:
        while True:
            msg = json.loads(await ws.get_message())
            received.append(msg)
            if until is not None and until(msg):
                return received, None
    except ConnectionClosed as exc:
        return received, exc.reason.code


def transcripts(messages: list[dict]) -> list[dict]:
    return [m for m in messages if m["type"] == "transcript"]


def finals(messages: list[dict]) -> list[str]:
    return [m["text"] for m in transcripts(messages) if m["is_final"]]


async def stream(ws, data: bytes, frame_bytes: int = 640) -> None:
    for frame in frames_of(data, frame_bytes):
        await ws.send_message(frame)


async def assert_served(server) -> None:
    """The server serves a new session normally."""
    async with open_websocket_url(url(server)) as ws:
        await stream(ws, silence(1.0))
        await ws.send_message('{"type":"close"}')
        messages, code = await receive_all(ws)
    assert finals(messages) == ["One two."] and code == 1000


# --- the exchange ----------------------------------------------------------------------------------------


async def test_audio_then_close_gives_interims_finals_and_close_1000():
    async with running_server() as server:
        async with open_websocket_url(url(server, api_key="anything", model="lucid-agent")) as ws:
            await stream(ws, silence(2.2))  # no start message: audio right after the upgrade
            await ws.send_message(json.dumps({"type": "close"}))
            messages, code = await receive_all(ws)
        assert code == 1000 and ws.closed.code == 1000
        said = transcripts(messages)
        assert [(m["is_final"], m["text"]) for m in said] == [
            (False, "One"), (False, "One two"), (False, "One two three"), (False, "One two three four"),
            (True, "One two three four.")]
        final = said[-1]
        # Voice activity frames each utterance, in seconds of audio: the fifth word started at 2.0 s and was
        # cut off by the end of the audio.
        assert [(m["type"], m.get("timestamp", m.get("is_final"))) for m in without_status(messages)] == [
            ("speech_started", 0.0), *[("transcript", False)] * 4, ("transcript", True), ("speech_ended", 1.9),
            ("speech_started", 2.0), ("speech_ended", 2.2)]
        assert final["words"] == [{"word": "one", "start": 0.0, "end": 0.4}, {"word": "two", "start": 0.5, "end": 0.9},
                                  {"word": "three", "start": 1.0, "end": 1.4},
                                  {"word": "four", "start": 1.5, "end": 1.9}]
        assert (final["start"], final["end"], final["confidence"]) == (0.0, 1.9, 1.0)
        await wait_until(lambda: server.endings[("yourvoic", "normal", "LC-END-001")] == 1)
        assert not server.sessions


async def test_close_sends_the_pending_final_then_closes_1000():
    async with running_server() as server, open_websocket_url(url(server, interim_results="false")) as ws:
        await stream(ws, silence(1.2))  # "one" and "two" are heard, not yet final (four make an utterance)
        await ws.send_message('{"type":"close"}')
        await ws.send_message(silence(0.5))  # audio after close is ignored, silently
        messages, code = await receive_all(ws)
    messages = without_status(messages)
    assert [m["type"] for m in messages] == ["speech_started", "transcript", "speech_ended"]
    assert finals(messages) == ["One two."] and code == 1000
    assert (messages[0]["timestamp"], messages[2]["timestamp"]) == (0.0, 1.2)  # speech under way at the end


async def test_interim_results_false_sends_only_finals():
    async with running_server() as server, open_websocket_url(url(server, interim_results="false")) as ws:
        await stream(ws, silence(4.2))
        await ws.send_message('{"type":"close"}')
        messages, code = await receive_all(ws)
    assert all(m["is_final"] for m in transcripts(messages))
    assert finals(messages) == ["One two three four.", "Five six seven eight."] and code == 1000


async def test_smart_format_and_punctuate_shape_the_text_from_the_words():
    script = "we need twenty five chairs and one table"
    async with running_server(engine_options={"script": script, "words_per_utterance": 8}) as server:
        for query, text in [({}, "We need 25 chairs and one table."),
                            ({"smart_format": "false", "punctuate": "false"}, script)]:
            async with open_websocket_url(url(server, interim_results="0", **query)) as ws:
                await stream(ws, silence(4.0))
                await ws.send_message('{"type":"close"}')
                messages, code = await receive_all(ws)
            [final] = transcripts(messages)
            assert final["text"] == text and " ".join(w["word"] for w in final["words"]) == script


@pytest.mark.parametrize("kind", ["flac", "ogg-opus"])
async def test_flac_and_ogg_opus_are_recognised_by_their_first_bytes(kind):
    """2 s of audio in a container: the scripted engine counts 2 s of decoded samples, so four words."""
    tone = (np.sin(np.arange(32000) * 0.05) * 3000).astype(np.int16)
    if kind == "flac":
        data = encode_audio(tone, 16000, "flac", "flac")
    else:
        data = encode_audio(tone, 16000, "ogg", "libopus", codec_rate=48000, bit_rate=32000)
    async with running_server() as server, open_websocket_url(url(server, interim_results="false")) as ws:
        await stream(ws, data, frame_bytes=1000)
        await ws.send_message('{"type":"close"}')
        messages, code = await receive_all(ws)
    assert finals(messages) == ["One two three four."] and code == 1000


async def test_raw_pcm_that_is_not_a_container_is_pcm():
    """Raw audio may start with any bytes: only unmistakable magic numbers make it a container."""
    async with running_server() as server, open_websocket_url(url(server, interim_results="false")) as ws:
        await stream(ws, b"\xff\xfb" * 16000)  # an MP3 frame sync, but raw PCM here: 1 s of audio
        await ws.send_message('{"type":"close"}')
        messages, code = await receive_all(ws)
    assert finals(messages) == ["One two."] and code == 1000


# --- errors: each one the chart's code and close code; the server goes on -----------------------------------


@pytest.mark.parametrize("query, code", [
    ({"model": "nova-2"}, "INVALID_MODEL"),
    ({"language": "fr"}, "UNSUPPORTED_LANGUAGE"),
    ({"interim_results": "yes"}, "INVALID_PARAMETER"),
    ({"endpointing": "0"}, "INVALID_PARAMETER"),
])
async def test_bad_query_parameters_are_an_error_then_close_1003(query, code):
    async with running_server() as server:
        async with open_websocket_url(url(server, **query)) as ws:  # the upgrade is accepted
            messages, closed = await receive_all(ws)
        assert [(m["type"], m["code"]) for m in messages] == [("error", code)] and closed == 1003
        assert ws.closed.reason == code
        await assert_served(server)


@pytest.mark.parametrize("frame, code", [
    ("{not json", "INVALID_MESSAGE"),
    ('{"kind":"close"}', "INVALID_MESSAGE"),
    ('{"type":"KeepAlive"}', "UNKNOWN_MESSAGE_TYPE"),
])
async def test_bad_text_frames_are_an_error_then_close_1003(frame, code):
    async with running_server() as server:
        async with open_websocket_url(url(server)) as ws:
            await stream(ws, silence(0.2))
            await ws.send_message(frame)
            messages, closed = await receive_all(ws)
        assert messages[-1]["type"] == "error" and messages[-1]["code"] == code and closed == 1003
        await assert_served(server)


async def test_audio_that_does_not_decode_is_invalid_audio_1007():
    async with running_server() as server:
        async with open_websocket_url(url(server)) as ws:
            await stream(ws, b"fLaC" + bytes(range(256)) * 64, frame_bytes=4096)
            await ws.send_message('{"type":"close"}')
            messages, closed = await receive_all(ws)
        assert messages[-1]["type"] == "error" and messages[-1]["code"] == "INVALID_AUDIO" and closed == 1007
        assert "flac audio could not be decoded" in messages[-1]["message"]
        await assert_served(server)


@pytest.mark.parametrize("query", [{}, {"api_key": ""}, {"api_key": "wrong"}])
async def test_a_missing_or_wrong_api_key_is_refused_with_401_before_the_upgrade(query):
    async with running_server(api_keys=("k1", "k2")) as server:
        with pytest.raises(ConnectionRejected) as info:
            async with open_websocket_url(url(server, **query)):
                pass
        assert info.value.status_code == 401
        assert server.endings[("yourvoic", "unauthorised", "YV-AUTH-001")] == 1
        async with open_websocket_url(url(server, api_key="k2")) as ws:
            await stream(ws, silence(1.0))
            await ws.send_message('{"type":"close"}')
            messages, code = await receive_all(ws)
        assert finals(messages) == ["One two."] and code == 1000


async def test_a_client_close_without_the_close_message_is_recorded_as_such():
    async with running_server() as server:
        async with open_websocket_url(url(server)) as ws:
            await stream(ws, silence(0.5))
        await wait_until(lambda: not server.sessions)
        assert server.endings[("yourvoic", "client_closed", "LC-END-003")] == 1


# --- in memory, in virtual time ------------------------------------------------------------------------------


def yourvoic_pair(engine=None, limits=SessionLimits(), query: str = "", **config):
    """An in-memory YourVoic connection (tests.helpers.session_pair); yields (server, client websocket)."""
    return session_pair(engine, limits, path=f"{PATH}?{query}" if query else PATH, **config)


@attrs.define
class DeafStream:
    """An engine stream that hears nothing (and records what it is fed)."""

    fed: list

    async def feed(self, samples):
        self.fed.append(len(samples))
        return []

    async def flush(self):
        return []

    async def finish(self):
        return []

    async def configure(self, partials=None, max_delay=None):
        pass


@attrs.define
class DeafEngine:
    name: str = "deaf"
    sample_rate: int = 16000
    capacity: int | None = None
    fed: list = attrs.field(factory=list)
    settings: list = attrs.field(factory=list)

    @asynccontextmanager
    async def open_stream(self, settings):
        self.settings.append(settings)
        yield DeafStream(self.fed)


async def test_the_query_string_reaches_the_engine():
    engine = DeafEngine()
    query = urlencode({"endpointing": "750", "keywords": "Dashwood,Norland Park", "interim_results": "false"})
    async with yourvoic_pair(engine=engine, query=query) as (server, ws):
        await ws.send_message(silence(0.1))
        await ws.send_message('{"type":"close"}')
        messages, code = await receive_all(ws)
    [settings] = engine.settings
    assert (settings.endpointing, settings.hints, settings.partials) == (0.75, ("Dashwood", "Norland Park"), False)
    assert messages == [] and code == 1000 and sum(engine.fed) == 1600


async def test_session_status_comes_every_five_seconds(autojump_clock):
    async with yourvoic_pair(query="model=lucid-lite") as (server, ws):
        start = trio.current_time()
        await ws.send_message(silence(1.5))
        statuses = []
        while len(statuses) < 3:
            msg = json.loads(await ws.get_message())
            if msg["type"] == "session_status":
                statuses.append((round(trio.current_time() - start, 3), msg))
        await ws.send_message('{"type":"close"}')
        _, code = await receive_all(ws)
    assert [t for t, _ in statuses] == [5.0, 10.0, 15.0]
    assert all(m == {"type": "session_status", "duration": 1.5, "credits_used": 3.0, "credits_remaining": None}
               for _, m in statuses)
    assert code == 1000


async def test_no_speech_for_60_s_is_idle_timeout_1008_even_while_audio_flows(autojump_clock):
    engine = DeafEngine()
    async with yourvoic_pair(engine=engine) as (server, ws):
        start = trio.current_time()

        async def send_silence():
            try:
                while True:
                    await ws.send_message(silence(1.0))
                    await trio.sleep(1)
            except ConnectionClosed:
                pass

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send_silence)
            messages, code = await receive_all(ws, until=lambda m: m["type"] == "error")
            _, code = await receive_all(ws)
            nursery.cancel_scope.cancel()
        assert 60 <= trio.current_time() - start < 61
        assert messages[-1] == {"type": "error", "code": "IDLE_TIMEOUT",
                                "message": "idle timeout: no speech for 60 s"}
        assert code == 1008 and len(engine.fed) >= 59
        await wait_until(lambda: server.endings[("yourvoic", "idle_timeout", "YV-IDLE-001")] == 1)


async def test_a_silent_client_is_idle_after_60_s_too(autojump_clock):
    async with yourvoic_pair() as (server, ws):
        start = trio.current_time()
        messages, code = await receive_all(ws)
        assert 60 <= trio.current_time() - start < 61
        assert [m["type"] for m in messages if m["type"] != "session_status"] == ["error"]
        assert messages[-1]["code"] == "IDLE_TIMEOUT" and code == 1008


async def test_speech_keeps_the_session_alive(autojump_clock):
    async with yourvoic_pair(query="interim_results=false") as (server, ws):
        for _ in range(90):  # 90 s of audio in real time; the scripted engine hears a word every 0.5 s
            await ws.send_message(silence(1.0))
            await trio.sleep(1)
        assert server.sessions and not server.endings
        await ws.send_message('{"type":"close"}')
        messages, code = await receive_all(ws)
    assert code == 1000 and len(finals(messages)) == 45  # 180 words, four to a final


async def test_the_servers_message_idle_timeout_is_idle_timeout_too(autojump_clock):
    async with yourvoic_pair(limits=SessionLimits(idle_timeout=30)) as (server, ws):
        start = trio.current_time()
        messages, code = await receive_all(ws)
        assert 30 <= trio.current_time() - start < 31
        assert messages[-1] == {"type": "error", "code": "IDLE_TIMEOUT", "message": "idle timeout: 30 s without a message"}
        assert code == 1008
