"""bench/bench_soak.py's bookkeeping: growth after warm-up, medians and percentiles, the idle-session memory guard,
/proc parsing on a fake /proc, the Prometheus text it reads from /metrics, which recordings a session streams. And
one end-to-end run of the bench's smallest configuration against a real `stt serve --engine sphinx`, asserting
that it ran (samples taken, sessions completed, none failed), never memory thresholds: machines are shared."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_PATH = ROOT / "bench" / "bench_soak.py"
_spec = importlib.util.spec_from_file_location("bench_soak", _PATH)
bs = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("bench_soak", bs)
_spec.loader.exec_module(bs)


# --- medians, percentiles, growth ---------------------------------------------------------------------------


def test_median_and_percentile():
    assert bs.median([3.0, 1.0, 2.0]) == 2.0
    assert bs.median([1.0, 2.0, 3.0, 4.0]) == 2.5
    assert bs.median([1.0, math.nan, 3.0]) == 2.0  # NaN is left out
    assert math.isnan(bs.median([]))
    assert bs.percentile([1.0, 2.0, 3.0, 4.0, 5.0], 50) == 3.0
    assert bs.percentile([0.0, 10.0], 95) == pytest.approx(9.5)  # linear interpolation, as numpy's default
    assert bs.percentile([5.0], 99) == 5.0
    assert bs.percentile([4.0, 1.0, 3.0, 2.0], 0) == 1.0 and bs.percentile([4.0, 1.0, 3.0, 2.0], 100) == 4.0
    assert math.isnan(bs.percentile([], 50))


def test_growth_compares_medians_of_the_first_and_last_three_samples_after_the_warm_up():
    # before the warm-up (t < 120) the RSS climbs a lot: that is not counted
    points = [(0, 50.0), (60, 80.0), (110, 95.0),
              (120, 100.0), (130, 104.0), (140, 98.0), (150, 101.0), (160, 103.0), (170, 110.0), (180, 102.0)]
    g = bs.growth(points, after=120)
    assert g["points"] == 7 and g["n"] == 3
    assert g["first"] == 100.0  # median of 100, 104, 98
    assert g["last"] == 103.0  # median of 103, 110, 102
    assert g["pct"] == pytest.approx(3.0)
    assert bs.verdict(g["pct"], 5.0) == "PASS"
    assert bs.verdict(5.0, 5.0) == "PASS" and bs.verdict(5.01, 5.0) == "FAIL"


def test_growth_is_order_independent_and_handles_shrinking_and_few_samples():
    points = [(180, 90.0), (120, 100.0), (150, 95.0), (130, 100.0), (170, 90.0), (140, 100.0), (160, 90.0)]
    g = bs.growth(points, after=0)
    assert g["pct"] == pytest.approx(-10.0)  # RSS went down
    few = bs.growth([(10, 100.0), (20, 110.0), (30, 120.0)], after=0)
    assert few["n"] == 1 and few["first"] == 100.0 and few["last"] == 120.0 and few["pct"] == pytest.approx(20.0)
    four = bs.growth([(1, 100.0), (2, 102.0), (3, 110.0), (4, 112.0)], after=0)
    assert four["n"] == 2 and four["first"] == 101.0 and four["last"] == 111.0  # the two ends do not overlap
    assert math.isnan(bs.growth([(1, 100.0)], after=0)["pct"])
    assert math.isnan(bs.growth([(1, 100.0), (2, 100.0)], after=5)["pct"])  # nothing after the warm-up
    assert bs.verdict(math.nan, 5.0) == "n/a"


def test_slope_per_session_and_settled():
    assert bs.slope([(0, 10.0), (10, 30.0), (20, 50.0)]) == pytest.approx(2.0)
    assert bs.slope([(0, 10.0), (10, 32.0), (20, 50.0)]) == pytest.approx(2.0)
    assert math.isnan(bs.slope([(5, 1.0), (5, 2.0)]))
    assert bs.per_session(1000.0, 3000.0, 200) == 10.0
    assert math.isnan(bs.per_session(1000.0, 3000.0, 0))
    assert bs.settled([100_000.0, 100_100.0, 100_200.0])  # within 0.5 %
    assert not bs.settled([100_000.0, 100_000.0, 110_000.0])
    assert not bs.settled([100.0, 100.0])  # fewer than 3
    assert bs.settled([10.0, 50.0, 70.0])  # within the floor (64 KiB) however small
    assert bs.settled([1.0, 900_000.0, 100_000.0, 100_010.0, 100_020.0])  # only the last 3 count


def test_idle_batch_size_keeps_the_growth_under_the_budget_and_the_machine_above_its_floor():
    mib = 1024.0
    # plenty of room: the whole batch
    assert bs.idle_batch_size(10, 0.0, 100 * mib, 4096 * mib, 20_000 * mib, 2048 * mib) == (10, None)
    # 3.5 GiB grown of 4 GiB: room for 5 sessions of 100 MiB
    assert bs.idle_batch_size(10, 3584 * mib, 100 * mib, 4096 * mib, 20_000 * mib, 2048 * mib) == (5, None)
    n, why = bs.idle_batch_size(10, 4050 * mib, 100 * mib, 4096 * mib, 20_000 * mib, 2048 * mib)
    assert n == 0 and "--idle-budget-mib" in why
    # the machine is short of memory before the budget is reached
    n, why = bs.idle_batch_size(10, 0.0, 100 * mib, 4096 * mib, 2300 * mib, 2048 * mib)
    assert n == 2 and why is None
    n, why = bs.idle_batch_size(10, 0.0, 100 * mib, 4096 * mib, 2100 * mib, 2048 * mib)
    assert n == 0 and "MemAvailable" in why
    # unknown MemAvailable: only the budget; free sessions or nothing wanted: no limit
    assert bs.idle_batch_size(10, 0.0, 100 * mib, 4096 * mib, None, 2048 * mib) == (10, None)
    assert bs.idle_batch_size(10, 9e9, 0.0, 4096 * mib, 0, 2048 * mib) == (10, None)
    assert bs.idle_batch_size(0, 0.0, 100 * mib, 4096 * mib, None, 2048 * mib) == (0, None)


# --- /proc ---------------------------------------------------------------------------------------------------

STATUS = """Name:\tpython
Umask:\t0022
State:\tS (sleeping)
Tgid:\t{pid}
Pid:\t{pid}
PPid:\t1
VmPeak:\t  500000 kB
VmHWM:\t  {hwm} kB
VmRSS:\t  {rss} kB
RssAnon:\t  {anon} kB
RssFile:\t  20000 kB
RssShmem:\t       0 kB
Threads:\t3
voluntary_ctxt_switches:\t12
"""


def fake_process(proc: Path, pid: int, rss: int, *, threads=(), ppid=1, anon=None, children_files=True) -> None:
    d = proc / str(pid)
    (d / "task").mkdir(parents=True)
    anon = rss // 2 if anon is None else anon
    (d / "status").write_text(STATUS.format(pid=pid, rss=rss, hwm=rss + 100, anon=anon))
    (d / "stat").write_text(f"{pid} (py thon) S {ppid} {pid} {pid} 0 -1 4194560 0 0 0 0 1 2 0 0 20 0 1 0\n")
    (d / "cmdline").write_bytes(b"python\0-m\0stt\0serve\0")
    for tid, kids in [(pid, [])] + list(threads):
        (d / "task" / str(tid)).mkdir(exist_ok=True)
        if children_files:
            (d / "task" / str(tid) / "children").write_text("".join(f"{k} " for k in kids))


def test_parse_status_children_meminfo_and_stat():
    st = bs.parse_status(STATUS.format(pid=7, rss=81234, hwm=90000, anon=40000))
    assert st["VmRSS"] == 81234 and st["VmHWM"] == 90000 and st["RssAnon"] == 40000 and st["RssFile"] == 20000
    assert "Name" not in st and "Threads" not in st  # only the kB fields
    assert bs.parse_children("4101 4102 \n") == [4101, 4102]
    assert bs.parse_children("") == []
    mem = bs.parse_meminfo("MemTotal:       24683520 kB\nMemFree:        23250000 kB\n"
                           "MemAvailable:   23700000 kB\nHugePages_Total:       0\n")
    assert mem == {"MemTotal": 24683520, "MemFree": 23250000, "MemAvailable": 23700000}
    assert bs.parse_stat_ppid("42 (a) b) c) S 7 42 42 0") == 7  # a command name with spaces and parentheses
    assert bs.parse_stat_ppid("garbage") is None


def test_snapshot_sums_the_server_and_all_its_descendants(tmp_path):
    proc = tmp_path / "proc"
    # the server (100): its main thread has no children; a thread (105) forked the two workers and a tracker;
    # worker 201 has a child of its own (301)
    fake_process(proc, 100, 80_000, threads=[(105, [201, 202, 203])])
    fake_process(proc, 201, 150_000, ppid=100, threads=[(206, [301])])
    fake_process(proc, 202, 140_000, ppid=100)
    fake_process(proc, 203, 12_000, ppid=100)
    fake_process(proc, 301, 1_000, ppid=201)
    fake_process(proc, 999, 5_000_000)  # not ours
    (proc / "meminfo").write_text("MemTotal: 1000 kB\nMemAvailable:     512000 kB\n")
    assert bs.children_of(100, proc) == [201, 202, 203]
    assert bs.descendants(100, proc) == [201, 202, 203, 301]
    snap = bs.snapshot(100, proc)
    assert snap["server_kib"] == 80_000 and snap["server_anon_kib"] == 40_000 and snap["server_hwm_kib"] == 80_100
    assert snap["children_kib"] == 150_000 + 140_000 + 12_000 + 1_000
    assert snap["total_kib"] == 80_000 + 303_000
    assert set(snap["children"]) == {201, 202, 203, 301} and snap["children"][202] == {"rss": 140_000, "anon": 70_000}
    assert snap["available_kib"] == 512_000
    assert bs.snapshot(12345, proc) is None  # gone
    assert bs.cmdline(100, proc) == "python -m stt serve"


def test_children_from_a_ppid_scan_where_there_are_no_children_files(tmp_path):
    proc = tmp_path / "proc"
    fake_process(proc, 100, 80_000, children_files=False)
    fake_process(proc, 201, 150_000, ppid=100, children_files=False)
    fake_process(proc, 202, 140_000, ppid=100, children_files=False)
    fake_process(proc, 303, 1_000, ppid=1, children_files=False)
    assert bs.children_of(100, proc) == [201, 202]
    assert bs.snapshot(100, proc)["children_kib"] == 290_000


def test_a_child_that_exits_between_listing_and_reading_is_skipped(tmp_path):
    proc = tmp_path / "proc"
    fake_process(proc, 100, 80_000, threads=[(101, [201, 202])])
    fake_process(proc, 201, 150_000, ppid=100)  # 202 is listed but gone
    snap = bs.snapshot(100, proc)
    assert snap["children_kib"] == 150_000 and list(snap["children"]) == [201]


def test_child_labels():
    assert bs.child_label("/venv/bin/python -c from multiprocessing.resource_tracker import main;main(8)") \
        == "resource tracker"
    assert bs.child_label("/venv/bin/python -c from multiprocessing.spawn import spawn_main; spawn_main("
                          "tracker_fd=9, pipe_handle=11) --multiprocessing-fork") == "decoder worker"


# --- /metrics -------------------------------------------------------------------------------------------------

METRICS = """# HELP stt_sessions_total Sessions that ended, by ending, chart rule and close code
# TYPE stt_sessions_total counter
stt_sessions_total{code="1000",dialect="speechmatics",ending="normal",rule="LC-END-001"} 7.0
stt_sessions_created{code="1000",dialect="speechmatics",ending="normal",rule="LC-END-001"} 1.7e+09
stt_sessions_total{code="1000",dialect="speechmatics",ending="client_closed",rule="LC-END-003"} 5.0
stt_sessions_total{code="1006",dialect="voicerun",ending="dropped",rule="LC-END-004"} 1.0
# HELP stt_sessions_active Sessions under way, by lifecycle state
# TYPE stt_sessions_active gauge
stt_sessions_active{dialect="speechmatics",state="listening"} 3.0
stt_sessions_active{dialect="speechmatics",state="recognizing"} 2.0
stt_audio_seconds_total{dialect="a \\"quoted\\" one"} 12.5
process_open_fds 17.0
"""


def test_prometheus_text_is_read_into_samples():
    samples = bs.parse_prometheus(METRICS)
    assert ("process_open_fds", {}, 17.0) in samples
    assert ("stt_audio_seconds_total", {"dialect": 'a "quoted" one'}, 12.5) in samples
    assert bs.metric_sum(samples, "stt_sessions_active") == 5.0
    assert bs.metric_sum(samples, "stt_sessions_active", state="recognizing") == 2.0
    assert bs.metric_sum(samples, "stt_sessions_total", dialect="speechmatics") == 12.0
    assert bs.metric_sum(samples, "nothing") == 0
    ends = bs.endings(samples)
    assert ends == {"client_closed/1000": 5, "dropped/1006": 1, "normal/1000": 7}  # _created is not an ending
    assert bs.diff_counts({"normal/1000": 9, "client_closed/1000": 5}, {"normal/1000": 7, "client_closed/1000": 5}) \
        == {"normal/1000": 2}


# --- recordings -----------------------------------------------------------------------------------------------


def test_real_recordings_come_from_refs_tsv():
    refs = "id\tfile\tcategory\tsource\n" \
           "a\ta.wav\treal\tx\n" \
           "s\ts.wav\tsynth-vad\tx\n" \
           "b\tb.wav\treal\tx\n"
    assert bs.real_recordings(refs) == ["a.wav", "b.wav"]
    shipped = bs.real_recordings((ROOT / "tests" / "data" / "refs.tsv").read_text())
    assert len(shipped) == 11 and "synth_vad_gaps.wav" not in shipped
    assert all((ROOT / "tests" / "data" / name).exists() for name in shipped)


def test_session_plan_streams_one_to_three_recordings_in_turn():
    cursor, seen = 0, []
    for j in range(4):
        picks, cursor = bs.session_plan(0, j, cursor, 11)
        seen.append(picks)
    assert seen == [[0], [1, 2], [3, 4, 5], [6]]
    picks, cursor = bs.session_plan(1, 0, 10, 11)  # client 1 starts with 2 recordings, wrapping round
    assert picks == [10, 0] and cursor == 1
    assert bs.chunked(b"abcdefg", 3) == [b"abc", b"def", b"g"]


# --- the real thing, smallest -------------------------------------------------------------------------------


def test_smallest_run_end_to_end(tmp_path):
    """A few seconds of one real-time stream against `stt serve --engine sphinx` (whose decoder worker is a child
    process, measured apart), then 3 idle sessions of each kind: samples were taken, sessions completed, none
    failed, every server session ended and the run is ok."""
    out = tmp_path / "soak.json"
    proc = subprocess.run(
        [sys.executable, str(_PATH), "--engine", "sphinx", "--minutes", "0.1", "--streams", "1",
         "--idle-sessions", "3",
         "--sample-seconds", "1", "--settle-seconds", "0.6", "--warmup-minutes", "0", "--decode-workers", "1",
         "--idle-rounds", "1",
         "--timeout", "120", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["broken"] == []
    samples = data["samples"]
    assert len([s for s in samples if s["phase"] == "soak"]) >= 3
    assert all(s["server_mib"] > 0 for s in samples)
    assert any(s["n_children"] >= 1 and s["children_mib"] > 0 for s in samples)  # the decoder worker
    res = data["results"]
    assert res["sessions_done"] >= 1 and res["sessions_failed"] == 0 and res["finals_with_words"] >= 1
    phases = {idle["kind"]: idle for idle in data["phases"]["idle"]}
    assert sorted(phases) == ["connected", "started"]
    for idle in phases.values():
        assert idle["opened"] == 3 and idle["failed"] == 0 and idle["stopped_early"] is None
        assert idle["server_sessions_held"] == 3 and idle["server_sessions_after"] == 0
    assert phases["started"]["endings"] == {"normal/1000": 3}
    assert data["phases"]["endings_soak"] == {"normal/1000": res["sessions_done"]}
    assert data["server_exit"] == 0 and data["leftover_processes"] == []
    assert "run: ok" in proc.stdout
