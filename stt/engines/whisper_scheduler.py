"""One decode scheduler for every whisper stream of the process: finals first, partials on what is left.

`workers` decoders (threads over one CTranslate2 model). Two queues:

  * finals, first come first served. A final never waits behind a partial that has not started: whenever a
    decoder comes free it goes to the oldest waiting final. (A partial already running is not stopped; it is a
    short window, about 65 ms of a core for tiny.en, so a final waits at most that long for one.)
  * partial requests, at most one per stream (a stream asks again only after its last partial came back), served
    oldest first only while no final waits. A request holds no audio: when a decoder takes it, it calls the
    stream's `take()` for the newest audio of the utterance (None: no longer wanted, the utterance ended or
    the stream closed), so a request that waited never decodes stale audio, and under load every stream's
    partials thin out evenly (shed), while finals keep their time.

The cost model (CostModel) turns what decodes cost on this machine into the number of real-time streams the
engine serves at its latency targets: the engine's `capacity`, for admission.
"""

from __future__ import annotations

import collections
import math
from typing import Callable

import attrs
import numpy as np
import trio

from stt.engines.base import EngineError

# The reference costs, measured on the project's 2-core machine (quiet; engines-research.md Q1/Q2): the encoder
# of a partial's 10 s window (37 ms of a core), and the whole cost of a real-time stream under the streaming
# policy (partials every 0.5 s of speech, finals at 15 s): 0.11 CPU-s per audio-second, of which the encoders
# are most. A start-up probe of the encoder scales the latter to the machine at hand.
REFERENCE_PARTIAL_ENCODE = 0.037
REFERENCE_STREAM_COST = 0.11  # CPU-seconds per audio-second of one real-time stream
# The share of each decoder the admitted streams may keep busy: at 12 streams on 2 decoders the reference run
# had the decoders 77 % busy with first partial p95 0.75 s and final p95 0.69 s after speech ended.
TARGET_BUSY = 0.66


@attrs.frozen
class CostModel:
    """What a real-time stream costs, and so how many the engine holds at its latency targets."""

    stream_cost: float  # CPU-seconds per audio-second of one real-time stream with partials
    workers: int

    @classmethod
    def from_probe(cls, partial_encode: float, workers: int) -> CostModel:
        """From the start-up probe: the seconds this machine took for a partial's encoder window."""
        scale = max(partial_encode, 1e-3) / REFERENCE_PARTIAL_ENCODE
        return cls(REFERENCE_STREAM_COST * scale, workers)

    @property
    def capacity(self) -> int:
        """Real-time streams the decoders hold with TARGET_BUSY of each in use (at least 1)."""
        return max(1, math.floor(self.workers * TARGET_BUSY / self.stream_cost + 1e-9))


@attrs.define
class DecoderStats:
    """Counts for benchmarks and metrics."""

    finals: int = 0
    partials: int = 0
    partials_looped: int = 0  # decoded, but the guard dropped the hypothesis
    partials_shed: int = 0  # requests dropped without a decode (the utterance ended while the request waited)
    final_redecodes: int = 0  # finals the guard sent back for a 30 s decode
    decode_seconds: float = 0.0  # wall time inside decodes, summed
    audio_seconds: float = 0.0  # audio decoded, summed (partials re-decode theirs)
    final_wait_seconds: float = 0.0  # finals' time in the queue, summed
    final_wait_max: float = 0.0

    @property
    def partials_skipped(self) -> int:  # the old name, for bench/bench_engines.py
        return self.partials_shed


@attrs.define(eq=False)
class _FinalJob:
    audio: np.ndarray
    start: float
    options: object
    asked: float
    done: trio.Event = attrs.field(factory=trio.Event)
    result: object = None
    error: BaseException | None = None
    abandoned: bool = False


@attrs.define(eq=False)
class _PartialRequest:
    take: Callable[[], tuple | None]  # -> (audio, start, options) or None
    deliver: Callable[[object], None]  # gets the Decoded, or None when the decode failed


class DecodeScheduler:
    """Runs `runner.decode(audio, start, options)` on `workers` threads: finals first (decode_final), partials
    (request_partial) on decoders no final waits for. Its tasks run in `nursery`."""

    def __init__(self, runner, workers: int, nursery: trio.Nursery) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, not {workers}")
        self.runner = runner
        self.workers = workers
        self.stats = DecoderStats()
        self._nursery = nursery
        self._free = workers
        self._finals: collections.deque[_FinalJob] = collections.deque()
        self._partials: dict[object, _PartialRequest] = {}  # by stream key, oldest request first

    @property
    def busy(self) -> int:
        return self.workers - self._free

    @property
    def waiting_finals(self) -> int:
        return len(self._finals)

    async def decode_final(self, audio: np.ndarray, start: float, options) -> object:
        """Decode for a final: queued ahead of every partial; returns the runner's result."""
        job = _FinalJob(audio, start, options, trio.current_time())
        self._finals.append(job)
        self._dispatch()
        try:
            await job.done.wait()
        except BaseException:
            if not job.done.is_set():
                job.abandoned = True
                try:
                    self._finals.remove(job)  # not started: no decode is wasted on it
                except ValueError:
                    pass  # started: it runs to its end, and nobody reads it
            raise
        if job.error is not None:
            raise EngineError(f"whisper decode failed: {type(job.error).__name__}: {job.error}") from job.error
        return job.result

    def request_partial(self, key: object, take: Callable[[], tuple | None], deliver: Callable[[object], None]) -> None:
        """Ask for a partial of stream `key` (replacing its waiting request, if any)."""
        self._partials.pop(key, None)
        self._partials[key] = _PartialRequest(take, deliver)
        self._dispatch()

    def start_soon(self, fn, *args) -> None:
        """Run `fn(*args)` in the scheduler's nursery (a stream's final that decodes while its audio goes on)."""
        self._nursery.start_soon(fn, *args)

    def cancel_partial(self, key: object) -> None:
        if self._partials.pop(key, None) is not None:
            self.stats.partials_shed += 1

    # --- internals -------------------------------------------------------------------------------------------

    def _dispatch(self) -> None:
        while self._free > 0:
            if self._finals:
                job = self._finals.popleft()
                waited = trio.current_time() - job.asked
                self.stats.final_wait_seconds += waited
                self.stats.final_wait_max = max(self.stats.final_wait_max, waited)
                self._free -= 1
                self._nursery.start_soon(self._run_final, job)
            elif self._partials:
                key = next(iter(self._partials))
                request = self._partials.pop(key)
                work = request.take()
                if work is None:
                    self.stats.partials_shed += 1
                    continue
                self._free -= 1
                self._nursery.start_soon(self._run_partial, request, work)
            else:
                return

    async def _decode(self, audio: np.ndarray, start: float, options):
        began = trio.current_time()
        try:
            return await trio.to_thread.run_sync(self.runner.decode, audio, start, options)
        finally:
            self.stats.decode_seconds += trio.current_time() - began
            self.stats.audio_seconds += len(audio) / 16000

    async def _run_final(self, job: _FinalJob) -> None:
        try:
            job.result = await self._decode(job.audio, job.start, job.options)
            self.stats.finals += 1
            if getattr(job.result, "looped", False):
                self.stats.final_redecodes += 1
        except Exception as exc:
            job.error = exc
        finally:
            self._free += 1
            job.done.set()
            self._dispatch()

    async def _run_partial(self, request: _PartialRequest, work: tuple) -> None:
        result = None
        try:
            result = await self._decode(*work)
            self.stats.partials += 1
            if getattr(result, "looped", False):
                self.stats.partials_looped += 1
        except Exception:  # a failed partial is not worth ending a session for: its final will tell
            result = None
        finally:
            self._free += 1
            try:
                request.deliver(result)
            finally:
                self._dispatch()


__all__ = ["CostModel", "DecodeScheduler", "DecoderStats"]
