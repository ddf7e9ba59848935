"""docs/statecharts/ is generated from statecharts/: a stale page fails here."""

from pathlib import Path

from stt import diagrams
from stt.cli import main
from stt.statechart import load_chart

DOCS = Path(__file__).resolve().parent.parent / "docs" / "statecharts"


def test_docs_are_up_to_date_with_the_charts():
    assert diagrams.stale(DOCS) == [], "run: python -m stt diagrams"


def test_a_page_shows_every_transition_rule_and_forbidden_pair():
    chart = load_chart("speechmatics")
    text = diagrams.page(chart)
    for t in chart.transitions:
        assert f"| `{t.source}` | `{t.event}` | `{t.target}` |" in text
    for rule in chart.rules.values():
        assert f"| {rule.id} |" in text
    for (state, event), rule_id in chart.forbidden.items():
        assert f"| `{state}` | `{event}` | {rule_id} |" in text
    assert "```mermaid\nstateDiagram-v2" in text


def test_diagrams_check_reports_stale_pages(tmp_path, capsys):
    assert main(["diagrams", "--out", str(tmp_path), "--check"]) == 1
    assert main(["diagrams", "--out", str(tmp_path)]) == 0
    assert main(["diagrams", "--out", str(tmp_path), "--check"]) == 0
    (tmp_path / "speechmatics.md").write_text("edited by hand\n")
    assert main(["diagrams", "--out", str(tmp_path), "--check"]) == 1
    assert "speechmatics.md" in capsys.readouterr().err


def test_charts_and_pages_cite_the_vendors_pages_not_notes_outside_the_repository():
    """The rules cite the vendor's public documents (each chart's `source` names them, with their addresses),
    never a section of research notes that do not ship with stt."""
    import re

    root = Path(__file__).resolve().parent.parent
    for path in [*sorted((root / "statecharts").glob("*.yaml")), *sorted((root / "docs" / "statecharts").glob("*.md"))]:
        text = path.read_text(encoding="utf-8")
        assert "protocols.md" not in text and not re.search(r"§\s*\d", text), path.name
    for name in ("speechmatics", "voicerun", "yourvoic", "vblaze", "scriptix", "assemblyai"):
        assert "https://" in load_chart(name).source, name


def test_stt_diagrams_writes_into_the_current_directory_not_the_installed_package(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["diagrams"]) == 0
    written = sorted(p.name for p in (tmp_path / "docs" / "statecharts").iterdir())
    assert written and all(name.endswith(".md") for name in written)
    assert main(["diagrams", "--check"]) == 0
