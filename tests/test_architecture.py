"""The layers of docs/architecture.md hold: no import goes up them, none between peers that must not know each
other, none round a circle. Every import counts, inside functions and under TYPE_CHECKING too."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import attrs
import pytest

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "architecture.md"


@attrs.frozen
class Layer:
    name: str
    units: tuple[str, ...]
    peers_import: bool


def read_layers(text: str) -> list[Layer]:
    """The table between `<!-- layers` and `<!-- /layers -->`, bottom layer first."""
    match = re.search(r"<!-- layers.*?-->\n(.*?)<!-- /layers -->", text, re.S)
    assert match, f"{DOC}: no <!-- layers --> table"
    layers = []
    for line in match.group(1).splitlines()[2:]:  # after the header and the |---| row
        name, units, peers = (cell.strip() for cell in line.strip().strip("|").split("|"))
        assert peers in ("yes", "no"), f"{DOC}: layer {name}: 'peers import each other' is {peers!r}"
        layers.append(Layer(name, tuple(re.findall(r"`([\w.]+)`", units)), peers == "yes"))
    return layers


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every stt module `path` imports, wherever the import statement is."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found |= {f"{target}.{alias.name}" for alias in node.names}  # `from stt import audio` imports stt.audio
    return {t for t in found if t == "stt" or t.startswith("stt.")}


def unit_of(module: str, units: set[str]) -> str | None:
    """The unit holding `module`: the longest unit name that is the module or a package above it (the unit
    `stt` is the package's own __init__ only, so that a new module must find its layer)."""
    candidates = [u for u in units if module == u or (u != "stt" and module.startswith(u + "."))]
    return max(candidates, key=len) if candidates else None


def unit_graph(modules: dict[str, set[str]], units: set[str]) -> tuple[dict[str, set[str]], list[str]]:
    """Edges between units, and the modules that belong to no unit."""
    graph: dict[str, set[str]] = {}
    orphans = []
    for module, targets in modules.items():
        source = unit_of(module, units)
        if source is None:
            orphans.append(module)
            continue
        for target in targets:
            to = unit_of(target, units)
            if to is not None and to != source and (target in modules or to == target):
                graph.setdefault(source, set()).add(to)
    return graph, orphans


def wrong_imports(graph: dict[str, set[str]], layers: list[Layer]) -> list[str]:
    """Each edge that goes up the layers, or between peers of a layer whose peers do not import each other."""
    level = {unit: i for i, layer in enumerate(layers) for unit in layer.units}
    wrong = []
    for source, targets in sorted(graph.items()):
        for target in sorted(targets):
            a, b = level[source], level[target]
            if b > a:
                wrong.append(f"{source} ({layers[a].name}) imports {target} ({layers[b].name}), a layer above")
            elif b == a and not layers[a].peers_import:
                wrong.append(f"{source} imports {target}, its peer in {layers[a].name}")
    return wrong


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one unit (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


@pytest.fixture(scope="module")
def layers() -> list[Layer]:
    return read_layers(DOC.read_text())


@pytest.fixture(scope="module")
def modules() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for p in sorted((ROOT / "stt").rglob("*.py"))}


def test_every_unit_is_in_one_layer_and_exists(layers):
    units = [u for layer in layers for u in layer.units]
    assert len(units) == len(set(units)), "a unit is in two layers"
    missing = [u for u in units if not (ROOT / Path(*u.split("."))).with_suffix(".py").exists()
               and not (ROOT / Path(*u.split("."))).is_dir()]
    assert not missing, f"units in {DOC.name} with no module or package: {missing}"


def test_every_module_belongs_to_a_layer(layers, modules):
    _, orphans = unit_graph(modules, {u for layer in layers for u in layer.units})
    assert orphans == [], f"modules in no layer of {DOC.name}: add them to its table"


def test_no_import_goes_up_the_layers_or_between_separate_peers(layers, modules):
    graph, _ = unit_graph(modules, {u for layer in layers for u in layer.units})
    wrong = wrong_imports(graph, layers)
    assert not wrong, "\n".join(wrong)


def test_no_import_cycle_between_units(layers, modules):
    graph, _ = unit_graph(modules, {u for layer in layers for u in layer.units})
    found = cycles(graph)
    assert not found, "\n".join(f"import cycle: {' -> '.join(c)}" for c in found)


def test_the_checks_catch_an_upward_import_a_peer_import_and_a_cycle():
    layers = [Layer("low", ("a", "b"), False), Layer("high", ("c", "d"), True)]
    graph = {"a": {"c"}, "b": {"a"}, "c": {"d"}, "d": {"c"}}
    assert wrong_imports(graph, layers) == ["a (low) imports c (high), a layer above",
                                            "b imports a, its peer in low"]
    assert cycles(graph) == [["c", "d"]]


def test_imports_are_found_inside_functions_and_relative(tmp_path, monkeypatch):
    package = tmp_path / "stt" / "pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "mod.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from stt.server import Server\n"
        "def f():\n    from . import sibling\n    from ..events import Final\n    import stt.audio.pcm\n")
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    assert imports_of(package / "mod.py") >= {"stt.server", "stt.pkg.sibling", "stt.events", "stt.audio.pcm"}
