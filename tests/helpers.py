"""Shared test helpers: a server on port 0 and a Speechmatics client speaking raw frames."""

from __future__ import annotations

import json
from contextlib import asynccontextmanager

import numpy as np
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from stt.server import ServerConfig, open_server
from stt.session import SessionLimits

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
    async with open_server(ServerConfig(port=0, engine=engine, limits=limits, **config)) as server:
        yield server


@asynccontextmanager
async def connect(server, path: str = "/v2", headers=()):
    async with open_websocket_url(f"ws://127.0.0.1:{server.port}{path}", extra_headers=list(headers)) as ws:
        yield ws


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


async def wait_until(predicate, timeout: float = 5.0) -> None:
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.01)
