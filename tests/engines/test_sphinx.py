"""SphinxRecognizer on real speech (tests/data), in this process."""

from __future__ import annotations

import csv
import os
import functools
import wave
from pathlib import Path

import numpy as np
import pytest

from stt.engines import sphinx
from stt.engines.base import StreamSettings
from stt.engines.sphinx import SphinxRecognizer
from stt.events import Final, Partial, SpeechStarted, SpeechStopped
from stt.wer import wer

DATA = Path(__file__).resolve().parent.parent / "data"
REFS = {row["id"]: row["text"] for row in csv.DictReader(open(DATA / "refs.tsv"), delimiter="\t")}


@functools.cache
def load(name: str) -> np.ndarray:
    with wave.open(str(DATA / f"{name}.wav")) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16000, 1, 2)
        samples = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    samples.setflags(write=False)
    return samples


@functools.cache
def two_utterances() -> np.ndarray:
    """go forward ten meters, then he was not an ill disposed young man: an endpoint between them."""
    return np.concatenate([load("ps_goforward"), load("ps_librivox_0880")])


def run_calls(audio: np.ndarray, chunks, settings: StreamSettings = StreamSettings()) -> list[list]:
    """Feed `audio` in chunks (an int size, or a list of sizes), then finish; the results of each call."""
    recognizer = SphinxRecognizer(settings)
    try:
        calls = []
        sizes = iter(chunks) if not isinstance(chunks, int) else iter(lambda: chunks, None)
        i = 0
        while i < len(audio):
            size = next(sizes)
            calls.append(recognizer.feed(audio[i : i + size]))
            i += size
        calls.append(recognizer.finish())
        return calls
    finally:
        recognizer.close()


def run(audio: np.ndarray, chunks, settings: StreamSettings = StreamSettings()) -> list[Partial | Final]:
    return [result for call in run_calls(audio, chunks, settings) for result in call]


def ragged(n: int) -> list[int]:
    return [int(size) for size in np.random.default_rng(7).integers(1, 24000, size=n)]


def decode(name: str, chunks=1600, partials: bool = False, max_delay: float = 4.0) -> tuple[tuple, ...]:
    """Cached per-call results; chunks is a size, "whole" or "ragged" (random sizes up to 1.5 s)."""
    return _decode(name, chunks, partials, max_delay)


@functools.cache
def _decode(name: str, chunks, partials: bool, max_delay: float) -> tuple[tuple, ...]:
    audio = two_utterances() if name == "two_utterances" else load(name)
    sizes = {"whole": len(audio), "ragged": ragged(len(audio))}.get(chunks, chunks)
    return tuple(map(tuple, run_calls(audio, sizes, StreamSettings(partials=partials, max_delay=max_delay))))


def flat(calls) -> list[Partial | Final]:
    return [result for call in calls for result in call]


def recognised(results) -> list[Partial | Final]:
    """The results without the voice-activity events."""
    return [r for r in results if isinstance(r, (Partial, Final))]


def finals(results) -> list[Final]:
    return [r for r in results if isinstance(r, Final)]


def transcript(results) -> str:
    return " ".join(w.text for f in finals(results) for w in f.words)


# --- recognition -----------------------------------------------------------------------------------------------

# Measured (max_delay 4; 100 for the 7 s librivox_0870, which max_delay 4 cuts once): goforward 0.0,
# librivox_0880 0.25, librivox_0870 0.32 (0.36 at max_delay 4). pocketsphinx's en-us model on read speech;
# "mister" comes out as "mr", which counts as an error.
@pytest.mark.parametrize(
    "name, max_delay, limit",
    [("ps_goforward", 4.0, 0.25), ("ps_librivox_0880", 4.0, 0.5), ("ps_librivox_0870", 100.0, 0.5)],
)
def test_recognises_real_speech(name, max_delay, limit):
    results = flat(decode(name, max_delay=max_delay))
    assert wer(REFS[name], transcript(results)) <= limit, transcript(results)


def test_go_forward_is_one_utterance():
    (final,) = finals(flat(decode("ps_goforward")))
    assert not final.forced
    assert [w.text for w in final.words][:2] == ["go", "forward"]
    assert 0.0 < final.start < final.words[0].start and final.words[-1].end <= final.end <= 2.79


# Two utterances with max_delay 1.5: endpoints and max_delay cuts both happen.
def whole():
    return flat(decode("two_utterances", "whole", max_delay=1.5))


def test_same_finals_whatever_the_chunking():
    reference = finals(whole())
    assert len(reference) >= 4, reference
    assert finals(flat(decode("two_utterances", 77, partials=True, max_delay=1.5))) == reference
    assert finals(flat(decode("two_utterances", "ragged", partials=True, max_delay=1.5))) == reference


def test_words_have_absolute_increasing_times_inside_the_audio():
    duration = len(two_utterances()) / 16000
    results = whole()
    words = [w for f in finals(results) for w in f.words]
    assert len(words) >= 10
    previous_end = 0.0
    for final in finals(results):
        assert final.start <= final.end <= duration + 0.01
        assert final.start >= previous_end - 1e-9  # finals tile, never overlap
        previous_end = final.end
        for word in final.words:
            assert final.start <= word.start < word.end <= final.end
            assert 0.0 <= word.confidence <= 1.0
            assert word.text and "(" not in word.text and not word.text.startswith(("<", "[", "+"))
            assert round(word.start, 2) == word.start and round(word.end, 2) == word.end
    for a, b in zip(words, words[1:]):
        assert a.end <= b.start
    # the second utterance lies after the first file's audio: times are stream times
    assert any(w.start > len(load("ps_goforward")) / 16000 for w in words)


# --- partials ----------------------------------------------------------------------------------------------------


def test_no_partials_unless_asked():
    assert not [r for r in whole() if isinstance(r, Partial)]
    assert not [r for r in flat(decode("ps_goforward")) if isinstance(r, Partial)]


@pytest.mark.parametrize("chunks", [77, "ragged"])
def test_partials_grow_and_finals_supersede_them(chunks):
    results = recognised(flat(decode("two_utterances", chunks, partials=True, max_delay=1.5)))
    partials = [r for r in results if isinstance(r, Partial)]
    assert len(partials) >= 5
    assert isinstance(results[-1], Final)  # finish() leaves nothing pending
    for i, result in enumerate(results):
        if not isinstance(result, Partial):
            continue
        assert result.words
        times = [t for w in result.words for t in (w.start, w.end)]
        assert times == sorted(times)
        assert all(result.start <= t <= result.end for t in times)
        following = results[i + 1]
        if isinstance(following, Partial):
            assert following.start == result.start and following.end > result.end
            assert [w.text for w in following.words] != [w.text for w in result.words]  # only on a change
        # the next Final covers this partial's utterance, from the same start
        final = next(r for r in results[i + 1 :] if isinstance(r, Final))
        assert final.start == result.start


def test_at_most_one_partial_per_call_and_it_comes_last():
    calls = decode("two_utterances", "ragged", partials=True, max_delay=1.5)
    assert any(len(call) > 1 for call in calls)
    for call in calls:
        kinds = [type(r) for r in call]
        assert Partial not in kinds[:-1], kinds
    assert not any(isinstance(r, Partial) for r in calls[-1])


def test_configure_turns_partials_on_mid_stream():
    audio = load("ps_goforward")
    recognizer = SphinxRecognizer(StreamSettings())
    try:
        first = recognizer.feed(audio[:8000])  # 0.5 s: speech just started
        recognizer.configure(partials=True)
        later = []
        for i in range(8000, len(audio), 1600):
            later += recognizer.feed(audio[i : i + 1600])
        later += recognizer.finish()
    finally:
        recognizer.close()
    assert not [r for r in first if isinstance(r, Partial)]
    assert [r for r in later if isinstance(r, Partial)]


# --- max_delay -----------------------------------------------------------------------------------------------


def test_max_delay_cuts_long_speech_between_words():
    name = "ps_librivox_0870"  # one 7 s utterance without a pause the endpointer takes
    unbounded = flat(decode(name, max_delay=100.0))
    bounded = flat(decode(name, max_delay=1.0))
    assert len(finals(unbounded)) == 1
    assert len(finals(bounded)) >= 5
    for final in finals(bounded):
        assert final.end - final.start <= 1.0 + 0.05  # cut as soon as the utterance outgrows max_delay
        assert not final.forced
    # cutting between words keeps the transcript close to the unbounded one (measured: 0.33)
    assert wer(transcript(unbounded), transcript(bounded)) <= 0.5
    assert wer(REFS[name], transcript(bounded)) <= wer(REFS[name], transcript(unbounded)) + 0.2
    # no word is cut in two: as many words, give or take a couple
    assert abs(len(transcript(bounded).split()) - len(transcript(unbounded).split())) <= 3


# --- flush and finish ----------------------------------------------------------------------------------------


def test_flush_mid_speech_gives_a_forced_final_and_speech_goes_on():
    audio = load("ps_goforward")
    recognizer = SphinxRecognizer(StreamSettings())
    try:
        before = []
        for i in range(0, 20000, 1000):  # 1.25 s: "go forward"
            before += recognizer.feed(audio[i : i + 1000])
        flushed = recognizer.flush()
        after = recognizer.feed(audio[20000:]) + recognizer.finish()
    finally:
        recognizer.close()
    assert [type(r) for r in before] == [SpeechStarted]
    (forced,) = flushed  # a flush is not a speech stop
    assert isinstance(forced, Final) and forced.forced
    assert forced.end == 1.25
    assert "forward" in [w.text for w in forced.words]
    # the same speech goes on: no second SpeechStarted, a new utterance from the flush on, then the stop
    assert isinstance(after[-1], SpeechStopped) and after[-1].time > forced.end
    rest = after[:-1]
    assert rest and all(isinstance(r, Final) and not r.forced for r in rest)
    assert rest[0].start == forced.end
    assert all(w.start >= forced.end for r in rest for w in r.words)


def test_flush_in_silence_answers_with_an_empty_forced_final():
    recognizer = SphinxRecognizer(StreamSettings())
    try:
        assert recognizer.flush() == [Final((), 0.0, 0.0, forced=True)]
        assert recognizer.feed(np.zeros(8000, dtype=np.int16)) == []
        assert recognizer.flush() == [Final((), 0.5, 0.5, forced=True)]
        assert recognizer.finish() == []
    finally:
        recognizer.close()


def test_finish_ends_speech_that_runs_to_the_end():
    results = flat(decode("ps_librivox_0880"))  # speech runs to the last sample: only finish() ends it
    (final,) = finals(results)
    assert final.end == pytest.approx(len(load("ps_librivox_0880")) / 16000, abs=0.01)


# --- resources and checks -------------------------------------------------------------------------------------


def test_decoders_are_reused_and_reset(monkeypatch):
    made = []
    real = sphinx.Decoder

    def counting_decoder(*args, **kwargs):
        made.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(sphinx, "Decoder", counting_decoder)
    monkeypatch.setattr(sphinx, "_free_decoders", [])
    audio = load("ps_goforward")
    first = run(audio[:16000], 1600)
    assert len(made) == 1 and len(sphinx._free_decoders) == 1
    second = run(audio[:16000], 1600)  # the same decoder, reset: the same results as a fresh one
    assert len(made) == 1 and len(sphinx._free_decoders) == 1
    assert second == first
    a, b = SphinxRecognizer(StreamSettings()), SphinxRecognizer(StreamSettings())
    a.feed(audio[:160])
    b.feed(audio[:160])  # two streams with audio at once: two decoders
    a.close()
    b.close()
    assert len(made) == 2 and len(sphinx._free_decoders) == sphinx.MAX_FREE_DECODERS == 1  # the other is freed


def test_decoders_the_free_list_does_not_keep_give_their_memory_back():
    """Eight streams with audio at once, then none: the process keeps one decoder's memory, not eight."""
    def rss_mib() -> float:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    audio = load("ps_goforward")[:16000]
    run(audio, 1600)  # one decoder loaded and on the free list
    before = rss_mib()
    recognizers = [SphinxRecognizer(StreamSettings()) for _ in range(8)]
    for recognizer in recognizers:
        recognizer.feed(audio)
    held = rss_mib()
    for recognizer in recognizers:
        recognizer.close()
    del recognizer, recognizers
    after = rss_mib()
    assert held - before > 7 * 60  # each decoder holds ~98 MiB (the first came from the free list)
    assert after - before < 100, (before, held, after)  # at most one decoder's worth stays


def test_a_stream_takes_a_decoder_with_its_first_audio_not_when_it_opens(monkeypatch):
    monkeypatch.setattr(sphinx, "_free_decoders", [])
    idle = [SphinxRecognizer(StreamSettings()) for _ in range(3)]
    assert idle[0].finish() == [] and idle[1].flush()[0].words == ()  # nothing heard: nothing to decode
    for recognizer in idle:
        recognizer.close()
    assert sphinx._free_decoders == []  # none was loaded: an idle session costs no decoder (~90 MB)
    talking = SphinxRecognizer(StreamSettings())
    talking.feed(load("ps_goforward")[:1600])
    talking.close()
    assert len(sphinx._free_decoders) == 1


def test_closed_recognizer_refuses_work():
    recognizer = SphinxRecognizer(StreamSettings())
    recognizer.close()
    recognizer.close()  # idempotent
    with pytest.raises(RuntimeError):
        recognizer.feed(np.zeros(160, dtype=np.int16))


def test_rejects_other_languages_and_sample_types():
    with pytest.raises(ValueError):
        SphinxRecognizer(StreamSettings(language="de"))
    recognizer = SphinxRecognizer(StreamSettings(language="en-US"))
    try:
        assert recognizer.sample_rate == 16000
        with pytest.raises(TypeError):
            recognizer.feed(np.zeros(160, dtype=np.float32))
        with pytest.raises(ValueError):
            recognizer.feed(np.zeros((160, 2), dtype=np.int16))
        with pytest.raises(ValueError):
            recognizer.configure(max_delay=0)
    finally:
        recognizer.close()
