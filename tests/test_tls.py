"""wss://: the server with --certfile/--keyfile, checked with a self-signed certificate made by the openssl CLI."""

import json
import logging
import shutil
import ssl
import subprocess

import pytest
import trio
from trio_websocket import open_websocket_url

from stt.cli import _parser
from stt.config import ConfigError, resolve, server_config
from stt.server import open_server
from stt.settings import ServerConfig
from tests.helpers import frames_of, kinds, receive_all, silence, start_message


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    """(cert.pem, key.pem, cert-and-key.pem) for 127.0.0.1 and localhost, valid for a day."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=30)
    both = folder / "both.pem"
    both.write_text(cert.read_text() + key.read_text())
    return cert, key, both


def client_context(cert) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(cert))


async def transcribe(port: int, context: ssl.SSLContext) -> tuple[list[dict], int | None]:
    async with open_websocket_url(f"wss://127.0.0.1:{port}/v2", ssl_context=context) as ws:
        await ws.send_message(start_message())
        for frame in frames_of(silence(2.0)):
            await ws.send_message(frame)
        await ws.send_message(json.dumps({"message": "EndOfStream", "last_seq_no": 100}))
        return await receive_all(ws, until="EndOfTranscript")


async def test_a_speechmatics_client_transcribes_over_wss(certificate, caplog):
    cert, key, _ = certificate
    caplog.set_level(logging.INFO, logger="stt.server")
    async with open_server(ServerConfig(port=0, engine="scripted", certfile=str(cert), keyfile=str(key))) as server:
        with trio.fail_after(10):
            messages, _ = await transcribe(server.port, client_context(cert))
    finals = [m["metadata"]["transcript"] for m in messages if m["message"] == "AddTranscript"]
    assert finals == ["one two three four"] and kinds(messages)[-1] == "EndOfTranscript"
    assert any(f"listening on wss://127.0.0.1:{server.port}" in r.getMessage() for r in caplog.records)


async def test_a_certificate_file_that_holds_the_key_too_needs_no_keyfile(certificate):
    cert, _, both = certificate
    config = server_config(resolve(_parser, ["serve", "--engine", "scripted", "--port", "0", "--certfile",
                                             str(both)], env={}))
    async with open_server(config) as server:
        with trio.fail_after(10):
            messages, _ = await transcribe(server.port, client_context(cert))
    assert kinds(messages)[-1] == "EndOfTranscript"


async def test_a_plain_ws_client_is_not_served_and_the_server_goes_on(certificate):
    cert, key, _ = certificate
    async with open_server(ServerConfig(port=0, engine="scripted", certfile=str(cert), keyfile=str(key))) as server:
        plain = await trio.open_tcp_stream("127.0.0.1", server.port)  # what a ws:// client sends first
        await plain.send_all(b"GET /v2 HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                             b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        answer = b""
        with trio.move_on_after(0.5):  # a plain server answers 101 at once; a TLS server has no HTTP to give
            while chunk := await plain.receive_some():
                answer += chunk
        assert b"HTTP/1.1" not in answer
        with trio.fail_after(10):
            messages, _ = await transcribe(server.port, client_context(cert))  # while the plain one is still open
        await plain.aclose()
    assert kinds(messages)[-1] == "EndOfTranscript"


def test_a_key_that_does_not_match_or_a_certificate_that_is_not_one_is_refused_at_start(certificate, tmp_path):
    cert, key, _ = certificate
    with pytest.raises(ConfigError, match="--certfile .*key.pem"):  # a key is not a certificate
        server_config(resolve(_parser, ["serve", "--certfile", str(key)], env={}))
    protected = tmp_path / "protected.pem"
    subprocess.run(["openssl", "ec", "-in", str(key), "-aes128", "-passout", "pass:secret", "-out", str(protected)],
                   check=True, capture_output=True, timeout=30)
    with pytest.raises(ConfigError, match="passphrase"):  # refused, not prompted for
        server_config(resolve(_parser, ["serve", "--certfile", str(cert), "--keyfile", str(protected)], env={}))
