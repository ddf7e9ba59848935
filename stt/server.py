"""Accept WebSocket connections, route each by path to its dialect, check its key, run its session."""

from __future__ import annotations

import collections
import hashlib
import hmac
import logging
from contextlib import asynccontextmanager
from typing import AsyncIterator, Iterable

import attrs
import trio
import trio_websocket
from trio_websocket import ConnectionClosed, WebSocketRequest

from stt.dialects import dialect_for
from stt.dialects.base import Handshake, HandshakeRefused
from stt.engines import open_engine
from stt.engines.base import Engine
from stt.session import Session, SessionLimits
from stt.statechart import load_chart

log = logging.getLogger("stt.server")


@attrs.frozen
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 9000
    engine: str = "sphinx"
    decode_workers: int | None = None  # engine worker processes; None: one per core
    engine_options: dict = attrs.field(factory=dict)  # passed to the engine (e.g. the scripted engine's script)
    api_keys: tuple[str, ...] = ()
    limits: SessionLimits = SessionLimits()
    allow_private_urls: bool = False  # stream modes may fetch from loopback/private addresses


class KeyRing:
    """API keys, held as SHA-256 digests and compared in constant time. Empty: every client is let in."""

    def __init__(self, keys: Iterable[str] = ()):
        self._digests = [hashlib.sha256(k.encode()).digest() for k in keys if k]

    def allows(self, key: str | None) -> bool:
        if not self._digests:
            return True
        digest = hashlib.sha256((key or "").encode()).digest()
        # Compare with every key, so the time taken does not say which key came close.
        return any([hmac.compare_digest(digest, d) for d in self._digests])


class Server:
    def __init__(self, config: ServerConfig, engine: Engine):
        self.config = config
        self.engine = engine
        self.keys = KeyRing(config.api_keys)
        self.lifecycle_chart = load_chart("lifecycle")
        self.sessions: set[Session] = set()
        #: (dialect, ending, rule id) -> sessions that ended so; bounded by the number of rules
        self.endings: collections.Counter[tuple[str, str, str]] = collections.Counter()
        #: Rules clients broke without ending their session (warnings, non-fatal errors), by (dialect, rule id).
        self.violations: collections.Counter[tuple[str, str]] = collections.Counter()
        self.port: int | None = None

    async def handle(self, request: WebSocketRequest) -> None:
        """One connection, from handshake to close. Nothing that happens here may stop the server."""
        try:
            await self._handle(request)
        except ConnectionClosed:
            log.info("client went away during the handshake")
        except Exception:
            log.exception("connection failed")

    async def _handle(self, request: WebSocketRequest) -> None:
        handshake = Handshake.from_target(request.path, request.headers)
        lifecycle = self.lifecycle_chart.machine()
        lifecycle.advance("handshake")
        dialect_cls = dialect_for(handshake.path)
        if dialect_cls is None:
            lifecycle.advance("reject")
            log.info("no dialect serves %s: 404", handshake.path)
            await request.reject(404, body=f"no dialect serves the path {handshake.path}\n".encode())
            return
        try:
            dialect = dialect_cls(handshake)
        except HandshakeRefused as refusal:
            lifecycle.advance("reject")
            self.endings[(dialect_cls.name, "refused", str(refusal.status))] += 1
            log.info("%s refused: %s", handshake.path, refusal)
            await request.reject(refusal.status, body=(refusal.body.rstrip("\n") + "\n").encode())
            return
        authorised = self.keys.allows(dialect.credential())
        if not authorised and dialect.rejects_unauthorised:
            lifecycle.advance("reject")
            self.endings[(dialect.name, "unauthorised", dialect.chart.ending("unauthorised").id)] += 1
            log.info("%s: missing or invalid API key: 401", handshake.path)
            await request.reject(401, body=b"missing or invalid API key\n")
            return
        ws = await request.accept()
        lifecycle.advance("accept")
        session = Session(ws, dialect, self.engine, lifecycle, limits=self.config.limits, authorise=self.keys.allows,
                          allow_private_urls=self.config.allow_private_urls)
        self.sessions.add(session)
        try:
            ending = await session.run()
            self.endings[(dialect.name, ending.name, ending.rule.id)] += 1
            for rule_id, count in session.violations.items():
                self.violations[(dialect.name, rule_id)] += count
        finally:
            self.sessions.discard(session)


@asynccontextmanager
async def open_server(config: ServerConfig) -> AsyncIterator[Server]:
    """Load the engine, listen, and serve until the block exits. `server.port` is the bound port."""
    async with open_engine(config.engine, workers=config.decode_workers, **config.engine_options) as engine:
        server = Server(config, engine)
        async with trio.open_nursery() as nursery:
            listener = await nursery.start(
                lambda task_status: trio_websocket.serve_websocket(
                    server.handle,
                    config.host,
                    config.port,
                    ssl_context=None,
                    max_message_size=config.limits.max_message_bytes,
                    task_status=task_status,
                )
            )
            server.port = listener.port
            log.info("stt listening on ws://%s:%d (engine %s)", config.host, server.port, engine.name)
            yield server
            nursery.cancel_scope.cancel()


async def serve(config: ServerConfig) -> None:
    async with open_server(config):
        await trio.sleep_forever()
