"""The `stt` command as a user runs it."""

import json
import os
import re
import signal
import subprocess
import sys
import threading

import pytest

from stt.cli import main


def test_serve_help_explains_every_option(capsys):
    try:
        main(["serve", "--help"])
    except SystemExit as exc:
        assert exc.code == 0
    text = capsys.readouterr().out
    for option in ("--host", "--port", "--engine", "--api-key", "--decode-workers", "--idle-timeout",
                   "--max-message-bytes", "/v2"):
        assert option in text


def test_ctrl_c_stops_the_server_cleanly():
    server = subprocess.Popen(
        [sys.executable, "-m", "stt", "serve", "--engine", "scripted", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as in a terminal
    )
    try:
        line = server.stdout.readline()
        assert re.search(r"listening on ws://127\.0\.0\.1:\d+", line), line
        server.send_signal(signal.SIGINT)
        rest = server.communicate(timeout=20)[0]
    finally:
        server.kill()
    assert server.returncode == 0, rest
    assert "Traceback" not in rest


def test_serve_help_documents_the_operations_options_and_where_else_each_can_be_set(capsys):
    try:
        main(["serve", "--help"])
    except SystemExit as exc:
        assert exc.code == 0
    text = " ".join(capsys.readouterr().out.split())  # as one line: argparse wraps the help
    for option in ("--config", "--api-keys-file", "--certfile", "--keyfile", "--log-format", "--shutdown-grace",
                   "--workers"):
        assert option in text
    assert "--foo-bar <-> STT_FOO_BAR <-> foo_bar" in text and "STT_API_KEYS" in text


def test_a_bad_setting_stops_stt_serve_before_it_starts_naming_it(capsys, tmp_path, monkeypatch):
    config = tmp_path / "stt.toml"
    config.write_text("port = 9000\nidle_timout = 5\n")
    assert main(["serve", "--config", str(config)]) == 2
    assert f"stt: {config}: unknown key 'idle_timout'" in capsys.readouterr().err
    monkeypatch.setenv("STT_PORT", "nine")
    assert main(["serve"]) == 2
    assert "STT_PORT: 'nine' is not an integer" in capsys.readouterr().err


def test_serve_help_names_a_path_of_every_dialect_and_each_path_routes_to_its_dialect():
    from stt.dialects import DIALECT_PATHS
    from stt.dialects import DIALECTS, dialect_for

    paths = [p.rstrip(",.") for p in DIALECT_PATHS.split() if p.startswith("/")]
    routed = {dialect_for(p.replace("<language>", "en").replace("<token>", "t").split("?")[0]) for p in paths}
    assert routed == set(DIALECTS)


def test_an_abbreviated_flag_is_refused_as_a_partial_key_is_in_the_file(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["serve", "--shutdown-g", "5"])
    assert exc.value.code == 2 and "--shutdown-g" in capsys.readouterr().err


def test_stt_serve_with_no_options_starts_the_default_engine_with_no_network():
    """The README's first command: `stt serve` alone loads whisper's packaged model offline and listens."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", HTTPS_PROXY="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9")
    env = {k: v for k, v in env.items() if not k.startswith("STT_")}
    server = subprocess.Popen(
        [sys.executable, "-m", "stt", "serve", "--port", "0", "--log-format", "json"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )
    watchdog = threading.Timer(120, server.kill)  # a server that never listens is killed: readline then ends
    watchdog.start()
    try:
        lines = []
        while not any("stt listening on" in line for line in lines):
            line = server.stdout.readline()
            assert line, f"the server exited or did not listen within 120 s: {''.join(lines)}"
            lines.append(line)
        watchdog.cancel()
        listening = json.loads(lines[-1])
        assert listening["engine"] == "whisper" and listening["url"].startswith("ws://127.0.0.1:")
        server.send_signal(signal.SIGINT)
        rest = server.communicate(timeout=30)[0]
    finally:
        watchdog.cancel()
        server.kill()
    assert server.returncode == 0, rest
    assert "Traceback" not in "".join(lines) + rest
