"""The report renderers: JSON that reads back exactly, JUnit XML for CI, the plain-text summary, and the HTML
page (escaped, with the timeline of a client session and the state diagram of the path it took)."""

import json
import re
import xml.etree.ElementTree as ET

from stt.conformance.report import (CaseResult, Report, from_json, to_html, to_json, to_junit, to_text,
                                    write_report)
from stt.conformance.svg import layout_order, state_diagram
from stt.statechart import load_chart

START = ('{"message":"StartRecognition","audio_format":{"type":"raw","encoding":"pcm_s16le","sample_rate":16000},'
         '"transcription_config":{"language":"en"}}')

# A Speechmatics client that sent audio before RecognitionStarted (frame 2), and put a script in a message.
TIMELINE = (
    {"t": 0.0, "kind": "open", "session": "s-1", "dialect": "speechmatics", "path": "/v2",
     "query": {"jwt": "<redacted>"}, "headers": {"authorization": "<redacted>"}, "faults": "",
     "state": "awaiting_start"},
    {"t": 0.010, "kind": "in", "n": 1, "type": "text", "text": START, "bytes": len(START), "state": "starting"},
    {"t": 0.012, "kind": "in", "n": 2, "type": "binary", "base64": "AAAAAA==", "bytes": 4, "state": "starting"},
    {"t": 0.012, "kind": "violation", "rule": "SM-ORDER-002", "detail": "AddAudio in starting", "frame": 2},
    {"t": 0.020, "kind": "out", "n": 3, "type": "text", "text": '{"message":"RecognitionStarted","id":"s-1"}',
     "bytes": 43, "state": "recognizing"},
    {"t": 0.030, "kind": "in", "n": 4, "type": "text", "text": '{"message":"<script>alert(1)</script>"}',
     "bytes": 39, "state": "recognizing"},
    {"t": 0.031, "kind": "out", "n": 5, "type": "text", "text": "x" * 1000, "bytes": 1000, "state": "recognizing"},
    {"t": 0.040, "kind": "in", "n": 6, "type": "text", "text": '{"message":"EndOfStream","last_seq_no":1}',
     "bytes": 41, "state": "draining"},
    {"t": 0.050, "kind": "out", "n": 7, "type": "text", "text": '{"message":"EndOfTranscript"}', "bytes": 29,
     "state": "finished"},
    {"t": 0.060, "kind": "close", "code": 1000, "ending": "normal", "rule": "LC-END-001", "detail": "",
     "state": "closed"},
)

CASES = (
    CaseResult("SM-ORDER-001", "StartRecognition is the first message of a session (§4.6.1).", "pass",
               rule="SM-ORDER-001"),
    CaseResult("SM-ORDER-002", "The client sends no audio or other message before RecognitionStarted (§4.6.3).",
               "fail", rule="SM-ORDER-002", details="AddAudio sent before RecognitionStarted", frames=(2,),
               duration=0.25),
    CaseResult("SM-MSG-002", 'The "message" field names a client message of the API (§4.3).', "fail",
               severity="warning", rule="SM-MSG-002", details="unknown message <script>", frames=(4,)),
    CaseResult("SM-CLOSE-001", "The client closes after EndOfTranscript.", "non-strict",
               details="closed 12 ms after EndOfTranscript"),
    CaseResult("SM-INFO-001", "Frame sizes.", "informational", severity="info", details="audio frames of 4 bytes"),
    CaseResult("SM-EOS-001", "Audio after EndOfStream is answered by a warning and ignored (§4.6.7).", "skipped",
               rule="SM-EOS-001", details="no audio after EndOfStream"),
)

PATH = ("awaiting_start", "starting", "recognizing", "draining", "finished", "closed")


def client_report(**changes) -> Report:
    fields = dict(kind="client", title="Client conformance: session s-1", subject="s-1", dialect="speechmatics",
                  cases=CASES, created="2024-05-01T12:00:00Z", timeline=TIMELINE, path=PATH)
    fields.update(changes)
    return Report(**fields)


def server_report() -> Report:
    cases = (
        CaseResult("speechmatics/transitions/awaiting_start/StartRecognition", "StartRecognition starts.", "pass",
                   duration=0.01),
        CaseResult("speechmatics/forbidden/awaiting_start/AddAudio", "StartRecognition comes first.", "fail",
                   rule="SM-ORDER-001", details="expected close 1003, got 1000", duration=0.02),
    )
    return Report(kind="server", title="Server conformance", subject="ws://127.0.0.1:9000", dialect="speechmatics",
                  cases=cases, created="2024-05-01T12:00:00Z",
                  coverage={"transitions": [1, 11], "forbidden": [1, 19]})


# --- JSON -------------------------------------------------------------------------------------------------------

def test_json_round_trip_is_exact_for_client_and_server_reports():
    for report in (client_report(), server_report()):
        back = from_json(to_json(report))
        assert back == report
        assert isinstance(back.cases[1].frames, tuple) and isinstance(back.path, tuple)
        assert isinstance(back.timeline, tuple)


def test_json_carries_counts_and_outcome_for_readers_in_a_stable_order():
    text = to_json(client_report())
    data = json.loads(text)
    assert data["counts"] == {"pass": 1, "non-strict": 1, "informational": 1, "fail": 2, "skipped": 1}
    assert data["passed"] is False
    assert list(data)[:4] == ["kind", "title", "subject", "dialect"]
    assert text == to_json(from_json(text))
    assert text.startswith('{\n  "kind"')


def test_json_readers_fields_are_ignored_on_reading():
    data = json.loads(to_json(server_report()))
    data["passed"], data["counts"] = True, {"pass": 99}
    assert from_json(json.dumps(data)) == server_report()


# --- JUnit ------------------------------------------------------------------------------------------------------

def test_junit_parses_with_the_counts_and_a_failure_per_failed_case():
    suite = ET.fromstring(to_junit(client_report()))
    assert suite.tag == "testsuite"
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("6", "2", "1")
    assert float(suite.get("time")) == 0.25
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == [c.id for c in CASES]
    assert {c.get("classname") for c in cases} == {"speechmatics"}
    failures = {c.get("name"): c.find("failure") for c in cases if c.find("failure") is not None}
    assert set(failures) == {"SM-ORDER-002", "SM-MSG-002"}
    order = failures["SM-ORDER-002"]
    assert order.get("message") == "AddAudio sent before RecognitionStarted" and order.get("type") == "error"
    assert "rule: SM-ORDER-002" in order.text and "frames: 2" in order.text
    assert "before RecognitionStarted (§4.6.3)" in order.text
    assert failures["SM-MSG-002"].get("type") == "warning"  # still a failure: CI decides
    by_name = {c.get("name"): c for c in cases}
    assert by_name["SM-EOS-001"].find("skipped") is not None
    assert "non-strict" in by_name["SM-CLOSE-001"].find("system-out").text
    assert "informational" in by_name["SM-INFO-001"].find("system-out").text
    assert list(by_name["SM-ORDER-001"]) == []


def test_junit_survives_control_characters_in_details():
    report = server_report()
    case = CaseResult("x/1", "r", "fail", details="bad \x00\x1b frame")
    suite = ET.fromstring(to_junit(Report("server", "t", "s", "speechmatics", (case,))))
    assert suite.find("testcase/failure").get("message").startswith("bad ")
    assert ET.fromstring(to_junit(report)).get("failures") == "1"


# --- text -------------------------------------------------------------------------------------------------------

def test_text_has_a_line_a_case_failed_first_with_its_requirement_details_where_it_did_not_pass_and_a_summary():
    lines = to_text(client_report()).splitlines()
    assert len(lines) == len(CASES) + 2 + 1  # a requirement line under each of the two failed cases
    assert lines[0].split()[:2] == ["SM-ORDER-002", "FAIL"] and lines[0].endswith("before RecognitionStarted")
    assert lines[1].split() == ["requirement:", *CASES[1].requirement.split()]
    # SM-MSG-002 failed with severity warning: it shows as a warning, not as FAIL, right after the failures
    assert lines[2].split()[:2] == ["SM-MSG-002", "WARNING"] and lines[3].strip().startswith("requirement: The")
    assert [line.split()[0] for line in lines[4:-1]] == ["SM-ORDER-001", "SM-CLOSE-001", "SM-INFO-001",
                                                         "SM-EOS-001"]
    assert "SKIPPED" in lines[-2] and "no audio after EndOfStream" in lines[-2]
    assert lines[-1] == "6 cases: 1 fail, 1 warning, 1 non-strict, 1 informational, 1 skipped, 1 pass — FAILED"


def test_text_summary_of_a_server_report_names_its_coverage():
    last = to_text(server_report()).splitlines()[-1]
    assert last == "2 cases: 1 fail, 1 pass; transitions 1/11; forbidden 1/19 — FAILED"


def test_a_failed_warning_is_not_printed_as_fail_under_passed():
    report = client_report(cases=tuple(c for c in CASES if c.verdict != "fail" or c.severity == "warning"))
    text = to_text(report)
    assert report.passed and "FAIL" not in text
    assert text.splitlines()[0].split()[:2] == ["SM-MSG-002", "WARNING"]
    assert text.splitlines()[-1].endswith("1 warning, 1 non-strict, 1 informational, 1 skipped, 1 pass — PASSED with 1 warning")
    page = to_html(report)
    assert '<p class="outcome passed">PASSED with 1 warning</p>' in page
    assert '<td class="verdict v-warning">warning</td>' in page and "v-fail\">fail<" not in page
    assert json.loads(to_json(report))["cases"][1]["verdict"] == "fail"  # machines still read fail + severity
    two = Report("server", "t", "s", "speechmatics", (CaseResult("a", "r", "fail", severity="warning"),) * 2)
    assert to_text(two).splitlines()[-1] == "2 cases: 2 warning — PASSED with 2 warnings"


# --- HTML -------------------------------------------------------------------------------------------------------

def test_html_escapes_everything_and_is_self_contained():
    page = to_html(client_report())
    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "unknown message &lt;script&gt;" in page
    assert not re.search(r"<(script|link)\b|src=|@import|url\(http", page)
    assert page.startswith("<!DOCTYPE html>") and "<style>" in page


def test_html_shows_summary_and_the_cases_with_coloured_verdicts_and_linked_frames():
    page = to_html(client_report())
    assert "Client conformance: session s-1" in page and "2024-05-01T12:00:00Z" in page
    assert '<span class="v-fail">1 fail</span>' in page and '<span class="v-warning">1 warning</span>' in page
    assert '<td class="verdict v-fail">fail</td>' in page and '<td class="verdict v-pass">pass</td>' in page
    assert '<a href="#frame-2">2</a>' in page and '<a href="#frame-4">4</a>' in page
    assert "FAILED" in page


def test_html_timeline_has_a_row_a_record_with_anchors_and_the_failed_frames_marked():
    page = to_html(client_report())
    rows = re.findall(r"<tr class=\"([^\"]*)\"( id=\"frame-\d+\")?>(.*?)</tr>", page.split("<h2>Timeline</h2>")[1])
    assert len(rows) == len(TIMELINE)
    assert [cls for cls, _, _ in rows] == ["open", "in", "in involved", "violation", "out", "in involved", "out",
                                          "in", "out", "close"]
    anchors = [a for _, a, _ in rows if a]
    assert anchors == [f' id="frame-{n}"' for n in range(1, 8)]
    by_anchor = {a: body for _, a, body in rows if a}
    assert "fails SM-ORDER-002" in by_anchor[' id="frame-2"'] and "binary, 4 bytes" in by_anchor[' id="frame-2"']
    assert "fails SM-MSG-002" in by_anchor[' id="frame-4"']
    assert "client→server" in by_anchor[' id="frame-1"'] and "server→client" in by_anchor[' id="frame-3"']
    assert ">starting<" in by_anchor[' id="frame-1"']
    assert "x" * 300 + "… (1000 characters)" in by_anchor[' id="frame-5"'] and "x" * 301 not in page
    violation = rows[3][2]
    assert "breaks SM-ORDER-002" in violation and '<a href="#frame-2">2</a>' in violation
    assert "code 1000" in rows[-1][2] and "jwt=<redacted>" not in page and "jwt=&lt;redacted&gt;" in page


def test_html_of_a_server_report_has_coverage_and_no_timeline():
    page = to_html(server_report())
    assert "coverage: transitions</dt><dd>1 / 11 (9%)" in page
    assert "Timeline" not in page and "<svg" not in page


# --- the state diagram ------------------------------------------------------------------------------------------

def svg_of(page: str) -> ET.Element:
    return ET.fromstring(re.search(r"<svg.*?</svg>", page, re.S).group(0))


NS = "{http://www.w3.org/2000/svg}"


def test_the_diagram_highlights_exactly_the_states_and_transitions_of_the_path():
    path = ("awaiting_start", "starting", "recognizing", "recognizing", "closed")
    svg = svg_of(to_html(client_report(path=path)))
    groups = svg.findall(f"{NS}g")
    states = {g.get("data-state"): g.get("class").split() for g in groups if "state" in g.get("class").split()}
    assert set(states) == set(load_chart("speechmatics").states)
    assert {s for s, cls in states.items() if "visited" in cls} == set(path)
    assert [s for s, cls in states.items() if "current" in cls] == ["closed"]
    taken = {(g.get("data-source"), g.get("data-target")) for g in groups if "taken" in g.get("class").split()}
    assert taken == {("awaiting_start", "starting"), ("starting", "recognizing"), ("recognizing", "recognizing"),
                     ("recognizing", "closed")}
    edges = [g for g in groups if "edge" in g.get("class").split()]
    labels = {"".join(g.itertext()) for g in edges}
    assert "StartRecognition" in labels and "close" in labels


def test_the_diagram_lays_out_every_chart_with_the_initial_state_first_and_final_states_last():
    for name in ("speechmatics", "lifecycle", "voicerun", "scriptix", "vblaze", "yourvoic", "assemblyai"):
        chart = load_chart(name)
        order = layout_order(chart)
        assert sorted(order) == sorted(chart.states) and order[0] == chart.initial
        assert set(order[-len(chart.final):]) == chart.final
        svg = ET.fromstring(state_diagram(chart))
        assert not [g for g in svg.iter(f"{NS}g") if "visited" in g.get("class", "")]
    assert layout_order(load_chart("speechmatics")) == list(PATH)


def test_the_diagram_escapes_names():
    report = client_report(title='chart "<b>"')
    assert '<b>' not in to_html(report).replace("<body>", "")


# --- files ------------------------------------------------------------------------------------------------------

def test_write_report_writes_json_html_and_junit_into_a_new_directory(tmp_path):
    paths = write_report(client_report(), tmp_path / "reports" / "s-1", "session-s-1")
    assert [p.name for p in paths] == ["session-s-1.json", "session-s-1.html", "session-s-1.xml"]
    assert all(p.is_file() for p in paths)
    assert from_json(paths[0].read_text(encoding="utf-8")) == client_report()
    assert ET.parse(paths[2]).getroot().get("failures") == "2"
    assert "frame-2" in paths[1].read_text(encoding="utf-8")
