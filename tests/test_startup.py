"""`stt serve` start-up: what would fail after the engine has loaded fails first, in one line, exit 2; the block
of lines it starts with says what it serves; other libraries' INFO lines are off unless --log-level debug."""

from __future__ import annotations

import io
import json
import logging
import socket

import pytest

from stt.logs import configure_logging
from tests.serve_process import run_stt, stt_serve


def one_line_refusal(done) -> str:
    """The one line of a refused start: on stderr, alone, with nothing on stdout and no traceback."""
    assert done.returncode == 2, (done.returncode, done.out, done.err)
    lines = done.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("stt: ") and not done.out, (done.out, done.err)
    return lines[0]


@pytest.fixture
def busy_port():
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def test_a_port_in_use_is_one_line_before_the_engine_loads(busy_port):
    done = run_stt("serve", "--port", str(busy_port), timeout=60)  # the default engine: whisper
    line = one_line_refusal(done)
    assert f"--port {busy_port}" in line and "in use" in line
    admin = run_stt("serve", "--engine", "scripted", "--port", "0", "--admin-port", str(busy_port), timeout=60)
    assert "--admin-port" in one_line_refusal(admin)


def test_a_host_that_is_not_this_machines_is_one_line():
    done = run_stt("serve", "--host", "192.0.2.1", "--port", "0", timeout=60)  # TEST-NET-1: never local
    assert "--host 192.0.2.1" in one_line_refusal(done)


def test_a_bad_whisper_model_dir_is_one_line(tmp_path):
    done = run_stt("serve", "--whisper-model", str(tmp_path), "--port", "0", timeout=60)
    assert "--whisper-model" in one_line_refusal(done) and "model.bin" in done.err


def test_a_missing_tls_file_is_one_line(tmp_path):
    done = run_stt("serve", "--certfile", str(tmp_path / "absent.pem"), "--port", "0", timeout=60)
    assert "--certfile" in one_line_refusal(done) and "No such file" in done.err


def test_a_conformance_dir_that_is_a_file_is_one_line(tmp_path):
    file = tmp_path / "reports"
    file.write_text("")
    done = run_stt("serve", "--engine", "scripted", "--conformance", str(file), "--port", "0", timeout=60)
    assert "--conformance" in one_line_refusal(done) and "not a directory" in done.err


def test_the_start_up_block_names_every_dialects_url_the_engine_and_the_test_modes(tmp_path):
    with stt_serve("--engine", "scripted", "--conformance", str(tmp_path), "--fault", "delay=100ms") as server:
        pass
    records = [json.loads(line) for line in server["lines"] if line.startswith("{")]
    urls = {r["dialect"]: r["url"] for r in records if "dialect" in r and "url" in r}
    base = server["url"]
    assert urls == {"speechmatics": f"{base}/v2", "voicerun": f"{base}/ws", "scriptix": f"{base}/v2/realtime",
                    "yourvoic": f"{base}/api/v1/stt/realtime/stream", "vblaze": f"{base}/transcribe",
                    "deepgram": f"{base}/v1/listen", "assemblyai": f"{base}/v3/ws",
                    "openai": f"{base}/v1/realtime"}
    assert any(r.get("engine") == "scripted" and "decode_workers" in r for r in records)
    modes = {r["test_mode"]: r["message"] for r in records if "test_mode" in r}
    assert set(modes) == {"conformance", "faults"}
    assert str(tmp_path) in modes["conformance"] and "delay=100ms" in modes["faults"]


def test_other_libraries_info_lines_are_off_unless_debug():
    for level, shown in (("info", False), ("debug", True)):
        out = io.StringIO()
        configure_logging(level, "json", out)
        try:
            logging.getLogger("faster_whisper").info("Processing audio with duration 00:03.400")
            logging.getLogger("faster_whisper").warning("a warning")
            logging.getLogger("stt.session").info("session open")
        finally:
            configure_logging("warning", "text")
        messages = [json.loads(line)["message"] for line in out.getvalue().splitlines()]
        assert ("Processing audio with duration 00:03.400" in messages) is shown
        assert "a warning" in messages and "session open" in messages


def test_an_ipv6_host_is_bracketed_in_the_urls_it_logs():
    if not socket.has_ipv6:
        pytest.skip("no IPv6 here")
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    with stt_serve("--engine", "scripted", "--host", "::1") as server:
        pass
    assert server["url"].startswith("ws://[::1]:")
    records = [json.loads(line) for line in server["lines"] if line.startswith("{")]
    assert any(r.get("url") == server["url"] + "/v2" for r in records)
