"""`stt serve --conformance DIR` as docs/conformance.md has a user run it: the installed `stt` command in a
subprocess, the vendor's own `speechmatics` command and a client that breaks a rule against it, and the four
files each session leaves in DIR."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from contextlib import contextmanager
from pathlib import Path

import pytest
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from stt.conformance.logbook import read_logbook
from stt.conformance.report import from_json
from tests.helpers import DATA, running_server, silence, start_message

BIN = Path(sys.executable).parent  # the virtual environment's commands: `stt`, `speechmatics`


def command(name: str) -> str:
    path = shutil.which(name, path=str(BIN)) or shutil.which(name)
    if path is None:
        pytest.skip(f"the {name!r} command is not installed (pip install -e '.[test]')")
    return path


@contextmanager
def stt_serve(*options: str):
    """`stt serve --port 0 OPTIONS` in a subprocess; yields its port once it listens."""
    server = subprocess.Popen([command("stt"), "serve", "--port", "0", *options], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    watchdog = threading.Timer(60, server.kill)  # a server that never listens is killed: readline then ends
    watchdog.start()
    lines: list[str] = []
    try:
        while True:
            line = server.stdout.readline()
            assert line, f"stt serve exited or did not listen within 60 s: {''.join(lines)}"
            lines.append(line)
            found = re.search(r"listening on ws://127\.0\.0\.1:(\d+)", line)
            if found:
                break
        watchdog.cancel()
        drain = threading.Thread(target=lambda: lines.extend(server.stdout), daemon=True)
        drain.start()  # the server's log, for the assertion messages; and the pipe never fills
        yield int(found.group(1)), lines
    finally:
        watchdog.cancel()
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


async def break_a_rule(port: int) -> int:
    """A Speechmatics client that starts properly, then sends a message the protocol does not have
    (SM-MSG-002: the session ends with close 1003); the close code it got."""
    with trio.fail_after(20):
        async with open_websocket_url(f"ws://127.0.0.1:{port}/v2") as ws:
            await ws.send_message(start_message())
            while json.loads(await ws.get_message())["message"] != "RecognitionStarted":
                pass
            await ws.send_message(silence(0.1))
            await ws.send_message('{"message":"AddAudioPlease"}')
            try:
                while True:
                    await ws.get_message()
            except ConnectionClosed as exc:
                return exc.reason.code


def sessions_in(directory: Path, count: int, timeout: float = 20) -> dict[str, dict[str, Path]]:
    """session id -> {suffix: path} once `count` sessions have all four files (the .xml is written last)."""
    end = time.monotonic() + timeout
    while len(list(directory.glob("*.xml"))) < count and time.monotonic() < end:
        time.sleep(0.05)
    out: dict[str, dict[str, Path]] = {}
    for path in sorted(directory.iterdir()):
        if not path.name.startswith("."):
            out.setdefault(path.name.split(".")[0], {})[path.name.split(".", 1)[1]] = path
    return out


def test_stt_serve_with_workers_records_and_reports_every_session_whichever_worker_serves_it(tmp_path):
    """The test modes travel to each worker process (spawned): each session's logbook and its report."""
    reports = tmp_path / "conformance"
    with stt_serve("--engine", "scripted", "--workers", "2", "--conformance", str(reports)) as (port, log):
        for _ in range(4):
            assert trio.run(break_a_rule, port) == 1003
        sessions = sessions_in(reports, 4)
    assert len(sessions) == 4, "".join(log)
    assert all(set(files) == {"jsonl", "json", "html", "xml"} for files in sessions.values()), sessions
    for files in sessions.values():
        report = from_json(files["json"].read_text(encoding="utf-8"))
        assert [c.id for c in report.cases if c.failed] == ["SM-MSG-002"]


def test_stt_serve_conformance_records_the_vendor_client_and_a_rule_breaking_one(tmp_path):
    reports = tmp_path / "conformance"  # not there yet: the server makes it
    with stt_serve("--engine", "scripted", "--conformance", str(reports)) as (port, log):
        client = subprocess.run(
            [command("speechmatics"), "rt", "transcribe", "--url", f"ws://127.0.0.1:{port}/v2", "--ssl-mode", "none",
             str(DATA / "ps_goforward.wav")], capture_output=True, text=True, timeout=60)
        assert client.returncode == 0, client.stderr[-2000:] + "".join(log)
        assert client.stdout.split() == "one two three four five".split()  # the scripted engine's words
        assert trio.run(break_a_rule, port) == 1003
        sessions = sessions_in(reports, 2)
    assert len(sessions) == 2, sessions
    assert all(set(files) == {"jsonl", "json", "html", "xml"} for files in sessions.values()), sessions
    by_ending = {}
    for session, files in sessions.items():
        records = read_logbook(files["jsonl"])
        report = from_json(files["json"].read_text(encoding="utf-8"))
        assert report.subject == session and records[0]["session"] == session
        by_ending[records[-1]["ending"]] = (records, report, files)

    records, report, files = by_ending["normal"]  # the vendor's client keeps every rule
    assert report.passed and not [c.id for c in report.cases if c.failed]
    assert any(r["kind"] == "in" and r["type"] == "binary" for r in records)

    records, report, files = by_ending["violation"]
    assert [c.id for c in report.cases if c.failed] == ["SM-MSG-002"] and not report.passed
    (case,) = [c for c in report.cases if c.failed]
    breaking = [r for r in records if r["kind"] == "in"][-1]
    assert case.frames == (breaking["n"],) and breaking["text"] == '{"message":"AddAudioPlease"}'
    assert (records[-1]["code"], records[-1]["rule"]) == (1003, "SM-MSG-002")
    page = files["html"].read_text(encoding="utf-8")
    assert "SM-MSG-002" in page and "FAILED" in page and html.escape(case.requirement) in page
    suite = ET.parse(files["xml"]).getroot()
    (failure,) = suite.iter("failure")
    assert suite.get("failures") == "1" and "SM-MSG-002" in failure.text


async def test_a_session_whose_logbook_cannot_be_written_is_closed_1011_not_left_hanging(tmp_path):
    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("")
    async with running_server(conformance_dir=not_a_directory) as server:
        with trio.fail_after(10):
            async with open_websocket_url(f"ws://127.0.0.1:{server.port}/v2") as ws:
                await ws.send_message(start_message())
                frames = []
                with pytest.raises(ConnectionClosed) as closed:
                    for _ in range(10):
                        frames.append(json.loads(await ws.get_message()))
    assert closed.value.reason.code == 1011
    assert [frame["message"] for frame in frames] == ["Error"]  # the dialect's internal error, then the close


@pytest.mark.parametrize("source", ["flag", "env", "toml"])
def test_the_conformance_directory_reaches_the_server_as_a_path_from_every_source(tmp_path, source):
    from stt.cli import _parser
    from stt.config import resolve, server_config

    directory = tmp_path / "reports"
    toml = tmp_path / "stt.toml"
    toml.write_text(f'conformance = "{directory}"\n')
    argv, env = {"flag": (["--conformance", str(directory)], {}), "env": ([], {"STT_CONFORMANCE": str(directory)}),
                 "toml": (["--config", str(toml)], {})}[source]
    config = server_config(resolve(_parser, ["serve", *argv], env=env))
    assert isinstance(config.conformance_dir, Path) and config.conformance_dir == directory
