"""The catalogue generated from the statecharts, run sans-IO: every transition and every forbidden pair of every
dialect's chart, reached along its case's path with the client profile's frames, and checked against the chart
(tests named after the case ids: speechmatics/forbidden/awaiting_start/AddAudio, ...)."""

from collections import Counter

import pytest

from stt.conformance.catalogue import Case, all_cases, cases, chart_of, coverage, dialect_names, paths
from stt.conformance.profiles import CLOSE, PROFILES
from stt.dialects import dialect_named
from stt.events import Configure, Violation

CASES = all_cases()


class Driver:
    """One dialect, built from the profile's handshake and driven by chart events as the session would."""

    def __init__(self, dialect_name: str):
        self.profile = PROFILES[dialect_name]
        self.chart = chart_of(dialect_name)
        self.dialect = dialect_named(dialect_name)(self.profile.handshake())
        self.sent: Counter = Counter()
        self.config: Configure | None = None
        self.frames: list = list(self.dialect.greeting())
        opened = self.dialect.on_open()
        assert not [e for e in opened if isinstance(e, Violation)], opened
        self._note(opened)

    def _note(self, events: list) -> None:
        for event in events:
            if isinstance(event, Configure):
                self.config = event

    def apply(self, event: str) -> list:
        """Fire one chart event: the events a client event's frames gave (server events give none)."""
        if event == CLOSE:
            self.dialect.machine.advance(CLOSE)  # the session does this when the connection closes
            return []
        if event in self.chart.server_events:
            self.frames += self.dialect.render(self.profile.server[event].make(self.config))
            return []
        frames = self.profile.client[event](self.sent)
        self.sent[event] += 1
        events = [e for frame in frames for e in self.dialect.receive(frame)]
        self._note(events)
        return events

    def walk(self, case: Case) -> None:
        for event, state in zip(case.path, case.path_states[1:]):
            events = self.apply(event)
            assert not [e for e in events if isinstance(e, Violation)], f"{event} on the way: {events}"
            assert self.dialect.machine.state == state, f"after {event}"
        assert self.dialect.machine.state == case.state


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_case(case: Case):
    driver = Driver(case.dialect)
    driver.walk(case)
    events = driver.apply(case.event)
    violations = [e for e in events if isinstance(e, Violation)]
    if case.kind == "transition":
        assert not violations
        assert driver.dialect.machine.state == case.target
        return
    chart = driver.chart
    rule_id = chart.forbidden[(case.state, case.event)]
    assert [v.rule.id for v in violations] == [rule_id]
    violation = violations[0]
    assert violation.rule.close == chart.rule(rule_id).close == case.close
    assert driver.dialect.machine.state == case.state  # a refused event does not move the session
    frames = driver.dialect.render_violation(violation)
    answers = [driver.profile.problem(f) for f in frames]
    expected = driver.profile.answer(violation.rule)
    if expected is not None:  # the vendor's error or warning, of the type (or text) the chart names
        assert expected in answers
        assert expected in (violation.rule.error, violation.rule.warning, violation.rule.message)
    else:  # the vendor sends no error for it: no frame reads as one
        assert not [a for a in answers if a is not None]


@pytest.mark.parametrize("name", dialect_names())
def test_every_transition_and_forbidden_pair_has_a_runnable_case(name):
    chart = chart_of(name)
    assert coverage(name) == {"transitions": [len(chart.transitions)] * 2, "forbidden": [len(chart.forbidden)] * 2}
    ids = [c.id for c in cases(name)]
    assert len(ids) == len(set(ids)) == len(chart.transitions) + len(chart.forbidden)


@pytest.mark.parametrize("name", dialect_names())
def test_every_state_but_the_final_ones_is_reached_by_a_shortest_path(name):
    chart = chart_of(name)
    reach = paths(chart, PROFILES[name].avoid)
    assert set(reach) == set(chart.states)
    assert reach[chart.initial] == ()
    for case in cases(name):
        assert case.path == reach[case.state]
        assert case.path_states[-1] == case.state


def test_cases_carry_the_chart_requirement_and_answer():
    case = next(c for c in CASES if c.id == "speechmatics/forbidden/awaiting_start/AddAudio")
    assert case.rule.id == "SM-ORDER-001" and case.answer == "protocol_error" and case.close == 1003
    assert case.requirement.startswith("SM-ORDER-001: StartRecognition is the first message")
    case = next(c for c in CASES if c.id == "speechmatics/forbidden/draining/AddAudio")
    assert case.answer == "add_audio_after_eos" and case.close is None
    case = next(c for c in CASES if c.id == "voicerun/transition/updated/session.close")
    assert case.target == "closing" and case.requirement.endswith("(moves updated to closing)")
    assert case.path == ("session.update", "session.updated")


def test_coverage_counts_only_the_cases_given():
    some = [c for c in cases("yourvoic") if c.kind == "forbidden"][:1]
    assert coverage("yourvoic", some) == {"transitions": [0, 6], "forbidden": [1, 4]}
