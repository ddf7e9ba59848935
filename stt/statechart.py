"""Statecharts: protocol state machines kept as data (statecharts/*.yaml), validated on load.

A chart names its states, the events that move between them (`client` events come from frames, `server`
events from what the session does), the transitions, and for every (state, client event) pair that is not a
transition, the rule it breaks. A rule carries an id, the requirement in words, the vendor's error or warning
type, the reason text and the WebSocket close code. `endings` maps the ways a session can end (see ENDINGS)
to rules, so that every close code comes from a chart.

The file format is data only: no code and no expressions. Loading fails on the first problem, naming the file
and the key, so a typo stops the server at start-up, not in the middle of a session.

    machine = load_chart("speechmatics").machine()
    outcome = machine.fire("AddAudio")      # Accepted(...) or Refused(rule)
"""

from __future__ import annotations

import importlib.resources
import logging
import re
from pathlib import Path
from typing import Any, Callable

import attrs
import yaml
from transitions import Machine

#: The ways a session can end that the session itself detects (a dialect's frames end it through rules).
ENDINGS = (
    "normal",  # the dialect's end-of-stream exchange completed
    "dropped",  # the peer went away without a close handshake (the client sees nothing; we log 1006)
    "client_closed",  # the client closed before the exchange completed
    "internal_error",  # the recognizer or the server failed
    "idle_timeout",  # nothing arrived from the client for too long
    "unauthorised",  # missing or wrong API key
    "message_too_large",  # a frame over the size limit
    "bad_audio",  # the client's audio does not decode as the format it declared
    "shutdown",  # the server is going away
    "busy",  # the server's session limits (--max-sessions, --max-sessions-per-key) refuse a new session
    "session_timeout",  # the session reached the server's maximum duration (--max-session-seconds)
    "protocol_error",  # a frame that breaks RFC 6455 (bad opcode, unmasked, reserved bits, ...): Close 1002
    "invalid_utf8",  # a text frame that is not UTF-8: Close 1007
)

# `transitions` logs every state change at INFO; a server runs thousands a second.
logging.getLogger("transitions").setLevel(logging.WARNING)

_TOP_KEYS = {"chart", "title", "source", "initial", "states", "final", "events", "transitions", "forbidden",
             "rules", "endings", "client_rules"}
_REQUIRED_TOP_KEYS = {"chart", "title", "initial", "states", "rules"}
_RULE_KEYS = {"requirement", "message", "error", "warning", "close"}
_CLIENT_RULE_KEYS = {"requirement", "severity", "check", "with"}
#: The checks a chart's client_rules may name (stt.conformance.checks implements each over a logbook):
#: ends_stream: the client ended its stream with the dialect's end message and let the exchange complete;
#: last_seq_no: a count the client reports (with: message, field) equals the audio frames it sent;
#: chunk_duration: each audio frame lasts between with.min_ms and with.max_ms (raw formats);
#: real_time: the client sends audio no faster than with.factor times real time (with.slack_s of leeway);
#: waits_for_start: the client sends nothing after its start message until the server's answer to it.
CLIENT_CHECKS = ("ends_stream", "last_seq_no", "chunk_duration", "real_time", "waits_for_start")
SEVERITIES = ("error", "warning", "info")
_RULE_ID = re.compile(r"^[A-Z]+(-[A-Z0-9]+)+$")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")  # vendor error names: SchemaError, session.expired, DATA-0000


class ChartError(ValueError):
    """A chart file is malformed; the message names the file and the key."""


class UnexpectedEvent(RuntimeError):
    """The server fired an event its chart does not allow in the current state: a bug in the server."""


@attrs.frozen
class Rule:
    """One requirement of a protocol, and what breaking it gets.

    `close` is the WebSocket close code when breaking the rule ends the session (None: the session goes on).
    `error`/`warning` is the vendor's error or warning type sent before, if the dialect sends one; an error
    without a close code is reported and the session goes on (VoiceRun answers a bad session.update so).
    """

    id: str
    requirement: str
    message: str
    close: int | None = None
    error: str | None = None
    warning: str | None = None

    @property
    def fatal(self) -> bool:
        return self.close is not None


@attrs.frozen
class ClientRule:
    """A rule of client behaviour that no single frame breaks (chunk sizes, pacing, the end of the stream): the
    server goes on, and client-conformance reports (stt.conformance.checks) evaluate it over a whole session."""

    id: str
    requirement: str
    severity: str  # error, warning or info
    check: str  # one of CLIENT_CHECKS
    params: dict = attrs.field(factory=dict)


@attrs.frozen
class Transition:
    source: str
    event: str
    target: str


@attrs.frozen
class Accepted:
    source: str
    event: str
    target: str


@attrs.frozen
class Refused:
    state: str
    event: str
    rule: Rule


Outcome = Accepted | Refused


@attrs.frozen
class Chart:
    name: str
    title: str
    source: str
    initial: str
    states: dict[str, str]  # name -> description
    final: frozenset[str]
    client_events: dict[str, str]  # name -> description
    server_events: dict[str, str]
    transitions: tuple[Transition, ...]
    forbidden: dict[tuple[str, str], str]  # (state, client event) -> rule id
    rules: dict[str, Rule]
    endings: dict[str, str]  # ending -> rule id
    path: str = ""
    client_rules: dict[str, ClientRule] = attrs.field(factory=dict)

    def rule(self, rule_id: str) -> Rule:
        try:
            return self.rules[rule_id]
        except KeyError:
            raise KeyError(f"chart {self.name!r} has no rule {rule_id!r}") from None

    def ending(self, name: str) -> Rule:
        return self.rule(self.endings[name])

    def with_endings_from(self, base: Chart) -> Chart:
        """This chart, with `base`'s endings (and their rules) wherever this chart names none."""
        endings = {name: rule_id for name, rule_id in base.endings.items()}
        endings.update(self.endings)
        rules = {rid: base.rules[rid] for rid in base.endings.values()}
        rules.update(self.rules)
        return attrs.evolve(self, endings=endings, rules=rules)

    def machine(self) -> ChartMachine:
        return ChartMachine(self)


class _Model:
    """The object `transitions` attaches state and triggers to (kept apart from ChartMachine's own names)."""

    state: str


class ChartMachine:
    """One running instance of a chart: `fire(event)` answers Accepted or Refused, and moves on accept."""

    def __init__(self, chart: Chart):
        self.chart = chart
        self._model = _Model()
        Machine(
            model=self._model,
            states=list(chart.states),
            transitions=[{"trigger": t.event, "source": t.source, "dest": t.target} for t in chart.transitions],
            initial=chart.initial,
            auto_transitions=False,
            ignore_invalid_triggers=False,
        )
        # (state, event) -> target, from the same transitions: answering from the table keeps the hot path
        # (an audio frame in a state that loops on it) off the machine, which is asked only to move.
        self._targets = transition_map(chart)
        #: Told of each move to another state, client and server events alike (the explorer's live feed shows
        #: the moves no frame carries: a server event such as YourVoic's end_of_transcript).
        self.moves: list[Callable[[Accepted], None]] = []

    @property
    def state(self) -> str:
        return self._model.state

    @property
    def finished(self) -> bool:
        return self.state in self.chart.final

    def peek(self, event: str) -> Outcome:
        """What fire(event) would answer, without moving: Accepted (with the target) or Refused with the rule
        it breaks. A dialect asks first, validates the message's content, and fires only when both pass."""
        return verdict(self.chart, self._model.state, event, self._targets)

    def fire(self, event: str) -> Outcome:
        """Apply a client event: Accepted and moved on, or Refused with the rule it breaks (state unchanged)."""
        source = self._model.state
        target = self._targets.get((source, event))
        if target is None:  # what peek answers: Refused, or an error for an event the state does not know
            return verdict(self.chart, source, event, self._targets)
        if target == source:
            return Accepted(source, event, target)
        self._model.trigger(event)
        accepted = Accepted(source, event, target)
        for told in self.moves:
            told(accepted)
        return accepted

    def advance(self, event: str) -> Accepted:
        """Apply a server event, which the server only fires when its chart allows it."""
        outcome = self.fire(event)
        if isinstance(outcome, Refused):
            raise UnexpectedEvent(f"{self.chart.name}: server event {event!r} refused in state {outcome.state!r}")
        return outcome


def transition_map(chart: Chart) -> dict[tuple[str, str], str]:
    """(state, event) -> target, for every transition of the chart."""
    return {(t.source, t.event): t.target for t in chart.transitions}


def verdict(chart: Chart, state: str, event: str, targets: dict[tuple[str, str], str] | None = None) -> Outcome:
    """What the chart says of `event` in `state`: Accepted (with the target) or Refused (with the rule). KeyError
    for an event the chart does not know; UnexpectedEvent for a server event the state does not allow."""
    target = (transition_map(chart) if targets is None else targets).get((state, event))
    if target is not None:
        return Accepted(state, event, target)
    rule_id = chart.forbidden.get((state, event))
    if rule_id is not None:
        return Refused(state, event, chart.rules[rule_id])
    if event not in chart.client_events and event not in chart.server_events:
        raise KeyError(f"chart {chart.name!r} has no event {event!r}")
    raise UnexpectedEvent(f"{chart.name}: {event!r} is not allowed in state {state!r}")


def refusals(chart: Chart) -> list[Refused]:
    """Every forbidden (state, client event) pair of the chart, with the rule it breaks, in the chart's order."""
    return [Refused(state, event, chart.rules[rule_id]) for (state, event), rule_id in chart.forbidden.items()]


# --- loading ----------------------------------------------------------------------------------------------


def charts_dir() -> Path:
    """statecharts/ beside the package in a source tree; inside it (as stt.statecharts) in an installed wheel."""
    beside = Path(__file__).resolve().parent.parent / "statecharts"
    if beside.is_dir():
        return beside
    # Through the regular package stt: stt.statecharts alone is a namespace package, whose files() is a
    # MultiplexedPath, not a filesystem path.
    return Path(str(importlib.resources.files("stt").joinpath("statecharts")))


def chart_names() -> list[str]:
    return sorted(p.stem for p in charts_dir().glob("*.yaml"))


_cache: dict[str, Chart] = {}


def load_chart(name: str) -> Chart:
    """The named chart from statecharts/, validated (and cached: charts are immutable)."""
    if name not in _cache:
        _cache[name] = load_chart_file(charts_dir() / f"{name}.yaml")
    return _cache[name]


def load_chart_file(path: str | Path) -> Chart:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ChartError(f"{path}: not valid YAML: {exc}") from None
    return parse_chart(data, str(path))


def parse_chart(data: Any, where: str = "<chart>") -> Chart:
    def fail(key: str, problem: str) -> ChartError:
        return ChartError(f"{where}: {key}: {problem}")

    if not isinstance(data, dict):
        raise fail("(top)", "a chart is a mapping")
    for key in data:
        if key not in _TOP_KEYS:
            raise fail(key, f"unknown key (allowed: {', '.join(sorted(_TOP_KEYS))})")
    for key in sorted(_REQUIRED_TOP_KEYS - set(data)):
        raise fail(key, "missing")

    def text_map(key: str, value: Any) -> dict[str, str]:
        if not isinstance(value, dict):
            raise fail(key, "must be a mapping of name to description")
        for name, doc in value.items():
            if not isinstance(name, str) or not _NAME.match(name):
                raise fail(f"{key}.{name}", "names are identifiers")
            if not isinstance(doc, str) or not doc.strip():
                raise fail(f"{key}.{name}", "needs a description")
        return dict(value)

    def names(key: str, value: Any) -> list[str]:
        items = value if isinstance(value, list) else [value]
        if not items or not all(isinstance(v, str) for v in items):
            raise fail(key, "must be a name or a list of names")
        return items

    name = data["chart"]
    if not isinstance(name, str) or not _NAME.match(name):
        raise fail("chart", "must be an identifier")
    states = text_map("states", data["states"])
    if data["initial"] not in states:
        raise fail("initial", f"{data['initial']!r} is not a state")
    final = frozenset(names("final", data.get("final", [])) if data.get("final") else [])
    for s in final:
        if s not in states:
            raise fail("final", f"{s!r} is not a state")

    events = data.get("events") or {}
    if not isinstance(events, dict) or set(events) - {"client", "server"}:
        raise fail("events", "must be a mapping with keys 'client' and/or 'server'")
    client_events = text_map("events.client", events.get("client") or {})
    server_events = text_map("events.server", events.get("server") or {})
    for both in set(client_events) & set(server_events):
        raise fail(f"events.{both}", "is both a client and a server event")
    all_events = {**client_events, **server_events}

    def rule_bodies(section: str, value: Any, allowed: set[str], texts: tuple[str, ...], example: str):
        """(key, rule id, body) for each rule of a section (rules, client_rules), its id, its keys and its
        texts (`texts`) checked."""
        if not isinstance(value, dict):
            raise fail(section, "must be a mapping of rule id to rule")
        for rule_id, body in value.items():
            key = f"{section}.{rule_id}"
            if not isinstance(rule_id, str) or not _RULE_ID.match(rule_id):
                raise fail(key, f"rule ids look like {example}")
            if not isinstance(body, dict):
                raise fail(key, "must be a mapping")
            for k in body:
                if k not in allowed:
                    raise fail(f"{key}.{k}", f"unknown key (allowed: {', '.join(sorted(allowed))})")
            for k in texts:
                if not isinstance(body.get(k), str) or not body[k].strip():
                    raise fail(f"{key}.{k}", "missing")
            yield key, rule_id, body

    rules: dict[str, Rule] = {}
    for key, rule_id, body in rule_bodies("rules", data["rules"], _RULE_KEYS, ("requirement", "message"),
                                          "SM-ORDER-001"):
        close, error, warning = body.get("close"), body.get("error"), body.get("warning")
        if close is not None and (not isinstance(close, int) or not 1000 <= close <= 4999):
            raise fail(f"{key}.close", "must be a WebSocket close code (1000-4999)")
        if error is not None and warning is not None:
            raise fail(key, "a rule has an error or a warning, not both")
        if warning is not None and close is not None:
            raise fail(f"{key}.close", "a warning does not end the session: drop the close code")
        if error is None and warning is None and close is None:
            raise fail(key, "give an error (with a close code if it ends the session), a warning, or a close code")
        for k in ("error", "warning"):
            if body.get(k) is not None and not (isinstance(body[k], str) and _NAME.match(body[k])):
                raise fail(f"{key}.{k}", "must be the vendor's error or warning type")
        rules[rule_id] = Rule(rule_id, body["requirement"].strip(), body["message"].strip(), close, error, warning)

    client_rules: dict[str, ClientRule] = {}
    for key, rule_id, body in rule_bodies("client_rules", data.get("client_rules") or {}, _CLIENT_RULE_KEYS,
                                          ("requirement",), "SM-CLIENT-001"):
        if rule_id in rules:
            raise fail(key, "is also in rules")
        if body.get("severity") not in SEVERITIES:
            raise fail(f"{key}.severity", f"must be one of {', '.join(SEVERITIES)}")
        if body.get("check") not in CLIENT_CHECKS:
            raise fail(f"{key}.check", f"unknown check (known: {', '.join(CLIENT_CHECKS)})")
        params = body.get("with") or {}
        if not isinstance(params, dict) or not all(isinstance(v, (str, int, float, bool)) for v in params.values()):
            raise fail(f"{key}.with", "must be a mapping of names to plain values")
        client_rules[rule_id] = ClientRule(rule_id, body["requirement"].strip(), body["severity"], body["check"],
                                           dict(params))

    def rule_ref(key: str, rule_id: Any) -> str:
        if rule_id not in rules:
            raise fail(key, f"no rule {rule_id!r} in rules")
        return rule_id

    transitions: list[Transition] = []
    seen: set[tuple[str, str]] = set()
    for i, t in enumerate(data.get("transitions") or []):
        key = f"transitions[{i}]"
        if not isinstance(t, dict) or set(t) != {"from", "event", "to"}:
            raise fail(key, "a transition is {from: STATE(S), event: EVENT, to: STATE}")
        if t["event"] not in all_events:
            raise fail(f"{key}.event", f"{t['event']!r} is not an event")
        if t["to"] not in states:
            raise fail(f"{key}.to", f"{t['to']!r} is not a state")
        for source in names(f"{key}.from", t["from"]):
            if source not in states:
                raise fail(f"{key}.from", f"{source!r} is not a state")
            if source in final:
                raise fail(f"{key}.from", f"{source!r} is final: nothing leaves it")
            if (source, t["event"]) in seen:
                raise fail(key, f"a second transition for ({source}, {t['event']})")
            seen.add((source, t["event"]))
            transitions.append(Transition(source, t["event"], t["to"]))

    forbidden: dict[tuple[str, str], str] = {}
    for i, f in enumerate(data.get("forbidden") or []):
        key = f"forbidden[{i}]"
        if not isinstance(f, dict) or set(f) != {"in", "event", "rule"}:
            raise fail(key, "a forbidden entry is {in: STATE(S), event: EVENT(S), rule: RULE-ID}")
        rule_id = rule_ref(f"{key}.rule", f["rule"])
        for state in names(f"{key}.in", f["in"]):
            if state not in states or state in final:
                raise fail(f"{key}.in", f"{state!r} is not a non-final state")
            for event in names(f"{key}.event", f["event"]):
                if event not in client_events:
                    raise fail(f"{key}.event", f"{event!r} is not a client event")
                if (state, event) in seen or (state, event) in forbidden:
                    raise fail(key, f"({state}, {event}) already has a transition or a rule")
                forbidden[(state, event)] = rule_id

    for state in states:
        if state in final:
            continue
        for event in client_events:
            if (state, event) not in seen and (state, event) not in forbidden:
                raise fail("forbidden", f"({state}, {event}) is neither a transition nor forbidden: say which")

    endings: dict[str, str] = {}
    raw_endings = data.get("endings") or {}
    if not isinstance(raw_endings, dict):
        raise fail("endings", "must be a mapping of ending to rule id")
    for ending, rule_id in raw_endings.items():
        if ending not in ENDINGS:
            raise fail(f"endings.{ending}", f"unknown ending (known: {', '.join(ENDINGS)})")
        endings[ending] = rule_ref(f"endings.{ending}", rule_id)
        if not rules[rule_id].fatal:
            raise fail(f"endings.{ending}", f"rule {rule_id} has no close code")

    return Chart(
        name=name,
        title=str(data["title"]),
        source=str(data.get("source", "")),
        initial=data["initial"],
        states=states,
        final=final,
        client_events=client_events,
        server_events=server_events,
        transitions=tuple(transitions),
        forbidden=forbidden,
        rules=rules,
        endings=endings,
        path=where,
        client_rules=client_rules,
    )
