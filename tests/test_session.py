"""The session over in-memory streams, where time is virtual (autojump_clock): idle timeouts, back-pressure
from a slow engine, and the grace period after the end of the transcript."""

from contextlib import asynccontextmanager

import attrs
import trio
import trio.testing

from stt.dialects.speechmatics import SpeechmaticsDialect
from stt.session import SessionLimits
from tests.helpers import kinds, receive_all, session_pair, silence, start_message


async def test_idle_before_start_recognition_times_out_with_the_vendor_error(autojump_clock):
    async with session_pair(limits=SessionLimits(idle_timeout=180)) as (server, ws):
        start = trio.current_time()
        messages, code = await receive_all(ws)
        assert trio.current_time() - start >= 180
        assert messages == [{"message": "Error", "type": "idle_timeout",
                             "reason": "no data received for the idle timeout: 180 s without a message"}]
        assert code == 1008


async def test_idle_timer_restarts_with_every_message(autojump_clock):
    async with session_pair(limits=SessionLimits(idle_timeout=10)) as (server, ws):
        await ws.send_message(start_message())
        start = trio.current_time()
        for _ in range(5):
            await trio.sleep(8)
            await ws.send_message(silence(0.02))
        messages, code = await receive_all(ws)
        assert code == 1008 and trio.current_time() - start >= 50
        assert [m["seq_no"] for m in messages if m["message"] == "AudioAdded"] == [1, 2, 3, 4, 5]


async def test_close_grace_after_end_of_transcript(autojump_clock):
    async with session_pair(limits=SessionLimits(close_grace=5)) as (server, ws):
        await ws.send_message(start_message())
        await ws.send_message('{"message":"EndOfStream","last_seq_no":0}')
        _, code = await receive_all(ws, until="EndOfTranscript")
        start = trio.current_time()
        _, code = await receive_all(ws)
        assert code == 1000 and 5 <= trio.current_time() - start < 6


@attrs.define
class GatedStream:
    """An engine stream whose feed() waits for the test to open the gate."""

    gate: trio.Event
    fed: list

    async def feed(self, samples):
        await self.gate.wait()
        self.fed.append(len(samples))
        return []

    async def flush(self):
        return []

    async def finish(self):
        return []

    async def configure(self, partials=None, max_delay=None):
        pass


@attrs.define
class GatedEngine:
    gate: trio.Event = attrs.field(factory=trio.Event)
    fed: list = attrs.field(factory=list)
    name: str = "gated"
    sample_rate: int = 16000
    capacity: int | None = None

    @asynccontextmanager
    async def open_stream(self, settings):
        yield GatedStream(self.gate, self.fed)


async def test_a_slow_engine_slows_the_client_instead_of_buffering_without_bound():
    engine = GatedEngine()
    limits = SessionLimits(audio_queue=4)
    async with session_pair(engine=engine, limits=limits) as (server, ws):
        await ws.send_message(start_message())
        sent = 0

        async def send_many():
            nonlocal sent
            for _ in range(200):
                await ws.send_message(silence(0.02))
                sent += 1

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send_many)
            await trio.testing.wait_all_tasks_blocked()
            [session] = server.sessions
            # The engine is stuck on its first call: the session took at most the queue's worth more.
            assert session.audio_frames <= 1 + limits.audio_queue + 1
            assert sent == 200  # the in-memory stream itself buffers; a TCP socket would push back here
            engine.gate.set()
        await ws.send_message('{"message":"EndOfStream","last_seq_no":200}')
        messages, _ = await receive_all(ws, until="EndOfTranscript")
        assert [m["seq_no"] for m in messages if m["message"] == "AudioAdded"][-1] == 200
        assert sum(engine.fed) == 200 * 320  # every sample reached the engine, in fewer, larger calls
        assert len(engine.fed) < 200


class StallingSendStream(trio.abc.SendStream):
    """A peer that stops reading: after `limit` bytes, every send blocks forever (a full TCP window)."""

    def __init__(self, inner: trio.abc.SendStream, limit: int):
        self.inner, self.limit, self.sent = inner, limit, 0

    async def send_all(self, data):
        if self.sent + len(data) > self.limit:
            await trio.sleep_forever()
        self.sent += len(data)
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self):
        await self.inner.wait_send_all_might_not_block()

    async def aclose(self):
        await self.inner.aclose()


def session_with_a_peer_that_stalls(stalling: type[StallingSendStream]):
    """A session whose client stops reading after 2000 bytes, the way `stalling` says; send timeout 10 s."""
    to_client_send, to_client_recv = trio.testing.memory_stream_one_way_pair()
    to_server_send, to_server_recv = trio.testing.memory_stream_one_way_pair()
    server_stream = trio.StapledStream(stalling(to_client_send, limit=2000), to_server_recv)
    client_stream = trio.StapledStream(to_server_send, to_client_recv)
    return session_pair(limits=SessionLimits(send_timeout=10), streams=(client_stream, server_stream))


async def test_a_client_that_stops_reading_is_dropped_after_the_send_timeout(autojump_clock):
    async with session_with_a_peer_that_stalls(StallingSendStream) as (server, ws):
        await ws.send_message(start_message())
        for _ in range(200):  # the client sends and never reads
            await ws.send_message(silence(0.02))
        start = trio.current_time()
        while server.sessions or not server.endings:
            await trio.sleep(1)
        assert server.endings[("speechmatics", "dropped", "LC-END-002")] == 1
        assert trio.current_time() - start <= 3 * 10  # the send timeout, then a bounded close


class StallingOnceSendStream(StallingSendStream):
    """A peer that stops reading for a while, then reads again (a client starved of CPU): after `limit` bytes,
    one send blocks until it is cancelled; the sends after it go through."""

    async def send_all(self, data):
        if self.limit is not None and self.sent + len(data) > self.limit:
            self.limit = None
            await trio.sleep_forever()
        self.sent += len(data)
        await self.inner.send_all(data)


async def test_a_client_dropped_for_not_reading_is_not_told_the_session_closed_normally(autojump_clock):
    """The server counts such a session as dropped (1006): the client must see the connection drop too, not a
    Close 1000 that says all went well (found by bench/bench_abuse.py: three FLAC bombs starved a good client)."""
    async with session_with_a_peer_that_stalls(StallingOnceSendStream) as (server, ws):
        await ws.send_message(start_message())
        for _ in range(200):
            await ws.send_message(silence(0.02))
        while server.sessions or not server.endings:
            await trio.sleep(1)
        assert server.endings[("speechmatics", "dropped", "LC-END-002")] == 1
        messages, code = await receive_all(ws)
        assert code == 1006 and "Error" not in kinds(messages)


async def test_unauthorised_in_memory_too():
    async with session_pair(api_keys=("secret",)) as (server, ws):
        messages, code = await receive_all(ws)
        assert kinds(messages) == ["Error"] and code == 4001
        assert messages[0]["type"] == "not_authorised"


async def test_waiting_on_a_slow_engine_is_not_the_client_being_idle(autojump_clock):
    engine = GatedEngine()
    async with session_pair(engine=engine, limits=SessionLimits(idle_timeout=10, audio_queue=2)) as (server, ws):
        await ws.send_message(start_message())
        for _ in range(10):  # more than the queue holds: the reader waits for the engine
            await ws.send_message(silence(0.02))
        await trio.sleep(60)  # the engine is stuck for six idle timeouts
        assert server.sessions and not server.endings
        engine.gate.set()
        await ws.send_message('{"message":"EndOfStream","last_seq_no":10}')
        messages, _ = await receive_all(ws, until="EndOfTranscript")
        assert [m["seq_no"] for m in messages if m["message"] == "AudioAdded"][-1] == 10


class StartWithinFifteenSeconds(SpeechmaticsDialect):
    start_timeout = 15.0


async def test_a_dialect_start_timeout_ends_a_session_that_never_starts(autojump_clock, monkeypatch):
    monkeypatch.setattr("stt.server.dialect_for", lambda path: StartWithinFifteenSeconds)
    async with session_pair(limits=SessionLimits(idle_timeout=180)) as (server, ws):
        start = trio.current_time()
        messages, code = await receive_all(ws)
        assert 15 <= trio.current_time() - start < 16 and code == 1008
        assert messages == [{"message": "Error", "type": "idle_timeout",
                             "reason": "no data received for the idle timeout: no start message within 15 s"}]


async def test_a_dialect_start_timeout_stops_counting_once_started(autojump_clock, monkeypatch):
    monkeypatch.setattr("stt.server.dialect_for", lambda path: StartWithinFifteenSeconds)
    async with session_pair(limits=SessionLimits(idle_timeout=30)) as (server, ws):
        await ws.send_message(start_message())
        start = trio.current_time()
        messages, code = await receive_all(ws)
        assert 30 <= trio.current_time() - start < 31 and code == 1008  # the message idle timeout, not 15 s
