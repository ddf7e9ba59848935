"""The explorer's live feed: what every session of the server does, as the session's recorder hook tells it
(stt.recording.SessionRecorder; stt.testmodes.TestModes.watch plugs `Hub.watch` in), kept per session and pushed
to the explorer's Server-Sent Events subscribers.

Everything is bounded: a session keeps its last HISTORY records (a late watcher gets those first), the hub keeps
ENDED_KEPT sessions after they end, and each subscriber (`Feed`) holds at most QUEUE records it has not read:
past them records are dropped, and the subscriber is told how many by a {"kind": "dropped"} marker, so that a
client that does not read costs no more memory than that. A frame's text is kept without the session's secrets
(stt.redaction), long JSON strings (base64 audio) shortened, and at most MAX_TEXT characters; a binary frame
only as its size.

Records (each with "t", seconds since the session opened, and "session"):

    {"kind": "open", "dialect", "path", "query", "faults", "state", "tag"}
    {"kind": "in" | "out", "n", "type": "text", "text", "bytes", "state"}  (a client frame: "events", "audio")
    {"kind": "in" | "out", "n", "type": "binary", "bytes", "state"}
    {"kind": "move", "from", "event", "to", "server"}  the chart moved (before the frame that moved it, if any)
    {"kind": "configure", "format": {...}}
    {"kind": "violation", "rule", "detail", "frame", "requirement", "error", "message", "close"}
    {"kind": "close", "code", "ending", "rule", "detail", "state", "requirement", "error", "message"}
    {"kind": "ended"}   the session is over: nothing more comes
"""

from __future__ import annotations

import collections
import json
import time
from contextlib import contextmanager
from typing import Iterable, Iterator

import trio

from stt.events import Audio, AudioFormat
from stt.redaction import MIN_SECRET, REDACTED, connection_secrets, redact, redact_items, redact_path

HISTORY = 500  # records kept per session
ENDED_KEPT = 20  # sessions kept after their end
QUEUE = 512  # records a subscriber may have unread
MAX_TEXT = 4000  # characters of a text frame kept
LONG_STRING = 120  # a JSON string longer than this is shortened (base64 audio)


class Feed:
    """One subscriber's records, in order, at most `limit` unread: past them, records are counted as dropped and
    `get` says so by a marker where they would have been."""

    def __init__(self, limit: int = QUEUE):
        self.limit = limit
        self._items: collections.deque[dict] = collections.deque()
        self.dropped = 0
        self.finished = False  # nothing more will come
        self._ready = trio.Event()

    def put(self, record: dict) -> None:
        if self.finished:
            return
        if len(self._items) >= self.limit or self.dropped:
            self.dropped += 1  # once dropping, until the reader has caught up: the marker stands where they were
        else:
            self._items.append(record)
        self._ready.set()

    def finish(self) -> None:
        self.finished = True
        self._ready.set()

    def unread(self) -> int:
        return len(self._items)

    async def get(self) -> list[dict]:
        """The records that came since the last call (waiting for one), a dropped marker after those queued
        before the drop; [] once finished and read."""
        while not self._items and not self.dropped and not self.finished:
            self._ready = trio.Event()
            await self._ready.wait()
        records = list(self._items)
        self._items.clear()
        if self.dropped:
            records.append({"kind": "dropped", "count": self.dropped})
            self.dropped = 0
        return records


def shorten(text: str) -> str:
    """A frame's text as the explorer shows it: long JSON strings (base64 audio) cut to their start and length,
    at most MAX_TEXT characters."""
    if len(text) > 2 * LONG_STRING and text.lstrip()[:1] in ("{", "["):
        try:
            text = json.dumps(_shortened(json.loads(text)), ensure_ascii=False)
        except ValueError:
            pass
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + f"… ({len(text)} characters)"


def _shortened(value):
    if isinstance(value, str) and len(value) > LONG_STRING:
        return f"{value[:40]}… ({len(value)} characters)"
    if isinstance(value, dict):
        return {k: _shortened(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shortened(v) for v in value]
    return value


class Watched:
    """One session as the explorer sees it: the recorder the session tells, its last records, and the feeds of
    those who watch it."""

    marks_early_frames = False  # the explorer changes nothing in how the session reads its frames

    def __init__(self, hub: Hub, session: str, dialect, handshake, faults: str, tag: str | None):
        self.hub, self.id, self.dialect, self.tag = hub, session, dialect.name, tag
        self.chart = dialect.chart
        self._credential = dialect.credential
        pattern = dialect.secret_path
        self._secrets = connection_secrets(handshake.path, handshake.query, handshake.headers, pattern)
        self.path = redact_path(handshake.path, pattern, self._secrets)
        self.state = dialect.machine.state
        self.frames = 0
        self.opened = time.time()
        self.close_code: int | None = None
        self.ended = False
        self.history: collections.deque[dict] = collections.deque(maxlen=HISTORY)
        self.feeds: set[Feed] = set()
        self._clock = trio.current_time()
        self._machine = dialect.machine
        self._machine.moves.append(self._machine_moved)
        self._add({"kind": "open", "dialect": self.dialect, "path": self.path,
                   "query": redact_items(handshake.query, self._secrets), "faults": faults, "state": self.state,
                   "tag": tag})

    def summary(self) -> dict:
        return {"session": self.id, "dialect": self.dialect, "path": self.path, "state": self.state,
                "frames": self.frames, "opened": round(self.opened, 3), "ended": self.ended,
                "close": self.close_code, "tag": self.tag}

    def _add(self, record: dict) -> None:
        record = {"t": round(trio.current_time() - self._clock, 3), "session": self.id, **record}
        self.history.append(record)
        for feed in self.feeds:
            feed.put(record)

    def _moved(self, state: str) -> None:
        if state != self.state:
            self.state = state
            self.hub.announce(self)

    def attach(self, feed: Feed) -> None:
        """`feed` gets the records kept so far, then each as it comes (and the end, once the session ended)."""
        for record in self.history:
            feed.put(record)
        if self.ended:  # its history ends with its "ended"
            feed.finish()
        else:
            self.feeds.add(feed)

    def _rule(self, rule_id: str) -> dict:
        rule = self.chart.rules.get(rule_id)
        if rule is None:
            return {}
        return {"requirement": rule.requirement, "error": rule.error or rule.warning, "message": rule.message,
                "close": rule.close}

    def _scrub(self, text: str) -> str:
        return redact(text, (*self._secrets, self._credential()))

    def _shown(self, text: str) -> str:
        """A frame's text as the feed keeps it: the known secrets out of the whole of it, then shortened, then
        the rest of the redaction (NAME=VALUE of a credential's name), which is costly over kilobytes of base64
        and need only see what is kept: a value that is kept at all is kept with the NAME= before it."""
        for secret in (*self._secrets, self._credential()):
            if secret and len(secret) >= MIN_SECRET:
                text = text.replace(secret, REDACTED)
        return self._scrub(shorten(text))

    # --- SessionRecorder ---------------------------------------------------------------------------------

    def _frame(self, direction: str, frame: str | bytes, state: str) -> dict:
        self.frames += 1
        if isinstance(frame, str):
            return {"kind": direction, "n": self.frames, "type": "text", "text": self._shown(frame),
                    "bytes": len(frame.encode()), "state": state}
        return {"kind": direction, "n": self.frames, "type": "binary", "bytes": len(frame), "state": state}

    def frame_in(self, frame: str | bytes, state: str, events: Iterable[object] = (), *,
                 early: bool = False) -> None:
        events = list(events)
        record = self._frame("in", frame, state)
        record["events"] = [type(e).__name__ for e in events]
        record["audio"] = sum(len(e.data) for e in events if isinstance(e, Audio))
        self._add(record)
        self._moved(state)

    def frame_out(self, frame: str | bytes, state: str) -> None:
        self._add(self._frame("out", frame, state))
        self._moved(state)

    def configured(self, audio: AudioFormat) -> None:
        self._add({"kind": "configure", "format": {"encoding": audio.encoding, "sample_rate": audio.sample_rate,
                                                   "channels": audio.channels}})

    def violation(self, rule: str, detail: str) -> None:
        self._add({"kind": "violation", "rule": rule, "detail": self._scrub(detail), **self._rule(rule),
                   "frame": self.frames})

    def closed(self, code: int, ending: str, rule: str, detail: str, state: str) -> None:
        self.close_code = code
        self._add({"kind": "close", "code": code, "ending": ending, "rule": rule, "detail": self._scrub(detail),
                   "state": state, **{k: v for k, v in self._rule(rule).items() if k != "close"}})
        self._moved(state)

    def _machine_moved(self, move) -> None:
        """The dialect's chart moved (a client event, or a server event that no frame carries)."""
        self._add({"kind": "move", "from": move.source, "event": move.event, "to": move.target,
                   "server": move.event in self.chart.server_events})
        self._moved(move.target)

    def finish(self) -> None:
        if self._machine_moved in self._machine.moves:
            self._machine.moves.remove(self._machine_moved)
        self.ended = True
        self._add({"kind": "ended"})
        for feed in self.feeds:
            feed.finish()
        self.feeds.clear()


class Hub:
    """Every session the server runs (and the last ENDED_KEPT that ended), and who watches them: `watch` is the
    recorder hook (stt.testmodes.Watch); `subscribe` gives a feed of the session list (every session's summary
    as it opens, changes state and ends), of one session, or of the session that will open with a tag."""

    def __init__(self):
        self.sessions: collections.OrderedDict[str, Watched] = collections.OrderedDict()
        self.list_feeds: set[Feed] = set()
        self.waiting: dict[str, set[Feed]] = {}  # tag -> feeds waiting for the session tagged so

    @contextmanager
    def watch(self, session: str, dialect, handshake, faults: str, tag: str | None) -> Iterator[Watched]:
        watched = Watched(self, session, dialect, handshake, faults, tag)
        self.sessions[session] = watched
        self.announce(watched)
        for feed in self.waiting.pop(tag, set()) if tag else ():
            watched.attach(feed)
        try:
            yield watched
        finally:
            watched.finish()
            self.announce(watched)
            ended = [s for s in self.sessions.values() if s.ended]
            for old in ended[:max(0, len(ended) - ENDED_KEPT)]:
                del self.sessions[old.id]

    def announce(self, watched: Watched) -> None:
        record = {"kind": "session", **watched.summary()}
        for feed in self.list_feeds:
            feed.put(record)

    def summaries(self) -> list[dict]:
        return [s.summary() for s in self.sessions.values()]

    @contextmanager
    def subscribe(self, *, session: str | None = None, tag: str | None = None) -> Iterator[Feed | None]:
        """A feed while the block runs: of `session`, of the session tagged `tag` (which may open later), or of
        the session list; None for a session the hub does not know."""
        feed = Feed()
        if session is None and tag is None:
            for summary in self.summaries():
                feed.put({"kind": "session", **summary})
            self.list_feeds.add(feed)
        else:
            watched = self.sessions.get(session) if session is not None else next(
                (s for s in reversed(self.sessions.values()) if s.tag == tag), None)
            if watched is not None:
                watched.attach(feed)
            elif session is not None:
                yield None
                return
            else:
                self.waiting.setdefault(tag, set()).add(feed)
        try:
            yield feed
        finally:
            feed.finish()
            self.list_feeds.discard(feed)
            for watched in self.sessions.values():
                watched.feeds.discard(feed)
            if tag is not None and tag in self.waiting:
                self.waiting[tag].discard(feed)
                if not self.waiting[tag]:
                    del self.waiting[tag]


__all__ = ["ENDED_KEPT", "HISTORY", "MAX_TEXT", "QUEUE", "Feed", "Hub", "Watched", "shorten"]
