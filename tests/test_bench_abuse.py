"""bench/bench_abuse.py: what it builds for the attacks (a WAV claiming many channels, a FLAC of long silence, an
upgrade request), how it books the server's endings and the good client's verdict, and one --quick run of every
attack against fresh `stt serve --engine scripted` servers: a row per attack with numbers, never thresholds (the
numbers are measured on shared machines and on code that may or may not have the fixes)."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import subprocess
import sys
import wave
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_PATH = ROOT / "bench" / "bench_abuse.py"
_spec = importlib.util.spec_from_file_location("bench_abuse", _PATH)
ba = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("bench_abuse", ba)
_spec.loader.exec_module(ba)


def test_the_channel_bomb_is_a_wav_whose_header_claims_the_channels():
    data = ba.channel_bomb_wav(64, 100 * 1024)
    with wave.open(io.BytesIO(data)) as f:
        assert f.getnchannels() == 64 and f.getsampwidth() == 2 and f.getframerate() == 16000
        assert f.getnframes() == 100 * 1024 // 128
    assert 100 * 1024 - 128 <= len(data) - 44 <= 100 * 1024


def test_the_flac_bomb_is_small_and_holds_the_minutes_of_silence_asked_for():
    av = pytest.importorskip("av")
    data = ba.flac_silence(120.0)
    assert data[:4] == b"fLaC" and len(data) < 64 * 1024
    with av.open(io.BytesIO(data)) as container:
        samples = sum(frame.samples for frame in container.decode(audio=0))
    assert samples == 120 * 16000


def test_the_slowloris_request_is_a_complete_upgrade_request():
    req = ba.upgrade_request(9000)
    assert req.startswith(b"GET /v2 HTTP/1.1\r\nHost: 127.0.0.1:9000\r\n") and req.endswith(b"\r\n\r\n")
    assert b"Upgrade: websocket" in req and b"Sec-WebSocket-Version: 13" in req


def test_fds_of_counts_this_process_fds_and_sockets():
    import socket

    before = ba.fds_of(os.getpid())
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        fds, sockets = ba.fds_of(os.getpid())
    assert fds == before[0] + 1 and sockets == before[1] + 1
    assert ba.fds_of(2 ** 22 + 12345) is None  # no such process


def test_the_good_clients_sessions_are_taken_out_of_the_attacks_endings():
    before = {"speechmatics normal/1000": 1}
    after = {"speechmatics normal/1000": 2, "speechmatics busy/4005": 5, "speechmatics idle_timeout/1008": 2}
    good = {"ok": True, "busy": 3}
    assert ba.attack_endings(after, before, good) == {"speechmatics busy/4005": 2,
                                                      "speechmatics idle_timeout/1008": 2}
    assert ba.attack_endings({"vblaze normal/1000": 1}, {}, {"ok": True}) == {"vblaze normal/1000": 1}
    samples = [("stt_sessions_total", {"dialect": "vblaze", "ending": "normal", "code": "1000", "rule": "x"}, 2.0),
               ("stt_sessions_total", {"dialect": "vblaze", "ending": "normal", "code": "1000", "rule": "y"}, 1.0),
               ("stt_connections_rejected_total", {"dialect": "speechmatics", "reason": "max_sessions"}, 4.0)]
    assert ba.dialect_endings(samples) == {"vblaze normal/1000": 3}
    assert ba.rejections(samples) == {"max_sessions": 4}


def test_verdicts_and_counts_read_as_words():
    assert ba.good_verdict({"ok": True, "seconds": 3.14, "busy": 0}) == "ok 3.1s"
    assert ba.good_verdict({"ok": True, "seconds": 6.0, "busy": 4}) == "ok 6.0s, 4 busy"
    assert ba.good_verdict({"ok": False, "why": "timeout", "busy": 0}) == "FAIL timeout"
    assert ba.counts_text({"closed 1000": 1, "http 503": 3}) == "http 503 x3, closed 1000 x1"
    assert ba.counts_text({}) == "-"


def test_quick_sets_small_sizes_but_an_option_given_wins():
    args = ba.parse_args(["--quick", "--churn-cycles", "50", "--attacks", "churn,silent"])
    assert args.churn_cycles == 50 and args.slowloris_connections == ba.QUICK["slowloris_connections"]
    assert args.attack_names == ["churn", "silent"]
    assert ba.parse_args([]).churn_cycles == 3000
    with pytest.raises(SystemExit):
        ba.parse_args(["--attacks", "teardrop"])
    assert ba.engine_for("channel", ba.parse_args([])) == "sphinx"
    assert ba.engine_for("channel", ba.parse_args(["--engine", "scripted"])) == "scripted"


def test_the_servers_own_limits_are_restored_over_the_soak_benchs():
    flags = ba.default_limit_flags()
    assert flags[flags.index("--idle-timeout") + 1] != "3600"
    silent = ba.server_flags("silent", ba.parse_args(["--silent-max-sessions", "3"]))
    assert silent[-4:] == ["--max-sessions", "3", "--idle-timeout", "5.0"]  # after the defaults: these win


def test_quick_run_of_every_attack(tmp_path):
    out = tmp_path / "abuse.json"
    proc = subprocess.run([sys.executable, str(_PATH), "--quick", "--engine", "scripted", "--json", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=150)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads(out.read_text())
    rows = {r["attack"]: r for r in data["rows"]}
    assert list(rows) == list(ba.ATTACKS) and data["broken"] == [] and not data["timed_out"]
    for name, r in rows.items():
        for key in ("base_mib", "peak_mib", "retained_mib"):
            assert isinstance(r[key], float) and r[key] > 0, (name, key, r[key])
        assert r["peak_mib"] >= r["base_mib"]
        for key in ("fds_base", "fds_peak", "fds_after"):
            assert isinstance(r[key], int) and r[key] > 0, (name, key, r[key])
        assert isinstance(r["good"]["seconds"], float) and r["good"]["tries"] >= 1
        assert sum(r["outcomes"].values()) >= 1  # every attack connection's ending is booked
        assert r["server_exit"] == 0 and r["leftover_processes"] == []
        assert len(r["samples"]) >= 3
    assert rows["churn"]["details"]["cycles"] + sum(rows["churn"]["details"]["errors"].values()) == 200
    assert sum(rows["slowloris"]["outcomes"].values()) == 10
    assert sum(rows["silent"]["outcomes"].values()) == 4
    lines = [line for line in proc.stdout.splitlines() if line.split(" ", 1)[0] in ba.ATTACKS]
    assert [line.split()[0] for line in lines] == list(ba.ATTACKS)
    assert "run: ok" in proc.stdout


def test_a_server_that_died_or_did_not_start_reads_as_such_in_the_table():
    dead = {"attack": "flac", "size": "3x 90 min", "engine": "scripted", "base_mib": 70.0, "peak_mib": 1900.0,
            "retained_mib": None, "fds_base": 10, "fds_peak": 14, "fds_after": None,
            "good": {"ok": False, "why": "closed 1006", "busy": 0}, "outcomes": {"closed 1006": 3}}
    broken = {"attack": "channel", "engine": "sphinx", "broken": "the server did not become ready in 120 s"}
    table = ba.format_table([dead, broken], 10.0)
    flac_line = next(line for line in table.splitlines() if line.startswith("flac"))
    assert flac_line.split()[5:11] == ["70", "1900", "dead", "10", "14", "dead"]
    assert "FAIL closed 1006" in flac_line and "closed 1006 x3" in flac_line
    assert "BROKEN: the server did not become ready" in table and "fds +10s" in table
