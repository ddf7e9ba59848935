"""Conformance reports, in the form of Autobahn|Testsuite and h2spec: hierarchical case ids, the requirement each
case checks, a verdict per case; rendered as JSON (read back by `from_json`), HTML for a person, JUnit XML for CI,
and plain text for a console (`to_text`). `write_report` writes the three files.

Two kinds share the model: "server" reports (`stt conform`: one case per transition or forbidden pair of a chart,
a case that did not pass carrying its connection's frames, `exchange`) and "client" reports (`stt serve
--conformance`: one case per rule a client must keep, failed by the findings against it, each naming the frames
involved). A client report's HTML adds the session's timeline (its logbook, the frames of failed cases marked,
runs of audio frames and their acknowledgements folded into one row each) and the dialect chart with the path
taken (stt.conformance.svg).

For a person (text and HTML) the failed cases come first, and a failed case of severity warning shows as a
"warning" (CaseResult.shown), which does not fail the report; JSON and JUnit keep "fail" and the severity.
"""

from __future__ import annotations

import datetime
import html
import json
import re
import urllib.parse
import xml.etree.ElementTree as ET
from pathlib import Path

import attrs

#: Verdicts, as Autobahn names them (lower case): a failed case is a broken requirement; non-strict, a behaviour
#: the requirement allows but does not prefer; informational, an observation; skipped, not run.
VERDICTS = ("pass", "non-strict", "informational", "fail", "skipped")


def utc_now() -> str:
    """A report's `created`: now, ISO 8601 in UTC, to the second (2026-12-01T19:41:43Z)."""
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@attrs.frozen
class CaseResult:
    id: str  # hierarchical: "speechmatics/forbidden/awaiting_start/AddAudio", or a rule id in a client report
    requirement: str  # the requirement in words (from the chart)
    verdict: str  # one of VERDICTS
    severity: str = "error"  # what a failure means: one of stt.statechart.SEVERITIES
    rule: str | None = None  # the chart rule the case checks, when there is one
    details: str = ""  # what was observed, in words
    frames: tuple[int, ...] = ()  # client reports: the indexes (the logbook's "n") of the frames involved
    duration: float = 0.0  # seconds the case took
    #: server reports, a case that did not pass: the frames of its connection as logbook-like records
    #: ({"t", "kind": "in" (client→server) | "out" (server→client) | "close" | "note", "type", "text" | "bytes"})
    exchange: tuple[dict, ...] = ()

    @property
    def failed(self) -> bool:
        return self.verdict == "fail"

    @property
    def shown(self) -> str:
        """The verdict as a person reads it: a failed case of severity warning (or info) is a "warning", which
        does not fail the report; JSON and JUnit keep "fail" and the severity."""
        return "warning" if self.failed and self.severity != "error" else self.verdict


@attrs.frozen
class Report:
    kind: str  # "server" or "client"
    title: str
    subject: str  # the URL tested (server), or the session id (client)
    dialect: str
    cases: tuple[CaseResult, ...]
    created: str = ""  # ISO 8601 UTC
    #: server reports: {"transitions": [exercised, total], "forbidden": [exercised, total]}
    coverage: dict[str, list[int]] = attrs.field(factory=dict)
    #: client reports: the logbook's records (stt.conformance.logbook), for the HTML timeline
    timeline: tuple[dict, ...] = ()
    #: client reports: the dialect chart's states in the order the session went through them
    path: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        """No case failed with severity error."""
        return not any(c.failed and c.severity == "error" for c in self.cases)

    def counts(self) -> dict[str, int]:
        return {v: sum(c.verdict == v for c in self.cases) for v in VERDICTS}

    def ordered(self) -> list[CaseResult]:
        """The cases as a person reads them: the failed ones first (errors, then warnings), then the others,
        each group in the report's order."""
        return sorted(self.cases, key=lambda c: 0 if c.shown == "fail" else 1 if c.shown == "warning" else 2)

    def warnings(self) -> int:
        """Failed cases that do not fail the report (severity warning or info)."""
        return sum(c.shown == "warning" for c in self.cases)


# --- JSON ---------------------------------------------------------------------------------------------------

_CASE_FIELDS = [f.name for f in attrs.fields(CaseResult)]


def _case_dict(case: CaseResult) -> dict:
    return {"id": case.id, "requirement": case.requirement, "verdict": case.verdict, "severity": case.severity,
            "rule": case.rule, "details": case.details, "frames": list(case.frames), "duration": case.duration,
            "exchange": list(case.exchange)}


def to_json(report: Report) -> str:
    """The report as JSON (indent 2, keys in a fixed order); `counts` and `passed` are there for readers and
    ignored by `from_json`."""
    data = {
        "kind": report.kind, "title": report.title, "subject": report.subject, "dialect": report.dialect,
        "created": report.created, "passed": report.passed, "counts": report.counts(),
        "coverage": report.coverage, "path": list(report.path),
        "cases": [_case_dict(c) for c in report.cases], "timeline": list(report.timeline),
    }
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def from_json(text: str) -> Report:
    """A report written by `to_json`, exactly as it was."""
    data = json.loads(text)
    cases = tuple(CaseResult(**{**{k: v for k, v in c.items() if k in _CASE_FIELDS},
                                "frames": tuple(c.get("frames", ())),
                                "exchange": tuple(c.get("exchange", ()))}) for c in data["cases"])
    return Report(kind=data["kind"], title=data["title"], subject=data["subject"], dialect=data["dialect"],
                  cases=cases, created=data.get("created", ""),
                  coverage={k: list(v) for k, v in data.get("coverage", {}).items()},
                  timeline=tuple(data.get("timeline", ())), path=tuple(data.get("path", ())))


# --- plain text (what `stt conform` prints) -------------------------------------------------------------------

#: The verdicts as the text and HTML forms show them: a failed warning is its own word (see CaseResult.shown).
SHOWN = ("fail", "warning", "non-strict", "informational", "skipped", "pass")


def shown_counts(report: Report) -> dict[str, int]:
    return {v: sum(c.shown == v for c in report.cases) for v in SHOWN}


def outcome(report: Report) -> str:
    """PASSED or FAILED; a report that passed with failed warnings says how many."""
    if not report.passed:
        return "FAILED"
    warnings = report.warnings()
    return f"PASSED with {warnings} warning{'s' if warnings != 1 else ''}" if warnings else "PASSED"


def summary(report: Report) -> str:
    """One line: the counts, the coverage of a server report, and the outcome."""
    counts = shown_counts(report)
    parts = [f"{counts[v]} {v}" for v in SHOWN if counts[v]]
    line = f"{len(report.cases)} cases: {', '.join(parts) or 'none run'}"
    for name, (done, total) in report.coverage.items():
        line += f"; {name} {done}/{total}"
    return f"{line} — {outcome(report)}"


def to_text(report: Report) -> str:
    """Autobahn's console form: `id  VERDICT  details` a case, the failed ones first (details only where it did
    not pass; under a failed case, the requirement it checks), then the summary line. A failed case of severity
    warning shows as WARNING: it does not fail the report."""
    cases = report.ordered()
    width = max((len(c.id) for c in cases), default=0)
    vwidth = max(len(v) for v in SHOWN)
    lines = []
    for case in cases:
        line = f"{case.id:<{width}}  {case.shown.upper():<{vwidth}}"
        if case.verdict != "pass" and case.details:
            line += f"  {case.details}"
        lines.append(line.rstrip())
        if case.failed and case.requirement:
            named = case.rule and case.rule != case.id and not case.requirement.startswith(case.rule)
            rule = f"{case.rule}: " if named else ""
            lines.append(f"{'':<{width}}  {'':<{vwidth}}  requirement: {rule}{case.requirement}")
    lines.append(summary(report))
    return "\n".join(lines) + "\n"


# --- JUnit XML ----------------------------------------------------------------------------------------------

# XML 1.0 cannot carry most control characters, not even escaped; a client's frame can hold any.
_NOT_XML = re.compile("[^\u0009\u000a\u000d\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _xml_text(text: str) -> str:
    return _NOT_XML.sub("\ufffd", text)


def _failure_body(case: CaseResult) -> str:
    lines = [f"requirement: {case.requirement}"]
    if case.rule:
        lines.append(f"rule: {case.rule}")
    if case.frames:
        lines.append(f"frames: {', '.join(map(str, case.frames))}")
    if case.details:
        lines.append(f"details: {case.details}")
    if case.exchange:
        lines.append("exchange:")
        lines += [f"  {exchange_line(record)}" for record in case.exchange]
    return _xml_text("\n".join(lines))


def exchange_line(record: dict) -> str:
    """One record of a server case's exchange, in words: `0.012 client→server text {...}`."""
    kind = record.get("kind", "")
    t = record.get("t")
    when = f"{t:.3f}" if isinstance(t, (int, float)) else ""
    if kind in ("in", "out"):
        what = (f"binary, {record.get('bytes', 0)} bytes" if record.get("type") == "binary"
                else record.get("text", ""))
    elif kind == "close":
        what = f"code {record.get('code')}" + (f" ({record['reason']})" if record.get("reason") else "")
    else:
        what = record.get("text", "")
    return f"{when} {_DIRECTIONS.get(kind, kind)} {what}".strip()


def to_junit(report: Report) -> str:
    """JUnit XML for CI: a testsuite, a testcase a case. A failed case is a <failure> whatever its severity (its
    `type`); CI decides what a warning means. Non-strict and informational cases pass, noting the verdict."""
    counts = report.counts()
    suite = ET.Element("testsuite", {
        "name": _xml_text(report.title), "tests": str(len(report.cases)), "failures": str(counts["fail"]),
        "errors": "0", "skipped": str(counts["skipped"]), "time": f"{sum(c.duration for c in report.cases):.3f}",
    })
    if report.created:
        suite.set("timestamp", report.created)
    props = ET.SubElement(suite, "properties")
    for name, value in (("kind", report.kind), ("subject", report.subject), ("dialect", report.dialect)):
        ET.SubElement(props, "property", {"name": name, "value": _xml_text(value)})
    for case in report.cases:
        element = ET.SubElement(suite, "testcase", {"classname": report.dialect, "name": _xml_text(case.id),
                                                    "time": f"{case.duration:.3f}"})
        if case.verdict == "fail":
            failure = ET.SubElement(element, "failure", {"message": _xml_text(case.details or case.requirement),
                                                         "type": case.severity})
            failure.text = _failure_body(case)
        elif case.verdict == "skipped":
            skipped = ET.SubElement(element, "skipped")
            if case.details:
                skipped.set("message", _xml_text(case.details))
        elif case.verdict != "pass":
            out = ET.SubElement(element, "system-out")
            out.text = _xml_text(f"verdict: {case.verdict}" + (f": {case.details}" if case.details else ""))
    ET.indent(suite)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suite, encoding="unicode") + "\n"


# --- HTML ---------------------------------------------------------------------------------------------------

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #212529; }
h1 { margin-bottom: 0.2em; } h2 { margin-top: 1.6em; } h1, h2, h3, dd { overflow-wrap: anywhere; }
table { border-collapse: collapse; width: 100%; font-size: 0.92em; }
th, td { border: 1px solid #dee2e6; padding: 0.3em 0.5em; text-align: left; vertical-align: top;
         overflow-wrap: anywhere; }
table.cases, table.timeline { table-layout: fixed; }  /* the widths the header gives; long text wraps */
td.rule, td.severity { white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.requirement-of { color: #495057; font-weight: normal; }
th { background: #f1f3f5; }
dl.meta { display: grid; grid-template-columns: max-content auto; gap: 0.2em 1em; }
dl.meta dt { font-weight: bold; } dl.meta dd { margin: 0; }
.verdict { font-weight: bold; text-transform: uppercase; white-space: nowrap; }
.v-pass { color: #2b8a3e; } .v-fail { color: #c92a2a; } .v-non-strict { color: #e67700; }
.v-informational { color: #1971c2; } .v-skipped { color: #868e96; } .v-warning { color: #e67700; }
tr.case-fail { background: #fff5f5; } tr.case-warning { background: #fff9db; }
.timeline tr.run td.text { font-family: inherit; color: #495057; font-style: italic; }
.outcome { font-size: 1.2em; font-weight: bold; }
.outcome.passed { color: #2b8a3e; } .outcome.failed { color: #c92a2a; }
.timeline td.text { font-family: ui-monospace, monospace; white-space: pre-wrap; word-break: break-all; }
.timeline tr.in td.dir { color: #1971c2; } .timeline tr.out td.dir { color: #5f3dc4; }
.timeline tr.involved { background: #fff5f5; } .timeline tr.violation { background: #ffe3e3; }
.timeline tr.open, .timeline tr.close { background: #f8f9fa; }
.timeline tr:target { outline: 2px solid #e67700; }
.note { color: #c92a2a; font-weight: bold; }
.binary { color: #868e96; font-style: italic; }
.diagram { overflow-x: auto; }
"""

TEXT_LIMIT = 300  # characters of a frame's text shown in the timeline
#: Runs of at least this many audio frames (and the server's acknowledgements among them) show as one row.
RUN_MIN = 3
#: Server messages that only acknowledge audio (Speechmatics AudioAdded; the other dialects send none).
AUDIO_ACKS = ("AudioAdded",)


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _frame_links(frames: tuple[int, ...], link: bool) -> str:
    if not link:
        return _e(", ".join(map(str, frames)))
    return ", ".join(f'<a href="#frame-{n}">{n}</a>' for n in frames)


def _record_text(record: dict) -> str:
    """What a logbook record says, escaped, in the timeline's text column."""
    kind = record.get("kind")
    if kind in ("in", "out"):
        if record.get("type") == "binary":
            return f'<span class="binary">binary, {_e(record.get("bytes", 0))} bytes</span>'
        text = record.get("text", "")
        if len(text) > TEXT_LIMIT:
            text = text[:TEXT_LIMIT] + f"… ({len(text)} characters)"
        return _e(text)
    if kind == "open":
        query = urllib.parse.urlencode(record.get("query") or {}, doseq=True, safe="<>")
        faults = f" — faults {record['faults']}" if record.get("faults") else ""
        return _e(f"{record.get('dialect', '')} {record.get('path', '')}{'?' + query if query else ''}{faults}")
    if kind == "violation":
        frame = record.get("frame")
        where = f' (frame <a href="#frame-{int(frame)}">{int(frame)}</a>)' if frame is not None else ""
        return f"{_e(record.get('rule', ''))}: {_e(record.get('detail', ''))}{where}"
    if kind == "close":
        detail = f": {record['detail']}" if record.get("detail") else ""
        return _e(f"code {record.get('code')} — {record.get('ending', '')} {record.get('rule', '')}{detail}")
    return _e(json.dumps(record, ensure_ascii=False))


_DIRECTIONS = {"in": "client→server", "out": "server→client", "open": "open", "close": "close",
               "violation": "violation", "note": "note"}


def _id(value: str) -> str:
    """A case id, escaped, that may break after each "/" (server ids are long: the columns stay narrow)."""
    return "/<wbr>".join(_e(part) for part in value.split("/"))


def _requirements(report: Report) -> dict[str, str]:
    """rule id -> its requirement, as the report's cases give them."""
    return {c.rule or c.id: c.requirement for c in report.cases if c.requirement}


def _is_ack(record: dict) -> bool:
    if record.get("kind") != "out" or record.get("type") != "text":
        return False
    try:
        body = json.loads(record.get("text", ""))
    except ValueError:
        return False
    return isinstance(body, dict) and body.get("message") in AUDIO_ACKS


def _is_audio(record: dict) -> bool:
    if record.get("kind") != "in":
        return False
    if "events" in record:
        return record["events"] == ["Audio"]
    return record.get("type") == "binary" and bool(record.get("audio", record.get("bytes")))


def _runs(report: Report, involved: dict[int, list[str]]) -> list[dict | list[dict]]:
    """The timeline's records, with each run of audio frames (and the acknowledgements among them) in one state
    as a list; a frame that a failed case names is never in a run (its row, and its anchor, stay)."""
    def runnable(record: dict) -> bool:
        return (_is_audio(record) or _is_ack(record)) and int(record.get("n", 0)) not in involved

    out: list[dict | list[dict]] = []
    records = list(report.timeline)
    i = 0
    while i < len(records):
        j = i
        while j < len(records) and runnable(records[j]) and records[j].get("state") == records[i].get("state"):
            j += 1
        if sum(_is_audio(r) for r in records[i:j]) >= RUN_MIN:
            out.append(records[i:j])
            i = j
        else:
            out.append(records[i])
            i += 1
    return out


def _run_row(run: list[dict]) -> str:
    audio = [r for r in run if _is_audio(r)]
    acks = len(run) - len(audio)
    first, last = run[0], run[-1]
    carried = sum(int(r.get("audio", r.get("bytes", 0)) or 0) for r in audio)
    text = f"{len(audio)} audio frames, {carried:,} bytes of audio"
    if acks:
        text += f"; {acks} {' or '.join(AUDIO_ACKS)} acknowledgements"
    anchors = "".join(f'<span id="frame-{int(r["n"])}"></span>' for r in run if r.get("n") is not None)
    times = [r.get("t") for r in (first, last)]
    when = "–".join(f"{t:.3f}" for t in times if isinstance(t, (int, float)))
    direction = "client→server" + (", server→client" if acks else "")
    return (f'<tr class="run in">'
            f"<td>{_e(when)}</td><td>{_e(first.get('n', ''))}–{_e(last.get('n', ''))}</td>"
            f'<td class="dir">{_e(direction)}</td><td>{_e(first.get("state", ""))}</td>'
            f'<td class="text">{anchors}{_e(text)}</td><td class="note"></td></tr>')


def _timeline(report: Report) -> list[str]:
    involved: dict[int, list[str]] = {}  # frame -> the rules of the failed cases that name it
    for case in report.cases:
        if case.failed:
            for n in case.frames:
                involved.setdefault(n, []).append(case.rule or case.id)
    requirements = _requirements(report)

    def rule_with_requirement(rule: str) -> str:
        said = requirements.get(rule)
        return f'{_e(rule)}<span class="requirement-of">{_e(": " + said) if said else ""}</span>'

    rows = ['<table class="timeline"><thead><tr><th style="width:7em">t (s)</th><th style="width:4em">n</th>'
            '<th style="width:8em">direction</th><th style="width:8em">state after</th>'
            '<th>frame</th><th style="width:22%">note</th></tr></thead><tbody>']
    for record in _runs(report, involved):
        if isinstance(record, list):
            rows.append(_run_row(record))
            continue
        kind = record.get("kind", "")
        classes, note, anchor, n = [kind], "", "", record.get("n")
        if kind in ("in", "out") and n is not None:
            anchor = f' id="frame-{int(n)}"'
            if int(n) in involved:
                classes.append("involved")
                note = "fails " + "; ".join(rule_with_requirement(r) for r in dict.fromkeys(involved[int(n)]))
        elif kind == "violation":
            note = "breaks " + rule_with_requirement(record.get("rule", ""))
        t = record.get("t")
        rows.append(f'<tr class="{_e(" ".join(classes))}"{anchor}>'
                    f"<td>{_e(f'{t:.3f}' if isinstance(t, (int, float)) else '')}</td>"
                    f"<td>{_e(n if n is not None else '')}</td>"
                    f'<td class="dir">{_e(_DIRECTIONS.get(kind, kind))}</td>'
                    f"<td>{_e(record.get('state', ''))}</td>"
                    f'<td class="text">{_record_text(record)}</td>'
                    f'<td class="note">{note}</td></tr>')
    rows.append("</tbody></table>")
    return rows


def _exchange(case: CaseResult) -> list[str]:
    rows = ['<table class="timeline"><thead><tr><th style="width:7em">t (s)</th><th style="width:8em">direction</th>'
            "<th>frame</th></tr></thead><tbody>"]
    for record in case.exchange:
        kind = record.get("kind", "")
        t = record.get("t")
        if kind == "close":
            text = _e(f"code {record.get('code')}" + (f" ({record['reason']})" if record.get("reason") else ""))
        elif kind == "note":
            text = _e(record.get("text", ""))
        else:
            text = _record_text(record)
        rows.append(f'<tr class="{_e(kind)}"><td>{_e(f"{t:.3f}" if isinstance(t, (int, float)) else "")}</td>'
                    f'<td class="dir">{_e(_DIRECTIONS.get(kind, kind))}</td><td class="text">{text}</td></tr>')
    rows.append("</tbody></table>")
    return rows


def _diagram(report: Report) -> list[str]:
    from stt.conformance.svg import state_diagram
    from stt.statechart import load_chart

    try:
        chart = load_chart(report.dialect)
    except Exception as exc:  # a report names its dialect; one we do not have is not worth failing the page
        return [f"<p>No chart for dialect {_e(report.dialect)}: {_e(exc)}</p>"]
    path = " → ".join(report.path) if report.path else "(none recorded)"
    return [f"<p>Path taken: {_e(path)}. Highlighted: the states and transitions of the path; "
            "the thick red border: where it ended.</p>",
            f'<div class="diagram">{state_diagram(chart, report.path)}</div>']


def to_html(report: Report) -> str:
    """One self-contained page (inline CSS, no scripts, no fonts to fetch); every value escaped."""
    counts = shown_counts(report)
    client = report.kind == "client"
    passed = report.passed
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>{_e(report.title)}</title>", f"<style>{_CSS}</style></head><body>",
           f"<h1>{_e(report.title)}</h1>",
           f'<p class="outcome {"passed" if passed else "failed"}">{_e(outcome(report))}</p>',
           '<dl class="meta">',
           f"<dt>{'session' if client else 'subject'}</dt><dd>{_e(report.subject)}</dd>",
           f"<dt>dialect</dt><dd>{_e(report.dialect)}</dd>",
           f"<dt>created</dt><dd>{_e(report.created)}</dd>",
           f"<dt>cases</dt><dd>{len(report.cases)}: "
           + ", ".join(f'<span class="v-{v}">{counts[v]} {_e(v)}</span>' for v in SHOWN) + "</dd>"]
    for name, (done, total) in report.coverage.items():
        share = f" ({100 * done / total:.0f}%)" if total else ""
        out.append(f"<dt>coverage: {_e(name)}</dt><dd>{done} / {total}{share}</dd>")
    # A client report's case is a rule (its id is the rule's): no rule column then.
    rules = any(c.rule and c.rule != c.id for c in report.cases)
    frames = any(c.frames for c in report.cases)
    id_width = "22%" if any(len(c.id) > 16 for c in report.cases) else "9em"  # a rule id, or a hierarchical id
    out += ["</dl>", "<h2>Cases</h2>", "<p>Failed cases first.</p>" if any(c.failed for c in report.cases) else "",
            f'<table class="cases"><thead><tr><th style="width:{id_width}">id</th><th style="width:7em">verdict</th>'
            '<th style="width:6em">severity</th>' + ('<th style="width:8em">rule</th>' if rules else "")
            + "<th>requirement</th><th>details</th>" + ('<th style="width:5em">frames</th>' if frames else "")
            + "</tr></thead><tbody>"]
    for case in report.ordered():
        shown_id = f'<a href="#case-{_e(case.id)}">{_id(case.id)}</a>' if case.exchange else _id(case.id)
        out.append(f'<tr class="case-{_e(case.shown)}"><td class="id">{shown_id}</td>'
                   f'<td class="verdict v-{_e(case.shown)}">{_e(case.shown)}</td>'
                   f'<td class="severity">{_e(case.severity)}</td>'
                   + (f'<td class="rule">{_e(case.rule or "")}</td>' if rules else "")
                   + f"<td>{_e(case.requirement)}</td><td>{_e(case.details)}</td>"
                   + (f"<td>{_frame_links(case.frames, client and bool(report.timeline))}</td>" if frames else "")
                   + "</tr>")
    out.append("</tbody></table>")
    exchanges = [c for c in report.ordered() if c.exchange]
    if exchanges:
        out.append("<h2>Frames of the cases that did not pass</h2>")
        for case in exchanges:
            out += [f'<h3 id="case-{_e(case.id)}">{_id(case.id)} <span class="verdict v-{_e(case.shown)}">'
                    f"{_e(case.shown)}</span></h3>", *_exchange(case)]
    if client:
        out += ["<h2>State diagram</h2>", *_diagram(report)]
        out += ["<h2>Timeline</h2>", *_timeline(report)]
    out.append("</body></html>")
    return "\n".join(out) + "\n"


# --- files --------------------------------------------------------------------------------------------------

def write_report(report: Report, directory: str | Path, stem: str) -> list[Path]:
    """`<stem>.json`, `<stem>.html` and `<stem>.xml` (JUnit) in directory, made if missing. Each file appears
    whole (written beside, then renamed), so whoever watches the directory never reads half a report."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for suffix, render in ((".json", to_json), (".html", to_html), (".xml", to_junit)):
        path = directory / f"{stem}{suffix}"
        partial = path.with_name(f".{path.name}.partial")
        partial.write_text(render(report), encoding="utf-8")
        partial.replace(path)
        written.append(path)
    return written
