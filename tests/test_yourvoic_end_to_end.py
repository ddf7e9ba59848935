"""End to end: a YourVoic client written from the vendor's documents (query parameters on the URL, binary
audio frames, {"type":"close"}) streams real speech to the server with the real recognizer, in 20 ms frames
at about ten times real time, and reads every message until the server closes."""

import json
import wave
from urllib.parse import urlencode

import pytest
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from stt.text import format_numbers
from stt.wer import wer
from tests.helpers import DATA, GAP_RECORDING, GAP_SPEECH, GAP_TOLERANCE, REFERENCES, running_server, wait_until

FRAME = 640  # 20 ms of Linear16 PCM at 16 kHz
SPEED = 10  # times real time


def pcm(name: str) -> bytes:
    with wave.open(str(DATA / name)) as f:
        assert (f.getframerate(), f.getnchannels(), f.getsampwidth()) == (16000, 1, 2)
        return f.readframes(f.getnframes())


async def transcribe(port: int, audio: bytes, **params: str) -> tuple[list[dict], int]:
    """What the vendor's connection example does: open the URL with its parameters, send the audio as binary
    frames, then {"type":"close"}; meanwhile read every message. Returns the messages and the close code."""
    query = urlencode({"api_key": "YOUR_API_KEY", "model": "lucid-agent", **params})
    messages: list[dict] = []
    with trio.fail_after(60):
        async with open_websocket_url(f"ws://127.0.0.1:{port}/api/v1/stt/realtime/stream?{query}") as ws:

            async def send():
                for i in range(0, len(audio), FRAME):
                    await ws.send_message(audio[i:i + FRAME])
                    await trio.sleep(FRAME / 32000 / SPEED)
                await ws.send_message(json.dumps({"type": "close"}))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(send)
                try:
                    while True:
                        messages.append(json.loads(await ws.get_message()))
                except ConnectionClosed as exc:
                    return messages, exc.reason.code
    raise AssertionError("unreachable")


def transcripts(messages: list[dict]) -> list[dict]:
    return [m for m in messages if m["type"] == "transcript"]


def final_text(messages: list[dict]) -> str:
    return " ".join(m["text"] for m in transcripts(messages) if m["is_final"] and m["text"])


def check_interim_and_final_semantics(messages: list[dict], duration: float) -> None:
    said = transcripts(messages)
    assert said and said[-1]["is_final"], "the last transcript is a final"
    assert any(not m["is_final"] for m in said), "interims arrive while the audio streams"
    previous_end = 0.0
    for m in said:
        words = m["words"]
        assert all(m["start"] - 0.01 <= w["start"] <= w["end"] <= m["end"] + 0.01 for w in words)
        assert 0 <= m["start"] <= m["end"] <= duration + 0.05
        assert 0 <= m["confidence"] <= 1
        # An interim covers the utterance so far, after the last final; finals tile the speech in order.
        assert m["start"] >= previous_end - 0.01
        if m["is_final"]:
            previous_end = m["end"]


def check_voice_activity_order(messages: list[dict]) -> None:
    """speech_started comes before the transcripts of its utterance, speech_ended after its final; both in
    seconds of audio, around the words."""
    in_speech, started_at, final_since_start = False, None, False
    events = [m for m in messages if m["type"] in ("speech_started", "speech_ended")
              or (m["type"] == "transcript" and m["words"])]
    assert any(m["type"] == "speech_started" for m in events), "the engine reports voice activity"
    for m in events:
        if m["type"] == "speech_started":
            assert not in_speech, "speech_started twice without speech_ended"
            in_speech, started_at, final_since_start = True, m["timestamp"], False
        elif m["type"] == "speech_ended":
            assert in_speech and final_since_start, "speech_ended follows its utterance's final"
            assert m["timestamp"] >= started_at
            in_speech = False
        else:
            assert in_speech, f"transcript {m['text']!r} outside speech_started / speech_ended"
            assert m["words"][0]["start"] >= started_at - 0.35  # the detector decides a window late
            final_since_start |= m["is_final"]


@pytest.mark.parametrize("name", ["ps_librivox_0880.wav", "ps_goforward.wav"])
async def test_real_speech_streams_to_transcripts_within_05_wer(name):
    audio = pcm(name)
    duration = len(audio) / 32000
    async with running_server(engine="sphinx", decode_workers=1) as server:
        messages, code = await transcribe(server.port, audio, smart_format="false", punctuate="false")
        await wait_until(lambda: server.endings[("yourvoic", "normal", "LC-END-001")] == 1)
    text = final_text(messages)
    print(f"{name}: WER {wer(REFERENCES[name], text):.3f}: {text!r}")
    assert code == 1000
    assert wer(REFERENCES[name], text) <= 0.5
    check_interim_and_final_semantics(messages, duration)
    # Unformatted, the text is the recognizer's words.
    assert all(m["text"] == " ".join(w["word"] for w in m["words"]) for m in transcripts(messages))


@pytest.mark.parametrize("name", ["ps_librivox_0880.wav", "ps_goforward.wav"])
async def test_voice_activity_events_frame_each_utterance(name):
    async with running_server(engine="sphinx", decode_workers=1) as server:
        messages, code = await transcribe(server.port, pcm(name))
    assert code == 1000
    check_voice_activity_order(messages)


async def test_default_formatting_and_interim_results_off():
    """Defaults: smart_format and punctuate on. "go forward ten ..." is written "Go forward 10 ...", the
    words stay as recognised; with interim_results=false only finals arrive."""
    async with running_server(engine="sphinx", decode_workers=1) as server:
        messages, code = await transcribe(server.port, pcm("ps_goforward.wav"), interim_results="false")
    assert code == 1000
    said = transcripts(messages)
    assert said and all(m["is_final"] for m in said)
    text = final_text(messages)
    words = " ".join(w["word"] for m in said for w in m["words"])
    print(f"ps_goforward.wav formatted: {text!r} from {words!r}")
    assert text.startswith("Go forward 10 ") and text.endswith(".")
    for m in said:
        spoken = " ".join(w["word"] for w in m["words"])
        assert m["text"].rstrip(".").lower() == format_numbers(spoken).lower()


@pytest.mark.parametrize("endpointing, sentences", [("300", GAP_SPEECH), ("2100", [(1.013, 9.874), GAP_SPEECH[2]])])
async def test_speech_events_fall_on_the_known_silences(endpointing, sentences):
    """The recording with three sentences and silences of 1.85 s and 2.38 s: speech_started and speech_ended
    carry audio time within 100 ms of the true boundaries; endpointing=2100 (ms) joins the sentences around
    the shorter silence and not the longer one."""
    async with running_server(engine="sphinx", decode_workers=1) as server:
        messages, code = await transcribe(server.port, pcm(GAP_RECORDING), endpointing=endpointing)
    assert code == 1000
    check_voice_activity_order(messages)
    starts = [m["timestamp"] for m in messages if m["type"] == "speech_started"]
    ends = [m["timestamp"] for m in messages if m["type"] == "speech_ended"]
    assert len(starts) == len(ends) == len(sentences)
    for (start, end), (true_start, true_end) in zip(zip(starts, ends), sentences):
        assert abs(start - true_start) <= GAP_TOLERANCE and abs(end - true_end) <= GAP_TOLERANCE
