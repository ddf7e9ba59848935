"""End to end: a VoiceRun client written from the vendor's documents (docs.voicerun.com/voicerun-transcribe:
overview, message reference, Python example; protocols.md §5) streams real speech to the server with the real
recognizer, and reads what a VoiceRun client reads."""

import base64
import json
import re
import wave

import numpy as np
import pytest
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from stt.engines.base import StreamSettings
from stt.events import Final
from stt.wer import wer
from tests.helpers import DATA, GAP_RECORDING, GAP_SPEECH, REFERENCES, running_server, wait_until

API_KEY = "vr-test-key"
CHUNK = 640  # 20 ms of PCM16 at 16 kHz, as the vendor's example sends
SPEEDUP = 10  # the vendor's example paces chunks in real time; ten times faster keeps the tests short


def pcm16(name: str) -> bytes:
    with wave.open(str(DATA / name)) as f:
        assert (f.getnchannels(), f.getsampwidth(), f.getframerate()) == (1, 2, 16000)
        return f.readframes(f.getnframes())


async def transcribe(port: int, audio: bytes) -> tuple[list[dict], int]:
    """The vendor's flow: connect with a Bearer key, read session.created, send session.update and wait for
    session.updated, stream base64 audio.append in 20 ms chunks while reading events, then session.close and
    read until the server closes. Returns every message and the close code."""
    received: list[dict] = []
    async with open_websocket_url(f"ws://127.0.0.1:{port}/ws",
                                  extra_headers=[("Authorization", f"Bearer {API_KEY}")]) as ws:
        received.append(json.loads(await ws.get_message()))
        await ws.send_message(json.dumps({"type": "session.update", "session": {
            "model": "nova-3", "provider": "DEEPGRAM", "language": "en", "input_audio_format": "pcm16",
            "sample_rate": 16000}}))
        received.append(json.loads(await ws.get_message()))
        assert received[-1]["type"] == "session.updated"

        async def send_audio():
            for i in range(0, len(audio), CHUNK):
                chunk = base64.b64encode(audio[i:i + CHUNK]).decode()
                await ws.send_message(json.dumps({"type": "audio.append", "audio": chunk}))
                await trio.sleep(0.02 / SPEEDUP)
            await ws.send_message(json.dumps({"type": "session.close"}))

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(send_audio)
                try:
                    while True:
                        received.append(json.loads(await ws.get_message()))
                except ConnectionClosed as exc:
                    code = exc.reason.code
    return received, code


def batch_transcript(audio: bytes) -> str:
    """The same engine, in this process, on the whole recording at once."""
    from stt.engines.sphinx import SphinxRecognizer

    recognizer = SphinxRecognizer(StreamSettings())
    try:
        results = recognizer.feed(np.frombuffer(audio, dtype="<i2")) + recognizer.finish()
    finally:
        recognizer.close()
    return " ".join(w.text for r in results if isinstance(r, Final) for w in r.words)


@pytest.mark.parametrize("name", ["ps_goforward.wav", "ps_librivox_0880.wav"])
async def test_vendor_flow_transcribes_real_speech(name):
    audio = pcm16(name)
    async with running_server(engine="sphinx", decode_workers=1, api_keys=(API_KEY,)) as server:
        messages, code = await transcribe(server.port, audio)
        await wait_until(lambda: server.endings[("voicerun", "normal", "LC-END-001")] == 1)
    kinds = [m["type"] for m in messages]
    text = " ".join(m["text"] for m in messages if m["type"] == "transcription.completed").strip()
    reference = REFERENCES[name]
    offline = await trio.to_thread.run_sync(batch_transcript, audio)
    print(f"{name}: WER {wer(reference, text):.3f} (offline {wer(reference, offline):.3f}): {text!r}; {kinds}")

    # The exchange, in the documented order, and nothing the documents do not name.
    assert kinds[:2] == ["session.created", "session.updated"] and kinds[-1] == "session.closed" and code == 1000
    assert set(kinds[2:-1]) <= {"speech.started", "speech.stopped", "transcription.partial",
                                "transcription.completed"}
    assert all(isinstance(m["text"], str) for m in messages if m["type"].startswith("transcription."))

    # Partials come while the audio streams, before the completed text of their utterance; a completed text is
    # final: the next transcription event starts a new utterance, and none is left open at the end.
    transcriptions = [m for m in messages if m["type"].startswith("transcription.")]
    assert transcriptions and transcriptions[-1]["type"] == "transcription.completed"
    assert kinds.index("transcription.partial") < kinds.index("transcription.completed")
    utterances, current = [], []
    for m in transcriptions:
        current.append(m)
        if m["type"] == "transcription.completed":
            utterances.append(current)
            current = []
    assert current == []
    assert all(u[-1]["text"] for u in utterances if len(u) == 1)  # a completed without partials says something

    # Accuracy: as good as the same engine on the whole file, and WER at most 0.5.
    assert wer(reference, text) <= 0.5
    assert wer(reference, text) <= 1.1 * wer(reference, offline) + 1e-9

    # Voice activity brackets every completed transcript: speech.started before its first partial,
    # speech.stopped after it, in pairs.
    speech = [k for k in kinds if k.startswith("speech.")]
    assert speech and speech == ["speech.started", "speech.stopped"] * (len(speech) // 2)
    inside = False
    for m in messages:
        if m["type"] == "speech.started":
            inside = True
        elif m["type"] == "speech.stopped":
            inside = False
        elif m["type"].startswith("transcription.") and m["text"]:
            assert inside, f"{m} outside speech.started/speech.stopped"


async def test_speech_events_frame_each_sentence_of_the_recording_with_known_silences():
    """Three sentences separated by 1.85 s and 2.38 s of faint noise: three speech.started/stopped pairs, each
    around the completed text of its sentence (VoiceRun's speech events carry no time; YourVoic's tests check
    the times on the same recording)."""
    async with running_server(engine="sphinx", decode_workers=1, api_keys=(API_KEY,)) as server:
        messages, code = await transcribe(server.port, pcm16(GAP_RECORDING))
    kinds = [m["type"] for m in messages if m["type"] != "transcription.partial"]
    assert code == 1000
    # Each sentence: speech.started, transcription.completed (more than one when the sentence is longer than
    # the engine's max_delay, 4 s), speech.stopped.
    sentence = r"speech\.started (transcription\.completed )+speech\.stopped "
    assert re.fullmatch(sentence * len(GAP_SPEECH), " ".join(kinds[2:-1]) + " "), kinds
