"""The logbook a conformance-mode server writes for a session (stt.conformance.logbook): the open record first,
without credentials; every frame in and out, numbered together, with the dialect chart's state after it; the
declared format; the rules broken; the close. And reading one back: a torn last line is a server stopped
mid-write, a torn middle line is not a logbook."""

from __future__ import annotations

import io
import json

import pytest

from stt.conformance.logbook import REDACTED, Logbook, payload, read_logbook, redacted
from stt.events import Audio, AudioFormat, Configure
from tests.conformance.test_checks import PATHS, ins, peer, speechmatics_client, wav_file, written_report
from tests.helpers import running_server, silence, start_message

KEY = "sk-live-0123456789abcdef"  # distinctive, so that finding it anywhere in the file means a leak


async def recorded_session(tmp_path, path: str, headers=(), client=None, **config):
    """Run `client(peer)` (default: a Speechmatics session) against a conformance-mode server; the logbook's
    records and its text."""
    async with running_server(conformance_dir=tmp_path, **config) as server:
        if client is None:
            await speechmatics_client(server, silence(0.5), real_time=False, headers=headers, path=path)
        else:
            async with peer(server, path, headers) as p:
                await client(p)
        await written_report(tmp_path)
    (logbook,) = tmp_path.glob("*.jsonl")
    return read_logbook(logbook), logbook.read_text(encoding="utf-8"), logbook.stem


# --- what a session's logbook holds --------------------------------------------------------------------------


async def test_a_session_is_recorded_frame_by_frame_with_its_states_and_no_credentials(tmp_path):
    audio = silence(0.5)  # 16000 bytes: AddAudio frames of 4096, 4096, 4096, 3712
    records, text, stem = await recorded_session(
        tmp_path, "/v2", headers=[("Authorization", f"Bearer {KEY}"), ("X-Client", "probe/1")], api_keys=(KEY,))

    assert KEY not in text
    opened = records[0]
    assert opened["kind"] == "open" and opened["t"] >= 0
    assert (opened["session"], opened["dialect"], opened["path"], opened["query"], opened["faults"],
            opened["state"]) == (stem, "speechmatics", "/v2", {}, "", "awaiting_start")
    assert opened["headers"]["authorization"] == REDACTED
    assert opened["headers"]["sec-websocket-key"] == REDACTED
    assert opened["headers"]["x-client"] == "probe/1"  # other headers are kept as they came

    frames = [r for r in records if r["kind"] in ("in", "out")]
    assert [r["n"] for r in frames] == list(range(1, len(frames) + 1))  # both directions, numbered together
    times = [r["t"] for r in records]
    assert times == sorted(times)

    # The chart's state after each frame.
    def state_after(kind, message):
        return [r["state"] for r in frames if r["kind"] == kind and r["type"] == "text"
                and json.loads(r["text"])["message"] == message]

    assert state_after("in", "StartRecognition") == ["starting"]
    assert state_after("out", "RecognitionStarted") == ["recognizing"]
    acks = state_after("out", "AudioAdded")  # the last may go out after EndOfStream was read
    assert len(acks) == 4 and acks == sorted(acks, key=["recognizing", "draining"].index) and acks[0] == "recognizing"
    assert state_after("in", "EndOfStream") == ["draining"]
    assert state_after("out", "EndOfTranscript") == ["finished"]

    # Client frames: the events the dialect made of them and the audio they carried; binary frames round-trip.
    client = ins(records)
    assert [r["events"] for r in client] == [["Configure"], ["Audio"], ["Audio"], ["Audio"], ["Audio"],
                                             ["EndOfAudio"]]
    assert [r["audio"] for r in client] == [0, 4096, 4096, 4096, 3712, 0]
    assert b"".join(payload(r) for r in client if r["type"] == "binary") == audio
    assert payload(client[0]) == start_message() and client[0]["bytes"] == len(start_message())
    assert all("events" not in r and "audio" not in r for r in frames if r["kind"] == "out")

    configures = [r for r in records if r["kind"] == "configure"]
    assert [c["format"] for c in configures] == [{"encoding": "pcm_s16le", "sample_rate": 16000, "channels": 1}]
    assert records.index(configures[0]) == records.index(client[0]) + 1  # right after the start message

    assert not [r for r in records if r["kind"] == "violation"]
    close = records[-1]
    assert {k: close[k] for k in ("kind", "code", "ending", "rule", "detail", "state")} == {
        "kind": "close", "code": 1000, "ending": "normal", "rule": "LC-END-001", "detail": "", "state": "closed"}


async def test_a_key_in_the_query_string_is_redacted(tmp_path):
    async def client(p):
        await p.send(silence(0.1))
        await p.send('{"type":"close"}')
        assert await p.until_closed() == 1000

    records, text, _ = await recorded_session(tmp_path, PATHS["yourvoic"] + f"&api_key={KEY}", client=client,
                                              api_keys=(KEY,))
    assert KEY not in text
    assert records[0]["query"] == {"model": "lucid-agent", "interim_results": "true", "endpointing": "300",
                                   "api_key": REDACTED}


# Credentials each dialect accepts, in headers, query parameters and the path: none is written to the logbook.
LEAKS = {
    "speechmatics ?jwt=": ("/v2?jwt=" + KEY, (), None),
    "scriptix x-zoom-s2t-key": (PATHS["scriptix"], [("x-zoom-s2t-key", KEY)], "scriptix"),
    "vblaze X-Voci-Token": (PATHS["vblaze"], [("X-Voci-Token", KEY)], "vblaze"),
    "scriptix stream mode /v2/client/<token>": (f"/v2/client/{KEY}", (), "closed"),
}


@pytest.mark.parametrize("leak", list(LEAKS))
async def test_every_credential_a_dialect_accepts_is_redacted(tmp_path, leak):
    path, headers, dialect = LEAKS[leak]

    async def scriptix(p):
        await p.send('{"action":"start"}')
        await p.until(lambda m: m.get("state") == "listening")
        await p.send('{"action":"stop"}')
        assert await p.until_closed() == 1000

    async def vblaze(p):
        await p.send(wav_file(0.1))
        await p.send(b"")
        assert await p.until_closed() == 1000

    async def closed(p):  # no url: {"error":"missing stream URL"} and 1000
        assert await p.until_closed() == 1000

    client = {"scriptix": scriptix, "vblaze": vblaze, "closed": closed}.get(dialect)
    _, text, _ = await recorded_session(tmp_path, path, headers=headers, client=client, api_keys=(KEY,))
    assert KEY not in text


async def test_a_broken_rule_is_recorded_with_the_frame_that_broke_it_and_a_fatal_one_in_the_close(tmp_path):
    async def client(p):
        await p.send(start_message())
        await p.until(lambda m: m["message"] == "RecognitionStarted")
        await p.send(silence(0.1))
        await p.send('{"message":"EndOfStream","last_seq_no":1}')
        await p.send(silence(0.1))  # after EndOfStream: a warning, the session goes on
        await p.until(lambda m: m["message"] == "Warning")
        await p.send('{"message":"Nonsense"}')  # after EndOfStream, unknown: SM-MSG-002, fatal
        assert await p.until_closed() == 1003

    records, _, _ = await recorded_session(tmp_path, "/v2", client=client)
    client_frames = ins(records)
    violations = [r for r in records if r["kind"] == "violation"]
    assert [(v["rule"], v["frame"]) for v in violations] == [("SM-EOS-001", client_frames[3]["n"]),
                                                             ("SM-MSG-002", client_frames[4]["n"])]
    for v in violations:  # written right after the frame that broke the rule
        assert records[records.index(v) - 1]["n"] == v["frame"]
    assert client_frames[3]["events"] == ["Violation"] and client_frames[3]["audio"] == 0
    errors = [r for r in records if r["kind"] == "out" and '"Error"' in r.get("text", "")]
    assert len(errors) == 1 and json.loads(errors[0]["text"])["type"] == "invalid_message"
    close = records[-1]
    assert (close["code"], close["ending"], close["rule"]) == (1003, "violation", "SM-MSG-002")
    assert records.index(errors[0]) < len(records) - 1  # the Error frame is recorded before the close


# --- the Logbook class and reading one back ------------------------------------------------------------------


def written(write) -> str:
    out, now = io.StringIO(), iter(i / 10 for i in range(1000))
    write(Logbook(out, lambda: next(now)))
    return out.getvalue()


def test_frames_of_both_directions_share_one_count_and_a_violation_names_the_last_client_frame():
    binary = bytes(range(256)) * 3

    def write(book):
        book.opened("s-1", "speechmatics", "/v2", {"jwt": "x", "Token": "y", "lang": "en"},
                    {"Authorization": "Bearer z", "X-Api-Key": "w", "accept": "*/*"}, "", "awaiting_start")
        book.violation("SM-ORDER-001", "before any frame")
        assert book.frame("in", '{"message":"StartRecognition","note":"naïve ✓"}', "starting",
                          [Configure(AudioFormat("pcm_s16le", 16000))]) == 1
        book.configured(AudioFormat("pcm_s16le", 16000))
        assert book.frame("out", '{"message":"RecognitionStarted"}', "recognizing") == 2
        assert book.frame("in", binary, "recognizing", [Audio(binary)]) == 3
        assert book.frame("out", b"\x00\xff", "recognizing") == 4
        book.violation("SM-CLIENT-002", "after frame 3")
        book.closed(1000, "normal", "LC-END-001", "", "closed")

    records = [json.loads(line) for line in written(write).splitlines()]
    assert [r["kind"] for r in records] == ["open", "violation", "in", "configure", "out", "in", "out",
                                            "violation", "close"]
    assert [r["t"] for r in records] == [i / 10 for i in range(len(records))]
    assert records[0]["query"] == {"jwt": REDACTED, "Token": REDACTED, "lang": "en"}
    assert records[0]["headers"] == {"Authorization": REDACTED, "X-Api-Key": REDACTED, "accept": "*/*"}
    assert records[1]["frame"] is None and records[7]["frame"] == 3
    assert payload(records[2]) == '{"message":"StartRecognition","note":"naïve ✓"}'
    assert records[2]["bytes"] == len('{"message":"StartRecognition","note":"naïve ✓"}'.encode())
    assert payload(records[5]) == binary and records[5]["bytes"] == len(binary) and records[5]["audio"] == len(binary)
    assert payload(records[6]) == b"\x00\xff" and records[6]["type"] == "binary"
    assert records[2]["events"] == ["Configure"] and records[5]["events"] == ["Audio"]
    assert records[3]["format"] == {"encoding": "pcm_s16le", "sample_rate": 16000, "channels": 1}


def test_redacted_replaces_credentials_whatever_their_case():
    assert redacted({"API_KEY": "a", "apikey": "b", "access_token": "c", "Sec-WebSocket-Key": "d", "x": "e"}) == {
        "API_KEY": REDACTED, "apikey": REDACTED, "access_token": REDACTED, "Sec-WebSocket-Key": REDACTED,
        "x": "e"}


OPEN = '{"t": 0, "kind": "open", "session": "s", "dialect": "speechmatics"}\n'
FRAME = '{"t": 0.1, "kind": "in", "n": 1, "type": "binary", "base64": "AAE=", "bytes": 2, "state": "starting"}\n'


def test_read_logbook_leaves_out_a_torn_last_line(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text(OPEN + FRAME + '{"t": 0.2, "kind": "out", "n": 2, "ty')
    records = read_logbook(path)
    assert [r["kind"] for r in records] == ["open", "in"]
    assert payload(records[1]) == b"\x00\x01"


def test_read_logbook_rejects_a_torn_line_in_the_middle(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text(OPEN + '{"t": 0.2, "kind": "out", "n": 2, "ty\n' + FRAME)
    with pytest.raises(ValueError, match="line 2 is not JSON"):
        read_logbook(path)


@pytest.mark.parametrize("text", ["", FRAME, '{"t": 0}\n'])
def test_read_logbook_rejects_a_file_that_does_not_begin_with_an_open_record(tmp_path, text):
    path = tmp_path / "s.jsonl"
    path.write_text(text)
    with pytest.raises(ValueError, match="begins with an 'open' record"):
        read_logbook(path)


def test_the_credential_the_dialect_found_is_redacted_wherever_it_appears():
    key = {"value": None}
    file = io.StringIO()
    book = Logbook(file, iter(range(100)).__next__, lambda: key["value"])
    book.opened("s-1", "scriptix", "/v2/realtime", {}, {}, "", "open")
    key["value"] = "k-123456"  # the dialect found it in the start message
    book.frame("in", '{"action":"start","key":"k-123456"}', "starting", [])
    book.frame("in", '{"note":"k-12"}', "starting", [])  # only the whole key is the key
    texts = [json.loads(line).get("text") for line in file.getvalue().splitlines()]
    assert texts == [None, '{"action":"start","key":"<redacted>"}', '{"note":"k-12"}']
