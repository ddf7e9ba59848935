#!/usr/bin/env python
"""Load benchmark for the Speechmatics RT v2 dialect: N concurrent real-time clients against `stt serve`.

    .venv/bin/python bench/bench_speechmatics.py [--sessions 1,10,100,200,300] [--seconds 10]
                                                  [--engines bare,scripted,sphinx] [--sphinx-sessions 1,2,4,8]

For each engine and each N, the server runs as a SUBPROCESS on a free port of 127.0.0.1 (so that client and
server do not share a GIL); this process then runs N simulated clients with trio + trio_websocket. Each client
sends StartRecognition (partials on), waits for RecognitionStarted, streams `--seconds` of real speech
(tests/data/ps_librivox_0870.wav, looped) in REAL TIME, one 20 ms frame (640 bytes) every 20 ms paced against
its own start time (no drift), then EndOfStream, reads until EndOfTranscript and closes. Session starts are
staggered over `--stagger` seconds (1 s).

Engines:
  bare      a reference server defined in this file (run as `bench_speechmatics.py --bare-server PORT`): plain
            trio-websocket, answers StartRecognition, one AudioAdded per binary frame, EndOfTranscript; nothing
            else. It is what the protocol layer alone costs on this machine, client included.
  scripted  `stt serve --engine scripted` (deterministic, on the event loop).
  sphinx    `stt serve --engine sphinx` (pocketsphinx in worker processes). Its capacity is about
            cores / RTF streams (RTF ~0.25 per stream per core); N beyond that lags by design. It only runs at
            the --sphinx-sessions Ns, never above SPHINX_MAX_SESSIONS.

Measured, pooled over all clients of a row:
  ack      AudioAdded latency: wall time from sending frame k to receiving AudioAdded seq_no k.
  partial  lag of AddPartialTranscript: arrival time minus the time at which the audio up to its
           metadata.end_time had been sent (the send time of the frame that holds that instant).
  final    the same for AddTranscript.
  fail     clients that failed: connection errors, Error messages, missing AudioAdded or EndOfTranscript,
           a close code other than 1000, a timeout.
  late     p99 of how late this process sent frames against their schedule: when it is large, the CLIENT is
           saturated and the latencies above include its own queueing.
  cpu      CPU time of the server (process tree, so sphinx workers count), of this client process and of
           everything else on the machine (noise), in % of one core, over the row (warm-up included).
  log      WARNING/ERROR lines (and tracebacks) in the server's stderr; logs are kept in a temp folder.

Before each row the bench waits (at most --quiet-wait s) for other processes to go quiet, then
min(N, 16) short warm-up sessions (0.5 s of audio sent at once) run and are not measured.
The benchmark measures and prints; it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import socket
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path

import numpy as np
import trio
from trio_websocket import ConnectionClosed, open_websocket_url, serve_websocket

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # bench.processes (and stt), when run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from bench.processes import HOST, all_stats, free_port, stop_group, system_busy_seconds  # noqa: E402
WAV = ROOT / "tests" / "data" / "ps_librivox_0870.wav"
RATE = 16000
FRAME_SECONDS = 0.02
FRAME_BYTES = int(RATE * FRAME_SECONDS) * 2  # 640
SPHINX_RTF = 0.25  # per stream per core, the engine's measured real-time factor
SPHINX_MAX_SESSIONS = 16
ENGINES = ("bare", "scripted", "sphinx")

START = json.dumps({
    "message": "StartRecognition",
    "audio_format": {"type": "raw", "encoding": "pcm_s16le", "sample_rate": RATE},
    "transcription_config": {"language": "en", "enable_partials": True},
}, separators=(",", ":"))
ACK_PREFIX = '{"message":"AudioAdded","seq_no":'


# --- the bare reference server --------------------------------------------------------------------------------

async def _bare_handler(request) -> None:
    try:
        ws = await request.accept()
        seq = 0
        while True:
            msg = await ws.get_message()
            if isinstance(msg, (bytes, bytearray)):
                seq += 1
                await ws.send_message(f'{ACK_PREFIX}{seq}}}')
                continue
            name = json.loads(msg).get("message")
            if name == "StartRecognition":
                await ws.send_message('{"message":"RecognitionStarted","id":"bare"}')
            elif name == "EndOfStream":
                await ws.send_message('{"message":"EndOfTranscript"}')
    except ConnectionClosed:
        pass


def bare_server(port: int) -> int:
    async def main():
        await serve_websocket(_bare_handler, HOST, port, ssl_context=None)

    try:
        trio.run(main)
    except* KeyboardInterrupt:  # trio may deliver it inside an ExceptionGroup
        pass
    return 0


# --- server subprocess ----------------------------------------------------------------------------------------

class ServerProcess:
    """A server in its own session (process group), logging to a file; stopped with SIGINT, then killed."""

    def __init__(self, engine: str, port: int, log_path: Path, profile: Path | None = None,
                 extra: list[str] = (), *, cwd: Path = ROOT, env: dict | None = None):
        self.engine, self.port, self.log_path = engine, port, log_path
        if engine == "bare":
            cmd = [str(Path(__file__).resolve()), "--bare-server", str(port)]
        else:
            cmd = ["-m", "stt", "serve", "--engine", engine, "--host", HOST, "--port", str(port),
                   "--log-level", "warning", "--log-format", "text",
                   "--max-sessions", "0",  # the bench loads the engine past its capacity (auto would refuse)
                   *extra]
        if profile is not None:  # cProfile writes the file when SIGINT ends the server
            cmd = ["-m", "cProfile", "-o", str(profile)] + cmd
        cmd = [sys.executable] + cmd
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        self.leftovers: list[str] = []

    def wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                with socket.create_connection((HOST, self.port), timeout=0.5):
                    return True
            except OSError:
                time.sleep(0.1)
        return False

    def stop(self, timeout: float = 15.0) -> int | None:
        self.leftovers = stop_group(self.proc, timeout)
        self._log.close()
        return self.proc.returncode

    def log_size(self) -> int:
        self._log.flush()
        return self.log_path.stat().st_size

    def log_summary(self, start: int = 0, end: int | None = None) -> tuple[int, int, int, list[str]]:
        """Counts of WARNING and ERROR lines and tracebacks in the log bytes [start, end), and a few lines."""
        with open(self.log_path, "rb") as f:
            f.seek(start)
            raw = f.read() if end is None else f.read(max(0, end - start))
        text = raw.decode(errors="replace").splitlines()
        warnings = [l for l in text if " WARNING " in l]
        errors = [l for l in text if " ERROR " in l or " CRITICAL " in l]
        tracebacks = sum(1 for l in text if l.startswith(("Traceback", "  + Exception Group Traceback")))
        return len(warnings), len(errors), tracebacks, (errors + warnings)[:5]


def wait_for_quiet(limit_pct: float, max_wait: float) -> float:
    """Sample the machine's CPU use by others (1 s at a time) until it is at most limit_pct of one core or
    max_wait seconds have passed; return the last sample, in % of one core."""
    deadline = time.monotonic() + max_wait
    while True:
        busy0, own0 = system_busy_seconds(), time.process_time()
        time.sleep(1.0)
        other = 100.0 * max(0.0, system_busy_seconds() - busy0 - (time.process_time() - own0))
        if other <= limit_pct or time.monotonic() >= deadline:
            return other


def tree_cpu_seconds(root: int) -> float:
    """utime + stime of a process and all its live descendants (Linux /proc; 0 elsewhere)."""
    stats = all_stats()
    children: dict[int, list[int]] = {}
    for pid, st in stats.items():
        children.setdefault(int(st[1]), []).append(pid)  # field 4: ppid
    total, todo, seen = 0, [root], set()
    while todo:
        pid = todo.pop()
        if pid in seen or pid not in stats:
            continue
        seen.add(pid)
        total += int(stats[pid][11]) + int(stats[pid][12])  # fields 14, 15: utime, stime
        todo.extend(children.get(pid, []))
    return total / os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 0.0


# --- clients --------------------------------------------------------------------------------------------------

class ClientResult:
    def __init__(self, nframes: int):
        self.send_t = np.full(nframes, np.nan)  # when frame k (0-based) was sent
        self.late = np.full(nframes, np.nan)  # how late against its schedule
        self.ack_t = np.full(nframes, np.nan)  # when AudioAdded seq_no k+1 arrived
        self.partials: list[tuple[float, float]] = []  # (arrival, metadata.end_time)
        self.finals: list[tuple[float, float]] = []
        self.warnings = 0
        self.failure: str | None = None
        self.got_eot = False
        self.close_code: int | None = None

    def fail(self, why: str) -> None:
        if self.failure is None:
            self.failure = why

    def lags(self, items: list[tuple[float, float]]) -> list[float]:
        out = []
        n = len(self.send_t)
        for arrival, end_time in items:
            k = min(n, max(1, math.ceil(end_time / FRAME_SECONDS - 1e-6)))  # frame holding that instant, 1-based
            sent = self.send_t[k - 1]
            if not math.isnan(sent):
                out.append(arrival - sent)
        return out


async def run_client(url: str, frames: list[bytes], start_at: float, res: ClientResult, *, session_timeout: float,
                     connect_timeout: float, measure: bool = True) -> None:
    await trio.sleep_until(start_at)
    nframes = len(frames)
    try:
        with trio.fail_after(session_timeout):
            async with open_websocket_url(url, connect_timeout=connect_timeout, disconnect_timeout=5) as ws:
                await ws.send_message(START)
                while True:  # bounded by session_timeout
                    msg = json.loads(await ws.get_message())
                    name = msg.get("message")
                    if name == "RecognitionStarted":
                        break
                    if name == "Error":
                        res.fail(f"Error {msg.get('type')}")
                        return

                async def sender() -> None:
                    t0 = trio.current_time()
                    for k, frame in enumerate(frames):
                        if measure:
                            due = t0 + k * FRAME_SECONDS
                            await trio.sleep_until(due)
                            now = trio.current_time()
                            res.send_t[k], res.late[k] = now, now - due
                        else:
                            res.send_t[k] = trio.current_time()
                        await ws.send_message(frame)
                    await ws.send_message(json.dumps({"message": "EndOfStream", "last_seq_no": nframes}))

                async def receiver() -> None:
                    while True:  # bounded by session_timeout and by EndOfTranscript
                        msg = await ws.get_message()
                        now = trio.current_time()
                        if msg.startswith(ACK_PREFIX):  # the hot path, without json
                            try:
                                seq = int(msg[len(ACK_PREFIX):-1])
                            except ValueError:
                                seq = json.loads(msg)["seq_no"]
                            if 1 <= seq <= nframes:
                                res.ack_t[seq - 1] = now
                            else:
                                res.fail(f"AudioAdded seq_no {seq} out of range")
                            continue
                        m = json.loads(msg)
                        name = m.get("message")
                        if name == "AddPartialTranscript":
                            res.partials.append((now, float(m["metadata"]["end_time"])))
                        elif name == "AddTranscript":
                            res.finals.append((now, float(m["metadata"]["end_time"])))
                        elif name == "EndOfTranscript":
                            res.got_eot = True
                            return
                        elif name == "Error":
                            res.fail(f"Error {m.get('type')}")
                            return
                        elif name == "Warning":
                            res.warnings += 1

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(sender)
                    await receiver()
                    nursery.cancel_scope.cancel()  # after an Error the sender may still be pacing
            res.close_code = ws.closed.code if ws.closed else None
    except trio.TooSlowError:
        res.fail("timeout")
    except Exception as exc:  # ConnectionClosed, OSError, HandshakeError, ... maybe inside an ExceptionGroup
        leaf = _leaf(exc)
        if isinstance(leaf, ConnectionClosed):
            res.close_code = leaf.reason.code if leaf.reason else None
            res.fail(f"closed {res.close_code}")
        else:
            res.fail(f"{type(leaf).__name__}: {str(leaf)[:80]}")
    if res.failure is None:
        if not res.got_eot:
            res.fail("no EndOfTranscript")
        elif np.isnan(res.ack_t).any():
            res.fail(f"{int(np.isnan(res.ack_t).sum())} AudioAdded missing")
        elif res.close_code not in (1000, None):
            res.fail(f"close code {res.close_code}")


def _leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


async def run_row(url: str, n: int, frames: list[bytes], warmup_frames: list[bytes], args) -> dict:
    session_timeout = args.seconds + args.stagger + args.tail_timeout
    # warm-up: not measured
    warm = [ClientResult(len(warmup_frames)) for _ in range(min(n, 16))]
    async with trio.open_nursery() as nursery:
        now = trio.current_time()
        for res in warm:
            nursery.start_soon(lambda r=res: run_client(url, warmup_frames, now, r, session_timeout=args.tail_timeout,
                                                        connect_timeout=args.connect_timeout, measure=False))
    warm_failures = sum(r.failure is not None for r in warm)

    results = [ClientResult(len(frames)) for _ in range(n)]
    base = trio.current_time() + 0.1
    async with trio.open_nursery() as nursery:
        for i, res in enumerate(results):
            start_at = base + (i * args.stagger / n if n > 1 else 0.0)
            nursery.start_soon(lambda r=res, s=start_at: run_client(url, frames, s, r, session_timeout=session_timeout,
                                                                    connect_timeout=args.connect_timeout))
    return {"results": results, "warm_failures": warm_failures}


# --- one row: server up, clients, server down -------------------------------------------------------------------

def pct(values, qs) -> list[float]:
    arr = np.asarray(values, dtype=float)
    arr = arr[~np.isnan(arr)]
    if arr.size == 0:
        return [math.nan for _ in qs]
    return [float(x) * 1000.0 for x in np.percentile(arr, qs)]


def bench_row(engine: str, n: int, frames: list[bytes], warmup_frames: list[bytes], args, logdir: Path) -> dict:
    port = free_port()
    log_path = logdir / f"{engine}-{n}.log"
    profile = args.profile_server / f"{engine}-{n}.prof" if args.profile_server else None
    server = ServerProcess(engine, port, log_path, profile, shlex.split(args.server_args))
    row: dict = {"engine": engine, "sessions": n, "loadavg_before": os.getloadavg()[0]}
    try:
        if not server.wait_ready(args.ready_timeout):
            row["error"] = f"server did not start (exit {server.proc.poll()}; log {log_path})"
            return row
        url = f"ws://{HOST}:{port}/v2"
        wall0, cpu_srv0, cpu_cli0 = time.monotonic(), tree_cpu_seconds(server.proc.pid), time.process_time()
        busy0 = system_busy_seconds()
        try:
            out = trio.run(_with_deadline, args.seconds + args.stagger + 2 * args.tail_timeout + 30,
                           run_row, url, n, frames, warmup_frames, args)
        except trio.TooSlowError:
            row["error"] = "row timed out"
            return row
        wall = time.monotonic() - wall0
        cpu_srv = tree_cpu_seconds(server.proc.pid) - cpu_srv0
        cpu_cli = time.process_time() - cpu_cli0
        cpu_other = max(0.0, system_busy_seconds() - busy0 - cpu_srv - cpu_cli)
    finally:
        running_log = server.log_size() if log_path.exists() else 0
        code = server.stop()
        row["server_exit"] = code
        row["leftover_processes"] = server.leftovers
        if log_path.exists():
            # while it served; then what stopping it (SIGINT, as Ctrl-C) wrote
            row["log_warnings"], row["log_errors"], row["log_tracebacks"], row["log_sample"] = \
                server.log_summary(0, running_log)
            row["shutdown_tracebacks"] = server.log_summary(running_log)[2]
        row["log"] = str(log_path)

    results = out["results"]
    acks, lates, part_lags, final_lags, reasons = [], [], [], [], {}
    for r in results:
        acks.append(r.ack_t - r.send_t)
        lates.append(r.late)
        part_lags += r.lags(r.partials)
        final_lags += r.lags(r.finals)
        if r.failure:
            reasons[r.failure] = reasons.get(r.failure, 0) + 1
    acks_all = np.concatenate(acks) if acks else np.array([])
    row.update({
        "failures": sum(reasons.values()),
        "failure_reasons": reasons,
        "warm_failures": out["warm_failures"],
        "ack_ms": dict(zip(("p50", "p95", "p99", "max"), pct(acks_all, [50, 95, 99, 100]))),
        "partial_ms": dict(zip(("p50", "p95"), pct(part_lags, [50, 95]))),
        "final_ms": dict(zip(("p50", "p95"), pct(final_lags, [50, 95]))),
        "partials": len(part_lags),
        "finals": len(final_lags),
        "late_p99_ms": pct(np.concatenate(lates) if lates else [], [99])[0],
        "client_warnings": sum(r.warnings for r in results),
        "wall_s": wall,
        "server_cpu_pct": 100.0 * cpu_srv / wall if wall > 0 else math.nan,
        "client_cpu_pct": 100.0 * cpu_cli / wall if wall > 0 else math.nan,
        "other_cpu_pct": 100.0 * cpu_other / wall if wall > 0 else math.nan,
    })
    return row


async def _with_deadline(seconds, fn, *a):
    with trio.fail_after(seconds):
        return await fn(*a)


# --- output -----------------------------------------------------------------------------------------------------

COLUMNS = [("engine", 8), ("N", 4), ("fail", 4), ("ack p50", 8), ("p95", 7), ("p99", 7), ("part p50", 8), ("p95", 7),
           ("fin p50", 8), ("p95", 7), ("p99/bare", 8), ("late p99", 8), ("srv cpu", 7), ("cli cpu", 7), ("oth cpu", 7),
           ("log w/e", 7)]


def _f(x: float, nd: int = 1) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{nd}f}"


def header() -> str:
    return "  ".join(name.rjust(w) if i else name.ljust(w) for i, (name, w) in enumerate(COLUMNS))


def format_row(row: dict, bare: dict | None) -> str:
    if "error" in row:
        return f"{row['engine']:<8}  {row['sessions']:>4}  ERROR: {row['error']}"
    ratio = math.nan
    if row["engine"] != "bare" and bare and "ack_ms" in bare and bare["ack_ms"]["p99"] > 0:
        ratio = row["ack_ms"]["p99"] / bare["ack_ms"]["p99"]
    cells = [row["engine"], str(row["sessions"]), str(row["failures"]),
             _f(row["ack_ms"]["p50"]), _f(row["ack_ms"]["p95"]), _f(row["ack_ms"]["p99"]),
             _f(row["partial_ms"]["p50"], 0), _f(row["partial_ms"]["p95"], 0),
             _f(row["final_ms"]["p50"], 0), _f(row["final_ms"]["p95"], 0),
             _f(ratio, 2), _f(row["late_p99_ms"]), f"{row['server_cpu_pct']:.0f}%", f"{row['client_cpu_pct']:.0f}%",
             f"{row['other_cpu_pct']:.0f}%",
             f"{row.get('log_warnings', 0)}/{row.get('log_errors', 0)}"]
    return "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, (_, w)) in enumerate(zip(cells, COLUMNS)))


def notes(row: dict) -> list[str]:
    out = []
    if row.get("other_cpu_before_pct", 0) > 25:
        out.append(f"the machine was busy when the row started: others used {row['other_cpu_before_pct']:.0f}% "
                   f"of a core")
    if row.get("failure_reasons"):
        out.append("failures: " + ", ".join(f"{k} x{v}" for k, v in row["failure_reasons"].items()))
    if row.get("warm_failures"):
        out.append(f"warm-up failures: {row['warm_failures']}")
    if row.get("client_warnings"):
        out.append(f"Warning messages received: {row['client_warnings']}")
    if row.get("log_tracebacks"):
        out.append(f"server tracebacks: {row['log_tracebacks']}")
    if row.get("log_sample"):
        out.append("server log: " + " | ".join(l[:160] for l in row["log_sample"][:3]))
    if row.get("server_exit") not in (0, None) or row.get("shutdown_tracebacks"):
        out.append(f"on SIGINT the server exited with code {row.get('server_exit')}"
                   f"{' and a traceback' if row.get('shutdown_tracebacks') else ''} (see {row.get('log')})")
    if row.get("leftover_processes"):
        out.append(f"{len(row['leftover_processes'])} server processes outlived the server by 3 s (killed): "
                   + "; ".join(row["leftover_processes"]))
    if "ack_ms" in row and row.get("late_p99_ms", 0) > 20:
        out.append("client saturated (frames sent >20 ms late at p99): latencies include client queueing")
    return out


# --- main -------------------------------------------------------------------------------------------------------

def load_frames(seconds: float) -> list[bytes]:
    with wave.open(str(WAV), "rb") as w:
        assert w.getframerate() == RATE and w.getnchannels() == 1 and w.getsampwidth() == 2, "need 16 kHz mono s16"
        pcm = w.readframes(w.getnframes())
    total = int(seconds / FRAME_SECONDS) * FRAME_BYTES
    reps = total // len(pcm) + 1
    data = (pcm * reps)[:total]
    return [data[i:i + FRAME_BYTES] for i in range(0, total, FRAME_BYTES)]


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sessions", type=_ints, default=[1, 10, 100, 200, 300], help="Ns for bare and scripted")
    p.add_argument("--sphinx-sessions", type=_ints, default=[1, 2, 4, 8],
                   help=f"Ns for sphinx (capped at {SPHINX_MAX_SESSIONS})")
    p.add_argument("--engines", default="bare,scripted,sphinx", help="comma-separated, from bare,scripted,sphinx")
    p.add_argument("--seconds", type=float, default=10.0, help="audio per session, streamed in real time")
    p.add_argument("--stagger", type=float, default=1.0, help="session starts are spread over this many seconds")
    p.add_argument("--connect-timeout", type=float, default=10.0)
    p.add_argument("--tail-timeout", type=float, default=60.0,
                   help="seconds a session may take beyond its audio and stagger before it counts as failed")
    p.add_argument("--ready-timeout", type=float, default=60.0, help="seconds to wait for a server to listen")
    p.add_argument("--timeout", type=float, default=1200.0, help="the whole run; rows not started by then are skipped")
    p.add_argument("--quiet-below", type=float, default=25.0, metavar="PCT",
                   help="before each row, wait until other processes use at most PCT%% of one core ...")
    p.add_argument("--quiet-wait", type=float, default=20.0, metavar="SECONDS",
                   help="... but no longer than this (0: do not wait)")
    p.add_argument("--json", type=Path, help="also write the rows here")
    p.add_argument("--profile-server", type=Path, metavar="DIR",
                   help="run each server under cProfile, writing DIR/<engine>-<N>.prof (slows the server)")
    p.add_argument("--server-args", default="", metavar="ARGS",
                   help="more options for `stt serve`, e.g. '--decode-workers 4'")
    p.add_argument("--bare-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.bare_server is not None:
        return bare_server(args.bare_server)

    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = [e for e in engines if e not in ENGINES]
    if unknown:
        p.error(f"unknown engines {unknown}")
    engines.sort(key=ENGINES.index)  # bare first: the others are compared with it
    cores = os.cpu_count() or 1
    frames = load_frames(args.seconds)
    warmup = frames[:25]
    logdir = Path(tempfile.mkdtemp(prefix="bench_speechmatics_"))
    if args.profile_server:
        args.profile_server.mkdir(parents=True, exist_ok=True)
    print(f"cores: {cores}   python: {sys.version.split()[0]}   audio: {WAV.name} looped to "
          f"{len(frames) * FRAME_SECONDS:g} s, {len(frames)} frames of {FRAME_BYTES} B every 20 ms per session; "
          f"starts staggered over {args.stagger:g} s")
    print(f"server logs: {logdir}")
    print("latencies in ms; ack = AudioAdded latency; part/fin = partial/final lag behind the audio sent; "
          "late = client send lateness;\ncpu in % of one core: srv = server process tree, cli = this client, "
          "oth = everything else on the machine (noise)")
    plan = []
    for engine in engines:
        ns = args.sphinx_sessions if engine == "sphinx" else args.sessions
        for n in ns:
            if engine == "sphinx" and n > SPHINX_MAX_SESSIONS:
                print(f"(skipping sphinx at N={n}: capped at {SPHINX_MAX_SESSIONS})")
                continue
            plan.append((engine, n))
    if "sphinx" in engines:
        print(f"sphinx capacity ~ cores / RTF = {cores} / {SPHINX_RTF} ~ {cores / SPHINX_RTF:.0f} streams; "
              f"N beyond capacity lags by design")
    print()
    print(header(), flush=True)

    t_start = time.monotonic()
    rows, bare_by_n = [], {}
    for engine, n in plan:
        if time.monotonic() - t_start > args.timeout:
            print(f"{engine:<8}  {n:>4}  SKIPPED: --timeout {args.timeout:g} s reached", flush=True)
            continue
        noise = wait_for_quiet(args.quiet_below, args.quiet_wait) if args.quiet_wait > 0 else math.nan
        row = bench_row(engine, n, frames, warmup, args, logdir)
        row["other_cpu_before_pct"] = noise
        if engine == "bare":
            bare_by_n[n] = row
        rows.append(row)
        print(format_row(row, bare_by_n.get(n)), flush=True)
        for line in notes(row):
            print(f"    {line}", flush=True)
    elapsed = time.monotonic() - t_start

    print()
    print(f"summary (total {elapsed:.0f} s, {cores} cores)")
    print(header())
    for row in rows:
        print(format_row(row, bare_by_n.get(row["sessions"])))
    if args.json:
        args.json.write_text(json.dumps({"cores": cores, "seconds": args.seconds, "elapsed_s": elapsed, "rows": rows},
                                        indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
