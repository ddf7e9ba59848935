"""The openai dialect over a real socket, with the scripted engine: the GA and beta exchanges as a client written from
OpenAI's reference sees them, and the fault plans of stt.faults (docs/faults.md) in the dialect's own words."""

import base64
import json

import trio
from trio_websocket import ConnectionClosed, ConnectionRejected, open_websocket_url

from stt.session import SessionLimits
from tests.helpers import running_server, wait_until

PATH = "/v1/realtime?intent=transcription"
SECOND = bytes(48000)  # a second of PCM16 at 24 kHz (the scripted engine hears its script whatever the audio)
COMPLETED = "conversation.item.input_audio_transcription.completed"


def append(data: bytes) -> str:
    return json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(data).decode()})


async def until(ws, kind: str, timeout: float = 10) -> list[dict]:
    """Events up to and including the first of `kind`."""
    out = []
    with trio.fail_after(timeout):
        while not out or out[-1]["type"] != kind:
            out.append(json.loads(await ws.get_message()))
    return out


async def until_closed(ws, timeout: float = 10) -> tuple[list[dict], int]:
    out = []
    with trio.fail_after(timeout):
        try:
            while True:
                out.append(json.loads(await ws.get_message()))
        except ConnectionClosed as exc:
            return out, exc.reason.code


async def test_ga_manual_commit_and_the_client_closing_end_the_session():
    async with running_server() as server:
        async with open_websocket_url(f"ws://127.0.0.1:{server.port}{PATH}") as ws:
            assert json.loads(await ws.get_message())["type"] == "session.created"
            await ws.send_message(json.dumps({"type": "session.update", "session": {
                "type": "transcription", "audio": {"input": {"turn_detection": None}}}}))
            assert json.loads(await ws.get_message())["type"] == "session.updated"
            for _ in range(2):
                await ws.send_message(append(SECOND))
            await ws.send_message('{"type":"input_audio_buffer.commit"}')
            events = await until(ws, COMPLETED)
        assert [e["type"] for e in events] == ["input_audio_buffer.committed",
                                               "conversation.item.input_audio_transcription.delta", COMPLETED]
        assert events[-1]["transcript"] == "one two three four"  # 2 s of the script, half a second a word
        await wait_until(lambda: server.endings[("openai", "normal", "LC-END-001")] == 1)


async def test_beta_server_vad_items_come_by_themselves():
    async with running_server() as server:
        async with open_websocket_url(f"ws://127.0.0.1:{server.port}{PATH}",
                                      extra_headers=[("OpenAI-Beta", "realtime=v1")]) as ws:
            assert json.loads(await ws.get_message())["type"] == "transcription_session.created"
            for _ in range(3):
                await ws.send_message(append(SECOND))
            events = await until(ws, "input_audio_buffer.speech_stopped")
    kinds = [e["type"] for e in events]
    assert kinds[0] == "input_audio_buffer.speech_started" and "input_audio_buffer.committed" in kinds
    (completed,) = [e for e in events if e["type"] == COMPLETED]
    assert completed["transcript"] == "one two three four"
    assert {e["item_id"] for e in events} == {completed["item_id"]}


async def test_a_bad_key_and_another_intent_are_refused_at_the_upgrade():
    async with running_server(api_keys=("sk-good",)) as server:
        for path, headers, status in [(PATH, [("Authorization", "Bearer sk-bad")], 401),
                                      ("/v1/realtime?intent=conversation", [("Authorization", "Bearer sk-good")], 400)]:
            try:
                async with open_websocket_url(f"ws://127.0.0.1:{server.port}{path}", extra_headers=headers):
                    raise AssertionError("upgraded")
            except ConnectionRejected as exc:
                assert exc.status_code == status


# --- faults (stt.faults; docs/faults.md) ----------------------------------------------------------------------


def faulty(faults: str):
    return f"{PATH}&stt_fault={faults.replace('=', '%3D').replace('@', '%40')}"


async def test_faults_send_the_dialects_error_or_close_or_drop_after_that_much_audio():
    async with running_server(limits=SessionLimits(close_grace=0.2), allow_client_faults=True) as server:
        # A fatal error of the chart: the vendor's error event, then its close code.
        async with open_websocket_url(f"ws://127.0.0.1:{server.port}{faulty('error=rate_limit_exceeded')}") as ws:
            events, code = await until_closed(ws)
        assert [(e["type"], e["error"]["code"]) for e in events[-1:]] == [("error", "rate_limit_exceeded")]
        assert code == 1013 and events[-1]["event_id"]
        # A non-fatal error after 0.5 s of audio: sent, and the session goes on.
        async with open_websocket_url(
                f"ws://127.0.0.1:{server.port}{faulty('error=input_audio_buffer_commit_empty@0.5s')}") as ws:
            await ws.send_message(append(SECOND))
            events = await until(ws, "error")
            await ws.send_message('{"type":"input_audio_buffer.commit"}')
            events += await until(ws, COMPLETED)
        assert events[-1]["transcript"]
        # close=CODE@T and drop@T.
        for plan, expected in [("close=4000@0.5s", 4000), ("drop@0.5s", 1006)]:
            async with open_websocket_url(f"ws://127.0.0.1:{server.port}{faulty(plan)}") as ws:
                try:
                    await ws.send_message(append(SECOND))
                except ConnectionClosed:
                    pass
                _, code = await until_closed(ws)
            assert code == expected, plan
        await wait_until(lambda: server.endings[("openai", "fault", "FAULT-DROP")] == 1)
