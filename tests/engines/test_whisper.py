"""The Whisper engine: the decode scheduler (finals first, partials on what is left, shed under load), the
order of a stream's results (partials at real time and faster, LocalAgreement, finals supersede), the loop
guard, the cost model's capacity, the model's integrity check, and the real model decoding with no network."""

from __future__ import annotations

import os
import shutil
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
from stt.engines.sphinx import SphinxRecognizer
from stt.engines.whisper import LocalAgreement, WhisperEngine
from stt.engines.whisper_decoder import (Decoded, DecodeOptions, looping, pad_to_window, window_frames,
                                         WhisperRunner)
from stt.engines.whisper_model import BUNDLED_DIGESTS, check_model, default_model
from stt.engines.whisper_scheduler import CostModel, DecodeScheduler
from stt.events import Final, Partial, SpeechStarted, SpeechStopped, Word
from tests.engines.test_sphinx import load, two_utterances

SR = 16000
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class FakeRunner:
    """Stands in for the model: one word per half second of audio, after `delay` seconds of blocking work;
    with `hold`, each decode also waits for a release(); `loop_partials`: every partial comes back looped."""

    def __init__(self, delay: float = 0.0, hold: bool = False, loop_partials: bool = False) -> None:
        self.delay, self.hold, self.loop_partials = delay, hold, loop_partials
        self.calls: list[tuple[float, int, DecodeOptions]] = []
        self.running = 0
        self.most_running = 0
        self._gate = threading.Semaphore(0)
        self._lock = threading.Lock()

    def release(self, n: int = 1) -> None:
        for _ in range(n):
            self._gate.release()

    def decode(self, audio: np.ndarray, start: float, options: DecodeOptions) -> Decoded:
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
        if self.loop_partials and not options.final:
            return Decoded((), looped=True, seconds=self.delay)
        n = max(1, len(audio) // (SR // 2))
        step = len(audio) / SR / n
        words = tuple(Word(f"w{i}", round(start + i * step, 2), round(start + (i + 1) * step, 2)) for i in range(n))
        return Decoded(words, seconds=self.delay)


def audio(seconds: float) -> np.ndarray:
    return np.ones(int(seconds * SR), np.int16)


async def wait_for(predicate) -> None:
    with trio.fail_after(5):
        while not predicate():
            await trio.sleep(0.005)


def final_options() -> DecodeOptions:
    return DecodeOptions(final=True)


# --- the scheduler -------------------------------------------------------------------------------------------


async def test_a_final_goes_before_every_waiting_partial():
    runner = FakeRunner(hold=True)
    async with trio.open_nursery() as nursery:
        scheduler = DecodeScheduler(runner, 1, nursery)
        delivered = []
        scheduler.request_partial("a", lambda: (audio(1.0), 0.0, DecodeOptions(final=False)), delivered.append)
        await wait_for(lambda: runner.running == 1)  # the partial holds the only decoder
        scheduler.request_partial("b", lambda: (audio(1.0), 0.0, DecodeOptions(final=False)), delivered.append)
        done = []

        async def final() -> None:
            await scheduler.decode_final(audio(2.0), 0.0, final_options())
            done.append(True)

        nursery.start_soon(final)
        await trio.testing.wait_all_tasks_blocked()
        runner.release()  # the running partial ends: the decoder goes to the final, not to b's partial
        await wait_for(lambda: len(runner.calls) == 2)
        assert runner.calls[1][2].final
        runner.release(2)
        await wait_for(lambda: done and len(delivered) == 2)
    assert [c[2].final for c in runner.calls] == [False, True, False]


async def test_a_partial_decodes_the_audio_there_is_when_a_decoder_takes_it():
    runner = FakeRunner(hold=True)
    async with trio.open_nursery() as nursery:
        scheduler = DecodeScheduler(runner, 1, nursery)
        nursery.start_soon(scheduler.decode_final, audio(1.0), 0.0, final_options())
        await wait_for(lambda: runner.running == 1)
        newest = [audio(0.5)]
        scheduler.request_partial("a", lambda: (newest[0], 0.0, DecodeOptions(final=False)), lambda d: None)
        newest[0] = audio(3.0)  # more audio came while the request waited
        runner.release(2)
        await wait_for(lambda: len(runner.calls) == 2)
    assert runner.calls[1][1] == 3 * SR


async def test_a_partial_no_longer_wanted_is_shed_without_a_decode():
    runner = FakeRunner(hold=True)
    async with trio.open_nursery() as nursery:
        scheduler = DecodeScheduler(runner, 1, nursery)
        nursery.start_soon(scheduler.decode_final, audio(1.0), 0.0, final_options())
        await wait_for(lambda: runner.running == 1)
        scheduler.request_partial("gone", lambda: None, lambda d: None)  # its utterance ended meanwhile
        scheduler.request_partial("cancelled", lambda: (audio(1.0), 0.0, DecodeOptions(final=False)), lambda d: None)
        scheduler.cancel_partial("cancelled")
        runner.release()
        await wait_for(lambda: runner.running == 0 and scheduler.busy == 0)
    assert len(runner.calls) == 1 and scheduler.stats.partials_shed == 2


async def test_a_cancelled_final_leaves_the_queue_and_no_decoder_is_lost():
    runner = FakeRunner(hold=True)
    async with trio.open_nursery() as nursery:
        scheduler = DecodeScheduler(runner, 1, nursery)
        nursery.start_soon(scheduler.decode_final, audio(1.0), 0.0, final_options())
        await wait_for(lambda: runner.running == 1)
        ran = []

        async def cancelled_waiter(task_status=trio.TASK_STATUS_IGNORED) -> None:
            with trio.CancelScope() as scope:
                task_status.started(scope)
                await scheduler.decode_final(audio(1.0), 0.0, final_options())
                ran.append(True)

        scope = await nursery.start(cancelled_waiter)
        await trio.testing.wait_all_tasks_blocked()
        scope.cancel()
        await trio.testing.wait_all_tasks_blocked()
        runner.release()
        await wait_for(lambda: scheduler.busy == 0)
        nursery.start_soon(scheduler.decode_final, audio(1.0), 0.0, final_options())  # the decoder is free again
        runner.release()
        await wait_for(lambda: scheduler.stats.finals == 2)
    assert ran == [] and len(runner.calls) == 2


async def test_a_failed_final_decode_is_an_engine_error():
    class Broken(FakeRunner):
        def decode(self, audio, start, options):
            raise RuntimeError("boom")

    async with trio.open_nursery() as nursery:
        scheduler = DecodeScheduler(Broken(), 1, nursery)
        with pytest.raises(EngineError, match="boom"):
            await scheduler.decode_final(audio(1.0), 0.0, final_options())
        assert scheduler.busy == 0


def test_capacity_follows_what_a_decode_costs_here():
    quiet = CostModel.from_probe(0.037, workers=2)  # the reference machine
    assert quiet.capacity == 12
    assert CostModel.from_probe(0.037, workers=1).capacity == 6
    assert CostModel.from_probe(0.074, workers=2).capacity == 6  # decodes twice as slow: half the streams
    assert CostModel.from_probe(5.0, workers=2).capacity == 1  # never 0


async def test_the_engine_exposes_its_capacity_for_admission():
    async with trio.open_nursery() as nursery:
        cost = CostModel.from_probe(0.037, workers=2)
        assert WhisperEngine(FakeRunner(), 2, nursery, "redecode", cost=cost).capacity == 12
        assert WhisperEngine(FakeRunner(), 2, nursery, "none", cost=cost).capacity > 12  # finals only
        assert WhisperEngine(FakeRunner(), 2, nursery, "redecode", cost=cost, capacity=3).capacity == 3  # configured
        assert WhisperEngine(FakeRunner(), 2, nursery, "redecode").capacity is None  # unknown


# --- a stream's results ----------------------------------------------------------------------------------------


async def stream_results(engine: WhisperEngine, samples: np.ndarray, settings: StreamSettings, chunk: int = 1600,
                         pace: float | None = None) -> list:
    """Feed `samples` in chunks: at real time (pace None: one chunk per chunk of audio, on an absolute
    schedule), or `pace` seconds apart (0: as fast as the engine takes them, with a checkpoint between, as a
    session has)."""
    out = []
    async with engine.open_stream(settings) as stream:
        t0 = trio.current_time()
        for i in range(0, len(samples), chunk):
            out += await stream.feed(samples[i: i + chunk])
            if pace is None:
                await trio.sleep_until(t0 + (i + chunk) / SR)
            else:
                await trio.sleep(pace)
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


def partials_per_utterance(results: list) -> list[int]:
    counts, n = [], 0
    for r in results:
        if isinstance(r, Partial):
            n += 1
        elif isinstance(r, Final):
            counts.append(n)
            n = 0
    return counts


async def test_real_time_partials_come_every_half_second_before_their_final_which_supersedes_them():
    runner = FakeRunner(delay=0.01)
    async with trio.open_nursery() as nursery:
        engine = WhisperEngine(runner, 2, nursery, "redecode")
        speech = two_utterances()
        results = await stream_results(engine, speech, StreamSettings(partials=True, max_delay=10))
    check_order(results)
    kinds = [type(r).__name__ for r in results]
    assert kinds.count("Final") == 2 and kinds.count("SpeechStarted") == 2
    assert all(n >= 2 for n in partials_per_utterance(results))  # each utterance of 1.5 s or more: several
    assert kinds.index("Partial") < kinds.index("Final")
    # Finals decode the speech without its endpointing silence; partials the utterance so far, unaligned.
    finals = [call for call in runner.calls if call[2].final]
    final_results = [r for r in results if isinstance(r, Final)]
    assert len(finals) == 2 and all(n < (f.end - f.start) * SR for (_, n, _), f in zip(finals, final_results))
    partial_lengths = [n for _, n, o in runner.calls if not o.final]
    assert partial_lengths[0] >= 0.5 * SR and len(partial_lengths) >= 4


async def test_a_stream_sent_faster_than_real_time_gets_partials_within_a_share_of_its_finals_decode_time():
    runner = FakeRunner(delay=0.005)
    async with trio.open_nursery() as nursery:
        engine = WhisperEngine(runner, 2, nursery, "redecode")
        speech = np.concatenate([two_utterances()] * 6)
        seconds = len(speech) / SR
        began = trio.current_time()
        # 100 ms of audio every 3 ms: over 30 times real time
        results = await stream_results(engine, speech, StreamSettings(partials=True, max_delay=10), pace=0.003)
        wall = trio.current_time() - began
    assert wall < seconds / 3  # much faster than real time
    check_order(results)
    partials = [r for r in results if isinstance(r, Partial)]
    counts = partials_per_utterance(results)
    assert sum(c > 0 for c in counts) >= 2  # partials come, in more than one utterance ...
    finals = sum(1 for _, _, o in runner.calls if o.final)
    decoded = sum(1 for _, _, o in runner.calls if not o.final)
    assert decoded <= 1 + 0.2 * finals + 1  # ... and cost at most a fifth of its finals' decodes (after the first)
    assert len(partials) <= decoded


async def test_a_looping_hypothesis_is_never_shown():
    runner = FakeRunner(delay=0.01, loop_partials=True)
    async with trio.open_nursery() as nursery:
        engine = WhisperEngine(runner, 2, nursery, "redecode")
        results = await stream_results(engine, two_utterances(), StreamSettings(partials=True, max_delay=10))
    assert any(not o.final for _, _, o in runner.calls)  # partials were decoded ...
    assert not any(isinstance(r, Partial) for r in results)  # ... and dropped
    assert engine.stats.partials_looped > 0
    assert sum(isinstance(r, Final) and bool(r.words) for r in results) == 2


async def test_no_partials_when_the_stream_did_not_ask():
    runner = FakeRunner()
    async with trio.open_nursery() as nursery:
        engine = WhisperEngine(runner, 2, nursery, "redecode")
        results = await stream_results(engine, two_utterances(), StreamSettings(partials=False), pace=0.01)
    assert not any(isinstance(r, Partial) for r in results)
    assert len(runner.calls) == 2  # one decode per utterance


async def test_two_pass_partials_come_from_the_streaming_recognizer_and_whisper_finals_replace_them():
    runner = FakeRunner()
    sphinx = InlineEngine("sphinx", SR, SphinxRecognizer)
    async with trio.open_nursery() as nursery:
        engine = WhisperEngine(runner, 1, nursery, "two-pass", partial_engine=sphinx)
        results = await stream_results(engine, two_utterances(), StreamSettings(partials=True, max_delay=10),
                                       chunk=480, pace=0.0)
    check_order(results)
    partials = [r for r in results if isinstance(r, Partial)]
    finals = [r for r in results if isinstance(r, Final)]
    assert len(partials) >= 6  # word by word
    assert {w.text for p in partials for w in p.words} >= {"go", "forward"}  # sphinx's words
    assert [w.text for f in finals for w in f.words][:1] == ["w0"]  # the finals are the (fake) Whisper's
    assert len(runner.calls) == 2  # no re-decodes in two-pass mode


async def test_under_more_streams_than_admitted_every_final_arrives_and_partials_are_shed():
    runner = FakeRunner(delay=0.03)
    async with trio.open_nursery() as nursery:
        engine = WhisperEngine(runner, 1, nursery, "redecode", cost=CostModel(stream_cost=0.5, workers=1))
        assert engine.capacity == 1
        outs: list[list] = []

        async def one() -> None:
            outs.append(await stream_results(engine, two_utterances(), StreamSettings(partials=True, max_delay=10),
                                             chunk=800))

        async with trio.open_nursery() as streams:
            for _ in range(6):  # six times what it admits
                streams.start_soon(one)
    for results in outs:
        assert sum(isinstance(r, Final) and bool(r.words) for r in results) == 2
        check_order(results)
    assert engine.stats.finals == 12
    assert engine.stats.final_wait_max < 6 * 0.03 + 0.5  # a final waits for the finals before it, not for partials
    assert runner.most_running == 1


async def test_a_language_the_model_does_not_know_is_refused():
    async with trio.open_nursery() as nursery:
        engine = WhisperEngine(FakeRunner(), 1, nursery, "none")
        with pytest.raises(ValueError, match="English"):
            async with engine.open_stream(StreamSettings(language="de")):
                pass


async def test_hints_and_the_last_final_reach_the_decoder():
    runner = FakeRunner()
    async with trio.open_nursery() as nursery:
        engine = WhisperEngine(runner, 1, nursery, "none")
        await stream_results(engine, load("ps_librivox_0870"), StreamSettings(max_delay=2.0, hints=("dashwood",)),
                             pace=0.0)
    options = [call[2] for call in runner.calls]
    assert len(options) >= 3 and all(o.hints == ("dashwood",) for o in options)
    assert options[0].prompt == ""  # the first utterance follows nothing
    assert all(o.prompt.startswith("w0") for o in options[1:])  # the others go on from a cut: the text before


# --- LocalAgreement and the guard -----------------------------------------------------------------------------


def words(text: str) -> tuple[Word, ...]:
    return tuple(Word(t, i * 0.5, i * 0.5 + 0.4) for i, t in enumerate(text.split()))


def test_local_agreement_keeps_the_words_two_hypotheses_agreed_on():
    agreement = LocalAgreement()
    assert [w.text for w in agreement.update(words("go for"))] == ["go", "for"]
    assert [w.text for w in agreement.update(words("go forward"))] == ["go", "forward"]  # "go" is now stable
    shown = agreement.update(words("no forward ten"))  # the model changes its mind about a stable word
    assert [w.text for w in shown] == ["go", "forward", "ten"]
    assert [w.text for w in agreement.stable] == ["go"]


@pytest.mark.parametrize("text, tokens, seconds, capped, loops", [
    ("Fail again. Fail again. Fail again. Fail again.", 16, 2.0, False, True),
    ("10 of clubs 10 of clubs 10 of clubs", 12, 2.0, False, True),
    ("go forward ten meters", 5, 2.8, False, False),
    ("no no no", 4, 1.0, False, False),  # a short answer may repeat a word
    ("yes yes yes I said it was", 8, 3.0, False, True),
    ("and mister john dashwood had then leisure to consider", 12, 3.0, False, False),
    ("a b c d e f g h i j k l m n o p q r s t", 24, 2.0, False, True),  # too many tokens for 2 s
    ("some words", 20, 10.0, True, True),  # the cap stopped it
])
def test_the_guard_flags_loops_and_passes_speech(text, tokens, seconds, capped, loops):
    assert looping(text, tokens, seconds, capped) is loops


def test_windows_are_padded_with_the_log_mel_floor_to_at_least_ten_or_fifteen_seconds():
    assert window_frames(200, 10.0) == 1000 and window_frames(1200, 10.0) == 1300 and window_frames(2950, 15) == 3000
    mel = np.array([[0.5, 1.0], [0.2, -0.5]], np.float32)
    padded = pad_to_window(mel, 5)
    assert padded.shape == (2, 5) and (padded[:, 2:] == -1.0).all() and (padded[:, :2] == mel).all()
    assert (pad_to_window(mel, 5, "zero")[:, 2:] == 0.0).all()  # faster-whisper's padding, for finals


# --- the model: integrity and real decodes --------------------------------------------------------------------


def test_a_model_is_a_local_directory_never_a_name(tmp_path):
    with pytest.raises(EngineError, match="not a CTranslate2 Whisper model directory"):
        check_model("tiny.en")
    with pytest.raises(EngineError, match="model.bin"):
        check_model(tmp_path)
    assert (check_model(None) / "model.bin").is_file()  # the packaged default, its digests checked


def copy_of_the_model(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    for name in BUNDLED_DIGESTS:
        if name == "model.bin":
            (model / name).symlink_to(default_model() / name)
        else:
            shutil.copy(default_model() / name, model / name)
    return model


def test_a_model_file_that_differs_from_its_pinned_digest_is_named(tmp_path, monkeypatch):
    model = copy_of_the_model(tmp_path)
    (model / "config.json").write_text((model / "config.json").read_text().replace("50257", "50258", 1))
    monkeypatch.setattr("stt.engines.whisper_model.default_model", lambda: model)
    with pytest.raises(EngineError, match=r"config\.json differs .*reinstall"):
        check_model(None)
    (model / "tokenizer.json").unlink()
    with pytest.raises(EngineError, match=r"config\.json differs"):
        check_model(None)  # files in name order: config.json first


def test_a_given_model_directory_is_checked_against_its_sha256sums(tmp_path):
    model = copy_of_the_model(tmp_path)
    sums = "".join(f"{digest}  {name}\n" for name, digest in BUNDLED_DIGESTS.items())
    (model / "SHA256SUMS").write_text(sums)
    assert check_model(model) == model
    (model / "vocabulary.txt").write_text("changed")
    with pytest.raises(EngineError, match=r"vocabulary\.txt differs"):
        check_model(model)
    (model / "SHA256SUMS").write_text("not a digest line\n")
    with pytest.raises(EngineError, match="SHA256SUMS:1: not a sha256sum line"):
        check_model(model)


def run_python(script: str) -> list[str]:
    # The hub is off, and every connection would go to a proxy that is not there.
    env = dict(os.environ, HF_HUB_OFFLINE="1", HTTPS_PROXY="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9",
               ALL_PROXY="http://127.0.0.1:9")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300,
                          cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.splitlines()


def test_the_default_model_decodes_with_no_network_in_short_windows_with_aligned_words():
    lines = run_python(
        "from stt.engines.whisper_decoder import WhisperRunner, DecodeOptions\n"
        "from stt.engines.whisper_model import check_model\n"
        "from tests.engines.test_sphinx import load\n"
        "runner = WhisperRunner(check_model(None), workers=1)\n"
        "audio = load('ps_goforward')\n"
        "final = runner.decode(audio, 1.0, DecodeOptions())\n"
        "partial = runner.decode(audio, 1.0, DecodeOptions(final=False))\n"
        "print(' '.join(w.text for w in final.words), final.window, final.looped)\n"
        "print(' '.join(w.text for w in partial.words), partial.window)\n"
        "print(all(1.0 <= w.start <= w.end <= 3.8 and 0 <= w.confidence <= 1 for w in final.words + partial.words))\n"
        "print(len({w.confidence for w in final.words}) > 1)\n"  # aligned: a probability per word
    )
    assert lines[0] == "go forward ten meters 15.0 False"  # a 15 s window, not 30 s
    assert lines[1] == "go forward ten meters 10.0"
    assert lines[2:] == ["True", "True"]


def test_a_looping_decode_is_dropped_as_a_partial_and_decoded_again_at_30_s_as_a_final():
    lines = run_python(
        "from stt.engines.whisper_decoder import WhisperRunner, DecodeOptions\n"
        "from stt.engines.whisper_model import check_model\n"
        "from tests.engines.test_sphinx import load\n"
        "runner = WhisperRunner(check_model(None), workers=1)\n"
        "generate = runner.generate\n"
        "def looping_in_short_windows(encoded, options, seconds):\n"
        "    if encoded.shape[1] < 1500:\n"  # encoder frames: a window under 30 s
        "        ids = runner._tokenizer.encode(' Fail again.' * 6)\n"
        "        return ids, -0.1, False\n"
        "    return generate(encoded, options, seconds)\n"
        "runner.generate = looping_in_short_windows\n"
        "audio = load('ps_goforward')\n"
        "partial = runner.decode(audio, 0.0, DecodeOptions(final=False))\n"
        "final = runner.decode(audio, 0.0, DecodeOptions())\n"
        "print(len(partial.words), partial.looped)\n"
        "print(' '.join(w.text for w in final.words), final.window, final.looped)\n"
    )
    assert lines == ["0 True", "go forward ten meters 30.0 True"]


async def test_a_fast_stream_goes_on_while_its_final_decodes_and_gets_its_results_in_order():
    runner = FakeRunner(hold=True)
    speech = two_utterances()
    async with trio.open_nursery() as nursery:
        engine = WhisperEngine(runner, 2, nursery, "none")
        async with engine.open_stream(StreamSettings(partials=False, max_delay=10)) as stream:
            out, fed = [], 0
            with trio.fail_after(10):
                while not runner.calls:  # as fast as it takes it, up to the first endpoint
                    out += await stream.feed(speech[fed:fed + 1600])
                    fed += 1600
                    await trio.sleep(0.001)
                decoding_from = fed
                while fed < len(speech):  # the rest, the second utterance's speech and endpoint included
                    out += await stream.feed(speech[fed:fed + 1600])
                    fed += 1600
            assert runner.running == 1 and not any(isinstance(r, Final) for r in out)  # the first still decodes
            assert fed - decoding_from > SR  # ... and more than a second of audio went in meanwhile
            runner.release(2)
            out += await stream.finish()
    check_order(out)
    assert [type(r).__name__ for r in out] == ["SpeechStarted", "Final", "SpeechStopped"] * 2


@pytest.mark.parametrize("delay", [0.02, 0.05, 0.2])
async def test_a_fast_streams_partials_and_finals_come_once_each_and_in_order_whatever_the_decode_time(delay):
    runner = FakeRunner(delay=delay)
    async with trio.open_nursery() as nursery:
        engine = WhisperEngine(runner, 2, nursery, "redecode")
        speech = np.concatenate([two_utterances()] * 2)
        results = await stream_results(engine, speech, StreamSettings(partials=True, max_delay=4), pace=0.002)
    check_order(results)  # a final repeated would start before the last one's end
    finals = [(r.start, r.end) for r in results if isinstance(r, Final)]
    assert len(finals) == len(set(finals)) >= 4
