"""The admin port (`stt serve --admin-port`): plain HTTP/1.1, unauthenticated, for probes and scrapers.

    GET /healthz   200 while the process runs
    GET /readyz    200 when the engine is loaded and the server is accepting sessions; 503 (the body says why)
                   while the engine loads, at the session limit (--max-sessions), or shutting down
    GET /metrics   the server's metrics in the Prometheus text format (stt/metrics.py); 503 while the engine loads

One request per connection, then the server closes it. GET and HEAD only (405 otherwise), 404 for other
paths, requests larger than MAX_REQUEST_BYTES refused (431), and a connection that has not sent its whole
request within REQUEST_TIMEOUT seconds is closed. HTTP parsing is h11's (python-hyper, sans-IO: the library
wsproto, hence trio-websocket, is built on), so this module only routes.
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from typing import AsyncIterator, Callable

import h11
import trio

log = logging.getLogger("stt.admin")

MAX_REQUEST_BYTES = 8192  # request line and headers
REQUEST_TIMEOUT = 10.0  # seconds to receive the request and send the answer
_TEXT = "text/plain; charset=utf-8"


class Admin:
    """The admin routes, answered from the server once there is one (the port opens before the engine loads):
    `serve` gives them what they read from it."""

    def __init__(self):
        #: Why the server would not take a new session now, or None when it would (the server's readiness)
        self.readiness: Callable[[], str | None] | None = None  # None: no server yet, the engine is loading
        #: The server's metrics in the Prometheus text format, and its content type
        self.metrics: Callable[[], tuple[bytes, str]] | None = None
        self.port: int | None = None  # the bound port, when the admin port is open

    def serve(self, readiness: Callable[[], str | None], metrics: Callable[[], tuple[bytes, str]]) -> None:
        """Answer /readyz from `readiness` and /metrics from `metrics` from now on (the server is up)."""
        self.readiness, self.metrics = readiness, metrics

    def respond(self, method: str, target: str) -> tuple[int, str, bytes]:
        """(status, content type, body) for a request."""
        path = target.split("?", 1)[0]
        if path not in ("/healthz", "/readyz", "/metrics"):
            return 404, _TEXT, f"not found: {path}; try /healthz, /readyz or /metrics\n".encode()
        if method not in ("GET", "HEAD"):
            return 405, _TEXT, b"only GET (and HEAD)\n"
        if path == "/healthz":
            return 200, _TEXT, b"ok\n"
        if path == "/readyz":
            why = "the engine is loading" if self.readiness is None else self.readiness()
            return (200, _TEXT, b"ready\n") if why is None else (503, _TEXT, f"not ready: {why}\n".encode())
        if self.metrics is None:
            return 503, _TEXT, b"the engine is loading\n"
        body, content_type = self.metrics()
        return 200, content_type, body


async def handle_connection(stream: trio.abc.Stream, admin: Admin) -> None:
    """One request on `stream`, answered, then the stream closed. Nothing a client sends raises."""
    async with stream:
        try:
            with trio.move_on_after(REQUEST_TIMEOUT):
                await _exchange(stream, admin)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client went away
        except Exception:  # a bug here must not take the admin port down
            log.exception("admin request failed")


async def _exchange(stream: trio.abc.Stream, admin: Admin) -> None:
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST_BYTES)
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                status = exc.error_status_hint
                await _send(stream, conn, status, _TEXT, f"{h11_reason(status)}: {exc}\n".encode(), head=False)
                await _linger(stream)
            return
        if event is h11.NEED_DATA:
            conn.receive_data(await stream.receive_some(MAX_REQUEST_BYTES))  # b"" at EOF: h11 sees the end
        elif isinstance(event, h11.Request):
            method, target = event.method.decode("ascii", "replace"), event.target.decode("ascii", "replace")
            status, content_type, body = admin.respond(method, target)
            await _send(stream, conn, status, content_type, body, head=method == "HEAD")
            if method not in ("GET", "HEAD"):
                await _linger(stream)  # a body it may have sent is not read
            return
        else:  # ConnectionClosed, or anything h11 may add
            return


async def _send(stream, conn: h11.Connection, status: int, content_type: str, body: bytes, *, head: bool) -> None:
    headers = [("content-type", content_type), ("content-length", str(len(body))), ("connection", "close"),
               ("cache-control", "no-store")]
    if status == 405:
        headers.append(("allow", "GET, HEAD"))
    data = conn.send(h11.Response(status_code=status, headers=headers, reason=h11_reason(status)))
    if not head:  # a HEAD answer has the headers of the GET one and no body
        data += conn.send(h11.Data(data=body))
    data += conn.send(h11.EndOfMessage())
    await stream.send_all(data)


async def _linger(stream) -> None:
    """After answering a request that was not read to its end: stop sending, and read (a bounded amount, for a
    bounded time) what the client still sends, so that closing with unread data does not reset the connection
    before the client reads the answer."""
    try:
        await stream.send_eof()
    except (AttributeError, trio.BrokenResourceError, trio.ClosedResourceError):
        return
    with trio.move_on_after(1.0):
        left = 16 * MAX_REQUEST_BYTES
        while left > 0 and (chunk := await stream.receive_some(MAX_REQUEST_BYTES)):
            left -= len(chunk)


def h11_reason(status: int) -> str:
    return {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            431: "Request Header Fields Too Large", 503: "Service Unavailable"}.get(status, "")


@asynccontextmanager
async def open_admin(host: str, port: int | None) -> AsyncIterator[Admin]:
    """Serve the admin routes on host:port until the block exits (port None: none; 0: a free port, then in
    `admin.port`). Call `admin.serve` once the server exists."""
    admin = Admin()
    if port is None:
        yield admin
        return
    listeners = await trio.open_tcp_listeners(port, host=host)
    admin.port = listeners[0].socket.getsockname()[1]
    log.info("admin port on http://%s:%d (/healthz, /readyz, /metrics)", host, admin.port,
             extra={"admin_url": f"http://{host}:{admin.port}"})
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: trio.serve_listeners(lambda stream: handle_connection(stream, admin), listeners))
        try:
            yield admin
        finally:
            nursery.cancel_scope.cancel()


__all__ = ["MAX_REQUEST_BYTES", "REQUEST_TIMEOUT", "Admin", "handle_connection", "open_admin"]
