"""Deepgram's own Python SDK (deepgram-sdk, pinned in the test extra), unmodified, against `stt serve` as a user
starts it, with the real recognizer on real speech: the SDK is the judge of compatibility. Its sync client runs
on websockets' threads, its async client on asyncio (asyncio.run in a plain test, beside trio)."""

from __future__ import annotations

import asyncio
import threading
import wave

import pytest

pytest.importorskip("deepgram")

from deepgram import AsyncDeepgramClient, DeepgramClient  # noqa: E402
from deepgram.environment import DeepgramClientEnvironment  # noqa: E402
from deepgram.listen.v1.types import (  # noqa: E402
    ListenV1Metadata,
    ListenV1Results,
    ListenV1SpeechStarted,
    ListenV1UtteranceEnd,
)

from stt.wer import wer  # noqa: E402
from tests.helpers import DATA, REFERENCES  # noqa: E402
from tests.serve_process import stt_serve  # noqa: E402
from tests.test_voicerun_end_to_end import batch_transcript  # noqa: E402

KEY = "dg-test-key"
CHUNK = 3200  # 100 ms of linear16 at 16 kHz
TIMEOUT = 60.0  # seconds a whole session may take


def pcm16(name: str) -> bytes:
    with wave.open(str(DATA / name)) as f:
        assert (f.getnchannels(), f.getsampwidth(), f.getframerate()) == (1, 2, 16000)
        return f.readframes(f.getnframes())


@pytest.fixture(scope="module")
def server():
    with stt_serve("--engine", "sphinx", "--api-key", KEY) as running:
        yield running


def environment(port: int) -> DeepgramClientEnvironment:
    return DeepgramClientEnvironment(base=f"http://127.0.0.1:{port}", production=f"ws://127.0.0.1:{port}",
                                     agent=f"ws://127.0.0.1:{port}", agent_rest=f"http://127.0.0.1:{port}")


OPTIONS = dict(model="nova-3", encoding="linear16", sample_rate="16000", interim_results="true",
               vad_events="true", utterance_end_ms="1000", punctuate="true")


def final_words(messages) -> str:
    """The recognizer's words of the final Results, in order (`word`: unformatted)."""
    return " ".join(w.word for m in messages if isinstance(m, ListenV1Results) and m.is_final
                    for w in m.channel.alternatives[0].words)


def check_session(messages, audio: bytes, name: str) -> None:
    kinds = [type(m).__name__ for m in messages]
    assert None not in messages, f"a message the SDK does not know: {kinds}"
    results = [m for m in messages if isinstance(m, ListenV1Results)]
    assert any(not r.is_final for r in results), "no interim Results"
    assert any(r.is_final and r.speech_final for r in results), "no speech_final Results"
    assert any(isinstance(m, ListenV1SpeechStarted) for m in messages), kinds
    assert any(isinstance(m, ListenV1UtteranceEnd) for m in messages), kinds
    assert isinstance(messages[-1], ListenV1Metadata), kinds
    assert messages[-1].duration == pytest.approx(len(audio) / 32000, abs=0.01)
    text = final_words(messages)
    offline = batch_transcript(audio)
    reference = REFERENCES[name]
    print(f"{name}: WER {wer(reference, text):.3f} (offline {wer(reference, offline):.3f}): {text!r}")
    assert wer(reference, text) <= 1.1 * wer(reference, offline) + 1e-9
    punctuated = " ".join(r.channel.alternatives[0].transcript for r in results if r.is_final and
                          r.channel.alternatives[0].transcript)
    assert punctuated[:1].isupper() and punctuated.endswith(".")


def test_the_sync_client_streams_speech_and_gets_every_result_type_then_metadata_and_the_close(server):
    audio = pcm16("ps_goforward.wav")
    client = DeepgramClient(api_key=KEY, environment=environment(server["port"]))
    messages: list = []
    with client.listen.v1.connect(**OPTIONS) as socket:
        reader = threading.Thread(target=lambda: messages.extend(socket), daemon=True)
        reader.start()
        for i in range(0, len(audio), CHUNK):
            socket.send_media(audio[i:i + CHUNK])
        socket.send_keep_alive()
        socket.send_close_stream()
        reader.join(TIMEOUT)
        assert not reader.is_alive(), "the server did not close after CloseStream"
    check_session(messages, audio, "ps_goforward.wav")


def test_the_async_client_streams_speech_finalizes_and_closes(server):
    audio = pcm16("ps_goforward.wav")

    async def session():
        client = AsyncDeepgramClient(api_key=KEY, environment=environment(server["port"]))
        messages: list = []
        async with client.listen.v1.connect(**OPTIONS) as socket:
            async def read():
                async for message in socket:
                    messages.append(message)

            reader = asyncio.ensure_future(read())
            for i in range(0, len(audio), CHUNK):
                await socket.send_media(audio[i:i + CHUNK])
            await socket.send_finalize()
            await socket.send_close_stream()
            await asyncio.wait_for(reader, TIMEOUT)
        return messages

    messages = asyncio.run(session())
    results = [m for m in messages if isinstance(m, ListenV1Results) and m.is_final]
    assert results and isinstance(messages[-1], ListenV1Metadata)
    text = final_words(messages)
    assert wer(REFERENCES["ps_goforward.wav"], text) <= 1.1 * wer(REFERENCES["ps_goforward.wav"],
                                                                  batch_transcript(audio)) + 1e-9


def test_a_bad_key_is_refused_at_the_upgrade_with_401_and_dg_error(server):
    import websockets

    client = DeepgramClient(api_key="wrong", environment=environment(server["port"]))
    with pytest.raises(Exception) as refused:
        with client.listen.v1.connect(**OPTIONS):
            pass
    status = getattr(refused.value, "status_code", None) or getattr(getattr(refused.value, "response", None),
                                                                    "status_code", None)
    assert status == 401, repr(refused.value)

    async def raw():  # the header the SDK does not surface, read with the websockets it brings
        try:
            async with websockets.connect(f"ws://127.0.0.1:{server['port']}/v1/listen?model=nova-3",
                                          additional_headers={"Authorization": "Token wrong"}):
                pass
        except websockets.InvalidStatus as exc:
            return exc.response
    response = asyncio.run(raw())
    assert response.status_code == 401 and response.headers["dg-error"]


def test_a_bad_option_is_refused_with_400_naming_it(server):
    import websockets

    async def raw():
        try:
            async with websockets.connect(f"ws://127.0.0.1:{server['port']}/v1/listen?model=nova-3&encoding=linear16",
                                          additional_headers={"Authorization": f"Token {KEY}"}):
                pass
        except websockets.InvalidStatus as exc:
            return exc.response
    response = asyncio.run(raw())
    assert response.status_code == 400 and "sample_rate" in response.headers["dg-error"]


def test_the_browser_form_of_the_key_is_accepted_and_its_subprotocol_answered(server):
    import websockets

    async def raw():
        async with websockets.connect(f"ws://127.0.0.1:{server['port']}/v1/listen?{'&'.join(f'{k}={v}' for k, v in OPTIONS.items())}",
                                      subprotocols=["token", KEY]) as ws:
            await ws.send(pcm16("ps_goforward.wav")[:CHUNK * 10])
            await ws.send('{"type":"CloseStream"}')
            frames = [frame async for frame in ws]
            return ws.subprotocol, frames, ws.close_code
    subprotocol, frames, code = asyncio.run(raw())
    assert subprotocol == "token" and code == 1000 and '"type":"Metadata"' in frames[-1]
