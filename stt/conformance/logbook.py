"""A session's logbook: every frame in and out with its time, the dialect chart's state after it, the rules
the client broke, and how the session ended; one JSON object a line (JSONL).

Records (all carry "t", seconds since the connection opened, and "kind"):

    {"kind": "open", "session": ID, "dialect": NAME, "path": "/v2", "query": {...}, "headers": {...},
     "faults": "drop@2s" or "", "state": STATE}
    {"kind": "in" | "out", "n": N, "type": "text", "text": "...", "bytes": B, "state": STATE}
    {"kind": "in" | "out", "n": N, "type": "binary", "base64": "...", "bytes": B, "state": STATE}
        a client frame ("in") also carries "events": the names of the stt.events the dialect made of it, "audio":
        the bytes of audio it carried, and "early": true if it arrived before the session had started (the
        client sent it without waiting for the server's answer to its start message; conformance mode only)
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
"""

from __future__ import annotations

import base64
import json
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Callable, Iterable, Iterator

from stt.events import Audio, AudioFormat
from stt.redaction import REDACTED, SECRET_NAMES, connection_secrets, redact, redact_items, redact_path

#: A connection asks to be recorded (stt serve --conformance DIR --conformance-opt-in) by either, set to 1.
CONFORMANCE_HEADER = "x-stt-conformance"
CONFORMANCE_QUERY = "stt_conformance"


def redacted(items: dict[str, str], secrets: Iterable[str | None] = ()) -> dict[str, str]:
    """stt.redaction.redact_items: the one redaction of the server's logs, logbooks and reports."""
    return redact_items(items, secrets)


class Logbook:
    """Writes one session's records as they happen (`clock` gives the seconds since the connection opened).

    `secret` gives the credential the client presented, once the dialect knows it (in the handshake, or in a
    start message), and `secrets` what else the handshake carried (connection_secrets): they are replaced by
    "<redacted>" wherever they appear, in the path, the query and header values, and text frames, by
    stt.redaction.redact, as in the server's log. `secret_path` is the dialect's pattern of a path that holds
    the key (Scriptix stream mode): that segment is redacted whatever its length. A replay of such a frame sends
    "<redacted>" instead of the key."""

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


@contextmanager
def open_logbook(directory: Path, session: str, dialect, handshake, faults: str,
                 clock: Callable[[], float]) -> Iterator[Logbook]:
    """A logbook at DIR/<session>.jsonl, its open record written; closed when the block exits. Written a line
    at a time, so that what a session has done so far is on disk while it runs."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / f"{session}.jsonl", "w", encoding="utf-8", buffering=1) as file:
        pattern = dialect.secret_path
        logbook = Logbook(file, clock, dialect.credential, secret_path=pattern,
                          secrets=connection_secrets(handshake.path, handshake.query, handshake.headers, pattern))
        logbook.opened(session, dialect.name, handshake.path, handshake.query, handshake.headers, faults,
                       dialect.machine.state)
        yield logbook


def read_logbook(path: str | Path) -> list[dict]:
    """A logbook's records; a torn last line (the server stopped mid-write) is left out."""
    records = []
    with open(path, encoding="utf-8") as file:
        for line in file:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                if line.endswith("\n"):
                    raise ValueError(f"{path}: line {len(records) + 1} is not JSON") from None
    if not records or records[0].get("kind") != "open":
        raise ValueError(f"{path}: a logbook begins with an 'open' record")
    return records


def payload(record: dict) -> str | bytes:
    """The frame an "in" or "out" record holds."""
    return record["text"] if record["type"] == "text" else base64.b64decode(record["base64"])


def client_frames(records: Iterable[dict]) -> Iterator[dict]:
    return (r for r in records if r["kind"] == "in")
