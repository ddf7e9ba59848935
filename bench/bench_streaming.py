#!/usr/bin/env python
"""Streaming Whisper beside the previous (30 s window) design, through the server, Speechmatics dialect.

    .venv/bin/python bench/bench_streaming.py                        # the full side-by-side (about 9 min)
    .venv/bin/python bench/bench_streaming.py --new-ns 1,2 --old-ns 1 --seconds 15 --file-recordings 2  # smoke

Designs: "new" is `stt serve --engine whisper` of this tree; "old" is the same command of git revision
--baseline-rev (default e4a025d, the last commit with faster-whisper's 30 s window), exported with `git archive`
into a temporary folder and run from there. Both get --max-sessions 1000 (the knee is what is measured, not
admission) and --decode-workers 2.

Real time (one row per N): N clients, each on its own WebSocket sessions, the recordings of tests/data and
../shared/audio (every one with a reference, duplicates once) back to back, one session per recording,
rotated so client i starts at recording i, until it has streamed --seconds of audio; audio in --chunk-ms chunks
paced at real time against the client's start (absolute schedule), partials on; starts spread over
--stagger seconds. The client runs in this process, on the same cores as the server.

Per utterance (an AddTranscript with words), with t0 the wall time at which audio position 0 was due:
  final lag      arrival - (t0 + the end_time of its last word): after the words end. The target: p95 at most
                 endpointing (0.45 s) + 0.3 s.
  first partial  arrival of the first AddPartialTranscript after the previous final - (t0 + the start_time of
                 the final's first word): after speech starts (target p95 <= 1.0 s). An utterance without one
                 counts under "no part".
  part/s         partials per second of speech (speech: each final's first word start to last word end).
  knee           the first N whose p95 final lag exceeds 1.5 s, per design ("> N" when none did).
  WER            the finals' words per recording against refs.tsv (stt.wer), over all the row's sessions.
  fail           sessions with an Error, a close code other than 1000, no EndOfTranscript, or a timeout.
  cpu            the server's process tree, CPU-seconds per audio-second streamed.

File mode (--file-recordings, one session at a time, per design and with partials on and off): each recording
sent as fast as it is acknowledged (at most --file-window chunks unacknowledged, as the vendor's CLI does),
then EndOfStream. Reported: partials per second of audio, and the finals' time: wall time from the first audio
to EndOfTranscript, and each final's arrival after its audio was sent (p50 / p95), partials on against off.

The machine is shared: the bench prints other processes' CPU use per row. It measures and prints; it asserts
nothing.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.bench_speechmatics import ServerProcess, tree_cpu_seconds  # noqa: E402
from bench.processes import HOST, free_port, system_busy_seconds  # noqa: E402
from stt.wer import edit_distance, normalize  # noqa: E402

RATE = 16000
LAG_LIMIT = 1.5  # the knee: the first N whose p95 final lag exceeds this
ENDPOINTING = 0.45
SOURCES = [ROOT / "tests" / "data", ROOT.parent.parent / "shared" / "audio", Path("/work/shared/audio")]
BASELINE_REV = "e4a025d"
STARTED = time.monotonic()
NEW_SHARE = 0.55  # of --time-limit for the new design's rows when the old one runs after it


# --- recordings -------------------------------------------------------------------------------------------


@dataclass(eq=False)
class Recording:
    name: str
    text: str
    samples: np.ndarray

    @property
    def seconds(self) -> float:
        return len(self.samples) / RATE


def load_recordings() -> list[Recording]:
    """Every recording with a reference in tests/data and ../shared/audio, each file name once."""
    out: dict[str, Recording] = {}
    for folder in SOURCES:
        refs = folder / "refs.tsv"
        if not refs.is_file():
            continue
        for line in refs.read_text().splitlines()[1:]:
            row = line.split("\t")
            if len(row) < 6 or row[1] in out or not (folder / row[1]).is_file():
                continue
            with wave.open(str(folder / row[1]), "rb") as w:
                if (w.getframerate(), w.getnchannels(), w.getsampwidth()) != (RATE, 1, 2):
                    continue
                samples = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.int16)
            out[row[1]] = Recording(row[1], row[5].strip(), samples)
    return list(out.values())


# --- servers ----------------------------------------------------------------------------------------------


class Server(ServerProcess):
    """`stt serve --engine whisper` of a source tree (its own stt package first on the path), in its own process
    group, with 2 decoders and no session limit."""

    def __init__(self, tree: Path, log: Path, extra: list[str]) -> None:
        super().__init__("whisper", free_port(), log, extra=["--decode-workers", "2", *extra], cwd=tree,
                         env=dict(os.environ, PYTHONPATH=str(tree), OPENBLAS_NUM_THREADS="1"))

    def cpu(self) -> float:
        return tree_cpu_seconds(self.proc.pid)


def export_tree(rev: str, into: Path) -> Path:
    """The stt package and statecharts of git revision `rev`, in a folder of their own."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "stt", "statecharts"], capture_output=True,
                             check=True).stdout
    into.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


# --- a session --------------------------------------------------------------------------------------------


@dataclass
class SessionLog:
    recording: Recording
    t0: float = math.nan  # wall time at which audio position 0 was due (real time) or sent (file mode)
    sent: list[float] = field(default_factory=list)  # wall time each chunk was sent
    partials: list[tuple[float, dict]] = field(default_factory=list)
    finals: list[tuple[float, dict]] = field(default_factory=list)
    order: list[tuple[float, str]] = field(default_factory=list)  # (arrival, "p" / "f")
    error: str | None = None
    ended: bool = False
    wall_s: float = math.nan


def start_message(partials: bool, max_delay: float | None) -> str:
    config = {"language": "en", "enable_partials": partials}
    if max_delay is not None:
        config["max_delay"] = max_delay
    return json.dumps({"message": "StartRecognition", "transcription_config": config,
                       "audio_format": {"type": "raw", "encoding": "pcm_s16le", "sample_rate": RATE}})


async def run_session(url: str, log: SessionLog, chunk: int, *, start_at: float | None, partials: bool,
                      max_delay: float | None, window: int = 0, timeout: float = 120.0) -> None:
    """One recording: paced at real time from `start_at`, or (start_at None) as fast as acknowledged with at
    most `window` chunks unacknowledged."""
    data = log.recording.samples
    chunks = [data[i:i + chunk].tobytes() for i in range(0, len(data), chunk)]
    acked = [0]
    ack_event = [trio.Event()]
    try:
        with trio.fail_after(timeout):
            async with open_websocket_url(url) as ws:
                await ws.send_message(start_message(partials, max_delay))
                while json.loads(await ws.get_message())["message"] != "RecognitionStarted":
                    pass

                async def reader() -> None:
                    while True:
                        msg = json.loads(await ws.get_message())
                        now = trio.current_time()
                        kind = msg["message"]
                        if kind == "AudioAdded":
                            acked[0] = msg["seq_no"]
                            ack_event[0].set()
                        elif kind == "AddPartialTranscript":
                            log.partials.append((now, msg))
                            log.order.append((now, "p"))
                        elif kind == "AddTranscript":
                            log.finals.append((now, msg))
                            log.order.append((now, "f"))
                        elif kind == "EndOfTranscript":
                            log.ended = True
                            return
                        elif kind == "Error":
                            raise RuntimeError(f"Error: {msg.get('type')}: {msg.get('reason')}")

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(reader)
                    log.t0 = start_at if start_at is not None else trio.current_time()
                    for k, payload in enumerate(chunks):
                        if start_at is not None:
                            await trio.sleep_until(start_at + k * chunk / RATE)
                        else:
                            while k - acked[0] >= window:
                                ack_event[0] = trio.Event()
                                await ack_event[0].wait()
                        log.sent.append(trio.current_time())
                        await ws.send_message(payload)
                    await ws.send_message(json.dumps({"message": "EndOfStream", "last_seq_no": len(chunks)}))
                log.wall_s = trio.current_time() - log.t0
    except ConnectionClosed as exc:
        if not log.ended or exc.reason.code != 1000:
            log.error = f"closed {exc.reason.code} {exc.reason.reason}"
    except trio.TooSlowError:
        log.error = "timed out"
    except Exception as exc:  # noqa: BLE001 - a failed session is reported with its row
        log.error = f"{type(exc).__name__}: {exc}"
    if not log.ended and log.error is None:
        log.error = "no EndOfTranscript"


# --- analysis ---------------------------------------------------------------------------------------------


def words_of(msg: dict) -> list[dict]:
    return [r for r in msg.get("results", []) if r.get("type") == "word"]


@dataclass
class Analysis:
    final_lag: list[float] = field(default_factory=list)
    first_partial: list[float] = field(default_factory=list)
    utterances: int = 0
    no_partial: int = 0
    partials: int = 0
    speech_s: float = 0.0
    errors: int = 0
    words: int = 0
    failures: list[str] = field(default_factory=list)
    sent_lag: list[float] = field(default_factory=list)  # file mode: final arrival - when its last audio was sent

    def add(self, log: SessionLog, chunk: int) -> None:
        if log.error:
            self.failures.append(f"{log.recording.name}: {log.error}")
        self.partials += len(log.partials)
        text = []
        last_final = -math.inf
        partial_times = [t for t, _ in log.partials]
        for arrival, msg in log.finals:
            ws = words_of(msg)
            text += [w["alternatives"][0]["content"] for w in ws]
            if not ws:
                last_final = arrival
                continue
            start, end = float(ws[0]["start_time"]), float(ws[-1]["end_time"])
            self.utterances += 1
            self.speech_s += max(0.0, end - start)
            self.final_lag.append(arrival - (log.t0 + end))
            k = min(len(log.sent) - 1, max(0, math.ceil(end * RATE / chunk) - 1))
            if log.sent:
                self.sent_lag.append(arrival - log.sent[k])
            firsts = [t for t in partial_times if last_final < t < arrival]
            if firsts:
                self.first_partial.append(firsts[0] - (log.t0 + start))
            else:
                self.no_partial += 1
            last_final = arrival
        ref = normalize(log.recording.text)
        self.errors += edit_distance(ref, normalize(" ".join(text)))
        self.words += len(ref)


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else math.nan


def _f(x: float, nd: int = 2) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{nd}f}"


# --- rows -------------------------------------------------------------------------------------------------


def client_plan(recordings: list[Recording], i: int, seconds: float) -> list[Recording]:
    order = recordings[i % len(recordings):] + recordings[:i % len(recordings)]
    plan, total = [], 0.0
    while total < seconds:
        for r in order:
            plan.append(r)
            total += r.seconds
            if total >= seconds:
                break
    return plan


async def real_time_row(server: Server, n: int, recordings: list[Recording], args) -> dict:
    url = f"ws://{HOST}:{server.port}/v2"
    chunk = round(args.chunk_ms * RATE / 1000)
    logs: list[SessionLog] = []
    cpu0, busy0, wall0 = server.cpu(), system_busy_seconds(), time.monotonic()
    own0 = time.process_time()
    start = trio.current_time() + 0.5

    async def client(i: int) -> None:
        at = start + i * args.stagger / n
        for rec in client_plan(recordings, i, args.seconds):
            log = SessionLog(rec)
            logs.append(log)
            await run_session(url, log, chunk, start_at=max(at, trio.current_time() + 0.05), partials=True,
                              max_delay=args.max_delay, timeout=rec.seconds + 60)
            at = trio.current_time() + 0.05

    async with trio.open_nursery() as nursery:
        for i in range(n):
            nursery.start_soon(client, i)
    wall = time.monotonic() - wall0
    cpu = server.cpu() - cpu0
    own = time.process_time() - own0
    other = max(0.0, system_busy_seconds() - busy0 - cpu - own)
    a = Analysis()
    for log in logs:
        a.add(log, chunk)
    audio = sum(log.recording.seconds for log in logs)
    return {"n": n, "sessions": len(logs), "audio_s": audio, "fail": len(a.failures), "failures": a.failures[:5],
            "partials_per_speech_s": a.partials / a.speech_s if a.speech_s else math.nan,
            "first_p50": pct(a.first_partial, 50), "first_p95": pct(a.first_partial, 95),
            "no_partial": a.no_partial, "utterances": a.utterances,
            "final_p50": pct(a.final_lag, 50), "final_p95": pct(a.final_lag, 95),
            "final_max": max(a.final_lag) if a.final_lag else math.nan,
            "wer": a.errors / a.words if a.words else math.nan, "wer_errors": a.errors, "wer_words": a.words,
            "cpu_per_audio_s": cpu / audio if audio else math.nan, "client_cpu_pct": 100 * own / wall,
            "other_cpu_pct": 100 * other / wall}


async def file_mode(server: Server, recordings: list[Recording], partials: bool, args) -> dict:
    url = f"ws://{HOST}:{server.port}/v2"
    chunk = round(args.chunk_ms * RATE / 1000)
    a = Analysis()
    wall = audio = 0.0
    for rec in recordings:
        log = SessionLog(rec)
        await run_session(url, log, chunk, start_at=None, partials=partials, max_delay=args.max_delay,
                          window=args.file_window, timeout=rec.seconds * 4 + 60)
        a.add(log, chunk)
        wall += log.wall_s if not math.isnan(log.wall_s) else 0.0
        audio += rec.seconds
    return {"partials": partials, "audio_s": audio, "wall_s": wall, "fail": len(a.failures),
            "partials_per_audio_s": a.partials / audio if audio else math.nan,
            "no_partial": a.no_partial, "utterances": a.utterances,
            "sent_lag_p50": pct(a.sent_lag, 50), "sent_lag_p95": pct(a.sent_lag, 95),
            "wer": a.errors / a.words if a.words else math.nan}


COLUMNS = [("design", 6), ("N", 3), ("sess", 4), ("fail", 4), ("part/s", 6), ("1st p50", 7), ("p95", 5),
           ("no part", 7), ("fin p50", 7), ("p95", 5), ("max", 5), ("WER", 6), ("cpu/s", 5), ("cli%", 4),
           ("oth%", 4)]


def line(cells: list[str]) -> str:
    return "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, (_, w)) in enumerate(zip(cells, COLUMNS)))


def format_row(design: str, r: dict) -> str:
    return line([design, str(r["n"]), str(r["sessions"]), str(r["fail"]), _f(r["partials_per_speech_s"]),
                 _f(r["first_p50"]), _f(r["first_p95"]), f"{r['no_partial']}/{r['utterances']}",
                 _f(r["final_p50"]), _f(r["final_p95"]), _f(r["final_max"]), _f(100 * r["wer"], 1) + "%",
                 _f(r["cpu_per_audio_s"]), f"{r['client_cpu_pct']:.0f}", f"{r['other_cpu_pct']:.0f}"])


async def bench_design(design: str, tree: Path, ns: list[int], recordings: list[Recording], args,
                       logdir: Path) -> dict:
    extra = ["--whisper-partials", "redecode"]
    server = Server(tree, logdir / f"{design}.log", extra)
    began = time.monotonic()
    try:
        if not await trio.to_thread.run_sync(server.wait_ready, 180.0):
            print(f"{design}: the server did not start; log: {logdir / f'{design}.log'}", flush=True)
            return {"rows": [], "file": [], "error": "did not start"}
        print(f"{design}: server ready in {time.monotonic() - began:.1f} s ({tree})", flush=True)
        rows, knee = [], None
        for n in ns:
            share = NEW_SHARE if design == "new" and len(args.old_ns) else 1.0
            if time.monotonic() - STARTED + args.seconds + 20 > args.time_limit * share:
                print(f"{design}: N={n} and beyond skipped: --time-limit {args.time_limit:g} s", flush=True)
                break
            row = await real_time_row(server, n, recordings, args)
            rows.append(row)
            print(format_row(design, row), flush=True)
            for f in row["failures"]:
                print(f"    {f}", flush=True)
            if row["final_p95"] > LAG_LIMIT or math.isnan(row["final_p95"]):
                knee = n
                break
        files = []
        for partials in (True, False):
            if time.monotonic() - STARTED > args.time_limit:
                print(f"{design}: file mode skipped: --time-limit {args.time_limit:g} s", flush=True)
                break
            if args.file_recordings:
                files.append(await file_mode(server, recordings[:args.file_recordings], partials, args))
        return {"rows": rows, "knee": knee, "file": files}
    finally:
        server.stop()


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


async def amain(args) -> int:
    recordings = load_recordings()
    total = sum(r.seconds for r in recordings)
    print(f"{len(recordings)} recordings ({total:.0f} s, {sum(len(normalize(r.text)) for r in recordings)} "
          f"reference words); {args.chunk_ms:g} ms chunks; each client streams {args.seconds:g} s; load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}; {os.cpu_count()} cores")
    print(f"final lag after the words end (target p95 <= {ENDPOINTING + 0.3:.2f} s); first partial after speech "
          f"starts (target p95 <= 1.0 s); part/s per second of speech; cpu/s: server CPU-s per audio-s; "
          f"cli%/oth%: this client / other processes, % of one core")
    print(line([c for c, _ in COLUMNS]), flush=True)
    logdir = Path(tempfile.mkdtemp(prefix="bench-streaming-"))
    results = {}
    try:
        designs = []
        if args.new_ns:
            designs.append(("new", ROOT, _ints(args.new_ns)))
        if args.old_ns:
            designs.append(("old", export_tree(args.baseline_rev, logdir / "old-tree"), _ints(args.old_ns)))
        for design, tree, ns in designs:
            results[design] = await bench_design(design, tree, ns, recordings, args, logdir)
    finally:
        print(f"server logs: {logdir}")
    print()
    print("summary:")
    for design, res in results.items():
        rows = res.get("rows", [])
        if not rows:
            continue
        knee = res.get("knee")
        tried = max(r["n"] for r in rows)
        ok = [r for r in rows if r["fail"] == 0 and r["partials_per_speech_s"] >= 1.0 and r["first_p95"] <= 1.0
              and r["final_p95"] <= ENDPOINTING + 0.3]
        print(f"  {design}: knee (first N with p95 final lag > {LAG_LIMIT:g} s): "
              f"{knee if knee is not None else f'> {tried}'}; most streams meeting every target (>= 1 part/s, "
              f"first p95 <= 1.0 s, final p95 <= {ENDPOINTING + 0.3:.2f} s, no failure): "
              f"{max((r['n'] for r in ok), default=0)}; WER at N={rows[0]['n']}: {_f(100 * rows[0]['wer'], 1)}% "
              f"({rows[0]['wer_errors']}/{rows[0]['wer_words']})")
        for f in res.get("file", []):
            print(f"  {design} file mode, partials {'on ' if f['partials'] else 'off'}: {f['audio_s']:.0f} s of "
                  f"audio in {f['wall_s']:.1f} s; {_f(f['partials_per_audio_s'])} partials per s of audio "
                  f"({f['no_partial']}/{f['utterances']} utterances without); final after its audio was sent "
                  f"p50 {_f(f['sent_lag_p50'])} / p95 {_f(f['sent_lag_p95'])} s; fail {f['fail']}; WER "
                  f"{_f(100 * f['wer'], 1)}%")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--new-ns", default="1,4,8,12,16", help="N for the new design (stops after the knee); '' skips")
    p.add_argument("--old-ns", default="1,2,4,6", help="N for the old design (stops after the knee); '' skips")
    p.add_argument("--baseline-rev", default=BASELINE_REV, help="git revision of the old design")
    p.add_argument("--seconds", type=float, default=30.0, help="audio each client streams per row")
    p.add_argument("--chunk-ms", type=float, default=100.0)
    p.add_argument("--stagger", type=float, default=2.0)
    p.add_argument("--max-delay", type=float, default=None, help="transcription_config.max_delay (default: the "
                   "dialect's)")
    p.add_argument("--file-recordings", type=int, default=6, help="recordings sent in file mode per design (0: none)")
    p.add_argument("--file-window", type=int, default=10, help="file mode: chunks unacknowledged at most")
    p.add_argument("--time-limit", type=float, default=560.0, help="start no real-time row after this many seconds "
                   "of the run (the new design's rows stop at 55 %% of it when the old design runs after them)")
    p.add_argument("--json", type=Path)
    return trio.run(amain, p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
