"""Recording a session (stt.recording): a session nobody records gets the NullRecorder; a recorder given to a
session hears every frame in and out, the declared format, the rules broken and the close, in order; the server
asks its test modes (stt.testmodes) for each connection's recorder; and a logbook's lines are written by a
thread of its own, so that a slow disk does not hold up the event loop."""

from __future__ import annotations

import io
import json
import threading
import time
from contextlib import asynccontextmanager

import attrs
import pytest
import trio

from stt.dialects.base import Handshake
from stt.engines.inline_host import InlineEngine
from stt.engines.scripted import ScriptedRecognizer
from stt.recording import NULL_RECORDER, Logbook, NullRecorder, LogbookWriter, open_logbook
from stt.server import Server, ServerConfig
from stt.session import SessionLimits
from stt.testmodes import TestModes
from tests.helpers import connect_in_memory, receive_all, session_pair, silence, start_message


@attrs.define
class ListeningRecorder:
    """A SessionRecorder that keeps every call made to it, in order."""

    calls: list = attrs.field(factory=list)
    marks_early_frames: bool = False

    def frame_in(self, frame, state, events=(), *, early=False):
        self.calls.append(("in", frame, state, [type(e).__name__ for e in events], early))

    def frame_out(self, frame, state):
        self.calls.append(("out", frame, state))

    def configured(self, audio):
        self.calls.append(("configured", audio.encoding, audio.sample_rate))

    def violation(self, rule, detail):
        self.calls.append(("violation", rule))

    def closed(self, code, ending, rule, detail, state):
        self.calls.append(("closed", code, ending, rule, state))

    def of(self, kind: str) -> list:
        return [c for c in self.calls if c[0] == kind]


class Modes:
    """Test modes that give every connection `recorder` (and no fault plan), and note what the server asked."""

    def __init__(self, recorder):
        self._recorder = recorder
        self.asked: list = []
        self.handshake = None

    def for_connection(self, handshake):
        self.asked.append("for_connection")
        self.handshake = handshake
        return self

    def fault_plan(self, chart):
        self.asked.append("fault_plan")
        return TestModes().for_connection(self.handshake).fault_plan(chart)

    @asynccontextmanager
    async def recorder(self, session, dialect, faults):
        self.asked.append("recorder")
        yield self._recorder

    async def finished(self, session):
        self.asked.append("finished")


async def session_over(modes: Modes) -> None:
    with trio.fail_after(5):
        while "finished" not in modes.asked:
            await trio.sleep(0.01)


def scripted() -> InlineEngine:
    return InlineEngine("scripted", 16000, ScriptedRecognizer)


async def test_a_session_without_test_modes_gets_the_null_recorder():
    async with session_pair() as (server, ws):
        await ws.send_message(start_message())
        await receive_all(ws, until="RecognitionStarted")
        (session,) = server.sessions
        assert session.recorder is NULL_RECORDER and isinstance(session.recorder, NullRecorder)
        assert not session.faults  # and no fault plan
        await ws.send_message('{"message":"EndOfStream","last_seq_no":0}')
        await receive_all(ws, until="EndOfTranscript")


async def test_a_sessions_frames_reach_the_recorder_the_servers_test_modes_give_it():
    recorder = ListeningRecorder()
    modes = Modes(recorder)
    server = Server(ServerConfig(limits=SessionLimits(close_grace=0.1)), scripted(), modes)
    audio = silence(0.2)
    async with trio.open_nursery() as nursery:
        ws = await connect_in_memory(server, nursery, "/v2?lang=en")
        await ws.send_message(start_message())
        await ws.send_message(audio)
        await ws.send_message('{"message":"EndOfStream","last_seq_no":1}')
        messages, code = await receive_all(ws)  # to the server's close
        await session_over(modes)
        nursery.cancel_scope.cancel()

    assert modes.asked == ["for_connection", "fault_plan", "recorder", "finished"]
    ins = recorder.of("in")
    assert [c[1] for c in ins] == [start_message(), audio, '{"message":"EndOfStream","last_seq_no":1}']
    assert [c[3] for c in ins] == [["Configure"], ["Audio"], ["EndOfAudio"]]
    assert not any(c[4] for c in ins)  # this recorder does not ask for early frames to be marked
    outs = [json.loads(c[1]) for c in recorder.of("out")]
    assert outs == messages  # every frame the client got, in order, and nothing else
    assert recorder.of("configured") == [("configured", "pcm_s16le", 16000)]
    assert messages[-1]["message"] == "EndOfTranscript"
    assert code == 1000 and recorder.calls[-1] == ("closed", 1000, "normal", "LC-END-001", "closed")
    assert [c[0] for c in recorder.calls].count("closed") == 1


async def test_a_rule_the_client_breaks_reaches_the_recorder_before_the_close():
    recorder = ListeningRecorder()
    modes = Modes(recorder)
    server = Server(ServerConfig(), scripted(), modes)
    async with trio.open_nursery() as nursery:
        ws = await connect_in_memory(server, nursery)
        await ws.send_message('{"message":"EndOfStream","last_seq_no":0}')  # before StartRecognition
        messages, code = await receive_all(ws)
        await session_over(modes)
        nursery.cancel_scope.cancel()
    (violation,) = recorder.of("violation")
    assert messages[-1]["message"] == "Error" and code is not None and code != 1000
    kinds = [c[0] for c in recorder.calls]
    assert kinds.index("violation") < kinds.index("closed") == len(kinds) - 1
    assert recorder.calls[-1][2] == "violation" and recorder.calls[-1][3] == violation[1]


# --- the logbook's writer thread ------------------------------------------------------------------------------


class SlowFile(io.StringIO):
    """A file each write of which takes `seconds` (a slow disk), noting the thread that wrote."""

    def __init__(self, seconds: float):
        super().__init__()
        self.seconds, self.threads = seconds, set()

    def write(self, text):
        time.sleep(self.seconds)
        self.threads.add(threading.get_ident())
        return super().write(text)

    def close(self):
        self.closed_value = self.getvalue()
        super().close()


async def test_a_logbooks_lines_are_written_off_the_event_loop_in_order():
    file = SlowFile(0.02)
    writer = LogbookWriter(file)
    start = time.monotonic()
    for n in range(20):
        writer.write(f"{n}\n")
    queued = time.monotonic() - start
    await writer.aclose()
    assert queued < 0.2  # the 20 writes take 0.4 s of the disk's time; the loop only queued them
    assert file.closed_value == "".join(f"{n}\n" for n in range(20))
    assert threading.get_ident() not in file.threads


class FullDisk(io.StringIO):
    def write(self, text):
        raise OSError(28, "No space left on device")


async def test_a_logbook_that_cannot_be_written_says_so():
    writer = LogbookWriter(FullDisk())
    writer.write("one\n")
    with pytest.raises(OSError, match="No space"):
        for _ in range(100):  # the failure comes back with a later write, once the thread has met it
            writer.write("more\n")
            await trio.sleep(0.01)
    with pytest.raises(OSError, match="No space"):
        await writer.aclose()


async def test_open_logbook_writes_the_open_record_and_every_line_before_it_returns(tmp_path):
    handshake = Handshake.from_target("/v2?stt_conformance=1", [("authorization", "Bearer sk-abcdef123")])

    class Dialect:
        name, secret_path = "speechmatics", None
        machine = attrs.make_class("Machine", {"state": attrs.field(default="awaiting_start")})()

        @staticmethod
        def credential():
            return "sk-abcdef123"

    async with open_logbook(tmp_path / "sub", "s-1", Dialect, handshake, "", lambda: 0.0) as logbook:
        assert isinstance(logbook, Logbook) and logbook.marks_early_frames
        assert (tmp_path / "sub" / "s-1.jsonl").exists()  # made before the session runs
        logbook.frame_out('{"message":"RecognitionStarted"}', "recognising")
        logbook.closed(1000, "normal", "SM-END", "", "closed")
    lines = (tmp_path / "sub" / "s-1.jsonl").read_text().splitlines()
    assert [json.loads(line)["kind"] for line in lines] == ["open", "out", "close"]
    assert "sk-abcdef123" not in "".join(lines)
