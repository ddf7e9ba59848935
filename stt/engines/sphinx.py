"""The pocketsphinx recognizer: voice activity, endpointing, partials, max_delay cuts that never split a word.

One SphinxRecognizer decodes one stream with pocketsphinx's bundled en-us model at 16 kHz.

How a stream is cut into utterances:
  * A SpeechDetector (below) classifies fixed 30 ms frames with pocketsphinx's VAD (WebRTC's); client chunks
    of any size are carried over between feed() calls, so the detector and the decoder always see the same
    sequence of calls whatever the chunking, and the finals are the same.
  * Speech starts after 0.3 s of speech frames in a row; an utterance then starts PREROLL seconds before it
    (never reaching back into audio an earlier Final covered), and the decoder is fed each frame as it
    arrives, so partials trail the audio by a frame. SpeechStarted goes out with the start, before any Partial.
  * Speech stops after `endpointing` seconds of silence (by default 0.45 s: ENDPOINTING_DEFAULT); the
    utterance, which ends with that silence, becomes a Final, and SpeechStopped follows it. Speech that
    resumes within the silence continues the same utterance, without events.
  * max_delay: once an utterance holds more than max_delay seconds of audio without an endpoint, it is ended
    anyway. Its last word may be cut in half, so only the words before it are finalised; a new utterance
    starts at that boundary and is re-fed the audio from there on. Final.end is the boundary, so the finals
    tile the speech. A cut is not a speech stop: no event.
  * flush() finalises the utterance (forced) but does not touch the detector: speech that goes on opens a new
    utterance at once, and SpeechStopped comes when the detector hears the silence. finish() ends everything:
    speech still going stops where its silence began, or at the end of the audio if there was none.
  * REDECODE_FIRST (off) decodes a stream's first utterance twice: pocketsphinx normalises features with a
    cepstral mean that it only learns at the end of an utterance, and its initial value suits few
    microphones. The second pass uses the mean learnt from the first ("go forward ten years" -> "... ten
    meters"), but it trades other words on other recordings and stalls the stream at its first final.

Speech times: SpeechStarted is the start of the first 30 ms frame of the run that started the speech;
SpeechStopped is the end of the last speech frame less the VAD's hangover (VAD_HANGOVER). On
tests/data/synth_vad_gaps.wav both fall within 30 ms of the boundaries measured from the waveform
(tests/engines/test_vad.py).

Endpointing: `endpointing` seconds count from where speech ended, so the detector waits for
round((endpointing - VAD_HANGOVER) / VAD_FRAME) silent frames after the last speech frame (at least one: an
utterance cannot end sooner than MIN_ENDPOINTING after the speech). pocketsphinx's own Endpointer(window W,
ratio r) cannot do this: over its N = W / 0.03 frames it starts speech when more than int(r * N) are speech
and stops it when fewer than int((1 - r) * N + 0.5) are, so with the default 0.3 s and 0.9 it wants all 10
frames either way, and a window long enough for 1.8 s of silence would also want about 1.6 s of speech
before it starts. SpeechDetector is that rule with a separate stop length; with the default it decides
exactly as the Endpointer, which the recognizer used before (compared in tests/engines/test_vad.py).

`hints` are ignored: the n-gram model has no cheap way to favour words.

Times are absolute, in seconds since the start of the stream, rounded to 10 ms.

Decoders are expensive to load (~0.4 s), so a closed recognizer puts its decoder on a module-level free list and
the next recognizer in the same process takes it, with its feature extraction (noise estimate, cepstral mean)
reset, so that every stream starts from the same state. A decoder holds about 98 MB: the free list keeps at most
MAX_FREE_DECODERS (one), and a decoder it does not keep is freed and its memory handed back to the system
(`return_memory`: glibc keeps freed memory in the process otherwise, so a worker that once served 8 streams at
once stayed at 8 decoders' worth, about 650 MB, after they had all ended). So a worker holds one decoder per
stream that has had audio, plus one.
"""

from __future__ import annotations

import ctypes
import re

import numpy as np
from pocketsphinx import Decoder

from stt.engines.base import Results, StreamSettings
from stt.engines.vad import VAD_HANGOVER, SpeechDetector, endpointing_frames
from stt.events import Final, Partial, SpeechStarted, SpeechStopped, Word

SAMPLE_RATE = 16000  # the bundled en-us model is 16 kHz only
_BYTES = 2  # int16
_DECODER_FRAME = 160  # samples per decoder frame (100 frames per second)

PREROLL = 0.2  # seconds of audio before the detected speech start given to the decoder
CUT_TAIL = 30  # decoder frames: a last word ending this long before the cut is complete, not cut
CUT_PAD = 10  # decoder frames of lead-in kept before a cut word when it is re-fed
MIN_MAX_DELAY = 0.5  # seconds; smaller max_delay values are raised to this
# Decode a stream's first utterance again once the cepstral mean has adapted. Off: on the 34 words of real
# speech in tests/data it changes which words are wrong, not how many (10 either way), and it costs a ~0.9 s
# stall at the first final (the slowest feed call: 918 ms with it, 275 ms without; RTF 0.33 against 0.23).
REDECODE_FIRST = False
_HISTORY = SAMPLE_RATE  # samples of raw audio kept for pre-roll and for draining the detector's carry

_FILLER = re.compile(r"^(<.*>|\[.*\]|\+\+.*\+\+)$")
_ALTERNATE = re.compile(r"\(\d+\)$")

# --- decoder free list -------------------------------------------------------------------------------------

MAX_FREE_DECODERS = 1  # a decoder holds ~98 MB; loading one takes ~0.5 s of the worker's time
_free_decoders: list[Decoder] = []


def acquire_decoder() -> Decoder:
    """A decoder in its initial state: from the free list (feature extraction reset), or freshly loaded."""
    if not _free_decoders:
        return Decoder(samprate=SAMPLE_RATE, loglevel="FATAL")
    decoder = _free_decoders.pop()
    # The noise estimate and the cepstral mean adapt to each stream; reset both (set_cmn alone is not enough).
    decoder.reinit_feat()
    return decoder


def release_decoder(decoder: Decoder) -> bool:
    """Give a decoder (not inside an utterance) back to the free list; False when the list is full (the caller
    then drops its last reference and calls return_memory)."""
    if len(_free_decoders) < MAX_FREE_DECODERS:
        _free_decoders.append(decoder)
        return True
    return False


def return_memory() -> None:
    """Hand the memory freed decoders leave behind back to the system (glibc's malloc_trim; elsewhere nothing)."""
    if _malloc_trim is not None:
        _malloc_trim(0)


def _find_malloc_trim():
    try:
        return ctypes.CDLL(None).malloc_trim  # glibc only
    except (OSError, AttributeError):
        return None


_malloc_trim = _find_malloc_trim()


def preload() -> None:
    """Load one decoder into the free list, so the first stream does not wait for the model."""
    if not _free_decoders:
        release_decoder(Decoder(samprate=SAMPLE_RATE, loglevel="FATAL"))


# --- helpers -----------------------------------------------------------------------------------------------


def _seconds(samples: int) -> float:
    return round(samples / SAMPLE_RATE, 2)


def _real_words(decoder: Decoder) -> list[tuple[str, int, int, float]]:
    """(word, start_frame, end_frame inclusive, probability) of the decoder's current segmentation,
    fillers dropped and alternate-pronunciation suffixes stripped."""
    words = []
    for seg in decoder.seg() or ():
        text = seg.word
        if not text or _FILLER.match(text):
            continue
        words.append((_ALTERNATE.sub("", text), seg.start_frame, seg.end_frame, seg.prob))
    return words


def _pcm(samples: np.ndarray) -> bytes:
    array = np.asarray(samples)
    if array.dtype != np.int16:
        raise TypeError(f"samples must be int16, not {array.dtype}")
    if array.ndim != 1:
        raise ValueError(f"samples must be mono (1-D), not shape {array.shape}")
    return array.astype("<i2", copy=False).tobytes()


# --- the recognizer ----------------------------------------------------------------------------------------


class SphinxRecognizer:
    """A base.Recognizer on pocketsphinx. Blocking; one thread at a time."""

    sample_rate = SAMPLE_RATE

    def __init__(self, settings: StreamSettings | None = None) -> None:
        settings = settings or StreamSettings()
        if not settings.language.lower().startswith("en"):
            raise ValueError(f"the pocketsphinx engine only knows English, not {settings.language!r}")
        self._partials = settings.partials
        self._max_delay = self._check_max_delay(settings.max_delay)
        self._stop_frames = endpointing_frames(settings.endpointing)
        # A decoder holds ~90 MB: a stream takes one with its first audio, so a session that has opened its stream
        # and sends nothing costs only this object (bench/bench_soak.py measures both).
        self._decoder: Decoder | None = None
        self._closed = False
        self._cold = True  # no utterance finalised yet: the cepstral mean is still the model's guess

        self._total = 0  # samples received
        self._history = bytearray()  # raw audio [_history_start, _total)
        self._history_start = 0
        self._covered = 0  # end (samples) of the audio the last Final covered
        self._new_detector(origin=0)

        self._in_utt = False
        self._utt_start = 0  # samples: where the decoder's frame 0 lies
        self._utt_audio = bytearray()  # everything fed to the decoder in this utterance
        self._decoded_to = 0  # samples: end of the audio fed to the decoder
        self._last_partial: tuple[str, ...] = ()
        self._partial_shown = False  # a Partial of the current utterance went out

    # --- the Recognizer protocol ---------------------------------------------------------------------------

    def feed(self, samples: np.ndarray) -> Results:
        data = _pcm(samples)
        self._live_decoder()
        self._history += data
        self._total += len(data) // _BYTES
        self._carry += data
        out: Results = []
        frame_bytes = self._detector.frame_bytes
        whole = len(self._carry) // frame_bytes * frame_bytes
        done = 0
        view = memoryview(self._carry)
        try:
            while done < whole:
                frame = bytes(view[done : done + frame_bytes])
                done += frame_bytes  # consumed even if processing it fails: never fed twice
                self._process_frame(frame, out)
        finally:
            view.release()
            del self._carry[:done]
        self._trim_history()
        if self._partials and self._in_utt:
            self._partial(out)
        return out

    def flush(self) -> Results:
        """Finalise the utterance; the detector goes on (speech that continues opens a new utterance)."""
        self._check_open()
        if not self._in_utt:
            now = _seconds(self._total)
            return [Final((), now, now, forced=True)]
        return self._drain(forced=True)

    def finish(self) -> Results:
        self._check_open()
        out = self._drain(forced=False) if self._in_utt else []
        detector = self._detector
        if detector.in_speech:  # stopped by the end of the audio, or by a silence shorter than endpointing
            silence = detector.silence_start
            end = self._total if silence is None else self._stopped_at(silence)
            out.append(SpeechStopped(_seconds(end)))
        self._covered = self._total
        self._new_detector(origin=self._total)
        return out

    def configure(self, partials: bool | None = None, max_delay: float | None = None) -> None:
        if partials is not None:
            self._partials = bool(partials)
        if max_delay is not None:
            self._max_delay = self._check_max_delay(max_delay)

    def close(self) -> None:
        self._closed = True
        decoder, self._decoder = self._decoder, None
        if decoder is None:
            return
        kept = False
        if self._in_utt:
            self._in_utt = False
            try:
                decoder.end_utt()
            except Exception:
                pass  # a decoder in an unknown state is not reused
            else:
                kept = release_decoder(decoder)
        else:
            kept = release_decoder(decoder)
        if not kept:
            del decoder  # the last reference: pocketsphinx frees it here
            return_memory()

    # --- internals -----------------------------------------------------------------------------------------

    @staticmethod
    def _check_max_delay(max_delay: float) -> float:
        if not max_delay > 0:
            raise ValueError(f"max_delay must be positive, not {max_delay!r}")
        return max(float(max_delay), MIN_MAX_DELAY)

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the recognizer is closed")

    def _live_decoder(self) -> Decoder:
        """The stream's decoder, taken from the free list (or loaded) the first time it is needed."""
        self._check_open()
        if self._decoder is None:
            self._decoder = acquire_decoder()
        return self._decoder

    def _new_detector(self, origin: int) -> None:
        self._detector = SpeechDetector(self._stop_frames)
        self._frame_samples = self._detector.frame_bytes // _BYTES
        self._detector_origin = origin  # samples: where the detector's frame 0 lies
        self._frame_end = origin  # samples: end of the last frame the detector was given
        self._carry = bytearray()  # received audio not yet a whole detector frame

    def _sample(self, frame: int) -> int:
        """A detector frame index -> samples since the stream began."""
        return self._detector_origin + frame * self._frame_samples

    def _stopped_at(self, silence_start: int) -> int:
        """Samples: where speech stopped, given the frame where the VAD's silence began: that, less the VAD's
        hangover, but never before the speech started."""
        detector = self._detector
        return max(self._sample(silence_start) - round(VAD_HANGOVER * SAMPLE_RATE), self._sample(detector.start))

    def _audio(self, start: int, end: int) -> bytes:
        """Raw audio [start, end) in samples, from the history."""
        lo = (start - self._history_start) * _BYTES
        hi = (end - self._history_start) * _BYTES
        if lo < 0 or hi > len(self._history) or lo > hi:
            raise AssertionError(f"audio {start}..{end} is not in the history")
        return bytes(self._history[lo:hi])

    def _trim_history(self) -> None:
        excess = len(self._history) // _BYTES - 2 * _HISTORY
        if excess > 0:
            drop = excess + _HISTORY
            del self._history[: drop * _BYTES]
            self._history_start += drop

    def _process_frame(self, frame: bytes, out: Results) -> None:
        detector = self._detector
        event = detector.process(frame)
        self._frame_end += self._frame_samples
        if event is SpeechStarted:
            out.append(SpeechStarted(_seconds(self._sample(detector.start))))
        if not self._in_utt and detector.hearing:
            # Speech starts (or goes on after a flush): decode from just before it up to the audio received.
            run_start = self._sample(detector.run_start)
            start = max(self._covered, run_start - round(PREROLL * SAMPLE_RATE), self._history_start)
            self._start_utterance(start, self._audio(start, self._frame_end))
        elif self._in_utt:  # decode each frame as it arrives, whatever the detector makes of it
            self._decode(self._audio(self._decoded_to, self._frame_end))
        if self._in_utt:
            self._decoded_to = self._frame_end
        if event is SpeechStopped:  # an endpoint
            if self._in_utt:
                out += self._finalise(forced=False)
            out.append(SpeechStopped(_seconds(self._stopped_at(detector.stop))))
        elif self._in_utt and len(self._utt_audio) // _BYTES > self._max_delay * SAMPLE_RATE:
            out += self._cut()

    def _start_utterance(self, start: int, audio: bytes) -> None:
        decoder = self._live_decoder()
        decoder.start_utt()
        self._in_utt = True
        self._utt_start = start
        self._utt_audio = bytearray()
        self._last_partial = ()
        if audio:
            self._decode(audio)

    def _decode(self, audio: bytes) -> None:
        self._utt_audio += audio
        self._live_decoder().process_raw(audio)

    def _end_utterance(self) -> list[tuple[str, int, int, float]]:
        """End the decoder's utterance (a second pass for the stream's first) and return its words."""
        decoder = self._live_decoder()
        decoder.end_utt()
        self._in_utt = False
        if self._cold:
            self._cold = False
            if REDECODE_FIRST and self._utt_audio:
                decoder.start_utt()
                decoder.process_raw(bytes(self._utt_audio))
                decoder.end_utt()
        return _real_words(decoder)

    def _words(self, segs: list[tuple[str, int, int, float]], limit: int) -> tuple[Word, ...]:
        words = []
        for text, first, last, prob in segs:
            start = self._utt_start + first * _DECODER_FRAME
            end = min(self._utt_start + (last + 1) * _DECODER_FRAME, limit)
            words.append(Word(text, _seconds(start), _seconds(end), min(max(float(prob), 0.0), 1.0)))
        return tuple(words)

    def _final(self, words: tuple[Word, ...], start: int, end: int, forced: bool) -> Results:
        """The Final of [start, end); an empty one only where it answers a flush or replaces partials."""
        superseding = self._partial_shown or self._partials
        self._partial_shown = False
        self._last_partial = ()
        self._covered = end
        if words or forced or superseding:
            return [Final(words, _seconds(start), _seconds(end), forced=forced)]
        return []

    def _finalise(self, forced: bool) -> Results:
        """The whole utterance becomes a Final."""
        segs = self._end_utterance()
        start = self._utt_start
        end = start + len(self._utt_audio) // _BYTES
        return self._final(self._words(segs, end), start, end, forced)

    def _drain(self, forced: bool) -> Results:
        """Decode what the Endpointer still holds back (and the carry), then finalise the utterance."""
        rest = self._audio(self._decoded_to, self._total)
        if rest:
            self._decode(rest)
        self._decoded_to = self._total
        return self._finalise(forced)

    def _cut(self) -> Results:
        """max_delay reached mid-speech: finalise the words before the last one, restart from there."""
        segs = self._end_utterance()
        frames = len(self._utt_audio) // _BYTES // _DECODER_FRAME
        if not segs:
            final, boundary = [], max(0, frames - CUT_TAIL)
        elif segs[-1][2] < frames - CUT_TAIL:  # the last word ended well before the cut: it is whole
            final, boundary = segs, max(segs[-1][2] + 1, frames - CUT_TAIL)
        elif len(segs) == 1:  # one word as long as max_delay: nothing to keep it whole for
            final, boundary = segs, frames
        else:
            final, boundary = segs[:-1], max(segs[-2][2] + 1, segs[-1][1] - CUT_PAD)
        start = self._utt_start
        keep = min(boundary * _DECODER_FRAME, len(self._utt_audio) // _BYTES)
        end = start + keep
        out = self._final(self._words(final, end), start, end, forced=False)
        tail = bytes(self._utt_audio[keep * _BYTES :])
        self._start_utterance(end, tail)
        return out

    def _partial(self, out: Results) -> None:
        segs = _real_words(self._live_decoder())
        key = tuple(seg[0] for seg in segs)
        if key == self._last_partial:
            return
        self._last_partial = key
        self._partial_shown = True
        end = self._utt_start + len(self._utt_audio) // _BYTES
        out.append(Partial(self._words(segs, end), _seconds(self._utt_start), _seconds(end)))
