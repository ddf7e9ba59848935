"""YourVoic real-time, sans-IO: the query string in, Configure out; frames in, events out; results in, frames
out (protocols.md §2)."""

import json

import pytest

from stt.dialects import dialect_for
from stt.dialects.base import Handshake
from stt.dialects.yourvoic import YourVoicDialect
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
    SessionStatus,
    SpeechStarted,
    SpeechStopped,
    Violation,
    Word,
)

PATH = "/api/v1/stt/realtime/stream"


def dialect(query: str = "", opened: bool = True) -> YourVoicDialect:
    d = YourVoicDialect(Handshake.from_target(f"{PATH}?{query}" if query else PATH))
    if opened:
        [configure] = d.on_open()
        assert isinstance(configure, Configure)
        assert d.render(SessionStarted("id-1", configure)) == []
    return d


def configure(query: str = "") -> Configure:
    [event] = dialect(query, opened=False).on_open()
    assert isinstance(event, Configure), event
    return event


def violation(events) -> Violation:
    assert len(events) == 1 and isinstance(events[0], Violation), events
    return events[0]


def frames(d, item) -> list[dict]:
    return [json.loads(f) for f in d.render(item)]


WORDS = (Word("he", 0.5, 0.7, 0.9), Word("was", 0.7, 0.9, 0.8), Word("twenty", 1.0, 1.3, 0.7),
         Word("five", 1.3, 1.6, 0.6))


# --- routing and handshake -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [PATH, PATH + "/"])
def test_path_served(path):
    assert YourVoicDialect.match(path) and dialect_for(path) is YourVoicDialect


@pytest.mark.parametrize("path", ["/", "/v2", "/api/v1/stt/realtime", PATH + "/x", "/api/v1/stt/realtime/info"])
def test_paths_not_served(path):
    assert not YourVoicDialect.match(path)


def test_credential_is_the_api_key_query_parameter():
    assert dialect("api_key=k1&model=lucid-lite", opened=False).credential() == "k1"
    assert dialect("api_key=", opened=False).credential() is None
    assert dialect(opened=False).credential() is None


def test_unauthorised_is_refused_at_the_upgrade_with_its_own_rule():
    assert YourVoicDialect.rejects_unauthorised
    rule = YourVoicDialect.chart.ending("unauthorised")
    assert rule.id == "YV-AUTH-001" and rule.error == "INVALID_API_KEY"


# --- the query string ------------------------------------------------------------------------------------


def test_defaults():
    assert configure() == Configure(AudioFormat("pcm_s16le", 16000, sniff=True), "en", partials=True,
                                    endpointing=0.3, hints=())
    d = dialect(opened=False)
    d.on_open()
    assert (d.model, d.interim_results, d.punctuate, d.smart_format) == ("lucid-agent", True, True, True)


def test_the_documented_connection_example():
    """The vendor's URLSearchParams example, as a browser sends it."""
    c = configure("api_key=YOUR_API_KEY&model=lucid-agent&interim_results=true&endpointing=300"
                  "&keywords=product%2Ccompany%2Ctechnical&smart_format=true")
    assert c.partials is True and c.endpointing == 0.3 and c.hints == ("product", "company", "technical")


@pytest.mark.parametrize("value, expected", [("true", True), ("TRUE", True), ("1", True), ("false", False),
                                             ("False", False), ("0", False)])
def test_booleans(value, expected):
    assert configure(f"interim_results={value}").partials is expected
    d = dialect(f"punctuate={value}&smart_format={value}", opened=False)
    d.on_open()
    assert d.punctuate is expected and d.smart_format is expected


@pytest.mark.parametrize("ms, seconds", [("10", 0.01), ("300", 0.3), ("1200", 1.2), ("5000", 5.0)])
def test_endpointing_milliseconds_become_seconds(ms, seconds):
    assert configure(f"endpointing={ms}").endpointing == seconds


def test_keywords_are_hints():
    assert configure("keywords=%20Dashwood,,Norland%20Park%20,").hints == ("Dashwood", "Norland Park")


@pytest.mark.parametrize("model", ["lucid-mono", "lucid-multi", "lucid-agent", "lucid-lite"])
def test_every_model_is_served(model):
    assert isinstance(configure(f"model={model}"), Configure)


@pytest.mark.parametrize("language", ["en", "en-US", "en_GB", "EN"])
def test_english_is_served(language):
    assert configure(f"language={language}").language == "en"


def test_unknown_parameters_are_ignored():
    assert configure("sample_rate=16000&encoding=linear16") == configure()


@pytest.mark.parametrize(
    "query, rule, code, detail",
    [
        ("model=nova-2", "YV-PARAM-001", "INVALID_MODEL", "model 'nova-2'"),
        ("model=", "YV-PARAM-001", "INVALID_MODEL", "model ''"),
        ("language=de", "YV-PARAM-002", "UNSUPPORTED_LANGUAGE", "language 'de'"),
        ("language=english", "YV-PARAM-002", "UNSUPPORTED_LANGUAGE", "'english'"),
        ("interim_results=yes", "YV-PARAM-003", "INVALID_PARAMETER", "interim_results must be true or false"),
        ("punctuate=", "YV-PARAM-003", "INVALID_PARAMETER", "punctuate"),
        ("smart_format=2", "YV-PARAM-003", "INVALID_PARAMETER", "smart_format"),
        ("endpointing=9", "YV-PARAM-004", "INVALID_PARAMETER", "from 10 to 5000"),
        ("endpointing=5001", "YV-PARAM-004", "INVALID_PARAMETER", "'5001'"),
        ("endpointing=300.5", "YV-PARAM-004", "INVALID_PARAMETER", "whole number"),
        ("endpointing=-5", "YV-PARAM-004", "INVALID_PARAMETER", "'-5'"),
        ("endpointing=false", "YV-PARAM-004", "INVALID_PARAMETER", "'false'"),
        ("keywords=" + ",".join(["w"] * 101), "YV-PARAM-005", "INVALID_PARAMETER", "101 keywords"),
        ("keywords=" + "x" * 101, "YV-PARAM-005", "INVALID_PARAMETER", "longer than 100"),
    ],
)
def test_bad_parameters_are_an_error_and_close_1003(query, rule, code, detail):
    d = dialect(query, opened=False)
    v = violation(d.on_open())
    assert v.rule.id == rule and v.rule.fatal and v.rule.close == 1003 and detail in v.detail
    assert frames(d, v) == [{"type": "error", "code": code, "message": f"{v.rule.message}: {v.detail}"}]


# --- frames in -------------------------------------------------------------------------------------------


def test_audio_is_accepted_from_the_first_frame():
    d = dialect()
    assert d.receive(b"\x01\x00\x02\x00") == [Audio(b"\x01\x00\x02\x00")]
    assert d.receive(bytearray(b"fLaC")) == [Audio(b"fLaC")]
    assert d.machine.state == "streaming"


def test_close_ends_the_audio():
    d = dialect()
    assert d.receive('{"type":"close"}') == [EndOfAudio()]
    assert d.machine.state == "draining"


def test_audio_or_a_second_close_after_close_is_ignored_silently():
    d = dialect()
    d.receive('{"type": "close"}')
    for frame, rule in [(b"\x00\x00", "YV-CLOSE-001"), ('{"type":"close"}', "YV-CLOSE-002")]:
        v = violation(d.receive(frame))
        assert v.rule.id == rule and not v.rule.fatal
        assert d.render(v) == []  # YourVoic has no warning message
    assert d.machine.state == "draining"


@pytest.mark.parametrize("frame, rule, code", [
    ("not json", "YV-MSG-001", "INVALID_MESSAGE"),
    ("[1,2]", "YV-MSG-001", "INVALID_MESSAGE"),
    ('{"message":"close"}', "YV-MSG-001", "INVALID_MESSAGE"),
    ('{"type":7}', "YV-MSG-001", "INVALID_MESSAGE"),
    ('{"type":"KeepAlive"}', "YV-MSG-002", "UNKNOWN_MESSAGE_TYPE"),
    ('{"type":"transcript"}', "YV-MSG-002", "UNKNOWN_MESSAGE_TYPE"),
])
def test_bad_text_frames_are_an_error_and_close_1003(frame, rule, code):
    d = dialect()
    v = violation(d.receive(frame))
    assert v.rule.id == rule and v.rule.close == 1003
    [error] = frames(d, v)
    assert error["type"] == "error" and error["code"] == code


# --- results ---------------------------------------------------------------------------------------------


def test_final_transcript_shape():
    d = dialect()
    [msg] = frames(d, Final(WORDS, 0.5, 1.6))
    assert msg == {
        "type": "transcript",
        "text": "He was 25.",
        "is_final": True,
        "confidence": 0.75,
        "start": 0.5,
        "end": 1.6,
        "words": [{"word": "he", "start": 0.5, "end": 0.7}, {"word": "was", "start": 0.7, "end": 0.9},
                  {"word": "twenty", "start": 1.0, "end": 1.3}, {"word": "five", "start": 1.3, "end": 1.6}],
    }


def test_interim_transcripts_only_with_interim_results():
    partial = Partial(WORDS[:2], 0.5, 0.9)
    [msg] = frames(dialect(), partial)
    assert msg["is_final"] is False and msg["text"] == "He was"  # no period until the final
    assert dialect("interim_results=false").render(partial) == []


@pytest.mark.parametrize("query, text", [
    ("", "He was 25."),
    ("punctuate=false", "he was 25"),
    ("smart_format=false", "He was twenty five."),
    ("punctuate=0&smart_format=0", "he was twenty five"),
])
def test_punctuate_and_smart_format_change_the_text_not_the_words(query, text):
    [msg] = frames(dialect(query), Final(WORDS, 0.5, 1.6))
    assert msg["text"] == text
    assert [w["word"] for w in msg["words"]] == ["he", "was", "twenty", "five"]


def test_punctuate_capitalises_i():
    d = dialect()
    words = tuple(Word(t, i, i + 0.5) for i, t in enumerate(["so", "i", "think", "i'm", "in"]))
    assert frames(d, Final(words, 0, 5))[0]["text"] == "So I think I'm in."


def test_an_empty_final_replaces_an_interim_and_is_otherwise_not_sent():
    d = dialect()
    assert d.render(Final((), 1.0, 1.0)) == []
    d.render(Partial(WORDS[:1], 0.5, 0.7))
    [msg] = frames(d, Final((), 0.5, 0.7))
    assert msg["text"] == "" and msg["is_final"] is True and msg["words"] == [] and msg["confidence"] == 0.0
    assert d.render(Final((), 1.0, 1.0)) == []


def test_voice_activity_in_audio_seconds():
    d = dialect()
    assert frames(d, SpeechStarted(0.43)) == [{"type": "speech_started", "timestamp": 0.43}]
    assert frames(d, SpeechStopped(2.1)) == [{"type": "speech_ended", "timestamp": 2.1}]


@pytest.mark.parametrize("model, credits", [("lucid-agent", 30.0), ("lucid-mono", 30.0), ("lucid-multi", 30.0),
                                            ("lucid-lite", 20.0)])
def test_session_status_counts_audio_and_credits(model, credits):
    d = dialect(f"model={model}")
    assert frames(d, SessionStatus(audio_seconds=10.0, elapsed=12.5)) == [
        {"type": "session_status", "duration": 10.0, "credits_used": credits, "credits_remaining": None}]


def test_session_hooks():
    assert YourVoicDialect.status_interval == 5.0 and YourVoicDialect.speech_idle_timeout == 60.0
    assert YourVoicDialect.closes_after_end
    d = dialect()
    assert d.greeting() == [] and d.render(AudioAccepted(1)) == []


def test_end_of_transcript_sends_nothing_and_finishes_the_chart():
    d = dialect()
    d.receive('{"type":"close"}')
    assert d.render(EndOfTranscript()) == []
    assert d.machine.state == "finished"


def test_endings_map_to_vendor_errors():
    chart = YourVoicDialect.chart
    assert (chart.ending("idle_timeout").error, chart.ending("idle_timeout").close) == ("IDLE_TIMEOUT", 1008)
    assert (chart.ending("bad_audio").error, chart.ending("bad_audio").close) == ("INVALID_AUDIO", 1007)
    assert (chart.ending("internal_error").error, chart.ending("internal_error").close) == ("INTERNAL_ERROR", 1011)
    assert chart.ending("normal").close == 1000
    # Plan limits: the server's --max-session-seconds and --max-sessions(-per-key) end sessions with them.
    assert (chart.ending("session_timeout").error, chart.ending("session_timeout").close) == ("SESSION_LIMIT_REACHED",
                                                                                          1008)
    assert (chart.ending("busy").error, chart.ending("busy").close) == ("CONCURRENT_LIMIT", 1008)
