"""Voice activity in SphinxRecognizer: SpeechStarted / SpeechStopped at the true speech boundaries, in order
with the results, and endpointing (the silence that ends an utterance) as StreamSettings asks."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
from pocketsphinx import Endpointer, Vad

from stt.engines import sphinx, vad
from stt.engines.base import StreamSettings
from stt.engines.sphinx import SphinxRecognizer
from stt.engines.vad import SpeechDetector
from stt.events import Final, SpeechStarted, SpeechStopped
from tests.engines.test_sphinx import load
from tests.helpers import GAP_RECORDING, GAP_SPEECH, GAP_TOLERANCE

GAPS = GAP_RECORDING.removesuffix(".wav")
TRUTH = GAP_SPEECH
TOLERANCE = GAP_TOLERANCE
CHUNK = 320  # 20 ms


def speech_boundaries(samples: np.ndarray, threshold_db: float) -> list[tuple[float, float]]:
    """(start, end) of each stretch of speech, by short-time energy (see TRUTH)."""
    frames = len(samples) // 16
    rms = np.sqrt((samples[: frames * 16].astype(np.float64).reshape(frames, 16) ** 2).mean(axis=1))
    level = 20 * np.log10(np.maximum(rms, 1e-3))
    loud = np.flatnonzero(level > np.median(level[:900]) + threshold_db)
    breaks = np.flatnonzero(np.diff(loud) > 500)  # more than 0.5 s quiet
    starts = np.concatenate([loud[:1], loud[breaks + 1]])
    ends = np.concatenate([loud[breaks], loud[-1:]]) + 1
    return [(s / 1000, e / 1000) for s, e in zip(starts, ends)]


@functools.cache
def stream(endpointing: float | None = None, max_delay: float = 4.0, chunk: int = CHUNK) -> tuple:
    """The gap recording through a recognizer with partials on: (audio seconds fed when it came, result)."""
    audio = load(GAPS)
    recognizer = SphinxRecognizer(StreamSettings(partials=True, max_delay=max_delay, endpointing=endpointing))
    try:
        out = []
        for i in range(0, len(audio), chunk):
            fed = min(i + chunk, len(audio)) / 16000
            out += [(fed, r) for r in recognizer.feed(audio[i : i + chunk])]
        out += [(len(audio) / 16000, r) for r in recognizer.finish()]
    finally:
        recognizer.close()
    return tuple(out)


def results(endpointing: float | None = None, **options) -> list:
    return [r for _, r in stream(endpointing, **options)]


def events(endpointing: float | None = None, **options) -> list:
    return [r for r in results(endpointing, **options) if isinstance(r, (SpeechStarted, SpeechStopped))]


def pairs(endpointing: float | None = None, **options) -> list[tuple[float, float]]:
    found = events(endpointing, **options)
    assert [type(e) for e in found] == [SpeechStarted, SpeechStopped] * (len(found) // 2)  # alternating
    return [(a.time, b.time) for a, b in zip(found[::2], found[1::2])]


# --- the boundaries ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("threshold_db", [6, 10, 20])
def test_ground_truth_matches_the_waveform(threshold_db):
    measured = speech_boundaries(load(GAPS), threshold_db)
    assert np.allclose(measured, TRUTH, atol=0.0015), measured


def test_three_sentences_give_three_start_stop_pairs_at_the_true_boundaries():
    found = pairs()
    errors = [round(1000 * (t - true)) for pair, truth in zip(found, TRUTH) for t, true in zip(pair, truth)]
    print(f"boundary errors (ms): {errors}")
    assert len(found) == 3
    assert all(abs(e) <= 1000 * TOLERANCE for e in errors), errors


def test_events_are_the_same_whatever_the_chunking():
    assert events(chunk=4801) == events()  # 0.3 s and a sample: frames straddle every chunk


def test_speech_started_comes_before_the_first_partial_and_stopped_after_the_final():
    utterance = []  # the results since the last SpeechStarted
    for result in results():
        if isinstance(result, SpeechStarted):
            assert utterance == [], "SpeechStarted inside an utterance"
            utterance = [result]
        elif isinstance(result, SpeechStopped):
            assert isinstance(utterance[-1], Final) and utterance[-1].words  # the final, then the stop
            assert result.time <= utterance[-1].end
            utterance = []
        else:
            assert utterance and isinstance(utterance[0], SpeechStarted), f"{result} outside speech"
            utterance.append(result)
    assert utterance == []  # every speech stopped


@pytest.mark.parametrize("endpointing", [None, 0.3, 2.1, 3.0])
def test_events_and_words_keep_their_order_in_time(endpointing):
    found = events(endpointing)
    times = [e.time for e in found]
    assert times == sorted(times)
    words = [w for r in results(endpointing) if isinstance(r, Final) for w in r.words]
    assert [t for w in words for t in (w.start, w.end)] == sorted(t for w in words for t in (w.start, w.end))
    # each word lies inside a start..stop of speech; the decoder is given PREROLL before the start
    spans = pairs(endpointing)
    for word in words:
        assert any(start - sphinx.PREROLL <= word.start and word.end <= stop + 0.2 for start, stop in spans), word


def test_a_max_delay_cut_is_not_a_speech_stop():
    cut = results(max_delay=1.0)
    assert pairs(max_delay=1.0) == pairs()
    finals = [r for r in cut if isinstance(r, Final)]
    assert len(finals) >= 9  # each sentence is cut more than twice


def test_finish_stops_speech_at_the_end_of_the_audio_after_the_final():
    audio = load(GAPS)[: 3 * 16000]  # ends in the middle of the first sentence
    recognizer = SphinxRecognizer(StreamSettings())
    try:
        fed = [r for i in range(0, len(audio), CHUNK) for r in recognizer.feed(audio[i : i + CHUNK])]
        finished = recognizer.finish()
    finally:
        recognizer.close()
    assert fed == [SpeechStarted(0.99)]
    assert [type(r) for r in finished] == [Final, SpeechStopped]
    assert finished[1] == SpeechStopped(3.0)


def test_a_flush_in_the_silence_neither_stops_speech_nor_keeps_it_from_resuming():
    audio = load(GAPS)[: 12 * 16000]  # the first two sentences and the 2.38 s silence after them
    recognizer = SphinxRecognizer(StreamSettings(endpointing=2.1))  # merges the two sentences
    flush_at = round(4.5 * 16000)  # 0.74 s after the first sentence ended
    try:
        before = [r for i in range(0, flush_at, CHUNK) for r in recognizer.feed(audio[i : i + CHUNK])]
        flushed = recognizer.flush()
        after = [r for i in range(flush_at, len(audio), CHUNK) for r in recognizer.feed(audio[i : i + CHUNK])]
        after += recognizer.finish()
    finally:
        recognizer.close()
    assert [type(r) for r in before] == [SpeechStarted]
    (forced,) = flushed
    assert forced.forced and forced.words and forced.end == 4.5
    # the second sentence opens a new utterance but is the same speech: one stop, after its final
    assert [type(r) for r in after if not isinstance(r, Final)] == [SpeechStopped]
    (stop,) = [r for r in after if isinstance(r, SpeechStopped)]
    assert abs(stop.time - TRUTH[1][1]) <= TOLERANCE
    finals = [r for r in after if isinstance(r, Final)]
    assert finals and finals[0].start >= 4.5 and all(w.start >= TRUTH[1][0] - sphinx.PREROLL
                                                       for f in finals for w in f.words)
    assert after.index(stop) > after.index(next(f for f in finals if f.words))


# --- endpointing ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "endpointing, merged",
    [
        (None, [(0, 0), (1, 1), (2, 2)]),  # 0.45 s
        (0.3, [(0, 0), (1, 1), (2, 2)]),
        (2.1, [(0, 1), (2, 2)]),  # longer than the 1.85 s gap, shorter than the 2.38 s one
        (3.0, [(0, 2)]),
    ],
)
def test_endpointing_longer_than_a_gap_merges_the_sentences_around_it(endpointing, merged):
    found = pairs(endpointing)
    assert len(found) == len(merged), found
    for (start, stop), (first, last) in zip(found, merged):
        assert abs(start - TRUTH[first][0]) <= TOLERANCE and abs(stop - TRUTH[last][1]) <= TOLERANCE


@pytest.mark.parametrize("endpointing", [None, 0.3, 2.1])
def test_speech_stops_once_endpointing_seconds_of_silence_have_passed(endpointing):
    silence = vad.ENDPOINTING_DEFAULT if endpointing is None else endpointing
    ends = {end for _, end in TRUTH}
    end_of_audio = len(load(GAPS)) / 16000
    stops = [(fed, r) for fed, r in stream(endpointing) if isinstance(r, SpeechStopped) and fed < end_of_audio]
    assert stops  # not only the stop finish() gives, where the audio ends sooner than the silence
    for fed, stop in stops:
        true_end = min(ends, key=lambda end: abs(end - stop.time))
        # the stop is decided in the 20 ms chunk where the silence reaches `endpointing`, give or take a VAD
        # frame (30 ms) for where the speech ends inside its frame
        assert true_end + silence - 0.01 <= fed <= true_end + silence + 0.05, (fed, stop)


def test_endpointing_range():
    for bad in (0.0, -1.0, 5.01, math.nan, math.inf):
        with pytest.raises(ValueError, match="endpointing"):
            SphinxRecognizer(StreamSettings(endpointing=bad))
    assert vad.endpointing_frames(5.0) == 162  # (5 - 0.15) / 0.03
    assert vad.endpointing_frames(0.45) == vad.endpointing_frames(None) == vad.START_FRAMES  # the default
    assert vad.endpointing_frames(0.01) == vad.endpointing_frames(vad.MIN_ENDPOINTING) == 1  # the shortest there is


# --- the detector -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["ps_goforward", "ps_librivox_0870", "ps_cards_005", GAPS])
def test_the_default_detector_decides_as_pocketsphinx_endpointer(name):
    """The detector with its default stop is pocketsphinx's Endpointer(window=0.3, ratio=0.9), frame for frame
    (which the recognizer used before endpointing could be set): the same starts, the same stops."""
    audio = load(name).tobytes()
    endpointer = Endpointer(window=0.3, ratio=0.9, vad_mode=Vad.LOOSE, sample_rate=16000, frame_length=0.03)
    detector = SpeechDetector(vad.START_FRAMES)
    size = endpointer.frame_bytes
    theirs, ours = [], []
    for frame_index, i in enumerate(range(0, len(audio) - size + 1, size)):
        frame = audio[i : i + size]
        was = endpointer.in_speech
        endpointer.process(frame)
        if endpointer.in_speech != was:
            at = endpointer.speech_start if endpointer.in_speech else endpointer.speech_end - 0.03
            theirs.append((endpointer.in_speech, frame_index, round(at / 0.03)))
        event = detector.process(frame)
        if event is not None:
            ours.append((event is SpeechStarted, frame_index, detector.start if event is SpeechStarted else detector.stop))
    assert theirs and ours == theirs


class ScriptedVad:
    """Stands in for the detector's VAD: classifies frames as a string of '#' (speech) and '.' says."""

    def __init__(self, labels: str) -> None:
        self._labels = iter(labels)

    def is_speech(self, frame: bytes) -> bool:
        return next(self._labels) == "#"


def detect(labels: str, stop_frames: int) -> tuple[SpeechDetector, list[tuple[int, str]]]:
    """Run a detector over labelled frames: (frame index, event name) for each event."""
    detector = SpeechDetector(stop_frames)
    detector._vad = ScriptedVad(labels)
    found = []
    for index in range(len(labels)):
        event = detector.process(b"")
        if event is not None:
            found.append((index, event.__name__))
    return detector, found


def test_speech_starts_after_ten_speech_frames_in_a_row():
    detector, found = detect("#########." + "##########", stop_frames=10)
    assert found == [(19, "SpeechStarted")] and detector.start == 10


def test_a_speech_frame_in_the_first_window_of_silence_holds_speech_as_the_endpointer_does():
    detector, found = detect("#" * 20 + "." * 9 + "#" + "." * 10, stop_frames=10)
    assert found == [(9, "SpeechStarted"), (39, "SpeechStopped")] and detector.stop == 30


def test_stray_speech_frames_in_a_long_silence_do_not_hold_speech():
    # 1.2 s of silence after 0.6 s of speech, with a click every 0.3 s from 0.6 s in
    detector, found = detect("#" * 20 + "." * 20 + ("#" + "." * 9) * 3, stop_frames=40)
    assert found == [(9, "SpeechStarted"), (59, "SpeechStopped")] and detector.stop == 20


def test_a_stop_waits_for_a_run_of_speech_frames_that_may_become_a_start():
    # the silence reaches 40 frames at frame 59, inside a run of 5 speech frames: the stop waits for its end
    detector, found = detect("#" * 20 + "." * 38 + "#" * 5 + "." * 5, stop_frames=40)
    assert found == [(9, "SpeechStarted"), (63, "SpeechStopped")] and detector.stop == 20
    # a run of 10 is speech again: no stop
    _, found = detect("#" * 20 + "." * 38 + "#" * 10 + "." * 39, stop_frames=40)
    assert found == [(9, "SpeechStarted")]
