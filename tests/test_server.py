"""The server over real localhost sockets with the scripted engine: the Speechmatics exchange, and every way
a session can go wrong ending in the chart's error and close code while the server goes on serving."""

import io
import json
import struct
import threading
import wave

import numpy as np
import pytest
import trio
from trio_websocket import ConnectionClosed, ConnectionRejected, open_websocket_url

from stt.session import SessionLimits
from tests.helpers import connect, encode_audio, frames_of, kinds, receive_all, running_server, silence, start_message, wait_until


async def stream(ws, seconds: float, frame_bytes: int = 640) -> int:
    frames = frames_of(silence(seconds), frame_bytes)
    for frame in frames:
        await ws.send_message(frame)
    return len(frames)


async def test_full_exchange_acks_every_frame_in_order_and_ends_cleanly():
    async with running_server() as server:
        async with connect(server) as ws:
            await ws.send_message(start_message())
            head, _ = await receive_all(ws, until="Info")
            assert kinds(head) == ["RecognitionStarted", "Info"]
            sent = await stream(ws, 2.0)
            await ws.send_message(json.dumps({"message": "EndOfStream", "last_seq_no": sent}))
            messages, _ = await receive_all(ws, until="EndOfTranscript")
        acks = [m["seq_no"] for m in messages if m["message"] == "AudioAdded"]
        assert acks == list(range(1, sent + 1))
        finals = [m for m in messages if m["message"] == "AddTranscript"]
        assert " ".join(f["metadata"]["transcript"] for f in finals) == "one two three four"
        assert messages[-1]["message"] == "EndOfTranscript"
        assert "AddPartialTranscript" not in kinds(messages)
        await wait_until(lambda: server.endings[("speechmatics", "normal", "LC-END-001")] == 1)
        assert not server.sessions


async def test_partials_come_before_the_final_that_supersedes_them():
    async with running_server() as server, connect(server) as ws:
        await ws.send_message(start_message(partials=True))
        await stream(ws, 2.0)
        await ws.send_message('{"message":"EndOfStream","last_seq_no":100}')
        messages, _ = await receive_all(ws, until="EndOfTranscript")
        transcripts = [m for m in messages if m["message"] in ("AddPartialTranscript", "AddTranscript")]
        assert kinds(transcripts) == ["AddPartialTranscript"] * 4 + ["AddTranscript"]
        assert [p["metadata"]["transcript"] for p in transcripts[:4]] == ["one", "one two", "one two three",
                                                                          "one two three four"]


async def test_set_recognition_config_turns_partials_on_mid_session():
    async with running_server() as server, connect(server) as ws:
        await ws.send_message(start_message())
        await stream(ws, 1.0)
        await ws.send_message(json.dumps({"message": "SetRecognitionConfig",
                                          "transcription_config": {"enable_partials": True}}))
        await stream(ws, 1.0)
        await ws.send_message('{"message":"EndOfStream","last_seq_no":100}')
        messages, _ = await receive_all(ws, until="EndOfTranscript")
        partials = [m["metadata"]["transcript"] for m in messages if m["message"] == "AddPartialTranscript"]
        assert partials == ["one two three", "one two three four"]


async def test_force_end_of_utterance_gives_a_forced_final_and_end_of_utterance():
    async with running_server() as server, connect(server) as ws:
        await ws.send_message(start_message())
        await stream(ws, 1.0)
        await ws.send_message('{"message":"ForceEndOfUtterance"}')
        messages, _ = await receive_all(ws, until="EndOfUtterance")
        final = next(m for m in messages if m["message"] == "AddTranscript")
        assert final["forced"] is True and final["metadata"]["transcript"] == "one two"


async def test_mulaw_8k_is_resampled_to_the_engine_rate():
    async with running_server() as server, connect(server) as ws:
        await ws.send_message(start_message(encoding="mulaw", sample_rate=8000))
        await receive_all(ws, until="Info")
        for frame in frames_of(b"\xff" * 16000, 160):  # 2 s of µ-law silence at 8 kHz
            await ws.send_message(frame)
        await ws.send_message('{"message":"EndOfStream","last_seq_no":100}')
        messages, _ = await receive_all(ws, until="EndOfTranscript")
        finals = [m["metadata"]["transcript"] for m in messages if m["message"] == "AddTranscript"]
        assert finals == ["one two three four"]  # the scripted engine counts 2 s of 16 kHz samples


async def test_audio_after_end_of_stream_is_warned_about_and_not_acknowledged():
    async with running_server(limits=SessionLimits(close_grace=0.5)) as server, connect(server) as ws:
        await ws.send_message(start_message())
        await ws.send_message(silence(0.1))
        await ws.send_message('{"message":"EndOfStream","last_seq_no":1}')
        await ws.send_message(silence(0.1))
        messages, code = await receive_all(ws)  # the warning may come before or after EndOfTranscript
        assert [m["seq_no"] for m in messages if m["message"] == "AudioAdded"] == [1]
        assert [m["type"] for m in messages if m["message"] == "Warning"] == ["add_audio_after_eos"]
        assert "EndOfTranscript" in kinds(messages) and code == 1000
    await wait_until(lambda: server.violations[("speechmatics", "SM-EOS-001")] == 1)  # counted for reports


async def test_server_closes_1000_when_the_client_lingers_after_end_of_transcript():
    async with running_server(limits=SessionLimits(close_grace=0.2)) as server, connect(server) as ws:
        await ws.send_message(start_message())
        await ws.send_message('{"message":"EndOfStream","last_seq_no":0}')
        messages, code = await receive_all(ws)
        assert kinds(messages)[-1] == "EndOfTranscript" and code == 1000


@pytest.mark.parametrize(
    "first, error, code",
    [
        (b"\x00\x00", "protocol_error", 1003),
        ('{"message":"EndOfStream","last_seq_no":0}', "protocol_error", 1003),
        ("{not json", "invalid_message", 1003),
        ('{"message":"Nope"}', "invalid_message", 1003),
        (start_message(encoding="pcm_s24le"), "invalid_audio_type", 1003),
    ],
)
async def test_bad_first_frames_get_the_error_and_close_code_of_the_chart(first, error, code):
    async with running_server() as server:
        async with connect(server) as ws:
            await ws.send_message(first)
            messages, closed = await receive_all(ws)
            assert messages[-1]["message"] == "Error" and messages[-1]["type"] == error
            assert closed == code
            assert ws.closed.reason == error
        # ... and the server goes on serving
        async with connect(server) as ws:
            await ws.send_message(start_message())
            assert kinds((await receive_all(ws, until="RecognitionStarted"))[0]) == ["RecognitionStarted"]


async def test_second_start_recognition_is_a_protocol_error():
    async with running_server() as server, connect(server) as ws:
        await ws.send_message(start_message())
        await ws.send_message(start_message())
        messages, code = await receive_all(ws)
        assert kinds(messages) == ["RecognitionStarted", "Info", "Error"] and code == 1003


@pytest.mark.parametrize("headers, path, allowed", [
    ([], "/v2", False),
    ([("Authorization", "Bearer wrong")], "/v2", False),
    ([("Authorization", "Bearer k2")], "/v2", True),
    ([], "/v2?jwt=k1", True),
])
async def test_api_keys(headers, path, allowed):
    async with running_server(api_keys=("k1", "k2")) as server, connect(server, path, headers) as ws:
        await ws.send_message(start_message())
        messages, code = await receive_all(ws, until="RecognitionStarted")
        if allowed:
            assert kinds(messages) == ["RecognitionStarted"]
        else:
            assert messages == [{"message": "Error", "type": "not_authorised",
                                 "reason": "not authorised: missing or invalid API key"}]
            assert code == 4001


async def test_without_configured_keys_any_key_is_accepted():
    async with running_server() as server, connect(server, headers=[("Authorization", "Bearer x")]) as ws:
        await ws.send_message(start_message())
        assert kinds((await receive_all(ws, until="RecognitionStarted"))[0]) == ["RecognitionStarted"]


async def test_unknown_path_is_rejected_at_the_handshake():
    async with running_server() as server:
        with pytest.raises(ConnectionRejected) as info:
            async with open_websocket_url(f"ws://127.0.0.1:{server.port}/v9/unknown"):
                pass
        assert info.value.status_code == 404 and b"/v9/unknown" in info.value.body


async def test_oversized_message_closes_1009_and_the_server_goes_on():
    async with running_server(limits=SessionLimits(max_message_bytes=10_000)) as server:
        async with connect(server) as ws:
            await ws.send_message(start_message())
            await ws.send_message(b"\x00" * 20_000)
            _, code = await receive_all(ws)
            assert code == 1009
        await wait_until(lambda: server.endings[("speechmatics", "message_too_large", "LC-END-007")] == 1)
        async with connect(server) as ws:
            await ws.send_message(start_message())
            assert kinds((await receive_all(ws, until="RecognitionStarted"))[0]) == ["RecognitionStarted"]


async def test_a_failing_recognizer_is_an_internal_error_and_only_ends_its_session():
    async with running_server(engine="scripted", engine_options={"fail_at_seconds": 0.5}) as server:
        async with connect(server) as ws:
            await ws.send_message(start_message())
            await stream(ws, 1.0)
            messages, code = await receive_all(ws)
            assert messages[-1] == {"message": "Error", "type": "unknown_error",
                                    "reason": "internal_error: recognizer failed: RuntimeError"}
            assert code == 1011
        async with connect(server) as ws:  # the next session is served
            await ws.send_message(start_message())
            assert kinds((await receive_all(ws, until="RecognitionStarted"))[0]) == ["RecognitionStarted"]


async def test_a_dropped_connection_ends_its_session_without_leaking_it():
    async with running_server() as server:
        async with connect(server) as ws:
            await ws.send_message(start_message())
            await receive_all(ws, until="Info")
            await ws.send_message(silence(0.2))
            await ws._stream.aclose()  # the TCP connection vanishes: no close frame
        await wait_until(lambda: not server.sessions)
        assert server.endings[("speechmatics", "dropped", "LC-END-002")] == 1


async def test_a_client_close_mid_stream_is_recorded_as_such():
    async with running_server() as server:
        async with connect(server) as ws:
            await ws.send_message(start_message())
            await ws.send_message(silence(0.2))
        await wait_until(lambda: not server.sessions)
        assert server.endings[("speechmatics", "client_closed", "LC-END-003")] == 1


async def test_many_concurrent_sessions_each_get_their_own_transcript():
    async with running_server() as server:
        results = {}

        async def one(i):
            async with connect(server) as ws:
                await ws.send_message(start_message())
                await stream(ws, 1.0 + 0.5 * (i % 3), frame_bytes=3200)
                await ws.send_message('{"message":"EndOfStream","last_seq_no":0}')
                messages, _ = await receive_all(ws, until="EndOfTranscript")
                results[i] = " ".join(m["metadata"]["transcript"] for m in messages if m["message"] == "AddTranscript")

        async with trio.open_nursery() as nursery:
            for i in range(30):
                nursery.start_soon(one, i)
        expected = {0: "one two", 1: "one two three", 2: "one two three four"}
        assert results == {i: expected[i % 3] for i in range(30)}
        await wait_until(lambda: not server.sessions)


FILE_START = json.dumps({"message": "StartRecognition", "audio_format": {"type": "file"},
                         "transcription_config": {"language": "en"}})


def wav_file(samples: np.ndarray, rate: int, channels: int = 1) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as f:
        f.setnchannels(channels), f.setsampwidth(2), f.setframerate(rate)
        f.writeframes(samples.astype("<i2").tobytes())
    return buf.getvalue()


async def send_file(ws, data: bytes, frame_bytes: int = 4096) -> int:
    frames = frames_of(data, frame_bytes)
    for frame in frames:
        await ws.send_message(frame)
    await ws.send_message(json.dumps({"message": "EndOfStream", "last_seq_no": len(frames)}))
    return len(frames)


@pytest.mark.parametrize("kind", ["wav-8k-stereo", "flac-44k", "mp3-16k"])
async def test_a_file_is_recognised_from_its_bytes_and_decoded_as_it_streams(kind):
    """2 s of audio in a file: the scripted engine counts 2 s of samples at its own rate, whatever the file."""
    rate = {"wav-8k-stereo": 8000, "flac-44k": 44100, "mp3-16k": 16000}[kind]
    quiet = (np.sin(np.arange(2 * rate) * 0.05) * 1000).astype(np.int16)
    if kind == "wav-8k-stereo":
        data = wav_file(np.stack([quiet, quiet], axis=1), rate, channels=2)
    elif kind == "flac-44k":
        data = encode_audio(quiet, rate, "flac", "flac")
    else:
        data = encode_audio(quiet, rate, "mp3", "libmp3lame")
    async with running_server() as server, connect(server) as ws:
        await ws.send_message(FILE_START)
        await receive_all(ws, until="Info")
        await send_file(ws, data, frame_bytes=1000)
        messages, _ = await receive_all(ws, until="EndOfTranscript")
    finals = [m["metadata"]["transcript"] for m in messages if m["message"] == "AddTranscript"]
    # An MP3 decoder adds up to a frame of padding (1152 samples, 72 ms): still four words, no fifth.
    assert finals == ["one two three four"]


@pytest.mark.parametrize("data, detail", [
    (b"this is not audio at all, just text" * 100, "unrecognised audio file"),
    (b"fLaC" + bytes(range(256)) * 64, "flac audio could not be decoded"),
    (b"RIFF\x24\x00\x00\x00WAVEfmt " + struct.pack("<IHHIIHH", 16, 0x55, 1, 16000, 4000, 1, 0), "tag 0x0055"),
])
async def test_audio_that_does_not_decode_is_a_job_error_and_the_server_goes_on(data, detail):
    async with running_server() as server:
        async with connect(server) as ws:
            await ws.send_message(FILE_START)
            await receive_all(ws, until="Info")
            for frame in frames_of(data, 4096):
                await ws.send_message(frame)
            await ws.send_message('{"message":"EndOfStream","last_seq_no":%d}' % len(frames_of(data, 4096)))
            messages, code = await receive_all(ws)
        error = messages[-1]
        assert error["message"] == "Error" and error["type"] == "job_error" and code == 4013
        assert "Please check that your audio format is supported" in error["reason"] and detail in error["reason"]
        assert server.endings[("speechmatics", "bad_audio", "SM-AUDIO-001")] == 1
        async with connect(server) as ws:  # the next session is served
            await ws.send_message(start_message())
            assert kinds((await receive_all(ws, until="RecognitionStarted"))[0]) == ["RecognitionStarted"]


def decoder_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("stt-audio-")]


async def test_a_dropped_connection_mid_file_leaves_no_decoder_thread():
    data = encode_audio((np.sin(np.arange(64000) * 0.05) * 1000).astype(np.int16), 16000, "ogg", "libopus",
                        codec_rate=48000)
    async with running_server() as server:
        # A deep client queue: the acks pile up unread, and trio-websocket's own close would wait on them.
        async with open_websocket_url(f"ws://127.0.0.1:{server.port}/v2", message_queue_size=100) as ws:
            await ws.send_message(FILE_START)
            await receive_all(ws, until="Info")
            for frame in frames_of(data[: len(data) // 2], 1000):
                await ws.send_message(frame)
            await wait_until(lambda: decoder_threads())  # the Ogg decoder is running
            await ws._stream.aclose()  # the TCP connection vanishes mid-file
        await wait_until(lambda: not server.sessions)
        await wait_until(lambda: not decoder_threads())
        assert server.endings[("speechmatics", "dropped", "LC-END-002")] == 1


async def served(server) -> None:
    async with connect(server) as ws:
        await ws.send_message(start_message())
        head, _ = await receive_all(ws, until="Info")
        assert kinds(head) == ["RecognitionStarted", "Info"]


@pytest.mark.parametrize("frames, code", [
    (['{"action":"start"}', '{"action":"stop"}', "ping"], 1000),  # a ping while the server closes (Scriptix)
    (["{not json", b"\0" * (64 * 1024 + 1)], 1003),  # a frame over the limit while it closes after an error
], ids=["ping", "oversized"])
async def test_a_client_that_keeps_sending_while_the_server_closes_gets_its_close(frames, code, caplog):
    """trio-websocket 0.12 (its issue #184) answers a ping or an oversized frame even after the server's close
    frame, which wsproto refuses: the error stopped the server (found by tests/test_fuzz.py), then, caught,
    dropped the connection; stt.transport's connection does not answer them once it has closed."""
    async with running_server(limits=SessionLimits(max_message_bytes=64 * 1024)) as server:
        for _ in range(3):
            path = "/v2/realtime" if frames[0].startswith('{"action"') else "/v2"
            async with open_websocket_url(f"ws://127.0.0.1:{server.port}{path}") as ws:
                try:
                    for frame in frames:
                        if frame == "ping":  # once the server has said its last word and is closing
                            while json.loads(await ws.get_message()) != {"state": "stopped"}:
                                pass
                            with trio.move_on_after(1):  # the pong may never come
                                await ws.ping()
                        else:
                            await ws.send_message(frame)
                    with trio.fail_after(5):
                        while True:
                            await ws.get_message()
                except ConnectionClosed:
                    pass
            assert ws.closed.code == code  # the chart's close, not a dropped connection (1006)
        await served(server)  # the server goes on
        await wait_until(lambda: server.connections.open == 0)
    assert not [r for r in caplog.records if r.levelname == "ERROR"]
