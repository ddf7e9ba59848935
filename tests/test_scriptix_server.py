"""Scriptix through the server: over localhost sockets with the scripted engine (it hears "one two three four
..." one word per 0.5 s of audio, whatever the audio; a final every four words), and over in-memory streams
with virtual time for the 15 s start timeout. Every error is {"error":…} and the chart's close code, and the
server goes on serving."""

import json
from urllib.parse import urlencode

import pytest
import trio
import trio.testing
from trio_websocket import ConnectionClosed, open_websocket_url

from stt.dialects.scriptix import ScriptixDialect
from tests.helpers import frames_of, running_server, session_pair, silence, wait_until

PATH = "/v2/realtime"
KEY = "sx-test-key"


def url(server, path: str = PATH, **query) -> str:
    return f"ws://127.0.0.1:{server.port}{path}" + (f"?{urlencode(query)}" if query else "")


async def receive_raw(ws, until: str | None = None) -> tuple[list[str], int | None]:
    """Raw frames until one contains `until` (then stop) or the server closes (then also its close code)."""
    received = []
    try:
        while True:
            frame = await ws.get_message()
            received.append(frame)
            if until is not None and until in frame:
                return received, None
    except ConnectionClosed as exc:
        return received, exc.reason.code


async def stream(ws, data: bytes, frame_bytes: int = 6400) -> None:
    for frame in frames_of(data, frame_bytes):
        await ws.send_message(frame)


async def start(ws, **options) -> str:
    """Send the start action and wait for listening, as the vendor's client does; the listening frame."""
    await ws.send_message(json.dumps({"action": "start", **options}))
    frames, code = await receive_raw(ws, until='"listening"')
    assert code is None, frames
    return frames[-1]


async def exchange(ws, seconds: float = 2.2, **options) -> tuple[list[str], int | None]:
    """start, listening, audio, stop: every frame after listening, and the close code."""
    await start(ws, **options)
    await stream(ws, silence(seconds))
    await ws.send_message('{"action":"stop"}')
    return await receive_raw(ws)


def finals(frames: list[str]) -> list[str]:
    return [json.loads(f)["text"] for f in frames if '"result"' in f or '"is_final":true' in f]


async def assert_served(server, **query) -> None:
    async with open_websocket_url(url(server, **query)) as ws:
        frames, code = await exchange(ws, 2.0)
    assert finals(frames) == ["one two three four"] and code == 1000


# --- the exchange ----------------------------------------------------------------------------------------


async def test_start_listening_audio_stop_gives_partials_finals_stopped_and_1000():
    async with running_server() as server:
        async with open_websocket_url(url(server, token="anything", type="fast", language="en")) as ws:
            listening = await start(ws)
            await stream(ws, silence(2.2))
            await ws.send_message('{"action":"stop"}')
            frames, code = await receive_raw(ws)
        assert code == 1000 and ws.closed.code == 1000
        await wait_until(lambda: server.endings[("scriptix", "normal", "LC-END-001")] == 1)
    assert listening.startswith('{"state":"listening","session_id":"') and len(json.loads(listening)["session_id"]) == 32
    assert frames[-1] == '{"state":"stopped"}'
    assert '{"partial":"one"}' in frames and '{"partial":"one two three"}' in frames
    assert frames[frames.index('{"partial":"one two three"}') + 2] == (
        '{"result":[["one",0,400,1.0],["two",500,900,1.0],["three",1000,1400,1.0],["four",1500,1900,1.0]],'
        '"speaker":"Speaker 1","text":"one two three four"}')
    assert finals(frames) == ["one two three four"]  # 2.2 s: "five" (2.0-2.4 s) was never heard
    assert all(f == json.dumps(json.loads(f), separators=(",", ":")) for f in frames)


async def test_stop_sends_the_pending_final_before_stopped():
    async with running_server() as server:
        async with open_websocket_url(url(server)) as ws:
            frames, code = await exchange(ws, 3.0, partial=False)
    assert not any('"partial"' in f for f in frames)
    assert finals(frames) == ["one two three four", "five six"] and frames[-1] == '{"state":"stopped"}'
    assert code == 1000


async def test_shape_v_over_the_wire():
    async with running_server() as server:
        async with open_websocket_url(url(server, shape="v", type="quality")) as ws:
            await ws.send_message('{"action": "start"}')  # with a space, as the vendor's client sends it
            first = [await ws.get_message()]
            await stream(ws, silence(3.0))
            await ws.send_message('{"action":"stop"}')
            frames, code = await receive_raw(ws)
    assert first[0].startswith('{"state":"listening","session_id":')  # the first answer (client_v2.py)
    assert '{"text":"one two","is_final":false,"offset_ms":900,"stability":1.0}' in frames
    assert ('{"text":"one two three four","is_final":true,"offset_ms":1900,"words":[["one",0,400,1.0],'
            '["two",500,900,1.0],["three",1000,1400,1.0],["four",1500,1900,1.0]],"speaker":"Speaker 1"}') in frames
    assert finals(frames) == ["one two three four", "five six"]
    assert frames[-1] == '{"state":"stopped"}' and code == 1000


async def test_a_leading_wav_header_is_skipped():
    import io
    import wave

    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(silence(2.0))
    async with running_server() as server:
        async with open_websocket_url(url(server)) as ws:
            await start(ws)
            await stream(ws, buf.getvalue())  # the header is 44 bytes: as PCM it would be 22 more samples
            await ws.send_message('{"action":"stop"}')
            frames, code = await receive_raw(ws)
    assert finals(frames)[0] == "one two three four" and code == 1000
    assert json.loads([f for f in frames if '"result"' in f][0])["result"][-1][2] == 1900


# --- order -----------------------------------------------------------------------------------------------


async def test_audio_before_listening_is_ignored():
    """1 s of audio before the start action does not reach the recognizer: the transcript is that of the
    2 s after listening alone (four words, the first at 0 ms), and the session goes on."""
    async with running_server() as server:
        async with open_websocket_url(url(server)) as ws:
            await stream(ws, silence(1.0))
            frames, code = await exchange(ws, 2.0, partial=False)
    assert finals(frames) == ["one two three four"] and code == 1000
    assert json.loads(frames[0])["result"][0] == ["one", 0, 400, 1.0]
    assert not any('"error"' in f for f in frames)


async def test_a_second_start_is_an_error_and_the_session_goes_on():
    async with running_server() as server:
        async with open_websocket_url(url(server)) as ws:
            await start(ws)
            await ws.send_message('{"action":"start"}')
            frames, _ = await receive_raw(ws, until='"error"')
            assert frames == ['{"error":"the session has already started"}']
            await stream(ws, silence(2.0))
            await ws.send_message('{"action":"stop"}')
            frames, code = await receive_raw(ws)
    assert finals(frames)[0] == "one two three four" and code == 1000


async def test_stop_before_start_is_stopped_and_1000():
    async with running_server() as server:
        async with open_websocket_url(url(server)) as ws:
            await ws.send_message('{"action":"stop"}')
            frames, code = await receive_raw(ws)
    assert frames == ['{"state":"stopped"}'] and code == 1000


@pytest.mark.parametrize("frame, error", [
    ("hello", '{"error":"text frames must be JSON objects with an \\"action\\": not JSON (Expecting value)"}'),
    ('{"action":"start","partial":"yes"}', '{"error":"invalid start action: \\"partial\\" must be true or false"}'),
])
async def test_bad_frames_are_an_error_then_close_1000(frame, error):
    async with running_server() as server:
        async with open_websocket_url(url(server)) as ws:
            await ws.send_message(frame)
            frames, code = await receive_raw(ws)
        assert frames == [error] and code == 1000
        await assert_served(server)


async def test_an_unknown_action_is_an_error_and_the_session_goes_on():
    async with running_server() as server:
        async with open_websocket_url(url(server)) as ws:
            await start(ws)
            await ws.send_message('{"action":"pause"}')
            frames, _ = await receive_raw(ws, until='"error"')
            assert frames == ['{"error":"unknown action: \'pause\'"}']
            await ws.send_message('{"action":"stop"}')
            frames, code = await receive_raw(ws)
    assert frames == ['{"state":"stopped"}'] and code == 1000


# --- the query string ------------------------------------------------------------------------------------


@pytest.mark.parametrize("query, error", [
    ({"type": "slow"}, "invalid type: type 'slow' is not fast or quality"),
    ({"language": "nl"}, "unsupported language: language 'nl' is not supported (supported: en)"),
    ({"shape": "w"}, "invalid shape: shape 'w' is not k or v"),
])
async def test_bad_query_parameters_are_an_error_then_close_1000(query, error):
    async with running_server() as server:
        async with open_websocket_url(url(server, **query)) as ws:
            frames, code = await receive_raw(ws)
        assert [json.loads(f) for f in frames] == [{"error": error}] and code == 1000
        await assert_served(server)


async def test_stream_mode_without_a_url_is_an_error():
    async with running_server() as server:
        async with open_websocket_url(url(server, "/v2/client/tok", type="fast")) as ws:
            frames, code = await receive_raw(ws)
        assert frames == ['{"state":"loading"}', '{"error":"missing stream URL"}'] and code == 1000
        await wait_until(lambda: server.endings[("scriptix", "violation", "SX-STREAM-001")] == 1)


async def test_v2_language_paths_still_reach_speechmatics():
    async with running_server() as server:
        async with open_websocket_url(url(server, "/v2/en")) as ws:
            await ws.send_message('{"message":"EndOfStream","last_seq_no":0}')
            msg = json.loads(await ws.get_message())
    assert msg["message"] == "Error"


# --- the token -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("query, headers", [
    ({"token": KEY}, ()),
    ({}, [("x-zoom-s2t-key", KEY)]),
    ({}, [("X-Api-Key", KEY)]),
    ({}, [("api-key", KEY)]),
])
async def test_a_valid_token_by_query_or_header_is_served(query, headers):
    async with running_server(api_keys=(KEY,)) as server:
        async with open_websocket_url(url(server, **query), extra_headers=headers) as ws:
            frames, code = await exchange(ws, 2.0)
    assert finals(frames)[0] == "one two three four" and code == 1000


async def test_a_valid_key_in_the_start_action_is_served():
    async with running_server(api_keys=(KEY,)) as server:
        async with open_websocket_url(url(server)) as ws:
            frames, code = await exchange(ws, 2.0, key=KEY)
    assert finals(frames)[0] == "one two three four" and code == 1000


@pytest.mark.parametrize("query, headers", [
    ({"token": "wrong"}, ()),
    ({}, [("x-zoom-s2t-key", "wrong")]),
    ({}, [("x-api-key", "wrong")]),
    ({}, [("api-key", "wrong")]),
])
async def test_a_wrong_token_at_the_upgrade_is_an_error_and_1008_at_once(query, headers):
    async with running_server(api_keys=(KEY,)) as server:
        async with open_websocket_url(url(server, **query), extra_headers=headers) as ws:
            frames, code = await receive_raw(ws)  # before any start action
        assert frames == ['{"error":"missing or invalid token"}'] and code == 1008
        await wait_until(lambda: server.endings[("scriptix", "unauthorised", "SX-AUTH-001")] == 1)


@pytest.mark.parametrize("start_action", ['{"action":"start"}', '{"action":"start","key":"wrong"}'])
async def test_no_token_and_a_missing_or_wrong_start_key_is_an_error_and_1008(start_action):
    async with running_server(api_keys=(KEY,)) as server:
        async with open_websocket_url(url(server)) as ws:
            await ws.send_message(start_action)
            frames, code = await receive_raw(ws)
        assert frames == ['{"error":"missing or invalid token"}'] and code == 1008
        await assert_served(server, token=KEY)


# --- the 15 s start timeout, in virtual time ---------------------------------------------------------------


async def test_no_start_within_15_s_is_connection_timeout(autojump_clock):
    async with session_pair(path=PATH) as (server, ws):
        begin = trio.current_time()
        await ws.send_message(silence(0.2))  # audio is not a start: ignored, and the clock keeps running
        frames, code = await receive_raw(ws)
        assert ScriptixDialect.start_timeout == 15 and 15 <= trio.current_time() - begin < 15.5
        assert frames == ['{"error":"connection timeout"}'] and code == 1000
        await wait_until(lambda: server.endings[("scriptix", "idle_timeout", "SX-IDLE-001")] == 1)


async def test_a_start_within_15_s_keeps_the_session(autojump_clock):
    async with session_pair(path=PATH) as (server, ws):
        await trio.sleep(14)
        await start(ws)
        await trio.sleep(30)  # the start timeout no longer applies; the message idle timeout (180 s) does
        await stream(ws, silence(2.0))
        await ws.send_message('{"action":"stop"}')
        frames, code = await receive_raw(ws)
    assert finals(frames)[0] == "one two three four" and code == 1000
