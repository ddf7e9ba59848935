"""The Whisper engine: streaming Whisper on CTranslate2 with windows sized to the audio, live partials.

A stream is cut into utterances by the VAD (stt.engines.segmenter, the same detector as the pocketsphinx
engine). Decodes (stt.engines.whisper_decoder) pad the utterance's log-mel with its floor to a short window
instead of Whisper's 30 s, which makes a decode 3–6 times cheaper:

  * Partials ("redecode", the default): the utterance so far is decoded again with a 10 s window, first
    after PARTIAL_FIRST seconds of it, then every PARTIAL_INTERVAL seconds of new audio, counted in AUDIO
    time, so a client that sends faster than real time gets them too (every FAST_PARTIAL_INTERVAL seconds of
    audio, and a fast stream's partials cost at most FAST_PARTIAL_SHARE of its finals' decode time, so its finals are not
    held back). A hypothesis the loop guard flags is dropped. What is shown is LocalAgreement-2: the words
    two hypotheses in a row agree on stay as they are (the stable prefix), the newest hypothesis supplies
    the rest. One partial per stream at a time; it decodes the newest audio when a decoder takes it.
  * Finals: at the endpoint (or a max_delay cut, or a flush), a 15 s window (30 s when the guard fires), word
    times and confidences from `align` on the same encoder output.
  * "two-pass": pocketsphinx partials word by word (sphinx worker processes), these finals. "none": finals only.

One scheduler (stt.engines.whisper_scheduler) serves every stream of the process: finals first, partials on
what is left, shed evenly under load. Its cost model, from a start-up probe, gives `capacity`: the real-time
streams the engine serves at its latency targets, for admission (--max-sessions auto).

Words are spoken form (stt.text.spoken: "10" -> "ten"), as the dialects expect of an engine. The model is a
local directory, checked against pinned digests (stt.engines.whisper_model).
"""

from __future__ import annotations

import collections
import os
import re
from contextlib import AsyncExitStack, asynccontextmanager
from typing import AsyncIterator

import attrs
import numpy as np
import trio

from stt.engines.base import StreamSettings
from stt.engines.segmenter import Segmenter, Utterance
from stt.engines.vad import SAMPLE_RATE
from stt.engines.whisper_decoder import Decoded, DecodeOptions, WhisperRunner
from stt.engines.whisper_model import check_model, default_model
from stt.engines.whisper_scheduler import CostModel, DecodeScheduler, DecoderStats
from stt.events import Final, Partial, SpeechStarted, SpeechStopped, Word

PARTIAL_MODES = ("redecode", "two-pass", "none")
PARTIAL_FIRST = 0.5  # seconds of utterance before its first partial
PARTIAL_INTERVAL = 0.5  # seconds of new audio between partials (at real time)
FAST_PARTIAL_INTERVAL = 1.0  # ... for a stream whose audio runs ahead of real time (a file sent as fast as acked)
FAST_AHEAD = 1.0  # seconds of audio ahead of the wall clock that make a stream "fast"
FAST_PARTIAL_SHARE = 0.2  # a fast stream's partials decode at most this share of its finals' time (after the first)
MAX_UTTERANCE = 25.0  # seconds: longer max_delay values are lowered to this, so an utterance fits one window
TWO_PASS_MAX_DELAY = 30.0  # the sphinx partial stream is cut by Whisper's finals, not by its own max_delay
CUT_TAIL = 0.15  # seconds: a last word that ends this close to a max_delay cut may be cut in two
PROMPT_CHARS = 120  # of the last final's text, given as the prompt of an utterance that goes on from a cut
# Without partials a stream costs its finals only: about a third of the streaming policy's cost.
FINALS_ONLY_SHARE = 0.35
PIPELINED_FINALS = 1  # finals a fast stream may have decoding while its audio goes on


@attrs.define(eq=False)
class _PendingFinal:
    """An utterance's final, queued in the stream's results while it decodes."""

    utterance: Utterance
    superseding: bool  # partials were on or shown: an empty Final still goes out, to replace them
    agreement: LocalAgreement  # the utterance's partials so far, for one that comes back while the final decodes
    index: int  # the stream's count of utterances, this one included
    done: trio.Event = attrs.field(factory=trio.Event)
    final: Final | None = None
    error: BaseException | None = None


class LocalAgreement:
    """LocalAgreement-2 over an utterance's hypotheses: a word that two hypotheses in a row agree on (in the
    prefix they share) is stable and stays as first shown; the newest hypothesis supplies the words after."""

    def __init__(self) -> None:
        self.stable: tuple[Word, ...] = ()
        self._last: tuple[str, ...] = ()

    def update(self, words: tuple[Word, ...]) -> tuple[Word, ...]:
        keys = tuple(_key(w.text) for w in words)
        agreed = 0
        while agreed < min(len(keys), len(self._last)) and keys[agreed] == self._last[agreed]:
            agreed += 1
        if agreed > len(self.stable):
            self.stable = self.stable + tuple(words[len(self.stable):agreed])
        self._last = keys
        return self.stable + tuple(words[len(self.stable):])


def _key(text: str) -> str:
    return re.sub(r"[^a-z0-9']", "", text.lower())


class WhisperEngine:
    """base.Engine: opens WhisperStreams over one model and one scheduler. Made by open_whisper_engine."""

    name = "whisper"
    sample_rate = SAMPLE_RATE

    def __init__(self, runner, workers: int, nursery: trio.Nursery, partials: str, partial_engine=None,
                 cost: CostModel | None = None, capacity: int | None = None) -> None:
        if partials not in PARTIAL_MODES:
            raise ValueError(f"partials must be one of {', '.join(PARTIAL_MODES)}, not {partials!r}")
        self.runner = runner
        self.workers = workers
        self.partials = partials
        self.partial_engine = partial_engine
        self.cost = cost
        self.scheduler = DecodeScheduler(runner, workers, nursery)
        #: Real-time streams served at the latency targets: configured, or from the cost model (None: unknown).
        self.capacity = capacity if capacity is not None else self._capacity(cost, partials)

    @staticmethod
    def _capacity(cost: CostModel | None, partials: str) -> int | None:
        if cost is None or partials == "two-pass":  # two-pass: the sphinx workers' cost is not modelled
            return None
        if partials == "none":
            return attrs.evolve(cost, stream_cost=cost.stream_cost * FINALS_ONLY_SHARE).capacity
        return cost.capacity

    @property
    def stats(self) -> DecoderStats:
        return self.scheduler.stats

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
                self.scheduler.cancel_partial(stream)


class WhisperStream:
    """base.EngineStream: segmentation on the event loop, decodes in the engine's scheduler."""

    def __init__(self, engine: WhisperEngine, settings: StreamSettings, sphinx=None) -> None:
        self.engine = engine
        self.closed = False
        self._segmenter = Segmenter(settings.endpointing, min(settings.max_delay, MAX_UTTERANCE))
        self._partials = settings.partials
        self._hints = settings.hints
        self._sphinx = sphinx  # the two-pass partial stream, or None
        self._utterance_id = 0  # counts finals: a partial of an earlier utterance is stale
        self._partial_shown = False  # a Partial of the current utterance went out
        self._last_partial_end = 0.0
        self._agreement = LocalAgreement()
        self._pending = False  # a partial is asked for or decoding
        self._taken_end = -1  # sample end of the audio the last partial decoded (-1: none in this utterance)
        self._final_seconds = 0.0  # decode time of this stream's finals, and of its partials: a fast stream's budget
        self._partial_seconds = 0.0
        self._ready: tuple[int, Partial] | None = None  # a partial waiting for the next call
        self._last_text = ""  # the last final's words, the prompt for an utterance that goes on from a cut
        self._last_text_index = 0  # ... and which utterance it was
        self._began: float | None = None  # wall time of the first audio
        self._queue: collections.deque = collections.deque()  # results in order, finals still decoding among them
        self._pending_finals: dict[int, _PendingFinal] = {}  # a fast stream's finals decoding, by utterance

    # --- base.EngineStream -----------------------------------------------------------------------------------

    async def feed(self, samples: np.ndarray) -> list:
        if self._began is None:
            self._began = trio.current_time()
        results = await self._sphinx.feed(samples) if self._sphinx is not None else []
        sphinx = [r for r in results if isinstance(r, Partial)]  # its finals and speech events are not used
        for item in self._segmenter.items(samples):
            if isinstance(item, Utterance):  # sphinx's partials up to this utterance's end come before its final
                end = item.end / SAMPLE_RATE + 0.01
                self._queue.extend(self._two_pass_partial([p for p in sphinx if p.end <= end], item.start))
                sphinx = [p for p in sphinx if p.end > end]
            await self._handle(item)
        # A partial of the current utterance goes after the finals still decoding (a fast stream's), in order.
        self._queue.extend(self._take_ready())
        current = self._segmenter.current()
        if current is not None:
            self._queue.extend(self._two_pass_partial(sphinx, current.start))
        self._ask_for_partial()
        return await self._drain()

    async def flush(self) -> list:
        self._ready = None
        for item in self._segmenter.flush():
            await self._handle(item)
        return await self._drain(wait=True)

    async def finish(self) -> list:
        self._ready = None
        if self._sphinx is not None:
            await self._sphinx.finish()
        for item in self._segmenter.finish():
            await self._handle(item)
        return await self._drain(wait=True)

    async def configure(self, partials: bool | None = None, max_delay: float | None = None) -> None:
        if partials is not None:
            self._partials = bool(partials)
        self._segmenter.configure(max_delay=None if max_delay is None else min(max_delay, MAX_UTTERANCE))

    # --- finals ----------------------------------------------------------------------------------------------

    async def _handle(self, item) -> None:
        """Queue a result: speech events as they are, an utterance's Final once decoded. A real-time stream (and a
        max_delay cut, whose words decide where the next utterance starts) waits for its final here; a stream
        that runs ahead of real time goes on while its finals decode (at most PIPELINED_FINALS at once), so its
        next utterance's audio, and partials, need not wait for them."""
        if isinstance(item, (SpeechStarted, SpeechStopped)):
            self._queue.append(item)
            return
        assert isinstance(item, Utterance)
        running_ahead = self._fast()
        fast = not item.cut and running_ahead
        if fast:
            waiting = [p for p in self._queue if isinstance(p, _PendingFinal) and not p.done.is_set()]
            if len(waiting) >= PIPELINED_FINALS:
                await waiting[0].done.wait()
            self._queue.extend(self._take_ready(item.start))  # a partial of it that came meanwhile, before its final
        self._utterance_id += 1  # from here on, a partial of this utterance is stale
        self._ready = None
        self.engine.scheduler.cancel_partial(self)
        self._taken_end = -1
        ended_agreement, self._agreement = self._agreement, LocalAgreement()
        superseding = self._partial_shown or self._partials
        self._partial_shown = False
        pending = _PendingFinal(item, superseding, ended_agreement, self._utterance_id)
        self._queue.append(pending)
        if running_ahead:
            # A partial of it still decoding may yet go out before this final (decoding beside it), if it ends first.
            self._pending_finals[self._utterance_id - 1] = pending
        if fast:
            self.engine.scheduler.start_soon(self._decode_final, pending)
        else:
            await self._decode_final(pending)

    async def _decode_final(self, pending: _PendingFinal) -> None:
        item = pending.utterance
        try:
            speech = self._speech(item)
            words: tuple[Word, ...] = ()
            if len(speech.audio):
                decoded = await self.engine.scheduler.decode_final(speech.audio, speech.start / SAMPLE_RATE,
                                                                   self._options(item, final=True))
                words = decoded.words
                self._final_seconds += decoded.seconds
            end = item.end
            if item.cut and len(words) > 1 and words[-1].end * SAMPLE_RATE >= item.end - CUT_TAIL * SAMPLE_RATE:
                # The last word reaches the cut, which may have split it: it goes to the next utterance, whole.
                end = max(round(words[-1].start * SAMPLE_RATE), item.start + 1)
                self._segmenter.resume_at(end)
                words = words[:-1]
            if pending.index > self._last_text_index:  # a fast stream's finals may end out of order
                self._last_text, self._last_text_index = " ".join(w.text for w in words), pending.index
            if words or item.forced or pending.superseding:
                pending.final = Final(words, round(item.start / SAMPLE_RATE, 2), round(end / SAMPLE_RATE, 2),
                                      forced=item.forced)
        except Exception as exc:
            pending.error = exc
        finally:
            pending.done.set()
            self._pending_finals = {k: v for k, v in self._pending_finals.items() if v is not pending}

    async def _drain(self, wait: bool = False) -> list:
        """The queued results up to the first final still decoding (with `wait`: all of them), in order."""
        out: list = []
        while self._queue:
            head = self._queue[0]
            if isinstance(head, _PendingFinal):
                if not head.done.is_set():
                    if not wait:
                        break
                    await head.done.wait()
                    continue  # a partial of its utterance may have gone in before it meanwhile
                if head.error is not None:
                    raise head.error
                self._queue.popleft()
                if head.final is not None:
                    out.append(head.final)
            else:
                out.append(self._queue.popleft())
        return out

    @staticmethod
    def _speech(utterance: Utterance) -> Utterance:
        """The part of an utterance worth decoding: without the silence that ended it (Whisper makes words up
        in silence: "thank you")."""
        if not utterance.trailing:
            return utterance
        return attrs.evolve(utterance, audio=utterance.audio[: len(utterance.audio) - utterance.trailing], trailing=0)

    def _options(self, utterance: Utterance, final: bool) -> DecodeOptions:
        prompt = self._last_text[-PROMPT_CHARS:] if utterance.continued and self._last_text else ""
        return DecodeOptions(self._hints, final=final, prompt=prompt)

    # --- partials --------------------------------------------------------------------------------------------

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

    def _take_ready(self, utterance_start: int | None = None) -> list:
        """The partial that came back since the last call, if it is of the current utterance (or of the one that
        began at `utterance_start`, just ended)."""
        ready, self._ready = self._ready, None
        if utterance_start is None:
            current = self._segmenter.current()
            utterance_start = None if current is None else current.start
        if ready is None or ready[0] != self._utterance_id or utterance_start is None:
            return []
        return self._partial(ready[1].words, ready[1].end, utterance_start)

    def _two_pass_partial(self, partials: list[Partial], utterance_start: int) -> list:
        """The latest of the streaming recognizer's partials, as a partial of the utterance."""
        if not partials:
            return []
        latest = partials[-1]
        return self._partial(latest.words, latest.end, utterance_start)

    def _fast(self) -> bool:
        """The stream's audio runs ahead of the wall clock (a file sent as fast as it is acknowledged)."""
        if self._began is None:
            return False
        return self._segmenter.total / SAMPLE_RATE - (trio.current_time() - self._began) > FAST_AHEAD

    def _ask_for_partial(self) -> None:
        if self.engine.partials != "redecode" or not self._partials or self._pending or self.closed:
            return
        current = self._segmenter.current()
        if current is None:
            return
        fast = self._fast()
        if self._taken_end < 0:
            due = len(current.audio) >= PARTIAL_FIRST * SAMPLE_RATE
        else:
            interval = FAST_PARTIAL_INTERVAL if fast else PARTIAL_INTERVAL
            due = current.end - self._taken_end >= interval * SAMPLE_RATE
        over_budget = self._partial_seconds > 0 and self._partial_seconds > FAST_PARTIAL_SHARE * self._final_seconds
        if not due or (fast and over_budget):
            return
        self._pending = True
        span = [0, 0]  # the samples the partial decodes: [utterance start, end]
        self.engine.scheduler.request_partial(self, self._take(self._utterance_id, span),
                                              self._deliver(self._utterance_id, span))

    def _take(self, utterance_id: int, span: list[int]):
        def take() -> tuple | None:
            current = self._segmenter.current()
            if self.closed or not self._partials or utterance_id != self._utterance_id or current is None:
                self._pending = False
                return None
            self._taken_end = current.end
            span[:] = [current.start, current.end]
            return current.audio.copy(), current.start / SAMPLE_RATE, self._options(current, final=False)

        return take

    def _deliver(self, utterance_id: int, span: list[int]):
        def deliver(decoded: Decoded | None) -> None:
            self._pending = False
            if decoded is not None:
                self._partial_seconds += decoded.seconds
            if decoded is None or decoded.looped or self.closed:
                return
            if utterance_id == self._utterance_id:
                shown = self._agreement.update(decoded.words)
                self._ready = (utterance_id, Partial(shown, span[0] / SAMPLE_RATE, span[1] / SAMPLE_RATE))
                return
            pending = self._pending_finals.get(utterance_id)
            if pending is not None and not pending.done.is_set() and pending in self._queue:
                # Its utterance ended while it decoded, and the final is not done: it goes out just before it.
                late = self._partial(pending.agreement.update(decoded.words), span[1] / SAMPLE_RATE, span[0])
                if late:
                    self._queue.insert(self._queue.index(pending), late[0])

        return deliver


@asynccontextmanager
async def open_whisper_engine(model: str | os.PathLike | None = None, *, workers: int | None = None,
                              partials: str = "redecode", capacity: int | None = None,
                              verify: bool = True) -> AsyncIterator[WhisperEngine]:
    """Check and load the model (and, for two-pass partials, the sphinx workers), probe what a decode costs
    here, and yield the engine."""
    if partials not in PARTIAL_MODES:
        raise ValueError(f"partials must be one of {', '.join(PARTIAL_MODES)}, not {partials!r}")
    workers = workers or os.cpu_count() or 1
    path = await trio.to_thread.run_sync(lambda: check_model(model, verify_files=verify))
    runner = await trio.to_thread.run_sync(WhisperRunner, path, workers)
    await trio.to_thread.run_sync(runner.warm)
    probe = await trio.to_thread.run_sync(runner.probe)
    cost = CostModel.from_probe(probe["partial_encode"], workers)
    async with AsyncExitStack() as stack:
        partial_engine = None
        if partials == "two-pass":
            from stt.engines.process_host import open_process_engine

            partial_engine = await stack.enter_async_context(open_process_engine(
                "stt.engines.sphinx:SphinxRecognizer", name="sphinx", sample_rate=SAMPLE_RATE, workers=workers))
        nursery = await stack.enter_async_context(trio.open_nursery())
        yield WhisperEngine(runner, workers, nursery, partials, partial_engine, cost=cost, capacity=capacity)
        nursery.cancel_scope.cancel()


__all__ = ["PARTIAL_MODES", "LocalAgreement", "WhisperEngine", "WhisperStream", "check_model", "default_model",
           "open_whisper_engine"]
