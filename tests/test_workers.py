"""`stt serve --workers N`: N processes on one port (SO_REUSEPORT), each answering clients, supervised by the
parent, which passes SIGTERM on and exits when they have, and restarts a worker that dies (giving up when they
die in a loop)."""

import json
import os
import signal

import trio
from trio_websocket import open_websocket_url

from stt.settings import ServerConfig
from stt.workers import worker_config
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


async def served_by(log, port: int) -> int:
    """The pid of the worker that serves one session (with its finals checked)."""
    session_id, finals = await transcribe(port)
    assert finals == ["one two three four"]
    return (await log.wait_for_json(lambda line: line.get("session") == session_id))["pid"]


async def test_a_killed_worker_is_restarted_while_the_others_go_on_serving_the_port():
    async with serve_process("--workers", "2") as (process, log):
        with trio.fail_after(30):
            port, pids = await started_workers(log)
            victim, survivor = sorted(pids)
            os.kill(victim, signal.SIGKILL)
            killed_at = trio.current_time()
            await log.wait_for(f"pid {victim}\\) exited")  # the supervisor saw it die: its socket is closed
            with trio.fail_after(5):
                assert await served_by(log, port) == survivor  # the port is served at once, by the other
            served_after = trio.current_time() - killed_at
            restarted = await log.wait_for(r"worker (\d) restarted \(pid (\d+)\)")
            newcomer = int(restarted[2])
            await log.wait_for_json(lambda line: line["pid"] == newcomer and "listening on" in line["message"])
            answered = set()
            for count in range(40):  # the kernel spreads connections by a hash: both workers answer in time
                answered.add(await served_by(log, port))
                if answered == {survivor, newcomer}:
                    break
            process.send_signal(signal.SIGTERM)
            code = await process.wait()
    assert served_after < 3
    assert newcomer not in pids and answered == {survivor, newcomer}
    assert any(line["level"] == "ERROR" and line["message"] == f"worker {restarted[1]} (pid {victim}) exited (-9): "
               f"restarting it in 0.5 s" for line in log.json())
    assert code == 0, str(log)  # the workers that were running at the end all stopped cleanly
    assert gone(survivor) and gone(newcomer)


async def test_workers_that_die_in_a_loop_make_the_supervisor_give_up_and_exit_1():
    async with serve_process("--workers", "2") as (process, log):
        with trio.fail_after(60):
            _, pids = await started_workers(log)
            killed = set()
            while True:  # kill each worker as soon as it is up, as a crash at start-up would
                for line in log.json():
                    if "listening on" in line["message"] and line["pid"] not in killed and not gone(line["pid"]):
                        killed.add(line["pid"])
                        os.kill(line["pid"], signal.SIGKILL)
                if log.ended or any("giving up" in line["message"] for line in log.json()):
                    break
                await trio.sleep(0.05)
            code = await process.wait()
    assert code == 1
    giving_up = [line for line in log.json() if "giving up" in line["message"]]
    assert len(giving_up) == 1 and giving_up[0]["level"] == "ERROR"
    assert "5 workers have died within 60 s; giving up, stopping the others" in giving_up[0]["message"]
    assert len(killed) >= 5 and all(gone(pid) for pid in killed)
    restarts = [line for line in log.json() if "restarting it in" in line["message"]]
    assert [line["message"].rsplit(" ", 2)[1] for line in restarts] == ["0.5", "1", "2", "4"]  # backing off
    assert "Traceback" not in str(log)


def test_each_worker_gets_a_share_of_the_cores_unless_told_how_many_decoders():
    cores = os.cpu_count() or 1
    assert worker_config(ServerConfig(), 2).decode_workers == max(1, cores // 2)
    assert worker_config(ServerConfig(), 4 * cores).decode_workers == 1
    assert worker_config(ServerConfig(decode_workers=3), 2).decode_workers == 3
    assert worker_config(ServerConfig(), 2).reuse_port
