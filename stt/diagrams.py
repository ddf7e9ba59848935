"""Render a chart as a Markdown page: a Mermaid state diagram, the transitions, the forbidden pairs, the rules,
the endings and the client rules. `stt diagrams` writes one page per chart into docs/statecharts/; a test fails
when they are stale, so the docs cannot drift from the charts the server executes."""

from __future__ import annotations

from pathlib import Path

from stt.statechart import Chart, chart_names, load_chart, refusals


def edges(chart: Chart) -> dict[tuple[str, str], list[str]]:
    """(source, target) -> the events that move from one to the other, in the chart's order."""
    by_edge: dict[tuple[str, str], list[str]] = {}
    for t in chart.transitions:
        by_edge.setdefault((t.source, t.target), []).append(t.event)
    return by_edge


def mermaid(chart: Chart) -> str:
    lines = ["stateDiagram-v2", f"    [*] --> {chart.initial}"]
    for (source, target), events in edges(chart).items():
        lines.append(f"    {source} --> {target}: {' / '.join(events)}")
    for state in sorted(chart.final):
        lines.append(f"    {state} --> [*]")
    return "\n".join(lines)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def page(chart: Chart) -> str:
    out = [
        f"# {chart.title}",
        "",
        f"Generated from `statecharts/{chart.name}.yaml` by `stt diagrams`; do not edit by hand.",
        "",
    ]
    if chart.source:
        out += [f"Source: {chart.source}", ""]
    out += ["```mermaid", mermaid(chart), "```", "", "## States", "", "| state | meaning |", "|---|---|"]
    for name, doc in chart.states.items():
        out.append(f"| `{name}`{' (final)' if name in chart.final else ''} | {_cell(doc)} |")
    for side, events in (("client", chart.client_events), ("server", chart.server_events)):
        if events:
            out += ["", f"## Events from the {side}", "", "| event | meaning |", "|---|---|"]
            out += [f"| `{name}` | {_cell(doc)} |" for name, doc in events.items()]
    out += ["", "## Transitions", "", "| from | event | to |", "|---|---|---|"]
    out += [f"| `{t.source}` | `{t.event}` | `{t.target}` |" for t in chart.transitions]
    forbidden = refusals(chart)
    if forbidden:
        out += ["", "## Forbidden", "", "Every (state, client event) pair that is not a transition breaks a rule.", "",
                "| state | event | rule |", "|---|---|---|"]
        out += [f"| `{r.state}` | `{r.event}` | {r.rule.id} |" for r in forbidden]
    out += ["", "## Rules", "", "| rule | requirement | error / warning | reason | close |", "|---|---|---|---|---|"]
    for rule in chart.rules.values():
        kind = f"error `{rule.error}`" if rule.error else f"warning `{rule.warning}`" if rule.warning else "—"
        close = str(rule.close) if rule.close is not None else "— (session goes on)"
        out.append(f"| {rule.id} | {_cell(rule.requirement)} | {kind} | {_cell(rule.message)} | {close} |")
    if chart.endings:
        out += ["", "## Endings", "", "How a session that ends this way is closed (other endings: see the lifecycle chart).",
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
    return {f"{name}.md": page(load_chart(name)) for name in chart_names()}


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
