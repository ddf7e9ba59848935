"""Render a chart as a teaching page (docs/statecharts/<chart>.md): the vendor's documents, the state diagram
(client and server events told apart), a sequence diagram of a typical session and of each error path, every
message with a real example payload, the states, transitions, forbidden pairs, rules, endings and client rules.

The examples come from statecharts/examples/<dialect>.json, recorded against the real engine by
`stt diagrams --record` (stt.teaching): this module only reads them, so `stt diagrams` is fast and
deterministic, and a test fails when the pages are stale, so the docs cannot drift from the charts the server
executes nor from the frames it sends. A chart with no example file (the lifecycle) gets the diagram and tables.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from stt.statechart import ENDINGS, Chart, chart_names, charts_dir, load_chart, refusals

#: The chart event of the connection closing, which every chart has from every state.
CLOSE = "close"
#: How an edge label marks who moves the chart: the client (a frame it sends) or the server.
CLIENT_MARK, SERVER_MARK = "▶", "◀"
#: What sets off each ending, in words (the actor, the words): the error-path diagrams' first step.
ENDING_TRIGGERS = {
    "idle_timeout": ("Client", "sends nothing for the idle timeout"),
    "unauthorised": ("Client", "opens the connection with no key or a wrong one"),
    "message_too_large": ("Client", "sends a frame over the size limit"),
    "bad_audio": ("Client", "sends audio that does not decode as the format it declared"),
    "busy": ("Client", "opens a connection while the server is at its session limit"),
    "session_timeout": ("stt", "the session reaches the server's maximum duration (--max-session-seconds)"),
    "internal_error": ("stt", "the recognizer or the server fails"),
    "shutdown": ("stt", "the server is going away"),
    "protocol_error": ("Client", "sends a frame that breaks RFC 6455"),
    "invalid_utf8": ("Client", "sends a text frame that is not UTF-8"),
    "dropped": ("Client", "goes away without a close handshake"),
    "client_closed": ("Client", "closes before the end-of-stream exchange completes"),
    "normal": ("stt", "the end-of-stream exchange completes"),
}
assert set(ENDING_TRIGGERS) == set(ENDINGS)


def examples_path(name: str) -> Path:
    return charts_dir() / "examples" / f"{name}.json"


def load_examples(name: str) -> dict | None:
    """The recorded example exchange of the chart's dialect (stt.teaching), or None where there is none."""
    path = examples_path(name)
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


# --- the state diagram -----------------------------------------------------------------------------------------


def edges(chart: Chart) -> dict[tuple[str, str], list[str]]:
    """(source, target) -> the events that move from one to the other, in the chart's order."""
    by_edge: dict[tuple[str, str], list[str]] = {}
    for t in chart.transitions:
        by_edge.setdefault((t.source, t.target), []).append(t.event)
    return by_edge


def marked(chart: Chart, event: str) -> str:
    """An event with the mark of who fires it: ▶ a client frame, ◀ the server."""
    return f"{CLIENT_MARK if event in chart.client_events else SERVER_MARK} {event}"


def edge_label(chart: Chart, events: list[str]) -> str:
    """The events of one edge, client ones first, each marked, one a line."""
    ordered = [e for e in events if e in chart.client_events] + [e for e in events if e not in chart.client_events]
    return "<br>".join(marked(chart, e) for e in ordered)


def _closes_only(chart: Chart, state: str) -> bool:
    """Nothing but the connection closing moves the session on from `state` (its loops aside)."""
    return all(t.event == CLOSE or t.target == state for t in chart.transitions if t.source == state)


#: How a state lists the events that leave it where it is (drawn inside the state, not as a loop).
LOOP_MARK = "⟲"


def mermaid(chart: Chart) -> str:
    """stateDiagram-v2, drawn so that no two labels overlap: the events that leave a state where it is are
    listed inside the state (a self-loop's label lands on the state's other edges); the connection closing
    (`close`, from every state) is drawn only from the states it is the only way on from, and said once in a
    note (drawn from every state, its labels crowded the final state); an edge's events stand one a line."""
    lines = ["stateDiagram-v2", f"    [*] --> {chart.initial}"]
    closed_targets = {t.target for t in chart.transitions if t.event == CLOSE}
    for (source, target), events in edges(chart).items():
        if source == target:
            ordered = [e for e in events if e in chart.client_events] + [e for e in events
                                                                         if e not in chart.client_events]
            # Mermaid shows a state's first description as its title, the others under it: the name first.
            lines.append(f"    {source} : {source}")
            lines += [f"    {source} : {LOOP_MARK} {marked(chart, e)}" for e in ordered]
            continue
        if events == [CLOSE] and not _closes_only(chart, source):
            continue
        events = [e for e in events if e != CLOSE] or events
        lines.append(f"    {source} --> {target}: {edge_label(chart, events)}")
    for state in sorted(chart.final):
        lines.append(f"    {state} --> [*]")
    for target in sorted(closed_targets):
        lines.append(f"    note right of {target}: {marked(chart, CLOSE)} from every state")
    server_moved = sorted({t.source for t in chart.transitions if t.event in chart.server_events and t.event != CLOSE
                           and t.source != t.target})
    if server_moved and chart.client_events:  # where the server alone moves the chart, shading says nothing
        lines.append("    classDef serverMoves fill:#fff3d6,stroke:#b07d00")
        lines.append(f"    class {','.join(server_moved)} serverMoves")
    return "\n".join(lines)


LEGEND = (f"{CLIENT_MARK} a client event (a frame the client sends); {SERVER_MARK} a server event (what the server "
          f"sends or does); {LOOP_MARK} inside a state: an event that leaves the session in that state. Shaded states are left by a server event: the server moves on from them by itself. "
          "Messages that change no state (acknowledgements, partials, finals, errors) are not edges: the sequence "
          "diagrams and the message examples below show them.")


# --- sequence diagrams -----------------------------------------------------------------------------------------


def _mermaid_text(text: str) -> str:
    """Text safe in a Mermaid sequence message: no `;` (a statement break), `#` (an entity), `<>` or newline."""
    return (text.replace(";", ",").replace("#", "nr ").replace("<", "‹").replace(">", "›")
            .replace("\n", " ").strip())


_TEXT_KEYS = ("transcript", "text", "partial", "delta")


def said(value) -> str | None:
    """The words a result carries (its first transcript, text, partial or delta; Scriptix's result words,
    V-Blaze's utterance events)."""
    if isinstance(value, dict):
        if isinstance(value.get("events"), list):
            words = [e["word"] for e in value["events"] if isinstance(e, dict) and isinstance(e.get("word"), str)]
            if words:
                return " ".join(words)
        for key in _TEXT_KEYS:
            if isinstance(value.get(key), str) and value[key].strip():
                return value[key].strip()
        if isinstance(value.get("result"), list):
            words = [w[0] for w in value["result"] if isinstance(w, list) and w and isinstance(w[0], str)]
            if words:
                return " ".join(words)
        for v in value.values():
            found = said(v)
            if found:
                return found
    elif isinstance(value, list):
        for v in value:
            found = said(v)
            if found:
                return found
    return None


def frame_label(frame: dict, name: str) -> str:
    """A short label for a frame in a sequence diagram: its name, what kind it is, the words it carries."""
    if "binary" in frame:
        size = re.search(r"(\d+) bytes", frame["binary"])
        label = f"{name} (binary{', ' + size.group(1) + ' bytes' if size else ''})"
    else:
        words = said(frame.get("json")) if "json" in frame else None
        label = name + (f' "{words[:40]}{"…" if len(words) > 40 else ""}"' if words else "")
    if frame.get("count", 1) > 1:
        label += f" ×{frame['count']}"
    return _mermaid_text(label)


def _arrow(sender: str) -> str:
    return "Client->>stt" if sender == "client" else "stt-->>Client"


def folded(lines: list[str], longest: int = 4) -> list[str]:
    """Runs of a repeated group of lines (the audio frame and its acknowledgement, ...) as a Mermaid loop."""
    out: list[str] = []
    i = 0
    while i < len(lines):
        best = (1, 1)
        for size in range(1, longest + 1):
            unit = lines[i:i + size]
            if len(unit) < size:
                break
            count = 1
            while lines[i + count * size:i + (count + 1) * size] == unit:
                count += 1
            if count > 1 and size * count > best[0] * best[1]:
                best = (size, count)
        size, count = best
        if count > 1:
            out.append(f"    loop {count} times")
            out += ["    " + line for line in lines[i:i + size]]
            out.append("    end")
        else:
            out.append(lines[i])
        i += size * count
    return out


def _close_line(close: dict | None, chart: Chart) -> list[str]:
    if not close:
        return []
    code = close["code"]
    if close.get("by") == "client":
        return [f"    Client->>stt: Close {code}"]
    rule = chart.rules.get(close.get("rule", ""))
    reason = f" {rule.error}" if rule is not None and rule.error and code != 1000 else ""
    return [f"    stt-->>Client: Close {code}{_mermaid_text(reason)}"]


def session_sequence(chart: Chart, session: dict) -> str:
    """The typical session as a sequenceDiagram: every frame both ways, repeated runs as loops, the state
    changes as notes, the close."""
    lines = []
    state = chart.initial
    for frame in session["frames"]:
        name = frame.get("event") if frame["from"] == "client" else frame.get("type", "?")
        lines.append(f"    {_arrow(frame['from'])}: {frame_label(frame, name)}")
        if frame["state"] != state:
            state = frame["state"]
            lines.append(f"    Note over Client,stt: {state}")
    lines += _close_line(session.get("close"), chart)
    return "\n".join(["sequenceDiagram", "    participant Client", "    participant stt",
                      f"    Note over Client,stt: {chart.initial}", *folded(lines)])


def _answer_lines(chart: Chart, rule_id: str, answer: list[dict], close: int | None) -> list[str]:
    rule = chart.rules[rule_id]
    lines = []
    for frame in answer:
        name = frame.get("type", "?")
        named = rule.error or rule.warning
        if named and name.lower() in ("error", "warning"):  # the vendor's error type is inside the frame
            lines.append(f"    stt-->>Client: {_mermaid_text(f'{name} {named}')}")
        else:
            lines.append(f"    stt-->>Client: {frame_label(frame, name)}")
    if close is not None:
        reason = (rule.error or rule.message)[:40]
        lines.append(f"    stt-->>Client: Close {close} {_mermaid_text(reason)}")
    elif not answer:
        lines.append("    Note over Client,stt: no answer (the vendor sends none), the session goes on")
    else:
        lines.append("    Note over Client,stt: the session goes on")
    return lines


def error_sequence(chart: Chart, rule_id: str, error: dict) -> str:
    """A forbidden pair as a sequenceDiagram: the path to its state, the client's frame, the answer, the close."""
    lines = ["sequenceDiagram", "    participant Client", "    participant stt",
             f"    Note over Client,stt: {chart.initial}"]
    for event in error["path"]:
        sender = "client" if event in chart.client_events else "server"
        lines.append(f"    {_arrow(sender)}: {_mermaid_text(event)}")
    if error["path"]:
        lines.append(f"    Note over Client,stt: {error['state']}")
    frames = error["frames"] or [{"text": ""}]
    for frame in frames:
        lines.append(f"    Client->>stt: {frame_label(frame, error['event'])}")
    lines += _answer_lines(chart, rule_id, error["answer"], error["close"])
    return "\n".join(lines)


def ending_sequence(chart: Chart, ending: str, entry: dict) -> str:
    """An ending as a sequenceDiagram: what sets it off, the answer (or the refused upgrade), the close."""
    actor, words = ENDING_TRIGGERS[ending]
    lines = ["sequenceDiagram", "    participant Client", "    participant stt"]
    if entry.get("upgrade"):
        lines += [f"    Client->>stt: GET (upgrade): {_mermaid_text(words)}",
                  f"    stt-->>Client: HTTP {entry['upgrade']} (no WebSocket)"]
        return "\n".join(lines)
    lines.append(f"    Note over {actor}: {_mermaid_text(words)}")
    lines += _answer_lines(chart, entry["rule"], entry.get("answer", []), entry["close"])
    return "\n".join(lines)


# --- the page ----------------------------------------------------------------------------------------------------


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def source_links(source: str) -> list[tuple[str, str]]:
    """(title, address) of each document a chart's `source` names as `Title (https://...)`."""
    links = []
    for match in re.finditer(r"([^,;()]*?)\s*\((https://[^)\s,]+)", source):
        title = re.sub(r"^(and|the|its)\s+", "", match.group(1).strip()) or match.group(2)
        links.append((title, match.group(2)))
    return links


def _frame_block(frame: dict) -> list[str]:
    if "json" in frame:
        return ["```json", json.dumps(frame["json"], indent=2, ensure_ascii=False), "```"]
    if "binary" in frame:
        return ["```", frame["binary"], "```"]
    return ["```", frame.get("text", ""), "```"]


_SOURCES = {
    "session": "recorded in the typical session",
    "profile": "as the reference client sends it (stt.conformance.profiles); the typical session does not send it",
    "rendered": "rendered by the dialect for a result the recorded session did not bring",
}


def _anchor(text: str) -> str:
    return re.sub(r"[^a-z0-9 _-]", "", text.lower()).replace(" ", "-")


def message_sections(chart: Chart, messages: dict) -> list[str]:
    out = ["## Messages", "",
           "A real example of every message: the typical session's own frames where it has one (the recording "
           "says which). Binary audio and base64 audio strings are shortened.", "",
           "| from | message | chart event | example |", "|---|---|---|---|"]
    client, server = messages["client"], messages["server"]
    for event, frame in client.items():
        out.append(f"| client | `{event}` | {marked(chart, event)} | [{_SOURCES[frame['source']].split(' (')[0].split(';')[0]}]"
                   f"(#client-{_anchor(event)}) |")
    for name, frame in server.items():
        shows = marked(chart, frame["shows"]) if frame.get("shows") else "— (changes no state)"
        out.append(f"| server | `{name}` | {shows} | [{_SOURCES[frame['source']].split(' (')[0].split(';')[0]}]"
                   f"(#server-{_anchor(name)}) |")
    for side, items in (("client", client), ("server", server)):
        for name, frame in items.items():
            out += ["", f"### {side}: {name}", ""]
            meaning = chart.client_events.get(name) if side == "client" else chart.server_events.get(
                frame.get("shows", ""))
            if meaning:
                out += [meaning.strip(), ""]
            out += [f"*{_SOURCES[frame['source']]}.*", "", *_frame_block(frame)]
    return out


def typical_section(chart: Chart, examples: dict) -> list[str]:
    session = examples["session"]
    recorded = examples["recorded"]
    query = "&".join(f"{k}={v}" for k, v in session["handshake"]["query"].items())
    target = session["handshake"]["path"] + (f"?{query}" if query else "")
    return ["## A typical session", "",
            f"Recorded by `{recorded['by']}`: the reference client opens `{target}` and streams "
            f"`{recorded['audio']}` (\"go forward ten meters\") in {int(recorded['frame_seconds'] * 1000)} ms "
            f"frames, at real time, to stt with the `{recorded['engine']}` engine; every frame both ways, as the "
            "server's logbook has them (repeated runs folded into loops, the state after a change in a note).",
            "", "```mermaid", session_sequence(chart, session), "```"]


def error_sections(chart: Chart, examples: dict) -> list[str]:
    out = ["## Error paths", "",
           "Each rule a forbidden (state, event) pair breaks, shown with the first such pair: the path to the "
           "state, the client's frame, the server's answer (the dialect's own frames for it) and the close. "
           "Every pair is in the Forbidden table."]
    for rule_id, error in examples["errors"].items():
        rule = chart.rules[rule_id]
        out += ["", f"### {rule_id}: {error['event']} in {error['state']}", "", _cell(rule.requirement), "",
                "```mermaid", error_sequence(chart, rule_id, error), "```"]
        for frame in error["answer"]:
            out += _frame_block(frame)
    endings = examples.get("endings") or {}
    if endings:
        out += ["", "## Endings", "",
                "How the session ends when something other than a frame ends it (the lifecycle chart's endings, "
                "with this dialect's rule, answer and close code)."]
        for ending, entry in endings.items():
            out += ["", f"### {ending} ({entry['rule']})", "", _cell(chart.rules[entry["rule"]].requirement), "",
                    "```mermaid", ending_sequence(chart, ending, entry), "```"]
            for frame in entry.get("answer", []):
                out += _frame_block(frame)
    return out


def _compact(frames: list[dict]) -> str:
    if not frames:
        return "— (no frame: the close says it)"
    shown = []
    for frame in frames:
        text = json.dumps(frame["json"], ensure_ascii=False) if "json" in frame else frame.get("binary") or frame.get(
            "text", "")
        shown.append(f"`{_cell(text)}`")
    return "<br>".join(shown)


def page(chart: Chart, examples: dict | None = None) -> str:
    out = [
        f"# {chart.title}",
        "",
        f"Generated from `statecharts/{chart.name}.yaml`"
        + (f" and the recorded `statecharts/examples/{chart.name}.json`" if examples else "")
        + " by `stt diagrams`; do not edit by hand.",
        "",
    ]
    links = source_links(chart.source)
    if links:
        out += ["The vendor's documents:", ""] + [f"- [{title}]({url})" for title, url in links] + [""]
    if chart.source:
        out += [f"Source: {chart.source}", ""]
    out += ["## State diagram", "", "```mermaid", mermaid(chart), "```", "", LEGEND, ""]
    if examples:
        out += typical_section(chart, examples) + [""]
        out += error_sections(chart, examples) + [""]
        out += message_sections(chart, examples["messages"]) + [""]
    out += ["## States", "", "| state | meaning |", "|---|---|"]
    for name, doc in chart.states.items():
        out.append(f"| `{name}`{' (final)' if name in chart.final else ''} | {_cell(doc)} |")
    for side, events in (("client", chart.client_events), ("server", chart.server_events)):
        if events:
            mark = CLIENT_MARK if side == "client" else SERVER_MARK
            out += ["", f"## Events from the {side} ({mark})", "", "| event | meaning |", "|---|---|"]
            out += [f"| {mark} `{name}` | {_cell(doc)} |" for name, doc in events.items()]
    out += ["", "## Transitions", "", "| from | event | to |", "|---|---|---|"]
    out += [f"| `{t.source}` | `{t.event}` | `{t.target}` |" for t in chart.transitions]
    forbidden = refusals(chart)
    if forbidden:
        out += ["", "## Forbidden", "", "Every (state, client event) pair that is not a transition breaks a rule.", "",
                "| state | event | rule |", "|---|---|---|"]
        out += [f"| `{r.state}` | `{r.event}` | {r.rule.id} |" for r in forbidden]
    answers = (examples or {}).get("answers", {})
    out += ["", "## Rules", ""]
    if answers:
        out += ["The answer is the dialect's frame for a breach (with no detail; the server adds what was wrong).", ""]
    out += ["| rule | requirement | error / warning | reason | close |" + (" answer |" if answers else ""),
            "|---|---|---|---|---|" + ("---|" if answers else "")]
    for rule in chart.rules.values():
        kind = f"error `{rule.error}`" if rule.error else f"warning `{rule.warning}`" if rule.warning else "—"
        close = str(rule.close) if rule.close is not None else "— (session goes on)"
        row = f"| {rule.id} | {_cell(rule.requirement)} | {kind} | {_cell(rule.message)} | {close} |"
        if answers:
            row += f" {_compact(answers.get(rule.id, []))} |"
        out.append(row)
    if chart.endings:
        out += ["", "## Ending rules", "",
                "How a session that ends this way is closed (other endings: see the lifecycle chart).",
                "", "| ending | rule | close |", "|---|---|---|"]
        out += [f"| {name} | {rid} | {chart.rules[rid].close} |" for name, rid in chart.endings.items()]
    if chart.client_rules:
        out += ["", "## Client rules", "",
                "Client behaviour that no single frame breaks: the server goes on, and client-conformance reports "
                "(`stt serve --conformance DIR`, docs/conformance.md) evaluate it over the whole session.", "",
                "| rule | requirement | severity | check |", "|---|---|---|---|"]
        for rule in chart.client_rules.values():
            params = ", ".join(f"{k} {v}" for k, v in rule.params.items())
            out.append(f"| {rule.id} | {_cell(rule.requirement)} | {rule.severity} | `{rule.check}`"
                       f"{f' ({_cell(params)})' if params else ''} |")
    return "\n".join(out) + "\n"


def pages() -> dict[str, str]:
    """File name under docs/statecharts/ -> content, for every chart."""
    return {f"{name}.md": page(load_chart(name), load_examples(name)) for name in chart_names()}


def write(out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in pages().items():
        path = out_dir / name
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            written.append(path)
    return written


def stale(out_dir: Path) -> list[str]:
    """Pages under out_dir that differ from what the charts generate (or are missing)."""
    return [name for name, text in pages().items()
            if not (out_dir / name).exists() or (out_dir / name).read_text(encoding="utf-8") != text]
