"""The metrics: the lag clock on plain numbers; /metrics scraped after scripted-engine sessions (the values move);
lag and real-time factor measured exactly with a slow engine in virtual time."""

import json
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing
import trio_websocket
from prometheus_client.parser import text_string_to_metric_families
from trio_websocket import ConnectionClosed, ConnectionRejected, open_websocket_url

from stt.engines.inline_host import InlineEngine
from stt.engines.scripted import ScriptedRecognizer
from stt.events import Final, Partial, Word
from stt.metrics import LagClock, Metrics
from stt.server import Server
from stt.session import SessionLimits
from stt.settings import ServerConfig
from tests.helpers import connect, frames_of, receive_all, running_server, silence, start_message, wait_until
from tests.test_admin import get


def scrape_text(text: str) -> dict[tuple[str, tuple], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


async def scrape(server) -> dict[tuple[str, tuple], float]:
    status, _, body = await get(server.admin_port, "/metrics")
    assert status == 200
    return scrape_text(body.decode())


def value(samples, name: str, **labels) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


# --- the lag clock -----------------------------------------------------------------------------------------------


def test_the_lag_of_a_result_counts_from_the_arrival_of_the_audio_at_its_end():
    clock = LagClock()
    for k in range(1, 11):  # 0.1 s of audio arriving at 10, 10.1, ... 10.9
        clock.arrived(k / 10, 10 + (k - 1) / 10)
    assert clock.lag(0.35, now=11.0) == pytest.approx(0.7)  # the audio up to 0.4 s arrived at 10.3
    assert clock.lag(0.4, now=11.0) == pytest.approx(0.7)  # exactly at a batch's end: that batch
    assert clock.lag(0.05, now=11.0) == pytest.approx(1.0)
    assert clock.lag(1.2, now=11.0) == pytest.approx(0.1)  # past the audio decoded: the latest audio
    assert clock.lag(0.5, now=10.0) == 0.0  # never negative


def test_a_result_older_than_the_ring_is_not_measured():
    clock = LagClock(size=4)
    assert clock.lag(0.1, now=1.0) is None  # no audio yet
    for k in range(1, 9):
        clock.arrived(k / 10, k)
    assert clock.lag(0.2, now=10.0) is None  # its batch is gone
    assert clock.lag(0.5, now=10.0) == pytest.approx(5.0)
    clock.arrived(0.8, 99)  # no new audio: nothing changes
    assert clock.lag(0.8, now=10.0) == pytest.approx(2.0)


def test_session_metrics_count_audio_and_decode_time_and_observe_lags_of_results_with_words():
    metrics = Metrics()
    session = metrics.session("speechmatics")
    session.audio(1.0, arrived=5.0)
    session.audio(1.0, arrived=6.0)  # the same audio again: not counted twice
    session.decoded(0.25)
    word = Word("one", 0.5, 0.9)
    session.sent(Final((word,), 0.5, 0.9), now=5.5)
    session.sent(Partial((word,), 0.5, 0.9), now=5.2)
    session.sent(Final((), 1.0, 1.0), now=9.0)  # an empty final: no lag
    session.closed()
    get_value = metrics.registry.get_sample_value
    labels = {"dialect": "speechmatics"}
    assert get_value("stt_audio_seconds_total", labels) == 1.0
    assert get_value("stt_decode_seconds_total", labels) == 0.25
    assert get_value("stt_final_lag_seconds_count", labels) == 1
    assert get_value("stt_final_lag_seconds_sum", labels) == pytest.approx(0.5)
    assert get_value("stt_partial_lag_seconds_sum", labels) == pytest.approx(0.2)
    assert get_value("stt_real_time_factor_sum", labels) == pytest.approx(0.25)


# --- scraped from a running server -------------------------------------------------------------------------------


async def test_a_scripted_session_moves_the_metrics():
    async with running_server(admin_port=0) as server:
        before = await scrape(server)
        assert value(before, "stt_sessions_total", dialect="speechmatics", ending="normal", rule="LC-END-001",
                     code="1000") is None
        async with connect(server) as ws:
            await ws.send_message(start_message(partials=True))
            await receive_all(ws, until="Info")
            for frame in frames_of(silence(2.0), 3200):
                await ws.send_message(frame)
            await wait_until(lambda: any(s.lifecycle.state == "connected" for s in server.sessions))
            during = await scrape(server)
            assert value(during, "stt_sessions_active", dialect="speechmatics", state="connected") == 1
            await ws.send_message('{"message":"EndOfStream","last_seq_no":20}')
            await ws.send_message(silence(0.1))  # after EndOfStream: a warning, a rule broken without ending
            await receive_all(ws, until="EndOfTranscript")
        await wait_until(lambda: not server.sessions)
        after = await scrape(server)
    dialect = {"dialect": "speechmatics"}
    assert value(after, "stt_sessions_total", ending="normal", rule="LC-END-001", code="1000", **dialect) == 1
    assert not any(name == "stt_sessions_active" for name, _ in after)  # none under way
    assert value(after, "stt_audio_seconds_total", **dialect) == pytest.approx(2.0)
    assert value(after, "stt_decode_seconds_total", **dialect) > 0
    assert value(after, "stt_real_time_factor_count", **dialect) == 1
    assert value(after, "stt_final_lag_seconds_count", **dialect) == 1  # "one two three four"
    assert value(after, "stt_partial_lag_seconds_count", **dialect) == 4  # a partial per word
    assert 0 <= value(after, "stt_final_lag_seconds_sum", **dialect) < 5
    assert value(after, "stt_rule_violations_total", rule="SM-EOS-001", **dialect) == 1


async def test_rejections_are_counted_by_dialect_and_reason():
    async with running_server(admin_port=0, api_keys=["alpha"], max_sessions=1) as server:
        url = f"ws://127.0.0.1:{server.port}"
        with pytest.raises(ConnectionRejected):  # no dialect
            async with open_websocket_url(f"{url}/nowhere"):
                pass
        with pytest.raises(ConnectionRejected):  # a bad V-Blaze tag
            async with open_websocket_url(f"{url}/transcribe?output=nope&token=alpha"):
                pass
        with pytest.raises(ConnectionRejected):  # V-Blaze without its token: 401
            async with open_websocket_url(f"{url}/transcribe"):
                pass
        async with connect(server, headers=[("Authorization", "Bearer wrong")]) as ws:  # Speechmatics: 4001
            with pytest.raises(ConnectionClosed):
                while True:
                    await ws.get_message()
        async with connect(server, headers=[("Authorization", "Bearer alpha")]) as holder:
            await holder.send_message(start_message())
            await receive_all(holder, until="RecognitionStarted")
            async with connect(server, headers=[("Authorization", "Bearer alpha")]) as ws:  # busy: 4005
                with pytest.raises(ConnectionClosed):
                    while True:
                        await ws.get_message()
            await wait_until(lambda: server.endings[("speechmatics", "busy", "SM-LIMIT-001")] == 1
                             and server.endings[("speechmatics", "unauthorised", "SM-AUTH-001")] == 1)
            samples = await scrape(server)
    rejected = {labels: v for (name, labels), v in samples.items() if name == "stt_connections_rejected_total"}
    assert rejected == {
        (("dialect", "none"), ("reason", "no_dialect")): 1,
        (("dialect", "vblaze"), ("reason", "bad_handshake")): 1,
        (("dialect", "vblaze"), ("reason", "unauthorised")): 1,
        (("dialect", "speechmatics"), ("reason", "unauthorised")): 1,
        (("dialect", "speechmatics"), ("reason", "max_sessions")): 1,
    }
    assert value(samples, "stt_sessions_total", dialect="speechmatics", ending="busy", rule="SM-LIMIT-001",
                  code="4005") == 1
    assert value(samples, "stt_sessions_total", dialect="speechmatics", ending="unauthorised", rule="SM-AUTH-001",
                  code="4001") == 1


async def test_a_dropped_connection_is_counted_with_1006():
    async with running_server(admin_port=0) as server:
        async with connect(server) as ws:
            await ws.send_message(start_message())
            await receive_all(ws, until="Info")
            await ws._stream.aclose()
        await wait_until(lambda: not server.sessions)
        samples = await scrape(server)
    assert value(samples, "stt_sessions_total", dialect="speechmatics", ending="dropped", rule="LC-END-002",
                 code="1006") == 1


# --- exact lags and real-time factor (a slow engine, virtual time) ------------------------------------------------


class SlowStream:
    def __init__(self, inner, delay: float):
        self.inner, self.delay = inner, delay

    async def feed(self, samples):
        await trio.sleep(self.delay)
        return await self.inner.feed(samples)

    async def flush(self):
        return await self.inner.flush()

    async def finish(self):
        return await self.inner.finish()

    async def configure(self, **changes):
        await self.inner.configure(**changes)


class SlowEngine:
    """The scripted engine, taking `delay` seconds per feed."""

    name, sample_rate, capacity = "slow", 16000, None

    def __init__(self, delay: float):
        self.delay = delay
        self.inner = InlineEngine("scripted", 16000, ScriptedRecognizer)

    @asynccontextmanager
    async def open_stream(self, settings):
        async with self.inner.open_stream(settings) as stream:
            yield SlowStream(stream, self.delay)


async def test_lag_and_real_time_factor_of_a_paced_client_are_exact(autojump_clock):
    server = Server(ServerConfig(limits=SessionLimits()), SlowEngine(delay=0.05))
    client_stream, server_stream = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:

        async def serve_one():
            await server.handle(await trio_websocket.wrap_server_stream(nursery, server_stream))

        nursery.start_soon(serve_one)
        ws = await trio_websocket.wrap_client_stream(nursery, client_stream, "localhost", "/v2")
        await ws.send_message(start_message(partials=True))
        await receive_all(ws, until="Info")

        async def read():
            while json.loads(await ws.get_message())["message"] != "EndOfTranscript":
                pass
            await ws.aclose()

        nursery.start_soon(read)
        for frame in frames_of(silence(2.0), 3200):  # 0.1 s of audio every 0.1 s: the decoder is idle for each
            await ws.send_message(frame)
            await trio.sleep(0.1)
        await ws.send_message('{"message":"EndOfStream","last_seq_no":20}')
        await wait_until(lambda: server.endings)
        nursery.cancel_scope.cancel()
    get_value = server.metrics.registry.get_sample_value
    labels = {"dialect": "speechmatics"}
    assert get_value("stt_partial_lag_seconds_count", labels) == 4
    assert get_value("stt_partial_lag_seconds_sum", labels) == pytest.approx(4 * 0.05)
    assert get_value("stt_final_lag_seconds_count", labels) == 1
    assert get_value("stt_final_lag_seconds_sum", labels) == pytest.approx(0.05)
    assert get_value("stt_real_time_factor_count", labels) == 1
    assert get_value("stt_real_time_factor_sum", labels) == pytest.approx(0.5)  # 20 feeds of 0.05 s for 2 s
    assert get_value("stt_decode_seconds_total", labels) == pytest.approx(1.0)
