"""V-Blaze, sans-IO: the tags in (query string or X-Voci-<Tag> headers), Configure out or HTTP 400; frames in,
events out; results in, the transcript out in each format (protocols.md §1)."""

import io
import json
import struct
import zipfile
from urllib.parse import quote

import pytest

from stt.dialects import dialect_for
from stt.dialects.base import Handshake, HandshakeRefused
from stt.dialects.vblaze import VBlazeDialect
from stt.events import (
    Audio,
    AudioAccepted,
    AudioFormat,
    Configure,
    EndOfAudio,
    EndOfTranscript,
    Final,
    Partial,
    SessionStarted,
    SpeechStarted,
    SpeechStopped,
    Violation,
    Word,
)

PATH = "/transcribe"
WORDS = (Word("he", 0.5, 0.7, 0.9), Word("was", 0.7, 0.9, 0.8), Word("twenty", 1.0, 1.3, 0.7),
         Word("five", 1.3, 1.6, 0.6))
MORE = (Word("i", 2.0, 2.2, 1.0), Word("said", 2.2, 2.5, 0.5))


def dialect(query: str = "", headers=()) -> VBlazeDialect:
    return VBlazeDialect(Handshake.from_target(f"{PATH}?{query}" if query else PATH, list(headers)))


def configure(query: str = "", headers=()) -> Configure:
    [event] = dialect(query, headers).on_open()
    assert isinstance(event, Configure)
    return event


def refusal(query: str = "", headers=()) -> HandshakeRefused:
    with pytest.raises(HandshakeRefused) as info:
        dialect(query, headers)
    assert info.value.status == 400
    return info.value


def wav_header(rate=16000, channels=1, width=2, data_bytes=32000) -> bytes:
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * channels * width, channels * width, 8 * width)
    return (b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt
            + b"data" + struct.pack("<I", data_bytes))


def run(d: VBlazeDialect, *finals, audio: bytes | None = None) -> list:
    """The whole exchange: audio, the empty frame, finals, the end; every frame the dialect renders."""
    [config] = d.on_open()
    assert d.render(SessionStarted("s", config)) == []
    audio = wav_header() + bytes(32000) if audio is None else audio
    assert d.receive(audio) == [Audio(audio)]
    assert d.receive(b"") == [EndOfAudio()]
    out = []
    for words in finals:
        out += d.render(Final(words, words[0].start, words[-1].end))
    return out + d.render(EndOfTranscript())


# --- routing and tags --------------------------------------------------------------------------------------


def test_the_path_routes_to_vblaze():
    assert dialect_for("/transcribe") is VBlazeDialect
    assert dialect_for("/transcribe/") is VBlazeDialect
    assert not VBlazeDialect.match("/transcribe/x")


def test_defaults():
    d = dialect()
    assert configure() == Configure(AudioFormat("file"), language="en", partials=False, max_delay=80.0,
                                    endpointing=0.8, split_channels=True)
    assert (d.model, d.output, d.utterance_fmt, d.realtime, d.outstream) == ("eng1:callcenter", "json", "json",
                                                                            False, False)


def test_tags_from_the_query_string():
    d = dialect("model=eng1:callcenter&output=jsontop&utterance_fmt=text&realtime=true&requestid=r-1"
                "&uttmaxsilence=300&uttmaxtime=10")
    assert (d.model, d.output, d.utterance_fmt, d.realtime, d.outstream, d.requestid) == (
        "eng1:callcenter", "jsontop", "text", True, True, "r-1")
    assert configure("uttmaxsilence=300&uttmaxtime=10") == Configure(
        AudioFormat("file"), partials=False, max_delay=10.0, endpointing=0.3, split_channels=True)


def test_tags_from_headers_case_insensitive_and_url_quoted():
    rules = json.dumps([{"regex": "[0-9]+", "repl": "<num>"}])
    d = dialect(headers=[("X-Voci-Model", "eng1:callcenter"), ("x-voci-OUTPUT", "text"),
                         ("X-Voci-Realtime", "TRUE"), ("X-Voci-Outstream", "false"), ("X-Voci-Scrubtext", "true"),
                         ("X-Voci-Scrubconf", quote(rules)), ("X-Request-Id", "abc")])
    assert (d.output, d.realtime, d.outstream, d.scrubtext, d.requestid) == ("text", True, False, True, "abc")
    assert d.scrub_rules[0][1] == "<num>"


def test_the_query_string_wins_over_a_header():
    assert dialect("output=text", [("X-Voci-Output", "jsontop")]).output == "text"


def test_headerless_audio_from_the_tags():
    assert configure("datahdr=NONE&samprate=8000&sampwidth=2&encoding=SPCM&endian=BIG").audio == \
        AudioFormat("pcm_s16be", 8000)
    assert configure("datahdr=none&samprate=16000&sampwidth=1&encoding=ULAW").audio == AudioFormat("mulaw", 16000)
    assert configure("datahdr=NONE&samprate=8000&sampwidth=8&encoding=ALAW").audio == AudioFormat("alaw", 8000)
    assert configure("datahdr=NONE&samprate=16000&sampwidth=16").audio == AudioFormat("pcm_s16le", 16000)
    assert configure("datahdr=NONE&samprate=16000&sampwidth=4&encoding=FLOAT").audio == \
        AudioFormat("pcm_f32le", 16000)


@pytest.mark.parametrize("query, tag", [
    ("colour=red", "colour"),
    ("model=spa1:callcenter", "model"),
    ("model=eng1:call%20center", "model"),
    ("output=xml", "output"),
    ("output=jsonlist", "output"),
    ("utterance_fmt=csv", "utterance_fmt"),
    ("realtime=maybe", "realtime"),
    ("outstream=2", "outstream"),
    ("punctuate=on", "punctuate"),
    ("datahdr=AIFF", "datahdr"),
    ("datahdr=NONE&samprate=100", "samprate"),
    ("datahdr=NONE&samprate=abc", "samprate"),
    ("datahdr=NONE&sampwidth=5", "sampwidth"),
    ("datahdr=NONE&sampwidth=2&encoding=ULAW", "sampwidth"),
    ("datahdr=NONE&encoding=MP3", "encoding"),
    ("datahdr=NONE&endian=MIDDLE", "endian"),
    ("samprate=8000", "samprate"),  # datahdr=WAVE: the header says it
    ("uttmaxsilence=5", "uttmaxsilence"),
    ("uttmaxsilence=-1", "uttmaxsilence"),
    ("uttminactivity=99999", "uttminactivity"),
    ("uttpadding=x", "uttpadding"),
    ("uttmaxtime=0", "uttmaxtime"),
    ("realtime=true&uttmaxgap=5", "uttmaxgap"),
    ("vadtype=neural", "vadtype"),
    ("activitylevel=40000", "activitylevel"),
    ("scrubtext=true&scrubconf=notjson", "scrubconf"),
    ("scrubtext=true&scrubconf=%5B%7B%22regex%22%3A%22(%22%7D%5D", "scrubconf"),
    ("scrubconf=%5B%5D", "scrubconf"),
    ("outzip=7z", "outzip"),
    ("notext=true", "notext"),  # notext applies to scrubaudio only
    ("notext=true", "notext"),
    ("diarize=true", "diarize"),
    ("utterance_callback=http%3A%2F%2Fx", "utterance_callback"),
    ("subst_rules=x", "subst_rules"),
    ("requestid=", "requestid"),
])
def test_every_bad_tag_is_refused_with_400_naming_it(query, tag):
    assert tag in refusal(query).body


def test_a_bad_header_tag_is_refused_too():
    assert "output" in refusal(headers=[("X-Voci-Output", "xml")]).body
    assert "bogus" in refusal(headers=[("X-Voci-Bogus", "1")]).body


def test_unsupported_tags_may_be_given_as_false():
    assert dialect("scrubaudio=false&notext=false&diarize=false&emotion=false").output == "json"


# --- frames in ---------------------------------------------------------------------------------------------


def test_audio_split_anywhere_then_the_empty_frame_ends_it():
    d = dialect()
    head = wav_header()
    assert d.receive(head[:3]) == [Audio(head[:3])]
    assert d.receive(head[3:]) == [Audio(head[3:])]
    assert d.receive(bytearray(b"")) == [EndOfAudio()]
    [v] = d.receive(b"\x00\x00")
    assert isinstance(v, Violation) and v.rule.id == "VB-ORDER-001" and not v.rule.fatal
    assert d.render(v) == []


def test_a_text_frame_is_fatal_1003():
    [v] = dialect().receive("hello")
    assert v.rule.id == "VB-MSG-001" and v.rule.close == 1003
    assert dialect().render_violation(v) == []


def test_audio_without_a_wave_header_is_fatal_1007():
    d = dialect()
    assert d.receive(b"ID3") == [Audio(b"ID3")]
    [v] = d.receive(b"\x04\x00" * 10)
    assert v.rule.id == "VB-AUDIO-002" and v.rule.close == 1007 and v.rule.message == "missing data WAVE header"
    d = dialect("datahdr=NONE&samprate=16000")
    assert d.receive(b"ID3" * 10) == [Audio(b"ID3" * 10)]


# --- frames out --------------------------------------------------------------------------------------------


def test_default_json_transcript_is_the_only_message():
    d = dialect("requestid=r-9&punctuate=false&numtrans=false")
    [frame] = run(d, WORDS, MORE)
    t = json.loads(frame)
    assert t["model"] == "eng1:callcenter" and t["requestid"] == "r-9" and t["asr"]
    assert t["audiosecs"] == 1.0  # 32000 bytes of 16 kHz 16-bit mono after the header
    assert 0 <= t["confidence"] <= 1 and "started" in t and "donedate" in t
    u0, u1 = t["utterances"]
    assert (u0["start"], u0["end"], u1["start"], u1["end"]) == (0.5, 1.6, 2.0, 2.5)
    assert u0["metadata"] == {"uttid": 0, "channel": 0, "model": "eng1:callcenter"}
    assert u1["metadata"]["uttid"] == 1
    assert u0["events"][0] == {"word": "he", "start": 0.5, "end": 0.7, "confidence": 0.9}
    assert [e["word"] for e in u0["events"]] == ["he", "was", "twenty", "five"]
    assert u0["confidence"] == pytest.approx(0.75)


def test_numtrans_and_punctuate_by_default():
    t = json.loads(run(dialect(), WORDS, MORE)[0])
    assert [e["word"] for e in t["utterances"][0]["events"]] == ["He", "was", "25."]
    assert t["utterances"][0]["events"][2] == {"word": "25.", "start": 1.0, "end": 1.6, "confidence": 0.65}
    assert [e["word"] for e in t["utterances"][1]["events"]] == ["I", "said."]


def test_jsontop_collapses_the_utterances_into_text():
    t = json.loads(run(dialect("output=jsontop"), WORDS, MORE)[0])
    assert "utterances" not in t and t["text"] == "He was 25. I said."


def test_text_output_is_plain_text_one_utterance_a_line():
    assert run(dialect("output=text"), WORDS, MORE) == ["He was 25.\nI said."]
    assert run(dialect("output=text")) == [""]


def test_nothing_but_results_is_rendered():
    d = dialect("realtime=true")
    for item in (Partial(WORDS, 0.5, 1.6), SpeechStarted(0.5), SpeechStopped(1.6), AudioAccepted(1),
                 Final((), 0, 0)):
        assert d.render(item) == []


@pytest.mark.parametrize("fmt", ["json", "jsontop", "text"])
def test_utterance_streaming_frames_then_empty_then_transcript(fmt):
    d = dialect(f"realtime=true&utterance_fmt={fmt}&output=json")
    frames = run(d, WORDS, MORE)
    assert len(frames) == 4 and frames[2] == ""
    first = frames[0]
    if fmt == "text":
        assert frames[:2] == ["He was 25.", "I said."]
    elif fmt == "jsontop":
        u = json.loads(first)
        assert u["text"] == "He was 25." and "events" not in u and u["metadata"]["uttid"] == 0
    else:
        u = json.loads(first)
        assert [e["word"] for e in u["events"]] == ["He", "was", "25."]
        assert u == json.loads(frames[3])["utterances"][0]
    assert len(json.loads(frames[3])["utterances"]) == 2


def test_outstream_false_keeps_realtime_to_one_message():
    assert len(run(dialect("realtime=true&outstream=false"), WORDS)) == 1
    assert len(run(dialect("outstream=true"), WORDS)) == 3


def test_scrubtext_redacts_digits_in_words_and_text():
    t = json.loads(run(dialect("scrubtext=true&output=jsontop"), WORDS)[0])
    assert t["text"] == "He was ##."
    rules = quote(json.dumps([{"regex": r"\d+", "repl": "[redacted]"}]))
    t = json.loads(run(dialect(f"scrubtext=true&scrubconf={rules}"), WORDS)[0])
    assert [e["word"] for e in t["utterances"][0]["events"]] == ["He", "was", "[redacted]."]


def test_outzip_sends_the_transcript_in_a_zip():
    [frame] = run(dialect("outzip=true"), WORDS)
    assert isinstance(frame, bytes)
    with zipfile.ZipFile(io.BytesIO(frame)) as archive:
        assert archive.namelist() == ["transcript.json"]
        assert json.loads(archive.read("transcript.json"))["utterances"][0]["metadata"]["uttid"] == 0
    frames = run(dialect("outzip=zip&output=text&realtime=true&utterance_fmt=text"), WORDS)
    assert frames[:2] == ["He was 25.", ""]
    with zipfile.ZipFile(io.BytesIO(frames[2])) as archive:
        assert archive.read("transcript.txt") == b"He was 25."


def test_audiosecs_of_headerless_audio():
    d = dialect("datahdr=NONE&samprate=8000&sampwidth=1&encoding=ULAW")
    t = json.loads(run(d, audio=bytes(12000))[0])
    assert t["audiosecs"] == 1.5 and t["utterances"] == []
