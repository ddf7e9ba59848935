"""`stt serve --workers N`: N processes on one port (SO_REUSEPORT), each answering clients, supervised by the
parent, which passes SIGTERM on and exits when they have."""

import json
import os
import signal

import trio
from trio_websocket import open_websocket_url

from stt.server import ServerConfig, worker_config
from tests.helpers import frames_of, gone, receive_all, silence, start_message
from tests.test_shutdown import serve_process


async def started_workers(log) -> tuple[int, set[int]]:
    """The shared port and the workers' pids, once every worker listens."""
    supervisor = await log.wait_for(r"stt: 2 workers on port (\d+) \(pids (\d+), (\d+)\)")
    port, pids = int(supervisor[1]), {int(supervisor[2]), int(supervisor[3])}
    for pid in pids:
        await log.wait_for_json(lambda line, pid=pid: line["pid"] == pid and "listening on" in line["message"])
    return port, pids


async def transcribe(port: int) -> tuple[str, list[str]]:
    """One Speechmatics session: its id (RecognitionStarted) and its finals."""
    async with open_websocket_url(f"ws://127.0.0.1:{port}/v2") as ws:
        await ws.send_message(start_message())
        for frame in frames_of(silence(2.0), 3200):
            await ws.send_message(frame)
        await ws.send_message(json.dumps({"message": "EndOfStream", "last_seq_no": 20}))
        messages, _ = await receive_all(ws, until="EndOfTranscript")
    return messages[0]["id"], [m["metadata"]["transcript"] for m in messages if m["message"] == "AddTranscript"]


async def test_two_workers_on_one_port_both_answer_and_sigterm_to_the_parent_stops_them_all():
    async with serve_process("--workers", "2") as (process, log):
        with trio.fail_after(20):
            port, pids = await started_workers(log)
            served_by: dict[int, list] = {}
            # The kernel spreads connections by a hash of their addresses: keep going until both have answered
            # (at least 8 sessions; 40 all landing on one worker would happen once in 2**39 runs).
            for count in range(1, 41):
                session_id, finals = await transcribe(port)
                opened = await log.wait_for_json(lambda line: line.get("session") == session_id)
                served_by.setdefault(opened["pid"], []).append(finals)
                if count >= 8 and len(served_by) == 2:
                    break
            process.send_signal(signal.SIGTERM)
            code = await process.wait()
    assert set(served_by) == pids
    assert all(finals == ["one two three four"] for answers in served_by.values() for finals in answers)
    assert code == 0, str(log)
    assert all(gone(pid) for pid in pids)
    drained = [line["pid"] for line in log.json() if line["message"].startswith("shut down: every connection")]
    assert sorted(drained) == sorted(pids)  # each worker shut down gracefully, once
    assert "Traceback" not in str(log)


async def test_ctrl_c_to_the_whole_process_group_drains_the_workers_once():
    async with serve_process("--workers", "2", start_new_session=True) as (process, log):
        with trio.fail_after(20):
            port, pids = await started_workers(log)
            async with open_websocket_url(f"ws://127.0.0.1:{port}/v2") as ws:
                await ws.send_message(start_message())
                await receive_all(ws, until="Info")
                os.killpg(process.pid, signal.SIGINT)  # as a terminal does: the parent and both workers
                for pid in pids:  # each has had the signal and its parent's order to drain, in some order
                    await log.wait_for_json(lambda line, pid=pid: line["pid"] == pid and "no longer accepting"
                                            in line["message"])
                await trio.sleep(0.2)
                for frame in frames_of(silence(2.0), 3200):
                    await ws.send_message(frame)
                await ws.send_message(json.dumps({"message": "EndOfStream", "last_seq_no": 10}))
                messages, _ = await receive_all(ws, until="EndOfTranscript")
            code = await process.wait()
    assert [m["metadata"]["transcript"] for m in messages if m["message"] == "AddTranscript"] == ["one two three four"]
    assert code == 0 and not [line for line in log.json() if "stopping at once" in line["message"]]


async def test_a_worker_that_dies_stops_the_others_and_the_parent_exits_1():
    async with serve_process("--workers", "2") as (process, log):
        with trio.fail_after(20):
            _, pids = await started_workers(log)
            victim, survivor = sorted(pids)
            os.kill(victim, signal.SIGKILL)
            code = await process.wait()
    assert code == 1
    assert gone(survivor)
    assert any(line["level"] == "ERROR" and f"worker pid {victim} exited (-9)" in line["message"]
               for line in log.json())
    assert any(line["pid"] == survivor and line["message"].startswith("shut down: every connection")
               for line in log.json())


def test_each_worker_gets_a_share_of_the_cores_unless_told_how_many_decoders():
    cores = os.cpu_count() or 1
    assert worker_config(ServerConfig(), 2).decode_workers == max(1, cores // 2)
    assert worker_config(ServerConfig(), 4 * cores).decode_workers == 1
    assert worker_config(ServerConfig(decode_workers=3), 2).decode_workers == 3
    assert worker_config(ServerConfig(), 2).reuse_port
