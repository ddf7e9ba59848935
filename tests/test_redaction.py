"""No secret in any log line, logbook or report (stt.redaction): the one redaction, and what a real `stt serve`
writes when a Scriptix stream-mode client brings its token in the path, right or wrong, in both log formats and
in conformance mode."""

import json
import re

import pytest
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from stt.dialects.scriptix import STREAM_PATH
from stt.redaction import REDACTED, connection_secrets, redact, redact_items, redact_path

RIGHT = "s3cret-Right-Token"
WRONG = "wr0ng-Guess-Token"
SHORT = "Zq9"  # shorter than any secret searched for in free text: a path segment is redacted all the same


def test_a_known_secret_and_every_credentials_value_are_redacted_wherever_they_appear():
    assert redact(f"session open: scriptix /v2/client/{RIGHT}", [RIGHT]) == f"session open: scriptix /v2/client/{REDACTED}"
    assert redact("GET /x?lang=en&token=abc&api_key=q1&jwt=e.y.j") == \
        f"GET /x?lang=en&token={REDACTED}&api_key={REDACTED}&jwt={REDACTED}"
    assert redact('{"action":"start","key":"k1"}') == f'{{"action":"start","key":"{REDACTED}"}}'
    assert redact("monkey=banana, the keyboard") == "monkey=banana, the keyboard"  # not a credential's name
    assert redact("a key of 3: abc", ["abc"]) == "a key of 3: abc"  # too short to look for in free text


def test_a_path_token_is_redacted_whatever_its_length_and_the_rest_of_the_path_is_kept():
    assert redact_path(f"/v2/client/{SHORT}", STREAM_PATH) == f"/v2/client/{REDACTED}"
    assert redact_path(f"/v2/client/{RIGHT}/", STREAM_PATH) == f"/v2/client/{REDACTED}/"
    assert redact_path("/v2/realtime", STREAM_PATH) == "/v2/realtime"


def test_headers_and_query_lose_their_credentials_values_and_keep_their_names():
    headers = {"Authorization": f"Bearer {RIGHT}", "x-api-key": "k", "user-agent": f"client carrying {RIGHT}"}
    secrets = connection_secrets("/v2", {}, headers)
    assert RIGHT in secrets
    assert redact_items(headers, secrets) == {"Authorization": REDACTED, "x-api-key": REDACTED,
                                              "user-agent": f"client carrying {REDACTED}"}
    assert connection_secrets(f"/v2/client/{SHORT}", {"token": "t0ken"}, {}, STREAM_PATH) == ["t0ken", SHORT]


# --- a real stt serve --------------------------------------------------------------------------------------


async def stream_session(port: int, token: str, url: str = "http://192.0.2.1/a.wav") -> tuple[list[dict], int]:
    """A Scriptix stream-mode client: every message until the close, and the close code. The URL is on a
    documentation address, which the server refuses to fetch: nothing leaves the machine."""
    messages = []
    async with open_websocket_url(f"ws://127.0.0.1:{port}/v2/client/{token}?url={url}") as ws:
        try:
            while True:
                messages.append(json.loads(await ws.get_message()))
        except ConnectionClosed as exc:
            return messages, exc.reason.code


@pytest.mark.parametrize("log_format", ["json", "text"])
async def test_the_scriptix_path_token_never_reaches_the_servers_log(log_format):
    from tests.test_shutdown import listening_port, serve_process

    async with serve_process("--api-key", RIGHT, "--log-format", log_format) as (_, log):
        with trio.fail_after(20):
            port = int((await log.wait_for(r"listening on ws://127\.0\.0\.1:(\d+)"))[1])
            for token in (RIGHT, WRONG, SHORT):
                await stream_session(port, token)
            await stream_session(port, RIGHT, url=f"http://192.0.2.1/a.wav?token={WRONG}")
            for _ in range(4):  # every session's close line is written
                await log.wait_for(r"closed (1000|1008)")
            while len(re.findall(r"session \S+ closed", str(log))) < 4:
                await trio.sleep(0.05)
    text = str(log)
    assert text.count("/v2/client/<redacted>") >= 4, text  # the open lines are there, without the tokens
    for token in (RIGHT, WRONG, SHORT):
        assert token not in text, text


async def test_the_scriptix_path_token_never_reaches_a_conformance_logbook_or_report(tmp_path):
    from tests.test_shutdown import listening_port, serve_process

    async with serve_process("--api-key", RIGHT, "--conformance", str(tmp_path)) as (_, log):
        with trio.fail_after(20):
            port = await listening_port(log)
            for token in (RIGHT, WRONG, SHORT):
                await stream_session(port, token)
            while len(re.findall(r"client-conformance report", str(log))) < 3:
                await trio.sleep(0.05)
    written = sorted(tmp_path.iterdir())
    assert {p.suffix for p in written} >= {".jsonl", ".json", ".html", ".xml"}
    for path in written:
        text = path.read_text()
        for token in (RIGHT, WRONG, SHORT):
            assert token not in text, f"{path.name}: {text}"
    opened = [json.loads(p.read_text().splitlines()[0]) for p in written if p.suffix == ".jsonl"]
    assert [o["path"] for o in opened] == ["/v2/client/<redacted>"] * 3


def test_both_log_formats_hide_a_credentials_value_whoever_logged_it():
    import logging

    from stt.logs import JsonFormatter, TextFormatter

    record = logging.LogRecord("stt.elsewhere", logging.WARNING, __file__, 1, "fetching %s", (
        "http://192.0.2.1/a.wav?api_key=q9q9q9q9&lang=en",), None)
    record.url = "ws://127.0.0.1:9000/v2?jwt=e30.e30.sig"
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == f"fetching http://192.0.2.1/a.wav?api_key={REDACTED}&lang=en"
    assert line["url"] == f"ws://127.0.0.1:9000/v2?jwt={REDACTED}"
    assert "q9q9q9q9" not in TextFormatter().format(record)
