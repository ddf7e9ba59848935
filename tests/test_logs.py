"""Log output (stt.logs): JSON lines with the session's fields, text for people, `auto` choosing by terminal."""

import io
import json
import logging
import sys

import pytest

from stt.logs import JsonFormatter, configure_logging, formatter_for
from tests.helpers import receive_all, session_pair, start_message, wait_until


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def root_logger():
    """The root logger, put back as it was afterwards (configure_logging replaces its handlers)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield root
    root.handlers[:] = handlers
    root.setLevel(level)


def record(message="hello %s", args=("world",), level=logging.INFO, exc_info=None, **extra) -> logging.LogRecord:
    return logging.getLogger("stt.test").makeRecord("stt.test", level, __file__, 1, message, args, exc_info,
                                                    extra=extra)


def test_a_json_line_has_time_level_logger_message_pid_and_the_extra_fields():
    line = JsonFormatter().format(record(session="abc", dialect="speechmatics", close_code=1001))
    assert "\n" not in line
    data = json.loads(line)
    assert data["level"] == "INFO" and data["logger"] == "stt.test" and data["message"] == "hello world"
    assert data["time"].endswith("Z") and "T" in data["time"] and isinstance(data["pid"], int)
    assert (data["session"], data["dialect"], data["close_code"]) == ("abc", "speechmatics", 1001)
    assert "args" not in data and "msg" not in data and "levelno" not in data  # LogRecord's own attributes


def test_a_json_line_carries_the_traceback_and_survives_fields_json_cannot_encode():
    try:
        raise ValueError("boom")
    except ValueError:
        line = JsonFormatter().format(record(level=logging.ERROR, exc_info=sys.exc_info(), thing=object()))
    data = json.loads(line)
    assert "ValueError: boom" in data["exception"] and data["thing"].startswith("<object object")


def test_auto_is_text_on_a_terminal_and_json_elsewhere():
    assert isinstance(formatter_for("auto", io.StringIO()), JsonFormatter)
    assert not isinstance(formatter_for("auto", Terminal()), JsonFormatter)
    assert not isinstance(formatter_for("text", io.StringIO()), JsonFormatter)
    assert isinstance(formatter_for("json", Terminal()), JsonFormatter)
    with pytest.raises(ValueError):
        formatter_for("xml", io.StringIO())


@pytest.mark.parametrize("fmt, stream", [("json", io.StringIO), ("auto", io.StringIO)])
def test_configure_logging_writes_json_lines_at_the_level_asked(root_logger, fmt, stream):
    out = stream()
    configure_logging("warning", fmt, stream=out)
    logging.getLogger("stt.x").info("not shown")
    logging.getLogger("stt.x").warning("shown %d", 1, extra={"session": "s1"})
    lines = out.getvalue().splitlines()
    assert [json.loads(line)["message"] for line in lines] == ["shown 1"]
    assert json.loads(lines[0])["session"] == "s1"


def test_configure_logging_writes_text_on_a_terminal_and_replaces_its_own_handler(root_logger):
    first, out = io.StringIO(), Terminal()
    configure_logging("info", "json", stream=first)
    configure_logging("info", "auto", stream=out)
    logging.getLogger("stt.x").info("plain words")
    assert first.getvalue() == ""
    assert out.getvalue().rstrip().endswith("INFO stt.x: plain words")


async def test_the_session_logs_its_id_dialect_transition_ending_and_close_code(caplog):
    caplog.set_level(logging.INFO, logger="stt.session")
    async with session_pair() as (server, ws):
        await ws.send_message(start_message())
        messages, _ = await receive_all(ws, until="RecognitionStarted")
        session_id = messages[-1]["id"]
        await ws.send_message(b"\x00\x00" * 16000)
        await ws.send_message('{"message":"EndOfStream","last_seq_no":1}')
        await receive_all(ws, until="EndOfTranscript")
        await ws.aclose()
        await wait_until(lambda: not server.sessions)
    opened, closed = [r for r in caplog.records if getattr(r, "session", None) == session_id]
    assert (opened.dialect, opened.path, opened.state) == ("speechmatics", "/v2", "loading")
    assert (closed.dialect, closed.previous_state, closed.state) == ("speechmatics", "connected", "closed")
    assert (closed.ending, closed.rule, closed.close_code, closed.audio_frames) == ("normal", "LC-END-001", 1000, 1)
    line = json.loads(JsonFormatter().format(closed))
    assert line["session"] == session_id and line["close_code"] == 1000 and line["logger"] == "stt.session"
