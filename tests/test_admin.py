"""The admin port over real localhost sockets: /healthz, /readyz (and what turns it to 503), /metrics, and the
HTTP it does not serve (other paths, other methods, oversized or slow requests)."""

import ast
import time
from contextlib import asynccontextmanager

import pytest
import trio
from trio_websocket import ConnectionRejected

import stt.admin
import stt.server
from stt.admin import open_admin
from tests.helpers import connect, running_server, start_message, wait_until


async def http(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send a raw request; read until the server closes: (status, headers with lower-case names, body)."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(request)
        data = b""
        with trio.fail_after(5):
            while chunk := await stream.receive_some():
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, value in (line.split(":", 1) for line in lines)}
    return int(status_line.split()[1]), headers, body


async def get(port: int, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    return await http(port, f"{method} {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())


async def started(ws) -> None:
    await ws.send_message(start_message())
    while '"RecognitionStarted"' not in await ws.get_message():
        pass


async def test_no_admin_port_unless_asked():
    async with running_server() as server:
        assert server.admin_port is None


async def test_healthz_readyz_and_metrics_on_a_running_server():
    async with running_server(admin_port=0) as server:
        port = server.admin_port
        assert port and port != server.port
        assert await get(port, "/healthz") == (200, {"content-type": "text/plain; charset=utf-8",
                                                     "content-length": "3", "connection": "close",
                                                     "cache-control": "no-store"}, b"ok\n")
        status, _, body = await get(port, "/readyz")
        assert (status, body) == (200, b"ready\n")
        status, headers, body = await get(port, "/metrics?name[]=stt_sessions_total")  # a query is ignored
        assert status == 200 and headers["content-type"].startswith("text/plain; version=")
        assert int(headers["content-length"]) == len(body)
        assert b"# TYPE stt_sessions_total counter" in body and b"# TYPE stt_sessions_active gauge" in body


async def test_readyz_is_503_at_the_session_limit_and_200_again_when_a_slot_frees():
    async with running_server(admin_port=0, max_sessions=1) as server:
        port = server.admin_port
        async with connect(server) as ws:
            await started(ws)
            status, _, body = await get(port, "/readyz")
            assert (status, body) == (503, b"not ready: at the session limit (1 of 1)\n")
            assert (await get(port, "/healthz"))[0] == 200  # alive all the same
        await wait_until(lambda: server.admitted == 0)
        assert (await get(port, "/readyz"))[0] == 200


async def test_readyz_is_503_once_the_server_stops_accepting():
    async with running_server(admin_port=0) as server:
        assert server.accepting and server.ready
        server.stop_accepting(closing_at=time.time() + 30)  # what a graceful shutdown does first
        assert not server.accepting and not server.ready
        status, _, body = await get(server.admin_port, "/readyz")
        assert (status, body) == (503, b"not ready: shutting down\n")
        assert (await get(server.admin_port, "/healthz"))[0] == 200


async def test_the_admin_port_answers_while_the_engine_loads(monkeypatch):
    """The admin port opens before the engine: /healthz is 200 and /readyz 503 until the server is up."""
    loaded = trio.Event()
    admins = []
    real_open_engine, real_open_admin = stt.server.open_engine, stt.server.open_admin

    @asynccontextmanager
    async def slow_engine(*args, **kwargs):
        await loaded.wait()
        async with real_open_engine(*args, **kwargs) as engine:
            yield engine

    @asynccontextmanager
    async def recorded_admin(*args):
        async with real_open_admin(*args) as admin:
            admins.append(admin)
            yield admin

    monkeypatch.setattr(stt.server, "open_engine", slow_engine)
    monkeypatch.setattr(stt.server, "open_admin", recorded_admin)
    async with trio.open_nursery() as nursery:
        up = trio.Event()

        async def serve():
            async with running_server(admin_port=0) as server:
                assert server.admin_port == admins[0].port
                up.set()
                await trio.sleep_forever()

        nursery.start_soon(serve)
        await wait_until(lambda: admins)
        port = admins[0].port
        assert (await get(port, "/healthz"))[0::2] == (200, b"ok\n")
        assert (await get(port, "/readyz"))[0::2] == (503, b"not ready: the engine is loading\n")
        assert (await get(port, "/metrics"))[0] == 503
        loaded.set()
        await up.wait()
        assert (await get(port, "/readyz"))[0::2] == (200, b"ready\n")
        nursery.cancel_scope.cancel()


async def test_each_server_has_its_own_metrics():
    async with running_server(admin_port=0) as a, running_server(admin_port=0) as b:
        with pytest.raises(ConnectionRejected):
            async with connect(a, "/nowhere"):
                pass
        series = b'stt_connections_rejected_total{dialect="none",reason="no_dialect"} 1.0'
        assert series in (await get(a.admin_port, "/metrics"))[2]
        assert series not in (await get(b.admin_port, "/metrics"))[2]


async def test_the_admin_port_answers_from_the_two_callables_it_is_given_and_needs_no_server():
    """stt.admin knows nothing of stt.server: it answers /readyz and /metrics from what `serve` hands it."""
    why: list[str | None] = ["draining for a test"]
    async with open_admin("127.0.0.1", 0) as admin:
        assert (await get(admin.port, "/readyz"))[0::2] == (503, b"not ready: the engine is loading\n")
        admin.serve(lambda: why[0], lambda: (b"a_metric 1.0\n", "text/plain; version=0.0.4"))
        assert (await get(admin.port, "/readyz"))[0::2] == (503, b"not ready: draining for a test\n")
        why[0] = None
        assert (await get(admin.port, "/readyz"))[0::2] == (200, b"ready\n")
        status, headers, body = await get(admin.port, "/metrics")
        assert (status, headers["content-type"], body) == (200, "text/plain; version=0.0.4", b"a_metric 1.0\n")
    tree = ast.parse(open(stt.admin.__file__).read())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | {
        f"{n.module}.{a.name}" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names} | {
        a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert "stt.server" not in imported, imported  # not even under TYPE_CHECKING

@pytest.mark.parametrize("request_bytes, status", [
    (b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n", 404),
    (b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 405),
    (b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 30000\r\n\r\n" + b"x" * 30000, 405),
    (b"DELETE /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 405),
    (b"this is not http\r\n\r\n", 400),
    (b"GET /healthz HTTP/1.1\r\n\r\n", 400),  # HTTP/1.1 needs a Host header
    (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n", 431),
])
async def test_what_the_admin_port_does_not_serve(request_bytes, status):
    async with open_admin("127.0.0.1", 0) as admin:
        got, headers, _ = await http(admin.port, request_bytes)
        assert got == status
        if status == 405:
            assert headers["allow"] == "GET, HEAD"
        assert (await get(admin.port, "/healthz"))[0] == 200  # and it goes on serving


async def test_head_has_the_headers_of_get_and_no_body():
    async with running_server(admin_port=0) as server:
        _, get_headers, body = await get(server.admin_port, "/healthz")
        status, headers, head_body = await get(server.admin_port, "/healthz", method="HEAD")
        assert status == 200 and headers == get_headers and head_body == b"" and body == b"ok\n"


async def test_a_client_that_does_not_finish_its_request_is_closed(monkeypatch):
    monkeypatch.setattr(stt.admin, "REQUEST_TIMEOUT", 0.2)
    async with open_admin("127.0.0.1", 0) as admin:
        stream = await trio.open_tcp_stream("127.0.0.1", admin.port)
        async with stream:
            await stream.send_all(b"GET /healthz HTTP/1.1\r\n")
            started = trio.current_time()
            with trio.fail_after(5):
                assert await stream.receive_some() == b""  # closed, with no answer
            assert trio.current_time() - started < 2
        assert (await get(admin.port, "/healthz"))[0] == 200


async def test_many_clients_at_once():
    async with running_server(admin_port=0) as server:
        statuses = []

        async def one():
            statuses.append((await get(server.admin_port, "/metrics"))[0])

        async with trio.open_nursery() as nursery:
            for _ in range(50):
                nursery.start_soon(one)
        assert statuses == [200] * 50


def test_the_admin_flags_reach_the_server_config():
    from stt.cli import _server_config
    from stt.config import ConfigError

    config, _ = _server_config(["serve", "--admin-port", "9100", "--admin-host", "0.0.0.0"])
    assert (config.admin_host, config.admin_port) == ("0.0.0.0", 9100)
    assert _server_config(["serve"])[0].admin_port is None
    with pytest.raises(ConfigError, match="--admin-port must be between 0 and 65535"):
        _server_config(["serve", "--admin-port", "70000"])
    with pytest.raises(ConfigError, match="--admin-port cannot be used with --workers above 1"):
        _server_config(["serve", "--admin-port", "9100", "--workers", "2"])
