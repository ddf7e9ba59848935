"""Cut a 16 kHz stream into utterances with the VAD, for engines that decode an utterance whole (Whisper).

Sans-IO and cheap (one WebRTC VAD call per 30 ms frame): `feed` takes int16 samples and returns, in audio
order, SpeechStarted, SpeechStopped and Utterance items. The rules are the pocketsphinx recognizer's
(stt.engines.sphinx), on the same SpeechDetector, so both engines start and stop speech at the same frames:

  * Speech starts after 0.3 s of speech frames in a row; the utterance begins PREROLL seconds before that run
    (never reaching back into audio an earlier utterance covered).
  * Speech stops after `endpointing` seconds of silence; the utterance, which ends with that silence, is
    returned, then SpeechStopped (at where speech ended, less the VAD's hangover).
  * max_delay: an utterance that grows past max_delay seconds without an endpoint is cut at the quietest
    CUT_WINDOW of its second half (usually a pause between words) and the rest starts the next utterance.
    Its Utterance has `cut` set; the engine, which knows where its words lie, may move the cut back to the
    start of a word that the cut split (`resume_at`), so that word is decoded whole with the next utterance.
    A cut is not a speech stop.
  * flush() returns the utterance so far, forced; the detector goes on. finish() returns the rest and stops
    speech still going.

Utterance.audio is the utterance's samples; start and end are sample offsets since the stream began.
`items(samples)` yields them one by one, as the frames are classified, so that the consumer of a cut
utterance can call `resume_at` before the segmenter goes on; `feed` is the list of them.
"""

from __future__ import annotations

from typing import Iterator

import attrs
import numpy as np

from stt.engines.vad import SAMPLE_RATE, VAD_HANGOVER, SpeechDetector, endpointing_frames
from stt.events import SpeechStarted, SpeechStopped

PREROLL = 0.2  # seconds of audio before the detected speech start kept in the utterance
TRAIL_KEPT = 0.2  # seconds of an utterance's endpointing silence counted as speech (the VAD's end is not exact)
CUT_WINDOW = 0.09  # seconds: a max_delay cut goes in the middle of the quietest window this long
MIN_MAX_DELAY = 1.0  # seconds; smaller max_delay values are raised to this (a decode costs the same for any length)
_HISTORY = 2 * SAMPLE_RATE  # samples kept before an utterance, for the pre-roll


@attrs.frozen(eq=False)
class Utterance:
    """Speech to decode: `audio` (int16) from sample `start`; `forced` when a flush cut it; `cut` when max_delay
    did; `continued` when it goes on from a cut (its first words follow the last utterance's without a pause);
    `trailing`: samples at its end after speech stopped (the endpointing silence, less TRAIL_KEPT)."""

    start: int
    audio: np.ndarray
    forced: bool = False
    continued: bool = False
    trailing: int = 0
    cut: bool = False

    @property
    def end(self) -> int:
        return self.start + len(self.audio)


class Segmenter:
    def __init__(self, endpointing: float | None = None, max_delay: float = 4.0) -> None:
        self._stop_frames = endpointing_frames(endpointing)
        self.max_delay = self._check_max_delay(max_delay)
        self.total = 0  # samples received
        self.covered = 0  # end of the audio the last utterance covered
        self._history = np.zeros(0, np.int16)  # audio [_history_start, total)
        self._history_start = 0
        self._utt_start: int | None = None  # where the current utterance began (None: not in one)
        self._continued = False  # the current utterance began at a max_delay cut
        self._last_cut_start = -1  # where the utterance that the last cut ended began
        self._new_detector(origin=0)

    # --- the interface -----------------------------------------------------------------------------------

    @property
    def in_utterance(self) -> bool:
        return self._utt_start is not None

    def current(self) -> Utterance | None:
        """The current utterance so far (None: not in one)."""
        if self._utt_start is None:
            return None
        return Utterance(self._utt_start, self._audio(self._utt_start, self._frame_end), continued=self._continued)

    def configure(self, max_delay: float | None = None) -> None:
        if max_delay is not None:
            self.max_delay = self._check_max_delay(max_delay)

    def feed(self, samples: np.ndarray) -> list:
        return list(self.items(samples))

    def items(self, samples: np.ndarray) -> Iterator:
        """SpeechStarted, SpeechStopped and Utterance items, yielded as the frames that make them are read."""
        samples = np.asarray(samples)
        if samples.dtype != np.int16 or samples.ndim != 1:
            raise TypeError(f"samples must be mono int16, not {samples.dtype} of shape {samples.shape}")
        self._history = np.concatenate([self._history, samples])
        self.total += len(samples)
        frame = self._frame_samples
        while self.total - self._frame_end >= frame:
            chunk = self._audio(self._frame_end, self._frame_end + frame)
            self._frame_end += frame
            yield from self._process(chunk.tobytes())
        self._trim_history()

    def resume_at(self, sample: int) -> None:
        """Right after a cut Utterance: the next utterance starts at `sample` (inside the cut one, or at its
        end), not at the cut; the audio from there is decoded again with it."""
        if not self._continued or self._utt_start != self.covered or not self._last_cut_start < sample <= self.covered:
            raise ValueError(f"resume_at({sample}) is not right after a cut")
        self._utt_start = self.covered = sample

    def flush(self) -> list:
        """The utterance so far, forced (empty audio when there is none); speech detection goes on."""
        if self._utt_start is None:
            return [Utterance(self.total, np.zeros(0, np.int16), forced=True)]
        return [self._end_utterance(self.total, forced=True)]

    def finish(self) -> list:
        """No more audio: the rest of the utterance, then SpeechStopped if speech was still going."""
        out: list = []
        if self._utt_start is not None:
            out.append(self._end_utterance(self.total, forced=False))
        detector = self._detector
        if detector.in_speech:
            silence = detector.silence_start
            end = self.total if silence is None else self._stopped_at(silence)
            out.append(SpeechStopped(_seconds(end)))
        self.covered = self.total
        self._new_detector(origin=self.total)
        return out

    # --- internals ---------------------------------------------------------------------------------------

    @staticmethod
    def _check_max_delay(max_delay: float) -> float:
        if not max_delay > 0:
            raise ValueError(f"max_delay must be positive, not {max_delay!r}")
        return max(float(max_delay), MIN_MAX_DELAY)

    def _new_detector(self, origin: int) -> None:
        self._detector = SpeechDetector(self._stop_frames)
        self._frame_samples = self._detector.frame_bytes // 2
        self._origin = origin
        self._frame_end = origin  # end of the last frame classified

    def _sample(self, frame: int) -> int:
        return self._origin + frame * self._frame_samples

    def _stopped_at(self, silence_start: int) -> int:
        detector = self._detector
        return max(self._sample(silence_start) - round(VAD_HANGOVER * SAMPLE_RATE), self._sample(detector.start))

    def _audio(self, start: int, end: int) -> np.ndarray:
        lo, hi = start - self._history_start, end - self._history_start
        if lo < 0 or hi > len(self._history) or lo > hi:
            raise AssertionError(f"audio {start}..{end} is not in the history")
        return self._history[lo:hi]

    def _trim_history(self) -> None:
        keep_from = self._frame_end - _HISTORY
        if self._utt_start is not None:
            keep_from = min(keep_from, self._utt_start)
        drop = keep_from - self._history_start
        if drop > SAMPLE_RATE:  # in steps, not on every call
            self._history = self._history[drop:].copy()
            self._history_start += drop

    def _process(self, frame: bytes) -> Iterator:
        detector = self._detector
        event = detector.process(frame)
        if event is SpeechStarted:
            yield SpeechStarted(_seconds(self._sample(detector.start)))
        if self._utt_start is None and detector.hearing:
            run_start = self._sample(detector.run_start)
            self._utt_start = max(self.covered, run_start - round(PREROLL * SAMPLE_RATE), self._history_start)
        if event is SpeechStopped:
            stopped = self._stopped_at(detector.stop)
            if self._utt_start is not None:
                trailing = self._frame_end - max(stopped + round(TRAIL_KEPT * SAMPLE_RATE), self._utt_start)
                yield self._end_utterance(self._frame_end, forced=False, trailing=max(trailing, 0))
            yield SpeechStopped(_seconds(stopped))
        elif self._utt_start is not None and self._frame_end - self._utt_start > self.max_delay * SAMPLE_RATE:
            self._last_cut_start = self._utt_start
            utterance = self._end_utterance(self._cut_point(), forced=False, cut=True)
            self._utt_start, self._continued = self.covered, True  # the rest goes on as the next utterance
            yield utterance

    def _end_utterance(self, end: int, forced: bool, trailing: int = 0, cut: bool = False) -> Utterance:
        assert self._utt_start is not None
        utterance = Utterance(self._utt_start, self._audio(self._utt_start, end).copy(), forced, self._continued,
                              trailing, cut)
        self._utt_start, self._continued = None, False
        self.covered = end
        return utterance

    def _cut_point(self) -> int:
        """Where to cut an utterance that reached max_delay: the middle of the quietest CUT_WINDOW in its
        second half (a pause if there is one)."""
        assert self._utt_start is not None
        start, end = self._utt_start, self._frame_end
        half = start + (end - start) // 2
        audio = self._audio(half, end).astype(np.float64)
        window = round(CUT_WINDOW * SAMPLE_RATE)
        if len(audio) <= window:
            return end
        power = np.concatenate([[0.0], np.cumsum(audio * audio)])
        energy = power[window:] - power[:-window]  # the energy of each window, by its first sample
        quietest = int(np.argmin(energy[::-1]))  # the latest of equally quiet windows
        return half + (len(energy) - 1 - quietest) + window // 2


def _seconds(samples: int) -> float:
    return round(samples / SAMPLE_RATE, 2)


__all__ = ["PREROLL", "Segmenter", "Utterance"]
