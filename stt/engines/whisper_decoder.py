"""Blocking Whisper decodes on CTranslate2, with windows sized to the audio (measured in
/work/shared/engines-research.md, re-measured by bench/bench_streaming.py).

faster-whisper's `transcribe` pads every decode to Whisper's 30 s (3000 mel frames), so the encoder costs about
320 ms of a core for tiny.en whatever the utterance's length. CTranslate2 accepts shorter inputs, so here the
log-mel of the utterance is padded only to a window: `max(audio + 1 s, 10 s)` for a partial, `max(audio + 1 s,
15 s)` for a final (encoder 37 / 70 ms). A partial's padding is the log-mel floor (normalised max − 2: the value
openai-whisper's zero *audio* padding gives, which tiny.en was trained on), a final's faster-whisper's 0
(measured: see FINAL_PADDING).

Windows shorter than 30 s make tiny.en loop now and then ("Fail again. Fail again. …"): the model repeats the
utterance to fill the window, confidently, so Whisper's own checks (compression ratio, log-prob) miss it. The
guard (`looping`) catches it: a 1–6-gram repeated 3 times in a row (a single word only in outputs of 6 words
or more), more than 5 tokens a second + 4, or the token cap reached. A looping partial is dropped; a looping
final is decoded again with the 30 s window.

Decoding: greedy (beam 1, temperature 0), no timestamps, at most 16 + 8 tokens a second of audio. A final's word
times and confidences come from CTranslate2's `align` on the same encoder output (cross-attention DTW, as
faster-whisper's word_timestamps do, +8–11 ms); a partial's words share its audio by their length.
"""

from __future__ import annotations

import math
import re
import time
from pathlib import Path

import attrs
import numpy as np

from stt.engines.vad import SAMPLE_RATE
from stt.events import Word
from stt.text.spoken import spoken_words

FRAMES_PER_SECOND = 100  # log-mel frames (10 ms hop)
MAX_FRAMES = 3000  # Whisper's 30 s
PARTIAL_WINDOW = 10.0  # seconds: the smallest window that rarely loops (engines-research.md Q1)
FINAL_WINDOW = 15.0
WINDOW_MARGIN = 1.0  # seconds of padding at least after the audio
# What pads the log-mel to the window. Partials: the floor (engines-research.md: guarded f10 prefix error 0.100
# against 0.115 for zeros). Finals: zeros, as faster-whisper pads, measured on the recordings of tests/data and
# ../shared/audio (173 words, bench/bench_word_times.py --padding): 15 s windows 16 errors with zeros, 21 with
# the floor (30 s: 16 / 21; the 30 s transcribe of the previous design: 14). The research's 404-word set leaned
# the other way (f15 29, z15 34); both gaps are within noise, and these are the recordings the WER is
# measured on.
PARTIAL_PADDING = "floor"
FINAL_PADDING = "zero"
TOKENS_PER_SECOND = 8  # the token cap: MIN_TOKENS + 8 a second of audio (read speech: about 4)
MIN_TOKENS = 16
MAX_TOKENS = 220  # Whisper's decoder holds 448 tokens, the prompt included
PREPEND_PUNCTUATION = "\"'“¿([{-"  # faster-whisper's: joined to the word after
APPEND_PUNCTUATION = "\"'.。,，!！?？:：”)]}、"  # ... to the word before
GUARD_TOKENS_PER_SECOND = 5.0  # the guard: more tokens than this a second (+ GUARD_TOKENS_EXTRA) is a loop
GUARD_TOKENS_EXTRA = 4
GUARD_REPEATS = 3  # an n-gram this many times in a row is a loop
GUARD_MAX_NGRAM = 6
GUARD_SINGLE_WORD_MIN = 6  # a word repeated counts only in outputs of at least this many words ("no no no")


@attrs.frozen
class DecodeOptions:
    hints: tuple[str, ...] = ()
    final: bool = True  # a final: FINAL_WINDOW, aligned words, a loop re-decoded at 30 s; a partial: dropped
    prompt: str = ""  # the text before this audio, when it goes on from a cut
    window: float | None = None  # seconds: overrides the window (benchmarks; 30.0 is the old design's)
    padding: str | None = None  # "floor" or "zero": overrides FINAL_PADDING / PARTIAL_PADDING (benchmarks)


@attrs.frozen
class Decoded:
    words: tuple[Word, ...]
    looped: bool = False  # the guard fired: a partial's words are dropped, a final was decoded again at 30 s
    window: float = 0.0  # seconds of the window the words came from
    seconds: float = 0.0  # wall time of the decode


_WORD = re.compile(r"[a-z0-9']+")


def looping(text: str, tokens: int, seconds: float, capped: bool) -> bool:
    """The guard: does this hypothesis of `seconds` of audio look like a loop rather than speech?"""
    if capped or tokens > GUARD_TOKENS_PER_SECOND * seconds + GUARD_TOKENS_EXTRA:
        return True
    words = _WORD.findall(text.lower())
    for n in range(1, GUARD_MAX_NGRAM + 1):
        if n == 1 and len(words) < GUARD_SINGLE_WORD_MIN:
            continue
        span = n * GUARD_REPEATS
        for i in range(len(words) - span + 1):
            gram = words[i:i + n]
            if all(words[i + k * n:i + (k + 1) * n] == gram for k in range(1, GUARD_REPEATS)):
                return True
    return False


def window_frames(content_frames: int, window: float) -> int:
    """Mel frames of the window for `content_frames` frames of audio: max(audio + margin, window), at most 30 s."""
    wanted = max(content_frames + round(WINDOW_MARGIN * FRAMES_PER_SECOND), round(window * FRAMES_PER_SECOND))
    return min(wanted, MAX_FRAMES)


def pad_to_window(mel: np.ndarray, frames: int, padding: str = "floor") -> np.ndarray:
    """The log-mel (n_mels, n) padded (or cut) to `frames` frames with its floor, max − 2 (normalised), or 0."""
    value = (float(mel.max()) - 2.0 if mel.size else -1.5) if padding == "floor" else 0.0
    out = np.full((mel.shape[0], frames), value, dtype=np.float32)
    n = min(mel.shape[1], frames)
    out[:, :n] = mel[:, :n]
    return out


class WhisperRunner:
    """Blocking: one CTranslate2 Whisper model, decoding int16 utterances into spoken-form Words. Thread-safe for
    `workers` calls at once (CTranslate2 inter_threads, one intra thread each: a decode releases the GIL)."""

    def __init__(self, model: Path, workers: int) -> None:
        from faster_whisper import WhisperModel
        from faster_whisper.tokenizer import Tokenizer

        # faster-whisper only for loading, the feature extractor, the tokenizer and the alignment helper: the
        # decodes below call the CTranslate2 model (wm.model) directly.
        self._wm = WhisperModel(str(model), device="cpu", compute_type="int8", cpu_threads=1, num_workers=workers,
                                local_files_only=True)
        self._tokenizer = Tokenizer(self._wm.hf_tokenizer, self._wm.model.is_multilingual, task="transcribe",
                                    language="en")

    # --- the steps ------------------------------------------------------------------------------------------

    def features(self, audio: np.ndarray) -> np.ndarray:
        """The normalised log-mel of int16 audio, unpadded: (n_mels, frames)."""
        mel = self._wm.feature_extractor(audio.astype(np.float32) / 32768.0, padding=0)
        return mel[:, : max(1, len(audio) // (SAMPLE_RATE // FRAMES_PER_SECOND))]

    def encode(self, mel: np.ndarray, frames: int, padding: str = "floor"):
        import ctranslate2

        return self._wm.model.encode(ctranslate2.StorageView.from_array(pad_to_window(mel, frames, padding)[None]),
                                     to_cpu=False)

    def generate(self, encoded, options: DecodeOptions, seconds: float) -> tuple[list[int], float, bool]:
        """(text tokens, average log-probability, whether the token cap stopped it)."""
        tok = self._tokenizer
        previous = tok.encode(" " + options.prompt.strip()) if options.prompt.strip() else []
        prompt = self._wm.get_prompt(tok, previous, without_timestamps=True,
                                     hotwords=", ".join(options.hints) or None)
        cap = min(MAX_TOKENS, MIN_TOKENS + math.ceil(seconds * TOKENS_PER_SECOND))
        result = self._wm.model.generate(encoded, [prompt], beam_size=1, max_length=len(prompt) + cap,
                                         return_scores=True, suppress_blank=True, suppress_tokens=[-1])[0]
        ids = result.sequences_ids[0]
        tokens = [t for t in ids if t < tok.eot]
        score = result.scores[0] if result.scores else 0.0
        return tokens, float(score), len(ids) >= cap - 1

    def align(self, encoded, tokens: list[int], content_frames: int, seconds: float) -> list[Word]:
        """Spoken-form words with times (seconds from the utterance's start) and probabilities from `align`."""
        from faster_whisper.transcribe import merge_punctuations

        aligned = self._wm.find_alignment(self._tokenizer, [tokens], encoded, content_frames)
        alignment = aligned[0] if aligned else []
        merge_punctuations(alignment, PREPEND_PUNCTUATION, APPEND_PUNCTUATION)  # "Mr" + "." is "Mr.": "mister"
        words: list[Word] = []
        for w in alignment:
            texts = spoken_words(w["word"])
            if not texts:  # punctuation on its own
                continue
            start, end = min(float(w["start"]), seconds), min(float(w["end"]), seconds)
            words += _spread(texts, start, max(end, start), _probability(w["probability"]))
        return words

    # --- a decode -------------------------------------------------------------------------------------------

    def decode(self, audio: np.ndarray, start: float, options: DecodeOptions) -> Decoded:
        """The words of `audio` (int16 at 16 kHz), with times in seconds from `start`."""
        began = time.monotonic()
        if not len(audio):
            return Decoded((), seconds=0.0)
        seconds = len(audio) / SAMPLE_RATE
        mel = self.features(audio)
        content = mel.shape[1]
        window = options.window or (FINAL_WINDOW if options.final else PARTIAL_WINDOW)
        frames = window_frames(content, window)
        padding = options.padding or (FINAL_PADDING if options.final else PARTIAL_PADDING)
        encoded = self.encode(mel, frames, padding)
        tokens, score, capped = self.generate(encoded, options, seconds)
        looped = looping(self._tokenizer.decode(tokens), len(tokens), seconds, capped)
        if looped and not options.final:
            return Decoded((), looped=True, window=frames / FRAMES_PER_SECOND, seconds=time.monotonic() - began)
        if looped and frames < MAX_FRAMES:  # a final: once more with Whisper's own 30 s window
            frames = MAX_FRAMES
            encoded = self.encode(mel, frames, padding)
            tokens, score, capped = self.generate(encoded, options, seconds)
        if options.final:
            words = self.align(encoded, tokens, content, seconds)
        else:
            words = _spread(spoken_words(self._tokenizer.decode(tokens)), 0.0, seconds,
                            _probability(math.exp(score)))
        words = [attrs.evolve(w, start=_clip(start + w.start, start, start + seconds),
                              end=_clip(start + w.end, start, start + seconds)) for w in words]
        return Decoded(tuple(words), looped=looped, window=frames / FRAMES_PER_SECOND,
                       seconds=time.monotonic() - began)

    def warm(self) -> None:
        """One decode of each kind, so the first stream does not pay for the model's first calls."""
        for final in (False, True):
            self.decode(np.zeros(SAMPLE_RATE // 2, np.int16), 0.0, DecodeOptions(final=final))

    def probe(self, repeats: int = 3) -> dict[str, float]:
        """Seconds of CPU (this process) for a partial's and a final's encoder window, the least of `repeats`:
        what this machine pays now, for the cost model (stt.engines.whisper_scheduler.CostModel)."""
        silence = np.zeros(2 * SAMPLE_RATE, np.int16)
        mel = self.features(silence)
        out = {}
        for name, window in (("partial_encode", PARTIAL_WINDOW), ("final_encode", FINAL_WINDOW)):
            frames = window_frames(mel.shape[1], window)
            best = math.inf
            for _ in range(repeats):
                began = time.process_time()
                self.encode(mel, frames)
                best = min(best, time.process_time() - began)
            out[name] = best
        return out


def _probability(p: float) -> float:
    return round(min(max(float(p), 0.0), 1.0), 4)


def _clip(t: float, low: float, high: float) -> float:
    return round(min(max(t, low), high), 2)


def _spread(texts: list[str], start: float, end: float, confidence: float) -> list[Word]:
    """Words sharing [start, end) by their length in characters."""
    if not texts:
        return []
    lengths = np.cumsum([0] + [len(t) for t in texts])
    span = max(end - start, 0.0)
    return [Word(t, start + span * lengths[i] / lengths[-1], start + span * lengths[i + 1] / lengths[-1], confidence)
            for i, t in enumerate(texts)]


__all__ = ["DecodeOptions", "Decoded", "WhisperRunner", "looping", "pad_to_window", "window_frames"]
