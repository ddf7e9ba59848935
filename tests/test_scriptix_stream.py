"""Scriptix stream mode: the server reads the audio itself from a URL that a local HTTP server serves, a
direct MP3 and an HLS playlist of AAC segments made from real speech, and transcribes it with the real
recognizer; and the ways it fails: an unreadable URL, a file that is not audio, a private address."""

import json
import wave

import numpy as np
import pytest
from trio_websocket import ConnectionClosed, open_websocket_url

from stt.wer import wer
from tests.helpers import DATA, REFERENCES, encode_audio, running_server, serve_directory, wait_until



def samples(name: str) -> np.ndarray:
    with wave.open(str(DATA / name)) as f:
        return np.frombuffer(f.readframes(f.getnframes()), "<i2")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("site")
    (root / "goforward.mp3").write_bytes(encode_audio(samples("ps_goforward.wav"), 16000, "mp3", "libmp3lame",
                                                      bit_rate=64_000))
    for i, part in enumerate(np.array_split(samples("ps_librivox_0880.wav"), 3)):
        (root / f"0880-{i}.aac").write_bytes(encode_audio(part, 16000, "adts", "aac", bit_rate=64_000))
    entries = "".join(f"#EXTINF:1.0,\n0880-{i}.aac\n" for i in range(3))
    (root / "0880.m3u8").write_text(f"#EXTM3U\n#EXT-X-TARGETDURATION:1\n{entries}#EXT-X-ENDLIST\n")
    (root / "notes.txt").write_text("these are not the droids you are looking for\n" * 20)
    with serve_directory(root) as base:
        yield base


async def listen(port: int, stream_url: str) -> tuple[list[str], int]:
    """A stream-mode client: connect with the URL and read every frame until the server closes."""
    frames = []
    async with open_websocket_url(f"ws://127.0.0.1:{port}/v2/client/TOKEN?type=fast&url={stream_url}") as ws:
        try:
            while True:
                frames.append(await ws.get_message())
        except ConnectionClosed as exc:
            return frames, exc.reason.code


@pytest.mark.parametrize("path, name", [("goforward.mp3", "ps_goforward.wav"), ("0880.m3u8", "ps_librivox_0880.wav")])
async def test_stream_mode_transcribes_what_the_url_serves(site, path, name):
    async with running_server(engine="sphinx", decode_workers=1, allow_private_urls=True) as server:
        frames, code = await listen(server.port, f"{site}/{path}")
        await wait_until(lambda: server.endings[("scriptix", "normal", "LC-END-001")] == 1)
    assert frames[0] == '{"state":"loading"}' and '"listening"' in frames[1]
    assert frames[-1] == '{"state":"stopped"}' and code == 1000
    text = " ".join(json.loads(f)["text"] for f in frames if f.startswith('{"result"'))
    print(f"{path}: WER {wer(REFERENCES[name], text):.3f}: {text!r}")
    assert wer(REFERENCES[name], text) <= 0.5


@pytest.mark.parametrize("path, why", [
    ("missing.mp3", "HTTP 404"),
    ("notes.txt", "unrecognised audio file"),
])
async def test_a_url_that_is_not_audio_is_an_error_and_close(site, path, why):
    async with running_server(allow_private_urls=True) as server:
        frames, code = await listen(server.port, f"{site}/{path}")
    error = json.loads(frames[-1])["error"]
    assert why in error and code == 1000


async def test_private_addresses_are_refused_unless_the_server_allows_them(site):
    async with running_server() as server:
        frames, code = await listen(server.port, f"{site}/goforward.mp3")
    assert "not a public address" in json.loads(frames[-1])["error"] and code == 1000


@pytest.mark.parametrize("host", ["[::127.0.0.1]", "[64:ff9b::7f00:1]", "[2002:7f00:1::1]", "[::ffff:10.0.0.1]",
                                  "192.0.2.1"])
async def test_a_refused_stream_url_names_no_address_and_the_log_names_the_flag_that_lifts_it(host):
    """Through `stt serve`: the client is told its URL is not allowed (not that its audio could not be decoded),
    without the address; the operator's log says which address, and --allow-private-urls."""
    import trio

    from tests.test_shutdown import listening_port, serve_process

    async with serve_process() as (_, log):
        with trio.fail_after(20):
            port = await listening_port(log)
            frames, code = await listen(port, f"http://{host}:8000/a.wav")
            line = await log.wait_for_json(lambda line: "stream URL refused" in line["message"])
    assert json.loads(frames[-1]) == {"error": "the stream URL is not allowed: its host is not a public address"}
    assert code == 1000
    assert "--allow-private-urls" in line["message"] and host.strip("[]") in line["message"]
