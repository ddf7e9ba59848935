"""Several server processes on one port (`stt serve --workers N`): serve_workers starts them (SO_REUSEPORT, each
with its own engine), relays SIGTERM and SIGINT to them as orders (stt.server's DRAIN and NOW), and restarts a
worker that dies, with a back-off, until workers die too often."""

from __future__ import annotations

import collections
import functools
import logging
import multiprocessing
import os
import signal
import socket
from contextlib import contextmanager
from typing import Iterator

import attrs
import trio

from stt.logs import configure_logging
from stt.server import DRAIN, NOW, STOP_SIGNALS, serve
from stt.settings import ServerConfig
from stt.testmodes import TestModes

log = logging.getLogger("stt.server")  # the logger these lines have always had, which operators filter on


def serve_workers(config: ServerConfig, workers: int, *, log_level: str = "info", log_format: str = "auto",
                  test_modes: TestModes | None = None) -> int:
    """Run `workers` server processes on config.port (SO_REUSEPORT: the kernel spreads connections among them),
    each with its own engine of config.decode_workers decoders (default: the cores shared out), and supervise
    them: SIGTERM or SIGINT tells them all to drain, a second one to stop at once. A worker that exits by itself
    (killed, crashed) is restarted, after a back-off, while the others go on serving the port; when workers die
    MAX_RESTARTS times within RESTART_WINDOW seconds the supervisor gives up and stops them all. Returns 0 when
    every worker exited cleanly at the end, else 1 (also when it gave up)."""
    return trio.run(_supervise, worker_config(config, workers), workers, log_level, log_format, test_modes)


def worker_config(config: ServerConfig, workers: int) -> ServerConfig:
    """The config of each of `workers` processes: the port shared, and the cores shared out among their engines
    unless config.decode_workers says how many decoders each has."""
    decoders = config.decode_workers or max(1, (os.cpu_count() or 1) // workers)
    return attrs.evolve(config, decode_workers=decoders, reuse_port=True)


#: A worker that dies is restarted after a back-off that doubles with each death in the last RESTART_WINDOW
#: seconds (RESTART_BACKOFF, at most RESTART_BACKOFF_MAX); at MAX_RESTARTS deaths within the window the supervisor
#: gives up and stops the service: the workers are dying in a loop (a bad engine, no memory), not by accident.
RESTART_BACKOFF = 0.5
RESTART_BACKOFF_MAX = 8.0
RESTART_WINDOW = 60.0
MAX_RESTARTS = 5


async def _supervise(config: ServerConfig, count: int, log_level: str, log_format: str,
                     test_modes: TestModes | None = None) -> int:
    context = multiprocessing.get_context("spawn")  # trio runs threads; forking a threaded process is unsafe
    with trio.open_signal_receiver(*STOP_SIGNALS) as signals, _shared_port(config.host, config.port) as port:
        config = attrs.evolve(config, port=port)
        workers: dict[int, tuple] = {}  # index -> (process, the writing end of its orders)

        def start(index: int):
            reading, writing = context.Pipe(duplex=False)
            process = context.Process(target=_worker_main, name=f"stt-worker-{index}",
                                      args=(config, index, count, reading, log_level, log_format, test_modes))
            process.start()
            reading.close()
            workers[index] = (process, writing)
            return process

        for index in range(1, count + 1):
            start(index)
        log.info("stt: %d workers on port %d (pids %s)", count, port,
                 ", ".join(str(p.pid) for p, _ in workers.values()),
                 extra={"workers": [p.pid for p, _ in workers.values()], "port": port})
        stopping = failed = False
        stopped = trio.Event()  # set with `stopping`: a restart waiting out its back-off gives up
        deaths: collections.deque[float] = collections.deque()  # when workers died unasked, within RESTART_WINDOW

        def stop_all(order: str) -> None:
            nonlocal stopping
            stopping = True
            stopped.set()
            for _, writing in workers.values():
                try:
                    writing.send_bytes(order.encode())
                except OSError:  # that worker is gone
                    pass

        async def relay_signals() -> None:
            async for signum in signals:
                order = NOW if stopping else DRAIN
                log.info("%s: telling the workers: %s", signal.Signals(signum).name, order)
                stop_all(order)

        async def watch(index: int, process) -> None:
            nonlocal failed
            while True:
                await trio.lowlevel.wait_readable(process.sentinel)
                process.join()
                with trio.move_on_after(0.2):  # a signal to the whole service may reach the parent a moment later
                    await stopped.wait()
                if stopping:
                    failed = failed or process.exitcode != 0
                    return
                # Killed, crashed, or signalled by someone else: the others go on serving the port; restart it.
                now = trio.current_time()
                deaths.append(now)
                while deaths and deaths[0] < now - RESTART_WINDOW:
                    deaths.popleft()
                if len(deaths) >= MAX_RESTARTS:
                    log.error("worker %d (pid %d) exited (%s): %d workers have died within %g s; giving up, "
                              "stopping the others", index, process.pid, process.exitcode, len(deaths),
                              RESTART_WINDOW, extra={"worker": index, "exit_code": process.exitcode})
                    failed = True
                    stop_all(DRAIN)
                    return
                delay = min(RESTART_BACKOFF * 2 ** (len(deaths) - 1), RESTART_BACKOFF_MAX)
                log.error("worker %d (pid %d) exited (%s): restarting it in %g s", index, process.pid,
                          process.exitcode, delay, extra={"worker": index, "exit_code": process.exitcode})
                workers[index][1].close()
                with trio.move_on_after(delay):
                    await stopped.wait()
                if stopping:
                    return
                try:
                    process = start(index)
                except OSError as exc:  # no process could be made (out of memory, of pids): nothing to retry on
                    log.error("worker %d could not be restarted: %s; stopping the others", index, exc)
                    failed = True
                    stop_all(DRAIN)
                    return
                log.info("worker %d restarted (pid %d)", index, process.pid, extra={"worker": index})

        async with trio.open_nursery() as nursery:
            nursery.start_soon(relay_signals)
            async with trio.open_nursery() as watching:
                for index, (process, _) in list(workers.items()):
                    watching.start_soon(watch, index, process)
            nursery.cancel_scope.cancel()
        for _, writing in workers.values():
            writing.close()
        log.info("stt: every worker has exited%s", " (some failed)" if failed else "")
        return 1 if failed else 0


@contextmanager
def _shared_port(host: str | None, port: int) -> Iterator[int]:
    """The port the workers share: `port`, or for 0 a free one, which the supervisor holds (bound with
    SO_REUSEPORT, not listening, so it gets no connections) until they are done, so no other program takes it."""
    if port:
        yield port
        return
    family, kind, proto, _, address = socket.getaddrinfo(host, 0, type=socket.SOCK_STREAM,
                                                         flags=socket.AI_PASSIVE)[0]
    with socket.socket(family, kind, proto) as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        holder.bind(address)
        yield holder.getsockname()[1]


def _worker_main(config: ServerConfig, index: int, count: int, supervisor, log_level: str, log_format: str,
                 test_modes: TestModes | None = None) -> None:
    """One worker process of serve_workers (spawned: a fresh interpreter, so logging is set up again)."""
    configure_logging(log_level, log_format)
    log.info("worker %d of %d (pid %d)", index, count, os.getpid(), extra={"worker": index})
    trio.run(functools.partial(serve, config, supervisor=supervisor, test_modes=test_modes))
