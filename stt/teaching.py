"""The example exchanges that the teaching pages (docs/statecharts/<dialect>.md, stt.diagrams) show, recorded:
`stt diagrams --record` writes statecharts/examples/<dialect>.json for each dialect, and `stt diagrams` renders
the pages from them and the charts without running anything, so that the docs' staleness check stays fast and
deterministic.

What one file holds (EXAMPLE_FORMAT):

- "session": one typical session, recorded: the dialect's reference client (its conformance profile,
  stt.conformance.profiles) streams tests/data/ps_goforward.wav ("go forward ten meters", 2.8 s) in 100 ms
  frames, at real time, to an in-process server with the real recognizer (engine "sphinx"), and ends its
  stream the dialect's way. The frames are the server's logbook of it (stt.recording: every frame both ways,
  in order, with the dialect's state after each): a run of client audio frames is one entry with its count,
  binary frames are shown as "<binary: N bytes of audio>" and base64 audio strings are shortened.
- "messages": one example frame of every client event of the chart and of every server message type: the
  first of the recorded session where it has one ("source": "session"); a client event the typical session
  does not send is the profile's frame ("source": "profile"), and a server message it did not bring (a
  speech event the recording has none of) is the dialect's own rendering of one ("source": "rendered").
- "errors": for each rule that a forbidden (state, event) pair breaks, the first such pair the client profile
  can drive: the path to the state, the client's frame, the server's answer (render_violation of the
  Violation the dialect itself raised, sans-IO) and the close code.
- "endings": for each ending the chart names (idle timeout, unauthorised, ...): the rule, the answer frames
  (render_violation, as the session sends them) and the close code, or the HTTP status where the dialect
  refuses at the upgrade.

The recording is not byte-for-byte reproducible (session ids, timings, the recognizer's partials): re-record
when a dialect's frames change; tests/test_diagrams.py checks that every message has its example.
"""

from __future__ import annotations

import base64
import functools
import json
import re
import sys
import tempfile
import wave
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import attrs
import numpy as np
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from stt.conformance.catalogue import cases, chart_of, runnable
from stt.conformance.logbook import payload, read_logbook
from stt.conformance.profiles import CLOSE, PROFILES, Frame, Profile
from stt.dialects import dialect_named
from stt.dialects.base import render_shutting_down
from stt.events import Configure, Final, Partial, ShuttingDown, SpeechStarted, SpeechStopped, Violation, Word
from stt.server import open_server
from stt.settings import ServerConfig
from stt.statechart import charts_dir
from stt.testmodes import TestModes

#: The recording every typical session streams, and the words in it.
AUDIO = Path(__file__).resolve().parent.parent / "tests" / "data" / "ps_goforward.wav"
CHUNK_SECONDS = 0.1
EXAMPLE_FORMAT = 1


def examples_dir() -> Path:
    return charts_dir() / "examples"


def message_type(frame: Any) -> str:
    """The name of a server message: its "message" or "type" (Speechmatics; most others), "state: X" for a
    Scriptix state, "error" for an error object, "transcript (done)" for V-Blaze's transcript, else the name of
    its first field (Scriptix's "partial" and "result"); "binary" for a binary frame, "text" for another."""
    if isinstance(frame, (bytes, bytearray)):
        return "binary"
    if isinstance(frame, str):
        try:
            frame = json.loads(frame)
        except ValueError:
            return "text"
    if not isinstance(frame, dict) or not frame:
        return "text"
    for key in ("message", "type"):
        if isinstance(frame.get(key), str):
            return frame[key]
    if isinstance(frame.get("state"), str):
        return f"state: {frame['state']}"
    if "error" in frame:
        return "error"
    if "donedate" in frame:
        return "transcript (done)"
    return next(iter(frame))


# --- the typical session -------------------------------------------------------------------------------------


@attrs.frozen
class Typical:
    """How a dialect's typical session goes: the chart events before the audio (server events are waited for),
    the client event that carries audio, the client events sent halfway through the audio, the events that end
    the stream, and (for a protocol with no end of stream) the frame after which the client closes."""

    before: tuple[str, ...]
    audio: str
    end: tuple[str, ...]
    middle: tuple[str, ...] = ()
    until: Callable[[Any], bool] | None = None
    query: dict[str, str] = attrs.field(factory=dict)  # added to the profile's


def _is(type_name: str) -> Callable[[Any], bool]:
    return lambda msg: isinstance(msg, dict) and msg.get("type") == type_name


TYPICAL: dict[str, Typical] = {
    "speechmatics": Typical(("StartRecognition", "RecognitionStarted"), "AddAudio", ("EndOfStream",),
                            middle=("SetRecognitionConfig", "ForceEndOfUtterance")),
    "voicerun": Typical(("session.update", "session.updated"), "audio.append", ("session.close",)),
    "yourvoic": Typical((), "audio", ("close_request",)),
    "vblaze": Typical((), "audio", ("end_of_audio",)),
    "scriptix": Typical(("start", "listening"), "audio", ("stop",)),
    "deepgram": Typical((), "audio", ("Finalize", "CloseStream"), middle=("KeepAlive", "Configure"),
                        query={"vad_events": "true", "utterance_end_ms": "1000"}),
    "assemblyai": Typical((), "audio", ("Terminate",), middle=("KeepAlive", "UpdateConfiguration", "ForceEndpoint")),
    "openai": Typical(("session.update",), "input_audio_buffer.append", ("input_audio_buffer.commit",),
                      until=_is("conversation.item.input_audio_transcription.completed")),
}


def speech(rate: int) -> bytes:
    """ps_goforward.wav as 16-bit mono PCM at `rate` (OpenAI's audio/pcm is 24 kHz)."""
    with wave.open(str(AUDIO)) as w:
        source_rate = w.getframerate()
        samples = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    if rate != source_rate:
        at = np.arange(int(len(samples) * rate / source_rate)) * source_rate / rate
        samples = np.interp(at, np.arange(len(samples)), samples).astype("<i2")
    return samples.tobytes()


def _audio_frames(profile: Profile, event: str) -> list[Frame]:
    """The typical session's audio, in the frames of the profile's audio event (binary, or base64 in JSON)."""
    example = profile.client[event](Counter())[0]
    if isinstance(example, bytes):
        rate = 16000
    else:
        rate = 24000 if profile.dialect == "openai" else 16000
    data = speech(rate)
    size = int(rate * CHUNK_SECONDS) * 2
    chunks = [data[i:i + size] for i in range(0, len(data), size)]
    if isinstance(example, bytes):
        return list(chunks)
    template = json.loads(example)
    frames = []
    for chunk in chunks:
        frames.append(json.dumps({**template, "audio": base64.b64encode(chunk).decode()}, separators=(",", ":")))
    return frames


class _Client:
    """The reference client's side of one connection: sends chart events' frames, reads every server frame."""

    def __init__(self, ws, profile: Profile):
        self.ws, self.profile = ws, profile
        self.received: list[Frame] = []
        self.sent: list[str] = []  # the chart event of each client frame, in order
        self.count: Counter = Counter()
        self.closed = trio.Event()
        self._new = trio.Event()

    async def read(self) -> None:
        try:
            while True:
                self.received.append(await self.ws.get_message())
                self._new.set()
                self._new = trio.Event()
        except ConnectionClosed:
            self.closed.set()
            self._new.set()

    async def send(self, event: str, frames: list[Frame] | None = None) -> None:
        frames = self.profile.client[event](self.count) if frames is None else frames
        self.count[event] += 1
        for frame in frames:
            await self.ws.send_message(frame)
            self.sent.append(event)

    async def wait_for(self, seen: Callable[[Frame], bool]) -> None:
        checked = 0
        while True:
            for frame in self.received[checked:]:
                if seen(frame):
                    return
            checked = len(self.received)
            if self.closed.is_set():
                raise RuntimeError(f"{self.profile.dialect}: the server closed before the frame awaited")
            await self._new.wait()


async def _play(url: str, name: str, pace: float) -> list[str]:
    """One typical session against the server at `url`: the chart events of the client's frames, in order."""
    profile, typical = PROFILES[name], TYPICAL[name]
    chart = chart_of(name)
    query = {**profile.query, **typical.query}
    target = f"{url}{profile.path}" + ("?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else "")
    audio = _audio_frames(profile, typical.audio)
    async with open_websocket_url(target, extra_headers=[(k.encode(), v.encode())
                                                          for k, v in profile.headers.items()]) as ws:
        client = _Client(ws, profile)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.read)
            with trio.fail_after(60):
                if profile.greeting is not None:
                    await client.wait_for(profile.greeting)
                for event in typical.before:
                    if event in chart.client_events:
                        await client.send(event)
                    else:
                        await client.wait_for(profile.server[event].seen)
                for i, frame in enumerate(audio):
                    if i == len(audio) // 2:
                        for event in typical.middle:
                            await client.send(event)
                    await client.send(typical.audio, [frame])
                    await trio.sleep(CHUNK_SECONDS * pace)
                for event in typical.end:
                    await client.send(event)
                if typical.until is not None:
                    await client.wait_for(lambda f: typical.until(_json(f)))
                    await ws.aclose()
                await client.closed.wait()
            nursery.cancel_scope.cancel()
    return client.sent


def _json(frame: Any) -> Any:
    if isinstance(frame, str):
        try:
            return json.loads(frame)
        except ValueError:
            return frame
    return frame


_BASE64 = re.compile(r"^[A-Za-z0-9+/=]{64,}$")


def shortened(value: Any) -> Any:
    """A frame's JSON with long base64 strings (audio) shortened: "UklGRiQ…" + how many bytes they hold."""
    if isinstance(value, dict):
        return {k: shortened(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shortened(v) for v in value]
    if isinstance(value, str) and _BASE64.match(value):
        try:
            size = len(base64.b64decode(value, validate=True))
        except ValueError:
            return value
        return f"{value[:12]}… <base64: {size} bytes of audio>"
    return value


def shown(frame: Frame) -> dict:
    """A frame as an example file holds it: {"json": ...}, {"text": ...} or {"binary": "<binary: N bytes...>"}."""
    if isinstance(frame, (bytes, bytearray)):
        return {"binary": f"<binary: {len(frame)} bytes{' of audio' if frame else ''}>"}
    msg = _json(frame)
    if isinstance(msg, (dict, list)):
        return {"json": shortened(msg)}
    return {"text": frame}


def answered(frame: Frame) -> dict:
    """A server frame as an example file holds it: its message type, and the frame (shown)."""
    return {"type": message_type(frame), **shown(frame)}


def exchange(logbook: list[dict], sent: list[str], audio_event: str, closed_by: str = "server") -> dict:
    """The session of an example file from its logbook and the chart events of the client's frames."""
    frames: list[dict] = []
    events = iter(sent)
    close = None
    for record in logbook:
        if record["kind"] == "open":
            handshake = {"path": record["path"], "query": record["query"]}
        elif record["kind"] in ("in", "out"):
            frame = payload(record)
            entry = {"t": round(record["t"], 3), "from": "client" if record["kind"] == "in" else "server"}
            if record["kind"] == "in":
                entry["event"] = next(events, "?")
            else:
                entry["type"] = message_type(frame)
            entry.update(shown(frame))
            entry["state"] = record["state"]
            last = frames[-1] if frames else None
            if (entry["from"] == "client" and entry["event"] == audio_event and last is not None
                    and last["from"] == "client" and last["event"] == audio_event):
                last["count"] = last.get("count", 1) + 1
                last["state"] = entry["state"]
                continue
            frames.append(entry)
        elif record["kind"] == "close":
            close = {"code": record["code"], "ending": record["ending"], "rule": record["rule"],
                     "state": record["state"]}
    if close is not None:
        close["by"] = closed_by
    return {"handshake": handshake, "frames": frames, "close": close}


# --- the error paths (sans-IO) ---------------------------------------------------------------------------------


class _Driver:
    """One dialect built from its profile's handshake, driven by chart events as a session would (the sans-IO
    catalogue's way: tests/conformance/test_catalogue.py)."""

    def __init__(self, name: str):
        self.profile = PROFILES[name]
        self.chart = chart_of(name)
        self.dialect = dialect_named(name)(self.profile.handshake())
        self.sent: Counter = Counter()
        self.config: Configure | None = None
        self.dialect.greeting()
        self._note(self.dialect.on_open())

    def _note(self, events: list) -> None:
        for event in events:
            if isinstance(event, Configure):
                self.config = event

    def apply(self, event: str) -> tuple[list[Frame], list]:
        """(the client frames sent, the events the dialect made of them) for one chart event."""
        if event == CLOSE:
            self.dialect.machine.advance(CLOSE)
            return [], []
        if event in self.chart.server_events:
            self.dialect.render(self.profile.server[event].make(self.config))
            return [], []
        frames = self.profile.client[event](self.sent)
        self.sent[event] += 1
        events = [e for frame in frames for e in self.dialect.receive(frame)]
        self._note(events)
        return frames, events


def errors(name: str) -> dict[str, dict]:
    """rule id -> the first forbidden pair breaking it that the profile drives: path, frame, answer, close."""
    out: dict[str, dict] = {}
    for case in cases(name):
        if case.kind != "forbidden" or case.rule.id in out or not runnable(case) or case.event == CLOSE:
            continue
        driver = _Driver(name)
        for event in case.path:
            driver.apply(event)
        frames, events = driver.apply(case.event)
        violations = [e for e in events if isinstance(e, Violation)]
        if not violations or violations[0].rule.id != case.rule.id:
            continue
        answer = driver.dialect.render_violation(violations[0])
        out[case.rule.id] = {"state": case.state, "event": case.event, "path": list(case.path),
                             "frames": [shown(f) for f in frames], "detail": violations[0].detail,
                             "answer": [answered(f) for f in answer], "close": case.rule.close}
    return out


#: Endings the server says nothing for: the connection is already gone, or the client closed it.
SILENT_ENDINGS = ("normal", "dropped", "client_closed")


def endings(name: str) -> dict[str, dict]:
    """ending -> its rule, the frames the session sends for it (from the state audio flows in) and the close
    code, or the HTTP status of a refusal at the upgrade."""
    dialect_class = dialect_named(name)
    own = _own_endings(name)
    out: dict[str, dict] = {}
    for ending in own:
        rule = chart_of(name).ending(ending)
        entry: dict[str, Any] = {"rule": rule.id, "close": rule.close}
        if ending == "unauthorised" and dialect_class.rejects_unauthorised:
            entry["upgrade"] = 401
        elif ending == "busy" and dialect_class.refuses_busy_at_upgrade:
            entry["upgrade"] = dialect_class.busy_status
        else:
            driver = _Driver(name)
            for event in TYPICAL[name].before:
                driver.apply(event)
            entry["answer"] = [answered(f) for f in driver.dialect.render_violation(Violation(rule, ""))]
        out[ending] = entry
    return out


def answers(name: str) -> dict[str, list[dict]]:
    """rule id -> the frames the dialect answers a breach of it with (render_violation, with no detail, in the
    state audio flows in), for every rule of its chart: [] where the vendor sends none (the close says it)."""
    out = {}
    for rule in chart_of(name).rules.values():
        driver = _Driver(name)
        for event in TYPICAL[name].before:
            driver.apply(event)
        out[rule.id] = [answered(f) for f in driver.dialect.render_violation(Violation(rule, ""))]
    return out


def _own_endings(name: str) -> list[str]:
    """The endings the dialect's own chart names (the lifecycle's other endings are on its page)."""
    from stt.statechart import load_chart

    return list(load_chart(name).endings)


# --- messages --------------------------------------------------------------------------------------------------


def _rendered(name: str) -> list[Frame]:
    """The frames the dialect renders for a partial, a final, the speech events and (where its vendor has a
    message for it) the server's shutdown, in a started session."""
    driver = _Driver(name)
    for event in TYPICAL[name].before:
        driver.apply(event)
    words = (Word("go", 0.3, 0.6, 0.9), Word("forward", 0.6, 1.1, 0.9))
    results = (SpeechStarted(0.3), Partial(words, 0.3, 1.1), Final(words, 0.3, 1.1), SpeechStopped(1.4))
    frames: list[Frame] = []
    for result in results:
        try:
            frames += driver.dialect.render(result)
        except (TypeError, AttributeError, ValueError):
            continue
    if driver.dialect.announces_shutdown:
        frames += render_shutting_down(driver.dialect, ShuttingDown(1796688000.0))
    return frames


def messages(name: str, session: dict) -> dict[str, dict]:
    """{"client": {event: example}, "server": {type: example}}, the session's first where it has one."""
    profile, chart = PROFILES[name], chart_of(name)
    client: dict[str, dict] = {}
    server: dict[str, dict] = {}
    for entry in session["frames"]:
        body = {k: v for k, v in entry.items() if k in ("json", "text", "binary")}
        if entry["from"] == "client":
            client.setdefault(entry["event"], {"source": "session", **body})
        else:
            server.setdefault(entry["type"], {"source": "session", **body})
    for event in chart.client_events:
        if event != CLOSE and event not in client and event in profile.client:
            frames = profile.client[event](Counter())
            client[event] = {"source": "profile", **(shown(frames[0]) if frames else {"binary": "<no frame>"})}
    for frame in _rendered(name):
        server.setdefault(message_type(frame), {"source": "rendered", **shown(frame)})
    for event, watch in profile.server.items():
        for type_name, example in server.items():
            frame = example.get("json", example.get("text"))
            raw = json.dumps(frame) if isinstance(frame, (dict, list)) else frame
            if watch.seen is not None and raw is not None and watch.seen(raw):
                example.setdefault("shows", event)
                break
    return {"client": client, "server": server}


# --- recording -------------------------------------------------------------------------------------------------


async def record_sessions(names: list[str], engine: str = "sphinx", pace: float = 1.0,
                          engine_options: dict | None = None) -> dict[str, dict]:
    """name -> the recorded typical session (exchange), one connection each to an in-process server."""
    out: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="stt-teaching-") as tmp:
        directory = Path(tmp)
        done: dict[str, trio.Event] = {}
        token = trio.lowlevel.current_trio_token()

        def finished(record_in: Path, session: str) -> list[Path]:
            trio.from_thread.run_sync(lambda: done.setdefault(session, trio.Event()).set(), trio_token=token)
            return [record_in / f"{session}.jsonl"]

        config = ServerConfig(port=0, engine=engine, decode_workers=1 if engine == "sphinx" else None,
                              engine_options=engine_options or {})
        async with open_server(config, TestModes(record_in=directory, report=finished)) as server:
            url = f"ws://127.0.0.1:{server.port}"
            for name in names:
                before = set(directory.glob("*.jsonl"))
                sent = await _play(url, name, pace)
                with trio.fail_after(10):
                    while not (new := set(directory.glob("*.jsonl")) - before):
                        await trio.sleep(0.01)
                    session = next(iter(new)).stem
                    await done.setdefault(session, trio.Event()).wait()
                out[name] = exchange(read_logbook(directory / f"{session}.jsonl"), sent, TYPICAL[name].audio,
                                     "client" if TYPICAL[name].until is not None else "server")
    return out


def example(name: str, session: dict, engine: str) -> dict:
    """An example file's content, from a recorded typical session."""
    return {
        "format": EXAMPLE_FORMAT,
        "dialect": name,
        "recorded": {"engine": engine, "audio": f"tests/data/{AUDIO.name}", "frame_seconds": CHUNK_SECONDS,
                     "by": "stt diagrams --record"},
        "session": session,
        "messages": messages(name, session),
        "errors": errors(name),
        "endings": endings(name),
        "answers": answers(name),
    }


def dump(content: dict) -> str:
    return json.dumps(content, indent=2, ensure_ascii=False) + "\n"


def record(out_dir: Path | None = None, names: list[str] | None = None, engine: str = "sphinx",
           pace: float = 1.0, engine_options: dict | None = None) -> list[Path]:
    """Record each dialect's typical session and write its example file; the paths written."""
    out_dir = examples_dir() if out_dir is None else out_dir
    names = names or list(TYPICAL)
    sessions = trio.run(functools.partial(record_sessions, names, engine, pace, engine_options))
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name in names:
        path = out_dir / f"{name}.json"
        path.write_text(dump(example(name, sessions[name], engine)), encoding="utf-8")
        written.append(path)
        print(f"wrote {path}", file=sys.stderr)
    return written


__all__ = ["TYPICAL", "answered", "answers", "errors", "endings", "example", "examples_dir", "exchange", "message_type", "messages",
           "record", "record_sessions", "shortened", "shown"]
