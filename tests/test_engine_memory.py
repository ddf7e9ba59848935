"""The memory a sphinx server holds for its sessions' decoders: about 98 MiB a stream that has had audio, in the
engine's worker processes, given back when the stream ends (the workers keep one free decoder each); and, under
a crowd, no more decoders than --max-sessions auto lets in. Measured from /proc of the engine's worker pids of a
real `stt serve --engine sphinx`, driven by Speechmatics clients on real speech."""

import json
import os
import wave
from pathlib import Path

import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from tests.helpers import DATA, start_message
from tests.test_shutdown import listening_port, serve_process

MIB = 2**20
DECODER_MIB = 98  # measured: 8 decoders of streams with audio hold 784 MiB more than none


def speech(seconds: float) -> bytes:
    with wave.open(str(DATA / "ps_librivox_0870.wav")) as recording:
        return recording.readframes(int(seconds * recording.getframerate()))


def engine_workers(server_pid: int) -> list[int]:
    """The pids of the server's engine worker processes (multiprocessing spawns them; not its resource tracker)."""
    children = []  # each thread's children: the workers are started from a worker thread
    for task in Path(f"/proc/{server_pid}/task").iterdir():
        try:
            children += (task / "children").read_text().split()
        except FileNotFoundError:
            continue
    workers = []
    for pid in map(int, children):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        except FileNotFoundError:
            continue
        if b"multiprocessing" in command and b"resource_tracker" not in command:
            workers.append(pid)
    return workers


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MIB


async def one_frame_session(port: int, frame: bytes, hold: trio.Event | None = None, decoded: list | None = None) -> str:
    """A Speechmatics session that sends one frame of speech, waits until the engine has decoded it (a partial:
    then it adds itself to `decoded`), holds on until `hold` is set, and closes. Returns "served", or "busy" if it
    was refused."""
    async with open_websocket_url(f"ws://127.0.0.1:{port}/v2") as ws:
        try:
            # A refused session is sent its error and closed at once: the close (4005) may be in before the start.
            await ws.send_message(start_message(partials=True))
            message = json.loads(await ws.get_message())
        except ConnectionClosed as closed:
            return "busy" if closed.reason.code == 4005 else "closed"
        if message["message"] == "Error":
            assert message["type"] == "quota_exceeded", message
            return "busy"
        assert message["message"] == "RecognitionStarted", message
        await ws.send_message(frame)
        while json.loads(await ws.get_message())["message"] != "AddPartialTranscript":
            pass
        if decoded is not None:
            decoded.append(ws)
        if hold is not None:
            await hold.wait()
    return "served"


async def all_closed(log, sessions: int) -> None:
    """Until the server has logged the close of `sessions` sessions (its engine streams are closed by then)."""
    while len([line for line in log.json() if line.get("close_code") is not None]) < sessions:
        await trio.sleep(0.05)


async def warm(port: int) -> None:
    """A session on each worker at once (streams go to the least busy worker): each then keeps a free decoder."""
    async with trio.open_nursery() as nursery:
        hold, decoded = trio.Event(), []
        for _ in range(2):
            nursery.start_soon(one_frame_session, port, speech(1.0), hold, decoded)
        while len(decoded) < 2:
            await trio.sleep(0.05)
        hold.set()


async def settled_rss(pids: list[int]) -> dict[int, float]:
    """Each worker's RSS once it has stopped changing (the sessions' ends reach the workers a little later)."""
    last: dict[int, float] = {}
    for _ in range(50):
        now = {pid: rss_mib(pid) for pid in pids}
        if last and all(abs(now[pid] - last[pid]) < 1 for pid in pids):
            return now
        last = now
        await trio.sleep(0.2)
    return last


async def test_sixteen_one_frame_sessions_one_after_another_leave_the_workers_memory_bounded():
    async with serve_process("--engine", "sphinx", "--decode-workers", "2") as (process, log):
        with trio.fail_after(120):
            port = await listening_port(log)
            workers = engine_workers(process.pid)
            assert len(workers) == 2
            frame = speech(1.0)
            await warm(port)
            await all_closed(log, 2)
            baseline = await settled_rss(workers)  # each worker has loaded a decoder and keeps it
            for _ in range(16):
                assert await one_frame_session(port, frame) == "served"
            await all_closed(log, 18)
            after = await settled_rss(workers)
    print(f"workers' RSS (MiB) after 2 sessions: {baseline}; after 16 more: {after}")
    for pid in workers:  # the same decoder, taken and given back 16 times: nothing builds up
        assert after[pid] - baseline[pid] < DECODER_MIB / 2, (baseline, after, str(log))


async def crowd(flags: tuple[str, ...], clients: int, timeout: float):
    """`clients` one-frame sphinx sessions at once against `stt serve --engine sphinx --decode-workers 2 FLAGS`,
    each held open once its frame is decoded (or refused): the engine workers' RSS (MiB, by pid) before, while they
    are all under way, and after they have ended; and how each ended ("served" or "busy")."""
    async with serve_process("--engine", "sphinx", "--decode-workers", "2", *flags) as (process, log):
        with trio.fail_after(timeout):
            port = await listening_port(log)
            workers = engine_workers(process.pid)
            await warm(port)
            await all_closed(log, 2)
            idle = await settled_rss(workers)
            frame, hold, outcomes, decoded = speech(1.0), trio.Event(), [], []

            async def client():
                outcomes.append(await one_frame_session(port, frame, hold, decoded))

            async with trio.open_nursery() as nursery:
                for _ in range(clients):
                    nursery.start_soon(client)
                while len(outcomes) + len(decoded) < clients:  # the refused end at once; the others wait, decoded
                    await trio.sleep(0.05)
                crowded = await settled_rss(workers)
                hold.set()
            await all_closed(log, 2 + clients)
            after = await settled_rss(workers)
    return idle, crowded, after, outcomes


async def test_a_crowd_of_sessions_holds_no_more_decoders_than_admitted_and_gives_them_back():
    # Two decoder processes: auto admits 4 sessions (docs/engines.md); the other 12 are refused busy.
    idle, crowded, after, outcomes = await crowd((), 16, timeout=120)
    print(f"workers' RSS (MiB) idle: {idle}; with the crowd: {crowded}; after it: {after}")
    assert sorted(outcomes) == ["busy"] * 12 + ["served"] * 4
    held = sum(crowded.values()) - sum(idle.values())
    assert held < 4 * DECODER_MIB * 1.3, (idle, crowded, after)  # 4 streams: at most 4 decoders more
    for pid in idle:  # back to the one free decoder each worker keeps
        assert after[pid] - idle[pid] < DECODER_MIB / 2, (idle, crowded, after)


async def test_with_no_session_limit_a_crowd_still_gives_its_decoders_back_when_it_ends():
    idle, crowded, after, outcomes = await crowd(("--max-sessions", "0"), 12, timeout=180)
    print(f"workers' RSS (MiB) idle: {idle}; with 12 sessions: {crowded}; after them: {after}")
    assert outcomes == ["served"] * 12
    assert sum(crowded.values()) - sum(idle.values()) > 8 * DECODER_MIB  # 12 streams had 10 more decoders
    for pid in idle:  # 6 decoders each while the crowd lasted; one kept after it
        assert after[pid] - idle[pid] < DECODER_MIB / 2, (idle, crowded, after)
