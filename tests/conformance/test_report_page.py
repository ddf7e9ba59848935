"""The HTML report as a person reads it: the timeline of a real session (the vendor's client, small chunks) shows
runs of audio frames and their acknowledgements as one row each, and the pages of a client and a failing server
report fit a 1200 px window (headless Chromium: the page's scroll width, and a screenshot kept in tmp_path)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from stt.conformance.report import CaseResult, Report, to_html
from stt.conformance.runner import run_catalogue
from tests.helpers import DATA, running_server

WIDTH = 1200


async def vendor_client_session(directory: Path) -> tuple[Report, list[dict]]:
    """The report and logbook of the speechmatics client sending ps_goforward.wav (2.8 s) in 10 ms chunks."""
    from tests.conformance.test_checks import written_report
    from tests.test_end_to_end import transcribe_with_the_vendor_client

    async with running_server(conformance_dir=directory) as server:
        await transcribe_with_the_vendor_client(server.port, DATA / "ps_goforward.wav", "--chunk-size", "320")
        return await written_report(directory)


def timeline_rows(page: str) -> list[str]:
    table = page.split("<h2>Timeline</h2>")[1]
    return re.findall(r"<tr class=\"[^\"]*\"[^>]*>.*?</tr>", table)


async def test_the_timeline_of_a_real_session_shows_each_run_of_audio_frames_and_acks_as_one_row(tmp_path):
    report, records = await vendor_client_session(tmp_path)
    frames = [r for r in records if r["kind"] in ("in", "out")]
    audio = [r for r in frames if r["kind"] == "in" and r["events"] == ["Audio"]]
    acks = [r for r in frames if r["kind"] == "out" and '"AudioAdded"' in r.get("text", "")]
    assert len(audio) > 250 and len(acks) == len(audio)  # 2.8 s in 10 ms frames, each acknowledged
    rows = timeline_rows(to_html(report))
    runs = [row for row in rows if row.startswith('<tr class="run in"')]
    folded_audio = sum(int(re.search(r"(\d+) audio frames", row).group(1)) for row in runs)
    folded_acks = sum(int(m.group(1)) for row in runs for m in [re.search(r"(\d+) AudioAdded", row)] if m)
    # The audio frames and acks fold into a few runs (split where a transcript comes between them); every
    # other record keeps its own row.
    assert folded_audio > 0.9 * len(audio) and folded_acks > 0.9 * len(acks)
    assert len(rows) == len(records) - folded_audio - folded_acks + len(runs), (len(records), len(rows))
    assert len(rows) < 40 and len(records) > 500
    transcripts = [r for r in frames if r["kind"] == "out" and "Transcript" in r.get("text", "")]
    for record in transcripts:  # each result keeps its own row, in order among the runs
        assert sum(row.startswith(f'<tr class="out" id="frame-{record["n"]}"') for row in rows) == 1
    page = to_html(report)
    for record in frames:  # a link to any frame still lands on its row, or on the run that holds it
        assert f'id="frame-{record["n"]}"' in page


async def test_a_frame_a_failed_case_names_is_never_folded_into_a_run(tmp_path):
    report, records = await vendor_client_session(tmp_path)
    audio = [r["n"] for r in records if r["kind"] == "in" and r["events"] == ["Audio"]]
    marked = audio[len(audio) // 2]
    failing = CaseResult("SM-CLIENT-003", "Each AddAudio frame carries 20-500 ms of audio.", "fail",
                         rule="SM-CLIENT-003", details="too short", frames=(marked,))
    rows = timeline_rows(to_html(Report(**{**_fields(report), "cases": (failing,)})))
    (row,) = [row for row in rows if f'id="frame-{marked}"' in row.split(">")[0]]
    text = re.sub(r"<[^>]+>", "", row)
    assert "involved" in row and "fails SM-CLIENT-003: Each AddAudio frame carries 20-500 ms of audio." in text


def _fields(report: Report) -> dict:
    return {name: getattr(report, name) for name in ("kind", "title", "subject", "dialect", "cases", "created",
                                                     "coverage", "timeline", "path")}


# --- at 1200 px, in a browser ----------------------------------------------------------------------------------


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    pytest.skip("no chromium to render the report (apt-get install chromium; .ci/run installs it)")


def render(page: str, directory: Path, name: str) -> int:
    """The page in headless Chromium at 1200x900: a screenshot (directory/name.png, kept as the test's
    artifact) and the document's scroll width, which a script added to a copy of the page writes into the DOM
    (the report itself has no scripts)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.html").write_text(page, encoding="utf-8")
    probe = directory / f"{name}.probe.html"
    probe.write_text(page.replace("</body>", "<script>document.body.setAttribute('data-scroll-width', "
                                  "document.documentElement.scrollWidth)</script></body>"), encoding="utf-8")
    base = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
            f"--user-data-dir={directory / 'profile'}", f"--window-size={WIDTH},900"]
    shot = subprocess.run([*base, f"--screenshot={directory / f'{name}.png'}", probe.as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert (directory / f"{name}.png").stat().st_size > 0, shot.stderr[-2000:]
    dom = subprocess.run([*base, "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120)
    found = re.search(r'data-scroll-width="(\d+)"', dom.stdout)
    assert found, dom.stderr[-2000:]
    return int(found.group(1))


def test_the_probe_sees_a_page_that_overflows(tmp_path):
    wide = "<!DOCTYPE html><html><body><div style='width:2400px'>wide</div></body></html>"
    assert render(wide, tmp_path, "wide") >= 2400


async def test_a_client_report_and_a_failing_server_report_fit_1200_px(tmp_path):
    report, _ = await vendor_client_session(tmp_path / "session")
    assert render(to_html(report), tmp_path, "client") <= WIDTH
    async with running_server() as server:  # Speechmatics' frames to the VoiceRun path: every case fails
        failing = await run_catalogue(f"ws://127.0.0.1:{server.port}/ws", "speechmatics",
                                      pattern="speechmatics/forbidden/recognizing", timeout=0.5)
    assert any(c.exchange for c in failing.cases) and not failing.passed
    long = CaseResult("voicerun/forbidden/a/very/long/case/id/" + "x" * 80, "A requirement.", "fail",
                      details="y" * 600, exchange=({"t": 0.0, "kind": "out", "type": "text", "text": "z" * 1500},))
    page = to_html(Report(**{**_fields(failing), "cases": (*failing.cases, long)}))
    assert render(page, tmp_path, "server") <= WIDTH
    print(f"screenshots: {tmp_path / 'client.png'}, {tmp_path / 'server.png'}")
