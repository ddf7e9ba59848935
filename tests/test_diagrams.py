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


# --- the teaching pages: recorded examples, sequence diagrams, every message with a payload ----------------------

import json as _json  # noqa: E402
import re  # noqa: E402

import pytest  # noqa: E402

from stt import teaching  # noqa: E402
from stt.conformance.profiles import CLOSE, PROFILES  # noqa: E402
from stt.dialects import dialect_named  # noqa: E402

DIALECT_NAMES = sorted(teaching.TYPICAL)


def _examples(name: str) -> dict:
    examples = diagrams.load_examples(name)
    assert examples is not None, f"statecharts/examples/{name}.json is missing: run python -m stt diagrams --record"
    return examples


def test_every_dialect_has_a_recorded_example_exchange_and_only_the_lifecycle_has_none():
    charts = set(diagrams.chart_names())
    assert set(DIALECT_NAMES) == charts - {"lifecycle"}
    assert diagrams.load_examples("lifecycle") is None
    for name in DIALECT_NAMES:
        assert _examples(name)["dialect"] == name


@pytest.mark.parametrize("name", DIALECT_NAMES)
def test_the_typical_session_was_recorded_against_the_real_recognizer(name):
    """The payloads are the real engine's: sphinx heard "go forward" in ps_goforward.wav, and the session ended
    normally."""
    examples = _examples(name)
    assert examples["recorded"]["engine"] == "sphinx"
    session = examples["session"]
    assert session["close"]["ending"] == "normal" and session["close"]["code"] == 1000
    words = " ".join(diagrams.said(frame.get("json")) or "" for frame in session["frames"] if frame["from"] == "server")
    assert "forward" in words.lower()
    sent = [frame for frame in session["frames"] if frame["from"] == "client"]
    audio = [frame for frame in sent if frame["event"] == teaching.TYPICAL[name].audio]
    assert sum(frame.get("count", 1) for frame in audio) == 28  # 2.79 s in 100 ms frames
    for frame in audio:  # shown by size, not as the samples
        assert re.fullmatch(r"<binary: \d+ bytes of audio>", frame.get("binary", "")) or \
            re.search(r"… <base64: \d+ bytes of audio>$", frame["json"]["audio"]), frame


@pytest.mark.parametrize("name", DIALECT_NAMES)
def test_every_client_event_and_server_message_has_an_example_payload(name):
    """Every client event of the chart, every server event a frame shows, and every message the dialect renders
    for a result (partial, final, speech events) has an example, and the results' examples are recorded ones."""
    examples, chart, profile = _examples(name), load_chart(name), PROFILES[name]
    messages = examples["messages"]
    assert {e for e in chart.client_events if e != CLOSE} <= set(messages["client"])
    shown = {example.get("shows") for example in messages["server"].values()}
    assert {e for e, watch in profile.server.items() if watch.seen is not None} <= shown
    rendered = {teaching.message_type(frame) for frame in teaching._rendered(name)}
    assert rendered <= set(messages["server"]), "re-record: python -m stt diagrams --record"
    for example in [*messages["client"].values(), *messages["server"].values()]:
        assert {"json", "text", "binary"} & set(example)
    recorded = {t for t, example in messages["server"].items() if example["source"] == "session"}
    driver = teaching._Driver(name)
    for event in teaching.TYPICAL[name].before:
        driver.apply(event)
    from stt.events import Final, Word

    final = {teaching.message_type(f) for f in driver.dialect.render(Final((Word("go", 0.3, 0.6),), 0.3, 0.6))}
    assert final <= recorded, "a final's example must come from the recorded session"  # OpenAI: per committed item


@pytest.mark.parametrize("name", DIALECT_NAMES)
def test_a_page_has_a_sequence_diagram_of_the_session_and_of_each_error_path(name):
    examples = _examples(name)
    text = diagrams.page(load_chart(name), examples)
    assert text.count("```mermaid\nsequenceDiagram") == 1 + len(examples["errors"]) + len(examples["endings"])
    for rule_id, error in examples["errors"].items():
        rule = load_chart(name).rules[rule_id]
        assert f"### {rule_id}: {error['event']} in {error['state']}" in text
        if rule.close is not None:
            assert f"Close {rule.close}" in diagrams.error_sequence(load_chart(name), rule_id, error)
    assert examples["errors"], "every dialect has a rule a forbidden pair breaks"
    assert "](https://" in text  # the vendor's documents, as links


def test_an_error_path_shows_the_dialects_own_error_frame_and_close_code():
    examples = _examples("speechmatics")
    error = examples["errors"]["SM-ORDER-001"]
    assert error["answer"][0]["json"]["type"] == "protocol_error"  # render_violation's frame, as sent
    sequence = diagrams.error_sequence(load_chart("speechmatics"), "SM-ORDER-001", error)
    assert sequence.splitlines()[-3:] == ["    Client->>stt: AddAudio (binary, 3200 bytes)",
                                         "    stt-->>Client: Error protocol_error",
                                         "    stt-->>Client: Close 1003 protocol_error"]


def test_an_ending_refused_at_the_upgrade_is_an_http_status_not_a_frame():
    examples = _examples("deepgram")
    assert examples["endings"]["unauthorised"]["upgrade"] == 401 and dialect_named("deepgram").rejects_unauthorised
    assert "stt-->>Client: HTTP 401" in diagrams.ending_sequence(load_chart("deepgram"), "unauthorised",
                                                                examples["endings"]["unauthorised"])


@pytest.mark.parametrize("name", diagrams.chart_names())
def test_the_state_diagram_tells_client_and_server_events_apart_and_draws_no_self_loop(name):
    """Client events are marked ▶, server events ◀; the events that leave a state where it is are listed inside
    it, and `close` is said once: the self-loops' and close edges' labels are what overlapped."""
    chart = load_chart(name)
    lines = diagrams.mermaid(chart).splitlines()
    labels = []
    for line in lines:
        if " --> " in line and ": " in line:
            ends, label = line.strip().split(": ", 1)
            source, target = ends.split(" --> ")
            assert source != target, line
            labels += label.split("<br>")
        elif f" : {diagrams.LOOP_MARK} " in line:
            labels.append(line.split(f" : {diagrams.LOOP_MARK} ", 1)[1])
    assert labels
    for label in labels:
        mark, event = label.split(" ", 1)
        assert mark == (diagrams.CLIENT_MARK if event in chart.client_events else diagrams.SERVER_MARK), label
    assert sum(1 for line in lines if line.strip().endswith(f": {diagrams.marked(chart, CLOSE)}")) <= len(chart.final) + 1


def test_recording_writes_an_example_exchange_from_a_real_session(tmp_path):
    """`stt diagrams --record` for one dialect, with the scripted engine at full speed: the file has the
    session's frames both ways (audio folded, binary shown by size), an example of each message, the error paths
    and endings, and renders as a page."""
    [path] = teaching.record(tmp_path, ["speechmatics"], engine="scripted", pace=0)
    examples = _json.loads(path.read_text())
    frames = examples["session"]["frames"]
    assert [f["event"] for f in frames if f["from"] == "client"][:2] == ["StartRecognition", "AddAudio"]
    assert frames[0]["json"]["message"] == "StartRecognition" and frames[0]["state"] == "starting"
    audio = [f for f in frames if f["from"] == "client" and f["event"] == "AddAudio"]
    assert sum(f.get("count", 1) for f in audio) == 28 and audio[0]["binary"] == "<binary: 3200 bytes of audio>"
    assert examples["session"]["close"] == {"code": 1000, "ending": "normal", "rule": "LC-END-001",
                                            "state": "closed", "by": "server"}
    assert {"RecognitionStarted", "AudioAdded", "AddTranscript", "EndOfTranscript"} <= set(examples["messages"]["server"])
    assert examples["messages"]["server"]["AddTranscript"]["source"] == "session"
    assert set(examples["errors"]) == {r.rule.id for r in diagrams.refusals(load_chart("speechmatics"))
                                       if r.event != CLOSE}
    assert "SM-IDLE-001" == examples["endings"]["idle_timeout"]["rule"]
    assert "sequenceDiagram" in diagrams.page(load_chart("speechmatics"), examples)


def test_base64_audio_is_shortened_and_other_strings_are_kept():
    audio = "A" * 400
    assert teaching.shortened({"audio": audio, "text": "go forward"}) == {
        "audio": "AAAAAAAAAAAA… <base64: 300 bytes of audio>", "text": "go forward"}


def test_stt_diagrams_record_records_then_writes_the_pages(tmp_path, monkeypatch):
    recorded = []
    monkeypatch.setattr(teaching, "record", lambda names=None: recorded.append(names))
    assert main(["diagrams", "--record", "--dialect", "vblaze", "--out", str(tmp_path)]) == 0
    assert recorded == [["vblaze"]] and (tmp_path / "vblaze.md").exists()
