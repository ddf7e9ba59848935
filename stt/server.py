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
from typing import AsyncIterator, Callable, Iterable, Iterator

import attrs
import h11
import trio
import trio_websocket
from trio_websocket import ConnectionClosed, WebSocketRequest
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import CloseConnection
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from stt import __version__
from stt.admin import open_admin
from stt.admission import Admission, Unlimited
from stt.audio import FileBuffers
from stt.audio.limits import MAX_FILE_BUFFER_BYTES
from stt.dialects import dialect_for
from stt.dialects.base import Dialect, Handshake, HandshakeRefused
from stt.engines import open_engine
from stt.engines.base import Engine
from stt.faults import FAULT_HEADER, FAULT_QUERY, FaultError
from stt.logs import configure_logging
from stt.metrics import Metrics
from stt.redaction import connection_secrets, redact, redact_path
from stt.session import Session, SessionLimits
from stt.events import Violation
from stt.statechart import load_chart
from stt.testmodes import ALLOW_CLIENT_FAULTS_FLAG, ClientFaultsRefused, TestModes

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
    max_sessions: int | str = "auto"  # sessions at once, all clients together; 0: no limit; AUTO: the engine's capacity
    max_sessions_per_key: int = 0  # sessions at once with one API key (those presenting none: not limited); 0: none
    admin_host: str = "127.0.0.1"
    admin_port: int | None = None  # /healthz, /readyz, /metrics (stt.admin); None: no admin port; 0: a free one
    #: record sessions' logbooks and client-conformance reports here (a str from the command line becomes a Path)
    conformance_dir: Path | None = attrs.field(default=None, converter=attrs.converters.optional(Path))
    conformance_opt_in: bool = False  # ... only those of connections that ask (x-stt-conformance, stt_conformance)
    faults: str = ""  # the fault plan of every connection that gives none of its own (stt.faults)
    #: Connections may bring their own fault plan (x-stt-fault, stt_fault); implied by conformance_dir. Off: 403.
    allow_client_faults: bool = False
    handshakes: HandshakeLimits = attrs.field(factory=lambda: HandshakeLimits())  # connections not upgraded yet
    max_file_buffer_bytes: int = MAX_FILE_BUFFER_BYTES  # files decoded whole (MP4), all sessions of the process together; 0: none


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


AUTO = "auto"  # max_sessions: as many as the engine serves (its capacity)


def session_limit(max_sessions: int | str, capacity: int | None) -> int:
    """The limit on sessions at once that `max_sessions` puts in force on an engine of `capacity` (base.Engine):
    AUTO is the capacity (no limit where it is unknown), a number itself; 0: no limit."""
    if max_sessions == AUTO:
        return capacity or 0
    return int(max_sessions)


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


@attrs.define
class _Progress:
    """How far one connection got in Server.handle, for Server._failed: its dialect, once one accepted it."""

    dialect: Dialect | None = None


class Server:
    def __init__(self, config: ServerConfig, engine: Engine, test_modes: TestModes | None = None):
        self.config = config
        self.engine = engine
        #: Each connection's handshake, fault plan and recorder (stt.testmodes); None: as config asks, but without
        #: the reports of recorded sessions, which the kit's modes add (the command line passes those).
        self.test_modes = test_modes if test_modes is not None else TestModes.from_config(config)
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
        self.metrics = Metrics(lambda: ((s.dialect.name, s.lifecycle.state) for s in self.sessions))
        self.admin_port: int | None = None  # the admin port, when open_server opened one
        self.handshakes = PendingHandshakes(config.handshakes)  # connections not upgraded yet (_serve_stream)
        self.file_buffers = FileBuffers(config.max_file_buffer_bytes)  # shared by the sessions' decoders
        #: The limit on sessions at once in force (0: none): config.max_sessions, or for AUTO the engine's capacity.
        self.max_sessions = session_limit(config.max_sessions, engine.capacity)
        #: Who may have a session and how many at once (the key check, max_sessions, max_sessions_per_key).
        self.admission = Admission(self.keys.allows, self.max_sessions, config.max_sessions_per_key,
                                   limit_source="what the engine serves" if config.max_sessions == AUTO else "")

    async def handle(self, request: WebSocketRequest) -> None:
        """One connection, from handshake to close. Nothing that happens here may stop the server, and a failure
        anywhere in it ends the connection as an internal error (`_failed`), never as a normal close."""
        progress = _Progress()
        with self.connections.counting():
            try:
                if self.closing_at is not None:  # accepted just before the listener closed
                    self.metrics.reject("none", "shutting_down")
                    await request.reject(503, body=b"server shutting down\n")
                    return
                await self._handle(request, progress)
            except ConnectionClosed:
                log.info("client went away during the handshake")
            except Exception as exc:
                log.exception("connection failed")
                await self._failed(request, progress, exc)

    async def _failed(self, request: WebSocketRequest, progress: _Progress, exc: Exception) -> None:
        """The one place that ends a connection whose server side failed outside its session's own handling
        (Session.run ends those itself, the same way): before the upgrade an HTTP 500; after it the dialect's
        internal-error frame and its close code (the lifecycle's 1011 unless the dialect names another);
        nothing if the connection is closed already. Never raises."""
        ws: trio_websocket.WebSocketConnection = request._connection
        dialect = progress.dialect
        name = dialect.name if dialect is not None else "none"
        chart = dialect.chart if dialect is not None else self.lifecycle_chart
        rule = chart.ending("internal_error")
        try:
            if ws._wsproto.state is ConnectionState.CONNECTING:
                self.metrics.reject(name, "internal_error")
                await request.reject(500, body=f"{rule.message}: {type(exc).__name__}\n".encode())
                return
            if ws._wsproto.state is not ConnectionState.OPEN or ws.closed is not None:
                return  # closed already (a session that failed after its close): nothing more to tell the client
            detail = type(exc).__name__
            with trio.move_on_after(self.config.limits.send_timeout):
                if dialect is not None:
                    for frame in dialect.render_violation(Violation(rule, detail)):
                        await ws.send_message(frame)
            with trio.move_on_after(self.config.limits.send_timeout):  # cancelled, aclose still closes the stream
                await ws.aclose(rule.close, (rule.error or rule.message)[:120])
            self.endings[(name, "internal_error", rule.id)] += 1
            self.metrics.ended(name, "internal_error", rule.id, rule.close)
        except ConnectionClosed:
            pass
        except Exception:
            log.exception("connection failed, and so did ending it as an internal error")
            with trio.move_on_after(self.config.limits.send_timeout):
                await ws.aclose(1011, "internal error")

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

    async def _handle(self, request: WebSocketRequest, progress: _Progress | None = None) -> None:
        progress = progress if progress is not None else _Progress()
        modes = self.test_modes.for_connection(Handshake.from_target(request.path, request.headers))
        handshake = modes.handshake
        lifecycle = self.lifecycle_chart.machine()
        lifecycle.advance("handshake")
        dialect_cls = dialect_for(handshake.path)
        pattern = getattr(dialect_cls, "secret_path", None)
        path = redact_path(handshake.path, pattern,  # as the log shows it: no key (stt.redaction)
                           connection_secrets(handshake.path, handshake.query, handshake.headers, pattern))
        if dialect_cls is None:
            lifecycle.advance("reject")
            self.metrics.reject("none", "no_dialect")
            log.info("no dialect serves %s: 404", path)
            await request.reject(404, body=f"no dialect serves the path {handshake.path}\n".encode())
            return
        try:
            faults = modes.fault_plan(dialect_cls.chart)
        except ClientFaultsRefused as refusal:
            lifecycle.advance("reject")
            self.metrics.reject(dialect_cls.name, "client_faults_off")
            log.info("%s: a client fault plan refused (403): %s lifts this", path, ALLOW_CLIENT_FAULTS_FLAG,
                     extra={"dialect": dialect_cls.name, "reason": "client_faults_off"})
            await request.reject(403, body=refusal.body.encode())
            return
        except FaultError as exc:
            lifecycle.advance("reject")
            self.metrics.reject(dialect_cls.name, "bad_fault_plan")
            log.info("%s: bad fault plan: %s", path, exc)
            await request.reject(400, body=f"bad fault plan ({FAULT_HEADER} or {FAULT_QUERY}): {exc}\n".encode())
            return
        try:
            dialect = progress.dialect = dialect_cls(handshake)
        except HandshakeRefused as refusal:
            lifecycle.advance("reject")
            self.endings[(dialect_cls.name, "refused", str(refusal.status))] += 1
            self.metrics.reject(dialect_cls.name, "bad_handshake")
            log.info("%s refused: %s", path, redact(str(refusal), connection_secrets(
                handshake.path, handshake.query, handshake.headers, pattern)))
            await request.reject(refusal.status, body=(refusal.body.rstrip("\n") + "\n").encode())
            return
        credential = dialect.credential()
        authorised = self.keys.allows(credential)
        if not authorised and dialect.rejects_unauthorised:
            lifecycle.advance("reject")
            self.endings[(dialect.name, "unauthorised", dialect.chart.ending("unauthorised").id)] += 1
            self.metrics.reject(dialect.name, "unauthorised")
            log.info("%s: missing or invalid API key: 401", path)
            await request.reject(401, body=b"missing or invalid API key\n")
            return
        # Admission (stt.admission). A client without a valid key is not counted: its session ends at once (unless
        # the key may still come in its start message: then it is counted when it comes, by the ticket). The slot
        # is taken here, before the upgrade completes, so that handshakes under way count too; admit gives it back
        # however the connection ends.
        admissible = authorised or dialect.credential_in_start
        key = self.admission.counted_key(credential) if authorised else None
        busy = self.admission.refusal(key) if admissible else None
        if busy is not None:
            reason, detail = busy
            self.metrics.reject(dialect.name, reason)
            log.info("%s: %s", path, detail, extra={"dialect": dialect.name, "reason": reason})
            if getattr(dialect, "refuses_busy_at_upgrade", False):  # V-Blaze: HTTP 503, as for no free stream
                lifecycle.advance("reject")
                rule = dialect.chart.ending("busy")
                self.endings[(dialect.name, "busy", rule.id)] += 1
                await request.reject(503, body=f"{rule.message}: {detail}\n".encode())
                return
        with self.admission.admit(key) if admissible and busy is None \
                else contextlib.nullcontext(Unlimited(self.keys.allows)) as ticket:
            ws = await request.accept()
            lifecycle.advance("accept")
            session = Session(ws, dialect, self.engine, lifecycle, limits=self.config.limits,
                              authorise=self.keys.allows, admission=ticket,
                              allow_private_urls=self.config.allow_private_urls,
                              metrics=self.metrics.session(dialect.name), faults=faults,
                              file_buffers=self.file_buffers)
            if busy is not None:
                session.refuse("busy", busy[1])  # the dialect's error and close, at once (Speechmatics: 4005)
            else:
                self.sessions.add(session)
            try:
                async with modes.recorder(session.id, dialect, faults) as recorder:
                    session.recorder = recorder
                    ending = await session.run()
                self.endings[(dialect.name, ending.name, ending.rule.id)] += 1
                self.metrics.ended(dialect.name, ending.name, ending.rule.id, session.close_code)
                if ending.name == "unauthorised":
                    self.metrics.reject(dialect.name, "unauthorised")
                if session.refused_key is not None:  # its start message's key was over its limit
                    self.metrics.reject(dialect.name, session.refused_key[0])
                for rule_id, count in session.violations.items():
                    self.violations[(dialect.name, rule_id)] += count
                    self.metrics.violated(dialect.name, rule_id, count)
                session.metrics.closed()
            finally:
                self.sessions.discard(session)
            await modes.finished(session.id)  # a recorded session's report

    # --- admission and readiness ---------------------------------------------------------------------------

    @property
    def admitted(self) -> int:
        """Sessions admitted and not yet ended (a slot is taken before the upgrade completes), all together."""
        return self.admission.admitted

    @property
    def admitted_by_key(self) -> collections.Counter[bytes]:
        """The same, by the SHA-256 digest of the session's key (however it came: stt.admission)."""
        return self.admission.by_key

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
        limit = self.max_sessions
        if limit and self.admitted >= limit:
            return f"at the session limit ({self.admitted} of {limit})"
        return None

    @property
    def ready(self) -> bool:
        return self.readiness() is None


@asynccontextmanager
async def open_server(config: ServerConfig, test_modes: TestModes | None = None) -> AsyncIterator[Server]:
    """Load the engine, listen, and serve until the block exits, which cancels whatever still runs (`shut_down`
    first lets the sessions finish). `server.port` is the bound port; `test_modes`, the Server's."""
    ssl_context = tls_context(config.certfile, config.keyfile) if config.certfile else None
    async with open_admin(config.admin_host, config.admin_port) as admin, \
            open_engine(config.engine, workers=config.decode_workers, **config.engine_options) as engine:
        server = Server(config, engine, test_modes)
        server.admin_port, admin.server = admin.port, server  # the admin port is up while the engine loads
        async with trio.open_nursery() as nursery:  # connections run here: closing the listeners leaves them be
            listeners = await open_tcp_listeners(config.host, config.port, reuse_port=config.reuse_port)
            if ssl_context is not None:
                listeners = [trio.SSLListener(listener, ssl_context, https_compatible=True) for listener in listeners]
            server._accepting = trio.CancelScope()
            _summarise_accept_errors()
            serve_stream = functools.partial(_serve_stream, server.handle, config.limits.max_message_bytes,
                                             handshakes=server.handshakes, metrics=server.metrics)

            async def accept(task_status=trio.TASK_STATUS_IGNORED) -> None:
                with server._accepting:  # trio.serve_listeners closes the listeners on its way out
                    await trio.serve_listeners(serve_stream, listeners, handler_nursery=nursery,
                                               task_status=task_status)

            await nursery.start(accept)
            server.port = _port(listeners[0])
            host = f"[{config.host}]" if ":" in (config.host or "") else config.host  # an IPv6 address, in brackets
            url = f"{'wss' if ssl_context else 'ws'}://{host}:{server.port}"
            log.info("stt listening on %s (engine %s)", url, engine.name, extra={"url": url, "engine": engine.name})
            _log_session_limit(server)
            from stt.startup import startup_lines  # (stt.startup imports this module)

            for message, fields in startup_lines(config, url, engine.name, server.admin_port):
                log.info(message, extra=fields)
            yield server
            nursery.cancel_scope.cancel()


def _log_session_limit(server: Server) -> None:
    """Say at start-up how many sessions the server admits at once, and where the number comes from."""
    limit, asked = server.max_sessions, server.config.max_sessions
    capacity = server.engine.capacity
    if asked == AUTO:
        source = (f"auto: the capacity of the {server.engine.name} engine" if capacity
                  else f"auto: the {server.engine.name} engine's capacity is not known")
    else:
        source = "--max-sessions"
    log.info("session limit: %s (%s)", limit or "none", source,
             extra={"max_sessions": limit, "capacity": capacity, "engine": server.engine.name})


#: Seconds a closing connection has to finish its close handshake (trio-websocket's default). The time a client
#: has for its upgrade request is HandshakeLimits.timeout (--handshake-timeout).
CLOSE_TIMEOUT = 60.0
LINGER_TIMEOUT = 2.0  # seconds to read what a client still sends after the close, before the socket closes


class _ServerWSConnection(WSConnection):
    """wsproto's server connection, which keeps for _serve_stream the HTTP answer to a request that is no
    WebSocket upgrade (`refusal`: status, body), instead of the bare 400 trio-websocket would send for it."""

    refusal: tuple[int, str] | None = None

    def receive_data(self, data: bytes | None) -> None:
        if self.connection is not None:
            return super().receive_data(data)
        try:
            super().receive_data(data)
        except RemoteProtocolError as exc:
            self.refusal = _handshake_refusal(self.handshake, str(exc))
            raise RemoteProtocolError(str(exc), event_hint=None) from None  # _serve_stream answers it


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
    from stt.cli import DIALECT_PATHS  # the text of `stt serve --help` (stt.cli imports this module)

    return (f"stt {__version__}: a real-time speech-to-text server; it speaks WebSocket only (ws:// or wss://). "
            f"{DIALECT_PATHS} Docs: docs/README.md of the stt source, and `stt serve --help`. Health and metrics "
            f"are on the admin port (--admin-port: /healthz, /readyz, /metrics).\n")


class _ServerConnection(trio_websocket.WebSocketConnection):
    """trio-websocket's connection, less what makes wsproto raise once the server has sent its close frame
    (trio-websocket 0.12, its issue #184): a ping is answered only while the connection is open, and a message
    over the size limit that arrives after the close frame is dropped, not answered with a second close. And it
    leaves the socket open after the close handshake: _serve_stream closes it, gently (_linger), once the
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


async def _serve_stream(handle, max_message_bytes: int, stream: trio.abc.Stream, *,
                        handshakes: PendingHandshakes | None = None, metrics: Metrics | None = None) -> None:
    """One TCP (or TLS) connection: the WebSocket handshake, then `handle(request)`. What
    trio_websocket.WebSocketServer does per connection, with these differences (trio-websocket 0.12, its issue
    #184): a failure in the connection's own reader task ends this connection, not the server (wsproto refused
    to answer a ping or an oversized frame once the server had begun to close, which _ServerConnection now
    avoids); the reader task is cancelled once the connection is done, where trio-websocket may leave it
    waiting forever to deliver a message that nobody will read (a client that went away while the server was
    closing); and the handshake is bounded (`handshakes`: its time, and how many are pending at once, in all
    and from one address): a connection over a count is answered 503, one that is too slow 408, a request that
    is no WebSocket upgrade its answer (426 and what this server is, or 400), and one that closes during the
    handshake is let go at once. A failure of the server's own ends the connection as an internal error: an
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
                    log.info("connection from %s: no WebSocket upgrade: %d", address, answer[0],
                             extra={"reason": "not_websocket", "status": answer[0]})
                    metrics.reject("none", "not_websocket")
                if request is not None:
                    handshake_done()  # handle() has its own limits: the sessions'
                    try:
                        await handle(request)  # which never raises: a failure ends that connection (1011)
                    finally:
                        with trio.move_on_after(CLOSE_TIMEOUT):  # the session has closed it, unless cancelled
                            await request._connection.aclose(1011, "internal error")  # closed already: no-op
                nursery.cancel_scope.cancel()
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


def _summarise_accept_errors() -> None:
    """Put _AcceptErrorSummary on trio's accept-loop logger, once per process."""
    logger = logging.getLogger("trio.serve_listeners")
    if not any(isinstance(f, _AcceptErrorSummary) for f in logger.filters):
        logger.addFilter(_AcceptErrorSummary())


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


async def serve(config: ServerConfig, *, supervisor=None, test_modes: TestModes | None = None) -> None:
    """Serve until SIGTERM or SIGINT, then shut down gracefully (`shut_down`, config.shutdown_grace); a second
    signal ends what is left at once. A worker of `serve_workers` also takes orders from its `supervisor` (the
    reading end of a multiprocessing Pipe): DRAIN begins a graceful shutdown, or adds nothing to one under way
    (the signal may have reached the worker too); NOW stops at once; a supervisor that is gone counts as DRAIN."""
    with trio.open_signal_receiver(*STOP_SIGNALS) as signals:  # before the listener opens: no signal is lost
        async with open_server(config, test_modes) as server, trio.open_nursery() as nursery:
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


def serve_workers(config: ServerConfig, workers: int, *, log_level: str = "info", log_format: str = "auto",
                  test_modes: TestModes | None = None) -> int:
    """Run `workers` server processes on config.port (SO_REUSEPORT: the kernel spreads connections among them),
    each with its own engine of config.decode_workers decoders (default: the cores shared out), and supervise
    them: SIGTERM or SIGINT tells them all to drain, a second one to stop at once. A worker that exits by itself
    (killed, crashed) is restarted, after a back-off, while the others go on serving the port; when workers die
    MAX_RESTARTS times within RESTART_WINDOW seconds the supervisor gives up and stops them all. Returns 0 when
    every worker exited cleanly at the end, else 1 (also when it gave up)."""
    return trio.run(_supervise, worker_config(config, workers), workers, log_level, log_format, test_modes)


def worker_config(config: ServerConfig, workers: int) -> ServerConfig:
    """The config of each of `workers` processes: the port shared, and the cores shared out among their engines
    unless config.decode_workers says how many decoders each has."""
    decoders = config.decode_workers or max(1, (os.cpu_count() or 1) // workers)
    return attrs.evolve(config, decode_workers=decoders, reuse_port=True)


#: A worker that dies is restarted after a back-off that doubles with each death in the last RESTART_WINDOW
#: seconds (RESTART_BACKOFF, at most RESTART_BACKOFF_MAX); at MAX_RESTARTS deaths within the window the supervisor
#: gives up and stops the service: the workers are dying in a loop (a bad engine, no memory), not by accident.
RESTART_BACKOFF = 0.5
RESTART_BACKOFF_MAX = 8.0
RESTART_WINDOW = 60.0
MAX_RESTARTS = 5


async def _supervise(config: ServerConfig, count: int, log_level: str, log_format: str,
                     test_modes: TestModes | None = None) -> int:
    context = multiprocessing.get_context("spawn")  # trio runs threads; forking a threaded process is unsafe
    with trio.open_signal_receiver(*STOP_SIGNALS) as signals, _shared_port(config.host, config.port) as port:
        config = attrs.evolve(config, port=port)
        workers: dict[int, tuple] = {}  # index -> (process, the writing end of its orders)

        def start(index: int):
            reading, writing = context.Pipe(duplex=False)
            process = context.Process(target=_worker_main, name=f"stt-worker-{index}",
                                      args=(config, index, count, reading, log_level, log_format, test_modes))
            process.start()
            reading.close()
            workers[index] = (process, writing)
            return process

        for index in range(1, count + 1):
            start(index)
        log.info("stt: %d workers on port %d (pids %s)", count, port,
                 ", ".join(str(p.pid) for p, _ in workers.values()),
                 extra={"workers": [p.pid for p, _ in workers.values()], "port": port})
        stopping = failed = False
        stopped = trio.Event()  # set with `stopping`: a restart waiting out its back-off gives up
        deaths: collections.deque[float] = collections.deque()  # when workers died unasked, within RESTART_WINDOW

        def stop_all(order: str) -> None:
            nonlocal stopping
            stopping = True
            stopped.set()
            for _, writing in workers.values():
                try:
                    writing.send_bytes(order.encode())
                except OSError:  # that worker is gone
                    pass

        async def relay_signals() -> None:
            async for signum in signals:
                order = NOW if stopping else DRAIN
                log.info("%s: telling the workers: %s", signal.Signals(signum).name, order)
                stop_all(order)

        async def watch(index: int, process) -> None:
            nonlocal failed
            while True:
                await trio.lowlevel.wait_readable(process.sentinel)
                process.join()
                with trio.move_on_after(0.2):  # a signal to the whole service may reach the parent a moment later
                    await stopped.wait()
                if stopping:
                    failed = failed or process.exitcode != 0
                    return
                # Killed, crashed, or signalled by someone else: the others go on serving the port; restart it.
                now = trio.current_time()
                deaths.append(now)
                while deaths and deaths[0] < now - RESTART_WINDOW:
                    deaths.popleft()
                if len(deaths) >= MAX_RESTARTS:
                    log.error("worker %d (pid %d) exited (%s): %d workers have died within %g s; giving up, "
                              "stopping the others", index, process.pid, process.exitcode, len(deaths),
                              RESTART_WINDOW, extra={"worker": index, "exit_code": process.exitcode})
                    failed = True
                    stop_all(DRAIN)
                    return
                delay = min(RESTART_BACKOFF * 2 ** (len(deaths) - 1), RESTART_BACKOFF_MAX)
                log.error("worker %d (pid %d) exited (%s): restarting it in %g s", index, process.pid,
                          process.exitcode, delay, extra={"worker": index, "exit_code": process.exitcode})
                workers[index][1].close()
                with trio.move_on_after(delay):
                    await stopped.wait()
                if stopping:
                    return
                try:
                    process = start(index)
                except OSError as exc:  # no process could be made (out of memory, of pids): nothing to retry on
                    log.error("worker %d could not be restarted: %s; stopping the others", index, exc)
                    failed = True
                    stop_all(DRAIN)
                    return
                log.info("worker %d restarted (pid %d)", index, process.pid, extra={"worker": index})

        async with trio.open_nursery() as nursery:
            nursery.start_soon(relay_signals)
            async with trio.open_nursery() as watching:
                for index, (process, _) in list(workers.items()):
                    watching.start_soon(watch, index, process)
            nursery.cancel_scope.cancel()
        for _, writing in workers.values():
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


def _worker_main(config: ServerConfig, index: int, count: int, supervisor, log_level: str, log_format: str,
                 test_modes: TestModes | None = None) -> None:
    """One worker process of serve_workers (spawned: a fresh interpreter, so logging is set up again)."""
    configure_logging(log_level, log_format)
    log.info("worker %d of %d (pid %d)", index, count, os.getpid(), extra={"worker": index})
    trio.run(functools.partial(serve, config, supervisor=supervisor, test_modes=test_modes))
