"""Log output: human text on a terminal, JSON lines for log collectors.

A JSON line carries `time` (UTC, ISO 8601, milliseconds), `level`, `logger`, `message`, `pid`, and every field
the call site passed with `extra=` (the session logs its id, dialect, lifecycle transition, ending and close
code that way), plus `exception` when there is a traceback:

    {"time":"2025-01-31T12:00:00.123Z","level":"INFO","logger":"stt.session","message":"session … closed 1000: …",
     "pid":4242,"session":"…","dialect":"speechmatics","state":"closed","previous_state":"connected",
     "ending":"normal","rule":"LC-END-001","close_code":1000}

No secret reaches a log line: the call sites redact what they know the connection's key to be (stt.redaction:
the session's path, details and endings), and both formats pass every message, field and traceback through
stt.redaction.redact once more, which hides the value of any credential's NAME=VALUE (token=, api_key=, ...)
whatever logged it.
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
from typing import TextIO

from stt.redaction import redact

LOG_FORMATS = ("auto", "json", "text")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

#: The attributes every LogRecord has; anything else on a record came from `extra=`.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc)
            .isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
            "pid": record.process,
        }
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRIBUTES and key not in line:
                line[key] = redact(value) if isinstance(value, str) else value
        if record.exc_info:
            line["exception"] = redact(self.formatException(record.exc_info))
        elif record.exc_text:
            line["exception"] = redact(record.exc_text)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str, ensure_ascii=False, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    """TEXT_FORMAT, every line (the traceback too) passed through stt.redaction.redact."""

    def __init__(self):
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def formatter_for(fmt: str, stream: TextIO) -> logging.Formatter:
    """`json`, `text`, or `auto`: text when `stream` is a terminal, JSON lines otherwise."""
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log format {fmt!r} is not one of {', '.join(LOG_FORMATS)}")
    if fmt == "auto":
        fmt = "text" if _is_terminal(stream) else "json"
    return JsonFormatter() if fmt == "json" else TextFormatter()


def configure_logging(level: str | int = "info", fmt: str = "auto", stream: TextIO | None = None) -> logging.Handler:
    """Send every log record at `level` or above to `stream` (default: stderr) in format `fmt`; replaces the
    root logger's handlers, so calling it again reconfigures. Returns the handler it installed."""
    stream = stream if stream is not None else sys.stderr
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter_for(fmt, stream))
    level = level.upper() if isinstance(level, str) else level
    if level not in ("DEBUG", logging.DEBUG):
        handler.addFilter(only_stt_below_warning)  # faster-whisper logs a line per decode, httpx one per request
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    return handler


def only_stt_below_warning(record: logging.LogRecord) -> bool:
    """A handler filter: other libraries' records pass from WARNING up; stt's own at every level. (--log-level
    debug shows every library's.)"""
    return record.levelno >= logging.WARNING or record.name == "stt" or record.name.startswith("stt.")


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


__all__ = ["LOG_FORMATS", "JsonFormatter", "TextFormatter", "configure_logging", "formatter_for"]
