"""`stt conform URL --dialect X`: the catalogue (catalogue.py) run over the wire against any server that claims a
dialect, one connection per case, with an Autobahn-style verdict per case (report.py).

For each case the runner connects with the profile's handshake (and the API key, the dialect's way), walks the
case's path (sends the client frames; waits for the frame that shows each server event), applies the case's
event and watches what comes back:

    forbidden, fatal      the vendor's error frame (where the dialect sends one), then a close with the rule's code
    forbidden, non-fatal  the vendor's error or warning frame (where it sends one), and the connection open
    transition            no error frame and no close within a short wait (a normal close where the session
                          ends by itself); a server event: its frame; `close`: the close handshake completes

Verdicts: pass; fail (the details say what came instead); non-strict where the case's state is transient over
the wire (the server moves on from it by itself, e.g. Speechmatics `starting`, between StartRecognition and
RecognitionStarted: a frame sent there may be read after the move, and answered as the next state answers);
skipped where the case cannot be driven over the wire (a state the server closes on entering).
"""

from __future__ import annotations

import functools
import sys
import time
from collections import Counter
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import attrs
import trio
from trio_websocket import ConnectionClosed, ConnectionRejected, HandshakeError, open_websocket_url

from stt.conformance.catalogue import Case, cases as catalogue_cases, chart_of, coverage, outcome
from stt.conformance.logbook import REDACTED, redacted
from stt.conformance.profiles import CLOSE, PROFILES, Frame, Profile
from stt.conformance.report import CaseResult, Report, to_html, to_json, to_junit, to_text, utc_now
from stt.statechart import Chart
from stt.redaction import redact

#: At most this long (seconds) the runner watches for an answer that should not come (an error after a
#: transition, a close after a non-fatal rule's answer).
SETTLE = 0.5
#: Connections at once: cases are independent, so a run takes about as long as its slowest few cases.
CONCURRENCY = 4


@attrs.frozen
class Expect:
    """An answer the server may give to a frame: the vendor error (as the profile names it) and close code."""

    what: str  # in words, for the details
    answer: str | None = None  # the error or warning the profile reads from the answer frame; None: none
    close: int | None = None  # the close code; None: the connection stays open
    may_end: bool = False  # a normal close is fine too: the session ends by itself from here


@attrs.frozen
class Seen:
    problems: tuple[str, ...]
    close: int | None
    reason: str = ""

    def __str__(self) -> str:
        problems = ", ".join(self.problems) or "no error frame"
        if self.close is None:
            return f"{problems}, the connection open"
        return f"{problems}, then close {self.close}" + (f" ({self.reason})" if self.reason else "")


def matches(expect: Expect, seen: Seen, normal: int) -> bool:
    if list(seen.problems) != ([expect.answer] if expect.answer else []):
        return False
    if expect.close is not None:
        return seen.close == expect.close
    return seen.close is None or (expect.may_end and seen.close == normal)


def expectation(profile: Profile, chart: Chart, state: str, event: str) -> Expect:
    """What the chart has the server answer to `event` in `state`, as seen on the wire."""
    normal = chart.ending("normal").close
    kind, result = outcome(chart, state, event)
    if kind == "transition":
        may_end = result in profile.ending
        return Expect("acceptance (no error frame, the connection open" + (f" or closed with {normal}" if may_end
                                                                           else "") + ")", may_end=may_end)
    rule = result
    answer = profile.answer(rule)
    said = (f'"{answer}"' if " " in answer else answer) if answer else None  # Scriptix's answers are texts
    if rule.close is not None:
        return Expect(f"{rule.id}: {said + ' then ' if said else 'no error frame, '}close {rule.close}",
                      answer=answer, close=rule.close)
    may_end = state in profile.ending
    return Expect(f"{rule.id}: {said or 'no answer frame (the vendor sends none)'} and the session going on",
                  answer=answer, may_end=may_end)


def alternatives(profile: Profile, chart: Chart, state: str, event: str) -> list[tuple[str, Expect]]:
    """(state, answer) of the states a transient `state` moves on to by itself, in order."""
    normal = chart.ending("normal").close
    out, nxt = [], profile.transient.get(state)
    while nxt is not None and nxt not in [s for s, _ in out]:
        if nxt in profile.closes_on_entry:
            out.append((nxt, Expect(f"the server's normal close ({normal}) as it enters {nxt}", close=normal)))
            break
        out.append((nxt, expectation(profile, chart, nxt, event)))
        nxt = profile.transient.get(nxt)
    return out


def skip_reason(case: Case, profile: Profile) -> str | None:
    if (case.state, case.event) in profile.skip:
        return profile.skip[(case.state, case.event)]
    chart = chart_of(case.dialect)
    if case.state in profile.closes_on_entry and case.event in chart.client_events:
        return (f"the server closes the connection as it enters {case.state} ({chart.states[case.state]}): no "
                f"client frame can reach it there; the sans-IO catalogue checks this case")
    return None


def case_url(base: str, profile: Profile, query: dict[str, str]) -> str:
    """The server's URL with the dialect's path (unless the URL names one) and the profile's query (the URL's
    own parameters win)."""
    parts = urlsplit(base)
    path = parts.path if parts.path not in ("", "/") else profile.path
    merged = {**query, **dict(parse_qsl(parts.query, keep_blank_values=True))}
    return urlunsplit((parts.scheme, parts.netloc, path, urlencode(merged), ""))


class Exchange(list):
    """A case's frames, both ways, as records in the form of a logbook's (stt.conformance.logbook), times in
    seconds since the case began; at most LIMIT of them (the first ones, then one note of how many more), and a
    text frame's first TEXT_LIMIT characters."""

    LIMIT = 60
    TEXT_LIMIT = 2000

    def __init__(self, secret: str | None = None):
        super().__init__()
        self.start = time.monotonic()
        self.left_out = 0
        self.secret = secret  # the API key: never written to a report, should a frame carry it

    def _scrub(self, text: str) -> str:
        return text.replace(self.secret, REDACTED) if self.secret else text

    def _add(self, record: dict) -> None:
        if len(self) >= self.LIMIT:
            self.left_out += 1
            return
        self.append({"t": round(time.monotonic() - self.start, 6), **record})

    def frame(self, kind: str, frame: Frame) -> None:
        if isinstance(frame, str):
            text = self._scrub(frame)
            text = text if len(text) <= self.TEXT_LIMIT else text[:self.TEXT_LIMIT] + f"… ({len(text)} characters)"
            self._add({"kind": kind, "type": "text", "text": text, "bytes": len(frame.encode())})
        else:
            self._add({"kind": kind, "type": "binary", "bytes": len(frame)})

    def note(self, kind: str, **fields) -> None:
        self._add({"kind": kind, **{k: self._scrub(v) if isinstance(v, str) else v for k, v in fields.items()}})

    def records(self) -> tuple[dict, ...]:
        now = round(time.monotonic() - self.start, 6)
        if not self:
            return ({"t": now, "kind": "note", "text": "the connection opened; no frame was sent or received"},)
        more = ({"t": now, "kind": "note", "text": f"{self.left_out} more frames left out"},) if self.left_out else ()
        return (*self, *more)


class Wire:
    """One case's connection: sends a client event's frames, reads the server's, and notes the errors among
    them (as the profile reads them) and the close."""

    def __init__(self, ws, profile: Profile, exchange: list[dict] | None = None):
        self.ws = ws
        self.profile = profile
        self.sent: Counter = Counter()
        self.problems: list[str] = []
        self.close: int | None = None
        self.reason = ""
        self.exchange = Exchange() if exchange is None else exchange  # the frames both ways, for the report

    def seen(self, since: int = 0) -> Seen:
        return Seen(tuple(self.problems[since:]), self.close, self.reason)

    def _closed(self, exc: ConnectionClosed) -> None:
        if self.close is None:
            self.close = exc.reason.code if exc.reason else 1006
            self.reason = (exc.reason.reason or "") if exc.reason else ""
            self.exchange.note("close", code=self.close, reason=self.reason)

    async def send(self, event: str) -> bool:
        """The event's frames; False if the connection closed first."""
        frames = self.profile.client[event](self.sent)
        self.sent[event] += 1
        try:
            for frame in frames:
                await self.ws.send_message(frame)
                self.exchange.frame("in", frame)
        except ConnectionClosed as exc:
            self._closed(exc)
            return False
        return True

    async def receive(self) -> Frame | None:
        """The next frame; None once the connection is closed (frames sent before the close come first)."""
        try:
            frame = await self.ws.get_message()
        except ConnectionClosed as exc:
            self._closed(exc)
            return None
        self.exchange.frame("out", frame)
        label = self.profile.problem(frame)
        if label is not None:
            self.problems.append(label)
        return frame

    async def wait_for(self, predicate) -> Frame | None:
        """Frames until one satisfies `predicate` (returned) or the connection closes (None). The caller
        bounds the wait."""
        while True:
            frame = await self.receive()
            if frame is None or predicate(frame):
                return frame

    async def wait_closed(self) -> None:
        while await self.receive() is not None:
            pass


async def _step(wire: Wire, chart: Chart, event: str, timeout: float) -> bool:
    """Make one event of a path happen: send a client event, or wait for a server event's frame (or, for an
    event no frame shows, the normal close that follows it)."""
    if event in chart.client_events:
        return await wire.send(event)
    shown = wire.profile.server[event].seen
    with trio.move_on_after(timeout):
        if shown is None:
            await wire.wait_closed()
            return wire.close == chart.ending("normal").close
        return await wire.wait_for(shown) is not None
    return False


async def _observe(wire: Wire, expects: list[Expect], since: int, timeout: float, settle: float) -> Seen:
    """Read what the server answers, until it closes, or for as long as one of `expects` may still be
    coming: a close or an answer frame, `timeout`; otherwise `settle` (and `settle` after an answer frame
    that ends no session)."""
    waits = any(e.close is not None or e.answer for e in expects)
    deadline = trio.current_time() + (timeout if waits else settle)
    open_answers = {e.answer for e in expects if e.answer and e.close is None}
    while True:
        with trio.move_on_at(deadline):
            count = len(wire.problems)
            if await wire.receive() is None:
                break
            if len(wire.problems) > count and wire.problems[-1] in open_answers:
                deadline = min(deadline, trio.current_time() + settle)
            continue
        break
    return wire.seen(since)


async def _drive(case: Case, wire: Wire, timeout: float, settle: float) -> tuple[str, str]:
    profile, chart = wire.profile, chart_of(case.dialect)
    normal = chart.ending("normal").close
    if profile.greeting is not None:
        greeted = None
        with trio.move_on_after(timeout):
            greeted = await wire.wait_for(profile.greeting)
        if greeted is None or wire.problems:
            return "fail", f"no greeting within {timeout:g} s: got {wire.seen()}"
    for event, reached in zip(case.path, case.path_states[1:]):
        if not await _step(wire, chart, event, timeout) or wire.problems:
            if reached in profile.closes_on_entry and wire.close == normal and not wire.problems:
                continue  # the close that ends the path is the case's (a `close` from that state)
            return "fail", f"could not reach {case.state}: waiting for {event} (to {reached}), got {wire.seen()}"

    if case.event == CLOSE:
        if case.state in profile.closes_on_entry:
            with trio.move_on_after(timeout):
                await wire.wait_closed()
            if wire.close == normal:
                return "pass", f"the server closed with {normal} as it entered {case.state}"
            return "fail", f"expected the server to close with {normal} on entering {case.state}; got {wire.seen()}"
        with trio.move_on_after(timeout):
            await wire.ws.aclose()
            return "pass", ""
        return "fail", f"the server did not answer the client's close within {timeout:g} s"

    if case.event in chart.server_events:
        shown = profile.server[case.event].seen
        if await _step(wire, chart, case.event, timeout) and not wire.problems:
            return "pass", "" if shown else f"no frame shows {case.event}: the normal close ({normal}) followed"
        what = f"the frame of {case.event}" if shown else f"the normal close ({normal}) after {case.event}"
        return "fail", f"expected {what} within {timeout:g} s; got {wire.seen()}"

    primary = expectation(profile, chart, case.state, case.event)
    others = alternatives(profile, chart, case.state, case.event)
    since = len(wire.problems)
    if not await wire.send(case.event):
        await wire.wait_closed()
        return "fail", f"the connection closed before {case.event} could be sent: got {wire.seen(since)}"
    seen = await _observe(wire, [primary, *(e for _, e in others)], since, timeout, settle)
    if matches(primary, seen, normal):
        notes = []
        if case.rule is not None and primary.answer is None and primary.close is None:
            notes.append("the rule's answer is silence: over the wire it is not told apart from acceptance")
        same = [state for state, e in others if matches(e, seen, normal)]
        if same:
            notes.append(f"{case.state} is transient over the wire; {', '.join(same)} would answer the same")
        return "pass", "; ".join(notes)
    for state, other in others:
        if matches(other, seen, normal):
            return "non-strict", (
                f"{case.state} is transient over the wire (the server moves on to {state} by itself): got {seen}, "
                f"as {state} answers; the chart's answer in {case.state} is {primary.what}")
    also = "".join(f" (or, as in {state}, {e.what})" for state, e in others)
    return "fail", f"expected {primary.what}{also}; got {seen}"


def _reason(exc: BaseException) -> str:
    """What went wrong, in words: trio-websocket's HandshakeError says nothing itself; its cause does."""
    seen, last = exc, exc
    while seen is not None:  # the innermost cause: "Connection refused", not "all attempts ... failed"
        if isinstance(seen, BaseExceptionGroup):
            seen = seen.exceptions[0]
        last = seen
        seen = seen.__cause__ or seen.__context__
    if isinstance(last, OSError) and last.strerror:
        return last.strerror
    return str(last).strip() or str(exc).strip() or type(last).__name__


async def run_case(case: Case, url: str, *, api_key: str | None = None, timeout: float = 5.0,
                   settle: float = SETTLE) -> CaseResult:
    """One case over the wire. A case that did not pass carries its connection's frames (`exchange`); one that
    could not connect carries none, and says why (`details` begin "could not connect" or "the upgrade was
    refused")."""
    profile = PROFILES[case.dialect]
    start = time.monotonic()
    exchange = Exchange(api_key)
    opened = False

    def result(verdict: str, details: str = "") -> CaseResult:
        shown = opened and verdict not in ("pass", "skipped")
        return CaseResult(id=case.id, requirement=case.requirement, verdict=verdict,
                          rule=case.rule.id if case.rule else None, details=redact(details, [api_key]),
                          duration=round(time.monotonic() - start, 3), exchange=exchange.records() if shown else ())

    reason = skip_reason(case, profile)
    if reason is not None:
        return result("skipped", reason)
    query, headers = profile.credentials(api_key)
    target = case_url(url, profile, query)
    verdict: tuple[str, str] | None = None
    with trio.move_on_after(timeout * (len(case.path) + 4)):
        try:
            async with open_websocket_url(target, extra_headers=[(k.encode(), v.encode()) for k, v in headers.items()],
                                          connect_timeout=timeout, disconnect_timeout=timeout) as ws:
                opened = True
                verdict = await _drive(case, Wire(ws, profile, exchange), timeout, settle)
        except ConnectionRejected as exc:
            body = (exc.body or b"").decode("utf-8", "replace").strip()
            return result("fail", f"the upgrade was refused: HTTP {exc.status_code}" + (f" {body}" if body else ""))
        except (HandshakeError, OSError) as exc:
            if verdict is None:  # a timeout closing after the verdict does not change it
                return result("fail", f"{NO_CONNECTION} {target}: {_reason(exc)}")
    if verdict is None:
        return result("fail", f"the case did not finish within {timeout * (len(case.path) + 4):g} s")
    return result(*verdict)


#: How the details of a case that could not open its connection begin.
NO_CONNECTION = "could not connect to"


class Unreachable(Exception):
    """Nothing answers at the URL: no case can run."""


async def check_reachable(url: str, timeout: float) -> None:
    """A TCP connection to the URL's host and port, closed at once; Unreachable (saying why) if none opens."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "wss" else 80)
    try:
        with trio.fail_after(timeout):
            stream = await trio.open_tcp_stream(parts.hostname or "", port)
    except (OSError, trio.TooSlowError) as exc:
        why = f"no answer within {timeout:g} s" if isinstance(exc, trio.TooSlowError) else _reason(exc)
        raise Unreachable(f"cannot connect to {parts.hostname}:{port} ({url}): {why}") from None
    await stream.aclose()


async def run_catalogue(url: str, dialect: str, *, api_key: str | None = None, pattern: str | None = None,
                        timeout: float = 5.0, settle: float | None = None,
                        concurrency: int = CONCURRENCY) -> Report:
    """Every case of the dialect's catalogue whose id contains `pattern`, against the server at `url`.
    Unreachable when nothing answers at the URL's host and port."""
    if urlsplit(url).scheme not in ("ws", "wss"):
        raise ValueError(f"{url!r} is not a ws:// or wss:// URL")
    chart = chart_of(dialect)
    chosen = [c for c in catalogue_cases(dialect) if pattern is None or pattern in c.id]
    if chosen:
        await check_reachable(url, timeout)
    settle = min(SETTLE, timeout / 4) if settle is None else settle
    results: list[CaseResult | None] = [None] * len(chosen)
    limiter = trio.CapacityLimiter(max(1, concurrency))

    async def one(i: int, case: Case) -> None:
        async with limiter:
            results[i] = await run_case(case, url, api_key=api_key, timeout=timeout, settle=settle)

    async with trio.open_nursery() as nursery:
        for i, case in enumerate(chosen):
            nursery.start_soon(one, i, case)
    # Coverage over the wire: the cases run, whatever their verdict; not those skipped, nor those whose
    # connection did not open (refused, or nothing listening): they exercised nothing.
    ran = [case for case, result in zip(chosen, results) if result.verdict != "skipped"
           and not result.details.startswith((NO_CONNECTION, "the upgrade was refused"))]
    return Report(kind="server", title=f"{chart.title}: server conformance", subject=_without_secrets(url),
                  dialect=dialect, cases=tuple(results), created=utc_now(), coverage=coverage(dialect, ran))


def _without_secrets(url: str) -> str:
    """The URL with the values of credential parameters (api_key, token, ...) replaced by "<redacted>"."""
    parts = urlsplit(url)
    query = redacted(dict(parse_qsl(parts.query, keep_blank_values=True)))
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query, safe="<>"), parts.fragment))


def conform_command(args) -> int:
    """stt conform: run, print the table and the summary, write the reports asked for. 1 when a case failed,
    2 when the URL is not ws:// or wss://, nothing answers there, or no case id contains --cases."""
    try:
        report = trio.run(functools.partial(run_catalogue, args.url, args.dialect, api_key=args.api_key,
                                            pattern=args.cases, timeout=args.timeout,
                                            concurrency=args.concurrency))
    except (ValueError, Unreachable) as exc:
        print(f"stt conform: {exc}", file=sys.stderr)
        return 2
    if not report.cases:
        print(f"stt conform: no {args.dialect} case id contains {args.cases!r}", file=sys.stderr)
        return 2
    print(f"{report.title}: {report.subject}")
    print(to_text(report), end="")
    for option, render in (("json", to_json), ("html", to_html), ("junit", to_junit)):
        path = getattr(args, option, None)
        if path:
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(render(report), encoding="utf-8")
            print(f"wrote {path}")
    return 1 if any(c.failed for c in report.cases) else 0


__all__ = ["Expect", "Seen", "Unreachable", "conform_command", "run_case", "run_catalogue"]
