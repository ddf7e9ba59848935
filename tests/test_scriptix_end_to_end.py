"""End to end: a Scriptix client written like the vendor's own (scriptix-io/realtime-examples client_v2.py;
protocols.md §3) streams real speech to the server with the real recognizer: it sends the start action, takes
the first answer to contain "listening", streams the bytes of a WAV file (header included, as ffmpeg -f wav
pipes them) in 6400-byte chunks while reading, sends stop, and reads until a raw message contains
'"state":"stopped"'."""

import json

import pytest
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from stt.wer import wer
from tests.helpers import DATA, REFERENCES, running_server, wait_until

API_KEY = "sx-test-key"
CHUNK = 6400  # 200 ms of PCM16 at 16 kHz, as the vendor recommends
SPEEDUP = 10  # real time would be 0.2 s a chunk; ten times faster keeps the tests short


async def transcribe(port: int, wav: bytes, shape: str) -> tuple[str, list[str], int | None]:
    """The vendor's flow; the first answer, every later raw message, and the close code."""
    received: list[str] = []
    async with open_websocket_url(f"ws://127.0.0.1:{port}/v2/realtime?language=en&type=fast&shape={shape}",
                                  extra_headers=[("x-zoom-s2t-key", API_KEY)]) as ws:
        await ws.send_message('{"action": "start"}')
        first = await ws.get_message()
        assert '"listening"' in first, first

        async def writer():
            for i in range(0, len(wav), CHUNK):
                await ws.send_message(wav[i:i + CHUNK])
                await trio.sleep(0.2 / SPEEDUP)
            await ws.send_message('{"action": "stop"}')

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(writer)
                while True:
                    message = await ws.get_message()
                    received.append(message)
                    if '"state":"stopped"' in message:
                        break
            try:
                await ws.get_message()
                code = None  # the server sent something after stopped
            except ConnectionClosed as exc:
                code = exc.reason.code
    return first, received, code


@pytest.mark.parametrize("shape", ["k", "v"])
@pytest.mark.parametrize("name", ["ps_goforward.wav", "ps_librivox_0880.wav"])
async def test_vendor_flow_transcribes_real_speech(name, shape):
    wav = (DATA / name).read_bytes()
    assert wav[:4] == b"RIFF"
    async with running_server(engine="sphinx", decode_workers=1, api_keys=(API_KEY,)) as server:
        first, messages, code = await transcribe(server.port, wav, shape)
        await wait_until(lambda: server.endings[("scriptix", "normal", "LC-END-001")] == 1)

    assert first.startswith('{"state":"listening","session_id":"')
    assert messages[-1] == '{"state":"stopped"}' and code == 1000
    parsed = [json.loads(m) for m in messages[:-1]]
    if shape == "k":
        partials = [m for m in parsed if set(m) == {"partial"}]
        finals = [m for m in parsed if set(m) == {"result", "speaker", "text"}]
        words = [item for m in finals for item in m["result"]]
    else:
        partials = [m for m in parsed if set(m) == {"text", "is_final", "offset_ms", "stability"}]
        finals = [m for m in parsed if set(m) == {"text", "is_final", "offset_ms", "words", "speaker"}]
        assert all(m["is_final"] is False for m in partials) and all(m["is_final"] is True for m in finals)
        words = [item for m in finals for item in m["words"]]
    assert len(partials) + len(finals) == len(parsed), parsed  # nothing else: no errors
    assert partials and finals and all(m["speaker"] == "Speaker 1" for m in finals)

    # Words: [word, start_ms, end_ms, confidence], integer ms, in order; the text is the words.
    assert all(isinstance(s, int) and isinstance(e, int) and 0 <= s <= e for _, s, e, _ in words)
    assert all(a[1] <= b[1] for a, b in zip(words, words[1:]))
    for m in finals:
        items = m["result"] if shape == "k" else m["words"]
        assert m["text"] == " ".join(w for w, *_ in items)

    text = " ".join(m["text"] for m in finals if m["text"])
    reference = REFERENCES[name]
    print(f"{name} shape {shape}: WER {wer(reference, text):.3f}: {text!r}")
    assert wer(reference, text) <= 0.5
