"""Shared test helpers: a server on port 0 and a Speechmatics client speaking raw frames."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import numpy as np
import trio
import trio_websocket
import trio.testing
from trio_websocket import ConnectionClosed, open_websocket_url

from stt.conformance.checks import modes_with_reports
from stt.engines.inline_host import InlineEngine
from stt.engines.scripted import ScriptedRecognizer
from stt.server import Server, open_server
from stt.session import SessionLimits
from stt.settings import ServerConfig

#: The recordings in tests/data, and their reference transcripts (refs.tsv: id, file, category, source,
#: confidence, text).
DATA = Path(__file__).resolve().parent / "data"
REF_ROWS = [line.split("\t") for line in (DATA / "refs.tsv").read_text().splitlines()[1:]]
REFERENCES = {row[1]: row[5].strip() for row in REF_ROWS}

# --- the recording with known silences, for voice-activity tests ---------------------------------------------

GAP_RECORDING = "synth_vad_gaps.wav"  # 1 s silence, sentence, 1.5 s, sentence, 2 s, sentence, 1 s; faint white noise

# The sentences' true (start, end) in seconds, measured once from the waveform (tests/engines/test_vad.py
# re-measures them): RMS in 1 ms frames, in dB, against the noise floor (the median over the first 0.9 s,
# which is silence: 14.5 dB, an RMS of 5.4); speech is every frame more than 10 dB above the floor, and a
# sentence ends where more than 0.5 s without such a frame follows. The edges are sharp: thresholds from 6 to
# 20 dB move no boundary by more than 1 ms. The gaps are longer than the silences the file was made with
# (1.85 s, 2.38 s), since espeak-ng pads each sentence with its own silence.
GAP_SPEECH = [(1.013, 3.757), (5.604, 9.874), (12.257, 16.400)]
GAP_TOLERANCE = 0.1  # the requirement: events within 100 ms of the true boundaries (measured: 26 ms)


START = {
    "message": "StartRecognition",
    "audio_format": {"type": "raw", "encoding": "pcm_s16le", "sample_rate": 16000},
    "transcription_config": {"language": "en"},
}


def start_message(partials: bool = False, **audio_format) -> str:
    msg = json.loads(json.dumps(START))
    msg["audio_format"].update(audio_format)
    if partials:
        msg["transcription_config"]["enable_partials"] = True
    return json.dumps(msg)


def silence(seconds: float, rate: int = 16000) -> bytes:
    return np.zeros(int(seconds * rate), dtype="<i2").tobytes()


def frames_of(data: bytes, size: int = 640) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


@asynccontextmanager
async def running_server(engine: str = "scripted", **config):
    limits = config.pop("limits", SessionLimits())
    server_config = ServerConfig(port=0, engine=engine, limits=limits, **config)
    async with open_server(server_config, modes_with_reports(server_config)) as server:
        yield server


@asynccontextmanager
async def connect(server, path: str = "/v2", headers=()):
    async with open_websocket_url(f"ws://127.0.0.1:{server.port}{path}", extra_headers=list(headers)) as ws:
        yield ws


async def connect_in_memory(server: Server, nursery: trio.Nursery, path: str = "/v2"):
    """A client WebSocket on an in-memory stream whose other end `server.handle` serves, in `nursery` (no
    listener: for tests with autojump_clock, whose virtual time sockets do not follow)."""
    client_stream, server_stream = trio.testing.memory_stream_pair()

    async def serve_one():
        await server.handle(await trio_websocket.wrap_server_stream(nursery, server_stream))

    nursery.start_soon(serve_one)
    return await trio_websocket.wrap_client_stream(nursery, client_stream, "localhost", path)


async def receive_all(ws, until: str | None = None) -> tuple[list[dict], int | None]:
    """Messages until `until` arrives (then stop) or the server closes (then also its close code)."""
    received = []
    try:
        while True:
            msg = json.loads(await ws.get_message())
            received.append(msg)
            if msg["message"] == until:
                return received, None
    except ConnectionClosed as exc:
        return received, exc.reason.code


def kinds(messages: list[dict]) -> list[str]:
    return [m["message"] for m in messages]


def gone(pid: int) -> bool:
    """No process has this pid any more."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


async def wait_until(predicate, timeout: float = 5.0) -> None:
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.01)


def encode_audio(samples: np.ndarray, rate: int, container: str, codec: str, *, codec_rate: int | None = None,
                 bit_rate: int | None = None, layout: str = "mono") -> bytes:
    """int16 samples (n,) or (n, channels) at `rate` -> the bytes of a file, encoded with PyAV (FFmpeg).

    codec_rate resamples for codecs that need it (Opus 48 kHz, AMR-NB 8 kHz)."""
    import io

    import av

    samples = np.asarray(samples, dtype=np.int16)
    packed = samples.reshape(1, -1)  # s16 is packed: channels interleaved in one row
    out_rate = codec_rate or rate
    buf = io.BytesIO()
    with av.open(buf, "w", format=container) as output:
        stream = output.add_stream(codec, rate=out_rate)
        stream.layout = layout
        if bit_rate:
            stream.bit_rate = bit_rate
        frame = av.AudioFrame.from_ndarray(packed, format="s16", layout=layout)
        frame.sample_rate = rate
        resampler = av.AudioResampler(format=stream.codec_context.format, layout=layout, rate=out_rate)
        for resampled in [*resampler.resample(frame), *resampler.resample(None)]:
            output.mux(stream.encode(resampled))
        output.mux(stream.encode(None))
    return buf.getvalue()


def feed_in_chunks(decoder, data: bytes, sizes: list[int]) -> np.ndarray:
    """Feed `data` to an audio decoder in chunks of the given sizes, in turn, then finish; the samples, joined
    along time (the last axis: mono is 1-D, split channels 2-D)."""
    out, i, k = [], 0, 0
    while i < len(data):
        n = sizes[k % len(sizes)]
        out.append(decoder.decode(data[i:i + n]))
        i, k = i + n, k + 1
    out.append(decoder.finish())
    out = [o for o in out if o.shape[-1]]
    return np.concatenate(out, axis=-1) if out else np.zeros(0, np.int16)


@contextmanager
def serve_directory(root) -> Iterator[str]:
    """An HTTP server on 127.0.0.1 serving the files in `root`, in a thread; yields its base URL."""
    import functools
    import http.server
    import threading

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        thread.join()


@asynccontextmanager
async def session_pair(engine=None, limits=SessionLimits(), streams=None, path="/v2", **config):
    """A Server (no listener) handling one in-memory connection; yields (server, client websocket).
    `streams` is a (client, server) stream pair; by default an unbounded in-memory one."""
    engine = engine or InlineEngine("scripted", 16000, ScriptedRecognizer)
    server_config = ServerConfig(limits=limits, **config)
    server = Server(server_config, engine, modes_with_reports(server_config))
    client_stream, server_stream = streams or trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:

        async def serve_one():
            request = await trio_websocket.wrap_server_stream(nursery, server_stream)
            await server.handle(request)

        nursery.start_soon(serve_one)
        ws = await trio_websocket.wrap_client_stream(nursery, client_stream, "localhost", path)
        yield server, ws
        await ws.aclose()
        nursery.cancel_scope.cancel()


def flac_of_silence(seconds: float, rate: int = 16000) -> bytes:
    """A FLAC of 16-bit mono silence, made with PyAV: it compresses about 5000 to 1 (90 minutes: 990 KB)."""
    import io

    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="flac") as out:
        stream = out.add_stream("flac", rate=rate)
        stream.layout = "mono"
        block = np.zeros((1, rate * 10), np.int16)
        for n in range(0, int(seconds * rate), block.shape[1]):
            frame = av.AudioFrame.from_ndarray(block, format="s16", layout="mono")
            frame.sample_rate, frame.pts = rate, n
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()
