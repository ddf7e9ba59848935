"""Fuzzing every dialect over real WebSocket connections: hypothesis draws connection plans (the upgrade's path,
query and headers; a sequence of valid, mutated and junk frames; how the client leaves: waiting for the server,
closing with a random code, or dropping the TCP connection without a close frame) from tests/fuzz_frames.py and
plays each against an in-process server with the scripted engine.

After every example:
- the server's own state is clean: no session left in `server.sessions`, `server.connections.open == 0`, the
  number of trio tasks in the server's run back to what it was before the example, no open file descriptor
  and no audio decoder thread (`stt-audio-*`) more than before;
- nothing failed inside the server: no ERROR record (`session … failed`, `connection failed`, `recognizer
  failed`, …) and no "decoder thread did not stop" warning, no session ended as `internal_error` (1011: with
  the scripted engine, nothing a client sends may be an internal error);
- a frame that breaks RFC 6455, written under the client's WebSocket (tests/fuzz_frames.py: Raw), gets a Close
  1002 (1007 for text that is not UTF-8) with the lifecycle's reason, and a close with that reason comes only
  after such a frame;
- every close the client saw is 1000, a close code of the dialect's chart (lifecycle endings included), 1009
  for an over-size frame, 1006 when the client dropped the connection itself, or the client's own code echoed;
  a close reason the server chose is a chart rule's; the handshake is refused only where the dialect refuses
  handshakes (V-Blaze's bad tags 400, a missing or wrong key 401 for YourVoic and V-Blaze);
- every frame the server sent is well-formed for the dialect (JSON objects, but V-Blaze's), and every error
  or warning frame names an error or warning type of the chart's rules (Scriptix: its text starts with a
  rule's message); Speechmatics acknowledges audio with consecutive seq_no from 1;
- the client finished: the server answered its close, and closed the TCP connection after a close handshake.
Every HEALTH_EVERY examples, and at the end of each test, a well-formed session of the same dialect must still
work. Memory: hypothesis's own bookkeeping grows by about 20 KiB per example (measured with no server), so RSS
over the fuzzing says little about the server; instead a sample of up to REPLAYED of the test's plans is replayed
(once to warm up, then REPLAY_ROUNDS times) and RSS growth over those replays must stay under RSS_BOUND (a
guard, not a benchmark).

Mechanics: one server per test runs in a background thread under its own `trio.run` (open_server, port 0,
scripted engine, short timeouts via SessionLimits, a 64 KiB message limit so over-size frames are cheap, and
an API key so the auth paths are fuzzed too); each example is one `trio.run` of the client in the test
thread. So the server lives across examples, as a real one does (leaks add up where they would), hypothesis
stays synchronous, and a client that hangs cannot block the server's loop. Whatever reads the server's state
(sessions, connections, trio tasks) runs inside the server's run, through `trio.from_thread.run_sync` with its
trio token, never from the test thread directly. Leak checks compare against the count just before the
example, so that one leak does not make every later example fail (and shrink to an unrelated one).

The CI budget is STT_FUZZ_EXAMPLES (default 30) examples per dialect, derandomized (the same examples every
run) and without a database. The large run:

    STT_FUZZ_EXAMPLES=10000 STT_FUZZ_RANDOM=1 python -m pytest tests/test_fuzz.py -s

(STT_FUZZ_RANDOM=1: fresh random examples each run; -s shows the figures each test prints.)
"""

from __future__ import annotations

import json
import logging
import os
import socket
import struct
import threading
import time
import traceback
from typing import Any

import attrs
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from trio_websocket import ConnectionClosed, ConnectionRejected, connect_websocket

from stt.dialects import DIALECTS
from stt.server import open_server
from stt.session import SessionLimits
from stt.settings import ServerConfig
from stt.statechart import load_chart
from tests.fuzz_frames import (
    API_KEY,
    MAX_MESSAGE_BYTES,
    Binary,
    Expect,
    Huge,
    Pause,
    Ping,
    RAW_CASES,
    Plan,
    Raw,
    Text,
    dump,
    plans,
    silence,
    wav_header,
)

EXAMPLES = int(os.environ.get("STT_FUZZ_EXAMPLES", 30))
RANDOM = os.environ.get("STT_FUZZ_RANDOM") == "1"
HEALTH_EVERY = 50  # examples between two well-formed sessions
RSS_BOUND = 50 << 20  # bytes of RSS growth allowed over the replays of one test
REPLAYED = 100  # plans kept for the replays
REPLAY_ROUNDS = int(os.environ.get("STT_FUZZ_REPLAY_ROUNDS", 3))  # rounds of replays measured
CLEAN_TIMEOUT = 3.0  # seconds the server has to be back to its state before an example
WAIT_FOR_SERVER = 0.6  # seconds a client that waits gives the server to close (over the idle timeout)
CLOSE_TIMEOUT = 3.0  # seconds the server has to answer a close, and to close TCP after the close handshake
CLIENT_TIMEOUT = 20.0  # seconds one example's client may take in all
LIMITS = SessionLimits(max_message_bytes=MAX_MESSAGE_BYTES, idle_timeout=0.25, close_grace=0.1, send_timeout=2.0)
DIALECT_CLASSES = {d.name: d for d in DIALECTS}

FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=not RANDOM,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example,
                           HealthCheck.filter_too_much],
)


# --- the server, in its own thread ---------------------------------------------------------------------------

class Captured(logging.Handler):
    """Records that say something failed inside the server."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if record.levelno >= logging.ERROR or "did not stop" in message or " failed" in message:
            text = f"{record.levelname} {record.name}: {message}"
            if record.exc_info:
                text += "\n" + logging.Formatter().formatException(record.exc_info)
            self.records.append(text)


@attrs.frozen
class Snapshot:
    sessions: int
    connections: int
    tasks: int
    fds: int
    audio_threads: int
    internal_errors: int

    def clean_against(self, before: Snapshot | None) -> bool:
        if self.sessions or self.connections:
            return False
        return before is None or (self.tasks <= before.tasks and self.fds <= before.fds
                                  and self.audio_threads <= before.audio_threads)


def count_tasks() -> int:
    """Every task of the current trio run (called inside it)."""
    def walk(task) -> int:
        return 1 + sum(walk(child) for nursery in task.child_nurseries for child in nursery.child_tasks)
    return walk(trio.lowlevel.current_root_task())


def task_names() -> list[str]:
    """Every task of the current trio run (called inside it) with where it waits, for reports."""
    names = []

    def where(task) -> str:
        frames, coro = [], task.coro
        while coro is not None:
            frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
            if frame is None:
                break
            frames.append(f"{os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno}")
            coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
        return " > ".join(frames)

    def walk(task) -> None:
        names.append(f"{task.name} [{where(task)}]")
        for nursery in task.child_nurseries:
            for child in nursery.child_tasks:
                walk(child)
    walk(trio.lowlevel.current_root_task())
    return names


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def audio_threads() -> int:
    return sum(t.name.startswith("stt-audio-") for t in threading.enumerate())


def rss() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


class ServerThread:
    """The fuzz server, in a thread under its own trio.run. A run that ends by itself (the server crashed) is
    reported by the example that caused it, and `restart` starts a fresh one for the examples after. `limits`:
    the sessions' (LIMITS: an idle timeout of 0.25 s, so that examples that leave a session open end soon)."""

    def __init__(self, limits: SessionLimits = LIMITS):
        self.limits = limits

    def __enter__(self) -> ServerThread:
        self.captured = Captured()
        self._logger = logging.getLogger("stt")
        self._level = self._logger.level
        if self._logger.getEffectiveLevel() > logging.WARNING:
            self._logger.setLevel(logging.WARNING)
        self._logger.addHandler(self.captured)
        self.restarts = 0
        self._start()
        return self

    def _start(self) -> None:
        self.error: BaseException | None = None
        self._ready = threading.Event()
        self.thread = threading.Thread(target=self._run, name="stt-fuzz-server", daemon=True)
        self.thread.start()
        assert self._ready.wait(30), "the fuzz server did not start"
        if self.error is not None:
            raise self.error

    @property
    def alive(self) -> bool:
        return self.thread.is_alive()

    def restart(self) -> None:
        self.thread.join(30)
        self.restarts += 1
        self._start()

    def _run(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as exc:  # noqa: BLE001 - reported by the example that caused it, and __exit__
            self.error = exc
        finally:
            self._ready.set()

    async def _main(self) -> None:
        config = ServerConfig(port=0, engine="scripted", limits=self.limits, api_keys=(API_KEY,))
        async with open_server(config) as server:
            self.server, self.port = server, server.port
            self.token = trio.lowlevel.current_trio_token()
            self._stop = trio.Event()
            self._ready.set()
            await self._stop.wait()

    def crash_report(self) -> str:
        error = self.error
        lines = traceback.format_exception(error) if error is not None else ["(no exception)"]
        return "the server's trio.run ended (the server crashed):\n" + "".join(lines)[-6000:]

    def call(self, fn, *args):
        assert self.alive, self.crash_report()
        try:
            return trio.from_thread.run_sync(fn, *args, trio_token=self.token)
        except trio.RunFinishedError:
            self.thread.join(5)
            raise AssertionError(self.crash_report()) from None

    def _snapshot(self) -> tuple[int, int, int, int]:
        server = self.server
        internal = sum(n for (_, ending, _), n in server.endings.items() if ending == "internal_error")
        return len(server.sessions), server.connections.open, count_tasks(), internal

    def snapshot(self) -> Snapshot:
        sessions, connections, tasks, internal = self.call(self._snapshot)
        return Snapshot(sessions, connections, tasks, open_fds(), audio_threads(), internal)

    def wait_clean(self, before: Snapshot | None = None) -> tuple[Snapshot, bool]:
        deadline = time.monotonic() + CLEAN_TIMEOUT
        while True:
            now = self.snapshot()
            if now.clean_against(before):
                return now, True
            if time.monotonic() > deadline:
                return now, False
            time.sleep(0.005)

    def __exit__(self, *exc_info) -> None:
        try:
            if self.alive:
                self.call(self._stop.set)
            self.thread.join(30)
        finally:
            self._logger.removeHandler(self.captured)
            self._logger.setLevel(self._level)
        assert not self.thread.is_alive(), "the fuzz server did not stop"
        if self.error is not None and exc_info[0] is None:
            raise AssertionError(self.crash_report())


# --- the client ----------------------------------------------------------------------------------------------

@attrs.define
class Observed:
    rejected: int | None = None  # the HTTP status of a refused upgrade
    frames: list = attrs.field(factory=list)
    close: Any = None  # the CloseReason the client ended with
    client_code: int | None = None  # the code the client closed with, if it closed
    dropped: bool = False  # the client dropped the TCP connection itself
    sent: int = 0  # actions done before the connection closed
    problems: list[str] = attrs.field(factory=list)


async def run_client(port: int, plan: Plan, obs: Observed) -> None:
    ws = None
    with trio.fail_after(CLIENT_TIMEOUT):
        with trio.CancelScope() as tail:  # given a deadline once the client has left: the server's TCP close
            try:
                async with trio.open_nursery() as nursery:
                    ws = await connect_websocket(
                        nursery, "127.0.0.1", port, plan.resource, use_ssl=False,
                        extra_headers=[(k.encode(), v.strip().encode()) for k, v in plan.headers],  # h11: no edge spaces
                        max_message_size=16 << 20)
                    done = trio.Event()
                    nursery.start_soon(_read_all, ws, obs, done)
                    for action in plan.actions:
                        if ws.closed is not None:
                            break
                        try:
                            await _perform(ws, action, nursery, obs.frames)
                        except ConnectionClosed:
                            break
                        obs.sent += 1
                    await _leave(ws, plan.ending, obs, done)
                    with trio.move_on_after(CLOSE_TIMEOUT):
                        await done.wait()
                    if not done.is_set():
                        obs.problems.append("the client's reader never saw the connection close")
                    tail.deadline = trio.current_time() + CLOSE_TIMEOUT
            except* ConnectionRejected as refusals:  # raised by connect_websocket and by its reader task
                obs.rejected = refusals.exceptions[0].status_code
        if obs.rejected is not None:
            return
        if tail.cancelled_caught:
            obs.problems.append(f"the server did not close the TCP connection within {CLOSE_TIMEOUT:g} s of the "
                                f"close handshake (client saw {ws.closed!r})")
        obs.close = ws.closed


async def _read_all(ws, obs: Observed, done: trio.Event) -> None:
    try:
        while True:
            obs.frames.append(await ws.get_message())
    except ConnectionClosed:
        pass
    finally:
        done.set()


async def _perform(ws, action, nursery: trio.Nursery, frames: list) -> None:
    if isinstance(action, (Text, Binary)):
        await ws.send_message(action.data)
    elif isinstance(action, Huge):
        await ws.send_message(action.frame())
    elif isinstance(action, Pause):
        await trio.sleep(action.seconds)
    elif isinstance(action, Ping):
        nursery.start_soon(_ping, ws, action.payload)
    elif isinstance(action, Raw):  # under the WebSocket, between whole frames of trio-websocket's own
        async with ws._stream_lock:
            try:
                await ws._stream.send_all(action.data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                raise ConnectionClosed(None) from None
    elif isinstance(action, Expect):
        with trio.move_on_after(1.0):
            while ws.closed is None and not any(isinstance(f, str) and action.text in f for f in frames):
                await trio.sleep(0.002)
    else:
        raise TypeError(action)


async def _ping(ws, payload: bytes) -> None:
    with trio.move_on_after(1.0):
        try:
            await ws.ping(payload or None)
        except (ConnectionClosed, ValueError):  # closed meanwhile; the same payload already in flight
            pass


async def _leave(ws, ending: tuple, obs: Observed, done: trio.Event) -> None:
    kind = ending[0]
    if kind == "wait":
        with trio.move_on_after(WAIT_FOR_SERVER):
            await done.wait()
        if ws.closed is None:
            await _close(ws, 1000, "", obs)
    elif kind == "close":
        await _close(ws, ending[1], ending[2], obs)
    elif kind == "drop":
        obs.dropped = True
        stream = ws._stream  # the TCP stream under the WebSocket: closed without a close frame
        if ending[1]:  # with a reset (RST), not a FIN
            stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await stream.aclose()
    else:
        raise ValueError(ending)


async def _close(ws, code: int, reason: str, obs: Observed) -> None:
    if ws.closed is not None:
        return
    obs.client_code = code
    with trio.move_on_after(CLOSE_TIMEOUT) as waiting:
        await ws.aclose(code, reason or None)
    if waiting.cancelled_caught:
        obs.problems.append(f"the server did not answer the client's close ({code}) within {CLOSE_TIMEOUT:g} s")


# --- what the client saw, judged against the dialect's chart --------------------------------------------------

def chart_facts(dialect_cls) -> dict:
    rules = dialect_cls.chart.rules.values()
    return {
        "codes": {rule.close for rule in rules if rule.close is not None},
        "errors": {rule.error for rule in rules if rule.error},
        "warnings": {rule.warning for rule in rules if rule.warning},
        "reasons": {(rule.error or rule.message)[:120] for rule in rules if rule.close is not None},
        "error_messages": {rule.message for rule in rules if rule.error},
    }


#: The lifecycle's close reasons for a frame that breaks RFC 6455, by close code.
PROTOCOL_REASONS = {1002: load_chart("lifecycle").ending("protocol_error").message,
                    1007: load_chart("lifecycle").ending("invalid_utf8").message}

#: Dialects whose close reason may carry a detail after the rule's (AssemblyAI's "Invalid JSON: <json>").
DETAILED_REASONS = {"assemblyai"}
#: The messages AssemblyAI's server sends (those the vendor's SDK reads).
AA_SERVER_TYPES = {"Begin", "Turn", "SpeechStarted", "Termination"}

#: Upgrades a dialect may refuse, with these statuses (V-Blaze: a bad tag; a missing or wrong key).
REFUSALS = {"vblaze": {400, 401}, "yourvoic": {401}, "deepgram": {400, 401},
            "openai": {400, 401}}  # openai: 400 for an intent


def judge(dialect: str, plan: Plan, obs: Observed) -> list[str]:
    facts = chart_facts(DIALECT_CLASSES[dialect])
    problems = list(obs.problems)
    if obs.rejected is not None:
        if obs.rejected not in REFUSALS.get(dialect, set()):
            problems.append(f"the upgrade was refused with HTTP {obs.rejected}")
        return problems
    close = obs.close
    if close is None:
        problems.append("the client never saw a close")
    else:
        allowed = {1000, 1009} | facts["codes"]
        if obs.dropped:
            allowed.add(1006)
        if obs.client_code is not None:
            allowed.add(obs.client_code)
        if close.code not in allowed:
            problems.append(f"close code {close.code} ({close.reason!r}) is not 1000, 1009 or one of the chart's "
                            f"{sorted(facts['codes'])}")
        if close.code == 1006 and not obs.dropped:
            problems.append("1006: the server dropped the connection without a close frame")
        ours = close.code == obs.client_code or close.code == 1006
        oversize = close.code == 1009 and (close.reason or "").startswith("Exceeded maximum message size")
        detailed = dialect in DETAILED_REASONS and any(  # the rule's reason, then ": <what was wrong>"
            (close.reason or "").startswith(r + ": ") for r in facts["reasons"])
        if (not ours and not oversize and not detailed and close.reason is not None
                and close.reason not in facts["reasons"]):
            problems.append(f"close reason {close.reason!r} (code {close.code}) is no rule's of the chart")
        raw = [a for a in plan.actions[:obs.sent] if isinstance(a, Raw)]
        if not ours and close.reason in PROTOCOL_REASONS.values():
            if not raw:
                problems.append(f"a protocol-error close ({close.code} {close.reason!r}) with no bad frame sent")
            elif (close.code, close.reason) != (raw[0].code, PROTOCOL_REASONS[raw[0].code]):
                problems.append(f"{raw[0]!r} was closed {close.code} {close.reason!r}, not {raw[0].code}")
    problems += check_frames(dialect, obs.frames, facts)
    return problems


def check_frames(dialect: str, frames: list, facts: dict) -> list[str]:
    problems = []
    seq = 0
    for i, frame in enumerate(frames):
        where = f"frame {i} {frame[:200]!r}"
        if isinstance(frame, bytes):
            if dialect != "vblaze":  # V-Blaze: ZIP archives and scrubbed WAV audio; the others send text only
                problems.append(f"{where}: a binary frame")
            continue
        if dialect == "vblaze":
            continue  # transcripts in json, jsontop or text (and the empty frame before the transcript)
        try:
            msg = json.loads(frame)
        except ValueError:
            problems.append(f"{where}: not JSON")
            continue
        if not isinstance(msg, dict):
            problems.append(f"{where}: not a JSON object")
            continue
        if dialect == "speechmatics":
            kind = msg.get("message")
            if kind == "Error" and msg.get("type") not in facts["errors"]:
                problems.append(f"{where}: error type {msg.get('type')!r} is not the chart's")
            if kind == "Warning" and msg.get("type") not in facts["warnings"]:
                problems.append(f"{where}: warning type {msg.get('type')!r} is not the chart's")
            if kind == "AudioAdded":
                seq += 1
                if msg.get("seq_no") != seq:
                    problems.append(f"{where}: seq_no {msg.get('seq_no')!r}, expected {seq}")
        elif dialect == "voicerun":
            if msg.get("type") == "error":
                error = msg.get("error")
                if not isinstance(error, dict) or error.get("code") not in facts["errors"]:
                    problems.append(f"{where}: error code is not the chart's")
        elif dialect == "openai":
            if not isinstance(msg.get("event_id"), str) or not msg["event_id"]:
                problems.append(f"{where}: no event_id")
            if msg.get("type") == "error":
                error = msg.get("error")
                if not isinstance(error, dict) or error.get("code") not in facts["errors"]:
                    problems.append(f"{where}: error code is not the chart's")
        elif dialect == "yourvoic":
            if msg.get("type") == "error" and msg.get("code") not in facts["errors"]:
                problems.append(f"{where}: error code {msg.get('code')!r} is not the chart's")
        elif dialect == "assemblyai":
            if msg.get("type") not in AA_SERVER_TYPES:
                problems.append(f"{where}: type {msg.get('type')!r} is not a server message of AssemblyAI")
        elif dialect == "scriptix":
            if "error" in msg:
                text = msg["error"]
                if not isinstance(text, str) or not any(text == m or text.startswith(m + ": ")
                                                        for m in facts["error_messages"]):
                    problems.append(f"{where}: error text is no rule's message")
    return problems


# --- a well-formed session, per dialect -----------------------------------------------------------------------

def _sm_health() -> tuple[Plan, Any]:
    start = {"message": "StartRecognition", "audio_format": {"type": "raw", "encoding": "pcm_s16le",
             "sample_rate": 16000}, "transcription_config": {"language": "en", "enable_partials": True}}
    audio = [Binary(silence(0.25)) for _ in range(8)]
    plan = Plan("speechmatics", "/v2", (("Authorization", f"Bearer {API_KEY}"),),
                (Text(dump(start)), Expect("RecognitionStarted"), *audio,
                 Text(dump({"message": "EndOfStream", "last_seq_no": 8}))), ("wait",))

    def ok(msgs):
        kinds = [m.get("message") for m in msgs]
        return (kinds[:2] == ["RecognitionStarted", "Info"] and kinds.count("AudioAdded") == 8
                and "AddTranscript" in kinds and kinds[-1] == "EndOfTranscript")
    return plan, ok


def _vr_health() -> tuple[Plan, Any]:
    import base64
    update = {"type": "session.update", "session": {"model": "nova-3", "provider": "DEEPGRAM"}}
    audio = [Text(dump({"type": "audio.append", "audio": base64.b64encode(silence(0.25)).decode()}))
             for _ in range(8)]
    plan = Plan("voicerun", "/ws", (("Authorization", f"Bearer {API_KEY}"),),
                (Text(dump(update)), Expect("session.updated"), *audio, Text('{"type":"session.close"}')), ("wait",))

    def ok(msgs):
        kinds = [m.get("type") for m in msgs]
        return (kinds[:2] == ["session.created", "session.updated"] and "transcription.completed" in kinds
                and kinds[-1] == "session.closed")
    return plan, ok


def _yv_health() -> tuple[Plan, Any]:
    plan = Plan("yourvoic", f"/api/v1/stt/realtime/stream?api_key={API_KEY}", (),
                (*[Binary(silence(0.25)) for _ in range(8)], Text('{"type":"close"}')), ("wait",))

    def ok(msgs):
        return any(m.get("type") == "transcript" and m.get("is_final") and m.get("text") for m in msgs)
    return plan, ok


def _sx_health() -> tuple[Plan, Any]:
    plan = Plan("scriptix", f"/v2/realtime?token={API_KEY}", (),
                (Text('{"action":"start"}'), Expect("listening"), *[Binary(silence(0.25)) for _ in range(8)],
                 Text('{"action":"stop"}')),
                ("wait",))

    def ok(msgs):
        return (msgs[0].get("state") == "listening" and any("result" in m for m in msgs)
                and msgs[-1] == {"state": "stopped"})
    return plan, ok


def _vb_health() -> tuple[Plan, Any]:
    plan = Plan("vblaze", f"/transcribe?token={API_KEY}&output=json", (),
                (Binary(wav_header(16000, 1)), *[Binary(silence(0.25)) for _ in range(8)], Binary(b"")), ("wait",))

    def ok(frames):
        return len(frames) == 1 and json.loads(frames[0]).get("utterances")
    return plan, ok


def _dg_health() -> tuple[Plan, Any]:
    plan = Plan("deepgram", "/v1/listen?model=nova-3&encoding=linear16&sample_rate=16000",
                (("Authorization", f"Token {API_KEY}"),),
                (*[Binary(silence(0.25)) for _ in range(8)], Text('{"type":"CloseStream"}')), ("wait",))

    def ok(msgs):
        return (any(m.get("type") == "Results" and m.get("is_final") and m["channel"]["alternatives"][0]["transcript"]
                    for m in msgs) and msgs[-1].get("type") == "Metadata")
    return plan, ok


def _aa_health() -> tuple[Plan, Any]:
    plan = Plan("assemblyai", "/v3/ws?sample_rate=16000&encoding=pcm_s16le&format_turns=True",
                (("Authorization", API_KEY),),
                (Expect("Begin"), *[Binary(silence(0.25)) for _ in range(8)], Text('{"type":"Terminate"}')), ("wait",))

    def ok(msgs):
        kinds = [m.get("type") for m in msgs]
        return (kinds[0] == "Begin" and kinds[-1] == "Termination"
                and any(m.get("type") == "Turn" and m.get("end_of_turn") and m.get("turn_is_formatted")
                        and m.get("transcript") for m in msgs))
    return plan, ok


def _oa_health() -> tuple[Plan, Any]:
    import base64
    update = {"type": "session.update", "session": {"type": "transcription",
                                                    "audio": {"input": {"turn_detection": None}}}}
    audio = [Text(dump({"type": "input_audio_buffer.append", "audio": base64.b64encode(silence(0.25, 24000)).decode()}))
             for _ in range(8)]
    # OpenAI has no end of stream: the client commits, waits for the transcription, and closes itself.
    plan = Plan("openai", "/v1/realtime?intent=transcription", (("Authorization", f"Bearer {API_KEY}"),),
                (Text(dump(update)), Expect("session.updated"), *audio, Text('{"type":"input_audio_buffer.commit"}'),
                 Expect("input_audio_transcription.completed")), ("close", 1000, ""))

    def ok(msgs):
        kinds = [m.get("type") for m in msgs]
        done = [m for m in msgs if m.get("type") == "conversation.item.input_audio_transcription.completed"]
        return (kinds[:2] == ["session.created", "session.updated"] and "input_audio_buffer.committed" in kinds
                and len(done) == 1 and done[0]["transcript"])
    return plan, ok


HEALTH = {"speechmatics": _sm_health, "voicerun": _vr_health, "yourvoic": _yv_health, "scriptix": _sx_health,
          "vblaze": _vb_health, "deepgram": _dg_health, "assemblyai": _aa_health, "openai": _oa_health}


# --- the tests --------------------------------------------------------------------------------------------------

def play(fs: ServerThread, dialect: str, plan: Plan) -> Observed:
    """One example: the server clean before and after, nothing failed inside it, the client's view judged."""
    if not fs.alive:  # an earlier example crashed it (and failed): a fresh server for this one
        fs.restart()
    before, clean = fs.wait_clean()
    assert clean, f"the server was not idle before the example: {before}"
    fs.captured.records.clear()
    obs = Observed()
    try:
        trio.run(run_client, fs.port, plan, obs)
    except BaseException as exc:  # noqa: BLE001 - a client that failed (or timed out): reported below
        if not fs.alive:
            obs.problems.append(f"client: {exc!r}")
        else:
            raise
    if not fs.alive:
        fs.thread.join(5)
        assert False, "\n".join([f"{dialect}: {plan!r}", fs.crash_report()])
    after, clean = fs.wait_clean(before)
    problems = judge(dialect, plan, obs)
    if not clean:
        problems.append(f"the server did not come back to its state within {CLEAN_TIMEOUT:g} s: "
                        f"before {before}, after {after}; its tasks now: {fs.call(task_names)}")
    if after.internal_errors > before.internal_errors:
        problems.append("a session ended as internal_error (1011)")
    problems += [f"the server logged: {record}" for record in fs.captured.records]
    assert not problems, "\n".join([f"{dialect}: {plan!r}", f"client saw close {obs.close!r}, "
                                    f"{len(obs.frames)} frames, {obs.sent} actions sent"] + problems)
    return obs


def health_check(fs: ServerThread, dialect: str) -> None:
    plan, ok = HEALTH[dialect]()
    obs = play(fs, dialect, plan)
    msgs = obs.frames if dialect == "vblaze" else [json.loads(f) for f in obs.frames]
    # The server closes with 1000, or (OpenAI: no end of stream) the client does, as its plan says.
    client_code = plan.ending[1] if plan.ending[0] == "close" else None
    assert obs.close is not None and obs.close.code == 1000 and obs.client_code == client_code, \
        f"{dialect}: the well-formed session did not end with 1000 as it should: {obs.close!r}"
    assert ok(msgs), f"{dialect}: the well-formed session went wrong: {msgs!r}"


@pytest.mark.parametrize("dialect", sorted(DIALECT_CLASSES))
def test_frames_that_break_rfc_6455_get_a_close_1002_or_1007_and_the_server_goes_on(dialect: str) -> None:
    """Every kind of raw bad frame (RAW_CASES), each on a connection of its own, right after the upgrade and after
    the dialect's start: the Close code and reason the client sees, and the checks of every example. The idle
    timeout is a second here, not LIMITS' quarter: on a loaded machine the bad frame may come later than that
    after the start, and the session would end idle first (seen once in a full run: V-Blaze, 1008)."""
    with ServerThread(attrs.evolve(LIMITS, idle_timeout=1.0)) as fs:
        health, _ = HEALTH[dialect]()
        for raw in RAW_CASES:
            for before in ((), health.actions[:1]):
                plan = attrs.evolve(health, actions=(*before, Raw(raw.data, raw.code, raw.what)), ending=("wait",))
                obs = play(fs, dialect, plan)
                assert (obs.close.code, obs.close.reason) == (raw.code, PROTOCOL_REASONS[raw.code]), \
                    f"{dialect}: {raw!r} after {before!r}: the client saw {obs.close!r}"
        health_check(fs, dialect)


@pytest.mark.parametrize("dialect", sorted(DIALECT_CLASSES))
def test_fuzz(dialect: str) -> None:
    started = time.monotonic()
    with ServerThread() as fs:
        health_check(fs, dialect)  # the server works before any junk
        rss_start = rss()
        count = 0
        kept: list[Plan] = []  # a sample of the plans, replayed below for the memory guard

        @FUZZ_SETTINGS
        @given(plan=plans(dialect))
        def fuzz(plan: Plan) -> None:
            nonlocal count
            count += 1
            play(fs, dialect, plan)
            if len(kept) < REPLAYED:
                kept.append(plan)
            elif count % 7 == 0:
                kept[count % REPLAYED] = plan
            if count % HEALTH_EVERY == 0:
                health_check(fs, dialect)
            if EXAMPLES >= 1000 and count % 1000 == 0:  # progress of a long run (shown with -s)
                print(f"{dialect}: {count} sequences, {time.monotonic() - started:.0f} s, RSS {rss() / 2**20:.1f} MiB",
                      flush=True)

        fuzz()
        health_check(fs, dialect)
        # The memory guard. Hypothesis's own bookkeeping grows with every example (about 20 KiB each, measured
        # with no server at all), so RSS over the fuzzing says little about the server: replay the sample of
        # plans instead, once to warm up, then REPLAY_ROUNDS times, measuring the growth over those.
        for plan in kept:
            play(fs, dialect, plan)
        rss_before = rss()
        for _ in range(REPLAY_ROUNDS):
            for plan in kept:
                play(fs, dialect, plan)
        rss_after = rss()
        health_check(fs, dialect)
    replays = REPLAY_ROUNDS * len(kept)
    print(f"\n{dialect}: {count} sequences in {time.monotonic() - started:.1f} s; RSS {rss_start / 2**20:.1f} MiB "
          f"at the start; {replays} replays: RSS {rss_before / 2**20:.1f} -> {rss_after / 2**20:.1f} MiB")
    assert rss_after - rss_before < RSS_BOUND, \
        f"RSS grew by {(rss_after - rss_before) / 2**20:.1f} MiB over {replays} replayed sequences"
