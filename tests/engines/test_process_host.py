"""The process host: recognizers in worker processes, driven from trio."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time

import numpy as np
import pytest
import trio
import trio.testing

from stt.engines.base import EngineError, StreamSettings
from stt.engines.process_host import open_process_engine
from tests.engines.test_sphinx import decode, load
from tests.helpers import gone

SPHINX = "stt.engines.sphinx:SphinxRecognizer"
FAULTY = "tests.engines.test_process_host:FaultyRecognizer"  # imported by the spawned workers


class FaultyRecognizer:
    """A cheap stand-in recognizer that misbehaves on demand (runs in the workers)."""

    sample_rate = 16000

    def __init__(self, settings: StreamSettings) -> None:
        if settings.language == "xx":
            raise ValueError("no such language")
        self.fed = 0

    def feed(self, samples: np.ndarray) -> list:
        if len(samples) == 13:
            raise ValueError("unlucky 13")
        if len(samples) == 7:
            time.sleep(0.5)
        self.fed += len(samples)
        return [("fed", self.fed)]

    def flush(self) -> list:
        return [("flushed", self.fed)]

    def finish(self) -> list:
        return [("finished", self.fed)]

    def configure(self, partials=None, max_delay=None) -> None:
        if max_delay is not None and max_delay < 0:
            raise ValueError("negative max_delay")

    def close(self) -> None:
        pass


@pytest.fixture(autouse=True)
def no_leaked_processes():
    assert multiprocessing.active_children() == []
    yield
    assert multiprocessing.active_children() == []


async def feed_all(stream, audio: np.ndarray, chunk: int) -> list[list]:
    calls = [await stream.feed(audio[i : i + chunk]) for i in range(0, len(audio), chunk)]
    calls.append(await stream.finish())
    return calls


async def test_results_equal_in_process_results():
    audio = load("ps_goforward")
    settings = StreamSettings(partials=True, max_delay=1.0)
    expected = [list(call) for call in decode("ps_goforward", 1600, partials=True, max_delay=1.0)]
    async with open_process_engine(SPHINX, name="sphinx", sample_rate=16000, workers=1) as engine:
        assert (engine.name, engine.sample_rate) == ("sphinx", 16000)
        async with engine.open_stream(settings) as stream:
            assert await feed_all(stream, audio, 1600) == expected
        # a second stream in the same worker reuses its decoder and gets the same results
        async with engine.open_stream(settings) as stream:
            assert await feed_all(stream, audio, 1600) == expected
    assert gone(stream.worker_pid)


async def test_two_streams_in_parallel_on_two_workers():
    names = ["ps_goforward", "ps_librivox_0880"]
    expected = {name: [list(call) for call in decode(name, 1600)] for name in names}
    got, pids = {}, {}
    async with open_process_engine(SPHINX, name="sphinx", sample_rate=16000, workers=2) as engine:
        all_pids = list(engine.pids)

        async def one(name: str) -> None:
            async with engine.open_stream(StreamSettings()) as stream:
                pids[name] = stream.worker_pid
                got[name] = await feed_all(stream, load(name), 1600)

        async with trio.open_nursery() as nursery:
            for name in names:
                nursery.start_soon(one, name)
    assert got == expected
    assert sorted(pids.values()) == sorted(all_pids)  # one stream on each worker
    assert all(gone(pid) for pid in all_pids)


async def test_a_failing_recognizer_fails_one_call_only():
    async with open_process_engine(FAULTY, name="faulty", sample_rate=16000, workers=1) as engine:
        async with engine.open_stream(StreamSettings()) as stream:
            assert await stream.feed(np.zeros(10, np.int16)) == [("fed", 10)]
            with pytest.raises(EngineError, match="ValueError: unlucky 13"):
                await stream.feed(np.zeros(13, np.int16))
            assert await stream.feed(np.zeros(5, np.int16)) == [("fed", 15)]  # the same recognizer goes on
            with pytest.raises(EngineError, match="negative max_delay"):
                await stream.configure(max_delay=-1)
            await stream.configure(partials=True)
            assert await stream.flush() == [("flushed", 15)]
        with pytest.raises(EngineError, match="no such language"):
            async with engine.open_stream(StreamSettings(language="xx")):
                pass
        async with engine.open_stream(StreamSettings()) as stream:
            assert await stream.finish() == [("finished", 0)]
        with pytest.raises(EngineError, match="closed"):
            await stream.flush()


async def test_a_cancelled_call_still_reads_its_reply():
    async with open_process_engine(FAULTY, name="faulty", sample_rate=16000, workers=1) as engine:
        async with engine.open_stream(StreamSettings()) as stream:
            started = time.monotonic()
            with trio.move_on_after(0.05) as scope:
                # Takes 0.5 s in the worker. The call is not abandoned: it completes and returns its results,
                # and the cancellation strikes at the next checkpoint.
                result = await stream.feed(np.zeros(7, np.int16))
                await trio.sleep(10)
            assert scope.cancelled_caught
            assert result == [("fed", 7)]
            assert time.monotonic() - started >= 0.45
            # a call waiting for the worker's lock is cancelled while it waits, before it sends anything
            async with trio.open_nursery() as nursery:
                nursery.start_soon(stream.feed, np.zeros(7, np.int16))
                await trio.testing.wait_all_tasks_blocked()  # it holds the lock and waits on its thread
                with trio.move_on_after(0.05) as scope:
                    await stream.feed(np.zeros(1000, np.int16))
                assert scope.cancelled_caught
            # the pipe is in step: the next call gets its own reply
            assert await stream.flush() == [("flushed", 14)]


async def test_a_killed_worker_fails_its_streams_and_is_replaced():
    async with open_process_engine(FAULTY, name="faulty", sample_rate=16000, workers=2) as engine:
        async with engine.open_stream(StreamSettings()) as doomed:
            victim = doomed.worker_pid
            os.kill(victim, signal.SIGKILL)
            with pytest.raises(EngineError, match="died"):
                await doomed.feed(np.zeros(10, np.int16))
            with pytest.raises(EngineError, match="dead"):
                await doomed.flush()
            for _ in range(2):  # both workers are live again, neither of them the victim
                async with engine.open_stream(StreamSettings()) as stream:
                    assert stream.worker_pid != victim
                    assert await stream.feed(np.zeros(10, np.int16)) == [("fed", 10)]
            assert victim not in engine.pids and len(engine.pids) == 2
        pids = list(engine.pids)
    assert all(gone(pid) for pid in pids + [victim])


async def test_a_worker_that_died_idle_is_replaced_on_the_next_open():
    async with open_process_engine(FAULTY, name="faulty", sample_rate=16000, workers=1) as engine:
        (victim,) = engine.pids
        os.kill(victim, signal.SIGKILL)
        await trio.sleep(0.2)
        async with engine.open_stream(StreamSettings()) as stream:
            assert await stream.feed(np.zeros(3, np.int16)) == [("fed", 3)]
        assert engine.pids != [victim]


async def test_bad_factories_fail_at_start_without_leaving_processes():
    with pytest.raises(EngineError, match="ModuleNotFoundError"):
        async with open_process_engine("tests.engines.no_such_module:X", name="x", sample_rate=16000, workers=2):
            pass  # pragma: no cover
    with pytest.raises(EngineError, match="8000 Hz"):
        async with open_process_engine(FAULTY, name="faulty", sample_rate=8000, workers=1):
            pass  # pragma: no cover
    with pytest.raises(ValueError):
        async with open_process_engine(FAULTY, name="faulty", sample_rate=16000, workers=0):
            pass  # pragma: no cover
