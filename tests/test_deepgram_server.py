"""Deepgram through the server: over localhost sockets with the scripted engine (it hears "one two three four
..." one word per 0.5 s of audio), and over in-memory streams with virtual time for the 10 s NET-0001 timeout.
Every error ends in the chart's close code and payload, refusals carry dg-error, and the server goes on."""

import json
from urllib.parse import urlencode

import trio
import trio.testing
from trio_websocket import ConnectionClosed, ConnectionRejected, open_websocket_url

from stt.session import SessionLimits
from tests.helpers import running_server, session_pair, silence, wait_until

KEY = "dg-key"
QUERY = {"model": "nova-3", "encoding": "linear16", "sample_rate": "16000", "interim_results": "true"}


def url(server, **extra) -> str:
    return f"ws://127.0.0.1:{server.port}/v1/listen?" + urlencode({**QUERY, **extra})


async def receive_all(ws) -> tuple[list[dict], int, str]:
    """Every message until the server closes, and its close code and reason."""
    received = []
    try:
        while True:
            received.append(json.loads(await ws.get_message()))
    except ConnectionClosed as exc:
        return received, exc.reason.code, exc.reason.reason or ""


def final_text(messages) -> str:
    return " ".join(m["channel"]["alternatives"][0]["transcript"] for m in messages
                    if m["type"] == "Results" and m["is_final"]).strip()


async def test_a_stream_gets_interim_and_final_results_then_metadata_after_close_stream_and_a_1000():
    async with running_server() as server:
        async with open_websocket_url(url(server), extra_headers=[("Authorization", f"Token {KEY}")]) as ws:
            for _ in range(6):
                await ws.send_message(silence(0.25))
            await ws.send_message('{"type":"Finalize"}')
            await ws.send_message(silence(0.5))
            await ws.send_message('{"type":"CloseStream"}')
            with trio.fail_after(20):
                messages, code, reason = await receive_all(ws)
        assert code == 1000 and messages[-1]["type"] == "Metadata" and messages[-1]["duration"] == 2.0
        results = [m for m in messages if m["type"] == "Results"]
        assert any(not r["is_final"] for r in results)
        assert any(r["from_finalize"] for r in results)
        assert final_text(messages) == "one two three four"
        await wait_until(lambda: server.endings[("deepgram", "normal", "LC-END-001")] == 1)


async def test_a_bad_key_a_bad_option_and_a_full_server_are_refused_with_dg_error():
    async with running_server(api_keys=(KEY,), max_sessions=1) as server:
        for extra, headers, status in [({}, [("Authorization", "Token wrong")], 401),
                                       ({"encoding": "speex"}, [("Authorization", f"Token {KEY}")], 400)]:
            try:
                async with open_websocket_url(url(server, **extra), extra_headers=headers):
                    raise AssertionError("the upgrade was accepted")
            except ConnectionRejected as rejected:
                assert rejected.status_code == status
                assert dict(rejected.headers)[b"dg-error"]
        async with open_websocket_url(url(server), extra_headers=[("Authorization", f"Token {KEY}")]):
            try:
                async with open_websocket_url(url(server), extra_headers=[("Authorization", f"Token {KEY}")]):
                    raise AssertionError("a second session was admitted")
            except ConnectionRejected as rejected:
                assert rejected.status_code == 429 and b"dg-error" in dict(rejected.headers)


async def test_audio_that_does_not_decode_closes_1002_with_data_0000():
    async with running_server() as server:
        async with open_websocket_url(f"ws://127.0.0.1:{server.port}/v1/listen?model=nova-3") as ws:
            await ws.send_message(b"this is not audio in any container" * 200)
            with trio.fail_after(20):
                messages, code, reason = await receive_all(ws)
        assert (code, reason) == (1002, "DATA-0000") and messages == []


async def test_a_schema_error_is_answered_and_the_stream_goes_on():
    async with running_server() as server:
        async with open_websocket_url(url(server)) as ws:
            await ws.send_message('{"type":"Flush"}')
            error = json.loads(await ws.get_message())
            assert error["type"] == "Error" and error["variant"] == "SchemaError"
            assert error["message"] == '{"type":"Flush"}'
            await ws.send_message(silence(1.0))
            await ws.send_message('{"type":"CloseStream"}')
            messages, code, _ = await receive_all(ws)
        assert code == 1000 and final_text(messages) == "one two"


async def test_no_audio_or_keep_alive_for_10_s_closes_1011_with_net_0001(autojump_clock):
    async with session_pair(limits=SessionLimits(idle_timeout=180), path="/v1/listen?" + urlencode(QUERY)) \
            as (server, ws):
        start = trio.current_time()
        messages, code, reason = await receive_all(ws)
        assert (code, reason) == (1011, "NET-0001") and messages == []
        assert 10 <= trio.current_time() - start < 11


async def test_keep_alive_keeps_a_silent_stream_open(autojump_clock):
    async with session_pair(limits=SessionLimits(idle_timeout=180), path="/v1/listen?" + urlencode(QUERY)) \
            as (server, ws):
        for _ in range(4):
            await trio.sleep(8)
            await ws.send_message('{"type":"KeepAlive"}')
        await ws.send_message('{"type":"CloseStream"}')
        messages, code, _ = await receive_all(ws)
        assert code == 1000 and [m["type"] for m in messages] == ["Metadata"]


async def test_fault_plans_work_in_the_dialect():
    async with running_server(allow_client_faults=True) as server:
        cases = [("error=DATA-0000@0.5s", (1002, "DATA-0000")), ("close=4000@0.5s", (4000, None)),
                 ("drop@0.5s", (1006, None)), ("error=SchemaError@0.5s", (1000, None))]
        for plan, (expected_code, expected_reason) in cases:
            async with open_websocket_url(url(server, stt_fault=plan)) as ws:
                for _ in range(4):
                    await ws.send_message(silence(0.25))
                await ws.send_message('{"type":"CloseStream"}')
                with trio.fail_after(20):
                    messages, code, reason = await receive_all(ws)
            assert code == expected_code, plan
            if expected_reason:
                assert reason == expected_reason, plan
            if plan.startswith("error=SchemaError"):
                assert any(m["type"] == "Error" and m["variant"] == "SchemaError" for m in messages)
                assert messages[-1]["type"] == "Metadata"
