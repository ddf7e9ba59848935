#!/usr/bin/env python
"""Word times and confidences of the streaming finals (15 s floor-padded window + `align` on its encoder output)
against the previous design's (faster-whisper `transcribe`, 30 s zero-padded window, word_timestamps).

    .venv/bin/python bench/bench_word_times.py [--padding floor|zero] [--window 15]   # a minute on 2 quiet cores

Each recording of tests/data and ../shared/audio is cut into utterances by the engine's segmenter (default
endpointing, max_delay 25 s) and each utterance decoded both ways. Where both give the same word sequence, the
words are paired: printed are the median and p95 of |start difference| and |end difference| (ms), and the
mean confidence of each; and the WER of both ways over the recordings. It measures and prints; it asserts nothing.
"""

from __future__ import annotations

import itertools
import math
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.bench_streaming import load_recordings  # noqa: E402
from stt.engines.segmenter import Segmenter, Utterance  # noqa: E402
from stt.engines.whisper_decoder import DecodeOptions, WhisperRunner, _probability, _spread  # noqa: E402
from stt.engines.whisper_model import check_model  # noqa: E402
from stt.text.spoken import spoken_words  # noqa: E402
from stt.wer import edit_distance, normalize  # noqa: E402


def utterances(samples: np.ndarray) -> list[Utterance]:
    segmenter = Segmenter(None, 25.0)
    items = segmenter.feed(samples) + segmenter.finish()
    out = []
    for u in items:
        if isinstance(u, Utterance) and len(u.audio):
            out.append(Utterance(u.start, u.audio[: len(u.audio) - u.trailing]) if u.trailing else u)
    return out


def thirty_second_words(runner: WhisperRunner, audio: np.ndarray, start: float):
    """The previous design's decode: faster-whisper transcribe, 30 s zero-padded, word timestamps."""
    segments, _ = runner._wm.transcribe(audio.astype(np.float32) / 32768.0, language="en", beam_size=1,
                                        temperature=0.0, condition_on_previous_text=False,
                                        without_timestamps=True, word_timestamps=True, vad_filter=False)
    words = []
    for segment in itertools.islice(segments, 1):
        for w in segment.words or []:
            words += _spread(spoken_words(w.word), start + w.start, start + w.end, _probability(w.probability))
    return words


def main() -> int:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--padding", choices=("floor", "zero"), default=None, help="pad the finals' windows so (default: "
                   "the engine's FINAL_PADDING)")
    p.add_argument("--window", type=float, default=None, help="the finals' window, seconds (default: the engine's)")
    args = p.parse_args()
    options = DecodeOptions(padding=args.padding, window=args.window)
    runner = WhisperRunner(check_model(None), workers=1)
    runner.warm()
    starts, ends, conf_new, conf_old = [], [], [], []
    same = total = 0
    errors = {"new": 0, "old": 0}
    words_n = 0
    for rec in load_recordings():
        texts = {"new": [], "old": []}
        for u in utterances(rec.samples):
            t = u.start / 16000
            new = runner.decode(u.audio, t, options).words
            old = thirty_second_words(runner, u.audio, t)
            texts["new"] += [w.text for w in new]
            texts["old"] += [w.text for w in old]
            total += 1
            if [w.text for w in new] != [w.text for w in old]:
                continue
            same += 1
            for a, b in zip(new, old):
                starts.append(abs(a.start - b.start) * 1000)
                ends.append(abs(a.end - b.end) * 1000)
                conf_new.append(a.confidence)
                conf_old.append(b.confidence)
        ref = normalize(rec.text)
        words_n += len(ref)
        for k in errors:
            errors[k] += edit_distance(ref, normalize(" ".join(texts[k])))
        print(f"{rec.name}: new {' '.join(texts['new'])!r}; old {' '.join(texts['old'])!r}", flush=True)
    print(f"WER of the finals, whole utterances (max_delay 25 s): 15 s + align {errors['new']}/{words_n} "
          f"({errors['new'] / words_n:.3f}), 30 s transcribe {errors['old']}/{words_n} ({errors['old'] / words_n:.3f})")
    if not starts:
        print("no utterance decoded to the same words both ways")
        return 0
    print(f"{total} utterances, {same} with the same words both ways ({len(starts)} words paired)")
    print(f"|start difference| ms: median {np.median(starts):.0f}, p95 {np.percentile(starts, 95):.0f}, "
          f"max {max(starts):.0f}")
    print(f"|end difference| ms:   median {np.median(ends):.0f}, p95 {np.percentile(ends, 95):.0f}, "
          f"max {max(ends):.0f}")
    corr = np.corrcoef(conf_new, conf_old)[0, 1] if len(conf_new) > 2 else math.nan
    print(f"confidence: mean {np.mean(conf_new):.3f} (15 s + align) against {np.mean(conf_old):.3f} (30 s); "
          f"correlation {corr:.2f}; mean |difference| {np.mean(np.abs(np.subtract(conf_new, conf_old))):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
