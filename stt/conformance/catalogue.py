"""The conformance catalogue: a case for every transition and every forbidden (state, event) pair of every
dialect's chart, in the form of Autobahn|Testsuite and h2spec (hierarchical ids, the requirement each checks).

    speechmatics/transition/recognizing/AddAudio     AddAudio in recognizing is accepted, the state unchanged
    speechmatics/forbidden/awaiting_start/AddAudio   SM-ORDER-001: Error protocol_error, close 1003

Each case carries the path that reaches its state: the shortest sequence of chart events from the initial
state (breadth-first over the transitions). The client profiles (profiles.py) turn events into frames; the
sans-IO tests (tests/conformance/test_catalogue.py) and the wire runner (runner.py) drive the same cases.
"""

from __future__ import annotations

from collections import deque

import attrs

from stt.conformance.profiles import CLOSE, PROFILES, Profile
from stt.dialects import DIALECTS, dialect_named
from stt.statechart import Accepted, Chart, Rule, UnexpectedEvent, refusals, transition_map, verdict

KINDS = ("transition", "forbidden")


@attrs.frozen
class Case:
    id: str  # <dialect>/<kind>/<state>/<event>
    dialect: str
    kind: str  # "transition" or "forbidden"
    state: str  # where the event is applied
    event: str
    requirement: str
    #: the chart events that reach `state` from the initial state, and the states they pass (initial first)
    path: tuple[str, ...]
    path_states: tuple[str, ...]
    target: str | None = None  # transition: where the event moves the session
    rule: Rule | None = None  # forbidden: the rule the event breaks

    @property
    def answer(self) -> str | None:
        """The vendor error or warning type the chart names for the case's rule (forbidden), else None."""
        return (self.rule.error or self.rule.warning) if self.rule else None

    @property
    def close(self) -> int | None:
        """The close code breaking the rule gets (None: the session goes on, or a transition)."""
        return self.rule.close if self.rule else None


def dialect_names() -> list[str]:
    return [d.name for d in DIALECTS if d.name in PROFILES]


def chart_of(name: str) -> Chart:
    """The dialect's chart, with the lifecycle's endings."""
    return dialect_named(name).chart


def paths(chart: Chart, avoid: frozenset[tuple[str, str]] = frozenset()) -> dict[str, tuple[str, ...]]:
    """state -> the shortest sequence of events reaching it from the initial state. Transitions in `avoid` are
    taken only to reach a state that nothing else reaches; `close` only to reach the state it alone leads to."""
    found: dict[str, tuple[str, ...]] = {chart.initial: ()}
    for allowed in (lambda t: (t.source, t.event) not in avoid and t.event != CLOSE, lambda t: True):
        queue = deque(found)
        while queue:
            state = queue.popleft()
            for t in chart.transitions:
                if t.source == state and t.target not in found and allowed(t):
                    found[t.target] = found[state] + (t.event,)
                    queue.append(t.target)
    return found


def states_along(chart: Chart, path: tuple[str, ...]) -> tuple[str, ...]:
    """The states a path passes through, the initial state first."""
    targets = transition_map(chart)
    states = [chart.initial]
    for event in path:
        states.append(targets[(states[-1], event)])
    return tuple(states)


def _event_description(chart: Chart, event: str) -> str:
    text = chart.client_events.get(event) or chart.server_events.get(event) or event
    return text.strip()


def cases(name: str) -> list[Case]:
    """Every case of one dialect: its transitions in chart order, then its forbidden pairs."""
    chart = chart_of(name)
    profile = PROFILES[name]
    reach = paths(chart, profile.avoid)
    out: list[Case] = []
    for t in chart.transitions:
        if t.source not in reach:
            continue  # unreachable: coverage() counts it as not exercised
        path = reach[t.source]
        out.append(Case(
            id=f"{name}/transition/{t.source}/{t.event}", dialect=name, kind="transition", state=t.source,
            event=t.event, requirement=f"{_event_description(chart, t.event)} (moves {t.source} to {t.target})",
            path=path, path_states=states_along(chart, path), target=t.target))
    for refusal in refusals(chart):
        state, event, rule = refusal.state, refusal.event, refusal.rule
        if state not in reach:
            continue
        path = reach[state]
        out.append(Case(
            id=f"{name}/forbidden/{state}/{event}", dialect=name, kind="forbidden", state=state, event=event,
            requirement=f"{rule.id}: {rule.requirement}", path=path, path_states=states_along(chart, path),
            rule=rule))
    return out


def all_cases() -> list[Case]:
    return [case for name in dialect_names() for case in cases(name)]


def runnable(case: Case, profile: Profile | None = None) -> bool:
    """The profile can drive every event of the case's path and the case's own event (sans-IO)."""
    profile = profile or PROFILES[case.dialect]
    return all(event == CLOSE or event in profile.client or event in profile.server
               for event in (*case.path, case.event))


def coverage(name: str, selected: list[Case] | None = None) -> dict[str, list[int]]:
    """{"transitions": [exercised, total], "forbidden": [exercised, total]}: the chart's transitions and
    forbidden pairs that a generated, runnable case exercises (of `selected`, by default all the dialect's)."""
    chart = chart_of(name)
    profile = PROFILES[name]
    chosen = cases(name) if selected is None else selected
    done = {(c.kind, c.state, c.event) for c in chosen if c.dialect == name and runnable(c, profile)}
    transitions = set(transition_map(chart))
    forbidden = {(r.state, r.event) for r in refusals(chart)}
    return {
        "transitions": [len({pair for pair in transitions if ("transition", *pair) in done}), len(transitions)],
        "forbidden": [len({pair for pair in forbidden if ("forbidden", *pair) in done}), len(forbidden)],
    }


def outcome(chart: Chart, state: str, event: str) -> tuple[str, str | Rule]:
    """What the chart says of `event` in `state`: ("transition", target) or ("forbidden", rule)."""
    try:
        said = verdict(chart, state, event)
    except (KeyError, UnexpectedEvent):
        raise KeyError(f"{chart.name}: {event!r} has no outcome in state {state!r}") from None
    return ("transition", said.target) if isinstance(said, Accepted) else ("forbidden", said.rule)


__all__ = ["Case", "KINDS", "all_cases", "cases", "chart_of", "coverage", "dialect_names",
           "outcome", "paths", "runnable", "states_along"]
