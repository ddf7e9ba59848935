"""bench/bench_engines.py's bookkeeping, on synthetic timings: which audio was fed when, which lag each result
gets, percentiles, and the choice of the default engine. No engines run."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest

from stt.events import Final, Partial, SpeechStarted, SpeechStopped, Word

_PATH = Path(__file__).resolve().parent.parent / "bench" / "bench_engines.py"
_spec = importlib.util.spec_from_file_location("bench_engines", _PATH)
be = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("bench_engines", be)  # dataclasses look their module up
_spec.loader.exec_module(be)

T0 = 100.0  # wall time when chunk 0 was due
CHUNK = 0.1


def words(*texts: str) -> tuple[Word, ...]:
    return tuple(Word(t, 0.0, 0.0) for t in texts)


def test_fed_at_is_the_due_time_of_the_chunk_holding_the_position():
    fed = lambda p: be.fed_at(T0, CHUNK, 50, p)  # noqa: E731
    assert fed(0.0) == T0  # the first instant is in chunk 0
    assert fed(0.05) == T0
    assert fed(0.1) == pytest.approx(T0)  # the end of chunk 0 came with chunk 0
    assert fed(0.11) == pytest.approx(T0 + 0.1)  # result times are rounded to 10 ms
    assert fed(0.84) == pytest.approx(T0 + 0.8)
    assert fed(4.9) == pytest.approx(T0 + 4.8)
    assert fed(5.0) == pytest.approx(T0 + 4.9)  # the last chunk
    assert fed(7.0) == pytest.approx(T0 + 4.9)  # past the audio: the last chunk
    assert fed(-1.0) == T0


def test_percentiles_and_summaries():
    assert be.percentile([1.0, 2.0, 3.0, 4.0, 5.0], 50) == 3.0
    assert be.percentile([0.0, 10.0], 95) == pytest.approx(9.5)  # linear interpolation
    assert math.isnan(be.percentile([], 50))
    s = be.lag_summary([0.2, 0.4])
    assert s["n"] == 2 and s["max"] == 0.4 and s["p50"] == pytest.approx(0.3)
    assert math.isnan(be.lag_summary([])["p95"]) and math.isnan(be.lag_summary([])["max"])


def test_wer_counts_errors_and_reference_words():
    assert be.wer_counts("Go forward, ten meters.", "go forward ten years") == (1, 4)
    assert be.wer_counts("ten of clubs", "") == (3, 3)


def log_of(events, n_chunks=60, finished=True):
    log = be.StreamLog("rec", T0, CHUNK, n_chunks, finished=finished)
    for arrival, call, result in events:
        log.add(T0 + arrival, call, [result])
    return log


def test_analyze_lags_per_kind_of_final():
    log = log_of([
        (0.6, 6, SpeechStarted(0.24)),  # fed at 0.2
        (1.05, 10, Partial(words("and"), 0.04, 1.0)),  # first partial: 0.85 s after the speech start was fed
        (1.25, 12, Partial(words("and", "mister"), 0.04, 1.2)),
        (4.5, 40, Final(words("and", "mister", "john"), 0.04, 1.94)),  # a max_delay cut: no SpeechStopped
        (5.0, 49, Partial(words("had"), 1.94, 4.9)),
        (5.4, 52, Final(words("had", "leisure"), 1.94, 5.2)),  # an endpoint final...
        (5.4, 52, SpeechStopped(4.84)),  # ...speech ended at 4.84, fed at 4.8
        (5.6, 55, SpeechStarted(5.5)),  # fed at 5.4; finish() brings its final, no partial before it
        (6.1, 60, Final(words("to"), 5.3, 5.95)),
        (6.1, 60, SpeechStopped(5.9)),  # in chunk 58, (5.8, 5.9], fed at 5.8
    ])
    a = be.analyze(log)
    assert a.first_partial == [pytest.approx(0.85)]
    assert a.utterances == 2 and a.no_partial == 1 and a.partials == 3 and a.finals == 3
    assert a.cuts == 1 and a.at_stop == 2
    assert a.final_lag == [pytest.approx(5.4 - 4.8), pytest.approx(6.1 - 5.8)]
    assert a.cut_lag == [pytest.approx(4.5 - 1.9)]  # from Final.end 1.94, fed at 1.9
    # from the due time of the call that returned it: chunk 40, chunk 52, finish() (due with the last chunk, 59)
    assert a.engine_lag == [pytest.approx(0.5), pytest.approx(0.2), pytest.approx(0.2)]
    assert a.text == "and mister john had leisure to"
    assert a.anomalies == {}


def test_analyze_finish_final_without_speech_stop_counts_from_its_end():
    log = log_of([(3.2, 30, Final(words("yes"), 2.0, 3.0))], n_chunks=30)
    a = be.analyze(log)
    assert a.cuts == 0 and a.final_lag == [pytest.approx(3.2 - 2.9)]


def test_analyze_reports_results_out_of_order():
    log = log_of([
        (0.5, 5, Partial(words("a"), 0.0, 0.4)),  # before any SpeechStarted
        (0.6, 6, SpeechStarted(0.2)),
        (2.0, 20, Final(words("a", "b"), 0.0, 1.5)),
        (2.1, 21, Partial(words("b"), 1.0, 2.0)),  # reaches back into audio already final
        (2.5, 25, SpeechStarted(2.2)),  # a second start without a stop
        (3.0, 30, Final(words("c"), 1.4, 2.9)),  # overlaps the last final
    ])
    a = be.analyze(log)
    assert a.anomalies == {"Partial outside speech": 1, "Partial starts before the last Final's end": 1,
                           "SpeechStarted while in speech": 1, "Final starts before the last Final's end": 1,
                           "speech not stopped by finish()": 1}


def test_lag_trend_compares_first_and_last_thirds_by_arrival():
    arrivals = [5, 4, 3, 2, 1, 0]
    lags = [3.0, 3.0, 1.0, 1.0, 0.5, 0.5]
    assert be.lag_trend(arrivals, lags) == (0.5, 3.0)
    assert all(math.isnan(x) for x in be.lag_trend([1, 2], [0.1, 0.2]))


def row(p95, errors=(), timed_out=False):
    return {"final_lag_s": {"p95": p95}, "errors": list(errors), "timed_out": timed_out}


def test_row_passes_at_the_lag_limit_without_failures():
    assert be.row_passes(row(1.5))
    assert not be.row_passes(row(1.51))
    assert not be.row_passes(row(0.5, errors=["rec: EngineError: boom"]))
    assert not be.row_passes(row(0.5, timed_out=True))
    assert not be.row_passes(row(math.nan))  # no final came back


def test_choose_the_most_accurate_mode_with_enough_streams_per_core():
    summaries = [
        {"mode": "sphinx", "wer": 0.36, "max_streams": 8, "capped": False},
        {"mode": "whisper-redecode", "wer": 0.10, "max_streams": 3, "capped": False},
        {"mode": "whisper-two-pass", "wer": 0.11, "max_streams": 4, "capped": False},
    ]
    v = be.choose(summaries, cores=2)
    assert v["need_streams"] == 4 and v["meets"] == ["sphinx", "whisper-two-pass"]
    assert v["choice"] == "whisper-two-pass"
    capped = [{"mode": "sphinx", "wer": 0.36, "max_streams": 2, "capped": True}]
    assert be.choose(capped, cores=2) == {"need_streams": 4, "meets": [], "undetermined": ["sphinx"],
                                          "choice": None}


def test_client_plan_rotates_the_recordings():
    recs = ["a", "b", "c"]
    assert be.client_plan(recs, 4, quick=False) == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"],
                                                    ["a", "b", "c"]]
    assert be.client_plan(recs, 2, quick=True) == [["a"], ["b"]]
    assert be._ns(32, quick=False) == [1, 2, 3, 4, 6, 8, 12, 16, 24, 32]
    assert be._ns(32, quick=True) == [1, 2]
