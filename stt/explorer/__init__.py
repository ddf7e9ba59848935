"""The protocol explorer: a page served by `stt serve` over plain HTTP on the WebSocket port (`--no-explorer`
turns it off), read-only, behind the API key when keys are configured. The page is a client of a dialect (it
sends the vendor's own frames), draws the dialect's chart with the current state, logs every frame, and watches
any live session of the server through the live feed (stt.explorer.feed, fed by the recorder hook).

    GET /explore                      the page (index.html; its explorer.css and explorer.js beside it)
    GET /explore/dialects.json        every dialect: its path, how its key comes, its chart (states, rules, ...)
    GET /explore/chart/<dialect>.svg  the chart as SVG (stt.conformance.svg), each state a g[data-state]
    GET /explore/sessions.json        the live sessions (and the last ones that ended)
    GET /explore/events               Server-Sent Events: the session list as it changes
    GET /explore/events?session=ID    ... one session's records (its last ones first), ?tag=TAG: the session
                                      that opens with stt_watch=TAG (the page's own)

With keys configured, every route wants one: `?key=KEY` (the page then keeps it in a cookie for its other
requests, HttpOnly, SameSite=Strict, path /explore), `Authorization: Bearer KEY`, or that cookie; 401 without.
"""

from __future__ import annotations

import json
import logging
import urllib.parse
from importlib import resources
from typing import Callable

import attrs
import trio

from stt import __version__
from stt.conformance.svg import state_diagram
from stt.dialects import DIALECTS
from stt.explorer.feed import Hub
from stt.statechart import refusals
from stt.transport import PlainRequest

log = logging.getLogger("stt.explorer")

PATH = "/explore"
COOKIE = "stt_explorer_key"
MAX_FEEDS = 32  # Server-Sent Events subscribers at once; more are answered 503
SEND_TIMEOUT = 10.0  # seconds a subscriber may take to read what is sent (its socket buffer full): then it is dropped
HEARTBEAT = 15.0  # seconds between comments on an idle feed, so that a client that left is noticed
ASSETS = {"explorer.css": "text/css; charset=utf-8", "explorer.js": "text/javascript; charset=utf-8"}
#: The page may load and connect to nothing but this server (its own WebSocket sessions included).
CSP = "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; media-src 'self' blob:"
_TEXT = "text/plain; charset=utf-8"
_REASONS = {200: "OK", 302: "Found", 401: "Unauthorized", 404: "Not Found", 405: "Method Not Allowed",
            503: "Service Unavailable"}


def asset(name: str) -> bytes:
    return resources.files("stt.explorer").joinpath(name).read_bytes()


def dialect_table(client_faults: bool, keys_required: bool) -> dict:
    """What the page knows of the server: each dialect's path, key and chart."""
    dialects = []
    for dialect in DIALECTS:
        chart = dialect.chart
        dialects.append({
            "name": dialect.name, "title": dialect.title, "path": dialect.routes[0].template,
            "credentials": [{"kind": c.kind, "name": c.name} for c in dialect.credentials],
            "subprotocol": getattr(dialect, "subprotocol", None),
            "chart": {"title": chart.title, "initial": chart.initial, "states": chart.states,
                      "final": sorted(chart.final), "client_events": chart.client_events,
                      "server_events": chart.server_events,
                      "transitions": [[t.source, t.event, t.target] for t in chart.transitions],
                      "forbidden": [[r.state, r.event, r.rule.id] for r in refusals(chart)],
                      "rules": {rule.id: {"requirement": rule.requirement, "error": rule.error or rule.warning,
                                          "message": rule.message, "close": rule.close}
                                for rule in chart.rules.values()}}})
    return {"version": __version__, "client_faults": client_faults, "keys_required": keys_required,
            "dialects": dialects}


@attrs.define
class Explorer:
    """The explorer's routes (`respond`, the server's stt.transport.Pages) and its live feed (`hub`; its `watch`
    goes into the server's TestModes)."""

    allows: Callable[[str | None], bool]  # the server's key check (KeyRing.allows)
    keys_required: bool = False
    client_faults: bool = False  # the server lets connections bring fault plans (the page's fault buttons)
    path: str = PATH
    hub: Hub = attrs.field(factory=Hub)
    feeds: int = 0  # Server-Sent Events subscribers now

    async def respond(self, request: PlainRequest, stream: trio.abc.Stream) -> bool:
        path = request.path
        if path != self.path and not path.startswith(self.path + "/"):
            return False
        try:
            await self._route(request, stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.BusyResourceError, trio.TooSlowError):
            pass  # the client went away, or does not read
        except Exception:  # a bug here must not fail the connection's transport
            log.exception("explorer request %s failed", path)
        return True

    def _key(self, request: PlainRequest, query: dict[str, str]) -> str | None:
        if "key" in query:
            return query["key"]
        authorization = request.headers.get("authorization", "")
        if authorization.lower().startswith("bearer "):
            return authorization[7:].strip()
        for part in request.headers.get("cookie", "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == COOKIE:
                return urllib.parse.unquote(value)
        return None

    async def _route(self, request: PlainRequest, stream: trio.abc.Stream) -> None:
        query = dict(urllib.parse.parse_qsl(request.target.partition("?")[2]))
        rest = request.path[len(self.path):].strip("/")
        if request.method != "GET":
            await send(stream, 405, _TEXT, b"the explorer is read-only: GET only\n", [("Allow", "GET")])
            return
        if rest in ASSETS:  # the page's own code and style: nothing of the server's
            await send(stream, 200, ASSETS[rest], asset(rest))
            return
        key = self._key(request, query)
        if self.keys_required and not self.allows(key):
            await send(stream, 401, _TEXT, b"the explorer wants an API key: ?key=KEY or Authorization: Bearer\n",
                       [("WWW-Authenticate", 'Bearer realm="stt explorer"')])
            return
        if rest == "":
            headers = []
            if self.keys_required and "key" in query:  # the page's other requests carry it from now on
                headers.append(("Set-Cookie", f"{COOKIE}={urllib.parse.quote(key or '')}; Path={self.path}; "
                                              "HttpOnly; SameSite=Strict"))
            headers.append(("Content-Security-Policy", CSP))
            await send(stream, 200, "text/html; charset=utf-8", asset("index.html"), headers)
        elif rest == "dialects.json":
            await send_json(stream, dialect_table(self.client_faults, self.keys_required))
        elif rest == "sessions.json":
            await send_json(stream, {"sessions": self.hub.summaries()})
        elif rest.startswith("chart/") and rest.endswith(".svg"):
            dialect = next((d for d in DIALECTS if d.name == rest[len("chart/"):-len(".svg")]), None)
            if dialect is None:
                await send(stream, 404, _TEXT, f"no dialect {rest[6:-4]!r}\n".encode())
            else:
                await send(stream, 200, "image/svg+xml; charset=utf-8", state_diagram(dialect.chart).encode())
        elif rest == "events":
            await self._events(stream, query.get("session"), query.get("tag"))
        else:
            await send(stream, 404, _TEXT, f"no such explorer page: {request.path}\n".encode())

    async def _events(self, stream: trio.abc.Stream, session: str | None, tag: str | None) -> None:
        if self.feeds >= MAX_FEEDS:
            await send(stream, 503, _TEXT, f"the explorer serves {MAX_FEEDS} live feeds at once\n".encode())
            return
        self.feeds += 1
        try:
            with self.hub.subscribe(session=session, tag=tag) as feed:
                if feed is None:
                    await send(stream, 404, _TEXT, f"no session {session!r} (it may have ended long ago)\n".encode())
                    return
                head = _head(200, "text/event-stream; charset=utf-8", None, [("X-Accel-Buffering", "no")])
                await _send_all(stream, head + b"retry: 2000\n\n")
                while True:
                    records = []
                    with trio.move_on_after(HEARTBEAT):
                        records = await feed.get()
                    if not records and feed.finished:
                        return
                    data = b"".join(b"data: " + json.dumps(r, ensure_ascii=False).encode() + b"\n\n"
                                    for r in records) or b": idle\n\n"
                    await _send_all(stream, data)
        finally:
            self.feeds -= 1


def with_explorer(test_modes, keys, client_faults: bool | None = None):
    """(test modes that tell every session to the explorer too, the Explorer): what `stt serve` runs with."""
    explorer = Explorer(keys.allows, keys_required=len(keys) > 0,
                        client_faults=test_modes.client_faults_allowed if client_faults is None else client_faults)
    return attrs.evolve(test_modes, watch=explorer.hub.watch), explorer


def _head(status: int, content_type: str, length: int | None, headers=()) -> bytes:
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}", f"Content-Type: {content_type}",
             "Cache-Control: no-store", "Connection: close", "X-Content-Type-Options: nosniff"]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _send_all(stream: trio.abc.Stream, data: bytes) -> None:
    with trio.fail_after(SEND_TIMEOUT):
        await stream.send_all(data)


async def send(stream: trio.abc.Stream, status: int, content_type: str, body: bytes, headers=()) -> None:
    try:
        await _send_all(stream, _head(status, content_type, len(body), headers) + body)
    except trio.TooSlowError:
        pass


async def send_json(stream: trio.abc.Stream, value) -> None:
    await send(stream, 200, "application/json", json.dumps(value, ensure_ascii=False).encode())


__all__ = ["PATH", "Explorer", "dialect_table", "with_explorer"]
