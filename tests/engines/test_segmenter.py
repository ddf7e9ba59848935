"""Segmenter: utterances cut by the VAD, for engines that decode an utterance whole."""

from __future__ import annotations

import numpy as np
import pytest

from stt.engines.segmenter import PREROLL, TRAIL_KEPT, Segmenter, Utterance
from stt.engines.vad import SAMPLE_RATE
from stt.events import SpeechStarted, SpeechStopped
from tests.engines.test_sphinx import load
from tests.helpers import GAP_RECORDING, GAP_SPEECH, GAP_TOLERANCE

GAPS = GAP_RECORDING.removesuffix(".wav")


def run(audio: np.ndarray, chunk: int = 320, **options) -> list:
    segmenter = Segmenter(**options)
    out = []
    for i in range(0, len(audio), chunk):
        out += segmenter.feed(audio[i : i + chunk])
    return out + segmenter.finish()


def utterances(items: list) -> list[Utterance]:
    return [item for item in items if isinstance(item, Utterance)]


def test_each_sentence_of_the_gap_recording_is_one_utterance_around_its_speech():
    items = run(load(GAPS), max_delay=10.0)
    kinds = [type(item).__name__ for item in items]
    assert kinds == ["SpeechStarted", "Utterance", "SpeechStopped"] * 3
    for utterance, (start, end) in zip(utterances(items), GAP_SPEECH):
        assert utterance.start / SAMPLE_RATE <= start - PREROLL + GAP_TOLERANCE  # the pre-roll is kept
        assert utterance.end / SAMPLE_RATE >= end  # and the endpointing silence after the speech
        assert not utterance.forced and not utterance.continued
    events = [item for item in items if isinstance(item, (SpeechStarted, SpeechStopped))]
    truth = [t for span in GAP_SPEECH for t in span]
    assert [abs(e.time - t) <= GAP_TOLERANCE for e, t in zip(events, truth)] == [True] * 6


def test_an_utterance_is_the_audio_it_says_it_is():
    audio = load(GAPS)
    for utterance in utterances(run(audio)):
        assert np.array_equal(utterance.audio, audio[utterance.start : utterance.end])


def test_trailing_is_the_endpointing_silence_less_what_is_kept():
    items = run(load(GAPS), endpointing=1.0, max_delay=10.0)
    for i, item in enumerate(items):
        if isinstance(item, Utterance):
            stopped = items[i + 1]
            assert isinstance(stopped, SpeechStopped)
            speech_end = item.end - item.trailing
            assert speech_end / SAMPLE_RATE == pytest.approx(stopped.time + TRAIL_KEPT, abs=0.01)
            assert item.trailing / SAMPLE_RATE > 0.5  # most of the 1 s of silence


@pytest.mark.parametrize("chunk", [1, 7, 333, 4800, 10**7])
def test_chunking_changes_nothing(chunk):
    audio = load(GAPS)[: 6 * SAMPLE_RATE] if chunk < 10 else load(GAPS)
    reference = run(audio, chunk=320)
    items = run(audio, chunk=chunk)
    assert [type(i) for i in items] == [type(i) for i in reference]
    for got, want in zip(items, reference):
        if isinstance(want, Utterance):
            assert (got.start, got.end, got.forced) == (want.start, want.end, want.forced)
        else:
            assert got == want


def test_max_delay_cuts_tile_the_speech_at_quiet_points():
    audio = load("ps_librivox_0870")  # 7.1 s of continuous read speech
    cut = utterances(run(audio, max_delay=2.0))
    assert len(cut) >= 3
    for before, after in zip(cut, cut[1:]):
        assert after.start == before.end  # nothing lost, nothing twice
        assert after.continued
    assert not cut[0].continued
    for utterance in cut[:-1]:
        assert len(utterance.audio) <= 2.0 * SAMPLE_RATE + 480  # at most a VAD frame over
        # The cut is quieter than most of the speech around it.
        around = audio[utterance.end - SAMPLE_RATE // 2 : utterance.end + SAMPLE_RATE // 2].astype(np.float64)
        at_cut = audio[utterance.end - 720 : utterance.end + 720].astype(np.float64)
        assert np.sqrt(np.mean(at_cut**2)) < 0.5 * np.sqrt(np.mean(around**2))


def test_max_delay_below_one_second_acts_as_one_second():
    audio = load("ps_librivox_0870")
    assert [(u.start, u.end) for u in utterances(run(audio, max_delay=0.1))] == \
           [(u.start, u.end) for u in utterances(run(audio, max_delay=1.0))]


def test_flush_ends_the_utterance_and_detection_goes_on():
    audio = load("ps_librivox_0870")
    segmenter = Segmenter()
    first = segmenter.feed(audio[: 2 * SAMPLE_RATE])
    assert segmenter.in_utterance and isinstance(first[0], SpeechStarted)
    current = segmenter.current()
    flushed = segmenter.flush()
    assert len(flushed) == 1 and flushed[0].forced
    assert flushed[0].start == current.start and flushed[0].end == 2 * SAMPLE_RATE
    assert not segmenter.in_utterance
    rest = segmenter.feed(audio[2 * SAMPLE_RATE :]) + segmenter.finish()
    assert not any(isinstance(item, SpeechStarted) for item in rest)  # the speech went on: no new start
    assert utterances(rest)[0].start == 2 * SAMPLE_RATE  # the next utterance takes up where the flush cut
    assert isinstance(rest[-1], SpeechStopped)


def test_flush_outside_speech_is_an_empty_forced_utterance():
    segmenter = Segmenter()
    segmenter.feed(np.zeros(SAMPLE_RATE, np.int16))
    [flushed] = segmenter.flush()
    assert flushed.forced and len(flushed.audio) == 0 and flushed.start == SAMPLE_RATE


def test_finish_mid_speech_returns_the_rest_then_stops_speech():
    audio = load("ps_librivox_0870")[: 3 * SAMPLE_RATE]
    items = run(audio)
    assert isinstance(items[-2], Utterance) and items[-2].end == len(audio)
    assert isinstance(items[-1], SpeechStopped)


def test_silence_is_no_utterance():
    assert run(np.zeros(5 * SAMPLE_RATE, np.int16)) == []


def test_bad_samples_are_refused():
    with pytest.raises(TypeError):
        Segmenter().feed(np.zeros(10, np.float32))
    with pytest.raises(ValueError):
        Segmenter(max_delay=0)


def test_the_consumer_of_a_cut_may_move_it_back_to_a_word_start():
    audio = load("ps_librivox_0870")
    segmenter = Segmenter(max_delay=2.0)
    got = []
    for item in segmenter.items(audio):
        if isinstance(item, Utterance) and item.cut and not utterances(got):
            segmenter.resume_at(item.end - 1600)  # 0.1 s back: the last word goes to the next utterance
        got.append(item)
    got += segmenter.finish()
    cut = utterances(got)
    assert cut[0].cut and cut[1].continued
    assert cut[1].start == cut[0].end - 1600  # its audio is decoded again, with what follows
    assert np.array_equal(cut[1].audio, audio[cut[1].start : cut[1].end])
    with pytest.raises(ValueError):
        segmenter.resume_at(10)  # not right after a cut
