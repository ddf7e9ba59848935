"""The Whisper engine: decoder scheduling (finals first, partials only on spare decoders), the order of a
stream's results, and the real model loading and decoding with no network."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import trio
import trio.testing

from stt.engines.base import EngineError, StreamSettings
from stt.engines.inline_host import InlineEngine
from stt.engines.segmenter import Utterance
from stt.engines.sphinx import SphinxRecognizer
from stt.engines.whisper import DecodeOptions, WhisperEngine, check_model
from stt.events import Final, Partial, SpeechStarted, SpeechStopped, Word
from tests.engines.test_sphinx import load, two_utterances

SR = 16000


class FakeRunner:
    """Stands in for the model: one word per half second of audio, after `delay` seconds of blocking work;
    with `hold`, each decode also waits for a release()."""

    def __init__(self, delay: float = 0.0, hold: bool = False) -> None:
        self.delay, self.hold = delay, hold
        self.calls: list[tuple[float, int, DecodeOptions]] = []
        self.running = 0
        self.most_running = 0
        self._gate = threading.Semaphore(0)
        self._lock = threading.Lock()

    def release(self, n: int = 1) -> None:
        for _ in range(n):
            self._gate.release()

    def decode(self, audio: np.ndarray, start: float, options: DecodeOptions) -> tuple[Word, ...]:
        with self._lock:
            self.calls.append((start, len(audio), options))
            self.running += 1
            self.most_running = max(self.most_running, self.running)
        try:
            if self.hold:
                assert self._gate.acquire(timeout=10)
            time.sleep(self.delay)
        finally:
            with self._lock:
                self.running -= 1
        n = max(1, len(audio) // (SR // 2))
        step = len(audio) / SR / n
        return tuple(Word(f"w{i}", round(start + i * step, 2), round(start + (i + 1) * step, 2)) for i in range(n))


def utterance(seconds: float, start: float = 0.0) -> Utterance:
    return Utterance(int(start * SR), np.ones(int(seconds * SR), np.int16))


async def wait_for(predicate) -> None:
    with trio.fail_after(5):
        while not predicate():
            await trio.sleep(0.005)


# --- scheduling ----------------------------------------------------------------------------------------------


async def test_finals_wait_their_turn_and_a_partial_takes_no_decoder_a_final_waits_for():
    runner = FakeRunner(hold=True)
    async with trio.open_nursery() as nursery:
        engine = WhisperEngine(runner, workers=1, nursery=nursery, partials="redecode")
        done: list[str] = []

        async def final(name: str) -> None:
            await engine.decode_final(utterance(1.0), DecodeOptions())
            done.append(name)

        nursery.start_soon(final, "first")
        await wait_for(lambda: runner.running == 1)
        nursery.start_soon(final, "second")
        await trio.testing.wait_all_tasks_blocked()
        delivered = []
        assert not engine.try_partial(utterance(1.0), DecodeOptions(), delivered.append)  # the decoder is busy
        runner.release()
        await wait_for(lambda: done == ["first"] and runner.running == 1)  # handed straight to the second
        assert not engine.try_partial(utterance(1.0), DecodeOptions(), delivered.append)
        runner.release()
        await wait_for(lambda: done == ["first", "second"])
        assert engine.try_partial(utterance(1.0), DecodeOptions(), delivered.append)  # now it is idle
        runner.release()
        await wait_for(lambda: len(delivered) == 1)
    assert engine.stats.partials_skipped == 2 and engine.stats.partials == 1 and engine.stats.finals == 2
    assert runner.most_running == 1


async def test_partials_leave_a_decoder_free_for_finals():
    runner = FakeRunner(hold=True)
    async with trio.open_nursery() as nursery:
        engine = WhisperEngine(runner, workers=3, nursery=nursery, partials="redecode")
        ok = [engine.try_partial(utterance(1.0), DecodeOptions(), lambda words: None) for _ in range(3)]
        assert ok == [True, True, False]  # two of three decoders at most
        await wait_for(lambda: runner.running == 2)
        finished = trio.Event()

        async def final() -> None:
            await engine.decode_final(utterance(1.0), DecodeOptions())
            finished.set()

        nursery.start_soon(final)
        await wait_for(lambda: runner.running == 3)  # the final did not wait for the partials
        runner.release(3)
        await finished.wait()


async def test_a_partial_does_not_take_the_last_free_decoder_while_a_final_decodes():
    runner = FakeRunner(hold=True)
    async with trio.open_nursery() as nursery:
        engine = WhisperEngine(runner, workers=2, nursery=nursery, partials="redecode")
        nursery.start_soon(engine.decode_final, utterance(1.0), DecodeOptions())
        await wait_for(lambda: runner.running == 1)
        # One decoder is free, but a partial on it would leave the next final waiting for the partial.
        assert not engine.try_partial(utterance(1.0), DecodeOptions(), lambda words: None)
        runner.release()
        await wait_for(lambda: runner.running == 0)
        assert engine.try_partial(utterance(1.0), DecodeOptions(), lambda words: None)  # both free: one is left
        runner.release()
    assert engine.stats.partials_skipped == 1 and engine.stats.partials == 1


async def test_a_cancelled_final_leaves_the_queue_and_no_decoder_is_lost():
    runner = FakeRunner(hold=True)
    async with trio.open_nursery() as nursery:
        engine = WhisperEngine(runner, workers=1, nursery=nursery, partials="none")
        nursery.start_soon(engine.decode_final, utterance(1.0), DecodeOptions())
        await wait_for(lambda: runner.running == 1)
        nursery.start_soon(engine.decode_final, utterance(1.0), DecodeOptions())
        ran = []

        async def cancelled_waiter(task_status=trio.TASK_STATUS_IGNORED) -> None:
            with trio.CancelScope() as scope:
                task_status.started(scope)
                await engine.decode_final(utterance(1.0), DecodeOptions())
                ran.append(True)

        scope = await nursery.start(cancelled_waiter)
        await trio.testing.wait_all_tasks_blocked()
        scope.cancel()
        runner.release(2)  # the first, then the second waiter; the cancelled one never decodes
        await wait_for(lambda: engine.stats.finals == 2)
        assert engine.try_partial(utterance(1.0), DecodeOptions(), lambda words: None)  # the decoder is free again
        runner.release()
    assert ran == [] and len(runner.calls) == 3


# --- a stream's results ----------------------------------------------------------------------------------------


async def stream_results(engine: WhisperEngine, audio: np.ndarray, settings: StreamSettings, chunk: int = 1600,
                         pace: float = 0.0) -> list:
    out = []
    async with engine.open_stream(settings) as stream:
        for i in range(0, len(audio), chunk):
            out += await stream.feed(audio[i : i + chunk])
            await trio.sleep(pace)  # lets background partials finish between calls, as real time would
        out += await stream.finish()
    return out


def check_order(results: list) -> None:
    """Partials before the final of their utterance, inside it, monotone; finals tile; events alternate."""
    last_final_end = 0.0
    last_partial_end = 0.0
    speaking = False
    for r in results:
        if isinstance(r, SpeechStarted):
            assert not speaking
            speaking = True
        elif isinstance(r, SpeechStopped):
            assert speaking
            speaking = False
        elif isinstance(r, Partial):
            assert speaking
            assert r.start >= last_final_end - 1e-9 and r.end > last_partial_end
            assert all(w.start >= r.start - 0.02 for w in r.words)
            last_partial_end = r.end
        elif isinstance(r, Final):
            assert r.start >= last_final_end - 1e-9
            last_final_end = r.end
    assert not speaking


async def test_redecoded_partials_come_before_their_final_and_are_superseded_by_it():
    runner = FakeRunner(delay=0.01)
    async with trio.open_nursery() as nursery:
        engine = WhisperEngine(runner, workers=2, nursery=nursery, partials="redecode")
        results = await stream_results(engine, two_utterances(), StreamSettings(partials=True, max_delay=10),
                                       pace=0.02)
    kinds = [type(r).__name__ for r in results]
    assert kinds.count("Final") == 2 and kinds.count("SpeechStarted") == 2
    assert kinds.index("Partial") < kinds.index("Final")
    check_order(results)
    # Finals decode the speech without its endpointing silence; partials are decoded without word alignment.
    finals = [call for call in runner.calls if call[2].word_timestamps]
    partials = [call for call in runner.calls if not call[2].word_timestamps]
    assert len(finals) == 2 and partials
    final_results = [r for r in results if isinstance(r, Final)]
    assert all(n < (f.end - f.start) * SR for (_, n, _), f in zip(finals, final_results))


async def test_no_partials_when_the_stream_did_not_ask():
    runner = FakeRunner()
    async with trio.open_nursery() as nursery:
        engine = WhisperEngine(runner, workers=2, nursery=nursery, partials="redecode")
        results = await stream_results(engine, two_utterances(), StreamSettings(partials=False), pace=0.01)
    assert not any(isinstance(r, Partial) for r in results)
    assert len(runner.calls) == 2  # one decode per utterance


async def test_two_pass_partials_come_from_the_streaming_recognizer_and_whisper_finals_replace_them():
    runner = FakeRunner()
    sphinx = InlineEngine("sphinx", SR, SphinxRecognizer)
    async with trio.open_nursery() as nursery:
        engine = WhisperEngine(runner, workers=1, nursery=nursery, partials="two-pass", partial_engine=sphinx)
        results = await stream_results(engine, two_utterances(), StreamSettings(partials=True, max_delay=10),
                                       chunk=480)
    check_order(results)
    partials = [r for r in results if isinstance(r, Partial)]
    finals = [r for r in results if isinstance(r, Final)]
    assert len(partials) >= 6  # word by word
    assert {w.text for p in partials for w in p.words} >= {"go", "forward"}  # sphinx's words
    assert [w.text for f in finals for w in f.words][:1] == ["w0"]  # the finals are the (fake) Whisper's
    assert len(runner.calls) == 2  # no re-decodes in two-pass mode


async def test_under_load_every_final_arrives_and_partials_are_the_ones_dropped():
    runner = FakeRunner(delay=0.05)
    async with trio.open_nursery() as nursery:
        engine = WhisperEngine(runner, workers=1, nursery=nursery, partials="redecode")
        outs: list[list] = []

        async def one() -> None:
            outs.append(await stream_results(engine, two_utterances(), StreamSettings(partials=True, max_delay=10),
                                             chunk=800, pace=0.005))

        async with trio.open_nursery() as streams:
            for _ in range(4):
                streams.start_soon(one)
    for results in outs:
        assert sum(isinstance(r, Final) and bool(r.words) for r in results) == 2
        check_order(results)
    assert engine.stats.finals == 8
    assert engine.stats.partials_skipped > 0
    assert runner.most_running == 1


async def test_a_language_the_model_does_not_know_is_refused():
    async with trio.open_nursery() as nursery:
        engine = WhisperEngine(FakeRunner(), workers=1, nursery=nursery, partials="none")
        with pytest.raises(ValueError, match="English"):
            async with engine.open_stream(StreamSettings(language="de")):
                pass


# --- the real model -----------------------------------------------------------------------------------------


def test_a_model_is_a_local_directory_never_a_name(tmp_path):
    with pytest.raises(EngineError, match="not a CTranslate2 Whisper model directory"):
        check_model("tiny.en")
    with pytest.raises(EngineError, match="model.bin"):
        check_model(tmp_path)
    assert (check_model(None) / "model.bin").is_file()  # the packaged default


def test_the_default_model_loads_and_decodes_with_no_network():
    script = (
        "import asyncio, numpy as np, trio\n"
        "from stt.engines.whisper import WhisperRunner, DecodeOptions, check_model\n"
        "from tests.engines.test_sphinx import load\n"
        "runner = WhisperRunner(check_model(None), workers=1)\n"
        "words = runner.decode(load('ps_goforward'), 0.0, DecodeOptions())\n"
        "print(' '.join(w.text for w in words))\n"
        "print(all(0 <= w.start <= w.end <= 2.8 and 0 <= w.confidence <= 1 for w in words))\n"
    )
    # The hub is off, and every connection would go to a proxy that is not there.
    env = dict(os.environ, HF_HUB_OFFLINE="1", HTTPS_PROXY="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9",
               ALL_PROXY="http://127.0.0.1:9")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120,
                          cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    assert done.returncode == 0, done.stderr[-2000:]
    text, timed = done.stdout.splitlines()
    assert text == "go forward ten meters"
    assert timed == "True"


async def test_hints_and_the_last_final_reach_the_decoder():
    runner = FakeRunner()
    async with trio.open_nursery() as nursery:
        engine = WhisperEngine(runner, workers=1, nursery=nursery, partials="none")
        await stream_results(engine, load("ps_librivox_0870"), StreamSettings(max_delay=2.0, hints=("dashwood",)))
    options = [call[2] for call in runner.calls]
    assert len(options) >= 3 and all(o.hints == ("dashwood",) for o in options)
    assert options[0].prompt == ""  # the first utterance follows nothing
    assert all(o.prompt.startswith("w0") for o in options[1:])  # the others go on from a cut: the text before
