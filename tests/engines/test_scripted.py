"""The scripted recognizer: its words, finals and voice-activity events, deterministic for protocol tests."""

from __future__ import annotations

import numpy as np

from stt.engines.base import StreamSettings
from stt.engines.scripted import ScriptedRecognizer
from stt.events import Final, Partial, SpeechStarted, SpeechStopped, Word


def seconds(s: float) -> np.ndarray:
    return np.zeros(round(s * 16000), dtype=np.int16)


def feed(recognizer: ScriptedRecognizer, *chunks: float) -> list:
    return [result for s in chunks for result in recognizer.feed(seconds(s))]


def test_speech_starts_before_the_first_partial_and_stops_after_the_final():
    # words a [0, 0.8], b [1, 1.8], c [2, 2.8]; an utterance is two words
    recognizer = ScriptedRecognizer(StreamSettings(partials=True), script="a b c", word_seconds=1.0,
                                    words_per_utterance=2)
    a, b, c = Word("a", 0.0, 0.8), Word("b", 1.0, 1.8), Word("c", 2.0, 2.8)
    assert feed(recognizer, 0.5) == [SpeechStarted(0.0)]  # the audio has reached a's start
    assert feed(recognizer, 0.5) == [Partial((a,), 0.0, 0.8)]
    assert feed(recognizer, 0.5) == []
    assert feed(recognizer, 0.5) == [Partial((a, b), 0.0, 1.8), Final((a, b), 0.0, 1.8), SpeechStopped(1.8)]
    assert feed(recognizer, 0.5) == [SpeechStarted(2.0)]  # the audio has gone past c's start
    assert recognizer.finish() == [SpeechStopped(2.5)]  # c is under way when the audio ends
    assert c.start < 2.5 < c.end


def test_finish_between_words_stops_speech_at_the_last_word():
    recognizer = ScriptedRecognizer(StreamSettings())  # one [0, 0.4], two [0.5, 0.9], ...
    assert feed(recognizer, 0.45) == [SpeechStarted(0.0)]
    assert recognizer.finish() == [Final((Word("one", 0.0, 0.4),), 0.0, 0.4), SpeechStopped(0.4)]
    assert recognizer.finish() == []


def test_flush_and_max_delay_cut_an_utterance_without_stopping_speech():
    # one..six make an utterance, ending 0.4, 0.9, 1.4, 1.9, 2.4 and 2.9 s
    recognizer = ScriptedRecognizer(StreamSettings(max_delay=1.0), words_per_utterance=6)
    assert feed(recognizer, 0.95) == [SpeechStarted(0.0)]
    flushed = recognizer.flush()
    rest = feed(recognizer, *[0.05] * 42)  # to 3.05 s
    assert [(type(r), [w.text for w in r.words], r.forced) for r in flushed] == [(Final, ["one", "two"], True)]
    assert [(type(r), [w.text for w in r.words]) if isinstance(r, Final) else r for r in rest] == [
        (Final, ["three", "four"]),  # three is max_delay old at 2.0 s
        (Final, ["five", "six"]),  # the end of the utterance
        SpeechStopped(2.9),
        SpeechStarted(3.0),
    ]


def test_events_alternate_and_their_times_increase():
    recognizer = ScriptedRecognizer(StreamSettings(partials=True), words_per_utterance=3)
    results = feed(recognizer, *[0.02] * 400) + recognizer.finish()  # 8 s in 20 ms chunks
    events = [r for r in results if isinstance(r, (SpeechStarted, SpeechStopped))]
    assert [type(e) for e in events] == [SpeechStarted, SpeechStopped] * 6  # 16 words heard, 3 an utterance
    times = [e.time for e in events]
    assert times == sorted(times) and len(set(times)) == len(times)
    for i, result in enumerate(results):  # every partial and final lies inside a start..stop
        if isinstance(result, (Partial, Final)) and result.words:
            started = [r for r in results[:i] if isinstance(r, (SpeechStarted, SpeechStopped))][-1]
            assert isinstance(started, SpeechStarted) and started.time <= result.start


def test_configure_keeps_the_other_settings():
    settings = StreamSettings(language="en-GB", endpointing=0.7, hints=("cheese",))
    recognizer = ScriptedRecognizer(settings)
    recognizer.configure(partials=True)
    recognizer.configure(max_delay=2.0)
    assert recognizer.settings == StreamSettings("en-GB", True, 2.0, 0.7, ("cheese",))
