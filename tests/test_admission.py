"""Session limits: --max-sessions, --max-sessions-per-key (each refusal in the dialect's own words, from its
chart) and --max-session-seconds (with Speechmatics' warnings ahead); the counts never leak, however a
connection ends."""

import json
import random

import pytest
import trio
import trio.testing
import trio_websocket
from trio_websocket import ConnectionClosed, ConnectionRejected, open_websocket_url

from stt.engines.inline_host import InlineEngine
from stt.engines.scripted import ScriptedRecognizer
from stt.server import Server
from stt.session import SessionLimits
from stt.settings import ServerConfig
from tests.helpers import (connect, connect_in_memory, frames_of, running_server, silence, start_message,
                           wait_until)

def bearer(key: str) -> list[tuple[str, str]]:
    return [("Authorization", f"Bearer {key}")]


async def read_until_closed(ws) -> tuple[list, int, str]:
    """Every message until the server closes: (messages, JSON-decoded where they are JSON; close code; reason)."""
    messages = []
    try:
        while True:
            message = await ws.get_message()
            try:
                messages.append(json.loads(message))
            except ValueError:
                messages.append(message)
    except ConnectionClosed as exc:
        return messages, exc.reason.code, exc.reason.reason


async def started(ws) -> None:
    """A Speechmatics session that has started (it holds its slot until it ends)."""
    await ws.send_message(start_message())
    while json.loads(await ws.get_message())["message"] != "RecognitionStarted":
        pass


# --- the dialects' own refusals ------------------------------------------------------------------------------


async def test_speechmatics_over_the_limit_gets_quota_exceeded_and_4005_then_a_freed_slot_is_reused():
    async with running_server(max_sessions=1) as server:
        async with connect(server) as first:
            await started(first)
            assert server.admitted == 1 and not server.ready
            async with connect(server) as second:  # the upgrade succeeds; the Error comes at once
                messages, code, reason = await read_until_closed(second)
            assert messages == [{"message": "Error", "type": "quota_exceeded",
                                 "reason": "too many concurrent sessions: the server's limit of 1 concurrent "
                                           "sessions is reached"}]
            assert (code, reason) == (4005, "quota_exceeded")
            assert server.endings[("speechmatics", "busy", "SM-LIMIT-001")] == 1
            assert server.admitted == 1  # the refused one took no slot
        await wait_until(lambda: server.admitted == 0)
        assert server.ready
        async with connect(server) as third:  # the slot the first gave back
            await started(third)


async def test_the_limit_counts_sessions_of_every_dialect_together():
    async with running_server(max_sessions=2) as server:
        async with connect(server) as a, connect(server, "/ws") as b:
            await started(a)
            assert json.loads(await b.get_message())["type"] == "session.created"
            async with connect(server, "/api/v1/stt/realtime/stream") as c:
                messages, code, _ = await read_until_closed(c)
            assert messages == [{"type": "error", "code": "CONCURRENT_LIMIT",
                                 "message": "too many concurrent streams: the server's limit of 2 concurrent "
                                            "sessions is reached"}]
            assert code == 1008


async def test_voicerun_busy_is_a_server_error_and_1013_before_session_created():
    async with running_server(max_sessions=1) as server, connect(server) as holder:
        await started(holder)
        async with connect(server, "/ws") as ws:
            messages, code, _ = await read_until_closed(ws)
        assert [m["type"] for m in messages] == ["error"]
        assert messages[0]["error"]["type"] == "server_error"
        assert messages[0]["error"]["code"] == "too_many_sessions"
        assert code == 1013


async def test_scriptix_busy_is_an_error_text_and_1000():
    async with running_server(max_sessions=1) as server, connect(server) as holder:
        await started(holder)
        async with connect(server, "/v2/realtime?type=fast") as ws:
            messages, code, _ = await read_until_closed(ws)
        assert messages == [{"error": "too many sessions, try again later"}] and code == 1000
        assert server.endings[("scriptix", "busy", "SX-LIMIT-001")] == 1


async def test_vblaze_busy_is_refused_at_the_upgrade_with_503_and_a_text_body():
    async with running_server(max_sessions=1) as server, connect(server) as holder:
        await started(holder)
        with pytest.raises(ConnectionRejected) as info:
            async with open_websocket_url(f"ws://127.0.0.1:{server.port}/transcribe"):
                pass
        assert info.value.status_code == 503
        assert info.value.body.decode().startswith("no free stream (too many sessions); retry later: the server's "
                                                   "limit of 1")
        assert server.endings[("vblaze", "busy", "VB-BUSY-001")] == 1


async def test_the_per_key_limit_counts_each_key_apart():
    async with running_server(api_keys=["alpha", "beta"], max_sessions_per_key=1) as server:
        async with connect(server, headers=bearer("alpha")) as a1:
            await started(a1)
            async with connect(server, headers=bearer("alpha")) as a2:
                messages, code, _ = await read_until_closed(a2)
            assert messages[0]["type"] == "quota_exceeded" and "for this API key" in messages[0]["reason"]
            assert code == 4005
            async with connect(server, headers=bearer("beta")) as b1:  # another key: its own count
                await started(b1)
                assert sorted(server.admitted_by_key.values()) == [1, 1]
            await wait_until(lambda: list(server.admitted_by_key.values()) == [1])
        await wait_until(lambda: not server.admitted_by_key and server.admitted == 0)


async def test_an_unauthorised_client_is_told_so_not_busy_and_takes_no_slot():
    async with running_server(api_keys=["alpha"], max_sessions=1) as server, \
            connect(server, headers=bearer("alpha")) as holder:
        await started(holder)
        async with connect(server, headers=bearer("wrong")) as ws:
            messages, code, _ = await read_until_closed(ws)
        assert messages[0]["type"] == "not_authorised" and code == 4001
        assert server.admitted == 1


async def test_scriptix_key_in_the_start_message_still_takes_a_slot():
    """A Scriptix client may present its key only in its start action: it is admitted (and counted) before."""
    async with running_server(api_keys=["alpha"], max_sessions=1) as server:
        async with connect(server, "/v2/realtime") as ws:
            await ws.send_message('{"action":"start","key":"alpha"}')
            assert json.loads(await ws.get_message())["state"] == "listening"
            assert server.admitted == 1
            async with connect(server, headers=bearer("alpha")) as other:
                assert (await read_until_closed(other))[1] == 4005


# --- no leak ---------------------------------------------------------------------------------------------------


async def test_slots_come_back_however_connections_end():
    async with running_server(max_sessions=3, engine_options={"fail_at_seconds": 0.5}) as server:
        port = server.port

        async def dropped_mid_session():
            async with connect(server) as ws:
                await started(ws)
                await ws.send_message(silence(0.1))
                await ws._stream.aclose()  # the TCP connection vanishes: no close frame

        async def closed_mid_session():
            async with connect(server) as ws:
                await started(ws)
                await ws.send_message(silence(0.1))

        async def engine_failure():
            async with connect(server) as ws:
                await started(ws)
                for frame in frames_of(silence(1.0), 3200):
                    await ws.send_message(frame)
                await read_until_closed(ws)

        async def dropped_during_handshake():
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            await stream.send_all(b"GET /v2 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                                  b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
            await stream.aclose()

        async def never_finishes_the_handshake():
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            await stream.send_all(b"GET /v2 HTTP/1.1\r\n")
            await trio.sleep(0.05)
            await stream.aclose()

        async def refused():
            async with connect(server) as ws:
                with trio.move_on_after(0.2):  # refused at once, or served: then the client closes
                    await read_until_closed(ws)

        ways = [dropped_mid_session, closed_mid_session, engine_failure, dropped_during_handshake,
                never_finishes_the_handshake, refused] * 4
        random.Random(7).shuffle(ways)
        async def tolerant(way):  # with 3 slots for 24 clients, some are refused (4005) on the way: so be it
            try:
                await way()
            except ConnectionClosed as exc:
                assert exc.reason.code in (4005, 1011)

        async with trio.open_nursery() as nursery:
            for way in ways:
                nursery.start_soon(tolerant, way)
                await trio.sleep(0.005)
        await wait_until(lambda: server.connections.open == 0)
        assert server.admitted == 0 and not server.admitted_by_key and not server.sessions
        assert server.ready
        async with connect(server) as a, connect(server) as b, connect(server) as c:  # all three slots are free
            for ws in (a, b, c):
                await started(ws)


UPGRADE = (b"GET /v2 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


async def test_a_client_gone_before_the_upgrade_completes_gives_its_slot_back():
    server = in_memory_server(max_session_seconds=0, max_sessions=1)
    client_stream, server_stream = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        await client_stream.send_all(UPGRADE)
        await client_stream.aclose()  # gone before the server answers the upgrade: accepting it fails
        request = await trio_websocket.wrap_server_stream(nursery, server_stream)
        await server.handle(request)
        nursery.cancel_scope.cancel()
    assert not server.endings  # no session ran: the slot was taken before the upgrade, and given back
    assert server.admitted == 0 and server.connections.open == 0


async def test_a_connection_cancelled_from_outside_gives_its_slot_back():
    server = in_memory_server(max_session_seconds=0, max_sessions=1, api_keys=["alpha"], max_sessions_per_key=1)
    async with trio.open_nursery() as nursery:
        client_stream, server_stream = trio.testing.memory_stream_pair()
        connection = trio.CancelScope()

        async def serve_one():
            with connection:
                request = await trio_websocket.wrap_server_stream(nursery, server_stream)
                await server.handle(request)

        nursery.start_soon(serve_one)
        ws = await trio_websocket.wrap_client_stream(nursery, client_stream, "localhost", "/v2",
                                                     extra_headers=bearer("alpha"))
        await started(ws)
        assert server.admitted == 1 and len(server.admitted_by_key) == 1
        connection.cancel()  # as the server's nursery does when it stops at once
        await wait_until(lambda: server.connections.open == 0)
        nursery.cancel_scope.cancel()
    assert server.admitted == 0 and not server.admitted_by_key and not server.sessions


# --- maximum duration (virtual time) ----------------------------------------------------------------------------


def in_memory_server(**config) -> Server:
    engine = InlineEngine("scripted", 16000, ScriptedRecognizer)
    limits = SessionLimits(idle_timeout=10 ** 6, max_session_seconds=config.pop("max_session_seconds"))
    return Server(ServerConfig(limits=limits, **config), engine)


async def timed_messages(ws) -> tuple[list[tuple[float, dict]], int, str]:
    start = trio.current_time()
    messages = []
    try:
        while True:
            message = json.loads(await ws.get_message())
            messages.append((trio.current_time() - start, message))
    except ConnectionClosed as exc:
        return messages, exc.reason.code, exc.reason.reason


async def test_speechmatics_is_warned_45_30_and_15_minutes_ahead_then_timelimit_exceeded_4006(autojump_clock):
    server = in_memory_server(max_session_seconds=3600)
    async with trio.open_nursery() as nursery:
        ws = await connect_in_memory(server, nursery, "/v2")
        await started(ws)
        messages, code, reason = await timed_messages(ws)
        await wait_until(lambda: server.connections.open == 0)
        nursery.cancel_scope.cancel()
    warnings = [(round(t), m) for t, m in messages if m["message"] == "Warning"]
    assert [t for t, _ in warnings] == [900, 1800, 2700]
    assert {m["type"] for _, m in warnings} == {"session_timeout"}
    assert warnings[0][1]["reason"] == ("the session will reach its maximum duration: it will be ended in 2700 s "
                                        "(the limit is 3600 s)")
    t, error = messages[-1]
    assert round(t) == 3600 and error["message"] == "Error" and error["type"] == "timelimit_exceeded"
    assert (code, reason) == (4006, "timelimit_exceeded")
    assert server.endings[("speechmatics", "session_timeout", "SM-LIMIT-002")] == 1
    assert not server.violations  # the warnings are the server's, not rules the client broke


async def test_a_limit_shorter_than_the_warnings_gets_only_those_that_fit(autojump_clock):
    server = in_memory_server(max_session_seconds=1200)
    async with trio.open_nursery() as nursery:
        ws = await connect_in_memory(server, nursery, "/v2")
        await started(ws)
        messages, code, _ = await timed_messages(ws)
        await wait_until(lambda: server.connections.open == 0)
        nursery.cancel_scope.cancel()
    assert [(round(t), m["message"]) for t, m in messages] == [(0, "Info"), (300, "Warning"), (1200, "Error")]
    assert code == 4006


@pytest.mark.parametrize("path, last, close", [
    ("/api/v1/stt/realtime/stream", {"type": "error", "code": "SESSION_LIMIT_REACHED",
                                     "message": "maximum session duration reached: the session lasted the limit "
                                                "of 30 s"}, 1008),
    ("/v2/realtime", {"error": "maximum session duration reached"}, 1000),
    ("/ws", {"type": "error", "error": {"type": "invalid_request_error", "code": "session_expired",
                                        "message": "the session reached its maximum duration: the session lasted "
                                                   "the limit of 30 s"}}, 1008),
])
async def test_the_maximum_duration_in_each_dialects_words(autojump_clock, path, last, close):
    server = in_memory_server(max_session_seconds=30)
    async with trio.open_nursery() as nursery:
        ws = await connect_in_memory(server, nursery, path)
        if path == "/v2/realtime":
            await ws.send_message('{"action":"start"}')
        messages, code, _ = await timed_messages(ws)
        await wait_until(lambda: server.connections.open == 0)
        nursery.cancel_scope.cancel()
    t, message = messages[-1]
    assert round(t) == 30 and message == last and code == close
    assert sum(n for (_, ending, _), n in server.endings.items() if ending == "session_timeout") == 1


async def test_vblaze_maximum_duration_closes_with_the_lifecycle_code(autojump_clock):
    server = in_memory_server(max_session_seconds=30)
    async with trio.open_nursery() as nursery:
        ws = await connect_in_memory(server, nursery, "/transcribe")
        messages, code, reason = await timed_messages(ws)
        await wait_until(lambda: server.connections.open == 0)
        nursery.cancel_scope.cancel()
    assert messages == [] and (code, reason) == (1008, "maximum session duration reached")
    assert server.endings[("vblaze", "session_timeout", "LC-END-011")] == 1


async def test_a_session_that_ends_in_time_is_not_timed_out(autojump_clock):
    server = in_memory_server(max_session_seconds=60)
    async with trio.open_nursery() as nursery:
        ws = await connect_in_memory(server, nursery, "/v2")
        await started(ws)
        for frame in frames_of(silence(1.0), 3200):
            await ws.send_message(frame)
        await ws.send_message('{"message":"EndOfStream","last_seq_no":10}')
        while json.loads(await ws.get_message())["message"] != "EndOfTranscript":
            pass
        await ws.aclose()
        await wait_until(lambda: not server.sessions)
        await trio.sleep(120)
        nursery.cancel_scope.cancel()
    assert server.endings == {("speechmatics", "normal", "LC-END-001"): 1}


# --- the command line ---------------------------------------------------------------------------------------------


def test_the_limits_reach_the_server_config_from_flags_and_environment(monkeypatch):
    from stt.cli import _server_config

    config, _ = _server_config(["serve", "--max-sessions", "10", "--max-sessions-per-key", "2",
                                "--max-session-seconds", "3600"])
    assert (config.max_sessions, config.max_sessions_per_key, config.limits.max_session_seconds) == (10, 2, 3600)
    assert config.limits.idle_timeout == SessionLimits().idle_timeout  # the other limits are left as they were
    monkeypatch.setenv("STT_MAX_SESSIONS", "7")
    assert _server_config(["serve"])[0].max_sessions == 7
    monkeypatch.delenv("STT_MAX_SESSIONS")
    defaults, _ = _server_config(["serve"])
    assert (defaults.max_sessions, defaults.max_sessions_per_key, defaults.limits.max_session_seconds) == ("auto", 0, 0)


@pytest.mark.parametrize("flag", ["--max-sessions", "--max-sessions-per-key", "--max-session-seconds"])
def test_a_negative_limit_is_refused_naming_the_flag(flag):
    from stt.cli import _server_config
    from stt.config import ConfigError

    with pytest.raises(ConfigError, match=f"{flag} must be 0"):
        _server_config(["serve", flag, "-1"])


async def test_a_key_in_the_scriptix_start_action_is_counted_by_the_per_key_limit():
    """Through `stt serve`: two Scriptix sessions with one key, given in the start action, under
    --max-sessions-per-key 1. The second is ended with Scriptix's busy error when its key arrives; the first goes on;
    another key has its own count; and once the first ends, the key may be used again."""
    from tests.test_shutdown import listening_port, serve_process

    start = json.dumps({"action": "start", "key": "alpha-key"})
    async with serve_process("--api-key", "alpha-key", "--api-key", "beta-key", "--max-sessions-per-key", "1") \
            as (_, log):
        with trio.fail_after(20):
            url = f"ws://127.0.0.1:{await listening_port(log)}/v2/realtime"
            async with open_websocket_url(url) as first:
                await first.send_message(start)
                assert json.loads(await first.get_message())["state"] == "listening"
                async with open_websocket_url(url) as second:
                    await second.send_message(start)
                    messages, code, _ = await read_until_closed(second)
                assert messages == [{"error": "too many sessions, try again later"}] and code == 1000
                async with open_websocket_url(url) as other:
                    await other.send_message(json.dumps({"action": "start", "key": "beta-key"}))
                    assert json.loads(await other.get_message())["state"] == "listening"
                await first.send_message(silence(0.2))
                await first.send_message('{"action":"stop"}')
                messages, code, _ = await read_until_closed(first)
                assert messages[-1] == {"state": "stopped"} and code == 1000
            async with open_websocket_url(url) as again:
                await again.send_message(start)
                assert json.loads(await again.get_message())["state"] == "listening"
            line = await log.wait_for_json(lambda line: line.get("ending") == "busy")
            assert line["dialect"] == "scriptix" and "for this API key" in line["message"]
    assert "alpha-key" not in str(log) and "beta-key" not in str(log)


async def test_a_start_message_key_over_its_limit_gives_its_count_back():
    async with running_server(api_keys=["alpha"], max_sessions_per_key=1) as server:
        async with connect(server, "/v2/realtime") as first:
            await first.send_message('{"action":"start","key":"alpha"}')
            assert json.loads(await first.get_message())["state"] == "listening"
            for _ in range(3):
                async with connect(server, "/v2/realtime") as refused:
                    await refused.send_message('{"action":"start","key":"alpha"}')
                    assert (await read_until_closed(refused))[0] == [{"error": "too many sessions, try again later"}]
            assert list(server.admitted_by_key.values()) == [1]
        await wait_until(lambda: not server.admitted_by_key and server.admitted == 0)
# --- --max-sessions auto: the engine's capacity ----------------------------------------------------------------


def test_auto_is_the_engines_capacity_a_number_is_itself_and_0_or_an_unknown_capacity_no_limit():
    from stt.settings import session_limit

    assert [session_limit("auto", 4), session_limit("auto", None), session_limit(7, 4), session_limit(0, 4)] == \
        [4, 0, 7, 0]


def test_the_sphinx_engine_serves_0_39_cores_a_stream_at_80_percent_of_its_decoders_cores():
    from stt.engines.base import streams_for_cores
    from stt.engines.process_host import ProcessEngine

    assert [streams_for_cores(cores, 0.39) for cores in (1, 2, 4, 16)] == [2, 4, 8, 32]  # docs/engines.md: 4 on 2
    engine = ProcessEngine("stt.engines.sphinx:SphinxRecognizer", name="sphinx", sample_rate=16000, workers=1,
                           cores_per_stream=0.39)
    assert engine.capacity == 2  # nothing started: the workers start in open_process_engine
    assert ProcessEngine("x:y", name="x", sample_rate=16000, workers=1).capacity is None


async def test_by_default_the_limit_is_the_engines_capacity_and_an_engine_without_one_has_none():
    async with running_server(engine_options={"capacity": 1}) as server:
        assert server.max_sessions == 1
        async with connect(server) as first:
            await started(first)
            assert not server.ready and server.readiness() == "at the session limit (1 of 1)"
            async with connect(server) as second:
                messages, code, _ = await read_until_closed(second)
        assert messages[0]["type"] == "quota_exceeded" and "limit of 1 concurrent sessions (what the engine " \
            "serves)" in messages[0]["reason"] and code == 4005
    async with running_server() as server, connect(server) as a, connect(server) as b, connect(server) as c:
        assert server.max_sessions == 0  # the scripted engine's capacity is not known
        for ws in (a, b, c):
            await started(ws)
    async with running_server(engine_options={"capacity": 1}, max_sessions=0) as server, \
            connect(server) as a, connect(server) as b:
        for ws in (a, b):  # 0: no limit, whatever the engine says
            await started(ws)


async def test_stt_serve_with_sphinx_admits_its_capacity_says_so_at_start_up_and_refuses_the_next_busy():
    import urllib.error
    import urllib.request

    from tests.test_shutdown import listening_port, serve_process

    def readyz(port: int) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    # One decoder process (a core): 2 streams of 0.39 cores within 80 % of it; the default --max-sessions is auto.
    async with serve_process("--engine", "sphinx", "--decode-workers", "1", "--admin-port", "0") as (process, log):
        with trio.fail_after(60):
            port = await listening_port(log)
            admin = int((await log.wait_for(r"admin port on http://127\.0\.0\.1:(\d+)"))[1])
            limit = await log.wait_for_json(lambda line: line["message"].startswith("session limit"))
            assert limit["message"] == "session limit: 2 (auto: the capacity of the sphinx engine)"
            assert limit["max_sessions"] == 2
            url = f"ws://127.0.0.1:{port}/v2"
            async with open_websocket_url(url) as a, open_websocket_url(url) as b:
                await started(a)
                await started(b)
                assert await trio.to_thread.run_sync(readyz, admin) == (503, "not ready: at the session limit "
                                                                              "(2 of 2)\n")
                async with open_websocket_url(url) as c:
                    messages, code, reason = await read_until_closed(c)
                async with open_websocket_url(f"ws://127.0.0.1:{port}/ws") as voicerun:
                    refused, voicerun_code, _ = await read_until_closed(voicerun)
            assert messages == [{"message": "Error", "type": "quota_exceeded",
                                 "reason": "too many concurrent sessions: the server's limit of 2 concurrent sessions "
                                           "(what the engine serves) is reached"}]
            assert (code, reason) == (4005, "quota_exceeded")
            assert refused[0]["error"]["code"] == "too_many_sessions" and voicerun_code == 1013
            with trio.fail_after(10):
                while (await trio.to_thread.run_sync(readyz, admin))[0] != 200:  # the slots come back
                    await trio.sleep(0.1)
