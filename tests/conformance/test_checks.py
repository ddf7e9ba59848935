"""Client-conformance mode (`stt serve --conformance DIR`): clients written from each vendor's documents, over
the wire, against an in-process server with the scripted engine; the report the server writes for their
session says which rules they kept and which they broke, naming the frames (the logbook's "n") that broke them.

A client that does what its vendor documents gets an all-pass report; a client that breaks rules on purpose gets
exactly those rules failed, each with the frames that broke it; a session the server ends is not the client's
fault; the real speechmatics-python client passes; `stt report LOGBOOK` renders the same report offline."""

from __future__ import annotations

import base64
import io
import json
import wave
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
from trio_websocket import ConnectionClosed, ConnectionRejected

from stt.cli import main
from stt.conformance.checks import client_rule_ids
from stt.conformance.logbook import payload, read_logbook
from stt.conformance.report import Report, from_json
from stt.dialects import dialect_named
from stt.engines.inline_host import InlineEngine
from stt.engines.scripted import ScriptedRecognizer
from stt.session import SessionLimits
from tests.helpers import DATA, connect, frames_of, running_server, session_pair, silence, start_message

RATE = 16000  # every client here sends 16-bit mono PCM at 16 kHz
BYTES_PER_SECOND = RATE * 2
AUDIO_SECONDS = 1.2  # each all-pass session: long enough for words from the scripted engine, short to run

PATHS = {
    "speechmatics": "/v2",
    "voicerun": "/ws",
    "yourvoic": "/api/v1/stt/realtime/stream?model=lucid-agent&interim_results=true&endpointing=300",
    "vblaze": "/transcribe?model=eng1:callcenter&output=json",
    "scriptix": "/v2/realtime?type=fast&language=en",
    "assemblyai": "/v3/ws?sample_rate=16000&encoding=pcm_s16le&format_turns=True",
}


# --- a client that reads what the server sends while it sends -------------------------------------------------


class Peer:
    """A client's connection. Every message the server sends is read as it arrives (as real clients do, so the
    server is never held up by a client that does not read), and the close code once the connection closed."""

    def __init__(self, ws):
        self.ws = ws
        self.received: list[str | bytes] = []
        self.close_code: int | None = None
        self._changed = trio.Event()

    async def _read(self) -> None:
        try:
            while True:
                self.received.append(await self.ws.get_message())
                self._wake()
        except ConnectionClosed as exc:
            self.close_code = exc.reason.code if exc.reason else 1006
            self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def messages(self) -> list[dict]:
        """The JSON objects received so far."""
        out = []
        for m in self.received:
            if isinstance(m, str) and m.startswith("{"):
                out.append(json.loads(m))
        return out

    async def until(self, predicate, timeout: float = 10) -> dict:
        """The first JSON message received that satisfies `predicate`, waiting for it."""
        with trio.fail_after(timeout):
            while True:
                for msg in self.messages():
                    if predicate(msg):
                        return msg
                if self.close_code is not None:
                    raise AssertionError(f"closed {self.close_code} before the message came: {self.received}")
                await self._changed.wait()

    async def until_closed(self, timeout: float = 10) -> int:
        with trio.fail_after(timeout):
            while self.close_code is None:
                await self._changed.wait()
        return self.close_code

    async def close(self) -> None:
        """The client closes the connection itself (1000)."""
        with trio.fail_after(10):
            await self.ws.aclose()

    async def send(self, message: str | bytes) -> None:
        await self.ws.send_message(message)


@asynccontextmanager
async def peer(server, path: str, headers=()):
    async with connect(server, path, headers) as ws:
        async with trio.open_nursery() as nursery:
            p = Peer(ws)
            nursery.start_soon(p._read)
            yield p
            nursery.cancel_scope.cancel()


async def stream(send, chunks: list, seconds_each: float, real_time: bool = True) -> None:
    """Send the chunks in turn: at real time (chunk i when i * seconds_each have passed, as a live source
    gives them), or as fast as the connection takes them."""
    start = trio.current_time()
    for i, chunk in enumerate(chunks):
        if real_time:
            await trio.sleep_until(start + i * seconds_each)
        await send(chunk)


def wav_file(seconds: float) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(silence(seconds))
    return buf.getvalue()


def append(chunk: bytes) -> str:
    return json.dumps({"type": "audio.append", "audio": base64.b64encode(chunk).decode("ascii")})


async def written_report(directory: Path, timeout: float = 10) -> tuple[Report, list[dict]]:
    """The one session's report (the server writes it just after the session ends: the .xml last, so once it
    is there the .json is complete) and its logbook."""
    with trio.fail_after(timeout):
        while not list(directory.glob("*.xml")):
            await trio.sleep(0.01)
    (xml,) = directory.glob("*.xml")
    report = from_json((directory / f"{xml.stem}.json").read_text(encoding="utf-8"))
    return report, read_logbook(directory / f"{xml.stem}.jsonl")


def failed(report: Report) -> dict[str, tuple[int, ...]]:
    return {c.id: c.frames for c in report.cases if c.verdict == "fail"}


def verdicts(report: Report) -> dict[str, str]:
    return {c.id: c.verdict for c in report.cases}


def ins(records: list[dict]) -> list[dict]:
    return [r for r in records if r["kind"] == "in"]


def n_of(records: list[dict], predicate) -> tuple[int, ...]:
    """The numbers of the client frames that satisfy `predicate`."""
    return tuple(r["n"] for r in ins(records) if predicate(r))


def text_of(record: dict) -> dict | None:
    if record["type"] != "text":
        return None
    try:
        return json.loads(record["text"])
    except ValueError:
        return None


def is_audio(record: dict) -> bool:
    return record["type"] == "binary" and record["bytes"] > 0


# --- clients that do what each vendor documents -------------------------------------------------------------


async def speechmatics_client(server, audio: bytes, real_time: bool = True, headers=(), path="/v2") -> Peer:
    """StartRecognition; RecognitionStarted; AddAudio in 4096-byte chunks (the vendor's examples); EndOfStream
    with last_seq_no the number of chunks; EndOfTranscript; then the client closes (§4.6)."""
    async with peer(server, path, headers) as p:
        await p.send(start_message())
        await p.until(lambda m: m["message"] == "RecognitionStarted")
        chunks = frames_of(audio, 4096)
        await stream(p.send, chunks, 4096 / BYTES_PER_SECOND, real_time)
        await p.send(json.dumps({"message": "EndOfStream", "last_seq_no": len(chunks)}))
        await p.until(lambda m: m["message"] == "EndOfTranscript")
        await p.close()
    return p


async def voicerun_client(server, audio: bytes, real_time: bool = True, headers=(), path="/ws") -> Peer:
    """session.created; session.update; session.updated; audio.append of 20 ms each; session.close; the
    remaining transcriptions and session.closed; the server closes."""
    async with peer(server, path, headers) as p:
        await p.until(lambda m: m["type"] == "session.created")
        await p.send(json.dumps({"type": "session.update", "session": {
            "model": "nova-3", "provider": "DEEPGRAM", "language": "en", "sample_rate": RATE,
            "input_audio_format": "pcm16"}}))
        await p.until(lambda m: m["type"] == "session.updated")
        await stream(p.send, [append(c) for c in frames_of(audio, 640)], 0.02, real_time)
        await p.send(json.dumps({"type": "session.close"}))
        await p.until(lambda m: m["type"] == "session.closed")
        assert await p.until_closed() == 1000
    return p


async def yourvoic_client(server, audio: bytes, real_time: bool = True, headers=(),
                          path=PATHS["yourvoic"]) -> Peer:
    """The query string configures; binary PCM in 100 ms frames at real time; {"type":"close"}; the pending
    finals; the server closes 1000 (§2.3, §2.6)."""
    async with peer(server, path, headers) as p:
        await stream(p.send, frames_of(audio, 3200), 0.1, real_time)
        await p.send(json.dumps({"type": "close"}))
        assert await p.until_closed() == 1000
    return p


async def vblaze_client(server, audio: bytes, real_time: bool = True, headers=(), path=PATHS["vblaze"]) -> Peer:
    """The WAV file's bytes in chunks, one empty binary frame, then read until the server closes: the client
    never closes (§1.3, §1.6)."""
    data = wav_file(len(audio) / BYTES_PER_SECOND)
    async with peer(server, path, headers) as p:
        await stream(p.send, frames_of(data, 3200), 0.1, real_time)
        await p.send(b"")
        assert await p.until_closed() == 1000
        assert any("utterances" in m for m in p.messages())
    return p


async def scriptix_client(server, audio: bytes, real_time: bool = True, headers=(), path=PATHS["scriptix"]) -> Peer:
    """{"action":"start"}; {"state":"listening"}; binary PCM in 100 ms chunks at real time; {"action":"stop"};
    the remaining finals and {"state":"stopped"}; the server closes 1000 (§3)."""
    async with peer(server, path, headers) as p:
        await p.send(json.dumps({"action": "start"}))
        await p.until(lambda m: m.get("state") == "listening")
        await stream(p.send, frames_of(audio, 3200), 0.1, real_time)
        await p.send(json.dumps({"action": "stop"}))
        await p.until(lambda m: m.get("state") == "stopped")
        assert await p.until_closed() == 1000
    return p


async def assemblyai_client(server, audio: bytes, real_time: bool = True, headers=(),
                            path=PATHS["assemblyai"]) -> Peer:
    """The query string configures; Begin; binary PCM in 100 ms frames at real time (each 50 to 1000 ms);
    {"type":"Terminate"}; the last Turns and Termination; the server closes 1000 (§8)."""
    async with peer(server, path, headers) as p:
        await p.until(lambda m: m["type"] == "Begin")
        await stream(p.send, frames_of(audio, 3200), 0.1, real_time)
        await p.send(json.dumps({"type": "Terminate"}))
        await p.until(lambda m: m["type"] == "Termination")
        assert await p.until_closed() == 1000
    return p


CLIENTS = {
    "speechmatics": speechmatics_client,
    "voicerun": voicerun_client,
    "yourvoic": yourvoic_client,
    "vblaze": vblaze_client,
    "scriptix": scriptix_client,
    "assemblyai": assemblyai_client,
}


def assert_all_pass(report: Report, dialect: str, skipped: tuple[str, ...] = ()) -> None:
    chart = dialect_named(dialect).chart
    assert report.kind == "client" and report.dialect == dialect
    assert report.passed, report.cases
    # One case for every rule a client can break, then one for every client rule: each kept.
    assert [c.id for c in report.cases] == client_rule_ids(chart, dialect_named(dialect)) + list(chart.client_rules)
    assert {c.id: c.verdict for c in report.cases if c.verdict != "pass"} == {rule: "skipped" for rule in skipped}
    assert all(not c.frames for c in report.cases)


@pytest.mark.parametrize("dialect", list(CLIENTS))
async def test_a_client_that_follows_its_vendors_documents_gets_an_all_pass_report(tmp_path, dialect):
    async with running_server(conformance_dir=tmp_path) as server:
        await CLIENTS[dialect](server, silence(AUDIO_SECONDS))
        report, records = await written_report(tmp_path)
    assert_all_pass(report, dialect)
    close = records[-1]
    assert close["kind"] == "close" and close["ending"] == "normal" and close["code"] == 1000
    assert records[0]["dialect"] == dialect and report.subject == records[0]["session"]


# --- clients that break rules on purpose: exactly those rules fail, each naming the frames that broke it -------

#: Hold every final this long (x-stt-fault: delay): the end of a transcript comes well after a client that closes
#: early, or sends after the end, has done so, whatever the scheduling.
SLOW_FINALS = [("x-stt-fault", "delay=1s")]


async def broken_speechmatics(server) -> dict[str, object]:
    """2 ms AddAudio frames among 200 ms ones; EndOfStream with a wrong last_seq_no; audio after EndOfStream; a
    close before EndOfTranscript (the audio holds a word, so a final is due, and held back by SLOW_FINALS)."""
    async with peer(server, "/v2", SLOW_FINALS) as p:
        await p.send(start_message())
        await p.until(lambda m: m["message"] == "RecognitionStarted")
        chunks = [silence(0.2), silence(0.002), silence(0.002), silence(0.2), silence(0.002), silence(0.2)]
        for chunk in chunks:
            await p.send(chunk)
        await p.send(json.dumps({"message": "EndOfStream", "last_seq_no": 3}))
        await p.send(silence(0.1))
        await p.close()
    assert "EndOfTranscript" not in [m["message"] for m in p.messages()]

    def expected(records):
        eos = n_of(records, lambda r: (text_of(r) or {}).get("message") == "EndOfStream")
        after = n_of(records, lambda r: is_audio(r) and r["n"] > eos[0])
        return {
            "SM-CLIENT-003": n_of(records, lambda r: is_audio(r) and r["bytes"] == 64),  # 2 ms: 32 samples
            "SM-CLIENT-002": eos,
            "SM-EOS-001": after,
            "SM-CLIENT-001": after,  # the last frame before the close
        }

    return expected


async def broken_voicerun(server):
    """An unknown message type; audio.append of 2 s each (the guidance is 20 ms), sent as fast as possible (6 s
    of audio in a moment); a close without session.close."""
    async with peer(server, "/ws") as p:
        await p.until(lambda m: m["type"] == "session.created")
        await p.send(json.dumps({"type": "session.update", "session": {"model": "nova-3", "provider": "DEEPGRAM"}}))
        await p.until(lambda m: m["type"] == "session.updated")
        await p.send(json.dumps({"type": "input_audio_buffer.commit"}))
        await p.until(lambda m: m["type"] == "error" and m["error"]["code"] == "unknown_event")
        for _ in range(3):
            await p.send(append(silence(2.0)))
        await p.close()

    def expected(records):
        audio = n_of(records, lambda r: r.get("audio"))
        return {
            "VR-MSG-003": n_of(records, lambda r: (text_of(r) or {}).get("type") == "input_audio_buffer.commit"),
            "VR-CLIENT-002": audio,  # every chunk is 2 s, over the 1 s bound
            "VR-CLIENT-003": audio[2:3],  # 4 s sent before the third, in far less than (4 - 2) / 1.5 s
            "VR-CLIENT-001": audio[-1:],
        }

    return expected


async def broken_yourvoic(server):
    """Four 1 s frames as fast as possible; a plain close without {"type":"close"}. Both are warnings: the report
    still passes."""
    async with peer(server, PATHS["yourvoic"]) as p:
        for _ in range(4):
            await p.send(silence(1.0))
        await p.close()

    def expected(records):
        audio = n_of(records, is_audio)
        return {"YV-CLIENT-002": audio[3:4], "YV-CLIENT-001": audio[-1:]}

    return expected


async def broken_vblaze(server):
    """Audio after the empty frame; then the client closes before the transcript came."""
    async with peer(server, PATHS["vblaze"], SLOW_FINALS) as p:
        for chunk in frames_of(wav_file(1.2), 3200):
            await p.send(chunk)
        await p.send(b"")
        await p.send(silence(0.1))
        await p.close()

    def expected(records):
        end = n_of(records, lambda r: r["type"] == "binary" and r["bytes"] == 0)
        after = n_of(records, lambda r: is_audio(r) and r["n"] > end[0])
        return {"VB-ORDER-001": after, "VB-CLIENT-001": after}

    return expected


async def broken_scriptix(server):
    """Audio before the start action; 5 ms chunks between 100 ms ones; a close without stop."""
    async with peer(server, PATHS["scriptix"]) as p:
        await p.send(silence(0.1))
        await p.send(json.dumps({"action": "start"}))
        await p.until(lambda m: m.get("state") == "listening")
        for chunk in [silence(0.1), silence(0.005), silence(0.005), silence(0.005), silence(0.1)]:
            await p.send(chunk)
        await p.close()

    def expected(records):
        start = n_of(records, lambda r: (text_of(r) or {}).get("action") == "start")
        return {
            "SX-ORDER-001": n_of(records, lambda r: is_audio(r) and r["n"] < start[0]),
            "SX-CLIENT-002": n_of(records, lambda r: r.get("audio") == 160),  # 5 ms: 80 samples
            "SX-CLIENT-001": n_of(records, lambda r: True)[-1:],
        }

    return expected


async def broken_assemblyai(server):
    """Four 1 s frames as fast as possible (faster than real time, which the vendor closes 3007 and stt serves);
    a plain close without Terminate."""
    async with peer(server, PATHS["assemblyai"]) as p:
        await p.until(lambda m: m["type"] == "Begin")
        for _ in range(4):
            await p.send(silence(1.0))
        await p.close()

    def expected(records):
        audio = n_of(records, is_audio)
        return {"AA-CLIENT-003": audio[3:4], "AA-CLIENT-001": audio[-1:]}

    return expected


BROKEN = {
    "speechmatics": (broken_speechmatics, {"SM-CLIENT-001", "SM-CLIENT-002", "SM-CLIENT-003", "SM-EOS-001"}, False),
    "voicerun": (broken_voicerun, {"VR-MSG-003", "VR-CLIENT-001", "VR-CLIENT-002", "VR-CLIENT-003"}, False),
    "yourvoic": (broken_yourvoic, {"YV-CLIENT-001", "YV-CLIENT-002"}, True),
    "vblaze": (broken_vblaze, {"VB-ORDER-001", "VB-CLIENT-001"}, False),
    "scriptix": (broken_scriptix, {"SX-ORDER-001", "SX-CLIENT-001", "SX-CLIENT-002"}, False),
    "assemblyai": (broken_assemblyai, {"AA-CLIENT-001", "AA-CLIENT-003"}, False),
}


@pytest.mark.parametrize("dialect", list(BROKEN))
async def test_a_client_that_breaks_rules_gets_exactly_those_rules_failed_with_their_frames(tmp_path, dialect):
    client, rules, passes = BROKEN[dialect]
    async with running_server(conformance_dir=tmp_path) as server:
        expected = await client(server)
        report, records = await written_report(tmp_path)
    assert set(failed(report)) == rules
    frames = expected(records)
    assert set(frames) == rules
    for rule_id in rules:
        assert frames[rule_id], f"{rule_id}: no frame in the logbook matches"
        assert failed(report)[rule_id] == frames[rule_id], rule_id
    chart = dialect_named(dialect).chart
    for case in report.cases:
        if case.verdict == "fail":
            rule = chart.rules.get(case.id) or chart.client_rules[case.id]
            severity = getattr(rule, "severity", None) or ("warning" if rule.warning else "error")
            assert case.severity == severity, case.id
            assert case.details
    assert report.passed is passes  # warnings alone do not fail a client
    assert records[-1]["ending"] == "client_closed"


# --- a fatal break: the rule that ended the session is the one failed, with its frame ----------------------


async def speechmatics_started(p: Peer) -> None:
    await p.send(start_message())
    await p.until(lambda m: m["message"] == "RecognitionStarted")
    await p.send(silence(0.1))


async def voicerun_updated(p: Peer) -> None:
    await p.until(lambda m: m["type"] == "session.created")
    await p.send(json.dumps({"type": "session.update", "session": {"model": "nova-3", "provider": "DEEPGRAM"}}))
    await p.until(lambda m: m["type"] == "session.updated")
    await p.send(append(silence(0.02)))


async def audio_flowing(p: Peer) -> None:
    await p.send(silence(0.1))


async def wav_flowing(p: Peer) -> None:
    await p.send(wav_file(0.1))


async def scriptix_listening(p: Peer) -> None:
    await p.send(json.dumps({"action": "start"}))
    await p.until(lambda m: m.get("state") == "listening")
    await p.send(silence(0.1))


async def assemblyai_begun(p: Peer) -> None:
    await p.until(lambda m: m["type"] == "Begin")
    await p.send(silence(0.1))


FATAL = {  # dialect: (how the session gets going, the frame that breaks a fatal rule, the rule, the close code)
    "speechmatics": (speechmatics_started, '{"message":"AddAudioPlease"}', "SM-MSG-002", 1003),
    "voicerun": (voicerun_updated, silence(0.02), "VR-MSG-004", 1003),
    "yourvoic": (audio_flowing, '{"type":"configure"}', "YV-MSG-002", 1003),
    "vblaze": (wav_flowing, '{"done":true}', "VB-MSG-001", 1003),
    "scriptix": (scriptix_listening, "stop", "SX-MSG-001", 1000),
    "assemblyai": (assemblyai_begun, silence(0.03), "AA-AUDIO-001", 3007),  # 30 ms: under the 50 ms rule
}


@pytest.mark.parametrize("dialect", list(FATAL))
async def test_a_fatal_break_is_the_rule_failed_with_the_frame_that_ended_the_session(tmp_path, dialect):
    setup, bad, rule, code = FATAL[dialect]
    async with running_server(conformance_dir=tmp_path) as server:
        async with peer(server, PATHS[dialect]) as p:
            await setup(p)
            await p.send(bad)
            assert await p.until_closed() == code
        report, records = await written_report(tmp_path)
    last = ins(records)[-1]  # nothing the client sent after it was read
    assert payload(last) == bad
    assert failed(report) == {rule: (last["n"],)}
    assert not report.passed
    (violation,) = [r for r in records if r["kind"] == "violation"]
    assert (violation["rule"], violation["frame"]) == (rule, last["n"])
    close = records[-1]
    assert (close["kind"], close["code"], close["ending"], close["rule"]) == ("close", code, "violation", rule)
    # The client rule about ending the stream is kept: the server, not the client, ended this one.
    ends = next(r.id for r in dialect_named(dialect).chart.client_rules.values() if r.check == "ends_stream")
    assert verdicts(report)[ends] == "pass"


# --- the vendor's own client --------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["raw", "file"])
async def test_the_speechmatics_python_client_gets_an_all_pass_report(tmp_path, mode):
    from tests.test_end_to_end import RAW, transcribe_with_the_vendor_client

    async with running_server(conformance_dir=tmp_path) as server:
        messages = await transcribe_with_the_vendor_client(server.port, DATA / "ps_goforward.wav",
                                                           audio=RAW if mode == "raw" else ())
        report, records = await written_report(tmp_path)
    assert [m["metadata"]["transcript"] for m in messages if m["message"] == "AddTranscript"] == [
        "one two three four", "five"]  # the scripted engine's words for 2.79 s of audio
    assert records[-1]["ending"] == "normal"
    # A file's chunks have no duration the server can know from their size: that rule does not apply.
    assert_all_pass(report, "speechmatics", skipped=() if mode == "raw" else ("SM-CLIENT-003",))
    assert [r["format"]["encoding"] for r in records if r["kind"] == "configure"] == [
        "pcm_s16le" if mode == "raw" else "file"]


# --- per-connection opt-in ------------------------------------------------------------------------------------


async def reports_in(directory: Path, count: int, timeout: float = 10) -> dict[str, tuple[Report, list[dict]]]:
    """dialect -> (report, logbook) of the `count` sessions recorded in directory."""
    with trio.fail_after(timeout):
        while len(list(directory.glob("*.xml"))) < count:
            await trio.sleep(0.01)
    out = {}
    for xml in directory.glob("*.xml"):
        records = read_logbook(directory / f"{xml.stem}.jsonl")
        out[records[0]["dialect"]] = from_json((directory / f"{xml.stem}.json").read_text(encoding="utf-8")), records
    return out


async def test_with_opt_in_only_the_connections_that_ask_are_recorded(tmp_path):
    audio = silence(0.3)
    async with running_server(conformance_dir=tmp_path, conformance_opt_in=True) as server:
        await speechmatics_client(server, audio, real_time=False)  # does not ask
        await scriptix_client(server, audio, real_time=False, path=PATHS["scriptix"] + "&stt_conformance=0")
        await speechmatics_client(server, audio, real_time=False, headers=[("x-stt-conformance", "1")])
        # V-Blaze refuses any query parameter that is not one of its tags (HTTP 400), YourVoic validates its
        # own: neither sees stt_conformance.
        await vblaze_client(server, audio, real_time=False, path=PATHS["vblaze"] + "&stt_conformance=1")
        await yourvoic_client(server, audio, real_time=False, path=PATHS["yourvoic"] + "&stt_conformance=1")
        assert len(list(tmp_path.glob("*.jsonl"))) == 3  # each logbook is opened as its session starts
        recorded = await reports_in(tmp_path, 3)
    assert set(recorded) == {"speechmatics", "vblaze", "yourvoic"}
    for dialect, (report, records) in recorded.items():
        assert_all_pass(report, dialect)
        assert "stt_conformance" not in records[0]["query"]
    assert recorded["speechmatics"][1][0]["headers"]["x-stt-conformance"] == "1"
    assert recorded["vblaze"][1][0]["query"] == {"model": "eng1:callcenter", "output": "json"}


async def test_the_opt_in_query_parameter_never_reaches_the_dialect_even_outside_conformance_mode(tmp_path):
    async with running_server() as server:
        await vblaze_client(server, silence(0.3), real_time=False, path=PATHS["vblaze"] + "&stt_conformance=1")
        with pytest.raises(ConnectionRejected) as refused:  # what it would get otherwise
            await vblaze_client(server, silence(0.3), real_time=False, path=PATHS["vblaze"] + "&stt_other=1")
    assert refused.value.status_code == 400
    assert not list(tmp_path.iterdir())


# --- sessions the server ends are not the client's fault ------------------------------------------------------


async def stream_until_closed(p: Peer, seconds: float = 3.0) -> int:
    """100 ms frames at real time until the server closes the connection."""
    start = trio.current_time()
    try:
        for i, chunk in enumerate(frames_of(silence(seconds), 3200)):
            await trio.sleep_until(start + i * 0.1)
            if p.close_code is not None:
                break
            await p.send(chunk)
    except ConnectionClosed:
        pass
    return await p.until_closed()


async def speechmatics_until_closed(p: Peer) -> int:
    await p.send(start_message())
    await p.until(lambda m: m["message"] == "RecognitionStarted")
    return await stream_until_closed(p)


async def voicerun_until_closed(p: Peer) -> int:
    await p.until(lambda m: m["type"] == "session.created")
    await p.send(json.dumps({"type": "session.update", "session": {"model": "nova-3", "provider": "DEEPGRAM"}}))
    await p.until(lambda m: m["type"] == "session.updated")
    start = trio.current_time()
    try:
        for i, chunk in enumerate(frames_of(silence(3.0), 640)):
            await trio.sleep_until(start + i * 0.02)
            await p.send(append(chunk))
    except ConnectionClosed:
        pass
    return await p.until_closed()


ENDED_BY_SERVER = {  # id: (dialect, server options, headers, client, close code, ending, rule)
    "max-session-seconds": ("speechmatics", {"limits": SessionLimits(max_session_seconds=0.4)}, (),
                            speechmatics_until_closed, 4006, "session_timeout", "SM-LIMIT-002"),
    "fault-close": ("yourvoic", {}, [("x-stt-fault", "close=4005@0.3s")], stream_until_closed, 4005, "fault",
                    "FAULT-CLOSE"),
    "fault-drop": ("voicerun", {}, [("x-stt-fault", "drop@0.3s")], voicerun_until_closed, 1006, "fault",
                   "FAULT-DROP"),
}


@pytest.mark.parametrize("case", list(ENDED_BY_SERVER))
async def test_a_session_the_server_ends_is_reported_as_informational_and_not_against_the_client(tmp_path, case):
    dialect, options, headers, client, code, ending, rule = ENDED_BY_SERVER[case]
    async with running_server(conformance_dir=tmp_path, **options) as server:
        async with peer(server, PATHS[dialect], headers) as p:
            assert await client(p) == code
        report, records = await written_report(tmp_path)
    close = records[-1]
    assert (close["kind"], close["code"], close["ending"], close["rule"]) == ("close", code, ending, rule)
    assert report.passed and not failed(report)
    chart = dialect_named(dialect).chart
    ends = [r.id for r in chart.client_rules.values() if r.check == "ends_stream"]
    assert all(verdicts(report)[r] == "skipped" for r in ends)
    (informational,) = [c for c in report.cases if c.verdict == "informational"]
    assert informational.id == f"{dialect}/session/ending" and informational.rule == rule
    assert ending in informational.details and str(code) in informational.details
    assert {c.verdict for c in report.cases} == {"pass", "skipped", "informational"}


# --- stt report LOGBOOK: the same report, offline -----------------------------------------------------------


async def test_stt_report_renders_a_logbooks_report_again_and_exits_1_for_a_broken_client(tmp_path, capsys):
    good, bad, out = tmp_path / "good", tmp_path / "bad", tmp_path / "out"
    async with running_server(conformance_dir=good) as server:
        await speechmatics_client(server, silence(0.5), real_time=False)
        served_good, _ = await written_report(good)
    async with running_server(conformance_dir=bad) as server:
        async with peer(server, "/v2") as p:
            await speechmatics_started(p)
            await p.send('{"message":"AddAudioPlease"}')
            assert await p.until_closed() == 1003
        served_bad, _ = await written_report(bad)
    (good_logbook,) = good.glob("*.jsonl")
    (bad_logbook,) = bad.glob("*.jsonl")
    capsys.readouterr()

    assert main(["report", str(good_logbook), "--out", str(out)]) == 0
    printed = capsys.readouterr()
    assert sorted(p.name for p in out.iterdir()) == [f"{good_logbook.stem}{s}" for s in (".html", ".json", ".xml")]
    again = from_json((out / f"{good_logbook.stem}.json").read_text(encoding="utf-8"))
    assert again.cases == served_good.cases and again.timeline == served_good.timeline
    assert printed.out.rstrip().endswith("PASSED")
    assert f"wrote {out / good_logbook.stem}.json" in printed.err

    (bad / f"{bad_logbook.stem}.json").unlink()  # without --out: beside the logbook
    assert main(["report", str(bad_logbook)]) == 1
    printed = capsys.readouterr()
    again = from_json((bad / f"{bad_logbook.stem}.json").read_text(encoding="utf-8"))
    assert again.cases == served_bad.cases
    assert failed(again) == failed(served_bad) and "SM-MSG-002" in failed(again)
    assert printed.out.rstrip().endswith("FAILED")
    assert any(line.startswith("SM-MSG-002") and "FAIL" in line for line in printed.out.splitlines())


async def test_stt_report_renders_several_logbooks_at_once_naming_each(tmp_path, capsys):
    async with running_server(conformance_dir=tmp_path) as server:
        await speechmatics_client(server, silence(0.5), real_time=False)
        async with peer(server, "/v2") as p:
            await speechmatics_started(p)
            await p.send('{"message":"AddAudioPlease"}')
            await p.until_closed()
        await reports_in(tmp_path, 2)
    logbooks = sorted(tmp_path.glob("*.jsonl"))
    capsys.readouterr()
    assert main(["report", *map(str, logbooks), "--out", str(tmp_path / "again")]) == 1  # one broke a rule
    out = capsys.readouterr().out
    assert [line for line in out.splitlines() if line.startswith("== ")] == [f"== {p}" for p in logbooks]
    assert out.count("— PASSED") == 1 and out.count("— FAILED") == 1
    assert len(list((tmp_path / "again").glob("*.html"))) == 2
    assert main(["report", str(logbooks[0]), str(tmp_path / "missing.jsonl")]) == 2  # the readable one still done
    assert "== " in capsys.readouterr().out


def test_stt_report_exits_2_for_a_file_that_is_not_a_logbook(tmp_path, capsys):
    assert main(["report", str(tmp_path / "missing.jsonl")]) == 2
    torn = tmp_path / "torn.jsonl"
    torn.write_text('{"kind": "open", "session": "s", "dialect": "speechmatics"}\n{"kind": "in", "n"\n{}\n')
    assert main(["report", str(torn)]) == 2
    err = capsys.readouterr().err
    assert "missing.jsonl" in err and "torn.jsonl: line 2 is not JSON" in err


# --- edges of the checks ------------------------------------------------------------------------------------


async def test_a_client_that_vanishes_without_a_close_frame_breaks_the_ending_rule(tmp_path):
    async with running_server(conformance_dir=tmp_path) as server:
        async with peer(server, PATHS["scriptix"]) as p:
            await p.send(json.dumps({"action": "start"}))
            await p.until(lambda m: m.get("state") == "listening")
            await p.send(silence(0.1))
            await p.ws._stream.aclose()  # the TCP connection goes, no close frame
        report, records = await written_report(tmp_path)
    assert records[-1]["ending"] == "dropped"
    assert failed(report) == {"SX-CLIENT-001": (ins(records)[-1]["n"],)}
    assert "dropped" in next(c.details for c in report.cases if c.id == "SX-CLIENT-001")


async def test_last_seq_no_counts_what_the_server_acknowledged_an_empty_audio_frame_included(tmp_path):
    async with running_server(conformance_dir=tmp_path) as server:
        async with peer(server, "/v2") as p:
            await p.send(start_message())
            await p.until(lambda m: m["message"] == "RecognitionStarted")
            for chunk in (silence(0.1), b"", silence(0.1)):
                await p.send(chunk)
            last = await p.until(lambda m: m.get("seq_no") == 3)  # the server counted the empty frame
            await p.send(json.dumps({"message": "EndOfStream", "last_seq_no": last["seq_no"]}))
            await p.until(lambda m: m["message"] == "EndOfTranscript")
            await p.close()
        report, _ = await written_report(tmp_path)
    assert not failed(report)


class GatedEngine(InlineEngine):
    """The scripted engine, whose streams open only once `gate` is set: the session stays "starting" as long
    as a test needs, as it does while a real recognizer loads."""

    def __init__(self):
        super().__init__("scripted", 16000, ScriptedRecognizer)
        self.gate = trio.Event()

    @asynccontextmanager
    async def open_stream(self, settings):
        await self.gate.wait()
        async with super().open_stream(settings) as stream:
            yield stream


@pytest.mark.parametrize("dialect", ["speechmatics", "voicerun"])
async def test_a_frame_sent_before_the_answer_to_the_start_message_is_served_and_reported(tmp_path, dialect):
    """SM-CLIENT-004, VR-CLIENT-004: audio sent right after StartRecognition (session.update), before the session
    has started. stt serves it once the session has started; the report says the client did not wait."""
    engine = GatedEngine()
    start, audio, started = {
        "speechmatics": (start_message(), silence(0.1), "RecognitionStarted"),
        "voicerun": (json.dumps({"type": "session.update", "session": {"model": "nova-3", "provider": "DEEPGRAM"}}),
                     append(silence(0.1)), "session.updated"),
    }[dialect]
    async with session_pair(engine=engine, path=PATHS[dialect], conformance_dir=tmp_path,
                            limits=SessionLimits(close_grace=0.1)) as (server, ws):
        with trio.fail_after(10):
            await ws.send_message(start)
            await ws.send_message(audio)  # without waiting
            await trio.sleep(0.1)  # it has arrived; the recognizer is still opening
            engine.gate.set()
            got = []
            while started not in got:
                message = json.loads(await ws.get_message())
                got.append(message.get("message") or message["type"])
            if dialect == "speechmatics":
                while "AudioAdded" not in got:  # the early frame is served
                    got.append(json.loads(await ws.get_message())["message"])
                await ws.send_message(json.dumps({"message": "EndOfStream", "last_seq_no": 1}))
            else:
                await ws.send_message('{"type":"session.close"}')
            with pytest.raises(ConnectionClosed):
                while True:
                    await ws.get_message()
        report, records = await written_report(tmp_path)
    rule = {"speechmatics": "SM-CLIENT-004", "voicerun": "VR-CLIENT-004"}[dialect]
    early = [r["n"] for r in ins(records) if r.get("early")]
    assert len(early) == 1 and ins(records)[1]["n"] == early[0]  # the frame after the start message
    assert failed(report) == {rule: tuple(early)}
