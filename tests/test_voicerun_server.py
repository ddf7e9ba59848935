"""VoiceRun over real localhost sockets with the scripted engine (one word per 0.5 s of audio, a final every 4
words): the whole exchange in order, the 4001 refusal, and every error with its code and close code while the
server goes on serving."""

import base64
import json

import pytest
from trio_websocket import ConnectionClosed

from stt.session import SessionLimits
from tests.helpers import connect, frames_of, running_server, silence, wait_until

UPDATE = {"model": "nova-3", "provider": "DEEPGRAM", "language": "en", "input_audio_format": "pcm16",
          "sample_rate": 16000}
CLOSE = '{"type":"session.close"}'


def update(**session) -> str:
    return json.dumps({"type": "session.update", "session": {**UPDATE, **session}})


def append(data: bytes) -> str:
    return json.dumps({"type": "audio.append", "audio": base64.b64encode(data).decode()})


async def stream(ws, audio: bytes, chunk: int = 640) -> None:
    """Audio in 20 ms audio.append messages (640 bytes of PCM16 at 16 kHz)."""
    for data in frames_of(audio, chunk):
        await ws.send_message(append(data))


async def receive(ws, until: str | None = None) -> tuple[list[dict], int | None, str | None]:
    """Messages until one of type `until` (then stop) or the server closes (then its close code and reason)."""
    received = []
    try:
        while True:
            msg = json.loads(await ws.get_message())
            received.append(msg)
            if msg["type"] == until:
                return received, None, None
    except ConnectionClosed as exc:
        return received, exc.reason.code, exc.reason.reason


def types(messages: list[dict]) -> list[str]:
    return [m["type"] for m in messages]


def without_speech(messages: list[dict]) -> list[dict]:
    return [m for m in messages if m["type"] not in ("speech.started", "speech.stopped")]


async def start(ws, **session) -> list[dict]:
    created, _, _ = await receive(ws, until="session.created")
    await ws.send_message(update(**session))
    updated, _, _ = await receive(ws, until="session.updated")
    return created + updated


async def served(server) -> None:
    """The server still serves: a new session gets session.created and session.updated."""
    async with connect(server, "/ws") as ws:
        assert types(await start(ws)) == ["session.created", "session.updated"]


async def test_full_exchange_in_order_and_the_server_closes_1000():
    async with running_server() as server:
        async with connect(server, "/ws") as ws:
            created, _, _ = await receive(ws, until="session.created")
            assert len(created) == 1 and created[0]["session"]["id"].startswith("ts_")
            await ws.send_message(update(prompt="one, two"))
            updated, _, _ = await receive(ws, until="session.updated")
            assert updated == [{"type": "session.updated", "session": {**UPDATE, "prompt": "one, two"}}]
            await stream(ws, silence(2.0))
            await ws.send_message(CLOSE)
            messages, code, reason = await receive(ws)
        assert code == 1000
        assert without_speech(messages) == [
            {"type": "transcription.partial", "text": "one"},
            {"type": "transcription.partial", "text": "one two"},
            {"type": "transcription.partial", "text": "one two three"},
            {"type": "transcription.partial", "text": "one two three four"},
            {"type": "transcription.completed", "text": "one two three four"},
            {"type": "session.closed"},
        ]
        # Voice activity brackets the utterance: started before its first partial, stopped after its final.
        kinds = types(messages)
        assert kinds.count("speech.started") == kinds.count("speech.stopped") == 1
        assert kinds.index("speech.started") < kinds.index("transcription.partial")
        assert kinds.index("transcription.completed") < kinds.index("speech.stopped") < kinds.index("session.closed")
        assert all(set(m) == ({"type"} if m["type"].startswith("s") else {"type", "text"}) for m in messages)
        await wait_until(lambda: server.endings[("voicerun", "normal", "LC-END-001")] == 1)
        assert not server.sessions


async def test_two_utterances_each_with_its_own_speech_events():
    async with running_server() as server, connect(server, "/ws") as ws:
        await start(ws)
        await stream(ws, silence(4.0))
        await ws.send_message(CLOSE)
        messages, code, _ = await receive(ws)
    assert code == 1000
    completed = [m["text"] for m in messages if m["type"] == "transcription.completed"]
    assert completed == ["one two three four", "five six seven eight"]
    # Each utterance: speech.started, its partials, its completed, speech.stopped.
    utterances, current = [], None
    for m in messages:
        if m["type"] == "speech.started":
            assert current is None
            current = []
        elif m["type"] == "speech.stopped":
            utterances.append(current)
            current = None
        elif m["type"].startswith("transcription."):
            assert current is not None, "a transcription outside speech.started/speech.stopped"
            current.append(m)
    assert [u[-1] for u in utterances] == [{"type": "transcription.completed", "text": t} for t in completed]
    assert all(m["type"] == "transcription.partial" for u in utterances for m in u[:-1])


async def test_pipelined_client_update_audio_and_close_without_waiting():
    """Audio that follows a valid session.update before session.updated arrives is accepted, in order."""
    async with running_server() as server, connect(server, "/ws") as ws:
        await ws.send_message(update())
        await stream(ws, silence(2.0))
        await ws.send_message(CLOSE)
        messages, code, _ = await receive(ws)
    assert types(messages)[:2] == ["session.created", "session.updated"] and code == 1000
    assert [m["text"] for m in messages if m["type"] == "transcription.completed"] == ["one two three four"]
    assert types(messages)[-1] == "session.closed"


async def test_a_later_session_update_is_echoed_in_order_and_the_stream_goes_on():
    async with running_server() as server, connect(server, "/ws") as ws:
        await start(ws)
        await stream(ws, silence(1.0))
        await ws.send_message(update(prompt="premium", model="flux-general-en"))
        await stream(ws, silence(1.0))
        await ws.send_message(CLOSE)
        messages, code, _ = await receive(ws)
    messages = without_speech(messages)
    assert types(messages) == ["transcription.partial", "transcription.partial", "session.updated",
                               "transcription.partial", "transcription.partial", "transcription.completed",
                               "session.closed"]
    assert messages[2]["session"] == {**UPDATE, "model": "flux-general-en", "prompt": "premium"}
    assert code == 1000


async def test_mulaw_8k_is_resampled_to_the_engine_rate():
    async with running_server() as server, connect(server, "/ws") as ws:
        [_, updated] = await start(ws, input_audio_format="mulaw", sample_rate=8000)
        assert updated["session"]["input_audio_format"] == "mulaw" and updated["session"]["sample_rate"] == 8000
        await stream(ws, b"\xff" * 16000, chunk=160)  # 2 s of µ-law silence at 8 kHz, 20 ms per message
        await ws.send_message(CLOSE)
        messages, code, _ = await receive(ws)
    # the scripted engine counts 2 s of 16 kHz samples: four words
    assert [m["text"] for m in messages if m["type"] == "transcription.completed"] == ["one two three four"]
    assert code == 1000


async def test_session_close_before_configuration_answers_session_closed_and_1000():
    async with running_server() as server:
        async with connect(server, "/ws") as ws:
            await receive(ws, until="session.created")
            await ws.send_message(CLOSE)
            messages, code, _ = await receive(ws)
        assert messages == [{"type": "session.closed"}] and code == 1000
        await served(server)


# --- keys --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("headers", [[], [("Authorization", "Bearer wrong")], [("Authorization", "k1")]])
async def test_a_missing_or_wrong_key_closes_4001_unauthorized_before_any_message(headers):
    async with running_server(api_keys=("k1", "k2")) as server:
        async with connect(server, "/ws", headers) as ws:
            messages, code, reason = await receive(ws)
        assert messages == [] and (code, reason) == (4001, "Unauthorized")
        await wait_until(lambda: server.endings[("voicerun", "unauthorised", "VR-AUTH-001")] == 1)
        async with connect(server, "/ws", [("Authorization", "Bearer k2")]) as ws:
            assert types(await start(ws)) == ["session.created", "session.updated"]


async def test_without_configured_keys_anyone_is_served():
    async with running_server() as server, connect(server, "/ws", [("Authorization", "Bearer any")]) as ws:
        assert types(await start(ws)) == ["session.created", "session.updated"]


# --- errors ------------------------------------------------------------------------------------------------

BAD_JSON = "{not json"


@pytest.mark.parametrize(
    "configured, frame, code, close",
    [
        (False, append(b"\x00\x00"), "session_not_configured", 1008),
        (False, BAD_JSON, "invalid_json", 1003),
        (True, BAD_JSON, "invalid_json", 1003),
        (True, '{"audio":"AAAA"}', "missing_type", 1003),
        (True, b"\x00\x00" * 320, "binary_not_supported", 1003),
        (True, '{"type":"audio.append","audio":"AA!A"}', "invalid_audio", 1007),
        (True, '{"type":"audio.append"}', "invalid_audio", 1007),
    ],
)
async def test_fatal_errors_get_their_error_event_and_close_code(configured, frame, code, close):
    async with running_server() as server:
        async with connect(server, "/ws") as ws:
            head = await start(ws) if configured else (await receive(ws, until="session.created"))[0]
            await ws.send_message(frame)
            messages, closed, reason = await receive(ws)
        assert types(head + messages)[0] == "session.created"
        assert messages[-1]["type"] == "error" and messages[-1]["error"]["code"] == code
        assert messages[-1]["error"]["type"] == "invalid_request_error"
        assert (closed, reason) == (close, code)
        await served(server)


@pytest.mark.parametrize(
    "bad, code",
    [
        (update(model="whisper-1"), "unsupported_model"),
        (update(provider="OPENAI"), "unsupported_model"),
        (update(language="fr"), "unsupported_language"),
        (update(input_audio_format="opus"), "invalid_audio_format"),
        (update(sample_rate=100), "invalid_audio_format"),
        (json.dumps({"type": "session.update", "session": {"model": "nova-3"}}), "invalid_config"),
        ('{"type":"response.create"}', "unknown_event"),
    ],
)
async def test_a_bad_first_update_or_unknown_type_is_an_error_and_the_session_goes_on(bad, code):
    async with running_server() as server, connect(server, "/ws") as ws:
        await receive(ws, until="session.created")
        await ws.send_message(bad)
        [error], _, _ = await receive(ws, until="error")
        assert error["error"]["code"] == code and error["error"]["type"] == "invalid_request_error"
        await ws.send_message(update())
        [updated], _, _ = await receive(ws, until="session.updated")
        assert updated["session"] == UPDATE
        await stream(ws, silence(2.0))
        await ws.send_message(CLOSE)
        messages, closed, _ = await receive(ws)
        assert [m["text"] for m in messages if m["type"] == "transcription.completed"] == ["one two three four"]
        assert closed == 1000


async def test_a_later_update_cannot_change_the_sample_rate():
    async with running_server() as server, connect(server, "/ws") as ws:
        await start(ws)
        await ws.send_message(update(sample_rate=8000))
        [error], _, _ = await receive(ws, until="error")
        assert error["error"]["code"] == "immutable_field" and "16000" in error["error"]["message"]
        await stream(ws, silence(2.0))  # still 16 kHz
        await ws.send_message(CLOSE)
        messages, closed, _ = await receive(ws)
        assert [m["text"] for m in messages if m["type"] == "transcription.completed"] == ["one two three four"]
        assert closed == 1000


async def test_audio_and_a_second_close_after_session_close_are_ignored():
    async with running_server() as server, connect(server, "/ws") as ws:
        await start(ws)
        await stream(ws, silence(1.0))
        await ws.send_message(CLOSE)
        await ws.send_message(append(silence(1.0)))
        await ws.send_message(CLOSE)
        messages, closed, _ = await receive(ws)
    # The errors race the end of the session: each one comes before session.closed or not at all.
    assert closed == 1000 and types(messages)[-1] == "session.closed"
    assert {m["error"]["code"] for m in messages if m["type"] == "error"} <= {"session_closing"}
    # The audio after session.close was not transcribed: 1 s is two words.
    assert [m["text"] for m in messages if m["type"] == "transcription.completed"] == ["one two"]


async def test_idle_client_gets_an_idle_timeout_error_and_1008():
    async with running_server(limits=SessionLimits(idle_timeout=0.3)) as server:
        async with connect(server, "/ws") as ws:
            await start(ws)
            messages, closed, reason = await receive(ws)
        assert messages[-1]["error"]["code"] == "idle_timeout" and (closed, reason) == (1008, "idle_timeout")
        await served(server)


async def test_a_failing_recognizer_is_a_server_error_1011_and_only_ends_its_session():
    async with running_server(engine_options={"fail_at_seconds": 0.5}) as server:
        async with connect(server, "/ws") as ws:
            await start(ws)
            await stream(ws, silence(1.0))
            messages, closed, _ = await receive(ws)
        assert messages[-1] == {"type": "error", "error": {
            "type": "server_error", "code": "internal_error", "message": "internal error: recognizer failed: RuntimeError"}}
        assert closed == 1011
        await served(server)


async def test_an_oversized_message_closes_1009_without_an_error_event():
    async with running_server(limits=SessionLimits(max_message_bytes=10_000)) as server:
        async with connect(server, "/ws") as ws:
            await start(ws)
            await ws.send_message(append(silence(1.0)))  # 42 kB of base64
            messages, closed, _ = await receive(ws)
        assert closed == 1009 and "error" not in types(messages)
        await served(server)
