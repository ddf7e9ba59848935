"""`stt transcribe`, as a user runs it: the installed command in a subprocess, on real speech, in this process and
through a `stt serve` subprocess in every dialect; its outputs, its live line on a terminal, and its errors."""

from __future__ import annotations

import json
import os
import pty
import re
import socket
import subprocess
import wave

import numpy as np
import pytest

from stt.clients import Segment
from stt.subtitles import cues, subtitles
from stt.events import Word
from stt.wer import wer
from tests.helpers import DATA, REFERENCES, encode_audio, serve_directory
from tests.serve_process import STT, run_stt, stt_env, stt_serve

SPEECH = DATA / "ps_librivox_0880.wav"  # "he was not an ill disposed young man", 3.4 s: shorter than any max_delay
DIALECTS = ("speechmatics", "voicerun", "yourvoic", "vblaze", "scriptix", "deepgram", "assemblyai")


def words(text: str) -> str:
    """Lower case, no punctuation: dialects differ in both (YourVoic and V-Blaze punctuate)."""
    return " ".join(re.sub(r"[^\w' ]", " ", text.lower()).split())


def one_line_error(done) -> str:
    lines = done.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("stt transcribe: "), done.err
    assert "Traceback" not in done.err
    return lines[0]


def mp3_of(wav_path, tmp_path):
    with wave.open(str(wav_path)) as w:
        samples = np.frombuffer(w.readframes(w.getnframes()), "<i2")
        rate = w.getframerate()
    path = tmp_path / (wav_path.stem + ".mp3")
    path.write_bytes(encode_audio(samples, rate, "mp3", "mp3", bit_rate=64000))
    return path


@pytest.fixture(scope="module")
def in_process_json():
    """The whisper engine's finals for SPEECH, in this process, through the command: JSON lines."""
    done = run_stt("transcribe", str(SPEECH), "--json")
    assert done.returncode == 0, done.err
    return done.out


@pytest.fixture(scope="module")
def in_process(in_process_json):
    """... their text."""
    return "\n".join(json.loads(line)["text"] for line in in_process_json.splitlines()) + "\n"


def test_transcribe_a_wav_in_process_gives_the_words_of_the_recording(in_process):
    assert wer(REFERENCES[SPEECH.name], words(in_process)) <= 0.3, in_process


def test_transcribe_an_mp3_and_stdin_give_what_the_wav_gives(in_process, tmp_path):
    mp3 = run_stt("transcribe", str(mp3_of(SPEECH, tmp_path)))
    assert mp3.returncode == 0, mp3.err
    assert wer(words(in_process), words(mp3.out)) <= 0.2, (in_process, mp3.out)
    piped = run_stt("transcribe", "-", input=SPEECH.read_bytes())
    assert piped.returncode == 0, piped.err
    assert piped.out == in_process  # the same bytes: the same words, word for word


def test_transcribe_through_a_whisper_server_gives_what_the_engine_gives_in_process(in_process, tmp_path):
    mp3 = mp3_of(SPEECH, tmp_path)
    with stt_serve("--engine", "whisper", "--decode-workers", "1") as server:
        done = run_stt("transcribe", str(SPEECH), "--url", server["url"])
        piped = run_stt("transcribe", "-", "--url", server["url"], "--dialect", "yourvoic", input=mp3.read_bytes())
    assert done.returncode == 0, done.err
    assert words(done.out) == words(in_process)
    records = [json.loads(line) for line in server["lines"] if line.startswith("{")]
    noise = [r for r in records if not r["logger"].startswith("stt") and r["level"] in ("INFO", "DEBUG")]
    assert not noise, noise  # faster-whisper logs an INFO line per decode: off unless --log-level debug
    assert piped.returncode == 0, piped.err
    assert wer(words(in_process), words(piped.out)) <= 0.2, (in_process, piped.out)


def test_every_dialect_carries_the_engines_own_transcript():
    alone = run_stt("transcribe", str(SPEECH), "--engine", "scripted")
    assert alone.returncode == 0, alone.err
    with stt_serve("--engine", "scripted") as server:
        for dialect in DIALECTS:
            done = run_stt("transcribe", str(SPEECH), "--url", server["url"], "--dialect", dialect)
            assert done.returncode == 0, f"{dialect}: {done.err}"
            assert words(done.out) == words(alone.out), dialect


def test_json_and_subtitles_carry_the_word_times_of_the_audio(in_process_json):
    seconds = wave.open(str(SPEECH)).getnframes() / 16000
    finals = [json.loads(line) for line in in_process_json.splitlines()]
    timed = [w for f in finals for w in f["words"]]
    assert timed and all(0 <= w["start"] <= w["end"] <= seconds + 0.01 for w in timed)
    assert words(" ".join(f["text"] for f in finals)) == words(" ".join(w["text"] for w in timed))

    scripted = [json.loads(line) for line in run_stt("transcribe", str(SPEECH), "--engine", "scripted", "--json").out
                .splitlines()]
    srt = run_stt("transcribe", str(SPEECH), "--srt", "--engine", "scripted")
    assert srt.returncode == 0, srt.err
    blocks = srt.out.strip().split("\n\n")
    assert blocks and blocks[0].startswith("1\n")
    times = re.findall(r"(\d\d):(\d\d):(\d\d),(\d\d\d) --> (\d\d):(\d\d):(\d\d),(\d\d\d)", srt.out)
    assert len(times) == len(blocks) == len(scripted)
    first = scripted[0]["words"]
    assert times[0] == ("00", "00", "00", f"{round(first[0]['start'] * 1000):03d}", "00", "00",
                        f"{int(first[-1]['end']):02d}", f"{round(first[-1]['end'] * 1000) % 1000:03d}")
    vtt = run_stt("transcribe", str(SPEECH), "--vtt", "--engine", "scripted")
    assert vtt.out.startswith("WEBVTT\n\n") and " --> " in vtt.out and "," not in vtt.out.split("\n")[2]


def test_subtitle_cues_split_long_finals_and_keep_their_times():
    long = tuple(Word(f"w{i}", i * 0.5, i * 0.5 + 0.4) for i in range(30))  # 15 s of words
    found = cues([Segment(True, " ".join(w.text for w in long), long, 0.0, 14.9)])
    assert len(found) >= 3 and all(end - start <= 6.0 for start, end, _ in found)
    assert " ".join(text for *_, text in found) == " ".join(w.text for w in long)
    assert subtitles([], "vtt") == "WEBVTT\n\n"


def test_transcribe_reads_an_http_url():
    with serve_directory(DATA) as base:
        done = run_stt("transcribe", f"{base}/{SPEECH.name}", "--engine", "scripted")
        missing = run_stt("transcribe", f"{base}/missing.wav", "--engine", "scripted")
    alone = run_stt("transcribe", str(SPEECH), "--engine", "scripted")
    assert done.returncode == 0, done.err
    assert done.out == alone.out and done.out
    assert missing.returncode == 2
    assert "HTTP 404" in one_line_error(missing)


def test_partials_are_one_live_line_on_a_terminal_and_absent_in_a_pipe():
    with stt_serve("--engine", "scripted") as server:
        command = [STT, "transcribe", str(DATA / "ps_librivox_0870.wav"), "--url", server["url"]]
        piped = subprocess.run(command, capture_output=True, env=stt_env(), timeout=60)
        main, secondary = pty.openpty()
        try:
            on_tty = subprocess.run(command, stdout=secondary, stderr=subprocess.PIPE, env=stt_env(), timeout=60)
            os.close(secondary)
            shown = b""
            while True:
                try:
                    chunk = os.read(main, 65536)
                except OSError:
                    break
                if not chunk:
                    break
                shown += chunk
        finally:
            os.close(main)
    assert piped.returncode == 0 and on_tty.returncode == 0, (piped.stderr, on_tty.stderr)
    assert b"\r" not in piped.stdout and b"\x1b" not in piped.stdout
    assert b"\x1b" not in piped.stderr  # not a terminal: no progress line
    text = shown.decode()
    assert "\r\x1b[K" in text  # the live line, overwritten
    finals = [line.split("\r\x1b[K")[-1] for line in text.replace("\r\n", "\n").split("\n") if line]
    assert [words(f) for f in finals if f] == [words(f) for f in piped.stdout.decode().splitlines()]
    partial_only = {seg.split(" | ")[-1] for seg in text.split("\r\x1b[K")} - set(finals)
    assert partial_only - {""}, "no partial was shown on the terminal"


def on_a_terminal(command: list[str], stderr_too: bool = False) -> tuple[int, str]:
    """Run `command` with stdout (and stderr) on a pseudo-terminal; (exit status, what the terminal got)."""
    main, secondary = pty.openpty()
    try:
        done = subprocess.run(command, stdout=secondary, stderr=secondary if stderr_too else subprocess.DEVNULL,
                              env=stt_env(), timeout=60)
        os.close(secondary)
        shown = b""
        while True:
            try:
                chunk = os.read(main, 65536)
            except OSError:  # the other side is closed: all read
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(main)
    return done.returncode, shown.decode()


def test_a_terminal_shows_progress_with_audio_seconds_and_speed(tmp_path):
    mp3 = mp3_of(DATA / "ps_librivox_0870.wav", tmp_path)
    status, shown = on_a_terminal([STT, "transcribe", str(mp3), "--engine", "scripted"], stderr_too=True)
    assert status == 0, shown
    bars = re.findall(r"\[(#*) *\] +(\d+)% (\d+\.\d) s of audio", shown)
    assert bars and bars[-1][1] == "100", shown
    assert re.search(r"\d+\.\d s of audio in \d+\.\d s \(\d+\.\dx real time\)", shown), shown
    seconds = wave.open(str(DATA / "ps_librivox_0870.wav")).getnframes() / 16000
    assert abs(float(bars[-1][2]) - seconds) < 0.2  # the MP3's audio, decoded: its length within a frame or so


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_errors_exit_non_zero_with_one_line(tmp_path):
    bad = tmp_path / "notes.wav"
    bad.write_bytes(b"these are not the samples you are looking for" * 20)
    cases = [
        (["transcribe", str(SPEECH), "--url", f"ws://127.0.0.1:{_closed_port()}"], 3, "cannot connect"),
        (["transcribe", str(tmp_path / "absent.wav"), "--engine", "scripted"], 2, "No such file"),
        (["transcribe", str(bad), "--engine", "scripted"], 2, "unrecognised audio"),
        (["transcribe", str(tmp_path), "--engine", "scripted"], 2, "directory"),
        (["transcribe", "ftp://192.0.2.1/a.wav", "--engine", "scripted"], 2, "http"),
        (["transcribe", str(SPEECH), "--url", "http://127.0.0.1:9000"], 2, "ws://"),
        (["transcribe", str(SPEECH), "--engine", "whisper", "--whisper-model", str(tmp_path)], 2, "model.bin"),
        (["transcribe", str(SPEECH), "--url", "ws://127.0.0.1:1", "--dialect", "voicerun", "--srt"], 2, "word times"),
    ]
    for args, status, says in cases:
        done = run_stt(*args, timeout=60)
        assert done.returncode == status, (args, done.returncode, done.err)
        assert says in one_line_error(done), (args, done.err)


def test_a_session_the_server_ends_with_an_error_exits_1_saying_why():
    with stt_serve("--engine", "scripted", "--allow-client-faults") as server:
        done = run_stt("transcribe", str(SPEECH), "--url", server["url"] + "/v2?stt_fault=error=quota_exceeded")
        refused = run_stt("transcribe", str(SPEECH), "--url", server["url"] + "/nowhere")
    assert done.returncode == 1, done.err
    assert "quota_exceeded" in one_line_error(done)
    assert refused.returncode == 3 and "HTTP 404" in one_line_error(refused)


def test_transcribe_help_documents_the_exit_statuses():
    done = run_stt("transcribe", "--help")
    text = " ".join(done.out.split())
    assert done.returncode == 0
    for status in ("0 the transcript is complete", "1 the server", "2 a usage error", "3 cannot connect"):
        assert status in text


def test_ctrl_c_ends_the_audio_where_it_is_and_prints_the_rest(tmp_path):
    """The microphone recipe's way to stop: the audio read so far is transcribed to its end, exit 0."""
    import signal
    import threading
    import time

    head = (DATA / "ps_librivox_0870.wav").read_bytes()[:44 + 16000 * 2 * 3]  # the header and 3 s of speech
    part = tmp_path / "part.wav"
    part.write_bytes(head)
    with stt_serve("--engine", "scripted") as server:
        for where in ([], ["--url", server["url"]]):
            whole = run_stt("transcribe", str(part), "--engine", "scripted", *where)
            live = subprocess.Popen([STT, "transcribe", "-", "--engine", "scripted", *where], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=stt_env())
            watchdog = threading.Timer(60, live.kill)
            watchdog.start()
            try:
                live.stdin.write(head)
                live.stdin.flush()  # and left open, as a microphone's pipe is
                first = live.stdout.readline()  # the first final: the audio is being read
                time.sleep(0.5)
                live.send_signal(signal.SIGINT)
                out, err = live.communicate(timeout=30)
            finally:
                watchdog.cancel()
                live.kill()
            assert live.returncode == 0, err
            assert (first + out).decode() == whole.out and whole.out.count("\n") == 2, (where, first, out, whole.out)
