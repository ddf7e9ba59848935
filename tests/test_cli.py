"""The `stt` command as a user runs it."""

import re
import signal
import subprocess
import sys

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
