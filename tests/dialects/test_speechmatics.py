"""Speechmatics RT v2, sans-IO: frames in, events out; results in, frames out (protocols.md §4)."""

import json

import pytest

from stt.dialects.base import Handshake
from stt.dialects.speechmatics import SpeechmaticsDialect
from stt.events import (
    Audio,
    AudioAccepted,
    AudioFormat,
    Configure,
    EndOfAudio,
    EndOfTranscript,
    Final,
    Flush,
    Partial,
    Reconfigure,
    SessionStarted,
    Violation,
    Word,
)


def start(**config):
    return json.dumps({
        "message": "StartRecognition",
        "audio_format": {"type": "raw", "encoding": "pcm_s16le", "sample_rate": 16000},
        "transcription_config": {"language": "en", **config},
    })


def dialect(path="/v2", headers=(), started=True, **config):
    d = SpeechmaticsDialect(Handshake.from_target(path, list(headers)))
    if started:
        [configure] = d.receive(start(**config))
        d.render(SessionStarted("id-1", configure))
    return d


def violation(events):
    assert len(events) == 1 and isinstance(events[0], Violation), events
    return events[0]


def frames(d, item):
    return [json.loads(f) for f in d.render(item)]


# --- routing and handshake -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v2", "/v2/", "/v2/en", "/v2/en/"])
def test_paths_served(path):
    assert SpeechmaticsDialect.match(path)


@pytest.mark.parametrize("path", ["/", "/v1", "/v2/en/extra", "/v22"])
def test_paths_not_served(path):
    assert not SpeechmaticsDialect.match(path)


def test_credential_from_bearer_header_or_jwt_query():
    assert dialect(headers=[(b"Authorization", b"Bearer k1")], started=False).credential() == "k1"
    assert dialect("/v2?jwt=k2&sm-sdk=python-5", started=False).credential() == "k2"
    assert dialect(started=False).credential() is None
    assert dialect(headers=[(b"Authorization", b"Basic k1")], started=False).credential() is None


# --- StartRecognition ----------------------------------------------------------------------------------


def test_start_recognition_configures_and_announces_the_session():
    d = dialect(started=False)
    [configure] = d.receive(start(enable_partials=True, max_delay=2))
    assert configure == Configure(AudioFormat("pcm_s16le", 16000), "en", partials=True, max_delay=2.0)
    started, info = frames(d, SessionStarted("abc", configure))
    assert started["message"] == "RecognitionStarted" and started["id"] == "abc"
    assert started["language_pack_info"]["word_delimiter"] == " "
    assert info == {"message": "Info", "type": "recognition_quality", "quality": "broadcast",
                    "reason": "Running recognition using a broadcast model quality."}
    assert d.machine.state == "recognizing"


def test_defaults_are_the_current_apis():
    d = dialect(started=False)
    [configure] = d.receive(start())
    assert configure.partials is False and configure.max_delay == 4.0


def test_telephony_quality_below_16k():
    d = dialect(started=False)
    msg = json.loads(start())
    msg["audio_format"] = {"type": "raw", "encoding": "mulaw", "sample_rate": 8000}
    [configure] = d.receive(json.dumps(msg))
    assert configure.audio == AudioFormat("mulaw", 8000)
    assert frames(d, SessionStarted("x", configure))[1]["quality"] == "telephony"


def test_file_audio_format_leaves_the_container_to_the_audio_layer():
    d = dialect(started=False)
    msg = json.loads(start())
    msg["audio_format"] = {"type": "file"}
    [configure] = d.receive(json.dumps(msg))
    assert configure.audio == AudioFormat("file")


@pytest.mark.parametrize(
    "audio_format, detail",
    [
        ({"type": "raw", "encoding": "opus", "sample_rate": 16000}, "encoding 'opus'"),
        ({"type": "raw", "encoding": "pcm_s16le"}, "sample_rate"),
        ({"type": "raw", "encoding": "pcm_s16le", "sample_rate": "16000"}, "sample_rate"),
        ({"type": "raw", "encoding": "pcm_s16le", "sample_rate": 10}, "sample_rate"),
        ({"type": "stream"}, "type 'stream'"),
        (None, "audio_format is required"),
    ],
)
def test_bad_audio_format_is_invalid_audio_type(audio_format, detail):
    d = dialect(started=False)
    msg = json.loads(start())
    msg["audio_format"] = audio_format
    v = violation(d.receive(json.dumps(msg)))
    assert v.rule.id == "SM-CFG-001" and detail in v.detail
    [error] = [json.loads(f) for f in d.render_violation(v)]
    assert error["message"] == "Error" and error["type"] == "invalid_audio_type" and detail in error["reason"]
    assert v.rule.close == 1003


@pytest.mark.parametrize(
    "config, rule, detail",
    [
        ({"max_delay": 0.1}, "SM-CFG-002", "max_delay must be from 0.7 to 4.0"),
        ({"max_delay": "2"}, "SM-CFG-002", "wrong type"),
        ({"enable_partials": 1}, "SM-CFG-002", "wrong type"),
        ({"max_delay_mode": "sometimes"}, "SM-CFG-002", "must be one of"),
        ({"no_such_field": 1}, "SM-CFG-002", "not a known field"),
        ({"language": "xx"}, "SM-CFG-003", "'xx' is not supported"),
        ({"additional_vocab": [{"sounds_like": ["x"]}]}, "SM-CFG-002", "additional_vocab entries"),
        ({"additional_vocab": [""]}, "SM-CFG-002", "additional_vocab entries"),
    ],
)
def test_bad_transcription_config(config, rule, detail):
    v = violation(dialect(started=False).receive(start(**config)))
    assert v.rule.id == rule and detail in v.detail
    assert v.rule.error == {"SM-CFG-002": "invalid_config", "SM-CFG-003": "invalid_language"}[rule]


def test_additional_vocab_is_the_engine_s_hints():
    vocab = ["gnocchi", {"content": "CEO", "sounds_like": ["C.E.O."]}, "gnocchi"]
    [configure] = dialect(started=False).receive(start(additional_vocab=vocab))[:1]
    assert configure.hints == ("gnocchi", "CEO")


def test_language_in_path_must_match_the_config():
    assert isinstance(dialect("/v2/en", started=False).receive(start())[0], Configure)
    v = violation(dialect("/v2/de", started=False).receive(start()))
    assert v.rule.id == "SM-CFG-003" and "URL path" in v.detail


def test_missing_transcription_config_and_translation():
    v = violation(dialect(started=False).receive(json.dumps({"message": "StartRecognition", "audio_format": {
        "type": "raw", "encoding": "pcm_f32le", "sample_rate": 44100}})))
    assert v.rule.id == "SM-CFG-002"
    msg = json.loads(start())
    msg["translation_config"] = {"target_languages": ["de"]}
    assert violation(dialect(started=False).receive(json.dumps(msg))).rule.error == "invalid_config"


# --- ordering (§4.6) -----------------------------------------------------------------------------------


@pytest.mark.parametrize("frame", [b"\x00\x00", '{"message":"EndOfStream","last_seq_no":0}',
                                   '{"message":"SetRecognitionConfig","transcription_config":{}}',
                                   '{"message":"ForceEndOfUtterance"}'])
def test_start_recognition_must_come_first(frame):
    v = violation(dialect(started=False).receive(frame))
    assert v.rule.id == "SM-ORDER-001" and v.rule.error == "protocol_error" and v.rule.close == 1003


def test_start_recognition_only_once():
    d = dialect()
    assert violation(d.receive(start())).rule.id == "SM-ORDER-003"


def test_audio_before_recognition_started_is_refused():
    d = dialect(started=False)
    d.receive(start())
    assert violation(d.receive(b"\x00\x00")).rule.id == "SM-ORDER-002"


def test_audio_after_end_of_stream_is_a_warning_and_ignored():
    d = dialect()
    assert d.receive('{"message":"EndOfStream","last_seq_no":3}') == [EndOfAudio()]
    v = violation(d.receive(b"\x01\x02"))
    assert not v.rule.fatal
    assert frames(d, v) == [{"message": "Warning", "type": "add_audio_after_eos",
                             "reason": v.rule.message + ": " + v.detail}]
    assert d.machine.state == "draining"


def test_nothing_else_after_end_of_stream():
    d = dialect()
    d.receive('{"message":"EndOfStream","last_seq_no":0}')
    assert violation(d.receive('{"message":"EndOfStream","last_seq_no":0}')).rule.id == "SM-ORDER-004"


@pytest.mark.parametrize("last", [None, -1, "3", True, 1.5])
def test_end_of_stream_needs_a_last_seq_no(last):
    body = {"message": "EndOfStream"} if last is None else {"message": "EndOfStream", "last_seq_no": last}
    assert violation(dialect().receive(json.dumps(body))).rule.id == "SM-MSG-003"


def test_last_seq_no_need_not_equal_the_frames_received():
    d = dialect()
    d.receive(b"\x00\x00")
    d.receive(b"\x00\x00")
    assert d.receive('{"message":"EndOfStream","last_seq_no":1}') == [EndOfAudio()]  # real clients send one less


# --- messages ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("frame, rule", [("not json", "SM-MSG-001"), ("[1,2]", "SM-MSG-001"),
                                         ('{"msg":"x"}', "SM-MSG-001"), ('{"message":7}', "SM-MSG-001"),
                                         ('{"message":"Hello"}', "SM-MSG-002"),
                                         ('{"message":"AddAudio"}', "SM-MSG-002")])
def test_malformed_or_unknown_messages_are_invalid_message(frame, rule):
    v = violation(dialect().receive(frame))
    assert v.rule.id == rule and v.rule.error == "invalid_message"


def test_audio_frames_become_audio_events_and_acks_count_from_one():
    d = dialect()
    assert d.receive(b"\x01\x00\x02\x00") == [Audio(b"\x01\x00\x02\x00")]
    assert frames(d, AudioAccepted(1)) == [{"message": "AudioAdded", "seq_no": 1}]


def test_set_recognition_config_changes_partials_and_max_delay():
    d = dialect()
    [change] = d.receive(json.dumps({"message": "SetRecognitionConfig",
                                     "transcription_config": {"enable_partials": True, "max_delay": 1.5,
                                                              "language": "en"}}))
    assert change == Reconfigure(partials=True, max_delay=1.5)
    assert frames(d, Partial((Word("hi", 0, 0.3),), 0, 0.3))[0]["message"] == "AddPartialTranscript"


@pytest.mark.parametrize("config, detail", [({"diarization": "speaker"}, "cannot be changed mid-session"),
                                            ({"language": "de"}, "language cannot be changed"),
                                            ({"max_delay": 9}, "max_delay must be")])
def test_set_recognition_config_refuses_other_changes(config, detail):
    v = violation(dialect().receive(json.dumps({"message": "SetRecognitionConfig", "transcription_config": config})))
    assert v.rule.error == "invalid_config" and detail in v.detail


def test_force_end_of_utterance_flushes_and_is_answered_with_forced_messages():
    d = dialect()
    assert d.receive('{"message":"ForceEndOfUtterance"}') == [Flush()]
    transcript, eou = frames(d, Final((Word("go", 0.5, 0.8, 0.9),), 0.5, 0.8, forced=True))
    assert transcript["forced"] is True and transcript["message"] == "AddTranscript"
    assert eou == {"message": "EndOfUtterance", "metadata": {"start_time": 0.8, "end_time": 0.8}, "forced": True}


# --- results -------------------------------------------------------------------------------------------


def test_final_transcript_shape():
    d = dialect()
    words = (Word("go", 0.51, 0.8, 0.93), Word("forward", 0.8, 1.3, 0.5))
    [msg] = frames(d, Final(words, 0.51, 1.3))
    assert msg == {
        "message": "AddTranscript",
        "format": "2.1",
        "metadata": {"start_time": 0.51, "end_time": 1.3, "transcript": "go forward"},
        "results": [
            {"type": "word", "start_time": 0.51, "end_time": 0.8,
             "alternatives": [{"content": "go", "confidence": 0.93, "language": "en"}]},
            {"type": "word", "start_time": 0.8, "end_time": 1.3,
             "alternatives": [{"content": "forward", "confidence": 0.5, "language": "en"}]},
        ],
    }


def test_partials_only_when_enabled():
    words = (Word("go", 0, 0.3),)
    assert dialect().render(Partial(words, 0, 0.3)) == []
    assert len(dialect(enable_partials=True).render(Partial(words, 0, 0.3))) == 1


def test_end_of_transcript_finishes_the_chart():
    d = dialect()
    d.receive('{"message":"EndOfStream","last_seq_no":0}')
    assert frames(d, EndOfTranscript()) == [{"message": "EndOfTranscript"}]
    assert d.machine.state == "finished"


def test_every_rule_the_dialect_names_is_in_its_chart():
    import re
    from pathlib import Path

    import stt.dialects.speechmatics as module

    named = set(re.findall(r'"(SM-[A-Z]+-\d{3})"', Path(module.__file__).read_text()))
    assert named and named <= set(SpeechmaticsDialect.chart.rules)
