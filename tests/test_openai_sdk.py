"""The vendor's own client, unmodified: the openai SDK (openai[realtime]) against a real `stt serve --engine sphinx`
subprocess on 127.0.0.1, on real speech (tests/data/ps_goforward.wav, resampled to the API's 24 kHz PCM16).

GA (client.realtime.connect with intent=transcription, session.update, commit) and beta (client.beta.realtime
.connect, the OpenAI-Beta header, transcription_session.update, server_vad) sessions: every result type arrives,
the transcript is the engine's own on the same audio, the session ends cleanly when the client closes; a bad key is
HTTP 401 at the upgrade, an intent other than transcription HTTP 400; OPENAI_BASE_URL alone redirects an unchanged
application; the browser's subprotocol form of the key is accepted with the subprotocol "realtime"."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
import textwrap
import time
import wave

import numpy as np
import pytest

openai = pytest.importorskip("openai")
websockets = pytest.importorskip("websockets")

from stt.audio import open_decoder  # noqa: E402
from stt.engines.base import StreamSettings  # noqa: E402
from stt.events import AudioFormat, Final  # noqa: E402
from tests.helpers import DATA  # noqa: E402
from tests.serve_process import stt_env, stt_serve  # noqa: E402

KEY = "sk-stt-openai-test"
RECORDING = "ps_goforward.wav"
CHUNK = 4800  # 100 ms of PCM16 at 24 kHz
TIMEOUT = 60.0  # seconds one SDK session may take in all
COMPLETED = "conversation.item.input_audio_transcription.completed"
DELTA = "conversation.item.input_audio_transcription.delta"


def pcm24k(name: str) -> bytes:
    """The recording (16 kHz) as the API takes it: PCM16 at 24 kHz."""
    import soxr

    with wave.open(str(DATA / name)) as f:
        assert (f.getnchannels(), f.getsampwidth(), f.getframerate()) == (1, 2, 16000)
        samples = np.frombuffer(f.readframes(f.getnframes()), dtype="<i2")
    resampled = soxr.resample(samples.astype(np.float32) / 32768, 16000, 24000)
    return (np.clip(resampled, -1, 1) * 32767).astype("<i2").tobytes()


def engine_transcript(audio: bytes, chunk: int = CHUNK) -> str:
    """The same engine, in this process, on the same audio as the server decodes it (24 kHz to 16 kHz, in the
    client's chunks): its finals joined."""
    from stt.engines.sphinx import SphinxRecognizer

    decoder = open_decoder(AudioFormat("pcm_s16le", 24000), 16000)
    recognizer = SphinxRecognizer(StreamSettings())
    results = []
    try:
        for i in range(0, len(audio), chunk):
            results += recognizer.feed(decoder.decode(audio[i:i + chunk]))
        results += recognizer.feed(decoder.finish()) + recognizer.finish()
    finally:
        recognizer.close()
    return " ".join(w.text for r in results if isinstance(r, Final) for w in r.words)


@pytest.fixture(scope="module")
def server():
    with stt_serve("--engine", "sphinx", "--decode-workers", "1", "--api-key", KEY) as running:
        yield running


@pytest.fixture(scope="module")
def audio():
    return pcm24k(RECORDING)


@pytest.fixture(scope="module")
def reference(audio):
    return engine_transcript(audio)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, TIMEOUT))


def endings(server, since: int = 0) -> list[dict]:
    """The server's log records of sessions closing (JSON log lines)."""
    out = []
    for line in server["lines"][since:]:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("dialect") == "openai" and "ending" in record:
            out.append(record)
    return out


def wait_for_endings(server, count: int, since: int = 0, timeout: float = 10.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while len(endings(server, since)) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return endings(server, since)


# --- GA -------------------------------------------------------------------------------------------------------


async def ga_session(port: int, audio: bytes) -> list:
    """The GA flow with turn detection off: session.update, the audio in 100 ms appends, commit, then events until
    the transcription is completed; the client closes (leaving the block)."""
    client = openai.AsyncOpenAI(api_key=KEY, websocket_base_url=f"ws://127.0.0.1:{port}/v1")
    events = []
    async with client.realtime.connect(extra_query={"intent": "transcription"}) as conn:
        await conn.session.update(session={
            "type": "transcription",
            "audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000},
                                "transcription": {"model": "gpt-4o-transcribe", "language": "en"},
                                "turn_detection": None}},
            "include": ["item.input_audio_transcription.logprobs"]})
        for i in range(0, len(audio), CHUNK):
            await conn.input_audio_buffer.append(audio=b64(audio[i:i + CHUNK]))
        await conn.input_audio_buffer.commit()
        async for event in conn:
            events.append(event)
            if event.type == COMPLETED:
                break
    return events


def test_ga_sdk_commits_the_audio_and_gets_committed_delta_and_the_engine_s_transcript(server, audio, reference):
    since = len(server["lines"])
    events = run(ga_session(server["port"], audio))
    kinds = [e.type for e in events]
    assert kinds[:2] == ["session.created", "session.updated"], kinds
    assert kinds[2:] == ["input_audio_buffer.committed", DELTA, COMPLETED], kinds
    created, updated, committed, delta, completed = events
    assert created.session.type == "transcription" and created.session.id.startswith("sess_")
    assert updated.session.audio.input.turn_detection is None
    assert committed.item_id == delta.item_id == completed.item_id and committed.previous_item_id is None
    assert reference and completed.transcript == reference == delta.delta
    assert [p.token.strip() for p in completed.logprobs] == reference.split()
    assert completed.usage.type == "tokens" and completed.usage.input_tokens > 0
    assert len({e.event_id for e in events}) == len(events)
    (ending,) = wait_for_endings(server, 1, since)
    assert ending["close_code"] == 1000 and ending["ending"] == "normal"  # the client closed: the normal end


# --- beta -----------------------------------------------------------------------------------------------------


async def beta_session(port: int, audio: bytes) -> list:
    """The beta flow with server_vad: transcription_session.update, the audio and a second of silence, then a
    commit (the item under way, if any) and a clear, whose cleared comes after everything before it."""
    client = openai.AsyncOpenAI(api_key=KEY, websocket_base_url=f"ws://127.0.0.1:{port}/v1")
    events = []
    async with client.beta.realtime.connect(model="gpt-4o-transcribe",
                                            extra_query={"intent": "transcription"}) as conn:
        await conn.transcription_session.update(session={
            "input_audio_format": "pcm16", "input_audio_transcription": {"model": "gpt-4o-transcribe"},
            "turn_detection": {"type": "server_vad", "silence_duration_ms": 500}})
        padded = audio + bytes(48000)
        for i in range(0, len(padded), CHUNK):
            await conn.input_audio_buffer.append(audio=b64(padded[i:i + CHUNK]))
        await conn.input_audio_buffer.commit()
        await conn.input_audio_buffer.clear()
        async for event in conn:
            events.append(event)
            if event.type == "input_audio_buffer.cleared":
                break
    return events


def test_beta_sdk_with_server_vad_gets_speech_events_deltas_and_items(server, audio, reference):
    events = run(beta_session(server["port"], audio))
    kinds = [e.type for e in events]
    assert kinds[:2] == ["transcription_session.created", "transcription_session.updated"], kinds
    assert {"input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
            "input_audio_buffer.committed", DELTA, COMPLETED} <= set(kinds), kinds
    assert kinds[-1] == "input_audio_buffer.cleared"
    assert events[1].session.turn_detection.silence_duration_ms == 500
    completed = [e for e in events if e.type == COMPLETED]
    committed = [e for e in events if e.type == "input_audio_buffer.committed"]
    assert [e.item_id for e in committed] == [e.item_id for e in completed]  # each item committed, then completed
    assert " ".join(e.transcript for e in completed if e.transcript) == reference
    started = [e for e in events if e.type == "input_audio_buffer.speech_started"]
    assert started[0].item_id == completed[0].item_id and started[0].audio_start_ms >= 0
    # Deltas stream the item's words before its completed (live ones, from partials, before its committed: how
    # many depends on how the engine batches the audio; a partial's last word is held back), each the words
    # added since the last (append-only: a space before every word but the item's first). The engine's partials
    # may still revise a word already sent ("forward can" then "ten years"): the completed transcript is the final.
    spoken = [item for item in completed if item.transcript]
    assert spoken
    for item in spoken:
        deltas = [e for e in events if e.type == DELTA and e.item_id == item.item_id]
        assert deltas and not deltas[0].delta.startswith(" ") and all(e.delta.startswith(" ") for e in deltas[1:])
        assert events.index(deltas[-1]) < events.index(item)


# --- refusals -------------------------------------------------------------------------------------------------


def test_a_bad_key_is_refused_with_http_401_at_the_upgrade(server):
    async def connect():
        client = openai.AsyncOpenAI(api_key="sk-wrong", websocket_base_url=f"ws://127.0.0.1:{server['port']}/v1")
        async with client.realtime.connect(extra_query={"intent": "transcription"}):
            pass

    with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
        run(connect())
    assert refused.value.response.status_code == 401


def test_an_intent_other_than_transcription_is_refused_with_http_400_saying_why(server):
    async def connect():
        client = openai.AsyncOpenAI(api_key=KEY, websocket_base_url=f"ws://127.0.0.1:{server['port']}/v1")
        async with client.realtime.connect(model="gpt-realtime", extra_query={"intent": "conversation"}):
            pass

    with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
        run(connect())
    assert refused.value.response.status_code == 400
    assert b"intent=transcription" in refused.value.response.body


# --- the browser's form of the key ----------------------------------------------------------------------------


def test_the_browser_subprotocol_key_is_accepted_with_the_subprotocol_realtime(server):
    from websockets.asyncio.client import connect

    url = f"ws://127.0.0.1:{server['port']}/v1/realtime?intent=transcription"

    async def greeted(key: str):
        async with connect(url, subprotocols=["realtime", f"openai-insecure-api-key.{key}"]) as ws:
            return ws.subprotocol, json.loads(await ws.recv())

    subprotocol, created = run(greeted(KEY))
    assert subprotocol == "realtime" and created["type"] == "session.created"
    with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
        run(greeted("sk-wrong"))
    assert refused.value.response.status_code == 401


# --- OPENAI_BASE_URL alone ------------------------------------------------------------------------------------

APP = textwrap.dedent('''
    """An application written for api.openai.com, unchanged: the key and the base URL come from the environment."""
    import asyncio, base64, json, sys

    from openai import AsyncOpenAI


    async def main(audio: bytes) -> None:
        client = AsyncOpenAI()
        async with client.realtime.connect(extra_query={"intent": "transcription"}) as conn:
            await conn.session.update(session={"type": "transcription",
                                               "audio": {"input": {"turn_detection": None}}})
            for i in range(0, len(audio), 4800):
                await conn.input_audio_buffer.append(audio=base64.b64encode(audio[i:i + 4800]).decode())
            await conn.input_audio_buffer.commit()
            async for event in conn:
                if event.type == "conversation.item.input_audio_transcription.completed":
                    print(json.dumps({"transcript": event.transcript}))
                    return


    asyncio.run(asyncio.wait_for(main(sys.stdin.buffer.read()), 60))
''')


def test_openai_base_url_alone_redirects_an_unchanged_application(server, audio, reference):
    env = {k: v for k, v in stt_env().items() if not k.startswith("OPENAI_")}
    env.update(OPENAI_API_KEY=KEY, OPENAI_BASE_URL=f"http://127.0.0.1:{server['port']}/v1")
    done = subprocess.run([sys.executable, "-c", APP], input=audio, capture_output=True, env=env, timeout=90)
    assert done.returncode == 0, done.stderr.decode()
    assert json.loads(done.stdout.decode().splitlines()[-1]) == {"transcript": reference}
