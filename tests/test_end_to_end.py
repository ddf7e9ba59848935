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
from tests.helpers import DATA, REFERENCES, encode_audio, running_server, wait_until

CLIENT = [sys.executable, "-W", "ignore", "-c", "import sys; from speechmatics.cli import main; sys.exit(main())"]


RAW = ("--raw", "pcm_s16le", "--sample-rate", "16000")


async def transcribe_with_the_vendor_client(port: int, wav: Path, *extra: str, audio: tuple = RAW) -> list[dict]:
    """Run the command of the README against the server; return the messages it printed.
    With audio=() the client sends the file as it is, as audio_format {"type": "file"}."""
    command = CLIENT + ["rt", "transcribe", "--url", f"ws://127.0.0.1:{port}/v2", "--ssl-mode", "none",
                        *audio, "--enable-partials", "--print-json", *extra, str(wav)]
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


# --- the same speech in every container the client can send as a file -----------------------------------------

#: The four longest real recordings in tests/data: 63 words, 23 s with the gaps (all eleven, 96 words and 43 s,
#: took two minutes of the suite for the same verdicts; the lossy files' distance from the source is in words).
CORPUS = ["ps_librivox_0870.wav", "ps_librivox_0880.wav", "ps_librivox_0890.wav", "ps_librivox_0920.wav"]

#: name -> (container, codec, codec rate, bit rate); bit rates are common choices for speech.
FILES = {
    "wav": None,
    "flac": ("flac", "flac", None, None),
    "mp3": ("mp3", "libmp3lame", None, 64_000),
    "ogg": ("ogg", "libopus", 48_000, 32_000),
    "aac": ("adts", "aac", None, 64_000),
    "m4a": ("mp4", "aac", None, 64_000),
    "webm": ("webm", "libopus", 48_000, 32_000),
}


def corpus_samples() -> np.ndarray:
    gap = np.zeros(8000, np.int16)  # half a second between recordings
    parts = []
    for name in CORPUS:
        with wave.open(str(DATA / name)) as f:
            parts += [np.frombuffer(f.readframes(f.getnframes()), "<i2"), gap]
    return np.concatenate(parts)


def decoded(data: bytes) -> np.ndarray:
    """The samples the server's decoder makes of a whole file, at 16 kHz."""
    from stt.audio import open_decoder
    from stt.events import AudioFormat

    with open_decoder(AudioFormat("file"), 16000) as decoder:
        return np.concatenate([decoder.decode(data), decoder.finish()])


async def test_every_container_transcribes_as_its_decoded_samples_do_as_raw_pcm(tmp_path):
    """The vendor client sends the same speech as each file (audio_format "file"), and as raw PCM (--raw): the
    samples the file decodes to, so the codec's own loss is on both sides.

    Each file, streamed in the client's chunks, must give that raw transcript word for word: the container,
    the chunking and the resampling lose nothing. (Comparing a lossy file with the source instead would
    measure the encoder: pocketsphinx moves by a few words out of 63 with the LAME build in the PyAV wheel.)
    The lossless files decode to the source itself. And a lossy file may not stray from the source by more
    than 0.1 WER, which a decoder at the wrong rate, gain or offset would."""
    samples = corpus_samples()
    reference = " ".join(REFERENCES[name] for name in CORPUS)
    paths, raw_of = {}, {}  # name -> file; container -> the raw PCM file of its samples (one per distinct decode)
    raws = {samples.tobytes(): "source.raw"}
    for name, spec in FILES.items():
        paths[name] = tmp_path / f"corpus.{name}"
        if spec is None:
            with wave.open(str(paths[name]), "wb") as f:
                f.setnchannels(1), f.setsampwidth(2), f.setframerate(16000)
                f.writeframes(samples.tobytes())
        else:
            container, codec, codec_rate, bit_rate = spec
            paths[name].write_bytes(encode_audio(samples, 16000, container, codec, codec_rate=codec_rate,
                                                 bit_rate=bit_rate))
        pcm = decoded(paths[name].read_bytes()).tobytes()
        raw_of[name] = raws.setdefault(pcm, f"{name}.raw")
    for pcm, name in raws.items():
        paths[name] = tmp_path / name
        paths[name].write_bytes(pcm)
    assert raw_of["wav"] == raw_of["flac"] == "source.raw"
    transcripts = {}
    limiter = trio.CapacityLimiter(2)  # as many clients as decode workers

    async def run(name: str, server) -> None:
        async with limiter:
            messages = await transcribe_with_the_vendor_client(
                server.port, paths[name], audio=RAW if name.endswith(".raw") else ())
        transcripts[name] = final_text(messages)

    async with running_server(engine="sphinx", decode_workers=2) as server:
        async with trio.open_nursery() as nursery:
            for name in paths:
                nursery.start_soon(run, name, server)
        await wait_until(lambda: server.endings[("speechmatics", "normal", "LC-END-001")] == len(paths))
    rates = {name: wer(reference, text) for name, text in transcripts.items()}
    print("WER by container: " + ", ".join(f"{name} {rates[name]:.3f} (decoded, as raw {rates[raw_of[name]]:.3f})"
                                           for name in FILES) + f"; source {rates['source.raw']:.3f}")
    assert {name: (transcripts[name], transcripts[raw_of[name]]) for name in FILES
            if transcripts[name] != transcripts[raw_of[name]]} == {}
    assert {name: rates[name] for name in FILES if abs(rates[name] - rates["source.raw"]) > 0.1} == {}
