"""Every dialect in stt.dialects.DIALECTS, checked the same way: what adding a dialect needs is what fails here.

* its traits: it is a DialectBase, and every trait the core reads has its declared type (a misspelt or mistyped
  trait is refused when the class is defined);
* its routes: each declared path routes to it, whatever the order of DIALECTS (the most specific route first);
* its credentials: each declared way of presenting the key gives the key, and the way's name is redacted;
* its rule ids: every id its code names is a rule of its chart, and every rule of the chart is raised by the code
  or the chart itself (a forbidden pair, an ending, a client rule), save the few the list below explains;
* its conformance profile (stt.conformance.profiles) and its fuzz strategy (tests/fuzz_frames.py) exist and
  reach it;
* `stt serve --help` and README.md's table show its routes, from its declarations.
"""

from __future__ import annotations

import inspect
import itertools
import re
import subprocess
from pathlib import Path

import pytest

import stt.dialects
from stt.conformance.profiles import PROFILES
from stt.dialects import DIALECTS, dialect_for, dialect_table
from stt.dialects.base import Credential, DialectBase, Handshake, conforms, traits
from stt.dialects.speechmatics import SpeechmaticsDialect
from stt.redaction import SECRET_NAMES
from stt.statechart import refusals
from tests.fuzz_frames import PLANS
from tests.serve_process import STT, stt_env

ROOT = Path(__file__).resolve().parents[2]
RULE_ID = re.compile(r"\b[A-Z]{2}-[A-Z]+-\d{3}\b")

#: Rules that no dialect code raises, and why.
NOT_RAISED_BY_THE_DIALECT = {
    "VB-TAG-001": "a bad tag refuses the upgrade with HTTP 400 (HandshakeRefused): no session, so no rule fires; "
                  "the chart documents the requirement for the generated pages",
    "DG-PARAM-001": "a bad option refuses the upgrade with HTTP 400 and dg-error (HandshakeRefused): no session, "
                    "so no rule fires; the chart documents the requirement for the generated pages",
    "DG-AUTH-001": "a bad key refuses the upgrade with HTTP 401 and dg-error: the chart's unauthorised ending",
    "YV-CREDIT-001": "stt bills nothing: it sends INSUFFICIENT_CREDITS only when a fault plan asks (stt.faults)",
}

every_dialect = pytest.mark.parametrize("dialect", DIALECTS, ids=lambda d: d.name)


def opened(dialect, path: str | None = None, query=None, headers=None):
    return dialect(Handshake(path or dialect.routes[0].example(), query or {}, headers or {}))


def source(dialect) -> str:
    return Path(inspect.getmodule(dialect).__file__).read_text(encoding="utf-8")


# --- traits ------------------------------------------------------------------------------------------------


@every_dialect
def test_every_trait_the_core_reads_is_declared_and_of_its_type(dialect):
    assert issubclass(dialect, DialectBase)
    instance = opened(dialect)
    for name, hint in traits().items():
        assert hasattr(instance, name), f"{dialect.name} has no {name} (a trait without a default)"
        assert conforms(getattr(instance, name), hint), f"{dialect.name}.{name} is {getattr(instance, name)!r}"
    assert isinstance(instance.costly(object()), bool)


@every_dialect
@pytest.mark.parametrize("attribute, value", [
    ("refuses_busy_at_upgrad", True),  # a letter short
    ("announce_shutdown", True),
    ("time_limit_warning", (60.0,)),
    ("secretpath", re.compile("^/x/(?P<token>[^/]+)$")),
])
def test_a_misspelt_trait_on_a_dialect_class_is_refused_when_it_is_defined(dialect, attribute, value):
    with pytest.raises(TypeError, match=f"{attribute} is not a dialect trait"):
        type("Misspelt", (dialect,), {attribute: value})


@pytest.mark.parametrize("attribute, value", [
    ("announces_shutdown", "yes"),
    ("time_limit_warnings", 900.0),
    ("start_timeout", "15"),
    ("credentials", ("Bearer",)),
])
def test_a_trait_of_the_wrong_type_is_refused_when_the_dialect_is_defined(attribute, value):
    with pytest.raises(TypeError, match=f"{attribute} is"):
        type("Mistyped", (SpeechmaticsDialect,), {attribute: value})


def test_private_names_methods_and_declared_traits_are_what_a_dialect_may_add():
    class Extended(SpeechmaticsDialect):
        announces_shutdown = True
        _table = {"a": 1}

        def helper(self) -> int:
            return 1

    assert Extended.announces_shutdown and Extended._table


# --- routes ------------------------------------------------------------------------------------------------


def examples() -> list[tuple[str, type]]:
    """(path, dialect) for every declared route: its example, with and without a trailing slash."""
    return [(path, d) for d in DIALECTS for r in d.routes for path in (r.example(), r.example() + "/")]


@every_dialect
def test_each_declared_path_routes_to_its_dialect(dialect):
    for route in dialect.routes:
        for path in (route.example(), route.example() + "/"):
            assert dialect_for(path) is dialect, f"{path} routes to {dialect_for(path)}"
            assert dialect.match(path)
    assert dialect_for(dialect.routes[-1].example() + "/more") is not dialect  # a placeholder is one segment


def test_routing_does_not_depend_on_the_order_of_the_dialects(monkeypatch):
    """The most specific route first: Scriptix's /v2/realtime beats Speechmatics's /v2/<language> whichever
    comes first in DIALECTS (in the old routing, the tuple's order decided)."""
    wanted = examples()
    for order in itertools.permutations(DIALECTS):
        monkeypatch.setattr(stt.dialects, "DIALECTS", order)
        routed = [(path, dialect_for(path)) for path, _ in wanted]
        assert routed == wanted, f"in the order {[d.name for d in order]}"
    assert dialect_for("/v2/realtime").name == "scriptix" and dialect_for("/v2/en").name == "speechmatics"


# --- credentials -------------------------------------------------------------------------------------------


def presented(way: Credential, key: str) -> tuple[dict, dict]:
    """(query, headers) presenting `key` the `way`."""
    if way.kind == "query":
        return {way.name: key}, {}
    if way.kind == "header":
        return {}, {way.name: key}
    return {}, {"authorization": f"{way.kind.title()} {key}"}


@every_dialect
def test_each_declared_way_of_presenting_the_key_gives_the_key(dialect):
    assert dialect.credentials, f"{dialect.name} declares no way for the key"
    assert opened(dialect).credential() is None
    for way in dialect.credentials:
        key = "k3y-" + way.kind
        if way.kind == "subprotocol":
            handshake = Handshake(dialect.routes[0].example(), subprotocols=("other", way.name + key))
        elif way.kind == "subprotocol_after":
            handshake = Handshake(dialect.routes[0].example(), subprotocols=(way.name, key))
        else:
            query, headers = presented(way, key)
            handshake = Handshake(dialect.routes[0].example(), query, headers)
        assert dialect(handshake).credential() == key, way
        if way.kind in ("header", "query"):
            assert way.name.lower() in SECRET_NAMES, f"{way.name} is not redacted (stt.redaction.SECRET_NAMES)"


def test_the_subprotocol_credential_way_and_the_token_scheme_read_what_they_name():
    handshake = Handshake("/", {}, {"authorization": "Token t0k"}, subprotocols=("other", "key.s3cret"))
    assert handshake.credential((Credential("subprotocol", "key."),)) == "s3cret"
    assert Handshake("/", subprotocols=("token", "s3cret")).credential((Credential("subprotocol_after", "token"),)) \
        == "s3cret"
    assert Handshake("/", subprotocols=("token",)).credential((Credential("subprotocol_after", "token"),)) is None
    assert Handshake("/", subprotocols=("x", "y")).credential((Credential("subprotocol_after", "token"),)) is None
    assert handshake.credential((Credential("bearer"), Credential("token"))) == "t0k"
    assert handshake.bearer_token() is None


# --- rule ids, both ways -----------------------------------------------------------------------------------


@every_dialect
def test_every_rule_id_the_dialect_names_is_a_rule_of_its_chart(dialect):
    named = set(RULE_ID.findall(source(dialect)))
    known = set(dialect.chart.rules) | set(dialect.chart.client_rules)  # the lifecycle's LC- rules included
    assert named, f"{dialect.name}: no rule id in its code"
    assert named <= known, f"{dialect.name} names rules its chart lacks: {sorted(named - known)}"


@every_dialect
def test_every_rule_of_the_chart_is_raised_by_the_dialect_or_the_chart(dialect):
    chart = dialect.chart
    raised = (set(RULE_ID.findall(source(dialect))) | {r.rule.id for r in refusals(chart)}
              | set(chart.endings.values()) | set(chart.client_rules))
    own = {rule_id for rule_id in chart.rules if not rule_id.startswith("LC-")}  # the lifecycle's: the session's
    unraised = own - raised - set(NOT_RAISED_BY_THE_DIALECT)
    assert not unraised, f"{dialect.name}: rules nothing raises: {sorted(unraised)}"


def test_the_rules_excused_above_exist_and_are_still_not_raised():
    charts = {rule_id: d for d in DIALECTS for rule_id in d.chart.rules}
    for rule_id in NOT_RAISED_BY_THE_DIALECT:
        dialect = charts[rule_id]
        assert rule_id not in RULE_ID.findall(source(dialect)), f"{rule_id} is raised now: take it off the list"


# --- the conformance profile and the fuzz strategy ---------------------------------------------------------


@every_dialect
def test_the_dialect_has_a_conformance_profile_that_reaches_it_and_presents_its_key(dialect):
    profile = PROFILES.get(dialect.name)
    assert profile is not None, f"no conformance profile for {dialect.name} (stt/conformance/profiles.py)"
    assert dialect_for(profile.path) is dialect
    handshake = profile.handshake("pr0file-key")
    assert dialect(handshake).credential() == "pr0file-key"
    events = set(dialect.chart.client_events) | set(dialect.chart.server_events)
    assert set(profile.client) | set(profile.server) <= events | {"close"}


@every_dialect
def test_the_dialect_has_a_fuzz_strategy(dialect):
    from tests.test_fuzz import HEALTH

    assert dialect.name in PLANS, f"no fuzz strategy for {dialect.name} (tests/fuzz_frames.py PLANS)"
    assert dialect.name in HEALTH, f"no health check for {dialect.name} (tests/test_fuzz.py HEALTH)"


# --- help and docs, from the declarations ------------------------------------------------------------------


def test_stt_serve_help_shows_every_dialect_and_its_routes_as_declared():
    out = subprocess.run([STT, "serve", "--help"], capture_output=True, text=True, env=stt_env(), timeout=60,
                         check=True).stdout
    text = " ".join(out.split())
    for dialect in DIALECTS:
        routes = " and ".join(route.shown() for route in dialect.routes)
        assert f"{dialect.title} at {routes}" in text


def test_the_readme_dialect_table_is_the_one_built_from_the_declarations():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert dialect_table() in readme, "README.md's table of dialects is stale; paste this:\n" + dialect_table()


# --- the subprotocol -----------------------------------------------------------------------------------------


class WithSubprotocol(SpeechmaticsDialect):
    subprotocol = "stt.test.v1"


@pytest.mark.parametrize("offered, accepted", [
    (["other", "stt.test.v1"], "stt.test.v1"),
    (["other"], None),
    ([], None),
])
async def test_the_server_accepts_the_subprotocol_the_dialect_declares_when_the_client_offers_it(
        monkeypatch, offered, accepted):
    from trio_websocket import open_websocket_url

    from tests.helpers import running_server

    monkeypatch.setattr("stt.server.dialect_for", lambda path: WithSubprotocol)
    async with running_server() as server:
        async with open_websocket_url(f"ws://127.0.0.1:{server.port}/v2", subprotocols=offered) as ws:
            assert ws.subprotocol == accepted


# --- peek, validate, fire ------------------------------------------------------------------------------------


@pytest.mark.parametrize("dialect, path, bad, rule_id", [
    (SpeechmaticsDialect, "/v2", '{"message":"StartRecognition","audio_format":{"type":"mp3"},'
                                 '"transcription_config":{"language":"en"}}', "SM-CFG-001"),
    (stt.dialects.dialect_named("voicerun"), "/ws", '{"type":"session.update","session":{"model":"nova-3"}}',
     "VR-CFG-001"),
    (stt.dialects.dialect_named("scriptix"), "/v2/realtime", '{"action":"start","partial":"yes"}', "SX-START-001"),
    (stt.dialects.dialect_named("vblaze"), "/transcribe", b"OggS" + bytes(60), "VB-AUDIO-002"),
    (stt.dialects.dialect_named("openai"), "/v1/realtime", '{"type":"input_audio_buffer.append","audio":"!!"}',
     "OA-AUDIO-001"),
], ids=lambda v: v.name if isinstance(v, type) else None)
def test_a_message_whose_content_breaks_a_rule_leaves_the_chart_where_it_was(dialect, path, bad, rule_id):
    """The chart is asked first (peek), the content validated, and the machine moved only when both pass."""
    instance = dialect(Handshake(path))
    before = instance.machine.state
    (violation,) = instance.receive(bad)
    assert violation.rule.id == rule_id and instance.machine.state == before
