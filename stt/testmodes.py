"""Test modes: what a server does to a connection beyond serving it, for testing clients. Recording (stt.recording:
`stt serve --conformance DIR`, `--conformance-opt-in`), and fault injection (stt.faults: the operator's `--fault`
plan, the connection's own where `--allow-client-faults` lets it bring one). The server asks one object, built
by whoever builds the server (the command line: stt.cli; tests: tests/helpers.py), for each connection's:

    modes = test_modes.for_connection(handshake)  # the handshake without stt's own parameters, and what it asked
    faults = modes.fault_plan(dialect.chart)       # ClientFaultsRefused (403), FaultError (400)
    async with modes.recorder(session_id, dialect, faults) as recorder: ...   # NULL_RECORDER when not recorded
                                                   # (nor watched: `watch`, the explorer's live feed)
    await modes.finished(session_id)               # after a recorded session: its report, where one is made

`TestModes()` is no test mode at all. `TestModes.from_config(config)` follows a ServerConfig; its `report` (a
function of the directory and the session id) writes each recorded session's report: the conformance kit gives
it (stt.conformance.checks.modes_with_reports), since this module, below the kit, imports nothing of it.
"""

from __future__ import annotations

import logging
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import AsyncIterator, Callable, ContextManager

import attrs
import trio

from stt.faults import FAULT_HEADER, FAULT_QUERY, FaultPlan, parse_faults, within_limits
from stt.recording import CONFORMANCE_HEADER, CONFORMANCE_QUERY, NULL_RECORDER, FanOut, SessionRecorder, open_logbook

log = logging.getLogger("stt.server")  # what the server does with its connections: its log

ALLOW_CLIENT_FAULTS_FLAG = "--allow-client-faults"
#: A connection may tag itself for whoever watches sessions (the explorer page finds its own session by it).
WATCH_QUERY = "stt_watch"
#: Who watches every session (the explorer's live feed): (session id, dialect, handshake, fault plan, the
#: connection's tag or None) -> a context manager whose recorder is told what the session does while it runs.
Watch = Callable[[str, object, object, str, "str | None"], ContextManager[SessionRecorder]]
#: What a client that asks for a fault plan gets from a server that does not allow them: 403 and this, so that a
#: tester learns at once why no fault came (a plan ignored in silence would make a test pass for no reason).
CLIENT_FAULTS_OFF = (f"fault injection by clients ({FAULT_HEADER}, {FAULT_QUERY}) is off on this server: start it "
                     f"with {ALLOW_CLIENT_FAULTS_FLAG} (or --conformance)\n")


class ClientFaultsRefused(Exception):
    """A connection brought a fault plan of its own, and this server does not allow that (403, CLIENT_FAULTS_OFF)."""

    body = CLIENT_FAULTS_OFF


@attrs.frozen
class TestModes:
    """The test modes a server runs its connections in (the default: none)."""

    __test__ = False  # not a test class (pytest)

    record_in: Path | None = None  # record sessions here: their logbooks, and their reports (`report`)
    record_opt_in: bool = False  # ... only those of connections that ask (CONFORMANCE_HEADER, CONFORMANCE_QUERY)
    faults: str = ""  # the fault plan of every connection that gives none of its own
    allow_client_faults: bool = False  # connections may bring their own plan (implied by record_in)
    idle_timeout: float = 180.0  # the server's limits, which a connection's own plan never outlasts
    max_session_seconds: float = 0.0
    report: Callable[[Path, str], object] | None = None  # (record_in, session id): a recorded session's report
    watch: Watch | None = None  # every session is also told to this (the explorer: stt.explorer); None: nobody

    @classmethod
    def from_config(cls, config, report: Callable[[Path, str], object] | None = None) -> TestModes:
        """The test modes a ServerConfig asks for (its conformance_dir, conformance_opt_in, faults,
        allow_client_faults and limits), with `report` for each recorded session."""
        return cls(record_in=config.conformance_dir, record_opt_in=config.conformance_opt_in, faults=config.faults,
                   allow_client_faults=config.allow_client_faults, idle_timeout=config.limits.idle_timeout,
                   max_session_seconds=config.limits.max_session_seconds, report=report)

    @property
    def client_faults_allowed(self) -> bool:
        """Whether connections may bring their own fault plan: --allow-client-faults, or --conformance."""
        return self.allow_client_faults or self.record_in is not None

    def for_connection(self, handshake) -> ConnectionModes:
        """The handshake without stt's own query parameters, which no dialect knows; the connection's own fault
        plan (None: it gave none); and whether to record it (a recording server, and its opt-in)."""
        query = {k: v for k, v in handshake.query.items() if k not in (FAULT_QUERY, CONFORMANCE_QUERY, WATCH_QUERY)}
        faults = handshake.headers.get(FAULT_HEADER, handshake.query.get(FAULT_QUERY))
        asked = (handshake.headers.get(CONFORMANCE_HEADER) or handshake.query.get(CONFORMANCE_QUERY) or "").lower()
        record = self.record_in is not None and (not self.record_opt_in or asked in ("1", "true", "yes"))
        return ConnectionModes(self, attrs.evolve(handshake, query=query), faults, record,
                               handshake.query.get(WATCH_QUERY))


def startup_lines(config) -> list[tuple[str, dict]]:
    """(message, extra fields) of the start-up block's lines for the test modes a ServerConfig turns on: what
    changes what clients get (recording, a fault plan for every session), so that no one runs one by mistake."""
    lines = []
    if config.conformance_dir is not None:
        who = "connections that ask (x-stt-conformance: 1)" if config.conformance_opt_in else "every session"
        lines.append((f"  TEST MODE: conformance: recording {who} in {config.conformance_dir}",
                      {"test_mode": "conformance", "conformance_dir": str(config.conformance_dir)}))
    if config.faults:
        lines.append((f"  TEST MODE: fault plan for every session without its own: {config.faults}",
                      {"test_mode": "faults", "faults": config.faults}))
    return lines


@attrs.frozen
class ConnectionModes:
    """One connection's test modes (TestModes.for_connection)."""

    modes: TestModes
    handshake: object  # stt.dialects.base.Handshake, without stt's own query parameters
    client_plan: str | None  # the connection's own fault plan (None: it gave none)
    record: bool  # the session is recorded
    tag: str | None = None  # the connection's WATCH_QUERY, for whoever watches

    def fault_plan(self, chart) -> FaultPlan:
        """The plan for a session of the dialect whose chart is `chart`: the connection's own, cut to the
        server's limits, or else the operator's. Raises ClientFaultsRefused where the connection brought one the
        server does not allow (an empty one asks for nothing, and is not refused), FaultError for a bad plan."""
        plan, allowed = self.client_plan, self.modes.client_faults_allowed
        if plan is not None and not allowed and not plan.strip():
            plan = None  # an empty plan asks for nothing, and may not set the operator's --fault aside
        if plan is not None and not allowed:
            raise ClientFaultsRefused()
        faults = parse_faults(plan if plan is not None else self.modes.faults, chart)
        if plan is not None:  # never beyond the operator's own limits
            faults = within_limits(faults, self.modes.idle_timeout, self.modes.max_session_seconds)
        return faults

    @asynccontextmanager
    async def recorder(self, session: str, dialect, faults: FaultPlan) -> AsyncIterator[SessionRecorder]:
        """The session's recorder while the block runs: its logbook (its clock starts now), or NULL_RECORDER;
        with the modes' watcher beside it (FanOut) where something watches."""
        async with AsyncExitStack() as stack:
            recorder: SessionRecorder = NULL_RECORDER
            if self.record:
                opened = trio.current_time()
                recorder = await stack.enter_async_context(open_logbook(
                    self.modes.record_in, session, dialect, self.handshake, faults.text,
                    lambda: trio.current_time() - opened))
            if self.modes.watch is not None:
                watcher = stack.enter_context(self.modes.watch(session, dialect, self.handshake, faults.text,
                                                               self.tag))
                recorder = watcher if recorder is NULL_RECORDER else FanOut(recorder, watcher)
            yield recorder

    async def finished(self, session: str) -> None:
        """After the session: a recorded session's report, where the modes make one (in a worker thread). A report
        that cannot be written is logged, and the server goes on."""
        if not self.record or self.modes.report is None:
            return
        try:
            paths = await trio.to_thread.run_sync(self.modes.report, self.modes.record_in, session)
        except Exception:
            log.exception("session %s: the client-conformance report could not be written", session)
        else:
            log.info("session %s: client-conformance report %s", session, paths[0],
                     extra={"session": session, "report": str(paths[0])})


__all__ = ["ALLOW_CLIENT_FAULTS_FLAG", "CLIENT_FAULTS_OFF", "WATCH_QUERY", "ClientFaultsRefused", "ConnectionModes",
           "TestModes", "Watch", "startup_lines"]
