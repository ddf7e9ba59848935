"""The connection below the sessions: trio-websocket and wsproto as the server uses them (their fixes for
trio-websocket 0.12's issue #184, the internal-error answers, the Close 1002/1007 of a frame that breaks
RFC 6455), the handshake's bounds (HandshakeLimits, PendingHandshakes), the answer to a request that is no
WebSocket upgrade, the TCP listeners (SO_REUSEPORT for serve_workers) and TLS (tls_context)."""

from __future__ import annotations

import collections
import logging
import math
import socket
import ssl
import time
from contextlib import contextmanager
from typing import Awaitable, Callable, Iterator, Protocol

import attrs
import h11
import trio
import trio_websocket
from trio_websocket import ConnectionClosed
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import CloseConnection
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from stt import __version__
from stt.dialects import DIALECT_PATHS
from stt.metrics import Metrics
from stt.statechart import load_chart

log = logging.getLogger("stt.server")  # the logger these lines have always had, which operators filter on


def open_file_limit() -> int:
    """This process's soft limit on open file descriptors (RLIMIT_NOFILE), or 1024 where it cannot be read."""
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):
        return 1024
    return soft if 0 < soft < 1 << 20 else 1 << 20


#: Defaults sized for this machine: a quarter of the open-file limit for connections still in their handshake
#: (at most 1024), so that sessions, the engine and the log keep the rest; a sixteenth of that for one address.
DEFAULT_MAX_PENDING_HANDSHAKES = max(16, min(1024, open_file_limit() // 4))
DEFAULT_MAX_PENDING_PER_ADDRESS = max(4, DEFAULT_MAX_PENDING_HANDSHAKES // 16)
DEFAULT_HANDSHAKE_TIMEOUT = 10.0


@attrs.frozen
class HandshakeLimits:
    """What a connection may hold before its WebSocket upgrade is done (the TLS handshake, the HTTP request):
    `timeout` seconds in all; at most `max_pending` such connections at once, `max_pending_per_address` from one
    client address. 0 for either count: no limit. A connection over a count is answered 503 and closed at once."""

    timeout: float = DEFAULT_HANDSHAKE_TIMEOUT
    max_pending: int = DEFAULT_MAX_PENDING_HANDSHAKES
    max_pending_per_address: int = DEFAULT_MAX_PENDING_PER_ADDRESS


class PendingHandshakes:
    """The connections of one server still in their handshake, in all and by client address (bounded: an address
    is dropped once it has none), checked against HandshakeLimits."""

    def __init__(self, limits: HandshakeLimits):
        self.limits = limits
        self.open = 0
        self.by_address: collections.Counter[str | None] = collections.Counter()

    def refusal(self, address: str | None) -> str | None:
        """Why a new connection from `address` may not begin its handshake now, or None."""
        if self.limits.max_pending and self.open >= self.limits.max_pending:
            return f"the server's limit of {self.limits.max_pending} pending handshakes is reached"
        per_address = self.limits.max_pending_per_address
        if per_address and address is not None and self.by_address[address] >= per_address:
            return f"the limit of {per_address} pending handshakes from one address is reached"
        return None

    @contextmanager
    def pending(self, address: str | None) -> Iterator[Callable[[], None]]:
        """Count one connection from `address` until the block exits or the yielded `done()` is called."""
        self.open += 1
        self.by_address[address] += 1
        counted = True

        def done() -> None:
            nonlocal counted
            if counted:
                counted = False
                self.open -= 1
                self.by_address[address] -= 1
                if self.by_address[address] <= 0:
                    del self.by_address[address]
        try:
            yield done
        finally:
            done()


#: Seconds a closing connection has to finish its close handshake (trio-websocket's default). The time a client
#: has for its upgrade request is HandshakeLimits.timeout (--handshake-timeout).
CLOSE_TIMEOUT = 60.0
LINGER_TIMEOUT = 2.0  # seconds to read what a client still sends after the close, before the socket closes


@attrs.frozen
class PlainRequest:
    """An HTTP request that is no WebSocket upgrade (a browser's GET), for the server's pages (`PageHandler`)."""

    method: str
    target: str  # the path and query, as sent
    headers: dict[str, str]  # names in lower case; a repeated header keeps its last value

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]


#: What answers plain HTTP requests on the WebSocket port (the explorer: stt.explorer), given the request and the
#: connection's stream, which it answers and may hold open (a Server-Sent Events feed): True if it answered,
#: False to leave the request to the server's own answer (426 and what this server is). Never raises.
PageHandler = Callable[[PlainRequest, trio.abc.Stream], Awaitable[bool]]


class Pages(Protocol):
    """Pages served over plain HTTP on the WebSocket port (stt.explorer.Explorer): where they start, and the
    handler that answers them."""

    path: str  # "/explore": what the start-up block shows

    async def respond(self, request: PlainRequest, stream: trio.abc.Stream) -> bool: ...


class _ServerWSConnection(WSConnection):
    """wsproto's server connection, which keeps for serve_stream the HTTP answer to a request that is no
    WebSocket upgrade (`refusal`: status, body), instead of the bare 400 trio-websocket would send for it, and
    the request itself (`plain_request`), for the server's pages."""

    refusal: tuple[int, str] | None = None
    plain_request: PlainRequest | None = None

    def __init__(self, connection_type: ConnectionType):
        super().__init__(connection_type)
        process = self.handshake._process_connection_request

        def keep_request(event: h11.Request):  # wsproto's check of an upgrade request, which raises for a plain one
            self.plain_request = PlainRequest(
                event.method.decode("ascii", "replace"), event.target.decode("ascii", "replace"),
                {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in event.headers})
            return process(event)

        self.handshake._process_connection_request = keep_request

    def receive_data(self, data: bytes | None) -> None:
        if self.connection is not None:
            return super().receive_data(data)
        try:
            super().receive_data(data)
        except RemoteProtocolError as exc:
            self.refusal = _handshake_refusal(self.handshake, str(exc))
            raise RemoteProtocolError(str(exc), event_hint=None) from None  # serve_stream answers it


def _handshake_refusal(handshake, problem: str) -> tuple[int, str]:
    """The HTTP answer to a request that is no WebSocket upgrade: a plain HTTP request (a browser, curl, a
    health check on the wrong port) is told what this server is (426 Upgrade Required); an upgrade missing a
    header, or bytes that are no HTTP request, get 400 and what was wrong."""
    h11_state = handshake._h11_connection.their_state
    if problem == "Bad HTTP message" or h11_state is h11.ERROR:
        return 400, f"not an HTTP request ({problem}); {server_description()}"
    if problem.startswith(("Missing header, 'Connection: Upgrade'", "Missing header, 'Upgrade",
                           "Request method must be GET")):
        return 426, server_description()
    return 400, f"bad WebSocket upgrade: {problem}"


def server_description() -> str:
    """What a plain HTTP request to the WebSocket port is told: what this server is and where to go."""
    return (f"stt {__version__}: a real-time speech-to-text server; it speaks WebSocket only (ws:// or wss://). "
            f"{DIALECT_PATHS} Docs: docs/README.md of the stt source, and `stt serve --help`. Health and metrics "
            f"are on the admin port (--admin-port: /healthz, /readyz, /metrics).\n")


class _ServerConnection(trio_websocket.WebSocketConnection):
    """trio-websocket's connection, less what makes wsproto raise once the server has sent its close frame
    (trio-websocket 0.12, its issue #184): a ping is answered only while the connection is open, and a message
    over the size limit that arrives after the close frame is dropped, not answered with a second close. And it
    leaves the socket open after the close handshake: serve_stream closes it, gently (_linger), once the
    connection's tasks are done.

    Two more: a connection whose reader stops before a request came (the client closed, or sent no HTTP) says
    so at once (_get_request returns None) where trio-websocket waits for the handshake timeout; and a frame
    that breaks RFC 6455 (wsproto reports it as a CloseConnection the client never sent) is answered with a
    Close 1002, or 1007 for text that is not UTF-8 (RFC 6455 §7.1.7), and kept in `protocol_error`, so that the
    session counts it as the client's protocol error rather than as the client's close."""

    protocol_error: tuple[int, str] | None = None  # (close code, what was wrong), once a frame broke RFC 6455

    async def _reader_task(self) -> None:
        try:
            await super()._reader_task()
        finally:
            proposal = self._connection_proposal
            if proposal is not None and not proposal._value_event.is_set():
                proposal.set_value(None)  # no request will come: _get_request returns None

    async def _handle_close_connection_event(self, event) -> None:
        if self._wsproto.state is not ConnectionState.OPEN:  # a close frame, or a bad frame once we closed
            await super()._handle_close_connection_event(event)
            return
        # wsproto's ParseFailed: the state is still OPEN, where a close frame would have made it REMOTE_CLOSING.
        code = 1007 if event.code == 1007 else 1002
        self.protocol_error = (code, event.reason or "")
        reason = load_chart("lifecycle").ending("invalid_utf8" if code == 1007 else "protocol_error").message
        self._close_reason = trio_websocket.CloseReason(code, reason)  # what the session sees; sends stop now
        # Shielded: the session, seeing the connection closed, may end and cancel this task before the frame is
        # out (the writer may hold the stream's lock with a frame of its own).
        with trio.CancelScope(shield=True), trio.move_on_after(LINGER_TIMEOUT):
            try:
                await self._send(CloseConnection(code=code, reason=reason))
            except ConnectionClosed:
                pass
        await self._close_web_socket(code, reason)
        self._close_handshake.set()
        self._reader_running = False

    async def _close_stream(self) -> None:
        self._reader_running = False  # what trio-websocket's own does, before it closes the socket at once

    async def _handle_ping_event(self, event) -> None:
        if self._wsproto.state == ConnectionState.OPEN:
            await super()._handle_ping_event(event)

    async def _handle_message_event(self, event) -> None:
        if self._wsproto.state != ConnectionState.OPEN:
            self._message_size, self._message_parts = 0, []  # the session is over: nothing reads it
            return
        await super()._handle_message_event(event)


async def _accept_stream(nursery: trio.Nursery, stream: trio.abc.Stream, max_message_bytes: int,
                         connection: _ServerConnection | None = None):
    """trio_websocket.wrap_server_stream, with _ServerConnection: the request, or None when the client closed
    or sent something that is no WebSocket upgrade (then `connection._wsproto.refusal` says what to answer)."""
    connection = connection or _new_connection(stream, max_message_bytes)
    nursery.start_soon(connection._reader_task)
    return await connection._get_request()


def _new_connection(stream: trio.abc.Stream, max_message_bytes: int) -> _ServerConnection:
    return _ServerConnection(stream, _ServerWSConnection(ConnectionType.SERVER), max_message_size=max_message_bytes)


async def serve_stream(handle, max_message_bytes: int, stream: trio.abc.Stream, *,
                        handshakes: PendingHandshakes | None = None, metrics: Metrics | None = None,
                        pages: PageHandler | None = None) -> None:
    """One TCP (or TLS) connection: the WebSocket handshake, then `handle(request)`. What
    trio_websocket.WebSocketServer does per connection, with these differences (trio-websocket 0.12, its issue
    #184): a failure in the connection's own reader task ends this connection, not the server (wsproto refused
    to answer a ping or an oversized frame once the server had begun to close, which _ServerConnection now
    avoids); the reader task is cancelled once the connection is done, where trio-websocket may leave it
    waiting forever to deliver a message that nobody will read (a client that went away while the server was
    closing); and the handshake is bounded (`handshakes`: its time, and how many are pending at once, in all
    and from one address): a connection over a count is answered 503, one that is too slow 408, a request that
    is no WebSocket upgrade its answer (426 and what this server is, or 400), and one that closes during the
    handshake is let go at once. A plain HTTP request (no upgrade) goes to `pages` first, where one is given:
    it no longer counts as a pending handshake once `pages` has it. A failure of the server's own ends the connection as an internal error: an
    HTTP 500 before the upgrade, a Close 1011 after (Server.handle's own failures: Server._failed)."""
    handshakes = handshakes if handshakes is not None else PendingHandshakes(HandshakeLimits())
    metrics = metrics if metrics is not None else Metrics()
    address = _peer_address(stream)
    refusal = handshakes.refusal(address)
    if refusal is not None:
        log.info("connection from %s refused (503): %s", address, refusal, extra={"reason": "pending_handshakes"})
        metrics.reject("none", "pending_handshakes")
        try:
            await _answer(stream, 503, f"too many connections waiting for their handshake: {refusal}; "
                                       "try again later\n", linger=0.5)
        finally:
            await trio.aclose_forcefully(stream)
        return
    connection = _new_connection(stream, max_message_bytes)
    answer: tuple[int, str] | None = None
    try:
        with handshakes.pending(address) as handshake_done:
            async with trio.open_nursery() as nursery:
                request = None
                with trio.move_on_after(handshakes.limits.timeout) as waiting:
                    request = await _accept_stream(nursery, stream, max_message_bytes, connection)
                if waiting.cancelled_caught:
                    log.info("connection from %s: no WebSocket upgrade within %g s: 408", address,
                             handshakes.limits.timeout, extra={"reason": "handshake_timeout"})
                    metrics.reject("none", "handshake_timeout")
                    answer = 408, f"no WebSocket upgrade request within {handshakes.limits.timeout:g} s\n"
                elif request is None and connection._wsproto.refusal is not None:
                    answer = connection._wsproto.refusal
                if request is not None:
                    handshake_done()  # handle() has its own limits: the sessions'
                    try:
                        await handle(request)  # which never raises: a failure ends that connection (1011)
                    finally:
                        with trio.move_on_after(CLOSE_TIMEOUT):  # the session has closed it, unless cancelled
                            await request._connection.aclose(1011, "internal error")  # closed already: no-op
                nursery.cancel_scope.cancel()
            plain = connection._wsproto.plain_request
            if answer is not None and answer[0] == 426 and pages is not None and plain is not None:
                handshake_done()  # the pages bound their own connections (an explorer feed stays open)
                if await pages(plain, stream):
                    return
            if answer is not None and answer[0] != 408:
                log.info("connection from %s: no WebSocket upgrade: %d", address, answer[0],
                         extra={"reason": "not_websocket", "status": answer[0]})
                metrics.reject("none", "not_websocket")
            if answer is not None:  # still counted as pending until the client has read it and gone (_linger)
                await _answer(stream, *answer, linger=LINGER_TIMEOUT)
    except* LocalProtocolError as group:
        log.info("connection ended by the WebSocket library: %s", group.exceptions[0])
    except* Exception:
        log.exception("connection failed")
        await _fail_transport(stream, connection)
    finally:
        try:
            await _linger(stream)
        finally:
            await trio.aclose_forcefully(stream)


def _peer_address(stream: trio.abc.Stream) -> str | None:
    """The client's IP address (of a SocketStream, or an SSLStream around one), or None (an in-memory stream)."""
    stream = getattr(stream, "transport_stream", stream)
    sock = getattr(stream, "socket", None)
    try:
        peer = sock.getpeername() if sock is not None else None
    except OSError:  # gone already
        return None
    return peer[0] if isinstance(peer, tuple) else None


async def _answer(stream: trio.abc.Stream, status: int, body: str, *, linger: float | None = None) -> None:
    """An HTTP/1.1 answer written as it is, to a connection that has no request trio-websocket could reject
    (none came, or not a WebSocket one), then closed (Connection: close). At most a second; a client that does
    not read it loses it. With `linger`, read what the client still sends for that long before returning."""
    data = body.encode()
    head = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}", "Content-Type: text/plain; charset=utf-8",
            f"Content-Length: {len(data)}", "Connection: close"]
    if status == 426:
        head.append("Upgrade: websocket")
    with trio.move_on_after(1.0):
        try:
            await stream.send_all(("\r\n".join(head) + "\r\n\r\n").encode() + data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.BusyResourceError):
            return
    if linger is not None:
        await _linger(stream, linger)


_REASONS = {400: "Bad Request", 408: "Request Timeout", 426: "Upgrade Required", 500: "Internal Server Error",
            503: "Service Unavailable"}


async def _fail_transport(stream: trio.abc.Stream, connection: _ServerConnection) -> None:
    """The server failed under a connection (its reader task, say): tell the client as an internal error, an
    HTTP 500 before the upgrade, a Close 1011 after, as far as the connection's state allows."""
    state = connection._wsproto.state
    if state is ConnectionState.CONNECTING:
        await _answer(stream, 500, "internal error\n")
    elif state is ConnectionState.OPEN:
        with trio.move_on_after(1.0):
            try:
                await stream.send_all(connection._wsproto.send(CloseConnection(code=1011, reason="internal error")))
            except (trio.BrokenResourceError, trio.ClosedResourceError, trio.BusyResourceError, LocalProtocolError):
                pass


async def _linger(stream: trio.abc.Stream, timeout: float | None = None) -> None:
    """Before closing: say that nothing more comes (TCP FIN), and read what the client still sends until it
    closes too, for a short while. A socket closed with unread data sends a reset instead, which can make the
    client lose the close frame it was sent (a frame over the size limit is closed with 1009 while the rest of
    it is still arriving, or the client sends on while the close handshake completes) and see 1006."""
    with trio.move_on_after(LINGER_TIMEOUT if timeout is None else timeout):
        try:
            if isinstance(stream, trio.abc.HalfCloseableStream):
                await stream.send_eof()
            while await stream.receive_some(1 << 16):
                pass
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.BusyResourceError):
            pass  # closed already (an injected drop), or the client is gone


class _AcceptErrorSummary(logging.Filter):
    """trio's accept loop (trio.serve_listeners) logs `accept returned EMFILE ...; retrying`, with a traceback,
    at each retry, ten times a second, for as long as the process has no file descriptor left. This lets the
    first through as one line that says what to do, then one every `interval` seconds with the count held back."""

    def __init__(self, interval: float = 10.0):
        super().__init__()
        self.interval = interval
        self._next = -math.inf
        self._held = 0

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if not message.startswith("accept returned"):
            return True
        now = time.monotonic()
        if now < self._next:
            self._held += 1
            return False
        held, self._held, self._next = self._held, 0, now + self.interval
        record.msg = (f"{message.split(';')[0]}: new connections wait"
                      f"{f' ({held} more retries since the last report)' if held else ''}; raise the open-file "
                      "limit (ulimit -n) or lower --max-pending-handshakes and --max-sessions")
        record.args, record.exc_info, record.exc_text = (), None, None
        return True


def summarise_accept_errors() -> None:
    """Put _AcceptErrorSummary on trio's accept-loop logger, once per process."""
    logger = logging.getLogger("trio.serve_listeners")
    if not any(isinstance(f, _AcceptErrorSummary) for f in logger.filters):
        logger.addFilter(_AcceptErrorSummary())


def port(listener) -> int:
    """The port a listener (a SocketListener, or an SSLListener around one) is bound to."""
    listener = getattr(listener, "transport_listener", listener)
    return listener.socket.getsockname()[1]


async def open_tcp_listeners(host: str | None, port: int, *, reuse_port: bool = False) -> list[trio.SocketListener]:
    """trio.open_tcp_listeners, with SO_REUSEPORT when asked: then several processes may listen on the same port,
    and the kernel spreads the connections among them."""
    if not reuse_port:
        return await trio.open_tcp_listeners(port, host=host)
    sockets = []
    try:
        for family, kind, proto, _, address in await trio.socket.getaddrinfo(
                host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE):
            sock = trio.socket.socket(family, kind, proto)
            sockets.append(sock)  # closed with the others if anything below fails
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            await sock.bind(address)
            sock.listen(0xFFFF)  # the kernel caps it at net.core.somaxconn, as trio's own listeners do
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return [trio.SocketListener(sock) for sock in sockets]


def tls_context(certfile: str, keyfile: str | None = None) -> ssl.SSLContext:
    """The server side of TLS: the certificate chain in `certfile` (PEM) and its private key, in `keyfile` or in
    certfile itself. A key protected by a passphrase is refused (the server would otherwise prompt for it)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certfile, keyfile, password=_no_passphrase)
    return context


def _no_passphrase() -> str:
    raise ValueError("the private key is protected by a passphrase; give the server one without")
