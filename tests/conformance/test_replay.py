"""`stt replay`: a hand-written Speechmatics logbook sent again to an in-process server with the scripted engine;
what the server answers is printed a frame a line, the timing is kept (or dropped at speed 0), and the exit
status says whether the session ended as recorded."""

import argparse
import base64
import json
import socket

import trio

from stt.conformance.logbook import REDACTED
from stt.conformance.replay import replay, replay_and_compare, replay_command, replay_url
from stt.session import SessionLimits
from tests.helpers import running_server, silence, start_message

FRAME = silence(0.02)  # 640 bytes: 20 ms at 16 kHz


def open_record(path="/v2", query=None) -> dict:
    return {"t": 0.0, "kind": "open", "session": "s-1", "dialect": "speechmatics", "path": path,
            "query": query or {}, "headers": {"host": "127.0.0.1:9000", "authorization": REDACTED},
            "faults": "", "state": "awaiting_start"}


def logbook(gap=0.02, audio_frames=3, end=True, close=None, path="/v2", query=None, first=None) -> list[dict]:
    """A session as `stt serve --conformance` writes it (the server's frames left out: a replay sends only
    the client's): StartRecognition, audio_frames of silence `gap` seconds apart, EndOfStream, the close."""
    records, n, t = [open_record(path, query)], 0, 0.01

    def frame(data, state):
        nonlocal n, t
        n += 1
        if isinstance(data, str):
            record = {"type": "text", "text": data, "bytes": len(data.encode())}
        else:
            record = {"type": "binary", "base64": base64.b64encode(data).decode(), "bytes": len(data)}
        records.append({"t": round(t, 6), "kind": "in", "n": n, **record, "state": state})
        t += gap

    if first is not None:
        frame(first, "awaiting_start")
    frame(start_message(), "starting")
    for _ in range(audio_frames):
        frame(FRAME, "recognizing")
    if end:
        frame(json.dumps({"message": "EndOfStream", "last_seq_no": audio_frames}), "draining")
    records.append({"t": round(t + 0.05, 6), "kind": "close", "state": "closed",
                    **(close or {"code": 1000, "ending": "normal", "rule": "LC-END-001", "detail": ""})})
    return records


def server():
    """A server that serves recorded fault plans (--allow-client-faults)."""
    return running_server(limits=SessionLimits(close_grace=0.1), allow_client_faults=True)


def messages(lines: list[str]) -> list[str]:
    """The "message" of each JSON frame printed."""
    names = []
    for line in lines:
        seconds, _, text = line.partition("  ")
        float(seconds)
        if text.startswith("{"):
            names.append(json.loads(text)["message"])
    return names


def stamps(lines: list[str], message: str) -> list[float]:
    return [float(line.split("  ")[0]) for line in lines if f'"message":"{message}"' in line.replace(" ", "")]


async def test_replay_prints_the_servers_frames_and_returns_its_close_code():
    lines, warnings = [], []
    async with server() as srv:
        with trio.fail_after(10):
            code = await replay(logbook(), f"ws://127.0.0.1:{srv.port}", speed=0, out=lines.append,
                                warn=warnings.append)
    assert code == 1000
    got = messages(lines)
    assert got[0] == "RecognitionStarted" and got[-1] == "EndOfTranscript"
    assert got.count("AudioAdded") == 3
    assert [json.loads(line.split("  ", 1)[1])["seq_no"] for line in lines if "AudioAdded" in line] == [1, 2, 3]
    assert lines[-1].split("  ", 1)[1].startswith("closed 1000 (NORMAL_CLOSURE)")
    assert warnings == ["replay: the logbook redacted the authorization header: pass it with --header if the "
                        "server needs it"]


async def test_the_exit_status_is_0_when_the_server_closes_as_recorded_and_1_when_not():
    async with server() as srv:
        url = f"ws://127.0.0.1:{srv.port}"
        with trio.fail_after(10):
            assert await replay_and_compare(logbook(), url, speed=0, out=[].append, warn=[].append) == 0
            warnings = []
            other = logbook(close={"code": 1003, "ending": "client_error", "rule": "SM-ORDER-001", "detail": ""})
            assert await replay_and_compare(other, url, speed=0, out=[].append, warn=warnings.append) == 1
    assert warnings[-1] == "replay: the server closed with 1000; the logbook says 1003 (client_error SM-ORDER-001)"


async def replayed(recorded: list[dict], speed: float = 0) -> tuple[int, list[str]]:
    """The exit status of replaying `recorded` to a fresh server, and the lines it printed."""
    lines = []
    async with server() as srv:
        with trio.fail_after(10):
            status = await replay_and_compare(recorded, f"ws://127.0.0.1:{srv.port}", speed=speed,
                                              out=lines.append, warn=[].append)
    return status, lines


async def test_a_broken_rule_is_reproduced_error_frame_and_close_code_included():
    status, lines = await replayed(logbook(first=FRAME, close={
        "code": 1003, "ending": "client_error", "rule": "SM-ORDER-001", "detail": "AddAudio in awaiting_start"}))
    assert status == 0
    assert messages(lines) == ["Error"]
    assert "closed 1003" in lines[-1]


async def test_the_recorded_sessions_fault_plan_is_asked_for_again():
    recorded = logbook(close={"code": 4005, "ending": "fault", "rule": "SM-LIMIT-001", "detail": ""})
    recorded[0]["faults"] = "error=quota_exceeded"
    status, lines = await replayed(recorded)
    assert status == 0 and messages(lines) == ["Error"] and "closed 4005" in lines[-1]


async def test_a_recording_the_client_ended_is_closed_by_the_replay_at_the_recorded_moment():
    recorded = logbook(end=False, close={"code": 1000, "ending": "client_closed", "rule": "LC-END-002",
                                         "detail": "close code 1000"})
    lines = []
    async with server() as srv:
        with trio.fail_after(10):
            status = await replay_and_compare(recorded, f"ws://127.0.0.1:{srv.port}", speed=1, out=lines.append,
                                              warn=[].append)
    assert status == 0
    assert messages(lines)[0] == "RecognitionStarted" and "EndOfTranscript" not in messages(lines)
    assert "closed by the replay 1000" in lines[-1]
    assert float(lines[-1].split("  ")[0]) >= recorded[-1]["t"] - recorded[1]["t"] - 0.01


async def test_timing_is_kept_divided_by_the_speed():
    recorded = logbook(gap=2.0, audio_frames=3)  # the audio frames 2, 4 and 6 s after StartRecognition
    lines = []
    async with server() as srv:
        start = trio.current_time()
        with trio.fail_after(10):
            await replay(recorded, f"ws://127.0.0.1:{srv.port}", speed=10, out=lines.append, warn=[].append)
        took = trio.current_time() - start
    acks = stamps(lines, "AudioAdded")
    assert len(acks) == 3
    for k, stamp in enumerate(acks, 1):  # frame k leaves 0.2 k s after the first frame: its ack cannot be earlier
        assert 0.2 * k - 0.01 <= stamp < 0.2 * k + 1.0
    assert acks == sorted(acks)
    assert 0.8 - 0.01 <= took < 5  # EndOfStream leaves at 0.8 s


async def test_speed_0_sends_without_waiting():
    recorded = logbook(gap=2.0, audio_frames=3)  # 8 s of recorded session
    lines = []
    async with server() as srv:
        start = trio.current_time()
        with trio.fail_after(10):
            assert await replay(recorded, f"ws://127.0.0.1:{srv.port}", speed=0, out=lines.append,
                                warn=[].append) == 1000
        took = trio.current_time() - start
    assert took < 2.0
    assert messages(lines).count("AudioAdded") == 3


def test_the_url_gets_the_logbooks_path_and_query_without_redacted_values():
    warnings = []
    opened = open_record("/v2/en", {"jwt": REDACTED, "lang": "en", "key": REDACTED})
    url = replay_url("ws://127.0.0.1:9000/", opened, warnings.append)
    assert url == "ws://127.0.0.1:9000/v2/en?lang=en"
    assert warnings == ["replay: the logbook redacted the query parameters jwt, key: left out"]
    assert replay_url("wss://h/base?a=1", open_record("/v2", {"b": "2"}), warnings.append) == "wss://h/base/v2?a=1&b=2"


async def test_redacted_query_values_are_dropped_with_a_warning_and_the_session_goes_on():
    warnings, lines = [], []
    async with server() as srv:
        with trio.fail_after(10):
            status = await replay_and_compare(logbook(query={"jwt": REDACTED}), f"ws://127.0.0.1:{srv.port}",
                                              speed=0, out=lines.append, warn=warnings.append,
                                              headers=[("Authorization", "Bearer k")])
    assert status == 0
    assert warnings == ["replay: the logbook redacted the query parameter jwt: left out"]
    assert messages(lines)[-1] == "EndOfTranscript"


async def test_a_rejected_handshake_is_exit_status_2_with_the_servers_answer():
    warnings = []
    async with server() as srv:
        url = f"ws://127.0.0.1:{srv.port}"
        with trio.fail_after(10):
            assert await replay_and_compare(logbook(path="/nowhere"), url, speed=0, out=[].append,
                                            warn=warnings.append) == 2
    assert warnings[-1] == f"replay: {url}: the server rejected the handshake: HTTP 404: no dialect serves the " \
                           "path /nowhere"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_replay_command_exit_status_2_when_nothing_listens(tmp_path, capsys):
    path = tmp_path / "s-1.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in logbook()))
    args = argparse.Namespace(logbook=path, url=f"ws://127.0.0.1:{free_port()}", speed=0.0, header=["X-A: b"])
    assert replay_command(args) == 2
    assert "cannot connect" in capsys.readouterr().err


def test_replay_command_exit_status_2_for_a_bad_logbook_header_or_speed(tmp_path, capsys):
    missing = argparse.Namespace(logbook=tmp_path / "none.jsonl", url="ws://127.0.0.1:1", speed=1.0, header=[])
    assert replay_command(missing) == 2
    path = tmp_path / "s-1.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in logbook()))
    assert replay_command(argparse.Namespace(logbook=path, url="ws://x", speed=1.0, header=["novalue"])) == 2
    assert replay_command(argparse.Namespace(logbook=path, url="ws://x", speed=-1.0, header=[])) == 2
    err = capsys.readouterr().err
    assert "No such file" in err and "expected NAME:VALUE" in err and "--speed must be 0 or more" in err
