"""Fault injection: a client (or the server's operator) asks the server to misbehave the way a real service
sometimes does, to see how the client copes. This module parses and checks a plan, and carries it out for one
session (`FaultRunner`: which faults are due, and what becomes of each frame the session's writer sends); the
session only hands it what it sends, and ends as the runner's triggers say. Docs: docs/faults.md.

A plan is comma-separated items, given per connection in the `x-stt-fault` header or the `stt_fault` query
parameter (both taken out before the dialect sees the handshake), or for every connection by `stt serve --fault`
(a connection's own plan replaces it):

    drop@2s              after 2 s of audio, close the TCP connection without a close frame (the client sees 1006)
    close=4005@1s        after 1 s of audio, close with this code (any of 1000-4999 that may be sent) and no error
    error=quota_exceeded the dialect's own error of that type, with its close code (as its chart names them);
                         or a rule id of the chart (error=VB-BUSY-001): its error, if any, and its close
    shutdown@3s          the server is going away: its notice where the dialect has one (Scriptix shutting_down),
                         then 1001
    delay=500ms          hold every partial and final this long before sending it
    ack-delay=200ms      hold every acknowledgement of audio this long (Speechmatics AudioAdded)
    stall@3s             after 3 s of audio, send nothing more (stall=2s@3s: for 2 s, then go on); stall alone:
                         nothing at all after the handshake
    duplicate-partials   send every partial twice
    reorder-partials     send each pair of consecutive partials in swapped order
    idle=5s              this session's idle timeout is 5 s (the dialect's idle-timeout error and close)

Times are `<number>s` or `<number>ms`. `@T` counts seconds of the client's audio, decoded; an item without `@T`
happens as soon as the connection is open.

A client's own plan is served only where the operator allows it (`stt serve --allow-client-faults`, implied by
`--conformance`); elsewhere the upgrade is refused with 403 (stt.server). And a client's plan never outlasts the
operator's limits (`within_limits`): its idle timeout, stall and delays are cut to `--idle-timeout` (and to
`--max-session-seconds`, where one is set), so that no client can hold a session slot longer than a silent client
could. The operator's own `--fault` plan is served as it is.
"""

from __future__ import annotations

import math
import re
import time
from typing import Awaitable, Callable

import attrs

from stt.dialects.base import render_shutting_down
from stt.events import AudioAccepted, Final, Partial, ShuttingDown, Violation
from stt.statechart import Chart, Rule

FAULT_HEADER = "x-stt-fault"
FAULT_QUERY = "stt_fault"

#: What an injected close or drop ends the session with: not a chart's rule (the client asked for it).
DROP = Rule("FAULT-DROP", "The server drops the connection without a close frame when the fault plan says so.",
            "connection dropped (injected fault)", close=1006)


class FaultError(ValueError):
    """A fault plan that does not parse, or names an error the dialect does not have; says which item."""


def injected_close(code: int) -> Rule:
    return Rule("FAULT-CLOSE", f"The server closes with {code} when the fault plan says so.",
                f"closed with {code} (injected fault)", close=code)


@attrs.frozen
class Trigger:
    """One thing to do, at `at` seconds of audio (None: as soon as the connection is open)."""

    rule: Rule  # what the session ends with (DROP, an injected close, the dialect's error), or a warning it sends
    at: float | None = None
    shutdown: bool = False  # announce the shutdown first (the dialect's notice, if it has one)


@attrs.frozen
class FaultPlan:
    text: str
    triggers: tuple[Trigger, ...] = ()
    delay: float = 0.0  # seconds before each partial and final
    ack_delay: float = 0.0  # seconds before each acknowledgement of audio
    stall_at: float | None = None  # seconds of audio after which nothing is sent (0: from the start) ...
    stall_for: float = math.inf  # ... for this long
    duplicate_partials: bool = False
    reorder_partials: bool = False
    idle_timeout: float | None = None

    def __bool__(self) -> bool:
        return bool(self.text)


_ITEM = re.compile(r"^(?P<name>[a-z-]+)(?:=(?P<value>[^@]+))?(?:@(?P<at>.+))?$")
_DURATION = re.compile(r"^(?P<number>\d+(?:\.\d+)?)(?P<unit>ms|s)$")
_SENDABLE = range(1000, 5000)
_RESERVED = {1004, 1005, 1006, 1015}  # RFC 6455: never sent in a close frame


def duration(text: str, item: str) -> float:
    match = _DURATION.match(text.strip())
    if not match:
        raise FaultError(f"{item!r}: {text!r} is not a duration (like 500ms or 2s)")
    number = float(match["number"])
    return number / 1000 if match["unit"] == "ms" else number


def parse_faults(text: str, chart: Chart) -> FaultPlan:
    """The plan `text` describes for a dialect whose chart is `chart` (its errors are the ones `error=` may
    name). Raises FaultError naming the first bad item."""
    text = text.strip()
    if not text:
        return FaultPlan("")
    fields: dict = {"triggers": []}
    for item in (part.strip() for part in text.split(",")):
        match = _ITEM.match(item)
        if not match:
            raise FaultError(f"{item!r}: an item is NAME, NAME=VALUE, NAME@TIME or NAME=VALUE@TIME")
        name, value, at_text = match["name"], match["value"], match["at"]
        at = duration(at_text, item) if at_text is not None else None

        def needs(value_wanted: bool) -> None:
            if value_wanted and value is None:
                raise FaultError(f"{item!r}: {name} needs a value ({name}=...)")
            if not value_wanted and value is not None:
                raise FaultError(f"{item!r}: {name} takes no value")

        def no_time() -> None:
            if at is not None:
                raise FaultError(f"{item!r}: {name} applies to the whole session: drop the @{at_text}")

        if name == "drop":
            needs(False)
            fields["triggers"].append(Trigger(DROP, at))
        elif name == "close":
            needs(True)
            if not value.isdigit() or int(value) not in _SENDABLE or int(value) in _RESERVED:
                raise FaultError(f"{item!r}: {value} is not a close code a server may send (1000-4999, but not "
                                 "1004, 1005, 1006 or 1015)")
            fields["triggers"].append(Trigger(injected_close(int(value)), at))
        elif name == "error":
            needs(True)
            fields["triggers"].append(Trigger(_error_rule(chart, value, item), at))
        elif name == "shutdown":
            needs(False)
            fields["triggers"].append(Trigger(chart.ending("shutdown"), at, shutdown=True))
        elif name in ("delay", "ack-delay", "idle"):
            needs(True)
            no_time()
            fields[{"delay": "delay", "ack-delay": "ack_delay", "idle": "idle_timeout"}[name]] = duration(value, item)
        elif name == "stall":
            fields["stall_at"] = at if at is not None else 0.0
            if value is not None:
                fields["stall_for"] = duration(value, item)
        elif name in ("duplicate-partials", "reorder-partials"):
            needs(False)
            no_time()
            fields[name.replace("-", "_")] = True
        else:
            raise FaultError(f"{item!r}: unknown fault {name!r} (known: drop, close, error, shutdown, delay, "
                             "ack-delay, stall, duplicate-partials, reorder-partials, idle)")
    if fields.get("idle_timeout") == 0:
        raise FaultError("idle: the timeout must be more than 0")
    fields["triggers"] = tuple(fields["triggers"])
    return FaultPlan(text, **fields)


def within_limits(plan: FaultPlan, idle_timeout: float, max_session_seconds: float = 0.0) -> FaultPlan:
    """A client's `plan`, its waits cut to the operator's limits: its idle timeout, its stall and its delays last
    at most `idle_timeout` (the longest a session may wait on a silent client) and `max_session_seconds` (0: no
    such limit), so that a plan cannot keep a session (and its slot) longer than the server's own limits do."""
    cap = min(idle_timeout, max_session_seconds) if max_session_seconds else idle_timeout

    def capped(seconds: float | None) -> float | None:
        return None if seconds is None else min(seconds, cap)

    return attrs.evolve(plan, idle_timeout=capped(plan.idle_timeout), stall_for=capped(plan.stall_for),
                        delay=capped(plan.delay), ack_delay=capped(plan.ack_delay))


def vendor_errors(chart: Chart) -> list[str]:
    """The error and warning types of a chart's rules: what `error=` may name."""
    return sorted({r.error or r.warning for r in chart.rules.values() if r.error or r.warning})


def _error_rule(chart: Chart, name: str, item: str) -> Rule:
    if name in chart.rules:  # a rule id: V-Blaze's rules have close codes and no error type
        return chart.rules[name]
    for rule in chart.rules.values():
        if name in (rule.error, rule.warning):
            return rule
    raise FaultError(f"{item!r}: the {chart.name} dialect has no error {name!r} (its errors: "
                     f"{', '.join(vendor_errors(chart))}; or a rule id of its chart)")


class FaultRunner:
    """One session's fault plan, carried out: it owns what the plan's carrying out remembers (the timed triggers
    still to come, whether the stall has happened, a partial held back to be sent after the next).

    The session asks it: `limits(limits)`, its limits under the plan (idle=); `at_open()`, the triggers due as
    soon as the connection is open; `due(audio_seconds)`, the timed triggers the audio has now reached (each
    once); and, for every item its writer sends, `await on_send(item, frames)`: the frames to send instead (a
    Trigger's own frames, or the item's delayed, doubled, swapped or held), or None when the session ended
    while the plan held them up. `wait(seconds)` is the session's wait for a fault (until the session ends or
    the connection closes, at the latest), `ended()` whether the session has ended, `audio_seconds()` the audio
    decoded so far. An empty plan changes nothing and never waits."""

    def __init__(self, plan: FaultPlan, dialect, *, wait: Callable[[float], Awaitable[None]],
                 ended: Callable[[], bool], audio_seconds: Callable[[], float]):
        self.plan, self.dialect = plan, dialect
        self._wait, self._ended, self._audio_seconds = wait, ended, audio_seconds
        self._timed = sorted((t for t in plan.triggers if t.at is not None), key=lambda t: t.at)
        self._stalled = False  # the stall has happened
        self._held_partial: list | None = None  # reorder-partials: the partial's frames sent after the next one

    def __bool__(self) -> bool:
        return bool(self.plan)

    @property
    def text(self) -> str:
        return self.plan.text

    def limits(self, limits):
        """A session's limits (stt.session.SessionLimits) under the plan: its idle timeout, where it sets one."""
        return attrs.evolve(limits, idle_timeout=self.plan.idle_timeout) if self.plan.idle_timeout else limits

    def at_open(self) -> list[Trigger]:
        return [t for t in self.plan.triggers if t.at is None]

    def due(self, audio_seconds: float) -> list[Trigger]:
        """The timed triggers that `audio_seconds` of audio have reached and that have not been due before."""
        due = []
        while self._timed and self._timed[0].at <= audio_seconds:
            due.append(self._timed.pop(0))
        return due

    async def on_send(self, item, frames: list) -> list | None:
        """The frames the writer sends for `item` (whose own are `frames`: none for a Trigger), or None: the
        session ended meanwhile, and nothing more goes out."""
        if isinstance(item, Trigger):
            frames = self._trigger_frames(item)
        if not self.plan:
            return frames
        frames = await self._faulted(item, frames)
        return None if self._ended() else frames

    def _trigger_frames(self, trigger: Trigger) -> list:
        """What an injected fault sends before it ends the session (if it does): a warning or a non-fatal error
        of the dialect, or its shutdown notice. A fatal error's frame is sent by the session's close, like any
        ending's."""
        if trigger.shutdown:
            return render_shutting_down(self.dialect, ShuttingDown(time.time()))
        if not trigger.rule.fatal:
            return self.dialect.render_violation(Violation(trigger.rule, "injected fault"))
        return []

    async def _faulted(self, item, frames: list) -> list:
        """The frames of `item` as the fault plan would have them: later, twice, swapped with the next partial,
        or not for a while (a stall)."""
        plan = self.plan
        if plan.stall_at is not None and not self._stalled and (self._audio_seconds() > plan.stall_at or
                                                                 plan.stall_at == 0):
            self._stalled = True
            await self._wait(plan.stall_for)
        if isinstance(item, (Partial, Final)) and plan.delay:
            await self._wait(plan.delay)
        elif isinstance(item, AudioAccepted) and plan.ack_delay:
            await self._wait(plan.ack_delay)
        if isinstance(item, Partial) and frames:
            if plan.duplicate_partials:
                frames = frames + frames
            if plan.reorder_partials:
                held, self._held_partial = self._held_partial, None
                if held is None:
                    self._held_partial = frames
                    return []
                return frames + held
        if self._held_partial is not None and not isinstance(item, AudioAccepted):  # acks may overtake it
            frames, self._held_partial = self._held_partial + frames, None
        return frames
