#!/usr/bin/env python
"""Abuse benchmark: what hostile clients cost `stt serve`, and whether a well-behaved client still gets served.

    .venv/bin/python bench/bench_abuse.py                                # every attack, moderate sizes: ~3 min
    .venv/bin/python bench/bench_abuse.py --quick --engine scripted      # smoke run: small sizes, ~30 s
    .venv/bin/python bench/bench_abuse.py --attacks churn,slowloris --churn-cycles 20000 --json abuse.json

For each attack (--attacks, all by default) a FRESH server runs as a subprocess (bench_soak.ServerProcess:
`python -m stt serve` on a free port of 127.0.0.1, an admin port for /readyz and /metrics, no STT_* variables,
--workers 1, and the server's own default limits unless the attack names others). Then:

1. Warm-up: one good-client session (below), unmeasured, so the engine is loaded before the baseline.
2. Baseline: RSS of the server's process tree (server + descendants: sphinx decoder workers) and the server's
   open fds (/proc/PID/fd; sockets counted apart), and its /metrics.
3. The attack and, beside it, the GOOD CLIENT: once the attack is in full swing (--good-delay after it says so),
   a Speechmatics session (ws://127.0.0.1:PORT/v2) of a short real recording (--good-file, tests/data): raw
   pcm_s16le 16 kHz, 100 ms chunks paced at --good-speed x real time, EndOfStream, read to EndOfTranscript,
   close 1000. Refused as busy (Error quota_exceeded / 4005, HTTP 503) it tries again every --good-retry
   seconds while the attack lasts. Verdict: "ok" with the seconds from its first try to EndOfTranscript (and
   the busy refusals before it), or FAIL and why (busy every time, an Error, a close, a timeout, no connect).
   All the while the tree RSS and the fds are sampled every --sample-seconds: the peaks.
4. When the attack has ended (its connections closed, by it or by the server) and the good client is done, it
   waits --settle seconds (10) after the attack's end and reads the RSS (retained) and the fds (held).
5. The server's endings (stt_sessions_total by ending/code, less the good client's own normal/1000 and
   busy/4005 sessions) and refusals (stt_connections_rejected_total) over the attack, the WARNING/ERROR/
   traceback lines of its log (and MemoryError), then it is stopped (SIGINT, then killed; its whole process
   group is killed in a finally, however the bench ends).

The attacks (each bounded in count and time; loopback only):

  channel    V-Blaze (/transcribe) request whose WAV header claims --channel-count channels (64), with
             --channel-kib KiB (100) of low noise, then the empty frame; read to the close. V-Blaze opens one
             engine stream per channel. Engine: sphinx unless --engine (a decoder per stream); the other
             attacks run on the scripted engine unless --engine.
  flac       --flac-bombs (1) YourVoic (/api/v1/stt/realtime/stream) sessions at once, each a FLAC of
             --flac-minutes (90) of silence at 16 kHz (967 KiB, under the default 1 MiB message limit) in one
             binary message (--flac-frame-kib to split it), then {"type":"close"}; read every message to the
             close (or --attack-timeout).
  churn      --churn-cycles (3000) TCP connect-and-close cycles, no byte sent, --churn-concurrency (8) at a
             time, for at most --churn-seconds (60); the good client starts once they are done (what they
             leave held is the attack). --server-nofile 1024 starts the servers with that open-file
             limit (a common default), so running out of fds shows without 20 000 cycles.
  slowloris  --slowloris-connections (200) connections, each sending the HTTP upgrade request of /v2 one byte
             every --slowloris-interval (1 s) for --slowloris-seconds (20); then the bench closes them. Each
             notes whether the server closed it first (and what it answered) or held it to the end.
  silent     against --max-sessions --silent-max-sessions (2) --idle-timeout --silent-idle-timeout (5):
             --silent-fault-sessions (2) Speechmatics connections with `x-stt-fault: idle=3600s` (a plan that
             asks for an hour's idle timeout), then --silent-sessions (2) plain ones; none sends a byte. Each is
             held until the server closes it or --silent-seconds (15) have passed. The good client has to get
             one of the slots before the attack ends.

Memory guard: when MemAvailable falls under --min-available-mib (3072) the server's process group is killed
at once and the row says so (the machine is shared). Every wait is under a deadline, the whole run under
--timeout. Figures are printed, never asserted; the exit status is 0 unless the bench itself broke (a server
did not start). --json PATH writes the settings and every row with its details and samples.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import io
import json
import math
import os
import resource
import signal
import statistics
import sys
import tempfile
import time
import wave
from pathlib import Path

import numpy as np
import trio
from trio_websocket import ConnectionClosed, ConnectionRejected, HandshakeError, open_websocket_url

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # bench.*, when run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from bench.bench_soak import (  # noqa: E402
    SERVER_LIMIT_FLAGS,
    ServerProcess,
    _leaf,
    await_started,
    diff_counts,
    log_summary,
    metric_sum,
    mem_available_kib,
    scrape,
    snapshot,
    start_message,
    wait_ready,
)
from bench.processes import HOST, free_port  # noqa: E402

DATA = ROOT / "tests" / "data"
ATTACKS = ("channel", "flac", "churn", "slowloris", "silent")
RATE = 16000
FAULT_HEADER = "x-stt-fault"
SM_PATH, YV_PATH, VB_PATH = "/v2", "/api/v1/stt/realtime/stream", "/transcribe"
#: What the good client's own sessions add to the server's endings, taken out of the attack's (Speechmatics).
GOOD_ENDINGS = {"ok": "speechmatics normal/1000", "busy": "speechmatics busy/4005"}
#: bench_soak.ServerProcess switches these limits off; the abuse bench wants the server's own defaults back.
RESTORED_FLAGS = ("--idle-timeout", "--max-sessions", "--max-sessions-per-key", "--max-session-seconds")


# --- pure bookkeeping ------------------------------------------------------------------------------------------


def default_limit_flags() -> list[str]:
    """The flags of RESTORED_FLAGS with `stt serve`'s own defaults (from its parser), to put after
    bench_soak's SERVER_LIMIT_FLAGS (the last one given wins)."""
    from stt.cli import _parser

    ns = _parser().parse_args(["serve"])
    out = []
    for flag in RESTORED_FLAGS:
        if flag in SERVER_LIMIT_FLAGS:
            out += [flag, str(getattr(ns, flag.lstrip("-").replace("-", "_")))]
    return out


def channel_bomb_wav(channels: int, data_bytes: int, rate: int = RATE, seed: int = 7) -> bytes:
    """A 16-bit WAV whose header says `channels` channels, with about data_bytes of low noise."""
    frames = max(1, data_bytes // (2 * channels))
    samples = np.random.default_rng(seed).integers(-300, 300, size=frames * channels, dtype=np.int16)
    buf = io.BytesIO()
    with wave.open(buf, "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(samples.astype("<i2").tobytes())
    return buf.getvalue()


def flac_silence(seconds: float, rate: int = RATE) -> bytes:
    """FLAC of `seconds` of digital silence (a few bytes per block: 90 min is ~1 MB), encoded with PyAV."""
    import av

    buf = io.BytesIO()
    block = np.zeros((1, rate * 10), dtype=np.int16)
    with av.open(buf, "w", format="flac") as out:
        stream = out.add_stream("flac", rate=rate)
        stream.layout = "mono"
        left, pts = int(seconds * rate), 0
        while left > 0:
            n = min(left, block.shape[1])
            frame = av.AudioFrame.from_ndarray(block[:, :n], format="s16", layout="mono")
            frame.sample_rate, frame.pts = rate, pts
            pts, left = pts + n, left - n
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


def upgrade_request(port: int, path: str = SM_PATH) -> bytes:
    """The HTTP/1.1 WebSocket upgrade request a client sends (RFC 6455 §4.1)."""
    return (f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()


def pcm_of(path: Path) -> bytes:
    with wave.open(str(path), "rb") as f:
        if (f.getframerate(), f.getnchannels(), f.getsampwidth()) != (RATE, 1, 2):
            raise SystemExit(f"{path}: the good client needs 16 kHz mono 16-bit")
        return f.readframes(f.getnframes())


def fds_of(pid: int, proc: Path = Path("/proc")) -> tuple[int, int] | None:
    """(open fds, of them sockets) of a process from /proc/PID/fd; None when it is gone."""
    fd_dir = proc / str(pid) / "fd"
    try:
        names = os.listdir(fd_dir)
    except OSError:
        return None
    sockets = 0
    for name in names:
        try:
            sockets += os.readlink(fd_dir / name).startswith("socket:")
        except OSError:
            pass  # closed in between
    return len(names), sockets


def outcome_of(exc: BaseException) -> str:
    """How a client connection ended, in a few words, from what the client library raised."""
    leaf = _leaf(exc)
    if isinstance(leaf, ConnectionClosed):
        return f"closed {leaf.reason.code if leaf.reason else 1006}"
    if isinstance(leaf, ConnectionRejected):
        return f"http {leaf.status_code}"
    if isinstance(leaf, trio.TooSlowError):
        return "timeout"
    if isinstance(leaf, HandshakeError):
        return f"handshake failed: {type(leaf).__name__}"
    if isinstance(leaf, OSError):
        return f"{type(leaf).__name__}"
    return f"{type(leaf).__name__}: {str(leaf)[:60]}"


def counts_text(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} x{v}" for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))) or "-"


def dialect_endings(samples) -> dict[str, int]:
    """stt_sessions_total by 'dialect ending/code' (bench_soak.endings, with the dialect)."""
    out: dict[str, int] = {}
    for name, labels, value in samples or []:
        if name == "stt_sessions_total" and value:
            key = f"{labels.get('dialect')} {labels.get('ending')}/{labels.get('code')}"
            out[key] = out.get(key, 0) + int(value)
    return dict(sorted(out.items()))


def attack_endings(after: dict[str, int], before: dict[str, int], good: dict) -> dict[str, int]:
    """The server's endings over the attack, less the good client's own sessions (warm-up excluded: it ended
    before `before` was read)."""
    out = diff_counts(after, before)
    for key, n in ((GOOD_ENDINGS["ok"], 1 if good.get("ok") else 0), (GOOD_ENDINGS["busy"], good.get("busy", 0))):
        if n and key in out:
            out[key] -= n
            if out[key] <= 0:
                del out[key]
    return out


def rejections(samples) -> dict[str, int]:
    """stt_connections_rejected_total by reason."""
    out: dict[str, int] = {}
    for name, labels, value in samples or []:
        if name == "stt_connections_rejected_total" and value:
            out[labels.get("reason", "?")] = out.get(labels.get("reason", "?"), 0) + int(value)
    return out


def good_verdict(good: dict) -> str:
    if not good:
        return "-"
    busy = f", {good['busy']} busy" if good.get("busy") else ""
    if good.get("ok"):
        return f"ok {good['seconds']:.1f}s{busy}"
    return f"FAIL {good.get('why')}{busy}"


def _mib(kib: float | None) -> float | None:
    return None if kib is None else round(kib / 1024.0, 1)


def _f(x, nd: int = 0) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{nd}f}"


# --- watching the server ------------------------------------------------------------------------------------------


class Watch:
    """Samples the server's tree RSS and fds; keeps the peaks; kills the server when the machine runs short."""

    def __init__(self, server: ServerProcess, interval: float, min_available_kib: float):
        self.server, self.interval, self.min_available_kib = server, interval, min_available_kib
        self.samples: list[tuple[float, float, int, int]] = []  # (t, tree MiB, fds, sockets)
        self.peak_kib = 0
        self.peak_fds = 0
        self.peak_sockets = 0
        self.guard: str | None = None
        self.died_at: float | None = None
        self.t0 = trio.current_time()

    def read(self) -> dict | None:
        """One reading: {"rss_kib", "fds", "sockets", "available_kib"}, the peaks updated; None: server gone."""
        if self.server.proc.poll() is not None:
            if self.died_at is None:
                self.died_at = trio.current_time() - self.t0
            return None
        snap = snapshot(self.server.pid)
        fds = fds_of(self.server.pid)
        if snap is None or fds is None:
            return None
        self.peak_kib = max(self.peak_kib, snap["total_kib"])
        self.peak_fds, self.peak_sockets = max(self.peak_fds, fds[0]), max(self.peak_sockets, fds[1])
        self.samples.append((round(trio.current_time() - self.t0, 2), _mib(snap["total_kib"]), *fds))
        available = snap["available_kib"]
        if available is not None and available < self.min_available_kib and self.guard is None:
            self.guard = (f"memory guard: MemAvailable {available / 1024:.0f} MiB < --min-available-mib "
                          f"{self.min_available_kib / 1024:.0f}, server killed at {snap['total_kib'] / 1024:.0f} MiB")
            try:
                os.killpg(self.server.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return {"rss_kib": snap["total_kib"], "fds": fds[0], "sockets": fds[1], "available_kib": available}

    async def run(self) -> None:
        while True:
            self.read()
            await trio.sleep(self.interval)


# --- the good client ------------------------------------------------------------------------------------------------


async def good_session(port: int, pcm: bytes, speed: float, timeout: float) -> dict:
    """One Speechmatics session: {"ok", "busy", "why", "words"}."""
    chunk = RATE * 2 // 10  # 100 ms
    chunks = [pcm[i:i + chunk] for i in range(0, len(pcm), chunk)]
    out = {"ok": False, "busy": False, "why": None, "words": 0}
    try:
        with trio.fail_after(timeout):
            async with open_websocket_url(f"ws://{HOST}:{port}{SM_PATH}", connect_timeout=timeout,
                                          disconnect_timeout=5) as ws:
                await ws.send_message(start_message())
                why = await await_started(ws)
                if why is not None:
                    out["busy"], out["why"] = "quota_exceeded" in why, why
                    return out
                done = trio.Event()

                async def read() -> None:
                    while True:
                        msg = json.loads(await ws.get_message())
                        name = msg.get("message")
                        if name == "AddTranscript":
                            out["words"] += sum(1 for r in msg.get("results", []) if r.get("type") == "word")
                        elif name == "Error":
                            out["why"] = f"Error {msg.get('type')}"
                            done.set()
                            return
                        elif name == "EndOfTranscript":
                            out["ok"] = True
                            done.set()
                            return

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(read)
                    start = trio.current_time()
                    for k, piece in enumerate(chunks):
                        await trio.sleep_until(start + k * 0.1 / speed)
                        await ws.send_message(piece)
                    await ws.send_message(json.dumps({"message": "EndOfStream", "last_seq_no": len(chunks)}))
                    await done.wait()
                    nursery.cancel_scope.cancel()
    except Exception as exc:  # noqa: BLE001 - every way it can fail is a verdict
        what = outcome_of(exc)
        out["ok"] = False
        out["busy"] = what in ("closed 4005", "http 503") or out["busy"]
        out["why"] = out["why"] or what
    return out


async def good_client(port: int, pcm: bytes, args, attack_over: trio.Event) -> dict:
    """The good client: a session; refused as busy, again every --good-retry s while the attack lasts."""
    t0 = trio.current_time()
    tries, busy = 0, 0
    while True:
        tries += 1
        res = await good_session(port, pcm, args.good_speed, args.good_timeout)
        busy += bool(res["busy"])
        if res["ok"] or not res["busy"] or trio.current_time() - t0 > args.good_timeout:
            break
        await trio.sleep(args.good_retry)
        if attack_over.is_set():  # the slot came free only because the attacker left: not beside it
            break
    return {"ok": res["ok"], "why": None if res["ok"] else res["why"], "busy": busy, "tries": tries,
            "words": res["words"], "seconds": round(trio.current_time() - t0, 2)}


# --- the attacks ------------------------------------------------------------------------------------------------------


class Attack:
    """What an attack function is given, and what it leaves: its size in words and how its connections ended."""

    def __init__(self, port: int, args):
        self.port, self.args = port, args
        self.in_swing = trio.Event()  # the good client starts --good-delay after this
        self.outcomes: collections.Counter[str] = collections.Counter()
        self.size = ""
        self.details: dict = {}


async def attack_channel(a: Attack) -> None:
    args = a.args
    data = channel_bomb_wav(args.channel_count, args.channel_kib * 1024)
    a.size = f"{args.channel_count} ch, {len(data) // 1024} KiB"
    try:
        with trio.fail_after(args.attack_timeout):
            async with open_websocket_url(f"ws://{HOST}:{a.port}{VB_PATH}?output=text", connect_timeout=10,
                                          disconnect_timeout=5) as ws:
                for i in range(0, len(data), 16384):
                    await ws.send_message(data[i:i + 16384])
                await ws.send_message(b"")
                a.in_swing.set()
                while True:
                    await ws.get_message()
    except Exception as exc:  # noqa: BLE001
        a.outcomes[outcome_of(exc)] += 1
    finally:
        a.in_swing.set()


async def attack_flac(a: Attack) -> None:
    args = a.args
    data = await trio.to_thread.run_sync(flac_silence, args.flac_minutes * 60.0)
    a.size = (f"{args.flac_bombs}x {args.flac_minutes:g} min, {len(data) // 1024} KiB"
              + (f" in {args.flac_frame_kib} KiB frames" if args.flac_frame_kib else ""))
    a.details["messages"] = []
    started = [0]

    async def bomb() -> None:
        received = 0
        try:
            with trio.fail_after(args.attack_timeout):
                url = f"ws://{HOST}:{a.port}{YV_PATH}?interim_results=false"
                async with open_websocket_url(url, connect_timeout=10, disconnect_timeout=5) as ws:

                    async def read() -> None:
                        nonlocal received
                        while True:
                            await ws.get_message()
                            received += 1

                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(read)
                        frame = args.flac_frame_kib * 1024 or len(data)
                        for i in range(0, len(data), frame):
                            await ws.send_message(data[i:i + frame])
                            if not started[0]:
                                started[0] = 1
                                a.in_swing.set()
                        await ws.send_message('{"type":"close"}')
        except Exception as exc:  # noqa: BLE001
            a.outcomes[outcome_of(exc)] += 1
        else:
            a.outcomes["ended by the bench"] += 1
        a.details["messages"].append(received)

    try:
        async with trio.open_nursery() as nursery:
            for _ in range(args.flac_bombs):
                nursery.start_soon(bomb)
    finally:
        a.in_swing.set()


async def attack_churn(a: Attack) -> None:
    args = a.args
    done, errors, tickets = [0], collections.Counter(), [0]
    start = trio.current_time()
    deadline = start + args.churn_seconds

    async def churner() -> None:
        while tickets[0] < args.churn_cycles and trio.current_time() < deadline:
            tickets[0] += 1
            sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
            try:
                if args.attacker_address:
                    await sock.bind((args.attacker_address, 0))
                with trio.fail_after(5):
                    await sock.connect((HOST, a.port))
                done[0] += 1
            except (OSError, trio.TooSlowError) as exc:
                errors[outcome_of(exc)] += 1
            finally:
                sock.close()

    try:
        async with trio.open_nursery() as nursery:
            for _ in range(args.churn_concurrency):
                nursery.start_soon(churner)
    finally:
        a.in_swing.set()
    took = trio.current_time() - start
    a.size = f"{done[0] + sum(errors.values())} cycles, {took:.1f} s"
    a.outcomes["connected, closed by the bench"] += done[0]
    a.outcomes.update(errors)
    a.details.update(cycles=done[0], errors=dict(errors), seconds=round(took, 2))


async def attack_slowloris(a: Attack) -> None:
    args = a.args
    request = upgrade_request(a.port)
    a.size = f"{args.slowloris_connections} conns, {args.slowloris_seconds:g} s"
    closed_after: list[float] = []
    start = trio.current_time()
    stop_at = start + args.slowloris_seconds
    opened = [0]

    async def loris() -> None:
        try:
            with trio.fail_after(10):
                stream = await trio.open_tcp_stream(HOST, a.port, local_address=args.attacker_address or None)
        except (OSError, trio.TooSlowError) as exc:
            a.outcomes[f"connect: {outcome_of(exc)}"] += 1
            return
        opened[0] += 1
        if opened[0] == args.slowloris_connections:
            a.in_swing.set()
        answer = bytearray()
        gone = trio.Event()

        async def read() -> None:
            try:
                while data := await stream.receive_some(4096):
                    answer.extend(data[:200 - len(answer)] if len(answer) < 200 else b"")
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass
            gone.set()

        async with stream:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(read)
                sent = 0
                while trio.current_time() < stop_at and not gone.is_set() and sent < len(request):
                    try:
                        await stream.send_all(request[sent:sent + 1])
                    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                        break
                    sent += 1
                    with trio.move_on_at(min(stop_at, trio.current_time() + args.slowloris_interval)):
                        await gone.wait()
                with trio.move_on_at(stop_at):
                    await gone.wait()  # the whole request was sent, or the server closed: wait for the end
                nursery.cancel_scope.cancel()
        status = bytes(answer).split(b"\r\n", 1)[0].decode(errors="replace")[:40]
        if gone.is_set():
            closed_after.append(trio.current_time() - start)
            a.outcomes[f"closed by the server ({status or 'no answer'})"] += 1
        elif answer:
            a.outcomes[f"answered ({status}), held to the end"] += 1
        else:
            a.outcomes["held to the end, closed by the bench"] += 1

    try:
        async with trio.open_nursery() as nursery:
            for _ in range(args.slowloris_connections):
                nursery.start_soon(loris)
                await trio.sleep(0.005)
    finally:
        a.in_swing.set()
    if closed_after:
        a.details["server_closed_after_s"] = {"min": round(min(closed_after), 2),
                                              "median": round(statistics.median(closed_after), 2),
                                              "max": round(max(closed_after), 2)}


async def attack_silent(a: Attack) -> None:
    args = a.args
    a.size = (f"{args.silent_fault_sessions} idle=3600s + {args.silent_sessions} silent, max "
              f"{args.silent_max_sessions}, idle {args.silent_idle_timeout:g} s")
    stop_at = trio.current_time() + args.silent_seconds
    held: dict[str, list[float]] = collections.defaultdict(list)

    async def silent(kind: str, headers: list, task_status=trio.TASK_STATUS_IGNORED) -> None:
        t0 = trio.current_time()
        signalled = False
        try:
            with trio.move_on_at(stop_at) as scope:
                async with open_websocket_url(f"ws://{HOST}:{a.port}{SM_PATH}", extra_headers=headers,
                                              connect_timeout=10, disconnect_timeout=2) as ws:
                    signalled = True
                    task_status.started()
                    await ws.get_message()  # a silent client: whatever comes, it waits for the close
                    while True:
                        await ws.get_message()
            if scope.cancelled_caught:
                a.outcomes[f"{kind}: held to the end, closed by the bench"] += 1
        except Exception as exc:  # noqa: BLE001
            a.outcomes[f"{kind}: {outcome_of(exc)}"] += 1
            held[kind].append(round(trio.current_time() - t0, 2))
        finally:
            if not signalled:
                task_status.started()

    try:
        async with trio.open_nursery() as nursery:
            for _ in range(args.silent_fault_sessions):
                await nursery.start(silent, "idle=3600s", [(FAULT_HEADER, "idle=3600s")])
            for _ in range(args.silent_sessions):
                await nursery.start(silent, "silent", [])
            a.in_swing.set()
    finally:
        a.in_swing.set()
    a.details["closed_by_server_after_s"] = dict(held)


ATTACK_FUNCTIONS = {"channel": attack_channel, "flac": attack_flac, "churn": attack_churn,
                    "slowloris": attack_slowloris, "silent": attack_silent}


def server_flags(name: str, args) -> list[str]:
    flags = default_limit_flags()
    if name == "silent":
        flags += ["--max-sessions", str(args.silent_max_sessions), "--idle-timeout", str(args.silent_idle_timeout)]
    return flags


def engine_for(name: str, args) -> str:
    return args.engine or ("sphinx" if name == "channel" else "scripted")


# --- one attack against a fresh server ------------------------------------------------------------------------------


async def run_attack(name: str, args, pcm: bytes, tmp: Path) -> dict:
    engine = engine_for(name, args)
    row: dict = {"attack": name, "engine": engine, "broken": None}
    available = mem_available_kib()
    row["available_mib_before"] = _mib(available)
    port, admin = free_port(), free_port()
    log_path = tmp / f"{name}.log"
    with nofile_limit(args.server_nofile):  # inherited by the server
        server = ServerProcess(port, admin, log_path, extra=server_flags(name, args), engine=engine)
    row["command"] = " ".join(server.cmd[1:])
    row["server_nofile"] = args.server_nofile or resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    t_launch = time.monotonic()
    try:
        if not await wait_ready(server, args.start_timeout):
            row["broken"] = f"the server did not become ready in {args.start_timeout:g} s (exit {server.proc.poll()})"
            return row
        row["start_seconds"] = round(time.monotonic() - t_launch, 2)
        warm = await good_session(port, pcm, args.good_speed, args.good_timeout)
        row["warm_up"] = "ok" if warm["ok"] else warm["why"]
        await server_quiet(admin, 5.0)  # the warm-up's ending is counted before the baseline is read
        watch = Watch(server, args.sample_seconds, args.min_available_mib * 1024)
        base = watch.read()
        before = await scrape(admin)
        if base is None or before is None:
            row["broken"] = "the server went away before the attack"
            return row
        log_start = server.log_size()
        attack = Attack(port, args)
        attack_over = trio.Event()
        good: dict = {}
        ended_at = [math.nan]

        async def run_the_attack() -> None:
            try:
                await ATTACK_FUNCTIONS[name](attack)
            finally:
                ended_at[0] = trio.current_time()
                attack_over.set()

        async def run_the_good_client() -> None:
            with trio.move_on_after(args.attack_timeout):
                await attack.in_swing.wait()
            await trio.sleep(args.good_delay)
            good.update(await good_client(port, pcm, args, attack_over))

        t_start = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch.run)
            async with trio.open_nursery() as work:
                work.start_soon(run_the_attack)
                work.start_soon(run_the_good_client)
            await trio.sleep_until(ended_at[0] + args.settle)
            after = watch.read()
            nursery.cancel_scope.cancel()
        active = await server_quiet(admin, 2.0)  # the last endings counted; what the server still holds
        metrics = await scrape(admin)
        row["server_sessions_active_after"] = active
        row.update(
            size=attack.size, outcomes=dict(attack.outcomes), details=attack.details, good=good,
            attack_seconds=round(ended_at[0] - t_start, 2), settle_seconds=args.settle,
            base_mib=_mib(base["rss_kib"]), peak_mib=_mib(watch.peak_kib),
            retained_mib=_mib(after["rss_kib"]) if after else None,
            fds_base=base["fds"], sockets_base=base["sockets"], fds_peak=watch.peak_fds,
            sockets_peak=watch.peak_sockets,
            fds_after=after["fds"] if after else None, sockets_after=after["sockets"] if after else None,
            guard=watch.guard,
            died_at=watch.died_at,
            samples=watch.samples,
        )
        if metrics is not None:
            row["server_endings"] = attack_endings(dialect_endings(metrics), dialect_endings(before), good)
            row["server_rejections"] = diff_counts(rejections(metrics), rejections(before))
        else:
            row["server_endings"] = row["server_rejections"] = None
        row["log"] = log_summary(log_path, log_start, server.log_size())
        row["log"]["memory_errors"] = _count_in(log_path, log_start, b"MemoryError")
    finally:
        t_stop = time.monotonic()
        row["server_exit"] = server.stop()
        row["stop_seconds"] = round(time.monotonic() - t_stop, 2)
        row["leftover_processes"] = server.leftovers
        row["log_path"] = str(log_path)
    return row


@contextlib.contextmanager
def nofile_limit(soft: int | None):
    """While inside, this process's soft RLIMIT_NOFILE is `soft` (at most the hard limit), so that a server
    started inside inherits it; None: leave it."""
    if not soft:
        yield
        return
    old = resource.getrlimit(resource.RLIMIT_NOFILE)
    hard = old[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft if hard == resource.RLIM_INFINITY else min(soft, hard), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, old)


async def server_quiet(admin: int, timeout: float) -> float | None:
    """Wait (at most `timeout` s) until the server has no session under way; the sessions still under way."""
    active = None
    with trio.move_on_after(timeout):
        while True:
            samples = await scrape(admin)
            active = None if samples is None else metric_sum(samples, "stt_sessions_active")
            if active == 0 or samples is None:
                break
            await trio.sleep(0.05)
    return active


def _count_in(path: Path, start: int, needle: bytes) -> int:
    try:
        with open(path, "rb") as f:
            f.seek(start)
            return f.read().count(needle)
    except OSError:
        return 0


# --- output -------------------------------------------------------------------------------------------------------


COLUMNS = ("attack", "size", "engine", "base MiB", "peak MiB", "kept MiB", "fds base", "fds peak", "fds +{s}s",
           "good client", "attack connections ended")


def table_rows(rows: list[dict], settle: float) -> list[list[str]]:
    out = [[c.format(s=f"{settle:g}") for c in COLUMNS]]
    for r in rows:
        if r.get("broken"):
            out.append([r["attack"], "-", r["engine"], "-", "-", "-", "-", "-", "-", "-", f"BROKEN: {r['broken']}"])
            continue
        out.append([r["attack"], r["size"], r["engine"], _f(r["base_mib"]), _f(r["peak_mib"]),
                    _f(r["retained_mib"]) if r["retained_mib"] is not None else "dead",
                    str(r["fds_base"]), str(r["fds_peak"]), "dead" if r["fds_after"] is None else str(r["fds_after"]),
                    good_verdict(r["good"]), counts_text(r["outcomes"])])
    return out


def format_table(rows: list[dict], settle: float) -> str:
    cells = table_rows(rows, settle)
    widths = [max(len(line[i]) for line in cells) for i in range(len(cells[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_details(r: dict) -> str:
    if r.get("broken"):
        return f"  {r['attack']}: {r['broken']}"
    log = r.get("log") or {}
    parts = [f"  {r['attack']}: server endings {counts_text(r['server_endings'] or {})}; "
             f"refused {counts_text(r['server_rejections'] or {})}; "
             f"sockets base/peak/after {r['sockets_base']}/{r['sockets_peak']}/{_f(r['sockets_after'])}; "
             f"sessions still under way {_f(r.get('server_sessions_active_after'))}; "
             f"log {log.get('warnings', 0)} warnings, {log.get('errors', 0)} errors, "
             f"{log.get('tracebacks', 0)} tracebacks, {log.get('memory_errors', 0)} MemoryError; "
             f"server exit {r['server_exit']}"]
    if r.get("details"):
        parts.append(f"    attack: {json.dumps(r['details'])}")
    if r.get("guard"):
        parts.append(f"    {r['guard']}")
    if r.get("died_at") is not None and not r.get("guard"):
        parts.append(f"    the server DIED {r['died_at']:.1f} s into the attack")
    if r.get("leftover_processes"):
        parts.append(f"    killed leftovers: {r['leftover_processes']}")
    for line in log.get("sample", [])[:3]:
        parts.append(f"    log: {line[:160]}")
    return "\n".join(parts)


# --- main -------------------------------------------------------------------------------------------------------------

QUICK = {"channel_count": 4, "channel_kib": 20, "flac_minutes": 2.0, "churn_cycles": 200, "churn_seconds": 10.0,
         "slowloris_connections": 10, "slowloris_seconds": 1.5, "slowloris_interval": 0.2, "silent_seconds": 2.0,
         "silent_idle_timeout": 1.0, "settle": 1.0, "good_file": "ps_cards_001.wav", "good_speed": 4.0,
         "attack_timeout": 20.0, "good_delay": 0.1}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--attacks", default=",".join(ATTACKS), help=f"comma-separated, of {', '.join(ATTACKS)} (all)")
    p.add_argument("--engine", default=None,
                   help="the engine of every attack's server (default: sphinx for channel, scripted for the rest)")
    p.add_argument("--quick", action="store_true",
                   help="small sizes for a smoke run: " + ", ".join(f"{k}={v}" for k, v in QUICK.items()))
    p.add_argument("--json", type=Path, metavar="PATH", help="write settings and rows as JSON")
    p.add_argument("--channel-count", type=int, default=64, help="channels the WAV header claims (64)")
    p.add_argument("--channel-kib", type=int, default=100, help="KiB of audio after it (100)")
    p.add_argument("--flac-minutes", type=float, default=90.0, help="minutes of silence in the FLAC (90)")
    p.add_argument("--flac-bombs", type=int, default=1, help="FLAC bombs at once (1)")
    p.add_argument("--flac-frame-kib", type=int, default=0,
                   help="KiB per binary frame of the FLAC; 0: the whole file in one message (0)")
    p.add_argument("--churn-cycles", type=int, default=3000, help="TCP connect-and-close cycles (3000)")
    p.add_argument("--churn-seconds", type=float, default=60.0, help="at most this long (60)")
    p.add_argument("--churn-concurrency", type=int, default=8, help="cycles under way at once (8)")
    p.add_argument("--slowloris-connections", type=int, default=200, help="connections (200)")
    p.add_argument("--slowloris-seconds", type=float, default=20.0, help="how long they trickle (20)")
    p.add_argument("--attacker-address", default="127.0.0.2", metavar="ADDR",
                   help="loopback source address of the churn and slowloris connections, so that the good client "
                        "(127.0.0.1) comes from another address, as from another host; '' for 127.0.0.1 too, "
                        "where the server's per-address handshake cap refuses the good client along with the attack "
                        "(127.0.0.2)")
    p.add_argument("--slowloris-interval", type=float, default=1.0, help="seconds between bytes (1)")
    p.add_argument("--silent-sessions", type=int, default=2, help="silent sessions (2)")
    p.add_argument("--silent-fault-sessions", type=int, default=2,
                   help="silent sessions asking x-stt-fault: idle=3600s, opened first (2)")
    p.add_argument("--silent-seconds", type=float, default=15.0, help="how long they are held at most (15)")
    p.add_argument("--silent-max-sessions", type=int, default=2, help="the server's --max-sessions (2)")
    p.add_argument("--silent-idle-timeout", type=float, default=5.0, help="the server's --idle-timeout (5)")
    p.add_argument("--good-file", default="ps_goforward.wav", help="the good client's recording, in tests/data")
    p.add_argument("--good-speed", type=float, default=1.0, help="its pace, x real time (1)")
    p.add_argument("--good-delay", type=float, default=0.5, help="seconds after the attack is in swing (0.5)")
    p.add_argument("--good-retry", type=float, default=0.5, help="seconds between tries when refused busy (0.5)")
    p.add_argument("--good-timeout", type=float, default=60.0, help="seconds a session may take (60)")
    p.add_argument("--server-nofile", type=int, default=None, metavar="N",
                   help="the servers' open-file limit (soft RLIMIT_NOFILE), e.g. 1024, a common default; "
                        "default: this shell's")
    p.add_argument("--settle", type=float, default=10.0,
                   help="seconds after the attack's end to read retained RSS and fds (10)")
    p.add_argument("--sample-seconds", type=float, default=0.1, help="RSS/fd sampling interval (0.1)")
    p.add_argument("--attack-timeout", type=float, default=120.0, help="one attack connection at most (120)")
    p.add_argument("--start-timeout", type=float, default=120.0, help="server start at most (120)")
    p.add_argument("--min-available-mib", type=float, default=3072.0,
                   help="kill the server when MemAvailable falls below this (3072)")
    p.add_argument("--timeout", type=float, default=1200.0, help="the whole run at most (1200)")
    args = p.parse_args(argv)
    if args.quick:
        given = {a.split("=")[0].lstrip("-").replace("-", "_") for a in (argv or sys.argv[1:]) if a.startswith("--")}
        for key, value in QUICK.items():
            if key not in given:
                setattr(args, key, value)
    names = [n.strip() for n in args.attacks.split(",") if n.strip()]
    unknown = [n for n in names if n not in ATTACKS]
    if unknown or not names:
        p.error(f"--attacks: unknown {unknown}; choose from {', '.join(ATTACKS)}")
    args.attack_names = names
    return args


async def run_all(args, pcm: bytes, tmp: Path) -> list[dict]:
    rows = []
    for name in args.attack_names:
        print(f"{name}: starting a fresh server ({engine_for(name, args)})...", flush=True)
        t = time.monotonic()
        row = await run_attack(name, args, pcm, tmp)
        rows.append(row)
        print(f"{name}: done in {time.monotonic() - t:.1f} s", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    pcm = pcm_of(DATA / args.good_file)
    tmp = Path(tempfile.mkdtemp(prefix="bench_abuse."))
    print(f"bench_abuse: attacks {', '.join(args.attack_names)}; server logs in {tmp}; "
          f"MemAvailable {_f(_mib(mem_available_kib()))} MiB", flush=True)
    rows: list[dict] = []
    timed_out = False
    async def go() -> None:
        nonlocal rows, timed_out
        with trio.move_on_after(args.timeout) as scope:
            rows = await run_all(args, pcm, tmp)
        timed_out = scope.cancelled_caught

    trio.run(go)
    print()
    print(format_table(rows, args.settle))
    print()
    for r in rows:
        print(format_details(r))
    if timed_out:
        print(f"run: timed out after {args.timeout:g} s")
    broken = [r["attack"] for r in rows if r.get("broken")]
    if args.json:
        settings = {k: v for k, v in vars(args).items() if k != "json"}
        args.json.write_text(json.dumps({"settings": settings, "rows": rows, "timed_out": timed_out,
                                         "broken": broken}, indent=1, default=str))
    print("run: " + ("ok" if not broken and not timed_out else f"broken: {broken or 'timeout'}"))
    return 1 if broken or timed_out else 0


if __name__ == "__main__":
    sys.exit(main())
