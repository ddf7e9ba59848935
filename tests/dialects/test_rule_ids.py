"""Rule ids, between each dialect's code and its chart, both ways: every id the code names (in a violation, a
RuleBroken, a comment) is a rule of its chart, and every rule of the chart is raised by something, the code
or the chart itself (a forbidden pair, an ending, a client rule), save the few the list below explains."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from stt.dialects import DIALECTS

RULE_ID = re.compile(r"\b[A-Z]{2}-[A-Z]+-\d{3}\b")

#: Rules that no dialect code raises, and why.
NOT_RAISED_BY_THE_DIALECT = {
    "VB-TAG-001": "a bad tag refuses the upgrade with HTTP 400 (HandshakeRefused): no session, so no rule fires; "
                  "the chart documents the requirement for the generated pages",
    "YV-CREDIT-001": "stt bills nothing: it sends INSUFFICIENT_CREDITS only when a fault plan asks (stt.faults)",
}


def source(dialect) -> str:
    return Path(inspect.getmodule(dialect).__file__).read_text(encoding="utf-8")


@pytest.mark.parametrize("dialect", DIALECTS, ids=lambda d: d.name)
def test_every_rule_id_the_dialect_names_is_a_rule_of_its_chart(dialect):
    named = set(RULE_ID.findall(source(dialect)))
    known = set(dialect.chart.rules) | set(dialect.chart.client_rules)  # the lifecycle's LC- rules included
    assert named, f"{dialect.name}: no rule id in its code"
    assert named <= known, f"{dialect.name} names rules its chart lacks: {sorted(named - known)}"


@pytest.mark.parametrize("dialect", DIALECTS, ids=lambda d: d.name)
def test_every_rule_of_the_chart_is_raised_by_the_dialect_or_the_chart(dialect):
    chart = dialect.chart
    raised = (set(RULE_ID.findall(source(dialect))) | set(chart.forbidden.values()) | set(chart.endings.values())
              | set(chart.client_rules))
    own = {rule_id for rule_id in chart.rules if not rule_id.startswith("LC-")}  # the lifecycle's: the session's
    unraised = own - raised - set(NOT_RAISED_BY_THE_DIALECT)
    assert not unraised, f"{dialect.name}: rules nothing raises: {sorted(unraised)}"


def test_the_rules_excused_above_exist_and_are_still_not_raised():
    charts = {rule_id: d for d in DIALECTS for rule_id in d.chart.rules}
    for rule_id in NOT_RAISED_BY_THE_DIALECT:
        dialect = charts[rule_id]
        assert rule_id not in RULE_ID.findall(source(dialect)), f"{rule_id} is raised now: take it off the list"
