"""What the benchmarks share about processes and the machine (Linux /proc): a free port, the CPU time the whole
machine has been busy, and stopping a server started in a process group of its own, with whatever it left."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

HOST = "127.0.0.1"  # the benchmarks contact nothing else


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def system_busy_seconds() -> float:
    """CPU time all cores spent busy since boot (Linux /proc/stat; 0 elsewhere)."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0.0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def proc_stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat from the third (state) on; None when the process is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2:].split()


def all_stats() -> dict[int, list[str]]:
    out = {}
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if entry.isdigit():
            st = proc_stat(int(entry))
            if st is not None:
                out[int(entry)] = st
    return out


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()[:120]
    except OSError:
        return f"pid {pid}"


def group_members(pgid: int) -> list[int]:
    return [pid for pid, st in all_stats().items() if int(st[2]) == pgid]  # field 5: pgrp


def stop_group(proc: subprocess.Popen, timeout: float) -> list[str]:
    """Stop a process started with start_new_session (so the leader of its own group): SIGINT, SIGKILL if it
    is still there after `timeout` seconds; then kill what is left of its group (decoder workers that outlived
    it), after a moment for helpers that exit by themselves once it is gone (multiprocessing's resource
    tracker). Returns the command lines of those that had to be killed."""
    pgid = proc.pid
    try:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
    finally:
        deadline = time.monotonic() + 3.0
        while group_members(pgid) and time.monotonic() < deadline:
            time.sleep(0.1)
        members = group_members(pgid)
        leftovers = [cmdline(pid) for pid in members]
        if members:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    return leftovers
