"""Reading a session's logbook (written by stt.recording, `stt serve --conformance DIR`: its docstring lists the
records): its records, a frame's payload, the client's frames. The writer is re-exported here for the kit.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Iterable, Iterator

from stt.recording import CONFORMANCE_HEADER, CONFORMANCE_QUERY, Logbook, open_logbook
from stt.redaction import REDACTED, SECRET_NAMES, redact_items


def redacted(items: dict[str, str], secrets: Iterable[str | None] = ()) -> dict[str, str]:
    """stt.redaction.redact_items: the one redaction of the server's logs, logbooks and reports."""
    return redact_items(items, secrets)


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


__all__ = ["CONFORMANCE_HEADER", "CONFORMANCE_QUERY", "REDACTED", "SECRET_NAMES", "Logbook", "client_frames",
           "open_logbook", "payload", "read_logbook", "redacted"]
