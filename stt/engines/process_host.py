"""Host a recognizer factory in a pool of worker processes, with a trio face.

pocketsphinx holds the GIL while it decodes, so threads do not add cores: each worker is a process
(multiprocessing "spawn": trio runs threads, and forking a threaded process is unsafe). A stream is pinned to
one worker (the one with the fewest open streams) for its whole life, since recognizers are stateful.

Talking to a worker: each worker has a trio.Lock and a pipe. A call holds the lock and, in a thread,
sends one request and reads its one reply; the thread is never abandoned, so a cancelled call still reads its
reply and the pipe never goes out of step. The worker loop answers ("ok", result) or ("error", "Type: message");
an exception inside a recognizer fails that one call with EngineError and the worker goes on. A dead worker
fails every call on it with EngineError; the pool replaces it when a stream is next opened.

Capacity (base.Engine.capacity): given `cores_per_stream` (a recognizer's measured cost at real time), the
streams the workers serve: base.streams_for_cores of the cores they can use (the workers, at most the machine's
cores).
"""

from __future__ import annotations

import importlib
import itertools
import multiprocessing
import os
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
import trio

from stt.engines.base import EngineError, StreamSettings, streams_for_cores
from stt.events import Final, Partial

STOP_TIMEOUT = 5.0  # seconds a worker gets to stop before it is terminated
_PIPE_ERRORS = (EOFError, OSError)  # BrokenPipeError, ConnectionResetError are OSErrors


# --- the worker process ------------------------------------------------------------------------------------


def load_factory(path: str) -> Callable[[StreamSettings], Any]:
    """'package.module:Attribute' (the attribute may be dotted) -> the object."""
    module_name, sep, attribute = path.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"factory must look like 'package.module:Name', not {path!r}")
    obj: Any = importlib.import_module(module_name)
    for part in attribute.split("."):
        obj = getattr(obj, part)
    return obj


def _worker_main(conn: Any, factory_path: str) -> None:
    """The worker loop: one request, one reply, until told to stop or the parent goes away."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when workers stop
    factory: Callable[[StreamSettings], Any] | None = None
    factory_error = ""
    try:
        factory = load_factory(factory_path)
    except Exception as exc:  # reported on every request, so the parent learns why
        factory_error = f"{type(exc).__name__}: {exc}"
    recognizers: dict[int, Any] = {}
    try:
        while True:
            try:
                op, stream_id, args = conn.recv()
            except EOFError:
                return
            if op == "stop":
                _close_all(recognizers)
                conn.send(("ok", None))
                return
            try:
                if factory is None:
                    raise ImportError(f"cannot load factory {factory_path!r}: {factory_error}")
                reply: tuple[str, Any] = ("ok", _dispatch(factory, recognizers, op, stream_id, args))
            except Exception as exc:
                reply = ("error", f"{type(exc).__name__}: {exc}")
            try:
                conn.send(reply)
            except _PIPE_ERRORS:
                return
            except Exception as exc:  # the result would not pickle; nothing was written yet
                conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        _close_all(recognizers)


def _dispatch(
    factory: Callable[[StreamSettings], Any], recognizers: dict[int, Any], op: str, stream_id: int, args: tuple
) -> Any:
    if op == "warm":  # load the model now: make one recognizer and close it (its decoder stays cached)
        recognizer = factory(*args)
        try:
            return recognizer.sample_rate
        finally:
            recognizer.close()
    if op == "open":
        if stream_id in recognizers:
            raise KeyError(f"stream {stream_id} is already open")
        recognizers[stream_id] = factory(*args)
        return None
    if op == "close":
        recognizer = recognizers.pop(stream_id, None)
        if recognizer is not None:
            recognizer.close()
        return None
    if op in ("feed", "flush", "finish", "configure"):
        try:
            recognizer = recognizers[stream_id]
        except KeyError:
            raise KeyError(f"no open stream {stream_id}") from None
        return getattr(recognizer, op)(*args)
    raise ValueError(f"unknown operation {op!r}")


def _close_all(recognizers: dict[int, Any]) -> None:
    while recognizers:
        _, recognizer = recognizers.popitem()
        try:
            recognizer.close()
        except Exception:
            pass


# --- the trio side -----------------------------------------------------------------------------------------


class _Worker:
    """One worker process and its end of the pipe."""

    def __init__(self, context: Any, factory: str, index: int) -> None:
        self.index = index
        self.conn, child_conn = context.Pipe(duplex=True)
        self.process = context.Process(
            target=_worker_main, args=(child_conn, factory), name=f"stt-engine-worker-{index}", daemon=True
        )
        self.process.start()
        self.pid: int | None = self.process.pid
        child_conn.close()  # else our copy keeps the pipe open and recv() never sees the worker die
        self.lock = trio.Lock()
        self.streams = 0
        self.dead = False

    def alive(self) -> bool:
        return not self.dead and self.process.is_alive()

    async def call(self, op: str, stream_id: int = 0, *args: Any) -> Any:
        async with self.lock:
            if self.dead:
                raise EngineError(f"engine worker {self.index} (pid {self.pid}) is dead")
            # Not abandon_on_cancel: a cancelled call still reads its reply, so the pipe stays in step.
            status, value = await trio.to_thread.run_sync(self._rpc, (op, stream_id, args))
        if status != "ok":
            raise EngineError(value)
        return value

    def _rpc(self, request: tuple) -> tuple[str, Any]:
        try:
            self.conn.send(request)
            return self.conn.recv()
        except _PIPE_ERRORS as exc:
            self.dead = True
            self.process.join(0.5)  # for the exit code
            return "error", (
                f"engine worker {self.index} (pid {self.pid}) died (exit code {self.process.exitcode}): "
                f"{type(exc).__name__}: {exc}"
            )

    def stop(self, timeout: float, polite: bool = True) -> None:
        """Blocking: ask the worker to stop (polite: only with the lock held), wait, then terminate (and kill)."""
        if polite and not self.dead:
            try:
                self.conn.send(("stop", 0, ()))
                if self.conn.poll(timeout):
                    self.conn.recv()
            except _PIPE_ERRORS:
                pass
        self.dead = True
        self.process.join(timeout)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(1.0)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.conn.close()


class ProcessStream:
    """base.EngineStream for one recognizer living in a worker process."""

    def __init__(self, worker: _Worker, stream_id: int) -> None:
        self._worker = worker
        self._id = stream_id
        self.closed = False

    @property
    def worker_pid(self) -> int | None:
        """The pid of the process that runs this stream's recognizer."""
        return self._worker.pid

    async def _call(self, op: str, *args: Any) -> Any:
        if self.closed:
            raise EngineError("the stream is closed")
        return await self._worker.call(op, self._id, *args)

    async def feed(self, samples: np.ndarray) -> list[Partial | Final]:
        return await self._call("feed", samples)

    async def flush(self) -> list[Partial | Final]:
        return await self._call("flush")

    async def finish(self) -> list[Partial | Final]:
        return await self._call("finish")

    async def configure(self, partials: bool | None = None, max_delay: float | None = None) -> None:
        await self._call("configure", partials, max_delay)


class ProcessEngine:
    """base.Engine over a pool of worker processes. Made by open_process_engine."""

    def __init__(self, factory: str, *, name: str, sample_rate: int, workers: int,
                 cores_per_stream: float | None = None) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, not {workers}")
        self.name = name
        self.sample_rate = sample_rate
        #: base.Engine.capacity: the streams the workers serve at real time (None without a measured cost)
        self.capacity: int | None = None if cores_per_stream is None else streams_for_cores(
            min(workers, os.cpu_count() or 1), cores_per_stream)
        self.factory = factory
        self._context = multiprocessing.get_context("spawn")
        self._size = workers
        self._workers: list[_Worker] = []
        self._retired: list[_Worker] = []  # replaced dead workers, reaped at exit
        self._pool_lock = trio.Lock()
        self._ids = itertools.count(1)
        self._closed = False

    @property
    def pids(self) -> list[int | None]:
        """The current workers' process ids."""
        return [worker.pid for worker in self._workers]

    @asynccontextmanager
    async def open_stream(self, settings: StreamSettings) -> AsyncIterator[ProcessStream]:
        worker = await self._pick_worker()
        stream_id = next(self._ids)
        stream = ProcessStream(worker, stream_id)
        try:
            await worker.call("open", stream_id, settings)
            yield stream
        finally:
            stream.closed = True
            worker.streams -= 1
            with trio.CancelScope(shield=True):
                try:
                    await worker.call("close", stream_id)  # a no-op where the open failed
                except EngineError:
                    pass  # the worker is dead: nothing left to close

    async def _pick_worker(self) -> _Worker:
        async with self._pool_lock:
            if self._closed:
                raise EngineError(f"engine {self.name!r} is closed")
            dead = [i for i, worker in enumerate(self._workers) if not worker.alive()]
            if dead:
                await trio.to_thread.run_sync(self._replace, dead)
            worker = min(self._workers, key=lambda w: (w.streams, w.index))
            worker.streams += 1  # counted at once, so concurrent opens spread out
            return worker

    def _replace(self, indices: list[int]) -> None:
        for i in indices:
            self._retired.append(self._workers[i])
            self._workers[i] = _Worker(self._context, self.factory, i)

    async def _start(self, warm: bool) -> None:
        await trio.to_thread.run_sync(self._start_workers)
        if warm:
            rates: list[int] = []
            errors: list[str] = []

            async def warm_one(worker: _Worker) -> None:
                try:
                    rates.append(await worker.call("warm", 0, StreamSettings()))
                except EngineError as exc:
                    errors.append(str(exc))

            async with trio.open_nursery() as nursery:
                for worker in self._workers:
                    nursery.start_soon(warm_one, worker)
            if errors:
                raise EngineError(f"engine {self.name!r} failed to start: {errors[0]}")
            wrong = [rate for rate in rates if rate != self.sample_rate]
            if wrong:
                raise EngineError(f"{self.factory} runs at {wrong[0]} Hz, not the declared {self.sample_rate} Hz")

    def _start_workers(self) -> None:
        for i in range(self._size):
            self._workers.append(_Worker(self._context, self.factory, i))

    async def _stop(self) -> None:
        self._closed = True

        async def stop_one(worker: _Worker) -> None:
            # Give a call in flight a while to end; then stop the worker regardless (a call still blocked on
            # the pipe then sees it close).
            with trio.move_on_after(STOP_TIMEOUT):
                await worker.lock.acquire()
            locked = worker.lock.locked() and worker.lock.statistics().owner is trio.lowlevel.current_task()
            try:
                # Without the lock a call is in flight: talking on its pipe would take its reply, so terminate.
                await trio.to_thread.run_sync(worker.stop, STOP_TIMEOUT, locked)
            finally:
                if locked:
                    worker.lock.release()

        with trio.CancelScope(shield=True):
            async with trio.open_nursery() as nursery:
                for worker in self._workers + self._retired:
                    nursery.start_soon(stop_one, worker)


@asynccontextmanager
async def open_process_engine(
    factory: str, *, name: str, sample_rate: int, workers: int, warm: bool = True,
    cores_per_stream: float | None = None,
) -> AsyncIterator[ProcessEngine]:
    """Start `workers` processes hosting `factory` ('package.module:Name', called as factory(settings) in the
    worker); with `warm`, each makes and closes one recognizer first, so its model is loaded before the first
    stream. `cores_per_stream` (a recognizer's cost at real time) gives the engine its capacity. Yields the
    engine; on exit, stops the workers (terminating any that do not stop in time)."""
    engine = ProcessEngine(factory, name=name, sample_rate=sample_rate, workers=workers,
                           cores_per_stream=cores_per_stream)
    try:
        await engine._start(warm)
        yield engine
    finally:
        await engine._stop()
