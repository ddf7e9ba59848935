"""`stt replay LOGBOOK URL`: send a recorded session's client frames to a server again, with their timing, and
print what the server answers, one frame a line.

The frames go to URL plus the logbook's path and query (a query value the logbook redacted is left out, with a
warning: pass credentials with --header), with the recorded session's fault plan, if it had one, in the
x-stt-fault header (unless --header gives one). Each client frame leaves at its recorded offset from the first one,
divided by the speed (0: no waiting), while a second task prints the server's frames as they arrive. After the
last frame the replay waits for the server to close; where the recorded client ended the session itself (the
"client_closed" and "dropped" endings), the replay closes at the recorded moment instead. The exit status
says whether the server ended the session as the recording says it did.
"""

from __future__ import annotations

import sys
import urllib.parse
from functools import partial
from typing import Callable, Iterable, Sequence

import trio
from trio_websocket import ConnectionClosed, ConnectionRejected, ConnectionTimeout, HandshakeError, open_websocket_url

from stt.conformance.logbook import REDACTED, client_frames, payload, read_logbook
from stt.faults import FAULT_HEADER

#: Endings in which the client, not the server, ended the session: the replay closes as the client did.
ENDED_BY_CLIENT = ("client_closed", "dropped")
CLOSE_TIMEOUT = 10.0  # seconds to wait for the server to close after the last frame
CONNECT_TIMEOUT = 10.0
MAX_MESSAGE = 64 << 20  # the server's frames we accept (a replay prints them; it does not judge their size)
#: Close codes a peer may not send in a close frame (RFC 6455 §7.4.1).
_UNSENDABLE = {1005, 1006, 1015}


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


def replay_url(base: str, opened: dict, warn: Callable[[str], None] = _stderr) -> str:
    """`base` with the open record's path appended and its query (redacted values left out, with a warning)."""
    parts = urllib.parse.urlsplit(base)
    query = opened.get("query") or {}
    dropped = [name for name, value in query.items() if value == REDACTED]
    if dropped:
        warn(f"replay: the logbook redacted the query parameter{'s' if len(dropped) > 1 else ''} "
             f"{', '.join(dropped)}: left out")
    kept = [(name, value) for name, value in query.items() if value != REDACTED]
    joined = "&".join(q for q in (parts.query, urllib.parse.urlencode(kept, doseq=True)) if q)
    path = parts.path.rstrip("/") + (opened.get("path") or "/")
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, joined, ""))


async def replay(records: Sequence[dict], url: str, *, speed: float = 1.0, headers: Iterable[tuple[str, str]] = (),
                 out: Callable[[str], None] = print, warn: Callable[[str], None] = _stderr,
                 close_timeout: float = CLOSE_TIMEOUT) -> int | None:
    """Replay a logbook's client frames to url (see the module docstring), printing the server's frames.

    Returns the close code the server sent, or None when the server did not close: the replay then closed,
    at the recorded moment where the recorded client ended the session, else after close_timeout with 1000.
    Raises HandshakeError when the connection or the handshake fails.
    """
    target = replay_url(url, records[0], warn)
    frames = list(client_frames(records))
    close = next((r for r in reversed(records) if r["kind"] == "close"), None)
    client_ends = close is not None and close.get("ending") in ENDED_BY_CLIENT
    headers = list(headers)
    given = {name.lower() for name, _ in headers}
    faults = records[0].get("faults") or ""
    if faults and FAULT_HEADER not in given:  # the recorded session's faults, asked again (stt.faults)
        headers.append((FAULT_HEADER, faults))
    for name, value in (records[0].get("headers") or {}).items():
        if value == REDACTED and name.lower() not in given and name.lower() != "sec-websocket-key":
            warn(f"replay: the logbook redacted the {name} header: pass it with --header if the server needs it")

    async with open_websocket_url(target, extra_headers=[(n, v) for n, v in headers],
                                  connect_timeout=CONNECT_TIMEOUT, max_message_size=MAX_MESSAGE) as ws:
        opened = trio.current_time()

        def stamp() -> str:
            return f"{trio.current_time() - opened:.3f}"

        server_closed = trio.Event()
        closed_by_us = False

        async def receive() -> None:
            try:
                while True:
                    message = await ws.get_message()
                    if isinstance(message, str):
                        out(f"{stamp()}  {message}")
                    else:
                        out(f"{stamp()}  binary {len(message)} bytes")
            except ConnectionClosed:
                pass
            if not closed_by_us:
                server_closed.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(receive)
            first = frames[0]["t"] if frames else 0.0
            start = trio.current_time()

            def due(t: float) -> float:
                return start + (t - first) / speed if speed > 0 else start

            try:
                for record in frames:
                    await trio.sleep_until(due(record["t"]))
                    await ws.send_message(payload(record))
            except ConnectionClosed:
                pass  # the server closed: the receiver has seen it
            if client_ends:
                with trio.move_on_at(max(due(close["t"]), trio.current_time())):
                    await server_closed.wait()
            else:
                with trio.move_on_after(close_timeout):
                    await server_closed.wait()
            if not server_closed.is_set():
                code = close["code"] if client_ends and close["code"] not in _UNSENDABLE else 1000
                if not client_ends:
                    out(f"{stamp()}  the server did not close within {close_timeout:g} s: closing with {code}")
                closed_by_us = True
                await ws.aclose(code, "replay done")
            nursery.cancel_scope.cancel()

    reason = ws.closed
    who = "closed by the replay" if closed_by_us else "closed"
    out(f"{stamp()}  {who} {reason.code} ({reason.name})" + (f" {reason.reason}" if reason.reason else ""))
    return None if closed_by_us else reason.code


async def replay_and_compare(records: Sequence[dict], url: str, *, speed: float = 1.0,
                             headers: Iterable[tuple[str, str]] = (), out: Callable[[str], None] = print,
                             warn: Callable[[str], None] = _stderr, close_timeout: float = CLOSE_TIMEOUT) -> int:
    """Replay, then the exit status: 0 when the session ended as recorded (the server closed with the recorded
    code; or, where the client ended it, the server did not close first), 1 when not, 2 when no session began."""
    try:
        code = await replay(records, url, speed=speed, headers=headers, out=out, warn=warn,
                            close_timeout=close_timeout)
    except ConnectionRejected as exc:
        body = (exc.body or b"").decode("utf-8", "replace").strip()
        warn(f"replay: {url}: the server rejected the handshake: HTTP {exc.status_code}"
             + (f": {body}" if body else ""))
        return 2
    except ConnectionTimeout:
        warn(f"replay: {url}: the connection timed out after {CONNECT_TIMEOUT:g} s")
        return 2
    except (HandshakeError, OSError) as exc:
        cause = exc.__cause__ or exc.__context__ or exc
        warn(f"replay: {url}: cannot connect: {cause}")
        return 2
    close = next((r for r in reversed(records) if r["kind"] == "close"), None)
    if close is None:
        warn("replay: the logbook has no close record: nothing to compare the ending with")
        return 1
    if close.get("ending") in ENDED_BY_CLIENT:
        if code is None:
            return 0
        warn(f"replay: the server closed with {code}; in the logbook the client ended the session "
             f"({close.get('ending')}, {close['code']})")
        return 1
    if code == close["code"]:
        return 0
    got = "did not close" if code is None else f"closed with {code}"
    warn(f"replay: the server {got}; the logbook says {close['code']} ({close.get('ending')} {close.get('rule')})")
    return 1


def parse_header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise ValueError(f"--header {text!r}: expected NAME:VALUE")
    return name.strip(), value.strip()


def replay_command(args) -> int:
    """`stt replay LOGBOOK URL [--speed F] [--header NAME:VALUE ...]`."""
    try:
        records = read_logbook(args.logbook)
        headers = [parse_header(h) for h in args.header]
    except (OSError, ValueError) as exc:
        _stderr(f"replay: {exc}")
        return 2
    if not args.speed >= 0:
        _stderr(f"replay: --speed must be 0 or more, not {args.speed}")
        return 2
    return trio.run(partial(replay_and_compare, records, args.url, speed=args.speed, headers=headers))
