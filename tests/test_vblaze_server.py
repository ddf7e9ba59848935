"""V-Blaze through the server, over localhost sockets with the scripted engine (it hears "one two three four
..." one word per 0.5 s of audio, a final every four words, whatever the audio says): tags at the upgrade, a
bad one refused with HTTP 400, audio split anywhere, the empty frame, the results in each mode, the close."""

import io
import json
import wave
import zipfile
from urllib.parse import urlencode

import numpy as np
import pytest
import trio
from trio_websocket import ConnectionClosed, ConnectionRejected, open_websocket_url

from stt import __version__
from tests.helpers import running_server, silence, wait_until

PATH = "/transcribe"


def url(server, **tags) -> str:
    return f"ws://127.0.0.1:{server.port}{PATH}" + (f"?{urlencode(tags)}" if tags else "")


def wav(seconds: float, rate: int = 16000, channels: int = 1) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as f:
        f.setnchannels(channels)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes(silence(seconds, rate) * channels)
    return buf.getvalue()


async def exchange(ws, audio: bytes, chunk: int = 1001) -> tuple[list[str | bytes], int]:
    """Send the audio in odd-sized chunks, then the empty frame; every message until the server closes."""
    for i in range(0, len(audio), chunk):
        await ws.send_message(audio[i:i + chunk])
    await ws.send_message(b"")
    received = []
    with trio.fail_after(10):
        try:
            while True:
                received.append(await ws.get_message())
        except ConnectionClosed as exc:
            return received, exc.reason.code


async def test_default_mode_one_json_message_then_close_1000():
    async with running_server() as server:
        async with open_websocket_url(url(server, model="eng1:callcenter", requestid="r1")) as ws:
            messages, code = await exchange(ws, wav(4.2))
        await wait_until(lambda: server.endings[("vblaze", "normal", "LC-END-001")] == 1)
    assert code == 1000 and len(messages) == 1 and isinstance(messages[0], str)
    t = json.loads(messages[0])
    assert t["model"] == "eng1:callcenter" and t["requestid"] == "r1" and t["audiosecs"] == 4.2
    assert [" ".join(e["word"] for e in u["events"]) for u in t["utterances"]] == ["One two three four.",
                                                                                 "Five six seven eight."]
    assert [u["metadata"]["uttid"] for u in t["utterances"]] == [0, 1]
    assert t["asr"] == f"stt-{__version__} (scripted)"  # the engine that served it, by name


async def test_tags_in_headers():
    async with running_server() as server:
        headers = [("X-Voci-Model", "eng1:callcenter"), ("X-Voci-Output", "text"), ("X-Voci-Datahdr", "WAVE"),
                   ("X-Voci-Punctuate", "false"), ("X-Voci-Numtrans", "false")]
        async with open_websocket_url(url(server), extra_headers=headers) as ws:
            messages, code = await exchange(ws, wav(2.2))
    assert (messages, code) == (["one two three four"], 1000)


async def test_realtime_streams_utterances_then_empty_then_transcript():
    async with running_server() as server:
        async with open_websocket_url(url(server, realtime="true", utterance_fmt="text", output="jsontop")) as ws:
            messages, code = await exchange(ws, wav(4.7))
    assert code == 1000
    assert messages[:4] == ["One two three four.", "Five six seven eight.", "Nine.", ""]
    assert json.loads(messages[4])["text"] == "One two three four. Five six seven eight. Nine."
    assert len(messages) == 5


async def test_headerless_audio_from_the_tags_and_stereo_wav_channel_by_channel():
    async with running_server() as server:
        async with open_websocket_url(url(server, datahdr="NONE", samprate="8000", sampwidth="2",
                                          encoding="SPCM", output="text", punctuate="false")) as ws:
            messages, code = await exchange(ws, silence(2.2, 8000), chunk=333)
        assert (messages, code) == (["one two three four"], 1000)
        async with open_websocket_url(url(server, output="json")) as ws:
            messages, code = await exchange(ws, wav(2.2, 8000, channels=2))
        t = json.loads(messages[0])
        assert code == 1000 and t["audiosecs"] == 2.2
        # The scripted engine hears the same script in each channel: each channel's stream, on its own.
        assert [(u["metadata"]["channel"], " ".join(e["word"] for e in u["events"])) for u in t["utterances"]] == [
            (0, "One two three four."), (1, "One two three four.")]
        assert t["chaninfo"] == [{"channel": 0, "utterances": 1}, {"channel": 1, "utterances": 1}]


async def test_outzip_is_one_binary_frame():
    async with running_server() as server:
        async with open_websocket_url(url(server, outzip="true")) as ws:
            messages, code = await exchange(ws, wav(2.2))
    assert code == 1000 and len(messages) == 1 and isinstance(messages[0], bytes)
    with zipfile.ZipFile(io.BytesIO(messages[0])) as archive:
        assert json.loads(archive.read("transcript.json"))["utterances"]


@pytest.mark.parametrize("tags, headers, named", [
    ({"output": "xml"}, [], "output"),
    ({"uttmaxsilence": "1"}, [], "uttmaxsilence"),
    ({}, [("X-Voci-Notext", "true")], "notext"),
    ({}, [("X-Voci-Nonsense", "1")], "nonsense"),
])
async def test_a_bad_tag_is_http_400_naming_it_and_the_server_goes_on(tags, headers, named):
    async with running_server() as server:
        with pytest.raises(ConnectionRejected) as info:
            async with open_websocket_url(url(server, **tags), extra_headers=headers):
                pass
        assert info.value.status_code == 400 and named in info.value.body.decode()
        async with open_websocket_url(url(server, output="text")) as ws:
            assert (await exchange(ws, wav(2.2)))[1] == 1000


async def test_a_text_frame_closes_1003():
    async with running_server() as server:
        async with open_websocket_url(url(server)) as ws:
            await ws.send_message(wav(0.5))
            await ws.send_message('{"end": true}')
            with trio.fail_after(5), pytest.raises(ConnectionClosed) as info:
                while True:
                    await ws.get_message()
        assert info.value.reason.code == 1003
        await wait_until(lambda: server.endings[("vblaze", "violation", "VB-MSG-001")] == 1)


async def test_audio_that_is_not_wave_closes_1007():
    async with running_server() as server:
        async with open_websocket_url(url(server)) as ws:
            await ws.send_message(b"OggS" + bytes(100))
            with trio.fail_after(5), pytest.raises(ConnectionClosed) as info:
                while True:
                    await ws.get_message()
        assert info.value.reason.code == 1007 and info.value.reason.reason == "missing data WAVE header"


async def test_api_keys_use_the_token_tag():
    async with running_server(api_keys=("k1",)) as server:
        with pytest.raises(ConnectionRejected) as info:
            async with open_websocket_url(url(server)):
                pass
        assert info.value.status_code == 401
        async with open_websocket_url(url(server, output="text"), extra_headers=[("X-Voci-Token", "k1")]) as ws:
            assert (await exchange(ws, wav(2.2)))[1] == 1000


def tone_wav(seconds: float, rate: int = 16000) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as f:
        f.setnchannels(1), f.setsampwidth(2), f.setframerate(rate)
        f.writeframes((np.sin(np.arange(int(seconds * rate)) * 0.1) * 8000).astype("<i2").tobytes())
    return buf.getvalue()


def wav_samples(data: bytes) -> tuple[np.ndarray, int]:
    with wave.open(io.BytesIO(data)) as f:
        return np.frombuffer(f.readframes(f.getnframes()), "<i2"), f.getframerate()


SCRUB_TWO = json.dumps([{"regex": "^two$", "repl": "###"}])


async def test_scrubaudio_returns_the_audio_with_redacted_words_silenced_in_a_zip():
    """The scripted engine hears "one two three four", a word every 0.5 s ("two" from 0.5 to 0.9 s)."""
    async with running_server() as server:
        async with open_websocket_url(url(server, scrubaudio="true", scrubconf=SCRUB_TWO, punctuate="false",
                                          numtrans="false")) as ws:
            messages, code = await exchange(ws, tone_wav(2.2))
    assert code == 1000 and len(messages) == 1 and isinstance(messages[0], bytes)
    with zipfile.ZipFile(io.BytesIO(messages[0])) as archive:
        transcript = json.loads(archive.read("transcript.json"))
        samples, rate = wav_samples(archive.read("scrubbed.wav"))
    assert [e["word"] for e in transcript["utterances"][0]["events"]] == ["one", "###", "three", "four"]
    assert rate == 16000 and len(samples) == int(2.2 * 16000)
    assert not samples[int(0.5 * rate):int(0.9 * rate)].any()  # "two" is silent
    assert np.abs(samples[: int(0.5 * rate)]).max() > 7000 and np.abs(samples[int(0.9 * rate):]).max() > 7000


async def test_scrubaudio_streaming_with_notext_sends_the_redacted_audio_alone():
    async with running_server() as server:
        async with open_websocket_url(url(server, scrubaudio="true", scrubconf=SCRUB_TWO, notext="true",
                                          outstream="true", punctuate="false", numtrans="false")) as ws:
            messages, code = await exchange(ws, tone_wav(2.2))
    assert code == 1000 and len(messages) == 1 and isinstance(messages[0], bytes)
    samples, rate = wav_samples(messages[0])
    assert not samples[int(0.5 * rate):int(0.9 * rate)].any() and samples[: int(0.5 * rate)].any()


async def test_scrubaudio_streaming_sends_utterances_the_audio_then_the_transcript():
    async with running_server() as server:
        async with open_websocket_url(url(server, scrubaudio="true", scrubconf=SCRUB_TWO, outstream="true",
                                          utterance_fmt="text", output="text", punctuate="false",
                                          numtrans="false")) as ws:
            messages, code = await exchange(ws, tone_wav(2.2))
    assert code == 1000
    assert messages[0] == "one ### three four" and isinstance(messages[1], bytes) and messages[2:] == [
        "", "one ### three four"]
