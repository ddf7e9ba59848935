"""Recording a session: what the session tells a recorder (`SessionRecorder`: every frame in and out with the
dialect's state after it, the rules the client broke, the declared audio format, how the session ended), the
recorder a session gets when nothing records it (`NullRecorder`), and the one that writes it all down: the
session's logbook (`Logbook`, `open_logbook`; `stt serve --conformance DIR`), one JSON object a line (JSONL).
The conformance kit (stt.conformance) reads logbooks; this module, below it, only writes them.

Records (all carry "t", seconds since the connection opened, and "kind"):

    {"kind": "open", "session": ID, "dialect": NAME, "path": "/v2", "query": {...}, "headers": {...},
     "faults": "drop@2s" or "", "state": STATE}
    {"kind": "in" | "out", "n": N, "type": "text", "text": "...", "bytes": B, "state": STATE}
    {"kind": "in" | "out", "n": N, "type": "binary", "base64": "...", "bytes": B, "state": STATE}
        a client frame ("in") also carries "events": the names of the stt.events the dialect made of it, "audio":
        the bytes of audio it carried, and "early": true if it arrived before the session had started (the
        client sent it without waiting for the server's answer to its start message; recorded sessions only)
    {"kind": "configure", "format": {"encoding": "pcm_s16le" or "file" ..., "sample_rate": R, "channels": C}}
        the audio format the client declared (from its start message, or its handshake)
    {"kind": "violation", "rule": RULE-ID, "detail": "...", "frame": N or null}
    {"kind": "close", "code": 1000, "ending": ENDING, "rule": RULE-ID, "detail": "...", "state": STATE}

"n" numbers the frames of both directions together, from 1; a violation's "frame" is the client frame that broke
the rule (null: none had come). How the session ended (an idle timeout, the client's close) is in the close
record: its ending (stt.statechart.ENDINGS, "violation" or "fault") and the rule the chart names for it.
Headers are kept without credentials (Authorization and the like are replaced by "<redacted>"); a key in the
query string is redacted the same way, and so is the key the dialect found wherever else it appears (a
Scriptix stream-mode path, a start message).

A logbook's lines are written by a thread of its own (`LogbookWriter`), off the event loop, through a bounded
queue (LOGBOOK_QUEUE_LINES): the event loop only formats a line and queues it. Only a disk so slow that the queue
fills holds the loop up, as the synchronous writes of a line-buffered file always did.
"""

from __future__ import annotations

import base64
import json
import queue
import threading
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO, AsyncIterator, Callable, Iterable, Protocol

import trio

from stt.events import Audio, AudioFormat
from stt.redaction import connection_secrets, redact, redact_items, redact_path

#: A connection asks to be recorded (stt serve --conformance DIR --conformance-opt-in) by either, set to 1.
CONFORMANCE_HEADER = "x-stt-conformance"
CONFORMANCE_QUERY = "stt_conformance"

#: Lines a logbook's writer thread may have queued, not yet on disk; past them, the session waits for the disk.
LOGBOOK_QUEUE_LINES = 1024


class SessionRecorder(Protocol):
    """What a session tells whoever records it (stt.session.Session calls these, always: NullRecorder does
    nothing with them)."""

    #: The session peeks for a client frame that comes before the session has started, so that it is recorded
    #: as "early" (the frame is served all the same, once the session has started).
    marks_early_frames: bool

    def frame_in(self, frame: str | bytes, state: str, events: Iterable[object] = (), *,
                 early: bool = False) -> None: ...

    def frame_out(self, frame: str | bytes, state: str) -> None: ...

    def configured(self, audio: AudioFormat) -> None: ...

    def violation(self, rule: str, detail: str) -> None: ...

    def closed(self, code: int, ending: str, rule: str, detail: str, state: str) -> None: ...


class NullRecorder:
    """The recorder of a session nobody records: it keeps nothing."""

    marks_early_frames = False

    def frame_in(self, frame: str | bytes, state: str, events: Iterable[object] = (), *,
                 early: bool = False) -> None:
        pass

    def frame_out(self, frame: str | bytes, state: str) -> None:
        pass

    def configured(self, audio: AudioFormat) -> None:
        pass

    def violation(self, rule: str, detail: str) -> None:
        pass

    def closed(self, code: int, ending: str, rule: str, detail: str, state: str) -> None:
        pass


NULL_RECORDER = NullRecorder()


class FanOut:
    """Several recorders as one (a logbook and the explorer's live feed): each is told everything, in order."""

    def __init__(self, *recorders: SessionRecorder):
        self.recorders = recorders
        self.marks_early_frames = any(r.marks_early_frames for r in recorders)

    def frame_in(self, frame: str | bytes, state: str, events: Iterable[object] = (), *,
                 early: bool = False) -> None:
        events = tuple(events)
        for recorder in self.recorders:
            recorder.frame_in(frame, state, events, early=early)

    def frame_out(self, frame: str | bytes, state: str) -> None:
        for recorder in self.recorders:
            recorder.frame_out(frame, state)

    def configured(self, audio: AudioFormat) -> None:
        for recorder in self.recorders:
            recorder.configured(audio)

    def violation(self, rule: str, detail: str) -> None:
        for recorder in self.recorders:
            recorder.violation(rule, detail)

    def closed(self, code: int, ending: str, rule: str, detail: str, state: str) -> None:
        for recorder in self.recorders:
            recorder.closed(code, ending, rule, detail, state)


class Logbook:
    """Writes one session's records as they happen (`clock` gives the seconds since the connection opened) to
    `file` (anything with write and flush: a file, or open_logbook's writer thread).

    `secret` gives the credential the client presented, once the dialect knows it (in the handshake, or in a
    start message), and `secrets` what else the handshake carried (connection_secrets): they are replaced by
    "<redacted>" wherever they appear, in the path, the query and header values, and text frames, by
    stt.redaction.redact, as in the server's log. `secret_path` is the dialect's pattern of a path that holds
    the key (Scriptix stream mode): that segment is redacted whatever its length. A replay of such a frame sends
    "<redacted>" instead of the key."""

    marks_early_frames = True

    def __init__(self, file: IO[str], clock, secret: Callable[[], str | None] = lambda: None, *,
                 secrets: Iterable[str] = (), secret_path=None):
        self._file, self._clock, self._secret = file, clock, secret
        self._secrets, self._secret_path = tuple(secrets), secret_path
        self.frames = 0
        self._last_in: int | None = None

    def _write(self, record: dict) -> None:
        self._file.write(json.dumps({"t": round(self._clock(), 6), **record}, ensure_ascii=False) + "\n")

    def opened(self, session: str, dialect: str, path: str, query: dict, headers: dict, faults: str,
               state: str) -> None:
        secrets = self._known()
        self._write({"kind": "open", "session": session, "dialect": dialect,
                     "path": redact_path(path, self._secret_path, secrets),
                     "query": redact_items(query, secrets), "headers": redact_items(headers, secrets),
                     "faults": faults, "state": state})

    def _known(self) -> tuple[str | None, ...]:
        return (*self._secrets, self._secret())

    def _scrub(self, text: str) -> str:
        return redact(text, self._known())

    def frame(self, direction: str, frame: str | bytes, state: str, events: Iterable[object] = (), *,
              early: bool = False) -> int:
        self.frames += 1
        record = {"kind": direction, "n": self.frames}
        if isinstance(frame, str):
            record.update(type="text", text=self._scrub(frame), bytes=len(frame.encode()))
        else:
            record.update(type="binary", base64=base64.b64encode(frame).decode("ascii"), bytes=len(frame))
        record["state"] = state
        if direction == "in":
            events = list(events)
            record["events"] = [type(e).__name__ for e in events]
            record["audio"] = sum(len(e.data) for e in events if isinstance(e, Audio))
            if early:
                record["early"] = True
            self._last_in = self.frames
        self._write(record)
        return self.frames

    def frame_in(self, frame: str | bytes, state: str, events: Iterable[object] = (), *,
                 early: bool = False) -> None:
        self.frame("in", frame, state, events, early=early)

    def frame_out(self, frame: str | bytes, state: str) -> None:
        self.frame("out", frame, state)

    def configured(self, audio: AudioFormat) -> None:
        self._write({"kind": "configure", "format": {"encoding": audio.encoding, "sample_rate": audio.sample_rate,
                                                     "channels": audio.channels}})

    def violation(self, rule: str, detail: str) -> None:
        """The client broke `rule`: with the last client frame, which broke it (None: before any)."""
        self._write({"kind": "violation", "rule": rule, "detail": self._scrub(detail), "frame": self._last_in})

    def closed(self, code: int, ending: str, rule: str, detail: str, state: str) -> None:
        self._write({"kind": "close", "code": code, "ending": ending, "rule": rule, "detail": self._scrub(detail),
                     "state": state})
        self._file.flush()


_DONE = object()  # the end of a LogbookWriter's lines


class LogbookWriter:
    """A file written by a thread of its own: `write` queues a line (at most LOGBOOK_QUEUE_LINES waiting: then
    it waits for the disk), the thread writes each and flushes whenever the queue runs dry, so that what a
    session has done so far is on disk while it runs. A failure to write (a full disk) is raised by the next
    write, or by close."""

    def __init__(self, file: IO[str], lines: int = LOGBOOK_QUEUE_LINES):
        self._file = file
        self._lines: queue.Queue = queue.Queue(lines)
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"logbook {getattr(file, 'name', '')}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (line := self._lines.get()) is not _DONE:
            if self._failure is not None:
                continue  # drain the queue, so that no write waits on it
            try:
                self._file.write(line)
                if self._lines.empty():
                    self._file.flush()
            except BaseException as exc:
                self._failure = exc

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure

    def write(self, line: str) -> None:
        self._raise_failure()
        self._lines.put(line)

    def flush(self) -> None:
        pass  # the thread flushes whenever it has written what was queued

    async def aclose(self) -> None:
        """Wait (in a worker thread: the event loop goes on) until every queued line is written, then close."""
        self._lines.put(_DONE)
        await trio.to_thread.run_sync(self._thread.join)
        try:
            self._file.close()
        finally:
            self._raise_failure()


@asynccontextmanager
async def open_logbook(directory: Path, session: str, dialect, handshake, faults: str,
                       clock: Callable[[], float]) -> AsyncIterator[Logbook]:
    """A logbook at DIR/<session>.jsonl, its open record written; written to the end and closed when the block
    exits. The file is made and written in threads, off the event loop (LogbookWriter)."""

    def create() -> IO[str]:
        directory.mkdir(parents=True, exist_ok=True)
        return open(directory / f"{session}.jsonl", "w", encoding="utf-8")

    writer = LogbookWriter(await trio.to_thread.run_sync(create))
    try:
        pattern = dialect.secret_path
        logbook = Logbook(writer, clock, dialect.credential, secret_path=pattern,
                          secrets=connection_secrets(handshake.path, handshake.query, handshake.headers, pattern))
        logbook.opened(session, dialect.name, handshake.path, handshake.query, handshake.headers, faults,
                       dialect.machine.state)
        yield logbook
    finally:
        with trio.CancelScope(shield=True):  # the lines queued so far reach the disk, however the session ended
            await writer.aclose()


__all__ = ["CONFORMANCE_HEADER", "CONFORMANCE_QUERY", "FanOut", "Logbook", "LogbookWriter", "NULL_RECORDER", "NullRecorder",
           "SessionRecorder", "open_logbook"]
