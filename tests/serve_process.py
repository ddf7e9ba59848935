"""`stt serve` as a user starts it: the installed `stt` command in a subprocess, on 127.0.0.1, and its URL once it
listens. For the tests of commands that talk to a running server (stt transcribe, the docs' commands)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

#: The installed entry point of the environment running the tests (its bin/ is where python is).
STT = shutil.which("stt", path=str(Path(sys.executable).parent)) or shutil.which("stt") or "stt"


def stt_env(**extra: str) -> dict[str, str]:
    """The environment for an `stt` subprocess: no STT_* settings leaking in, no network for model hubs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STT_")}
    env.update(HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


@contextmanager
def stt_serve(*options: str, port: int = 0, timeout: float = 120.0, env: dict | None = None) -> Iterator[dict]:
    """Run `stt serve --port PORT --log-format json OPTIONS...` until the block exits (then SIGINT, then kill).
    Yields {"url": "ws://127.0.0.1:<port>", "port": <port>, "process": Popen, "lines": [log lines so far]}."""
    command = [STT, "serve", "--port", str(port), "--log-format", "json", *options]
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, env=env or stt_env())
    lines: list[str] = []
    watchdog = threading.Timer(timeout, process.kill)  # readline ends when a server that never listens is killed
    watchdog.start()
    try:
        url = None
        while url is None:
            line = process.stdout.readline()
            if not line:
                raise AssertionError(f"{' '.join(command)} exited or did not listen within {timeout:g} s:\n"
                                     + "".join(lines[-30:]))
            lines.append(line)
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if "listening on" in record.get("message", "") and "url" in record:
                url = record["url"]
        watchdog.cancel()
        drain = threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True)
        drain.start()  # keep reading, so a chatty server never blocks on a full pipe
        yield {"url": url, "port": int(url.rsplit(":", 1)[1]), "process": process, "lines": lines}
    finally:
        watchdog.cancel()
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def run_stt(*args: str, input: bytes | None = None, timeout: float = 180.0, env: dict | None = None,
            **options) -> subprocess.CompletedProcess:
    """`stt ARGS...`, to completion; stdout and stderr captured as text."""
    started = time.monotonic()
    if input is None:
        options.setdefault("stdin", subprocess.DEVNULL)  # never the terminal pytest may have been started from
    done = subprocess.run([STT, *args], input=input, capture_output=True, timeout=timeout, env=env or stt_env(),
                          **options)
    done.elapsed = time.monotonic() - started
    done.out = done.stdout.decode("utf-8", "replace") if isinstance(done.stdout, bytes) else done.stdout
    done.err = done.stderr.decode("utf-8", "replace") if isinstance(done.stderr, bytes) else done.stderr
    return done
