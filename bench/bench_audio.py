#!/usr/bin/env python
"""Audio decode + resample throughput per input format, in multiples of real time on one core.

    .venv/bin/python bench/bench_audio.py [--repeat 5] [--seconds 30] [--frame-ms 100]
                                          [--formats s16le-16k,mp3-16k,...] [--json FILE|-]

What it measures: stt.audio's whole client-bytes -> engine-samples path, `open_decoder(fmt, 16000)` then
`decode(frame)` for every frame and `finish()` (the `with` block: the decoder is opened and closed inside the
timing), for each format a client may send. The input is real speech: the tests/data clips (librivox 0870 and
0880, goforward; 16 kHz mono s16) concatenated and looped to `--seconds` (30 s). From it the bench builds:
  raw      s16le at 16 kHz (the passthrough), s16le at 8, 44.1 and 48 kHz (resampled with soxr first), stereo
           s16le at 48 kHz, f32le at 16 kHz, mu-law and A-law at 8 kHz (companded here with numpy)
  wav      16 kHz s16 WAV (stt.audio.wav, no FFmpeg)
  FFmpeg   encoded here with PyAV: MP3 (libmp3lame, 32 kb/s), FLAC, Ogg Opus at 48 kHz (libopus, 24 kb/s),
           AAC in ADTS (32 kb/s), M4A (AAC in MP4, moov at the end), AMR-NB at 8 kHz (libopencore_amrnb,
           12.2 kb/s), WebM Opus at 48 kHz; all sent as AudioFormat("file"), so the container is sniffed.
Each is fed in the frames a real-time client would send: `--frame-ms` (100 ms) of that format's bytes; for a
compressed file, total bytes * frame / duration (what an average frame of it holds).

Reported per format (median over `--repeat` runs; the runs of all formats are interleaved, after one
unmeasured warm-up run of each):
  audio s   seconds of input audio;  out s: seconds of 16 kHz output (codec priming/padding shows here)
  wall      time.perf_counter() over the run;  xRT = audio seconds / wall seconds (100 = 100x real time);
            best xRT: the same for the fastest run (less noise on a shared machine)
  cpu       time.process_time() over the run;  cpu xRT likewise. process_time counts every thread of the
            process, and the FFmpeg containers decode in a helper thread (stt.audio.container), so their CPU is
            in it; wall also includes the hand-offs to that thread and whatever else the machine ran.
  first     seconds of audio that had been fed when decode() first returned samples: which containers stream.
            "end" means nothing came out before finish() (MP4 is decoded whole).
The process pins itself to one core (os.sched_setaffinity) unless --no-pin, so the decoder thread shares that
core with the caller: that is what "one core" means here. The benchmark measures and prints; it asserts nothing.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import time
import wave
from pathlib import Path

import av
import numpy as np
import soxr

from stt.audio import open_decoder
from stt.audio.pcm import ALAW_TO_LINEAR, MULAW_TO_LINEAR
from stt.events import AudioFormat

ROOT = Path(__file__).resolve().parent.parent
CLIPS = [ROOT / "tests" / "data" / name for name in ("ps_librivox_0870.wav", "ps_librivox_0880.wav",
                                                         "ps_goforward.wav")]
RATE = 16000  # the clips' rate, and the engine's (the decoders' target)


# --- inputs -----------------------------------------------------------------------------------------------------

def load_speech(seconds: float) -> np.ndarray:
    """The clips concatenated and looped to `seconds`: float32 mono at 16 kHz."""
    parts = []
    for path in CLIPS:
        with wave.open(str(path), "rb") as w:
            assert w.getframerate() == RATE and w.getnchannels() == 1 and w.getsampwidth() == 2, "need 16 kHz mono s16"
            parts.append(np.frombuffer(w.readframes(w.getnframes()), "<i2"))
    pcm = np.concatenate(parts)
    total = int(round(seconds * RATE))
    return np.resize(pcm, total).astype(np.float32) / 32768.0


def to_s16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x * 32768.0), -32768, 32767).astype(np.int16)


def at_rate(x: np.ndarray, rate: int) -> np.ndarray:
    return x if rate == RATE else soxr.resample(x, RATE, rate, quality="HQ").astype(np.float32)


def compand(samples: np.ndarray, table: np.ndarray) -> bytes:
    """int16 -> G.711 bytes: for each sample, the byte whose decoded value (in `table`) is nearest."""
    order = np.argsort(table, kind="stable")
    values = table[order].astype(np.int32)
    v = samples.astype(np.int32)
    i = np.clip(np.searchsorted(values, v), 1, len(values) - 1)
    pick = np.where(v - values[i - 1] <= values[i] - v, i - 1, i)
    return order[pick].astype(np.uint8).tobytes()


def wav_bytes(samples: np.ndarray, rate: int) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.astype("<i2").tobytes())
    return buf.getvalue()


def encode(x: np.ndarray, container: str, codec: str, rate: int, bit_rate: int | None) -> bytes:
    """Mono float32 at 16 kHz -> a compressed file, encoded by PyAV at `rate` (resampled with soxr first)."""
    samples = to_s16(at_rate(x, rate))
    buf = io.BytesIO()
    with av.open(buf, "w", format=container) as out:
        options = {"layout": "mono"}
        if bit_rate:
            options["bit_rate"] = bit_rate
        stream = out.add_stream(codec, rate=rate, **options)
        step = 4096
        for i in range(0, len(samples), step):
            frame = av.AudioFrame.from_ndarray(samples[None, i:i + step], format="s16", layout="mono")
            frame.sample_rate = rate
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


# name -> (what, how to build (bytes, AudioFormat, source rate, source channels, raw bytes per second or None))
def _raw(encoding: str, rate: int, channels: int = 1):
    def build(x: np.ndarray):
        y = at_rate(x, rate)
        if encoding == "pcm_s16le":
            s = to_s16(y)
            data = (np.stack([s, to_s16(np.roll(y, rate // 10) * 0.5)], axis=1) if channels == 2 else s).tobytes()
        elif encoding == "pcm_f32le":
            data = y.astype("<f4").tobytes()
        else:
            data = compand(to_s16(y), MULAW_TO_LINEAR if encoding == "mulaw" else ALAW_TO_LINEAR)
        width = {"pcm_s16le": 2, "pcm_f32le": 4}.get(encoding, 1)
        return data, AudioFormat(encoding, rate, channels), rate, channels, rate * channels * width
    return build


def _wav(x: np.ndarray):
    return wav_bytes(to_s16(x), RATE), AudioFormat("file"), RATE, 1, None


def _file(container: str, codec: str, rate: int, bit_rate: int | None = None):
    def build(x: np.ndarray):
        return encode(x, container, codec, rate, bit_rate), AudioFormat("file"), rate, 1, None
    return build


FORMATS = {
    "s16le-16k": ("raw s16le 16 kHz (passthrough)", _raw("pcm_s16le", 16000)),
    "s16le-8k": ("raw s16le 8 kHz", _raw("pcm_s16le", 8000)),
    "s16le-44.1k": ("raw s16le 44.1 kHz", _raw("pcm_s16le", 44100)),
    "s16le-48k": ("raw s16le 48 kHz", _raw("pcm_s16le", 48000)),
    "s16le-48k-stereo": ("raw s16le 48 kHz stereo, mixed to mono", _raw("pcm_s16le", 48000, 2)),
    "f32le-16k": ("raw f32le 16 kHz", _raw("pcm_f32le", 16000)),
    "mulaw-8k": ("raw mu-law 8 kHz", _raw("mulaw", 8000)),
    "alaw-8k": ("raw A-law 8 kHz", _raw("alaw", 8000)),
    "wav-16k": ("WAV s16 16 kHz", _wav),
    "mp3-16k": ("MP3 16 kHz 32 kb/s", _file("mp3", "libmp3lame", 16000, 32000)),
    "flac-16k": ("FLAC 16 kHz", _file("flac", "flac", 16000)),
    "ogg-opus-48k": ("Ogg Opus 48 kHz 24 kb/s", _file("ogg", "libopus", 48000, 24000)),
    "aac-adts-16k": ("AAC (ADTS) 16 kHz 32 kb/s", _file("adts", "aac", 16000, 32000)),
    "m4a-16k": ("M4A (AAC in MP4) 16 kHz 32 kb/s", _file("mp4", "aac", 16000, 32000)),
    "amr-nb-8k": ("AMR-NB 8 kHz 12.2 kb/s", _file("amr", "libopencore_amrnb", 8000, 12200)),
    "webm-opus-48k": ("WebM Opus 48 kHz 24 kb/s", _file("webm", "libopus", 48000, 24000)),
}


def split(data: bytes, frame_bytes: int) -> list[bytes]:
    return [data[i:i + frame_bytes] for i in range(0, len(data), frame_bytes)]


# --- one run ----------------------------------------------------------------------------------------------------

def run_once(frames: list[bytes], fmt: AudioFormat, target_rate: int) -> dict:
    """Decode one stream; wall and CPU seconds of the whole `with` block, output samples, bytes fed before the
    first samples came out (None: only finish() gave any)."""
    fed, first_at, out = 0, None, 0
    c0, t0 = time.process_time(), time.perf_counter()
    with open_decoder(fmt, target_rate) as decoder:
        for frame in frames:
            fed += len(frame)
            n = len(decoder.decode(frame))
            if n and first_at is None:
                first_at = fed
            out += n
        out += len(decoder.finish())
        container = decoder.container
    t1, c1 = time.perf_counter(), time.process_time()
    return {"wall": t1 - t0, "cpu": c1 - c0, "out": out, "first_at": first_at, "container": container}


# --- output -----------------------------------------------------------------------------------------------------

COLUMNS = [("format", 16), ("container", 9), ("src", 9), ("KiB", 6), ("frame B", 7), ("audio s", 7), ("out s", 7),
           ("wall ms", 8), ("xRT", 7), ("best xRT", 8), ("cpu ms", 8), ("cpu xRT", 7), ("first s", 7)]


def header() -> str:
    return "  ".join(name.rjust(w) if i else name.ljust(w) for i, (name, w) in enumerate(COLUMNS))


def _x(x: float) -> str:
    return f"{x:.0f}" if x >= 100 else f"{x:.1f}"


def format_row(row: dict) -> str:
    src = f"{row['source_rate'] / 1000:g}k" + ("x2" if row["source_channels"] == 2 else "")
    first = "end" if row["first_output_s"] is None else f"{row['first_output_s']:.2f}"
    cells = [row["format"], row["container"] or "-", src, f"{row['bytes'] / 1024:.0f}", str(row["frame_bytes"]),
             f"{row['audio_s']:.2f}", f"{row['out_s']:.2f}", f"{row['wall_ms']:.1f}", _x(row["xrt"]), _x(row["best_xrt"]),
             f"{row['cpu_ms']:.1f}", _x(row["cpu_xrt"]), first]
    return "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, (_, w)) in enumerate(zip(cells, COLUMNS)))


# --- main -------------------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeat", type=int, default=5, help="measured runs per format (the median is reported)")
    p.add_argument("--seconds", type=float, default=30.0, help="input length: the tests/data clips looped to this")
    p.add_argument("--frame-ms", type=float, default=100.0,
                   help="frame size a real-time client sends, in ms of audio (compressed: of average bytes)")
    p.add_argument("--formats", default=",".join(FORMATS),
                   help=f"comma-separated subset of: {', '.join(FORMATS)}")
    p.add_argument("--target-rate", type=int, default=RATE, help="the decoders' output rate (the engine's)")
    p.add_argument("--no-pin", action="store_true", help="do not pin the process to one core")
    p.add_argument("--json", metavar="FILE", help="also write the rows as JSON here ('-': to stdout, no table)")
    args = p.parse_args(argv)
    names = [n.strip() for n in args.formats.split(",") if n.strip()]
    unknown = [n for n in names if n not in FORMATS]
    if unknown:
        p.error(f"unknown formats {unknown}; known: {', '.join(FORMATS)}")
    if args.repeat < 1 or args.seconds <= 0 or args.frame_ms <= 0:
        p.error("--repeat, --seconds and --frame-ms must be positive")
    quiet = args.json == "-"
    say = (lambda *a, **k: None) if quiet else print

    cores = os.cpu_count() or 1
    pinned = None
    if not args.no_pin and hasattr(os, "sched_setaffinity"):
        # Threads started later (the container decoder's, FFmpeg's own) inherit this: all share one core.
        pinned = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {pinned})

    speech = load_speech(args.seconds)
    audio_s = len(speech) / RATE
    frame_s = args.frame_ms / 1000.0
    t_build = time.perf_counter()
    inputs = {}
    for name in list(names):
        try:
            data, fmt, rate, channels, per_second = FORMATS[name][1](speech)
        except av.codec.codec.UnknownCodecError as exc:  # PyAV >= 18.1.1 wheels ship no AMR-NB encoder
            say(f"skipped {name}: this PyAV ({av.__version__}) has no encoder {exc}")
            names.remove(name)
            continue
        if per_second:
            frame_bytes = max(1, int(round(per_second * frame_s)))
        else:
            frame_bytes = max(1, int(round(len(data) * frame_s / audio_s)))
        inputs[name] = {"data": data, "format": fmt, "rate": rate, "channels": channels,
                        "frame_bytes": frame_bytes, "frames": split(data, frame_bytes)}
    build_s = time.perf_counter() - t_build

    say(f"cores: {cores}   pinned to: {'core ' + str(pinned) if pinned is not None else 'no'}   python: "
        f"{sys.version.split()[0]}   PyAV {av.__version__}   soxr {soxr.__version__}   numpy {np.__version__}")
    say(f"input: {', '.join(c.name for c in CLIPS)} looped to {audio_s:g} s; frames of {args.frame_ms:g} ms of "
        f"each format's bytes; output int16 mono at {args.target_rate} Hz; median of {args.repeat} runs "
        f"(inputs built in {build_s:.1f} s; load average {os.getloadavg()[0]:.2f})")
    say("xRT = audio seconds / wall seconds (x real time), median run and best run; cpu = process_time, which includes the container "
        "decoder thread; first s = audio fed before the first samples came out\n")

    t_start = time.perf_counter()
    for name in names:  # warm-up: imports, FFmpeg codec init, soxr tables
        run_once(inputs[name]["frames"], inputs[name]["format"], args.target_rate)
    runs = {name: [] for name in names}
    for _ in range(args.repeat):  # interleaved, so a burst of noise does not land on one format only
        for name in names:
            runs[name].append(run_once(inputs[name]["frames"], inputs[name]["format"], args.target_rate))

    say(header())
    rows = []
    for name in names:
        inp, rs = inputs[name], runs[name]
        wall = statistics.median(r["wall"] for r in rs)
        cpu = statistics.median(r["cpu"] for r in rs)
        best = min(r["wall"] for r in rs)
        first_at = rs[0]["first_at"]
        row = {
            "format": name, "description": FORMATS[name][0], "container": rs[0]["container"],
            "source_rate": inp["rate"], "source_channels": inp["channels"], "bytes": len(inp["data"]),
            "frame_bytes": inp["frame_bytes"], "frames": len(inp["frames"]), "audio_s": audio_s,
            "out_s": rs[0]["out"] / args.target_rate,
            "wall_ms": wall * 1000.0, "wall_ms_runs": [r["wall"] * 1000.0 for r in rs],
            "cpu_ms": cpu * 1000.0, "cpu_ms_runs": [r["cpu"] * 1000.0 for r in rs],
            "xrt": audio_s / wall if wall > 0 else float("inf"),
            "best_xrt": audio_s / best if best > 0 else float("inf"),
            "cpu_xrt": audio_s / cpu if cpu > 0 else float("inf"),
            "first_output_s": None if first_at is None else first_at / len(inp["data"]) * audio_s,
        }
        rows.append(row)
        say(format_row(row), flush=True)
    elapsed = time.perf_counter() - t_start
    say(f"\n(measured in {elapsed:.1f} s; load average after {os.getloadavg()[0]:.2f})")

    if args.json:
        doc = json.dumps({"cores": cores, "pinned_core": pinned, "seconds": audio_s, "frame_ms": args.frame_ms,
                          "repeat": args.repeat, "target_rate": args.target_rate, "av": av.__version__,
                          "elapsed_s": elapsed, "rows": rows}, indent=1)
        if quiet:
            print(doc)
        else:
            Path(args.json).write_text(doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
