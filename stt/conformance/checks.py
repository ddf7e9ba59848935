"""A client's conformance, from its session's logbook: which rules of its dialect it kept and which it broke.

The cases of a client report are the rules a client can break: the chart's rules (those its frames break, found
by the dialect as they arrived and recorded as "violation" records, and those whose ending the client caused: an
idle timeout, a frame over the size limit, audio that does not decode, a missing key) and the chart's
`client_rules`, which no single frame breaks and which are evaluated here over the whole session (CHECKS). Rules
only the server can cause (its own failures, its limits, its shutdown, an injected fault) are not the client's:
a session that the server ended so reports them as informational.

    report = evaluate(read_logbook(path))
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Callable

import attrs

from stt.audio.pcm import RAW_ENCODINGS
from stt.conformance.logbook import read_logbook
from stt.conformance.report import CaseResult, Report, to_text, utc_now, write_report
from stt.dialects import dialect_named
from stt.statechart import CLIENT_CHECKS, Chart, ClientRule
from stt.testmodes import TestModes

#: Endings the client causes: the rule the chart names for each is the client's to keep.
CLIENT_ENDINGS = ("idle_timeout", "message_too_large", "bad_audio", "unauthorised", "protocol_error", "invalid_utf8")
#: Endings the server causes: not held against the client (an informational case says how the session ended).
SERVER_ENDINGS = ("internal_error", "shutdown", "busy", "session_timeout", "fault")
#: How sessions end otherwise: no rule of the client's (the ends_stream rules judge the client's part in it).
ORDINARY_ENDINGS = ("normal", "dropped", "client_closed")


@attrs.frozen
class Finding:
    detail: str
    frames: tuple[int, ...] = ()


@attrs.frozen
class Recorded:
    """What the checks read: the logbook's records, sorted by kind."""

    records: list[dict]
    dialect: type
    frames_in: list[dict]
    format: dict | None  # the declared audio format (the configure record), if any
    close: dict | None  # the close record (None: the logbook ends before the session did)

    @classmethod
    def of(cls, records: list[dict]) -> Recorded:
        dialect = dialect_named(records[0]["dialect"])
        formats = [r["format"] for r in records if r["kind"] == "configure"]
        closes = [r for r in records if r["kind"] == "close"]
        return cls(records, dialect, [r for r in records if r["kind"] == "in"], formats[0] if formats else None,
                   closes[-1] if closes else None)

    @property
    def ended_by_server(self) -> bool:
        return self.close is None or self.close["ending"] in SERVER_ENDINGS

    def audio_frames(self) -> list[dict]:
        return [r for r in self.frames_in if r.get("audio")]


# --- the client_rules checks: each answers None (not applicable to this session) or its findings -----------


def _ends_stream(session: Recorded, params: dict) -> list[Finding] | None:
    if session.ended_by_server:
        return None
    ending, code = session.close["ending"], session.close["code"]
    last = session.frames_in[-1]["n"] if session.frames_in else None
    frames = (last,) if last else ()
    if ending == "client_closed":
        return [Finding(f"the client closed the connection (code {code}) in state {session.close['state']}, "
                        "before the exchange completed", frames)]
    if ending == "dropped":
        return [Finding(f"the connection dropped without a close frame in state {session.close['state']}, "
                        "before the exchange completed", frames)]
    return []


def _last_seq_no(session: Recorded, params: dict) -> list[Finding] | None:
    message, field = params["message"], params["field"]
    findings, sent = [], 0
    for record in session.frames_in:
        sent += record.get("events", []).count("Audio")  # the server acknowledges each, an empty one too
        if record["type"] != "text":
            continue
        try:
            body = json.loads(record["text"])
        except ValueError:
            continue
        if isinstance(body, dict) and body.get("message") == message and field in body:
            if body[field] != sent:
                findings.append(Finding(f"{message} says {field} {body[field]!r}, but {sent} audio frames were "
                                        "sent", (record["n"],)))
    return findings


def _bytes_per_second(session: Recorded) -> float | None:
    fmt = session.format
    encoding = RAW_ENCODINGS.get(fmt["encoding"]) if fmt else None
    if encoding is None or not fmt.get("sample_rate"):
        return None  # a container file, or no format declared: durations are unknown from bytes alone
    return fmt["sample_rate"] * max(1, fmt.get("channels") or 1) * encoding.width


def _chunk_duration(session: Recorded, params: dict) -> list[Finding] | None:
    rate = _bytes_per_second(session)
    if rate is None:
        return None
    low, high = float(params["min_ms"]), float(params["max_ms"])
    frames = session.audio_frames()
    outside = []
    for i, record in enumerate(frames):
        ms = record["audio"] / rate * 1000
        last = i == len(frames) - 1  # the end of the audio may be any length
        if ms > high or (ms < low and not last):
            outside.append((record["n"], ms))
    if not outside:
        return []
    examples = ", ".join(f"frame {n}: {ms:.3g} ms" for n, ms in outside[:5])
    return [Finding(f"{len(outside)} of {len(frames)} audio frames last outside {low:g}-{high:g} ms ({examples})",
                    tuple(n for n, _ in outside))]


def _real_time(session: Recorded, params: dict) -> list[Finding] | None:
    rate = _bytes_per_second(session)
    frames = session.audio_frames()
    if rate is None or not frames:
        return None
    factor, slack = float(params["factor"]), float(params["slack_s"])
    start, sent = frames[0]["t"], 0.0
    for record in frames:
        elapsed = record["t"] - start
        if sent > factor * elapsed + slack:  # the audio sent before this frame is ahead of the clock
            return [Finding(f"{sent:.1f} s of audio were sent in {elapsed:.1f} s ({sent / max(elapsed, 1e-3):.1f} "
                            f"times real time; at most {factor:g}, with {slack:g} s of leeway)", (record["n"],))]
        sent += record["audio"] / rate
    return []


def _waits_for_start(session: Recorded, params: dict) -> list[Finding] | None:
    early = [r["n"] for r in session.frames_in if r.get("early")]
    if not early:
        return []
    return [Finding(f"frame {early[0]} arrived before the session had started ({params['answer']} had not been "
                    "sent yet); stt served it once the session started, the vendor's service may not",
                    tuple(early))]


CHECKS: dict[str, Callable[[Recorded, dict], list[Finding] | None]] = {
    "ends_stream": _ends_stream,
    "last_seq_no": _last_seq_no,
    "chunk_duration": _chunk_duration,
    "real_time": _real_time,
    "waits_for_start": _waits_for_start,
}
assert set(CHECKS) == set(CLIENT_CHECKS), "stt.statechart.CLIENT_CHECKS and CHECKS name the same checks"


# --- the report ----------------------------------------------------------------------------------------------


def client_rule_ids(chart: Chart, dialect=None) -> list[str]:
    """The chart's rules a client can break, in chart order (see the module docstring)."""
    used_endings = set(chart.endings.values())
    server = {chart.endings[e] for e in ORDINARY_ENDINGS + SERVER_ENDINGS if e in chart.endings}
    notice = dialect.time_limit_warning_rule if dialect is not None else None
    ids = []
    for rule_id in chart.rules:
        if rule_id in server or rule_id == notice:
            continue
        if rule_id.startswith("LC-") and rule_id not in used_endings:
            continue  # a lifecycle ending the dialect names its own rule for
        ids.append(rule_id)
    return sorted(ids, key=lambda rule_id: rule_id.startswith("LC-"))  # the dialect's own first, in chart order


def evaluate(records: list[dict], *, created: str | None = None) -> Report:
    """The client report of one session's logbook."""
    session = Recorded.of(records)
    chart = session.dialect.chart
    opened = records[0]
    findings: dict[str, list[Finding]] = defaultdict(list)
    for record in records:
        if record["kind"] == "violation":
            frame = record.get("frame")
            findings[record["rule"]].append(Finding(record["detail"], (frame,) if frame else ()))
    close = session.close
    if close is not None and close["ending"] in CLIENT_ENDINGS:
        findings[close["rule"]].append(Finding(close["detail"] or close["ending"]))

    cases = []
    for rule_id in client_rule_ids(chart, session.dialect):
        rule = chart.rules[rule_id]
        cases.append(_case(rule_id, rule.requirement, "warning" if rule.warning else "error",
                           findings.pop(rule_id, [])))
    for rule in chart.client_rules.values():
        cases.append(_client_rule_case(rule, session))
    for rule_id, found in findings.items():  # a rule recorded that is not the client's (a server notice)
        cases.append(_case(rule_id, chart.rules[rule_id].requirement if rule_id in chart.rules else rule_id,
                           "info", found, verdict="informational"))
    if session.ended_by_server:
        what = "the logbook ends before the session did" if close is None else (
            f"the server ended the session: {close['ending']} ({close['rule']}, close {close['code']})"
            f"{': ' + close['detail'] if close['detail'] else ''}")
        cases.append(CaseResult(f"{chart.name}/session/ending", "How the session ended.", "informational",
                                "info", close["rule"] if close else None, what))
    return Report(
        kind="client",
        title=f"{chart.title}: client conformance",
        subject=opened["session"],
        dialect=chart.name,
        cases=tuple(cases),
        created=created or utc_now(),
        timeline=tuple(records),
        path=_path(records),
    )


def _case(rule_id: str, requirement: str, severity: str, found: list[Finding], verdict: str | None = None):
    frames = tuple(sorted({n for f in found for n in f.frames}))
    details = "; ".join(dict.fromkeys(f.detail for f in found))
    if len(found) > 1:
        details = f"{len(found)} times: {details}"
    return CaseResult(rule_id, requirement, verdict or ("fail" if found else "pass"), severity, rule_id, details,
                      frames)


def _client_rule_case(rule: ClientRule, session: Recorded) -> CaseResult:
    found = CHECKS[rule.check](session, rule.params)
    if found is None:
        return CaseResult(rule.id, rule.requirement, "skipped", rule.severity, rule.id,
                          "not applicable to this session")
    return _case(rule.id, rule.requirement, rule.severity, found)


def _path(records: list[dict]) -> tuple[str, ...]:
    path: list[str] = []
    for record in records:
        state = record.get("state")
        if state and (not path or path[-1] != state):
            path.append(state)
    return tuple(path)


def write_client_report(directory: Path, session: str) -> list[Path]:
    """The report of the logbook DIR/<session>.jsonl, beside it (stt serve --conformance)."""
    return write_report(evaluate(read_logbook(directory / f"{session}.jsonl")), directory, session)


def modes_with_reports(config) -> TestModes:
    """The test modes `config` (a ServerConfig) asks for, each recorded session's client report written after it
    (write_client_report): what `stt serve` runs its server with."""
    return TestModes.from_config(config, report=write_client_report)


def report_command(args) -> int:
    """stt report LOGBOOK... [--out DIR]: each logbook's report, written and printed (a header line names the
    logbook when there are several). 2 when a logbook cannot be read (the others are still reported), else 1
    when a client broke a rule of severity error, else 0."""
    logbooks = args.logbook if isinstance(args.logbook, list) else [args.logbook]
    status = 0
    for logbook in logbooks:
        try:
            report = evaluate(read_logbook(logbook))
        except (OSError, ValueError, KeyError) as exc:
            print(f"stt report: {logbook}: {exc}", file=sys.stderr)
            status = 2
            continue
        for path in write_report(report, args.out or logbook.parent, logbook.stem):
            print(f"wrote {path}", file=sys.stderr)
        if len(logbooks) > 1:
            print(f"== {logbook}")
        print(to_text(report))
        if not report.passed and status == 0:
            status = 1
    return status
