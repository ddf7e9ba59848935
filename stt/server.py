"""Accept WebSocket connections, route each by path to its dialect, check its key, run its session; shut down
gracefully on SIGTERM or SIGINT; run several processes on one port (`serve_workers`)."""

from __future__ import annotations

import collections
import contextlib
import functools
import hashlib
import hmac
import logging
import math
import multiprocessing
import os
import signal
import socket
import ssl
import time
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import AsyncIterator, Iterable, Iterator

import attrs
import trio
import trio_websocket
from trio_websocket import ConnectionClosed, WebSocketRequest
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.utilities import LocalProtocolError

from stt.admin import open_admin
from stt.conformance.checks import write_client_report
from stt.conformance.logbook import CONFORMANCE_HEADER, CONFORMANCE_QUERY, open_logbook
from stt.dialects import dialect_for
from stt.dialects.base import Handshake, HandshakeRefused
from stt.engines import open_engine
from stt.engines.base import Engine
from stt.faults import FAULT_HEADER, FAULT_QUERY, FaultError, parse_faults
from stt.logs import configure_logging
from stt.metrics import Metrics
from stt.session import Session, SessionLimits
from stt.statechart import load_chart

log = logging.getLogger("stt.server")


@attrs.frozen
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 9000
    engine: str = "whisper"  # stt serve's default (docs/engines.md)
    decode_workers: int | None = None  # engine worker processes; None: one per core
    engine_options: dict = attrs.field(factory=dict)  # passed to the engine (e.g. the scripted engine's script)
    #: The accepted keys, as digests only: plain keys given here are hashed on the way in and not kept.
    api_keys: KeyRing = attrs.field(factory=tuple, converter=lambda keys: keys if isinstance(keys, KeyRing)
                                    else KeyRing(keys))
    limits: SessionLimits = SessionLimits()
    allow_private_urls: bool = False  # stream modes may fetch from loopback/private addresses
    certfile: str | None = None  # TLS (wss://): the certificate chain, PEM; with it the key unless keyfile
    keyfile: str | None = None
    shutdown_grace: float = 30.0  # seconds sessions may go on after a SIGTERM or SIGINT before they are ended
    reuse_port: bool = False  # SO_REUSEPORT: several processes listen on the port (serve_workers sets it)
    max_sessions: int = 0  # sessions at once, all clients together; 0: no limit
    max_sessions_per_key: int = 0  # sessions at once with one API key (those presenting none: not limited); 0: none
    admin_host: str = "127.0.0.1"
    admin_port: int | None = None  # /healthz, /readyz, /metrics (stt.admin); None: no admin port; 0: a free one
    conformance_dir: Path | None = None  # record sessions' logbooks and client-conformance reports here
    conformance_opt_in: bool = False  # ... only those of connections that ask (x-stt-conformance, stt_conformance)
    faults: str = ""  # the fault plan of every connection that gives none of its own (stt.faults)


class KeyRing:
    """API keys, held as SHA-256 digests and compared in constant time. Empty: every client is let in."""

    def __init__(self, keys: Iterable[str] = ()):
        self._digests = tuple(dict.fromkeys(hashlib.sha256(k.encode()).digest() for k in keys if k))

    def __len__(self) -> int:
        return len(self._digests)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, KeyRing) and set(self._digests) == set(other._digests)

    def __hash__(self) -> int:
        return hash(frozenset(self._digests))

    def __repr__(self) -> str:
        return f"KeyRing(<{len(self)} keys>)"

    def allows(self, key: str | None) -> bool:
        if not self._digests:
            return True
        digest = hashlib.sha256((key or "").encode()).digest()
        # Compare with every key, so the time taken does not say which key came close.
        return any([hmac.compare_digest(digest, d) for d in self._digests])


class ConnectionCount:
    """How many connections are under way, and a wait for the moment none is."""

    def __init__(self):
        self.open = 0
        self._changed = trio.Event()

    @contextmanager
    def counting(self) -> Iterator[None]:
        self.open += 1
        try:
            yield
        finally:
            self.open -= 1
            self._changed.set()
            self._changed = trio.Event()

    async def wait_none(self) -> None:
        while self.open:
            await self._changed.wait()


class Server:
    def __init__(self, config: ServerConfig, engine: Engine):
        self.config = config
        self.engine = engine
        self.keys = config.api_keys
        self.lifecycle_chart = load_chart("lifecycle")
        self.sessions: set[Session] = set()
        #: (dialect, ending, rule id) -> sessions that ended so; bounded by the number of rules
        self.endings: collections.Counter[tuple[str, str, str]] = collections.Counter()
        #: Rules clients broke without ending their session (warnings, non-fatal errors), by (dialect, rule id).
        self.violations: collections.Counter[tuple[str, str]] = collections.Counter()
        self.port: int | None = None
        self.connections = ConnectionCount()  # handshakes and sessions under way
        self.closing_at: float | None = None  # shutting down: the Unix time at which sessions will be ended
        self._accepting: trio.CancelScope | None = None  # the listeners' accept loop (open_server)
        #: Sessions admitted and not yet ended (a slot is taken before the upgrade completes), all clients together
        #: and by the SHA-256 digest of the client's key: the counts max_sessions and max_sessions_per_key check.
        self.admitted = 0
        self.admitted_by_key: collections.Counter[bytes] = collections.Counter()
        self.metrics = Metrics(lambda: ((s.dialect.name, s.lifecycle.state) for s in self.sessions))
        self.admin_port: int | None = None  # the admin port, when open_server opened one

    async def handle(self, request: WebSocketRequest) -> None:
        """One connection, from handshake to close. Nothing that happens here may stop the server."""
        with self.connections.counting():
            try:
                if self.closing_at is not None:  # accepted just before the listener closed
                    self.metrics.reject("none", "shutting_down")
                    await request.reject(503, body=b"server shutting down\n")
                    return
                await self._handle(request)
            except ConnectionClosed:
                log.info("client went away during the handshake")
            except Exception:
                log.exception("connection failed")

    # --- shutting down (see shut_down) ---------------------------------------------------------------------

    def stop_accepting(self, closing_at: float) -> None:
        """Close the listeners, turn away handshakes still under way (503), and tell every session that it
        will be ended at `closing_at` (Unix time) unless it ends before (those whose dialect has a message
        for it tell their client)."""
        self.closing_at = closing_at
        if self._accepting is not None:
            self._accepting.cancel()  # trio.serve_listeners closes the listeners on its way out
        for session in list(self.sessions):
            session.shutting_down(closing_at)

    def end_sessions(self) -> None:
        """End every session still open as going away (the lifecycle's "shutdown" ending, 1001)."""
        for session in list(self.sessions):
            session.shut_down()

    async def _handle(self, request: WebSocketRequest) -> None:
        handshake, fault_text, record = self._conformance_asks(Handshake.from_target(request.path, request.headers))
        lifecycle = self.lifecycle_chart.machine()
        lifecycle.advance("handshake")
        dialect_cls = dialect_for(handshake.path)
        if dialect_cls is None:
            lifecycle.advance("reject")
            self.metrics.reject("none", "no_dialect")
            log.info("no dialect serves %s: 404", handshake.path)
            await request.reject(404, body=f"no dialect serves the path {handshake.path}\n".encode())
            return
        try:
            faults = parse_faults(fault_text, dialect_cls.chart)
        except FaultError as exc:
            lifecycle.advance("reject")
            self.metrics.reject(dialect_cls.name, "bad_fault_plan")
            log.info("%s: bad fault plan: %s", handshake.path, exc)
            await request.reject(400, body=f"bad fault plan ({FAULT_HEADER} or {FAULT_QUERY}): {exc}\n".encode())
            return
        try:
            dialect = dialect_cls(handshake)
        except HandshakeRefused as refusal:
            lifecycle.advance("reject")
            self.endings[(dialect_cls.name, "refused", str(refusal.status))] += 1
            self.metrics.reject(dialect_cls.name, "bad_handshake")
            log.info("%s refused: %s", handshake.path, refusal)
            await request.reject(refusal.status, body=(refusal.body.rstrip("\n") + "\n").encode())
            return
        credential = dialect.credential()
        authorised = self.keys.allows(credential)
        if not authorised and dialect.rejects_unauthorised:
            lifecycle.advance("reject")
            self.endings[(dialect.name, "unauthorised", dialect.chart.ending("unauthorised").id)] += 1
            self.metrics.reject(dialect.name, "unauthorised")
            log.info("%s: missing or invalid API key: 401", handshake.path)
            await request.reject(401, body=b"missing or invalid API key\n")
            return
        # Admission. A client without a valid key is not counted: its session ends at once (unless the key may
        # still come in its start message). The slot is taken here, before the upgrade completes, so that
        # handshakes under way count too; _admitted gives it back however the connection ends.
        admissible = authorised or dialect.credential_in_start
        key = hashlib.sha256(credential.encode()).digest() if authorised and credential else None
        busy = self._refusal(key) if admissible else None
        if busy is not None:
            reason, detail = busy
            self.metrics.reject(dialect.name, reason)
            log.info("%s: %s", handshake.path, detail, extra={"dialect": dialect.name, "reason": reason})
            if getattr(dialect, "refuses_busy_at_upgrade", False):  # V-Blaze: HTTP 503, as for no free stream
                lifecycle.advance("reject")
                rule = dialect.chart.ending("busy")
                self.endings[(dialect.name, "busy", rule.id)] += 1
                await request.reject(503, body=f"{rule.message}: {detail}\n".encode())
                return
        with self._admitted(key) if admissible and busy is None else contextlib.nullcontext():
            ws = await request.accept()
            lifecycle.advance("accept")
            session = Session(ws, dialect, self.engine, lifecycle, limits=self.config.limits,
                              authorise=self.keys.allows, allow_private_urls=self.config.allow_private_urls,
                              metrics=self.metrics.session(dialect.name), faults=faults)
            if busy is not None:
                session.refuse("busy", busy[1])  # the dialect's error and close, at once (Speechmatics: 4005)
            else:
                self.sessions.add(session)
            try:
                opened = trio.current_time()
                with open_logbook(self.config.conformance_dir, session.id, dialect, handshake, faults.text,
                                  lambda: trio.current_time() - opened) if record \
                        else contextlib.nullcontext() as logbook:
                    session.logbook = logbook
                    ending = await session.run()
                self.endings[(dialect.name, ending.name, ending.rule.id)] += 1
                self.metrics.ended(dialect.name, ending.name, ending.rule.id, session.close_code)
                if ending.name == "unauthorised":
                    self.metrics.reject(dialect.name, "unauthorised")
                for rule_id, count in session.violations.items():
                    self.violations[(dialect.name, rule_id)] += count
                    self.metrics.violated(dialect.name, rule_id, count)
                session.metrics.closed()
            finally:
                self.sessions.discard(session)
            if record:
                await self._write_client_report(session.id)

    async def _write_client_report(self, session: str) -> None:
        try:
            paths = await trio.to_thread.run_sync(write_client_report, self.config.conformance_dir, session)
        except Exception:
            log.exception("session %s: the client-conformance report could not be written", session)
        else:
            log.info("session %s: client-conformance report %s", session, paths[0],
                     extra={"session": session, "report": str(paths[0])})

    def _conformance_asks(self, handshake: Handshake) -> tuple[Handshake, str, bool]:
        """The handshake without stt's own query parameters, which no dialect knows; the connection's fault plan
        (its own, or the server's); and whether to record it (conformance mode, and its opt-in)."""
        query = {k: v for k, v in handshake.query.items() if k not in (FAULT_QUERY, CONFORMANCE_QUERY)}
        faults = handshake.headers.get(FAULT_HEADER, handshake.query.get(FAULT_QUERY, self.config.faults))
        asked = (handshake.headers.get(CONFORMANCE_HEADER) or handshake.query.get(CONFORMANCE_QUERY) or "").lower()
        record = self.config.conformance_dir is not None and (
            not self.config.conformance_opt_in or asked in ("1", "true", "yes"))
        return attrs.evolve(handshake, query=query), faults, record

    # --- admission and readiness ---------------------------------------------------------------------------

    def _refusal(self, key: bytes | None) -> tuple[str, str] | None:
        """(reason, detail) when a new session with this key digest would be over a limit, else None."""
        limit, per_key = self.config.max_sessions, self.config.max_sessions_per_key
        if limit and self.admitted >= limit:
            return "max_sessions", f"the server's limit of {limit} concurrent sessions is reached"
        if per_key and key is not None and self.admitted_by_key[key] >= per_key:
            return "max_sessions_per_key", f"the limit of {per_key} concurrent sessions for this API key is reached"
        return None

    @contextmanager
    def _admitted(self, key: bytes | None) -> Iterator[None]:
        """A slot for one session, given back when the block exits, however it exits (a dropped handshake, a
        cancelled connection, a failure)."""
        self.admitted += 1
        if key is not None:
            self.admitted_by_key[key] += 1
        try:
            yield
        finally:
            self.admitted -= 1
            if key is not None:
                self.admitted_by_key[key] -= 1
                if self.admitted_by_key[key] <= 0:
                    del self.admitted_by_key[key]

    @property
    def accepting(self) -> bool:
        """Listening and not shutting down (stop_accepting sets closing_at, which turns this off)."""
        return self.port is not None and self.closing_at is None

    def readiness(self) -> str | None:
        """None when the server would take a new session now (/readyz answers 200), else why not."""
        if self.closing_at is not None:
            return "shutting down"
        if self.port is None:
            return "not listening yet"
        limit = self.config.max_sessions
        if limit and self.admitted >= limit:
            return f"at the session limit ({self.admitted} of {limit})"
        return None

    @property
    def ready(self) -> bool:
        return self.readiness() is None


@asynccontextmanager
async def open_server(config: ServerConfig) -> AsyncIterator[Server]:
    """Load the engine, listen, and serve until the block exits, which cancels whatever still runs (`shut_down`
    first lets the sessions finish). `server.port` is the bound port."""
    ssl_context = tls_context(config.certfile, config.keyfile) if config.certfile else None
    async with open_admin(config.admin_host, config.admin_port) as admin, \
            open_engine(config.engine, workers=config.decode_workers, **config.engine_options) as engine:
        server = Server(config, engine)
        server.admin_port, admin.server = admin.port, server  # the admin port is up while the engine loads
        async with trio.open_nursery() as nursery:  # connections run here: closing the listeners leaves them be
            listeners = await open_tcp_listeners(config.host, config.port, reuse_port=config.reuse_port)
            if ssl_context is not None:
                listeners = [trio.SSLListener(listener, ssl_context, https_compatible=True) for listener in listeners]
            server._accepting = trio.CancelScope()
            serve_stream = functools.partial(_serve_stream, server.handle, config.limits.max_message_bytes)

            async def accept(task_status=trio.TASK_STATUS_IGNORED) -> None:
                with server._accepting:  # trio.serve_listeners closes the listeners on its way out
                    await trio.serve_listeners(serve_stream, listeners, handler_nursery=nursery,
                                               task_status=task_status)

            await nursery.start(accept)
            server.port = _port(listeners[0])
            host = f"[{config.host}]" if ":" in (config.host or "") else config.host  # an IPv6 address, in brackets
            url = f"{'wss' if ssl_context else 'ws'}://{host}:{server.port}"
            log.info("stt listening on %s (engine %s)", url, engine.name, extra={"url": url, "engine": engine.name})
            from stt.startup import startup_lines  # (stt.startup imports this module)

            for message, fields in startup_lines(config, url, engine.name, server.admin_port):
                log.info(message, extra=fields)
            yield server
            nursery.cancel_scope.cancel()


#: Seconds a client has to send its HTTP upgrade request, and a closing connection to finish its close handshake
#: (trio-websocket's defaults).
HANDSHAKE_TIMEOUT = 60.0
CLOSE_TIMEOUT = 60.0
LINGER_TIMEOUT = 2.0  # seconds to read what a client still sends after the close, before the socket closes


class _ServerConnection(trio_websocket.WebSocketConnection):
    """trio-websocket's connection, less what makes wsproto raise once the server has sent its close frame
    (trio-websocket 0.12, its issue #184): a ping is answered only while the connection is open, and a message
    over the size limit that arrives after the close frame is dropped, not answered with a second close. And it
    leaves the socket open after the close handshake: _serve_stream closes it, gently (_linger), once the
    connection's tasks are done."""

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


async def _accept_stream(nursery: trio.Nursery, stream: trio.abc.Stream, max_message_bytes: int):
    """trio_websocket.wrap_server_stream, with _ServerConnection."""
    connection = _ServerConnection(stream, WSConnection(ConnectionType.SERVER), max_message_size=max_message_bytes)
    nursery.start_soon(connection._reader_task)
    return await connection._get_request()


async def _serve_stream(handle, max_message_bytes: int, stream: trio.abc.Stream) -> None:
    """One TCP (or TLS) connection: the WebSocket handshake, then `handle(request)`. What
    trio_websocket.WebSocketServer does per connection, with two differences (trio-websocket 0.12, its issue
    #184): a failure in the connection's own reader task ends this connection, not the server (wsproto refused
    to answer a ping or an oversized frame once the server had begun to close, which _ServerConnection now
    avoids); and the reader task is cancelled once the connection is done, where trio-websocket may leave it
    waiting forever to deliver a message that nobody will read (a client that went away while the server was
    closing)."""
    try:
        async with trio.open_nursery() as nursery:
            request = None
            with trio.move_on_after(HANDSHAKE_TIMEOUT):
                request = await _accept_stream(nursery, stream, max_message_bytes)
            if request is not None:
                try:
                    await handle(request)  # which never raises: a session's failure ends that session
                finally:
                    with trio.move_on_after(CLOSE_TIMEOUT):  # the session has closed it, unless it was cancelled
                        await request._connection.aclose()
            nursery.cancel_scope.cancel()
    except* LocalProtocolError as group:
        log.info("connection ended by the WebSocket library: %s", group.exceptions[0])
    except* Exception:
        log.exception("connection failed")
    finally:
        try:
            await _linger(stream)
        finally:
            await trio.aclose_forcefully(stream)


async def _linger(stream: trio.abc.Stream) -> None:
    """Before closing: say that nothing more comes (TCP FIN), and read what the client still sends until it
    closes too, for a short while. A socket closed with unread data sends a reset instead, which can make the
    client lose the close frame it was sent (a frame over the size limit is closed with 1009 while the rest of
    it is still arriving, or the client sends on while the close handshake completes) and see 1006."""
    with trio.move_on_after(LINGER_TIMEOUT):
        try:
            if isinstance(stream, trio.abc.HalfCloseableStream):
                await stream.send_eof()
            while await stream.receive_some(1 << 16):
                pass
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.BusyResourceError):
            pass  # closed already (an injected drop), or the client is gone


def _port(listener) -> int:
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


# --- stopping ----------------------------------------------------------------------------------------------

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
DRAIN, NOW = "drain", "now"  # a supervisor's orders to its workers: shut down gracefully; stop at once


async def shut_down(server: Server, grace: float) -> None:
    """Graceful shutdown: stop accepting, let the sessions go on for up to `grace` seconds (a client that ends
    its stream in time gets its last results and its normal close), then end those still open as going away
    (1001), and wait until every connection has closed: at most the time a session's close may take (its error
    frame and its close frame, a send timeout each), after which the caller's exit cuts what is left."""
    log.info("shutting down: no longer accepting; %d sessions have %g s to finish", len(server.sessions), grace,
             extra={"sessions": len(server.sessions), "grace": grace})
    server.stop_accepting(closing_at=time.time() + grace)
    with trio.move_on_after(grace):
        await server.connections.wait_none()
    if server.sessions:
        log.warning("shutting down: ending the %d sessions still open after %g s (1001)", len(server.sessions),
                    grace, extra={"sessions": len(server.sessions), "grace": grace})
        server.end_sessions()
    with trio.move_on_after(2 * server.config.limits.send_timeout + 1):
        await server.connections.wait_none()
    if server.connections.open:
        log.warning("shut down: %d connections did not close in time", server.connections.open)
    else:
        log.info("shut down: every connection closed")


async def serve(config: ServerConfig, *, supervisor=None) -> None:
    """Serve until SIGTERM or SIGINT, then shut down gracefully (`shut_down`, config.shutdown_grace); a second
    signal ends what is left at once. A worker of `serve_workers` also takes orders from its `supervisor` (the
    reading end of a multiprocessing Pipe): DRAIN begins a graceful shutdown, or adds nothing to one under way
    (the signal may have reached the worker too); NOW stops at once; a supervisor that is gone counts as DRAIN."""
    with trio.open_signal_receiver(*STOP_SIGNALS) as signals:  # before the listener opens: no signal is lost
        async with open_server(config) as server, trio.open_nursery() as nursery:
            send, stop_requests = trio.open_memory_channel(math.inf)
            nursery.start_soon(_relay_signals, signals, send)
            if supervisor is not None:
                nursery.start_soon(_relay_orders, supervisor, send.clone())
            await _serve_until_stopped(server, stop_requests, config.shutdown_grace)
            nursery.cancel_scope.cancel()


async def _serve_until_stopped(server: Server, stop_requests, grace: float) -> None:
    """The first stop request (a signal's name, DRAIN or NOW) begins the shutdown; a second signal or NOW cuts it
    short. DRAIN never does: a signal may reach a worker both itself and through its supervisor, in any order."""
    first = await stop_requests.receive()
    if first == NOW:
        log.warning("%s: stopping at once, ending %d sessions", first, len(server.sessions))
        return
    log.info("%s: shutting down gracefully (a second signal stops at once)", first)
    with trio.CancelScope() as graceful:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_cancel_on_stop_now, server, stop_requests, graceful, int(first != DRAIN))
            await shut_down(server, grace)
            nursery.cancel_scope.cancel()


async def _cancel_on_stop_now(server: Server, stop_requests, graceful: trio.CancelScope, signals: int) -> None:
    async for request in stop_requests:
        signals += request not in (DRAIN, NOW)
        if request == NOW or signals > 1:
            log.warning("%s: stopping at once, ending %d sessions", request, len(server.sessions))
            graceful.cancel()
            return


async def _relay_signals(signals, send) -> None:
    async for signum in signals:
        await send.send(signal.Signals(signum).name)


async def _relay_orders(supervisor, send) -> None:
    with supervisor:
        while True:
            await trio.lowlevel.wait_readable(supervisor.fileno())
            try:
                order = supervisor.recv_bytes().decode()
            except EOFError:
                log.warning("the supervisor is gone: shutting down")
                await send.send(DRAIN)
                return
            await send.send(order)


# --- several processes -------------------------------------------------------------------------------------


def serve_workers(config: ServerConfig, workers: int, *, log_level: str = "info", log_format: str = "auto") -> int:
    """Run `workers` server processes on config.port (SO_REUSEPORT: the kernel spreads connections among them),
    each with its own engine of config.decode_workers decoders (default: the cores shared out), and supervise
    them: SIGTERM or SIGINT tells them all to drain, a second one to stop at once. A worker that exits by itself
    stops the others. Returns 0 when every worker exited cleanly, else 1."""
    return trio.run(_supervise, worker_config(config, workers), workers, log_level, log_format)


def worker_config(config: ServerConfig, workers: int) -> ServerConfig:
    """The config of each of `workers` processes: the port shared, and the cores shared out among their engines
    unless config.decode_workers says how many decoders each has."""
    decoders = config.decode_workers or max(1, (os.cpu_count() or 1) // workers)
    return attrs.evolve(config, decode_workers=decoders, reuse_port=True)


async def _supervise(config: ServerConfig, count: int, log_level: str, log_format: str) -> int:
    context = multiprocessing.get_context("spawn")  # trio runs threads; forking a threaded process is unsafe
    with trio.open_signal_receiver(*STOP_SIGNALS) as signals, _shared_port(config.host, config.port) as port:
        config = attrs.evolve(config, port=port)
        workers = []  # (process, the writing end of its orders)
        for index in range(1, count + 1):
            reading, writing = context.Pipe(duplex=False)
            process = context.Process(target=_worker_main, name=f"stt-worker-{index}",
                                      args=(config, index, count, reading, log_level, log_format))
            process.start()
            reading.close()
            workers.append((process, writing))
        log.info("stt: %d workers on port %d (pids %s)", count, port, ", ".join(str(p.pid) for p, _ in workers),
                 extra={"workers": [p.pid for p, _ in workers], "port": port})
        stopping = failed = False

        def order_all(order: str) -> None:
            for _, writing in workers:
                try:
                    writing.send_bytes(order.encode())
                except OSError:  # that worker is gone
                    pass

        async def relay_signals() -> None:
            nonlocal stopping
            async for signum in signals:
                order = NOW if stopping else DRAIN
                log.info("%s: telling the workers: %s", signal.Signals(signum).name, order)
                stopping = True
                order_all(order)

        async def watch(process) -> None:
            nonlocal stopping, failed
            await trio.lowlevel.wait_readable(process.sentinel)
            process.join()
            failed = failed or process.exitcode != 0
            if not stopping:  # killed, crashed, or signalled by someone else: the service stops as a whole
                log.log(logging.ERROR if process.exitcode else logging.INFO,
                        "worker pid %d exited (%s): stopping the others", process.pid, process.exitcode)
                stopping = True
                order_all(DRAIN)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(relay_signals)
            async with trio.open_nursery() as watching:
                for process, _ in workers:
                    watching.start_soon(watch, process)
            nursery.cancel_scope.cancel()
        for _, writing in workers:
            writing.close()
        log.info("stt: every worker has exited%s", " (some failed)" if failed else "")
        return 1 if failed else 0


@contextmanager
def _shared_port(host: str | None, port: int) -> Iterator[int]:
    """The port the workers share: `port`, or for 0 a free one, which the supervisor holds (bound with
    SO_REUSEPORT, not listening, so it gets no connections) until they are done, so no other program takes it."""
    if port:
        yield port
        return
    family, kind, proto, _, address = socket.getaddrinfo(host, 0, type=socket.SOCK_STREAM,
                                                         flags=socket.AI_PASSIVE)[0]
    with socket.socket(family, kind, proto) as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        holder.bind(address)
        yield holder.getsockname()[1]


def _worker_main(config: ServerConfig, index: int, count: int, supervisor, log_level: str, log_format: str) -> None:
    """One worker process of serve_workers (spawned: a fresh interpreter, so logging is set up again)."""
    configure_logging(log_level, log_format)
    log.info("worker %d of %d (pid %d)", index, count, os.getpid(), extra={"worker": index})
    trio.run(functools.partial(serve, config, supervisor=supervisor))
