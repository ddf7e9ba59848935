"""A chart as an inline SVG state diagram with the path a session took through it, for the HTML report: drawn
here, so a report needs no JavaScript and no Graphviz to be read.

The layout is a column: the states in breadth-first order from the initial state (final states last), one box
each. An edge to the next box down is a straight arrow labelled on its left; a loop sits on a box's left side;
every other edge is an arc on the right whose width grows with the rows it spans, labelled at its apex. That
stays readable for the charts we have (up to ten states, most edges between neighbours or into `closed`).

    svg = state_diagram(load_chart("speechmatics"), ("awaiting_start", "starting", "recognizing"))

States on the path carry the class "visited" (the last also "current"), edges between consecutive path states
the class "taken"; colours are attributes, so the drawing needs no stylesheet.
"""

from __future__ import annotations

from collections import deque
from html import escape

from stt.diagrams import edges
from stt.statechart import Chart

FONT = 12
CHAR = 7.0  # an estimate of a character's width at FONT, for sizing boxes and margins
LINE = 14  # the height of a label line
BOX_H = 34
GAP = 58  # between boxes: room for a straight edge's label
STEP = 34  # how much wider an arc grows for each row it spans
TOP = 44  # room for the initial marker

PLAIN = {"fill": "#ffffff", "stroke": "#868e96", "width": "1.2"}
VISITED = {"fill": "#fff3bf", "stroke": "#e67700", "width": "2"}
CURRENT = {"fill": "#ffd43b", "stroke": "#c92a2a", "width": "3.5"}
EDGE, TAKEN = "#adb5bd", "#d9480f"


def layout_order(chart: Chart) -> list[str]:
    """The states breadth-first from the initial one (neighbours in the order of the transitions), final states
    last, unreachable ones after the rest."""
    seen, order, queue = {chart.initial}, [], deque([chart.initial])
    while queue:
        state = queue.popleft()
        order.append(state)
        for t in chart.transitions:
            if t.source == state and t.target not in seen:
                seen.add(t.target)
                queue.append(t.target)
    order += [s for s in chart.states if s not in seen]
    return [s for s in order if s not in chart.final] + [s for s in order if s in chart.final]


def taken(path: tuple[str, ...] | list[str]) -> set[tuple[str, str]]:
    """The edges a path went along: each pair of consecutive states (a repeated state: its loop)."""
    return set(zip(path, path[1:]))


def _label(x: float, y: float, lines: list[str], anchor: str, colour: str, bold: bool = False) -> str:
    """Lines of text centred vertically on y, with a white halo so crossing edges do not hide them."""
    first = y - (len(lines) - 1) * LINE / 2 + FONT / 3
    weight = ' font-weight="bold"' if bold else ""
    spans = "".join(f'<tspan x="{x:.1f}" y="{first + i * LINE:.1f}">{escape(line)}</tspan>'
                    for i, line in enumerate(lines))
    return (f'<text text-anchor="{anchor}" fill="{colour}"{weight} stroke="#ffffff" stroke-width="4" '
            f'paint-order="stroke">{spans}</text>')


def state_diagram(chart: Chart, path: tuple[str, ...] | list[str] = ()) -> str:
    order = layout_order(chart)
    row = {state: i for i, state in enumerate(order)}
    by_edge = edges(chart)
    went = taken(path)
    visited = set(path)
    current = path[-1] if path else None

    box_w = max(120.0, max(len(s) for s in order) * CHAR + 28)
    loops = [events for (s, t), events in by_edge.items() if s == t]
    straights = [events for (s, t), events in by_edge.items() if row[t] == row[s] + 1]
    left = 20 + max([max(len(e) for e in ev) * CHAR + 46 for ev in loops]
                    + [max(len(e) for e in ev) * CHAR - box_w / 2 + 12 for ev in straights] + [0])
    arcs = [(abs(row[t] - row[s]), events) for (s, t), events in by_edge.items()
            if s != t and row[t] != row[s] + 1]
    right = 20 + max([span * STEP + max(len(e) for e in ev) * CHAR + 8 for span, ev in arcs] + [0])
    width = left + box_w + right
    height = TOP + len(order) * (BOX_H + GAP) - GAP + 20
    cx = left + box_w / 2
    x_left, x_right = left, left + box_w

    def y_of(state: str) -> float:
        return TOP + row[state] * (BOX_H + GAP) + BOX_H / 2

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="statechart" width="{width:.0f}" '
           f'height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" font-family="sans-serif" '
           f'font-size="{FONT}" role="img" aria-label="{escape(chart.title)}">',
           f"<title>{escape(chart.title)}</title>",
           "<defs>"]
    for name, colour in (("arrow", EDGE), ("arrow-taken", TAKEN)):
        out.append(f'<marker id="{name}" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="9" markerHeight="9" '
                   f'markerUnits="userSpaceOnUse" '
                   f'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="{colour}"/></marker>')
    out.append("</defs>")

    # the initial marker
    top = y_of(chart.initial) - BOX_H / 2
    out.append(f'<circle cx="{cx:.1f}" cy="{top - 26:.1f}" r="6" fill="#495057"/>'
               f'<line x1="{cx:.1f}" y1="{top - 20:.1f}" x2="{cx:.1f}" y2="{top:.1f}" stroke="#495057" '
               f'stroke-width="1.2" marker-end="url(#arrow)"/>')

    for (source, target), events in by_edge.items():
        on_path = (source, target) in went
        colour, stroke = (TAKEN, "3") if on_path else (EDGE, "1.2")
        attrs = (f'fill="none" stroke="{colour}" stroke-width="{stroke}" '
                 f'marker-end="url(#{"arrow-taken" if on_path else "arrow"})"')
        ys, yt = y_of(source), y_of(target)
        if source == target:
            d = f"M{x_left:.1f},{ys - 8:.1f} C{x_left - 44:.1f},{ys - 26:.1f} {x_left - 44:.1f},{ys + 26:.1f} " \
                f"{x_left:.1f},{ys + 8:.1f}"
            label = _label(x_left - 38, ys, events, "end", colour, on_path)
        elif row[target] == row[source] + 1:
            d = f"M{cx:.1f},{ys + BOX_H / 2:.1f} L{cx:.1f},{yt - BOX_H / 2:.1f}"
            label = _label(cx - 8, (ys + yt) / 2, events, "end", colour, on_path)
        else:
            span = abs(row[target] - row[source])
            sign = 1 if yt > ys else -1
            y1, y2 = ys + 6 * sign, yt - 6 * sign
            reach = x_right + span * STEP * 4 / 3
            d = f"M{x_right:.1f},{y1:.1f} C{reach:.1f},{y1:.1f} {reach:.1f},{y2:.1f} {x_right:.1f},{y2:.1f}"
            label = _label(x_right + span * STEP + 4, (ys + yt) / 2, events, "start", colour, on_path)
        cls = "edge taken" if on_path else "edge"
        out.append(f'<g class="{cls}" data-source="{escape(source)}" data-target="{escape(target)}">'
                   f'<path d="{d}" {attrs}/>{label}</g>')

    for state in order:
        look = CURRENT if state == current else VISITED if state in visited else PLAIN
        cls = "state" + (" visited" if state in visited else "") + (" current" if state == current else "")
        y = y_of(state) - BOX_H / 2
        doc = chart.states.get(state, "")
        shape = (f'<rect x="{x_left:.1f}" y="{y:.1f}" width="{box_w:.1f}" height="{BOX_H}" rx="8" '
                 f'fill="{look["fill"]}" stroke="{look["stroke"]}" stroke-width="{look["width"]}"/>')
        if state in chart.final:
            shape += (f'<rect x="{x_left + 4:.1f}" y="{y + 4:.1f}" width="{box_w - 8:.1f}" height="{BOX_H - 8}" '
                      f'rx="5" fill="none" stroke="{look["stroke"]}" stroke-width="1"/>')
        weight = ' font-weight="bold"' if state in visited else ""
        out.append(f'<g class="{cls}" data-state="{escape(state)}"><title>{escape(state)}: {escape(doc)}</title>'
                   f'{shape}<text x="{cx:.1f}" y="{y_of(state) + FONT / 3:.1f}" text-anchor="middle"{weight}>'
                   f"{escape(state)}</text></g>")
    out.append("</svg>")
    return "\n".join(out)
