"""The chart format: every shipped chart loads; malformed charts fail naming file and key; machines enforce."""

import copy
import re
from pathlib import Path

import pytest
import yaml

from stt.statechart import (
    CLIENT_CHECKS,
    ENDINGS,
    Accepted,
    ChartError,
    Refused,
    UnexpectedEvent,
    chart_names,
    load_chart,
    load_chart_file,
    parse_chart,
    refusals,
    transition_map,
)

MINIMAL = {
    "chart": "demo",
    "title": "Demo",
    "initial": "idle",
    "states": {"idle": "Nothing yet.", "busy": "Working.", "done": "Over."},
    "final": ["done"],
    "events": {"client": {"Go": "Start.", "Stop": "Stop."}, "server": {"finish": "End."}},
    "transitions": [
        {"from": "idle", "event": "Go", "to": "busy"},
        {"from": "busy", "event": "Stop", "to": "idle"},
        {"from": ["idle", "busy"], "event": "finish", "to": "done"},
    ],
    "forbidden": [
        {"in": "idle", "event": "Stop", "rule": "DM-ORDER-001"},
        {"in": "busy", "event": "Go", "rule": "DM-WARN-001"},
    ],
    "rules": {
        "DM-ORDER-001": {"requirement": "Go before Stop.", "error": "protocol_error", "message": "not started",
                         "close": 1003},
        "DM-WARN-001": {"requirement": "Go once.", "warning": "already_going", "message": "ignored"},
    },
}


CLIENT_RULE = {"requirement": "Frames last 5 ms to 1 s.", "severity": "warning", "check": "chunk_duration",
               "with": {"min_ms": 5, "max_ms": 1000}}


def test_every_shipped_chart_loads_and_the_lifecycle_maps_every_ending():
    names = chart_names()
    assert {"lifecycle", "speechmatics"} <= set(names)
    for name in names:
        load_chart(name)
    assert set(load_chart("lifecycle").endings) == set(ENDINGS)


def test_the_lifecycle_is_the_one_of_the_design_card():
    chart = load_chart("lifecycle")
    m = chart.machine()
    for event, state in [("handshake", "connecting"), ("accept", "loading"), ("ready", "listening"),
                         ("audio", "connected"), ("end", "closed")]:
        assert m.advance(event).target == state
    assert m.finished
    codes = {name: chart.ending(name).close for name in ENDINGS}
    assert codes["normal"] == 1000 and codes["dropped"] == 1006 and codes["unauthorised"] == 4001


def test_machine_accepts_transitions_and_refuses_forbidden_pairs_without_moving():
    m = parse_chart(MINIMAL).machine()
    refused = m.fire("Stop")
    assert isinstance(refused, Refused) and refused.rule.id == "DM-ORDER-001" and refused.rule.fatal
    assert m.state == "idle"
    assert m.fire("Go") == Accepted("idle", "Go", "busy")
    warned = m.fire("Go")
    assert isinstance(warned, Refused) and not warned.rule.fatal and warned.rule.warning == "already_going"
    assert m.state == "busy"


def test_a_server_event_the_chart_does_not_allow_is_a_bug_not_a_violation():
    m = parse_chart(MINIMAL).machine()
    m.advance("finish")
    with pytest.raises(UnexpectedEvent):
        m.advance("finish")
    with pytest.raises(KeyError):
        m.fire("NoSuchEvent")


def test_peek_answers_what_fire_would_without_moving():
    m = parse_chart(MINIMAL).machine()
    for event in ("Stop", "Go", "Go", "Stop", "finish"):
        before = m.state
        said = m.peek(event)
        assert m.state == before and m.peek(event) == said  # asking twice moves nothing
        assert m.fire(event) == said
    assert m.state == "done"
    with pytest.raises(UnexpectedEvent):
        m.peek("finish")
    with pytest.raises(KeyError):
        m.peek("NoSuchEvent")


def test_the_chart_api_gives_the_transition_map_and_the_refusals_in_chart_order():
    chart = parse_chart(MINIMAL)
    assert transition_map(chart) == {("idle", "Go"): "busy", ("busy", "Stop"): "idle", ("idle", "finish"): "done",
                                     ("busy", "finish"): "done"}
    assert [(r.state, r.event, r.rule.id) for r in refusals(chart)] == [("idle", "Stop", "DM-ORDER-001"),
                                                                         ("busy", "Go", "DM-WARN-001")]


def test_nothing_outside_statechart_py_reads_the_forbidden_table_or_rebuilds_the_transition_map():
    """Dialects ask machine.peek/fire; the catalogue and the diagrams use verdict, refusals, transition_map."""
    package = Path(__file__).resolve().parent.parent / "stt"
    readers = re.compile(r"\.forbidden\b|\(t\.source, t\.event\)\s*:")
    offenders = [f"{path.relative_to(package)}:{n}: {line.strip()}"
                 for path in sorted(package.rglob("*.py")) if path.name != "statechart.py"
                 for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if readers.search(line)]
    assert not offenders, "\n".join(offenders)


def broken(mutate):
    data = copy.deepcopy(MINIMAL)
    mutate(data)
    return data


def test_client_rules_name_a_known_check_with_plain_parameters():
    chart = parse_chart({**MINIMAL, "client_rules": {"DM-CLIENT-001": CLIENT_RULE}})
    rule = chart.client_rules["DM-CLIENT-001"]
    assert (rule.check, rule.severity, rule.params) == ("chunk_duration", "warning", {"min_ms": 5, "max_ms": 1000})
    assert rule.check in CLIENT_CHECKS and not parse_chart(MINIMAL).client_rules


@pytest.mark.parametrize(
    "mutate, key",
    [
        (lambda d: d.update(extra=1), "extra"),
        (lambda d: d.pop("initial"), "initial"),
        (lambda d: d.update(initial="nowhere"), "initial"),
        (lambda d: d["transitions"].append({"from": "idle", "event": "Go", "to": "nowhere"}), "transitions[3].to"),
        (lambda d: d["transitions"].append({"from": "idle", "on": "Go", "to": "busy"}), "transitions[3]"),
        (lambda d: d["transitions"].append({"from": "done", "event": "Go", "to": "idle"}), "transitions[3].from"),
        (lambda d: d["forbidden"].pop(), "forbidden"),  # (busy, Go) is then neither allowed nor forbidden
        (lambda d: d["forbidden"].append({"in": "idle", "event": "Go", "rule": "DM-ORDER-001"}), "forbidden[2]"),
        (lambda d: d["forbidden"][0].update(rule="DM-NOPE-001"), "forbidden[0].rule"),
        (lambda d: d["rules"]["DM-ORDER-001"].update(warning="also_a_warning"), "rules.DM-ORDER-001"),
        (lambda d: d["rules"]["DM-WARN-001"].update(close=1000), "rules.DM-WARN-001.close"),
        (lambda d: d["rules"]["DM-ORDER-001"].update(close=99), "rules.DM-ORDER-001.close"),
        (lambda d: d["rules"]["DM-ORDER-001"].update(guard="lambda: 1"), "rules.DM-ORDER-001.guard"),
        (lambda d: d["rules"].update({"bad id": d["rules"]["DM-WARN-001"]}), "rules.bad id"),
        (lambda d: d.update(endings={"exploded": "DM-ORDER-001"}), "endings.exploded"),
        (lambda d: d.update(endings={"normal": "DM-WARN-001"}), "endings.normal"),
        (lambda d: d["events"]["server"].update(Go="twice"), "events.Go"),
        (lambda d: d.update(client_rules=["SM-CLIENT-001"]), "client_rules"),
        (lambda d: d.update(client_rules={"DM-CLIENT-001": {**CLIENT_RULE, "check": "vibes"}}),
         "client_rules.DM-CLIENT-001.check"),
        (lambda d: d.update(client_rules={"DM-CLIENT-001": {**CLIENT_RULE, "severity": "fatal"}}),
         "client_rules.DM-CLIENT-001.severity"),
        (lambda d: d.update(client_rules={"DM-CLIENT-001": {**CLIENT_RULE, "with": {"min_ms": [1]}}}),
         "client_rules.DM-CLIENT-001.with"),
        (lambda d: d.update(client_rules={"DM-CLIENT-001": {**CLIENT_RULE, "close": 1003}}),
         "client_rules.DM-CLIENT-001.close"),
        (lambda d: d.update(client_rules={"DM-ORDER-001": CLIENT_RULE}), "client_rules.DM-ORDER-001"),
    ],
)
def test_a_malformed_chart_fails_naming_file_and_key(mutate, key):
    with pytest.raises(ChartError) as info:
        parse_chart(broken(mutate), "charts/demo.yaml")
    assert str(info.value).startswith(f"charts/demo.yaml: {key}:")


def test_an_error_without_a_close_code_is_reported_and_the_session_goes_on():
    chart = parse_chart(broken(lambda d: d["rules"]["DM-ORDER-001"].pop("close")), "charts/demo.yaml")
    rule = chart.rule("DM-ORDER-001")
    assert rule.error and rule.close is None and not rule.fatal


def test_yaml_errors_name_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("chart: [unclosed\n")
    with pytest.raises(ChartError, match="bad.yaml: not valid YAML"):
        load_chart_file(path)


def test_a_chart_round_trips_through_yaml(tmp_path):
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump(MINIMAL))
    chart = load_chart_file(path)
    assert chart.forbidden[("idle", "Stop")] == "DM-ORDER-001"
    assert chart.path == str(path)


def test_dialect_endings_override_the_lifecycle_ones():
    chart = load_chart("speechmatics").with_endings_from(load_chart("lifecycle"))
    assert chart.ending("unauthorised").error == "not_authorised"
    assert chart.ending("internal_error").close == 1011
    assert chart.ending("normal").id == "LC-END-001"  # not overridden: the lifecycle's


def test_a_machine_tells_its_listeners_each_move_to_another_state_and_not_a_loop():
    machine = load_chart("yourvoic").machine()
    moves = []
    machine.moves.append(moves.append)
    machine.fire("audio")  # streaming -> streaming: no move
    machine.fire("close_request")
    machine.advance("end_of_transcript")
    assert [(m.source, m.event, m.target) for m in moves] == [("streaming", "close_request", "draining"),
                                                               ("draining", "end_of_transcript", "finished")]
