"""Graceful shutdown: the listener closes, running sessions get `--shutdown-grace` seconds to finish (a client that
ends its stream in time gets its last results and its normal close), the rest are closed as going away (1001);
Scriptix clients are told {"state":"shutting_down","at":…}. In-process (shut_down, with autojump_clock where
time matters) and through a real `stt serve` sent SIGTERM."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
import trio.testing
import trio_websocket
from trio_websocket import ConnectionClosed, open_websocket_url

from stt.dialects import DIALECTS
from stt.dialects.base import Handshake, render_shutting_down
from stt.engines.inline_host import InlineEngine
from stt.events import ShuttingDown
from stt.engines.scripted import ScriptedRecognizer
from stt.server import DRAIN, NOW, Server, _serve_until_stopped, open_server, shut_down
from stt.settings import ServerConfig
from tests.helpers import connect_in_memory, kinds, receive_all, silence, start_message, wait_until

END_OF_STREAM = json.dumps({"message": "EndOfStream", "last_seq_no": 1})
ROOT = Path(__file__).resolve().parent.parent


@asynccontextmanager
async def in_memory_server(**config):
    """A Server (no listener) and `connect(path)`, which opens an in-memory connection to it."""
    server = Server(ServerConfig(**config), InlineEngine("scripted", 16000, ScriptedRecognizer))
    async with trio.open_nursery() as nursery:

        async def connect(path: str = "/v2"):
            return await connect_in_memory(server, nursery, path)

        yield server, connect
        nursery.cancel_scope.cancel()


async def receive_raw(ws, until: str | None = None) -> tuple[list[str], int | None]:
    frames = []
    try:
        while True:
            frames.append(await ws.get_message())
            if until is not None and until in frames[-1]:
                return frames, None
    except ConnectionClosed as exc:
        return frames, exc.reason.code


async def started_speechmatics(connect):
    ws = await connect("/v2")
    await ws.send_message(start_message())
    await receive_all(ws, until="Info")
    await ws.send_message(silence(1.0))
    return ws


@pytest.mark.parametrize("dialect_class", DIALECTS, ids=lambda d: d.name)
def test_only_scriptix_has_a_shutting_down_message(dialect_class):
    path = {"scriptix": "/v2/realtime", "speechmatics": "/v2", "voicerun": "/ws",
            "yourvoic": "/api/v1/stt/realtime/stream", "vblaze": "/transcribe",
            "openai": "/v1/realtime?intent=transcription"}[dialect_class.name]
    frames = render_shutting_down(dialect_class(Handshake.from_target(path)), ShuttingDown(1767225600.7))
    if dialect_class.name == "scriptix":
        assert frames == ['{"state":"shutting_down","at":1767225600}']  # compact, whole Unix seconds
    else:
        assert frames == []


# --- in-process -------------------------------------------------------------------------------------------


async def test_within_the_grace_a_session_finishes_normally_and_one_that_does_not_is_closed_1001(autojump_clock):
    async with in_memory_server() as (server, connect):
        finishing, lingering = await started_speechmatics(connect), await started_speechmatics(connect)
        await wait_until(lambda: len(server.sessions) == 2)
        began = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(shut_down, server, 30.0)
            await trio.sleep(20)  # the client takes its time, within the grace
            await finishing.send_message(END_OF_STREAM)
            finished, _ = await receive_all(finishing, until="EndOfTranscript")
            await finishing.aclose()
            lingered, code = await receive_all(lingering)
            cut_at = trio.current_time() - began
        took = trio.current_time() - began
    assert [m["metadata"]["transcript"] for m in finished if m["message"] == "AddTranscript"] == ["one two"]
    assert finishing.closed.code == 1000
    assert code == 1001 and set(kinds(lingered)) <= {"AudioAdded", "AddTranscript"}  # no message for the shutdown
    # ... but the utterance in progress (1 s of audio: "one two") comes as a final before the close.
    assert [m["metadata"]["transcript"] for m in lingered if m["message"] == "AddTranscript"] == ["one two"]
    assert lingering.closed.reason == "server shutting down"
    assert cut_at == pytest.approx(30, abs=0.5) and took == pytest.approx(30, abs=0.5)
    assert server.endings[("speechmatics", "normal", "LC-END-001")] == 1
    assert server.endings[("speechmatics", "shutdown", "LC-END-008")] == 1


async def test_shutdown_ends_as_soon_as_the_last_session_has_closed(autojump_clock):
    async with in_memory_server() as (server, connect):
        ws = await started_speechmatics(connect)
        await wait_until(lambda: len(server.sessions) == 1)
        began = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(shut_down, server, 30.0)
            await trio.sleep(3)
            await ws.send_message(END_OF_STREAM)
            await receive_all(ws, until="EndOfTranscript")
            await ws.aclose()
        assert trio.current_time() - began == pytest.approx(3, abs=0.5)
        began = trio.current_time()
        await shut_down(server, 30.0)  # nothing left: at once
        assert trio.current_time() == began


async def test_scriptix_clients_are_told_when_the_server_will_close_and_may_finish(autojump_clock):
    async with in_memory_server() as (server, connect):
        scriptix = await connect("/v2/realtime?type=fast")
        await scriptix.send_message('{"action":"start"}')
        listening, _ = await receive_raw(scriptix, until='"listening"')
        speechmatics = await started_speechmatics(connect)
        await wait_until(lambda: len(server.sessions) == 2)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(shut_down, server, 60.0)
            notice = json.loads(await scriptix.get_message())
            assert set(notice) == {"state", "at"} and notice["state"] == "shutting_down"
            assert isinstance(notice["at"], int) and notice["at"] == pytest.approx(time.time() + 60, abs=2)
            await scriptix.send_message(silence(2.0))
            await scriptix.send_message('{"action":"stop"}')
            frames, code = await receive_raw(scriptix)
            others, other_code = await receive_all(speechmatics)
    finals = [json.loads(frame)["text"] for frame in frames if '"result"' in frame]
    assert finals == ["one two three four"] and frames[-1] == '{"state":"stopped"}'
    assert code == 1000
    assert other_code == 1001 and set(kinds(others)) <= {"AudioAdded", "AddTranscript"}  # no shutting_down


async def test_a_handshake_that_completes_after_the_listener_closed_is_turned_away_with_503():
    server = Server(ServerConfig(), InlineEngine("scripted", 16000, ScriptedRecognizer))
    server.stop_accepting(closing_at=time.time() + 30)
    client, server_side = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:

        async def serve_one():
            await server.handle(await trio_websocket.wrap_server_stream(nursery, server_side))

        nursery.start_soon(serve_one)
        await client.send_all(b"GET /v2 HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                              b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        response = b""
        with trio.fail_after(5):
            while not response.endswith(b"\r\n\r\nserver shutting down\n"):  # head, then body
                response += await client.receive_some()
        nursery.cancel_scope.cancel()
    assert response.startswith(b"HTTP/1.1 503 ") and response.endswith(b"\r\n\r\nserver shutting down\n")
    assert server.metrics.rejected.labels("none", "shutting_down")._value.get() == 1


async def test_the_listener_closes_while_the_open_session_goes_on():
    async with open_server(ServerConfig(port=0, engine="scripted")) as server:
        async with open_websocket_url(f"ws://127.0.0.1:{server.port}/v2") as ws:
            await ws.send_message(start_message())
            await receive_all(ws, until="Info")
            with trio.fail_after(5):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(shut_down, server, 5.0)
                    await until_refused(server.port)  # nobody listens any more
                    await ws.send_message(silence(2.0))
                    await ws.send_message(END_OF_STREAM)
                    messages, _ = await receive_all(ws, until="EndOfTranscript")
                    await ws.aclose()
    assert [m["metadata"]["transcript"] for m in messages if m["message"] == "AddTranscript"] == ["one two three four"]


@pytest.mark.parametrize("requests, at_once", [
    (["SIGTERM"], False),
    (["SIGTERM", DRAIN], False),  # a worker's own signal, then its supervisor's order to drain: one signal
    ([DRAIN, "SIGINT"], False),  # the same, the other way round (Ctrl-C reaches the whole process group)
    (["SIGTERM", "SIGTERM"], True),
    ([DRAIN, "SIGINT", "SIGINT"], True),
    ([DRAIN, NOW], True),
    ([NOW], True),
])
async def test_a_second_signal_or_the_order_now_cuts_the_grace_short(autojump_clock, requests, at_once):
    async with in_memory_server() as (server, connect):
        ws = await started_speechmatics(connect)
        await wait_until(lambda: len(server.sessions) == 1)
        send, stop_requests = trio.open_memory_channel(10)
        for request in requests:
            send.send_nowait(request)
        received = []
        async with trio.open_nursery() as nursery:  # the client reads all along (the final of the flush too)
            nursery.start_soon(lambda: _collect(received, receive_all(ws)))
            began = trio.current_time()
            await _serve_until_stopped(server, stop_requests, 30.0)
            if at_once:  # open_server's end cancels what is left
                assert trio.current_time() - began < 1 and len(server.sessions) == 1
                nursery.cancel_scope.cancel()
            else:
                assert trio.current_time() - began == pytest.approx(30, abs=0.5)
        if not at_once:
            _, code = received[0]
            assert code == 1001


async def _collect(into: list, call) -> None:
    into.append(await call)


async def until_refused(port: int) -> None:
    """Until connecting to `port` is refused: the listener closes as soon as the accept loop sees it cancelled."""
    while True:
        try:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
        except OSError:
            return
        await stream.aclose()
        await trio.sleep(0.01)


# --- a real `stt serve` -----------------------------------------------------------------------------------


class ProcessLog:
    """The lines a process writes (stdout and stderr together), read as they come."""

    def __init__(self, stream):
        self.stream = stream
        self.lines: list[str] = []
        self.ended = False
        self._changed = trio.Event()

    async def read(self) -> None:
        buffer = b""
        async for chunk in self.stream:
            *complete, buffer = (buffer + chunk).split(b"\n")
            self.lines += [line.decode(errors="replace") for line in complete]
            self._notify()
        self.lines += [buffer.decode(errors="replace")] if buffer else []
        self.ended = True
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(self, pattern: str) -> re.Match:
        """The first line that matches `pattern`, waiting for it to come."""
        while True:
            for line in self.lines:
                if match := re.search(pattern, line):
                    return match
            if self.ended:
                raise AssertionError(f"no line matches {pattern!r}:\n" + "\n".join(self.lines))
            await self._changed.wait()

    async def wait_for_json(self, predicate) -> dict:
        """The first JSON line for which `predicate` is true, waiting for it to come."""
        while True:
            for line in self.json():
                if predicate(line):
                    return line
            if self.ended:
                raise AssertionError("no JSON line is the one awaited:\n" + "\n".join(self.lines))
            await self._changed.wait()

    def json(self) -> list[dict]:
        return [json.loads(line) for line in self.lines if line.startswith("{")]

    def __str__(self) -> str:
        return "\n".join(self.lines)


@asynccontextmanager
async def serve_process(*args: str, **options):
    """`python -m stt serve --engine scripted --port 0 --log-format json ARGS`: (process, its ProcessLog).
    `options` go to trio.lowlevel.open_process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STT_")}
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "stt", "serve", "--engine", "scripted", "--port", "0", "--log-format", "json", *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT, env=env, **options)
    log = ProcessLog(process.stdout)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(log.read)
            yield process, log
            nursery.cancel_scope.cancel()
    finally:
        if process.returncode is None:
            process.kill()
        with trio.CancelScope(shield=True):
            await process.wait()


async def listening_port(log: ProcessLog) -> int:
    return int((await log.wait_for(r"listening on ws://127\.0\.0\.1:(\d+)"))[1])


async def test_sigterm_lets_the_session_finish_refuses_new_connections_and_exits_0():
    async with serve_process("--shutdown-grace", "10") as (process, log):
        with trio.fail_after(10):
            port = await listening_port(log)
            async with open_websocket_url(f"ws://127.0.0.1:{port}/v2") as ws:
                await ws.send_message(start_message())
                await receive_all(ws, until="Info")
                process.send_signal(signal.SIGTERM)
                await log.wait_for(r"shutting down: no longer accepting; 1 sessions have 10 s")
                await until_refused(port)
                await ws.send_message(silence(2.0))
                await ws.send_message(END_OF_STREAM)
                messages, _ = await receive_all(ws, until="EndOfTranscript")
            began = trio.current_time()
            code = await process.wait()
    assert code == 0 and trio.current_time() - began < 3, str(log)
    assert [m["metadata"]["transcript"] for m in messages if m["message"] == "AddTranscript"] == ["one two three four"]
    assert "Traceback" not in str(log)
    closed = [line for line in log.json() if line.get("close_code") is not None]
    assert [(c["dialect"], c["ending"], c["close_code"]) for c in closed] == [("speechmatics", "normal", 1000)]


async def test_after_the_grace_a_session_is_closed_1001_and_the_server_exits_0():
    async with serve_process("--shutdown-grace", "0.3") as (process, log):
        with trio.fail_after(10):
            port = await listening_port(log)
            async with open_websocket_url(f"ws://127.0.0.1:{port}/v2") as ws:
                await ws.send_message(start_message())
                await receive_all(ws, until="Info")
                process.send_signal(signal.SIGTERM)
                messages, code = await receive_all(ws)
            assert await process.wait() == 0, str(log)
    assert code == 1001 and messages == []
    closed = [line for line in log.json() if line.get("close_code") is not None]
    assert [(c["ending"], c["close_code"], c["previous_state"]) for c in closed] == [("shutdown", 1001, "listening")]


async def test_a_second_signal_stops_at_once():
    async with serve_process("--shutdown-grace", "30") as (process, log):
        with trio.fail_after(10):
            port = await listening_port(log)
            async with open_websocket_url(f"ws://127.0.0.1:{port}/v2") as ws:
                await ws.send_message(start_message())
                await receive_all(ws, until="Info")
                process.send_signal(signal.SIGINT)
                await log.wait_for("shutting down gracefully")
                began = trio.current_time()
                process.send_signal(signal.SIGTERM)
                code = await process.wait()
    assert code == 0 and trio.current_time() - began < 5  # not the 30 s of grace
    stops = [line for line in log.json() if "stopping at once" in line["message"]]
    assert [line["level"] for line in stops] == ["WARNING"]


async def test_a_forced_shutdown_sends_the_utterance_in_progress_as_a_final_before_the_1001():
    """A real engine on real speech, streamed at real time; SIGTERM mid-sentence, --shutdown-grace 1: the words
    spoken since the last final (here: the sentence so far; it has no pause) come as a final before the close."""
    import wave

    from tests.helpers import DATA, frames_of

    with wave.open(str(DATA / "ps_librivox_0870.wav")) as recording:  # 7.1 s, one sentence without a pause
        audio = recording.readframes(recording.getnframes())
    chunk = 3200  # 100 ms
    async with serve_process("--engine", "sphinx", "--decode-workers", "1", "--shutdown-grace", "1") as (process, log):
        with trio.fail_after(30):
            port = await listening_port(log)
            messages, sent = [], []
            async with open_websocket_url(f"ws://127.0.0.1:{port}/v2") as ws:
                await ws.send_message(start_message())
                await receive_all(ws, until="RecognitionStarted")

                async def stream():
                    for frame in frames_of(audio, chunk):
                        if len(sent) == 25:  # 2.5 s into the sentence
                            process.send_signal(signal.SIGTERM)
                        try:
                            await ws.send_message(frame)
                        except ConnectionClosed:
                            return
                        sent.append(trio.current_time())
                        await trio.sleep(0.1)

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(stream)
                    received, code = await receive_all(ws)
                    closed_at = trio.current_time()
                    nursery.cancel_scope.cancel()
                messages += received
            assert await process.wait() == 0, str(log)
    finals = [m for m in messages if m["message"] == "AddTranscript"]
    assert code == 1001 and ws.closed.reason == "server shutting down"
    audio_sent = len([t for t in sent if t < closed_at]) * chunk / 2 / 16000
    assert 3.0 <= audio_sent <= 5.0  # the grace (1 s) after 2.5 s, and the flush: the sentence is not over
    assert finals, f"no final before the 1001: {[m['message'] for m in messages]}\n{log}"
    words = [r["alternatives"][0]["content"] for f in finals for r in f["results"] if r["type"] == "word"]
    assert len(words) >= 5, words  # about 2 words a second of this sentence
    assert finals[-1]["metadata"]["end_time"] >= audio_sent - 1.5, (finals[-1]["metadata"], audio_sent)
    closed = [line for line in log.json() if line.get("close_code") is not None]
    assert [(c["ending"], c["close_code"]) for c in closed] == [("shutdown", 1001)]


class _StuckAtTheEnd:
    """An engine whose streams hear the script but never finish: a recognizer wedged at shutdown."""

    name, sample_rate, capacity = "stuck", 16000, None

    @asynccontextmanager
    async def open_stream(self, settings):
        recognizer = ScriptedRecognizer(settings)

        class Stream:
            async def feed(self, samples):
                return recognizer.feed(samples)

            async def flush(self):
                return recognizer.flush()

            async def finish(self):
                await trio.sleep_forever()

            async def configure(self, **changes):
                recognizer.configure(**changes)

        yield Stream()


async def test_a_recognizer_that_does_not_finish_delays_the_1001_by_the_flush_timeout_at_most(autojump_clock):
    from stt.session import SHUTDOWN_FLUSH_TIMEOUT

    server = Server(ServerConfig(), _StuckAtTheEnd())
    async with trio.open_nursery() as nursery:
        ws = await started_speechmatics(lambda path: connect_in_memory(server, nursery, path))
        await wait_until(lambda: len(server.sessions) == 1)
        began = trio.current_time()
        nursery.start_soon(shut_down, server, 5.0)
        messages, code = await receive_all(ws)
        took = trio.current_time() - began
        nursery.cancel_scope.cancel()
    assert code == 1001 and set(kinds(messages)) == {"AudioAdded"}
    assert took == pytest.approx(5 + SHUTDOWN_FLUSH_TIMEOUT, abs=0.1)


async def test_a_voicerun_client_gets_its_utterance_in_progress_completed_before_the_1001(autojump_clock):
    from tests.test_voicerun_server import append, receive, start

    async with in_memory_server() as (server, connect):
        ws = await connect("/ws")
        await start(ws)
        await ws.send_message(append(silence(1.0)))  # the script: "one two" so far, no final yet
        await wait_until(lambda: any(s.audio_samples for s in server.sessions))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(shut_down, server, 0.0)
            messages, code, reason = await receive(ws)
    completed = [m["text"] for m in messages if m["type"] == "transcription.completed"]
    assert completed == ["one two"] and (code, reason) == (1001, "server shutting down")
