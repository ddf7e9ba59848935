"""End to end: a V-Blaze client written from the vendor's WebSocket example (seed 000 / websocket-example:
X-Voci-Datahdr: WAVE, the WAV file's bytes written in chunks, then an empty bytearray, then read until the
server closes) streams real speech to the server with the real recognizer."""

import io
import json
import wave

import numpy as np
import pytest
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from stt.wer import wer
from tests.helpers import DATA, GAP_RECORDING, GAP_SPEECH, REFERENCES, running_server, wait_until

CHUNK = 4096


async def transcribe(port: int, name: str | bytes, **tags: str) -> tuple[list[str | bytes], int]:
    """The vendor's example: tags as X-Voci-<Tag> headers, the file in chunks, an empty frame, read to the end.
    `name` is a file in tests/data, or the bytes of a WAV file."""
    headers = [("X-Voci-Datahdr", "WAVE")] + [(f"X-Voci-{tag.capitalize()}", value) for tag, value in tags.items()]
    audio = name if isinstance(name, bytes) else (DATA / name).read_bytes()
    messages: list[str | bytes] = []
    with trio.fail_after(120):
        async with open_websocket_url(f"ws://127.0.0.1:{port}/transcribe", extra_headers=headers) as ws:

            async def send():
                for i in range(0, len(audio), CHUNK):
                    await ws.send_message(audio[i:i + CHUNK])
                    await trio.sleep(0)
                await ws.send_message(bytes(bytearray()))  # the example's empty bytearray (trio-websocket takes bytes)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(send)
                try:
                    while True:
                        messages.append(await ws.get_message())
                except ConnectionClosed as exc:
                    return messages, exc.reason.code
    raise AssertionError("unreachable")


def check_transcript(t: dict, name: str, model: str) -> str:
    assert t["model"] == model and isinstance(t["asr"], str) and 0 <= t["confidence"] <= 1
    duration = (DATA / name).stat().st_size / 32000
    assert abs(t["audiosecs"] - duration) < 0.05
    assert t["utterances"], "speech gives utterances"
    previous_end = 0.0
    for i, u in enumerate(t["utterances"]):
        assert u["metadata"] == {"uttid": i, "channel": 0, "model": model}
        assert previous_end - 0.01 <= u["start"] <= u["end"] <= duration + 0.05 and 0 <= u["confidence"] <= 1
        assert u["events"] and all(u["start"] <= e["start"] <= e["end"] <= u["end"] for e in u["events"])
        assert all(set(e) == {"word", "start", "end", "confidence"} for e in u["events"])
        previous_end = u["end"]
    return " ".join(e["word"] for u in t["utterances"] for e in u["events"])


@pytest.mark.parametrize("name", ["ps_librivox_0880.wav", "ps_goforward.wav"])
async def test_one_transcript_within_05_wer(name):
    async with running_server(engine="sphinx", decode_workers=1) as server:
        messages, code = await transcribe(server.port, name, model="eng1:callcenter", numtrans="false",
                                          requestid="e2e")
        await wait_until(lambda: server.endings[("vblaze", "normal", "LC-END-001")] == 1)
    assert code == 1000 and len(messages) == 1 and isinstance(messages[0], str)
    t = json.loads(messages[0])
    assert t["requestid"] == "e2e" and t["asr"].endswith(" (sphinx)")  # the engine serving, not a fixed name
    text = check_transcript(t, name, "eng1:callcenter")
    print(f"{name}: WER {wer(REFERENCES[name], text):.3f}: {text!r}")
    assert wer(REFERENCES[name], text) <= 0.5


@pytest.mark.parametrize("name", ["ps_librivox_0880.wav", "ps_goforward.wav"])
async def test_realtime_utterances_then_empty_then_transcript(name):
    async with running_server(engine="sphinx", decode_workers=1) as server:
        messages, code = await transcribe(server.port, name, realtime="true", numtrans="false",
                                          uttmaxsilence="300", uttmaxtime="5")
    assert code == 1000
    assert all(isinstance(m, str) for m in messages)
    separator = messages.index("")
    assert separator == len(messages) - 2 and separator >= 1
    streamed = [json.loads(m) for m in messages[:separator]]
    t = json.loads(messages[-1])
    assert streamed == t["utterances"]
    text = check_transcript(t, name, "eng1:callcenter")
    print(f"{name} realtime: {len(streamed)} utterances, WER {wer(REFERENCES[name], text):.3f}: {text!r}")
    assert wer(REFERENCES[name], text) <= 0.5


async def test_realtime_streams_each_sentence_as_it_is_decoded():
    """The recording with three sentences apart by 1.85 s and 2.38 s of silence: three utterance frames, in
    order, each with its words, before the separator (uttmaxsilence=800 ms, the default)."""
    async with running_server(engine="sphinx", decode_workers=1) as server:
        messages, code = await transcribe(server.port, GAP_RECORDING, realtime="true", utterance_fmt="jsontop")
    assert code == 1000 and messages[-2] == ""
    streamed = [json.loads(m) for m in messages[:-2]]
    assert len(streamed) == len(GAP_SPEECH)
    for u, (start, end) in zip(streamed, GAP_SPEECH):
        assert u["text"] and abs(u["start"] - start) < 0.5 and abs(u["end"] - end) < 0.5
    assert [u["text"] for u in streamed] == [
        " ".join(e["word"] for e in u["events"]) for u in json.loads(messages[-1])["utterances"]]


def read_samples(name: str) -> np.ndarray:
    with wave.open(str(DATA / name)) as f:
        return np.frombuffer(f.readframes(f.getnframes()), "<i2")


async def test_each_channel_of_a_stereo_call_is_transcribed_on_its_own():
    """A stereo WAV with a different speaker on each side, as a call recording has: each channel's utterances
    carry its number and hold its own words."""
    left, right = read_samples("ps_goforward.wav"), read_samples("ps_librivox_0880.wav")
    n = max(len(left), len(right))
    stereo = np.zeros((n, 2), np.int16)
    stereo[: len(left), 0], stereo[: len(right), 1] = left, right
    buf = io.BytesIO()
    with wave.open(buf, "wb") as f:
        f.setnchannels(2), f.setsampwidth(2), f.setframerate(16000)
        f.writeframes(stereo.tobytes())
    async with running_server(engine="sphinx", decode_workers=2) as server:
        messages, code = await transcribe(server.port, buf.getvalue(), punctuate="false", numtrans="false")
    t = json.loads(messages[-1])
    said = {c: " ".join(e["word"] for u in t["utterances"] if u["metadata"]["channel"] == c for e in u["events"])
            for c in (0, 1)}
    print(f"stereo: {said}")
    assert code == 1000 and [c["channel"] for c in t["chaninfo"]] == [0, 1]
    assert wer(REFERENCES["ps_goforward.wav"], said[0]) <= 0.5
    assert wer(REFERENCES["ps_librivox_0880.wav"], said[1]) <= 0.5
