"""Voice activity: where speech starts and stops in a 16 kHz stream, from pocketsphinx's frame classifier
(WebRTC's VAD). Shared by the recognizers that cut a stream into utterances (stt.engines.sphinx, and
stt.engines.segmenter for the Whisper engine), so every engine starts and stops speech at the same frames.

See stt.engines.sphinx for how the times were measured (tests/engines/test_vad.py checks them).
"""

from __future__ import annotations

from pocketsphinx import Vad

from stt.events import SpeechStarted, SpeechStopped

SAMPLE_RATE = 16000
VAD_FRAME = 0.03  # seconds per VAD frame (WebRTC's VAD takes 10, 20 or 30 ms)
START_FRAMES = 10  # VAD frames of speech in a row (0.3 s) that start speech
# WebRTC's VAD (mode 0, "quality", which pocketsphinx's Vad.LOOSE is) goes on saying "speech" for 5 frames of
# 30 ms after a run of more than 6 speech frames (kOverHangMax2Q in its vad_core.c; 3 after shorter runs).
# Measured on tests/data/synth_vad_gaps.wav: the VAD's silence begins 173, 176 and 160 ms after each sentence
# ends; less this, SpeechStopped is 23, 26 and 10 ms late (within the 30 ms frame that holds the end).
VAD_HANGOVER = 0.15
# The silence that ends an utterance when StreamSettings.endpointing is None: START_FRAMES silent frames (the
# 0.3 s window of the pocketsphinx Endpointer this replaces) after the hangover.
ENDPOINTING_DEFAULT = VAD_HANGOVER + START_FRAMES * VAD_FRAME
# Accepted endpointing, seconds (above 0, at most 5: a dialect may ask for 10 ms). Values below MIN_ENDPOINTING
# act as it: one silent frame after the hangover is the soonest the VAD can tell.
ENDPOINTING_RANGE = (0.0, 5.0)
MIN_ENDPOINTING = VAD_HANGOVER + VAD_FRAME

# --- voice activity ----------------------------------------------------------------------------------------


def endpointing_frames(endpointing: float | None) -> int:
    """The silent VAD frames, after the hangover, that end speech: `endpointing` seconds of silence in all."""
    if endpointing is None:
        return START_FRAMES
    low, high = ENDPOINTING_RANGE
    if not low < endpointing <= high:  # also refuses NaN
        raise ValueError(f"endpointing must be more than {low:g} and at most {high:g} seconds, not {endpointing!r}")
    return max(1, round((endpointing - VAD_HANGOVER) / VAD_FRAME))


class SpeechDetector:
    """Speech start and stop over pocketsphinx's frame classifier, counted in VAD frames since it was made.

    Speech starts once START_FRAMES frames in a row are speech (`start`: the first of them). It stops once
    `stop_frames` frames have passed since the last speech frame (`stop`: where that silence began). Once the
    silence is START_FRAMES long, stray speech frames (a click, a breath) no longer count: only a new start
    resumes the speech, and the stop waits while a run of speech frames that may become one is under way.

    With stop_frames == START_FRAMES it decides exactly as pocketsphinx's Endpointer(window=0.3, ratio=0.9).
    """

    def __init__(self, stop_frames: int) -> None:
        self._vad = Vad(Vad.LOOSE, SAMPLE_RATE, VAD_FRAME)
        self.frame_bytes = self._vad.frame_bytes
        self._stop_frames = stop_frames
        self.frames = 0  # frames classified
        self.in_speech = False
        self.run_start = 0  # first frame of the latest run of speech frames
        self.start = 0  # first frame of the current (or last) speech
        self.stop = 0  # frame where the last speech's silence began
        self._run = 0  # speech frames in a row, up to the last one
        self._quiet = 0  # in speech: frames since the last speech frame that counts

    @property
    def hearing(self) -> bool:
        """In speech, and the last frame was speech that counts (not a stray one inside a long silence)."""
        return self.in_speech and self._quiet == 0

    @property
    def silence_start(self) -> int | None:
        """In speech: the frame where the silence after its last speech frame began (None: none yet)."""
        return self.frames - self._quiet if self.in_speech and self._quiet else None

    def process(self, frame: bytes) -> type[SpeechStarted] | type[SpeechStopped] | None:
        """Classify one frame; SpeechStarted or SpeechStopped where speech starts or stops."""
        speech = self._vad.is_speech(frame)
        self.frames += 1
        self._run = self._run + 1 if speech else 0
        if self._run == 1:
            self.run_start = self.frames - 1
        if not self.in_speech:
            if self._run >= START_FRAMES:
                self.in_speech, self.start, self._quiet = True, self.run_start, 0
                return SpeechStarted
            return None
        if self._quiet < START_FRAMES:
            self._quiet = 0 if speech else self._quiet + 1
        else:  # a long silence: only a new start resumes the speech
            self._quiet = 0 if self._run >= START_FRAMES else self._quiet + 1
        if self._quiet >= self._stop_frames and not self._run:
            self.in_speech, self.stop = False, self.frames - self._quiet
            return SpeechStopped
        return None
