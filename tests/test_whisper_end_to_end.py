"""End to end with the whisper engine on the real recordings that came with the project (../shared/audio):
through the V-Blaze dialect (whole utterances: uttmaxtime is 80 s) the transcripts are accurate; through the
published Speechmatics client (speechmatics-python's CLI, in its own process, which sends the file as fast as
it is acknowledged) re-decoded partials arrive before the finals that supersede them, and so they do for a
client that streams at real time; a damaged model stops `stt serve` with one line naming the file."""

import json
import os
import subprocess
import sys

import pytest
import trio

from stt.engines.whisper_model import BUNDLED_DIGESTS
from stt.wer import edit_distance, normalize
from tests.engines.test_whisper import copy_of_the_model
from tests.helpers import DATA, REFERENCES, REF_ROWS, connect, receive_all, running_server, start_message, wait_until
from tests.test_end_to_end import final_text, transcribe_with_the_vendor_client
from tests.test_vblaze_end_to_end import check_transcript, transcribe

#: The real recordings of ../shared/audio: 34 words.
SHARED = ["ps_librivox_0870.wav", "ps_librivox_0880.wav", "ps_goforward.wav"]


def test_the_shared_recordings_are_real_speech():
    assert {row[1] for row in REF_ROWS if row[2] == "real"} >= set(SHARED)


@pytest.mark.parametrize("partials", ["redecode", "two-pass"])
async def test_whisper_transcribes_real_speech_with_at_most_8_percent_word_errors(partials):
    errors = words = 0
    async with running_server(engine="whisper", decode_workers=2, engine_options={"partials": partials}) as server:
        for name in SHARED:
            messages, code = await transcribe(server.port, name, numtrans="false")
            assert code == 1000
            transcript = json.loads(messages[-1])
            hypothesis = normalize(check_transcript(transcript, name, "eng1:callcenter"))
            reference = normalize(REFERENCES[name])
            print(f"{partials} {name}: {' '.join(hypothesis)!r}")
            errors += edit_distance(reference, hypothesis)
            words += len(reference)
    print(f"{partials}: WER {errors / words:.3f} over {words} words")
    assert errors / words <= 0.08


def check_partials_then_finals(messages: list[dict]) -> None:
    kinds = [m["message"] for m in messages]
    assert kinds.index("AddPartialTranscript") < kinds.index("AddTranscript")
    assert kinds[-1] == "AddTranscript"  # the last final supersedes every partial
    last_final_end = 0.0
    for m in messages:  # a partial never reaches back behind a final already sent
        if m["message"] == "AddPartialTranscript":
            assert m["metadata"]["start_time"] >= last_final_end - 0.01
        elif m["message"] == "AddTranscript":
            last_final_end = m["metadata"]["end_time"]
    results = [r for m in messages if m["message"] == "AddTranscript" for r in m["results"]]
    assert results and all(r["start_time"] <= r["end_time"] for r in results)
    assert all(0 <= r["alternatives"][0]["confidence"] <= 1 for r in results)


@pytest.mark.parametrize("partials", ["redecode", "two-pass"])
async def test_the_vendor_client_sending_a_file_as_fast_as_acknowledged_gets_partials_superseded_by_finals(partials):
    errors = words = 0
    async with running_server(engine="whisper", decode_workers=2, engine_options={"partials": partials}) as server:
        for n, name in enumerate(SHARED, 1):
            messages = await transcribe_with_the_vendor_client(server.port, DATA / name)
            await wait_until(lambda: server.endings[("speechmatics", "normal", "LC-END-001")] == n)
            reference, hypothesis = normalize(REFERENCES[name]), normalize(final_text(messages))
            print(f"{partials} {name}: {' '.join(hypothesis)!r}")
            errors += edit_distance(reference, hypothesis)
            words += len(reference)
            check_partials_then_finals(messages)
    # Accuracy is asserted above; here 0870 (7.1 s of unbroken speech) is cut twice at max_delay 4 s, which costs
    # words at the cuts.
    print(f"max_delay 4 s: WER {errors / words:.3f} over {words} words")


async def test_a_client_streaming_at_real_time_gets_partials_while_it_speaks():
    import wave

    with wave.open(str(DATA / "ps_librivox_0870.wav"), "rb") as w:
        audio = w.readframes(w.getnframes())
    chunk = 3200  # 100 ms
    async with running_server(engine="whisper", decode_workers=2) as server:
        async with connect(server) as ws:
            await ws.send_message(start_message(partials=True))
            assert json.loads(await ws.get_message())["message"] == "RecognitionStarted"
            messages: list[dict] = []

            async def read() -> None:
                received, _ = await receive_all(ws, until="EndOfTranscript")
                messages.extend(received)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(read)
                t0 = trio.current_time()
                for k, i in enumerate(range(0, len(audio), chunk)):
                    await trio.sleep_until(t0 + k * 0.1)
                    await ws.send_message(audio[i:i + chunk])
                await ws.send_message(json.dumps({"message": "EndOfStream", "last_seq_no": k + 1}))
    messages = [m for m in messages if m["message"] in ("AddPartialTranscript", "AddTranscript")]
    check_partials_then_finals(messages)
    partials = [m for m in messages if m["message"] == "AddPartialTranscript"]
    assert len(partials) >= 2  # 7 s of unbroken speech (cut at max_delay 4 s): partials come while it is spoken
    hypothesis = normalize(final_text(messages))
    assert edit_distance(normalize(REFERENCES["ps_librivox_0870.wav"]), hypothesis) <= 3


def test_stt_serve_refuses_a_model_whose_files_differ_from_their_digests_naming_the_file(tmp_path):
    model = copy_of_the_model(tmp_path)
    (model / "SHA256SUMS").write_text("".join(f"{d}  {n}\n" for n, d in BUNDLED_DIGESTS.items()))
    (model / "tokenizer.json").write_bytes((model / "tokenizer.json").read_bytes()[:-10])  # truncated
    stt = os.path.join(os.path.dirname(sys.executable), "stt")
    done = subprocess.run([stt, "serve", "--engine", "whisper", "--whisper-model", str(model), "--host", "127.0.0.1",
                           "--port", "0"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "tokenizer.json differs" in done.stderr and "Traceback" not in done.stderr
