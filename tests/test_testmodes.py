"""The server's test modes (stt.testmodes): the one object that gives each connection its handshake (without
stt's own parameters), its fault plan and its recorder. None by default; as a ServerConfig asks; and, on the
command line, with the conformance kit's client report after each recorded session."""

from __future__ import annotations

import pytest

from stt.cli import _parser, _test_modes
from stt.config import resolve, server_config
from stt.conformance.checks import write_client_report
from stt.dialects.base import Handshake
from stt.dialects.speechmatics import SpeechmaticsDialect
from stt.engines.inline_host import InlineEngine
from stt.engines.scripted import ScriptedRecognizer
from stt.faults import FaultError
from stt.recording import NULL_RECORDER, Logbook
from stt.server import Server, ServerConfig
from stt.session import SessionLimits
from stt.testmodes import CLIENT_FAULTS_OFF, ClientFaultsRefused, TestModes

CHART = SpeechmaticsDialect.chart


def handshake(target: str, headers=()) -> Handshake:
    return Handshake.from_target(target, list(headers))


async def test_without_test_modes_a_connection_is_served_as_it_came_and_recorded_by_nobody():
    modes = TestModes().for_connection(handshake("/v2?lang=en&stt_fault=&stt_conformance=1"))
    assert modes.handshake.query == {"lang": "en"}  # stt's own parameters never reach the dialect
    assert not modes.record and not modes.fault_plan(CHART)  # an empty plan of its own asks for nothing
    async with modes.recorder("s-1", None, modes.fault_plan(CHART)) as recorder:
        assert recorder is NULL_RECORDER
    await modes.finished("s-1")  # nothing to report


def test_a_connections_own_fault_plan_is_refused_unless_the_server_allows_it():
    asking = handshake("/v2", [("x-stt-fault", "drop@1s")])
    with pytest.raises(ClientFaultsRefused) as refused:
        TestModes(faults="delay=1s").for_connection(asking).fault_plan(CHART)
    assert refused.value.body == CLIENT_FAULTS_OFF
    allowed = TestModes(faults="delay=1s", allow_client_faults=True, idle_timeout=30)
    assert allowed.for_connection(asking).fault_plan(CHART).text == "drop@1s"  # it replaces the operator's
    assert allowed.for_connection(handshake("/v2")).fault_plan(CHART).text == "delay=1s"
    stalling = allowed.for_connection(handshake("/v2?stt_fault=stall"))
    assert stalling.fault_plan(CHART).stall_for == 30  # never beyond the server's limits
    with pytest.raises(FaultError):
        allowed.for_connection(handshake("/v2?stt_fault=explode")).fault_plan(CHART)


def test_a_recording_server_records_every_connection_or_only_those_that_ask(tmp_path):
    every = TestModes.from_config(ServerConfig(conformance_dir=tmp_path))
    assert every.for_connection(handshake("/v2")).record and every.client_faults_allowed
    opt_in = TestModes.from_config(ServerConfig(conformance_dir=tmp_path, conformance_opt_in=True))
    assert not opt_in.for_connection(handshake("/v2")).record
    assert opt_in.for_connection(handshake("/v2?stt_conformance=1")).record
    assert opt_in.for_connection(handshake("/v2", [("x-stt-conformance", "yes")])).record


async def test_a_recorded_connections_recorder_is_its_logbook(tmp_path):
    modes = TestModes(record_in=tmp_path).for_connection(handshake("/v2"))
    dialect = SpeechmaticsDialect(modes.handshake)
    async with modes.recorder("s-1", dialect, modes.fault_plan(CHART)) as recorder:
        assert isinstance(recorder, Logbook)
    assert (tmp_path / "s-1.jsonl").read_text().startswith('{"t": ')


def test_the_server_follows_its_config_unless_given_test_modes_and_stt_serve_adds_the_kits_reports(tmp_path):
    engine = InlineEngine("scripted", 16000, ScriptedRecognizer)
    config = ServerConfig(conformance_dir=tmp_path, faults="delay=1s", limits=SessionLimits(idle_timeout=9))
    assert Server(config, engine).test_modes == TestModes.from_config(config)
    assert Server(config, engine).test_modes.report is None
    given = TestModes()
    assert Server(config, engine, given).test_modes is given

    served = _test_modes(server_config(resolve(_parser, ["serve", "--conformance", str(tmp_path)])))
    assert served.record_in == tmp_path and served.report is write_client_report
    assert _test_modes(server_config(resolve(_parser, ["serve"]))) == TestModes()
