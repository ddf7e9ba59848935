"""`stt conform` over real sockets: the whole catalogue of every dialect against stt itself (scripted engine), the
command's table, summary, reports and exit status, and cases that fail against servers that do not conform."""

import json

import pytest
import trio
from trio_websocket import ConnectionClosed, serve_websocket

from stt.cli import main
from stt.conformance.catalogue import cases, chart_of, coverage, dialect_names
from stt.conformance.profiles import PROFILES
from stt.conformance.report import from_json, to_html, to_json, to_junit
from stt.conformance.runner import Exchange, Unreachable, run_catalogue
from stt.session import SessionLimits
from tests.helpers import running_server

TIMEOUT = 1.5  # the scripted engine answers in milliseconds
LIMITS = SessionLimits(close_grace=1.0, idle_timeout=10.0)


def expected_skips(name: str) -> set[str]:
    """Cases no client can drive over the wire: client frames in a state the server closes on entering, and
    the profile's own (Scriptix's stream-mode-only transition)."""
    profile, chart = PROFILES[name], chart_of(name)
    return {c.id for c in cases(name)
            if (c.state, c.event) in profile.skip
            or (c.state in profile.closes_on_entry and c.event in chart.client_events)}


@pytest.mark.parametrize("name", dialect_names())
async def test_stt_passes_its_own_catalogue(name):
    async with running_server(limits=LIMITS) as server:
        url = f"ws://127.0.0.1:{server.port}"
        report = await run_catalogue(url, name, timeout=TIMEOUT, concurrency=16)
    catalogue = cases(name)
    assert report.kind == "server" and report.dialect == name and report.subject == url
    assert [c.id for c in report.cases] == [c.id for c in catalogue]
    assert [c.requirement for c in report.cases] == [c.requirement for c in catalogue]
    failed = [(c.id, c.details) for c in report.cases if c.verdict == "fail"]
    assert not failed
    assert report.passed
    skipped = {c.id for c in report.cases if c.verdict == "skipped"}
    assert skipped == expected_skips(name)
    # Non-strict only where the state is transient over the wire, and the details say why.
    profile = PROFILES[name]
    for case in report.cases:
        if case.verdict == "non-strict":
            state = case.id.split("/")[2]
            assert state in profile.transient and "transient over the wire" in case.details, case
    # Everything the chart has is in the catalogue; over the wire, all of it but the skipped cases is run.
    chart = chart_of(name)
    assert coverage(name) == {"transitions": [len(chart.transitions)] * 2, "forbidden": [len(chart.forbidden)] * 2}
    skipped_kinds = [s.split("/")[1] for s in skipped]
    assert report.coverage == {
        "transitions": [len(chart.transitions) - skipped_kinds.count("transition"), len(chart.transitions)],
        "forbidden": [len(chart.forbidden) - skipped_kinds.count("forbidden"), len(chart.forbidden)],
    }


async def test_speechmatics_is_driven_over_the_wire_entirely_and_starting_is_non_strict():
    async with running_server(limits=LIMITS) as server:
        report = await run_catalogue(f"ws://127.0.0.1:{server.port}", "speechmatics", timeout=TIMEOUT,
                                     concurrency=16)
    assert report.coverage == {"transitions": [12, 12], "forbidden": [20, 20]}
    verdicts = {c.id: c for c in report.cases}
    # stt reads nothing more until RecognitionStarted is sent: audio sent in `starting` is accepted after it.
    case = verdicts["speechmatics/forbidden/starting/AddAudio"]
    assert case.verdict == "non-strict" and case.rule == "SM-ORDER-002"
    assert "as recognizing answers" in case.details
    assert verdicts["speechmatics/forbidden/starting/StartRecognition"].verdict == "pass"  # SM-ORDER-003 either way
    assert verdicts["speechmatics/forbidden/awaiting_start/AddAudio"].verdict == "pass"


@pytest.mark.parametrize("name", dialect_names())
async def test_the_api_key_is_presented_the_dialect_s_way(name):
    async with running_server(limits=LIMITS, api_keys=("sesame",)) as server:
        url = f"ws://127.0.0.1:{server.port}"
        good = await run_catalogue(url, name, api_key="sesame", pattern="/transition/", timeout=TIMEOUT,
                                   concurrency=16)
        bad = await run_catalogue(url, name, api_key="wrong", pattern="/transition/", timeout=TIMEOUT,
                                  concurrency=16)
    assert {c.verdict for c in good.cases} <= {"pass", "skipped"}
    assert any(c.verdict == "fail" for c in bad.cases)


async def _conform(*argv: str) -> int:
    return await trio.to_thread.run_sync(main, ["conform", *argv])


async def test_conform_prints_the_table_and_the_summary_and_writes_the_reports(capsys, tmp_path):
    async with running_server(limits=LIMITS) as server:
        url = f"ws://127.0.0.1:{server.port}"
        status = await _conform(url, "--dialect", "voicerun", "--cases", "voicerun/forbidden/", "--timeout", "1.5",
                                "--json", str(tmp_path / "r.json"), "--html", str(tmp_path / "r.html"),
                                "--junit", str(tmp_path / "r.xml"))
    out = capsys.readouterr().out
    assert status == 0
    lines = out.splitlines()
    assert lines[0] == f"VoiceRun Transcribe session: server conformance: {url}"
    row = next(line for line in lines if line.startswith("voicerun/forbidden/created/audio.append "))
    assert row.split() == ["voicerun/forbidden/created/audio.append", "PASS"]
    row = next(line for line in lines if line.startswith("voicerun/forbidden/finished/audio.append "))
    assert "SKIPPED" in row and "closes the connection as it enters finished" in row
    summary = next(line for line in lines if line.startswith("8 cases: "))
    assert "fail" not in summary and "transitions 0/15; forbidden 5/8" in summary and summary.endswith("PASSED")
    report = from_json((tmp_path / "r.json").read_text())
    assert report.kind == "server" and len(report.cases) == 8 and report.coverage["forbidden"] == [5, 8]
    assert "voicerun/forbidden/created/audio.append" in (tmp_path / "r.html").read_text().replace("<wbr>", "")
    assert "<testsuite" in (tmp_path / "r.xml").read_text()
    assert f"wrote {tmp_path / 'r.json'}" in out


async def test_conform_with_no_matching_case_is_a_usage_error(capsys):
    async with running_server(limits=LIMITS) as server:
        status = await _conform(f"ws://127.0.0.1:{server.port}", "--dialect", "vblaze", "--cases", "nothing/like/it")
    assert status == 2
    assert "no vblaze case id contains 'nothing/like/it'" in capsys.readouterr().err
    assert await _conform("http://127.0.0.1:1", "--dialect", "vblaze") == 2
    assert "is not a ws:// or wss:// URL" in capsys.readouterr().err


async def _black_hole(request):
    """A server that accepts any upgrade and never answers."""
    ws = await request.accept()
    try:
        while True:
            await ws.get_message()
    except ConnectionClosed:
        pass


async def test_a_server_that_never_answers_fails_with_details(capsys):
    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_websocket, _black_hole, "127.0.0.1", 0, None)
        url = f"ws://127.0.0.1:{server.port}"
        status = await _conform(url, "--dialect", "speechmatics", "--cases", "speechmatics/forbidden/awaiting_start/Add",
                                "--timeout", "0.3")
        report = await run_catalogue(url, "speechmatics", pattern="transition/starting/RecognitionStarted",
                                     timeout=0.3)
        nursery.cancel_scope.cancel()
    out = capsys.readouterr().out
    assert status == 1
    row = next(line for line in out.splitlines() if line.startswith("speechmatics/forbidden/awaiting_start/AddAudio"))
    assert "FAIL" in row
    assert "expected SM-ORDER-001: protocol_error then close 1003; got no error frame, the connection open" in row
    assert out.rstrip().endswith("FAILED")
    [case] = report.cases
    assert case.verdict == "fail"
    assert case.details == "expected the frame of RecognitionStarted within 0.3 s; got no error frame, the connection open"


async def test_a_server_of_another_dialect_fails():
    # YourVoic's frames sent to stt's VoiceRun path: binary audio is not VoiceRun.
    async with running_server(limits=LIMITS) as server:
        report = await run_catalogue(f"ws://127.0.0.1:{server.port}/ws", "yourvoic", pattern="streaming/audio",
                                     timeout=TIMEOUT)
    [case] = report.cases
    assert case.verdict == "fail"
    assert case.details == ("expected acceptance (no error frame, the connection open); got an error without a "
                            "code, then close 1003 (binary_not_supported)")
    assert not report.passed


async def test_a_refused_upgrade_and_an_unreachable_server_fail():
    async with running_server(limits=LIMITS, api_keys=("sesame",)) as server:
        report = await run_catalogue(f"ws://127.0.0.1:{server.port}", "yourvoic", pattern="streaming/audio",
                                     timeout=TIMEOUT)
        port = server.port
    [case] = report.cases
    assert case.verdict == "fail" and case.details.startswith("the upgrade was refused: HTTP 401")
    assert [done for done, _ in report.coverage.values()] == [0, 0]  # a refused upgrade exercises nothing
    json.dumps(case.details)  # plain text, fit for every report format
    with pytest.raises(Unreachable, match=f"cannot connect to 127.0.0.1:{port} .*: .*refused"):
        await run_catalogue(f"ws://127.0.0.1:{port}", "yourvoic", pattern="streaming/audio", timeout=TIMEOUT)


async def test_conform_against_a_closed_port_says_so_in_one_line_and_claims_no_coverage(capsys, tmp_path):
    async with running_server(limits=LIMITS) as server:
        port = server.port
    status = await _conform(f"ws://127.0.0.1:{port}", "--dialect", "speechmatics", "--json", str(tmp_path / "r.json"))
    out, err = capsys.readouterr()
    assert status == 2
    assert out == "" and not (tmp_path / "r.json").exists()  # no table, no coverage claimed, no report
    (line,) = err.splitlines()
    assert line.startswith(f"stt conform: cannot connect to 127.0.0.1:{port} (ws://127.0.0.1:{port}): ")
    assert "refused" in line.lower()


async def test_a_case_that_did_not_pass_carries_the_frames_of_its_connection():
    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_websocket, _black_hole, "127.0.0.1", 0, None)
        url = f"ws://127.0.0.1:{server.port}"
        report = await run_catalogue(url, "speechmatics", pattern="speechmatics/forbidden/recognizing/StartRecognition",
                                     timeout=0.3)
        nursery.cancel_scope.cancel()
    [case] = report.cases
    assert case.verdict == "fail"
    sent = [r for r in case.exchange if r["kind"] == "in"]
    assert json.loads(sent[0]["text"])["message"] == "StartRecognition"  # the path's first frame
    assert all(r["t"] >= 0 for r in case.exchange)
    back = from_json(to_json(report)).cases[0]
    assert back.exchange == case.exchange  # in the JSON
    assert "exchange:" in to_junit(report) and "StartRecognition" in to_junit(report).split("exchange:")[1]
    page = to_html(report)
    assert "Frames of the cases that did not pass" in page and "client→server" in page


async def test_no_key_reaches_a_server_report_from_the_url_or_the_frames():
    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_websocket, _black_hole, "127.0.0.1", 0, None)
        url = f"ws://127.0.0.1:{server.port}/api/v1/stt/realtime/stream?api_key=s3cret-key&model=lucid-agent"
        report = await run_catalogue(url, "yourvoic", pattern="yourvoic/transition/draining/end_of_transcript",
                                     timeout=0.3, api_key="s3cret-key")
        nursery.cancel_scope.cancel()
    assert report.cases[0].verdict == "fail" and report.cases[0].exchange
    assert "api_key=<redacted>" in report.subject
    assert "s3cret-key" not in to_json(report) + to_html(report) + to_junit(report)
    exchange = Exchange("s3cret-key")
    exchange.frame("in", '{"action":"start","key":"s3cret-key"}')
    assert exchange.records()[0]["text"] == '{"action":"start","key":"<redacted>"}'


async def test_a_case_that_passed_carries_no_frames():
    async with running_server(limits=LIMITS) as server:
        report = await run_catalogue(f"ws://127.0.0.1:{server.port}", "speechmatics",
                                     pattern="speechmatics/forbidden/awaiting_start/AddAudio", timeout=TIMEOUT)
    [case] = report.cases
    assert case.verdict == "pass" and case.exchange == ()
