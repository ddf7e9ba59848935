"""End to end: the published Speechmatics client (speechmatics-python's CLI, unmodified, in its own process)
transcribes real speech through the server. The client is the judge of compatibility."""

import json
import sys
import wave
from pathlib import Path

import numpy as np
import pytest
import trio

from stt.engines.base import StreamSettings
from stt.events import Final
from stt.wer import wer
from tests.helpers import running_server, wait_until

DATA = Path(__file__).resolve().parent / "data"
REFERENCES = {
    line.split("\t")[1]: line.split("\t")[5].strip()
    for line in (DATA / "refs.tsv").read_text().splitlines()[1:]
}
CLIENT = [sys.executable, "-W", "ignore", "-c", "import sys; from speechmatics.cli import main; sys.exit(main())"]


async def transcribe_with_the_vendor_client(port: int, wav: Path, *extra: str) -> list[dict]:
    """Run the command of the README against the server; return the messages it printed."""
    command = CLIENT + ["rt", "transcribe", "--url", f"ws://127.0.0.1:{port}/v2", "--ssl-mode", "none",
                        "--raw", "pcm_s16le", "--sample-rate", "16000", "--enable-partials", "--print-json",
                        *extra, str(wav)]
    with trio.fail_after(120):
        done = await trio.run_process(command, capture_stdout=True, capture_stderr=True, check=False)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    return [json.loads(line) for line in done.stdout.decode().splitlines() if line.startswith("{")]


def final_text(messages: list[dict]) -> str:
    return " ".join(m["metadata"]["transcript"] for m in messages if m["message"] == "AddTranscript").strip()


def batch_transcript(wav: Path) -> str:
    """The same engine, in this process, on the whole file at once.

    It decodes the bytes the client sends: with --raw, the Speechmatics CLI streams the file as it is, its
    44-byte RIFF header included, which shifts every 10 ms frame by 22 samples and can change a word."""
    from stt.engines.sphinx import SphinxRecognizer

    data = wav.read_bytes()
    samples = np.frombuffer(data[: len(data) // 2 * 2], dtype="<i2")
    recognizer = SphinxRecognizer(StreamSettings())
    try:
        results = recognizer.feed(samples) + recognizer.finish()
    finally:
        recognizer.close()
    return " ".join(w.text for r in results if isinstance(r, Final) for w in r.words)


async def test_vendor_client_against_the_scripted_engine():
    async with running_server(engine="scripted") as server:
        messages = await transcribe_with_the_vendor_client(server.port, DATA / "ps_goforward.wav")
        kinds = [m["message"] for m in messages]
        assert kinds.index("AddPartialTranscript") < kinds.index("AddTranscript")
        # 2.79 s of audio: the script's words end at 0.4, 0.9, ... 2.4 s; a final after 4, the fifth at the end
        assert [m["metadata"]["transcript"] for m in messages if m["message"] == "AddTranscript"] == [
            "one two three four", "five"]
        await wait_until(lambda: server.endings[("speechmatics", "normal", "LC-END-001")] == 1)


@pytest.mark.parametrize("name", ["ps_goforward.wav", "ps_librivox_0880.wav", "ps_librivox_0870.wav"])
async def test_vendor_client_transcribes_real_speech_as_well_as_the_engine_offline(name):
    async with running_server(engine="sphinx", decode_workers=1) as server:
        messages = await transcribe_with_the_vendor_client(server.port, DATA / name)
        await wait_until(lambda: server.endings[("speechmatics", "normal", "LC-END-001")] == 1)
    reference = REFERENCES[name]
    streamed = wer(reference, final_text(messages))
    offline = wer(reference, await trio.to_thread.run_sync(batch_transcript, DATA / name))
    print(f"{name}: streamed WER {streamed:.3f}, batch WER {offline:.3f}: {final_text(messages)!r}")
    assert streamed <= 1.1 * offline + 1e-9
    assert streamed <= 0.5

    # Partials arrive while the audio streams, and finals carry word timings inside the audio.
    kinds = [m["message"] for m in messages]
    assert "AddPartialTranscript" in kinds and kinds[-1] == "AddTranscript"
    with wave.open(str(DATA / name)) as f:
        duration = f.getnframes() / f.getframerate()
    words = [r for m in messages if m["message"] == "AddTranscript" for r in m["results"]]
    assert words and all(0 <= w["start_time"] <= w["end_time"] <= duration + 0.05 for w in words)
    assert all(0 <= w["alternatives"][0]["confidence"] <= 1 for w in words)
    starts = [w["start_time"] for w in words]
    assert starts == sorted(starts)
