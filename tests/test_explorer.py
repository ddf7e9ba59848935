"""The protocol explorer over a real socket: its page and assets on the WebSocket port (no network needed), its
chart SVGs and dialect table, its key check, its switch, its start-up line, and its live feed, which shows what
any client's session does (raw frames, the Speechmatics vendor client), bounded for a client that does not read.
The page in a browser: tests/test_explorer_browser.py."""

from __future__ import annotations

import base64
import json
import logging
import re
from contextlib import asynccontextmanager

import pytest
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from stt.cli import _server_config
from stt.dialects import DIALECTS
from stt.explorer import with_explorer
from stt.explorer.feed import QUEUE, Feed, Hub, shorten
from stt.server import open_server
from stt.session import SessionLimits
from stt.settings import KeyRing, ServerConfig
from stt.statechart import load_chart
from stt.testmodes import TestModes
from tests.helpers import DATA, frames_of, silence, start_message

KEY = "explorer-test-key-0123"


@asynccontextmanager
async def explorer_server(*, explorer: bool = True, **config):
    server_config = ServerConfig(port=0, engine=config.pop("engine", "scripted"), limits=SessionLimits(), **config)
    modes, pages = with_explorer(TestModes.from_config(server_config), server_config.api_keys)
    if not explorer:
        modes, pages = TestModes.from_config(server_config), None
    async with open_server(server_config, modes, pages) as server:
        server.explorer = pages
        yield server


async def get(port: int, target: str, headers: dict | None = None, method: str = "GET") -> tuple[int, dict, bytes]:
    """One plain HTTP request: (status, headers, body)."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        head = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        await stream.send_all(f"{method} {target} HTTP/1.1\r\nHost: x\r\n{head}\r\n".encode())
        data = b""
        with trio.fail_after(10):
            while chunk := await stream.receive_some(1 << 16):
                data += chunk
    top, _, body = data.partition(b"\r\n\r\n")
    lines = top.decode("latin-1").split("\r\n")
    fields = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        fields[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), fields, body


class EventStream:
    """A Server-Sent Events feed read over a raw socket: `next(predicate)` the first record that matches."""

    def __init__(self, stream):
        self.stream, self.buffer, self.records = stream, b"", []

    async def next(self, predicate=lambda r: True, timeout: float = 10) -> dict:
        with trio.fail_after(timeout):
            while True:
                while b"\n\n" in self.buffer:
                    event, self.buffer = self.buffer.split(b"\n\n", 1)
                    for line in event.split(b"\n"):
                        if line.startswith(b"data: "):
                            self.records.append(json.loads(line[6:]))
                            if predicate(self.records[-1]):
                                return self.records[-1]
                chunk = await self.stream.receive_some(1 << 16)
                assert chunk, "the feed ended"
                self.buffer += chunk


@asynccontextmanager
async def events(port: int, query: str = ""):
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(f"GET /explore/events{query} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        feed = EventStream(stream)
        with trio.fail_after(10):
            while b"\r\n\r\n" not in feed.buffer:
                feed.buffer += await stream.receive_some(1 << 16)
        head, feed.buffer = feed.buffer.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 200") and b"text/event-stream" in head, head
        yield feed


async def speechmatics_session(port: int, path: str = "/v2", seconds: float = 1.0, tag: str | None = None,
                               pace: float = 0.0) -> None:
    """A whole session of raw Speechmatics frames: 100 ms of silence a frame, `pace` seconds apart."""
    url = f"ws://127.0.0.1:{port}{path}" + (f"?stt_watch={tag}" if tag else "")
    async with open_websocket_url(url) as ws:
        await ws.send_message(start_message())
        assert json.loads(await ws.get_message())["message"] == "RecognitionStarted"
        frames = frames_of(silence(seconds), 3200)
        for frame in frames:
            await ws.send_message(frame)
            await trio.sleep(pace)
        await ws.send_message(json.dumps({"message": "EndOfStream", "last_seq_no": len(frames)}))
        while json.loads(await ws.get_message())["message"] != "EndOfTranscript":
            pass


# --- the page and its assets ------------------------------------------------------------------------------------


async def test_the_page_and_its_assets_are_served_on_the_websocket_port_and_load_nothing_from_elsewhere():
    async with explorer_server() as server:
        status, headers, page = await get(server.port, "/explore")
        assert status == 200 and headers["content-type"].startswith("text/html")
        assert headers["content-security-policy"].startswith("default-src 'self'")  # the browser enforces it too
        assets = re.findall(r'(?:src|href)="([^"]+)"', page.decode())
        assert sorted(assets) == ["/explore/explorer.css", "/explore/explorer.js"]
        for asset, kind in (("/explore/explorer.css", "text/css"), ("/explore/explorer.js", "text/javascript")):
            status, headers, body = await get(server.port, asset)
            assert status == 200 and headers["content-type"].startswith(kind) and body
            text = body.decode()
            assert not re.search(r"https?://|//cdn|@import|fonts\.", text), asset  # no network beyond this server
            imports = re.findall(r"^import .* from ['\"]([^'\"]+)", text, re.M)
            assert imports == [], imports  # one module, no others to fetch
        assert (await get(server.port, "/explore/nothing-here"))[0] == 404
        assert (await get(server.port, "/explore", method="POST"))[0] == 405
        status, _, body = await get(server.port, "/")  # what is not the explorer's is the server's own answer
        assert status == 426 and b"WebSocket only" in body


async def test_the_explorer_can_be_switched_off():
    async with explorer_server(explorer=False) as server:
        status, _, body = await get(server.port, "/explore")
        assert status == 426 and b"WebSocket only" in body
    assert _server_config(["serve", "--no-explorer"])[0].explorer is False
    assert _server_config(["serve"])[0].explorer is True


async def test_with_keys_configured_the_explorer_refuses_anonymous_access():
    async with explorer_server(api_keys=KeyRing([KEY])) as server:
        for target in ("/explore", "/explore/dialects.json", "/explore/chart/voicerun.svg", "/explore/events",
                       "/explore/sessions.json", f"/explore?key=wrong-{KEY}"):
            status, headers, _ = await get(server.port, target)
            assert status == 401 and headers["www-authenticate"].startswith("Bearer"), target
        status, headers, _ = await get(server.port, f"/explore?key={KEY}")
        assert status == 200
        cookie = headers["set-cookie"].split(";")[0]
        assert "HttpOnly" in headers["set-cookie"] and "SameSite=Strict" in headers["set-cookie"]
        assert (await get(server.port, "/explore/dialects.json", {"Cookie": cookie}))[0] == 200
        assert (await get(server.port, "/explore/sessions.json", {"Authorization": f"Bearer {KEY}"}))[0] == 200


async def test_the_start_up_block_gives_the_explorers_url(caplog):
    caplog.set_level(logging.INFO, logger="stt.server")
    async with explorer_server() as server:
        lines = [r.getMessage() for r in caplog.records if "explorer" in r.getMessage()]
        assert lines == [f"  explorer: http://127.0.0.1:{server.port}/explore"]
    caplog.clear()
    async with explorer_server(explorer=False):
        assert not [r for r in caplog.records if "explorer" in r.getMessage()]


async def test_stt_serve_serves_the_explorer_and_prints_its_url_and_no_explorer_turns_it_off():
    from tests.serve_process import stt_serve

    for options, served in ((), True), (("--no-explorer",), False):
        with stt_serve("--engine", "scripted", *options) as server:
            status, _, _ = await get(server["port"], "/explore")
            await trio.sleep(0.5)  # the start-up block is logged as the server starts listening
            messages = [json.loads(line).get("message", "") for line in server["lines"] if line.startswith("{")]
            shown = [m for m in messages if "explorer:" in m]
        assert (status == 200) is served and status in (200, 426), options
        assert shown == ([f"  explorer: http://127.0.0.1:{server['port']}/explore"] if served else []), messages


# --- the charts and the dialect table ---------------------------------------------------------------------------


async def test_each_dialects_chart_is_served_as_svg_with_every_state_marked_for_the_page():
    async with explorer_server() as server:
        status, _, body = await get(server.port, "/explore/dialects.json")
        table = json.loads(body)
        assert status == 200 and [d["name"] for d in table["dialects"]] == [d.name for d in DIALECTS]
        voicerun = next(d for d in table["dialects"] if d["name"] == "voicerun")
        assert voicerun["path"] == "/ws" and voicerun["chart"]["rules"]["VR-ORDER-001"]["close"] == 1008
        for dialect in DIALECTS:
            status, headers, svg = await get(server.port, f"/explore/chart/{dialect.name}.svg")
            assert status == 200 and headers["content-type"].startswith("image/svg+xml")
            marked = set(re.findall(r'<g class="state[^"]*" data-state="([^"]+)"', svg.decode()))
            assert marked == set(dialect.chart.states), dialect.name
        assert (await get(server.port, "/explore/chart/nope.svg"))[0] == 404


# --- the live feed ----------------------------------------------------------------------------------------------


async def test_the_session_list_shows_a_plain_clients_session_and_its_feed_its_frames_and_states_in_order():
    async with explorer_server() as server, events(server.port) as sessions:
        await speechmatics_session(server.port, "/v2?jwt=" + KEY)
        opened = await sessions.next(lambda r: r["kind"] == "session")
        ended = await sessions.next(lambda r: r["kind"] == "session" and r["ended"])
        assert opened["dialect"] == "speechmatics" and ended["session"] == opened["session"]
        assert ended["close"] == 1000 and ended["state"] == "closed"
        async with events(server.port, f"?session={opened['session']}") as feed:
            await feed.next(lambda r: r["kind"] == "ended")
        records = feed.records
        assert records[0]["kind"] == "open" and KEY not in json.dumps(records)  # its key redacted
        frames = [r for r in records if r["kind"] in ("in", "out")]
        assert json.loads(frames[0]["text"])["message"] == "StartRecognition" and frames[0]["kind"] == "in"
        audio = [r for r in frames if r["kind"] == "in" and r["type"] == "binary"]
        assert len(audio) == 10 and all(r["events"] == ["Audio"] and r["audio"] == 3200 for r in audio)
        states = [r["state"] for r in records if "state" in r]
        passed = [s for i, s in enumerate(states) if i == 0 or states[i - 1] != s]
        assert passed == ["awaiting_start", "starting", "recognizing", "draining", "finished", "closed"]
        assert [r["kind"] for r in records[-2:]] == ["close", "ended"] and records[-2]["code"] == 1000


async def test_watching_a_session_the_speechmatics_vendor_client_started_shows_its_frames():
    from tests.test_end_to_end import transcribe_with_the_vendor_client

    async with explorer_server() as server, events(server.port) as sessions:
        await transcribe_with_the_vendor_client(server.port, DATA / "ps_goforward.wav")
        summary = await sessions.next(lambda r: r["kind"] == "session" and r["ended"])
        async with events(server.port, f"?session={summary['session']}") as feed:
            await feed.next(lambda r: r["kind"] == "ended")
    sent = [json.loads(r["text"]).get("message") for r in feed.records if r["kind"] == "in" and r["type"] == "text"]
    answered = {json.loads(r["text"]).get("message") for r in feed.records if r["kind"] == "out"}
    assert sent[0] == "StartRecognition" and sent[-1] == "EndOfStream"
    assert {"RecognitionStarted", "AudioAdded", "AddTranscript", "EndOfTranscript"} <= answered
    assert sum(r["kind"] == "in" and r["type"] == "binary" for r in feed.records) > 5


async def test_a_broken_rule_is_in_the_feed_with_its_id_requirement_error_and_close_code():
    rule = load_chart("voicerun").rules["VR-ORDER-001"]
    async with explorer_server() as server, events(server.port, "?tag=breaker") as feed:
        async with open_websocket_url(f"ws://127.0.0.1:{server.port}/ws?stt_watch=breaker") as ws:
            await ws.get_message()  # session.created
            await ws.send_message(json.dumps({"type": "audio.append", "audio": base64.b64encode(silence(0.1)).decode()}))
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    await ws.get_message()
        assert closed.value.reason.code == 1008
        violation = await feed.next(lambda r: r["kind"] == "violation")
        close = await feed.next(lambda r: r["kind"] == "close")
    assert violation["rule"] == "VR-ORDER-001" and violation["requirement"] == rule.requirement
    assert violation["error"] == "session_not_configured" and violation["close"] == 1008
    assert close["code"] == 1008 and close["rule"] == "VR-ORDER-001"
    audio = next(r for r in feed.records if r["kind"] == "in")
    assert "characters)" in audio["text"] and len(audio["text"]) < 200  # the base64 audio, shortened


async def test_a_feed_for_a_tag_waits_for_the_session_that_opens_with_it():
    async with explorer_server() as server, events(server.port, "?tag=later") as feed:
        await speechmatics_session(server.port, seconds=0.2)  # untagged: not this feed's
        await speechmatics_session(server.port, seconds=0.2, tag="later")
        opened = await feed.next(lambda r: r["kind"] == "open")
        assert opened["tag"] == "later" and "stt_watch" not in opened["query"]


# --- bounded ----------------------------------------------------------------------------------------------------


async def test_a_subscriber_that_does_not_read_holds_a_bounded_queue_and_learns_how_many_were_dropped():
    feed = Feed(limit=3)
    for n in range(10):
        feed.put({"n": n})
    assert feed.unread() == 3
    assert await feed.get() == [{"n": 0}, {"n": 1}, {"n": 2}, {"kind": "dropped", "count": 7}]
    feed.put({"n": 10})
    assert await feed.get() == [{"n": 10}]


async def test_a_session_watched_by_a_feed_that_never_reads_keeps_its_memory_bounded():
    hub = Hub()
    chart = load_chart("yourvoic")

    class Dialect:
        name, secret_path = "yourvoic", None
        machine = chart.machine()
        credential = staticmethod(lambda: None)

    Dialect.chart = chart
    handshake = type("H", (), {"path": "/api/v1/stt/realtime/stream", "query": {}, "headers": {}})()
    with hub.subscribe(tag="t") as feed, hub.watch("s1", Dialect, handshake, "", "t") as watched:
        for _ in range(5 * QUEUE):
            watched.frame_in(b"\0" * 640, "streaming")
        assert feed.unread() == QUEUE and feed.dropped > 0 and len(watched.history) <= 500


async def test_feeds_beyond_the_limit_are_refused_with_503(monkeypatch):
    import stt.explorer

    monkeypatch.setattr(stt.explorer, "MAX_FEEDS", 1)
    async with explorer_server() as server, events(server.port):
        status, _, body = await get(server.port, "/explore/events")
        assert status == 503 and b"1 live feeds at once" in body
        assert (await get(server.port, "/explore/sessions.json"))[0] == 200  # the rest of the explorer still answers


def test_long_json_strings_are_shortened_and_short_frames_kept_as_they_are():
    frame = json.dumps({"type": "audio.append", "audio": "A" * 5000})
    assert json.loads(shorten(frame))["audio"].endswith("(5000 characters)")
    assert shorten('{"type":"session.close"}') == '{"type":"session.close"}'
    assert len(shorten("x" * 10000)) < 4100


async def test_a_frames_credentials_stay_out_of_the_feed_even_where_a_long_string_is_shortened():
    from stt.dialects.base import Handshake
    from stt.dialects.voicerun import VoiceRunDialect

    handshake = Handshake("/ws", {}, {"authorization": f"Bearer {KEY}"})
    with Hub().watch("s1", VoiceRunDialect(handshake), handshake, "", None) as watched:
        watched.frame_in(json.dumps({"type": "x", "url": "wss://h/p?token=SECRETSECRET" + "a" * 300,
                                     "bare": "b" * 30 + KEY + "c" * 200, "key": KEY}), "updated")
    text = watched.history[-2]["text"]  # before its "ended"
    assert "SECRETSE" not in text and KEY[:8] not in text and text.count("<redacted>") == 3, text
