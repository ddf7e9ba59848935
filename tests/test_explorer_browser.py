"""The explorer page in headless Chromium, driven over its DevTools protocol, with a real recording as the fake
microphone (ps_goforward.wav: "go forward ten meters"): for five dialects the page, as the vendor's client, gets
the final transcript from the sphinx engine, its chart's highlighted state passes through the chart's states in
order, and the rule-breaking button brings the chart's error and close code; a fault plan picked on the page,
a dropped file, and watching another client's session work too. A screenshot of each is kept in tmp_path.
Skipped where there is no chromium."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
from trio_websocket import open_websocket_url

from stt.statechart import load_chart
from tests.helpers import DATA, REFERENCES
from tests.test_explorer import explorer_server

RECORDING = DATA / "ps_goforward.wav"

#: dialect -> the states its chart passes through in a whole session, in order
STATES = {
    "voicerun": ["created", "updating", "updated", "closing", "finished", "closed"],
    "speechmatics": ["awaiting_start", "starting", "recognizing", "draining", "finished", "closed"],
    "yourvoic": ["streaming", "draining", "finished", "closed"],
    "deepgram": ["streaming", "closing", "finished", "closed"],
    "assemblyai": ["streaming", "terminating", "terminated", "closed"],
}
#: dialect -> the rule its page's first rule-breaking frame breaks
BROKEN = {"voicerun": "VR-ORDER-001", "speechmatics": "SM-ORDER-001", "yourvoic": "YV-MSG-002",
          "deepgram": "DG-MSG-002", "assemblyai": "AA-MSG-003"}


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    pytest.skip("no chromium to run the explorer page (apt-get install chromium; .ci/run installs it)")


class Page:
    """One browser tab over the DevTools protocol: `call` a method, `js` an expression's value."""

    def __init__(self, ws):
        self.ws, self.ids = ws, 0

    async def call(self, method: str, **params) -> dict:
        self.ids += 1
        await self.ws.send_message(json.dumps({"id": self.ids, "method": method, "params": params}))
        while True:
            message = json.loads(await self.ws.get_message())
            if message.get("id") == self.ids:
                assert "error" not in message, message
                return message["result"]

    async def js(self, expression: str):
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True, userGesture=True,
                                 awaitPromise=True)
        assert "exceptionDetails" not in result, result
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = 30):
        with trio.fail_after(timeout):
            while not (value := await self.js(f"(() => {{ try {{ return {expression}; }} catch {{ return null; }} }})()")):
                await trio.sleep(0.2)
        return value

    async def data(self) -> dict:
        return await self.js("({...document.body.dataset, status: document.getElementById('status').textContent})")

    async def screenshot(self, path: Path) -> None:
        shot = await self.call("Page.captureScreenshot", format="png")
        path.write_bytes(base64.b64decode(shot["data"]))


@asynccontextmanager
async def browser(profile: Path):
    """Headless Chromium whose microphone is the recording, and its first tab."""
    command = [chromium(), "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
               "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
               f"--use-file-for-fake-audio-capture={RECORDING}%noloop", "--autoplay-policy=no-user-gesture-required",
               "--remote-debugging-port=0", f"--user-data-dir={profile}", "--window-size=1400,1000", "about:blank"]
    async with trio.open_nursery() as nursery:
        process = await nursery.start(lambda task_status: trio.run_process(
            command, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL, check=False,
            task_status=task_status))
        try:
            active = profile / "DevToolsActivePort"  # its port, once it listens
            with trio.fail_after(60):
                while not (active.exists() and active.read_text().strip()):
                    assert process.returncode is None, "chromium did not start"
                    await trio.sleep(0.1)
            port = int(active.read_text().split()[0])
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                await stream.send_all(f"GET /json/list HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
                answer = b""
                with trio.fail_after(10):  # it keeps the connection open: read what Content-Length says
                    while not (head := re.match(rb"(.*?)\r\n\r\n", answer, re.S)) or len(answer) - head.end() < int(
                            re.search(rb"(?i)content-length: *(\d+)", head[1])[1]):
                        answer += await stream.receive_some(1 << 16)
            targets = json.loads(answer.split(b"\r\n\r\n", 1)[1])
            url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
            async with open_websocket_url(url, max_message_size=1 << 26) as ws:
                page = Page(ws)
                await page.call("Page.enable")
                yield page
        finally:
            process.terminate()
            nursery.cancel_scope.cancel()


async def speak_and_break(page: Page, port: int, dialect: str, artifacts: Path) -> None:
    await page.call("Page.navigate", url=f"http://127.0.0.1:{port}/explore?dialect={dialect}")
    await page.wait_for("document.body.dataset.loaded === '1' && document.querySelector('#diagram svg') !== null")
    await page.js("document.getElementById('speak').click()")
    await page.wait_for("document.body.dataset.session !== undefined", 20)  # the session is under way
    await trio.sleep(4.5)  # the recording is 2.8 s: it has all been heard
    await page.js("document.getElementById('stop').click()")
    await page.wait_for("document.body.dataset.close !== undefined && document.body.dataset.clientClose", 60)
    seen = await page.data()
    await page.screenshot(artifacts / f"explorer-{dialect}.png")
    assert seen["close"] == "1000" and seen["clientClose"] == "1000", seen
    assert seen["states"].split() == STATES[dialect], seen
    words = REFERENCES[RECORDING.name].lower().split()
    heard = re.sub(r"[^\w ]", "", seen.get("finals", "").lower()).replace("10", "ten").split()  # YourVoic: "10."
    assert sum(word in heard for word in words) >= len(words) - 1, (heard, words)  # sphinx hears it
    current = await page.js("[...document.querySelectorAll('#diagram .state.current')].map(g => g.dataset.state)")
    assert current == ["closed"]

    rule = load_chart(dialect).rules[BROKEN[dialect]]
    await page.js(f"document.getElementById('rule').value = '{BROKEN[dialect]}'")
    await page.js("document.getElementById('break').click()")
    await page.wait_for("document.body.dataset.close !== undefined && document.body.dataset.clientClose", 20)
    seen = await page.data()
    await page.screenshot(artifacts / f"explorer-{dialect}-broken.png")
    # A rule that does not close (Deepgram's unknown message type) leaves the session open: the page ends it.
    assert seen["rule"] == rule.id and seen["close"] == seen["clientClose"] == str(rule.close or 1000), seen
    verdict = await page.js("document.getElementById('verdict').textContent")
    assert rule.requirement in verdict and f"error: {rule.error or rule.warning or '—'} (“{rule.message}”)" in verdict
    assert f"close: {rule.close}" in verdict if rule.close else "close: none (the session goes on)" in verdict


async def fault_plan(page: Page, plan: str, artifacts: Path) -> None:
    """The next session, with a fault plan the page picked: the server's close reaches the page."""
    before = (await page.data())["session"]
    await page.js(f"document.getElementById('fault').value = '{plan}'")
    await page.js("document.getElementById('speak').click()")
    await page.wait_for(f"document.body.dataset.session !== '{before}' && document.body.dataset.clientClose "
                        "&& document.body.dataset.close", 30)
    seen = await page.data()
    await page.screenshot(artifacts / "explorer-fault.png")
    assert seen["close"] == seen["clientClose"] == "4000", seen
    assert "fault plan: close=4000@1s" in await page.js("document.getElementById('frames').textContent")
    await page.js("document.getElementById('fault').value = ''")


async def drop_a_file(page: Page, dialect: str, artifacts: Path) -> None:
    """The recording given to the page's file input, as a learner drops it: the page decodes it, sends it in
    real time as the dialect's frames, and gets its transcript."""
    await page.js(f"document.getElementById('dialect').value = '{dialect}';"
                  "document.getElementById('dialect').dispatchEvent(new Event('change'))")
    await page.wait_for(f"document.querySelector('#endpoint').textContent.startsWith('/')", 10)
    root = await page.call("DOM.getDocument")
    node = await page.call("DOM.querySelector", nodeId=root["root"]["nodeId"], selector="#file")
    await page.call("DOM.setFileInputFiles", files=[str(RECORDING)], nodeId=node["nodeId"])
    await page.wait_for("document.body.dataset.close !== undefined && document.body.dataset.clientClose", 30)
    seen = await page.data()
    await page.screenshot(artifacts / f"explorer-{dialect}-file.png")
    assert seen["states"].split() == STATES[dialect] and seen["close"] == "1000", seen
    assert "forward" in seen.get("finals", "").lower(), seen


async def watch_another_client(page: Page, port: int, artifacts: Path) -> None:
    """A session of a client that is not the page (raw Speechmatics frames, sent over 3 s): its row appears in
    the list, and watching it shows its frames and its states as they come."""
    from tests.test_explorer import speechmatics_session

    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: speechmatics_session(port, seconds=3.0, pace=0.1))
        row = "document.querySelector('#session-list tr:not(.ended) button')"
        await page.wait_for(f"{row} !== null", 10)
        await page.js(f"{row}.click()")
        await page.wait_for("document.body.dataset.states?.includes('recognizing')", 10)
    await page.wait_for("document.body.dataset.close !== undefined", 20)
    seen = await page.data()
    await page.screenshot(artifacts / "explorer-watching.png")
    assert seen["states"].split() == STATES["speechmatics"] and seen["close"] == "1000"
    assert "clientClose" not in seen  # the page was not its client
    folded = await page.js("document.querySelector('#frames .run pre').textContent")
    assert re.match(r"\d+ audio frames", folded)


async def test_the_page_speaks_five_dialects_from_the_fake_microphone_and_shows_states_finals_and_broken_rules(
        tmp_path):
    chromium()
    async with explorer_server(engine="sphinx", decode_workers=1, allow_client_faults=True) as server, \
            browser(tmp_path / "profile") as page:
        for dialect in STATES:
            await speak_and_break(page, server.port, dialect, tmp_path)
        await fault_plan(page, "close=4000@1s", tmp_path)
        await drop_a_file(page, "speechmatics", tmp_path)
        await watch_another_client(page, server.port, tmp_path)
    print(f"screenshots: {tmp_path}")
