"""The Deepgram dialect, sans-IO: the query string in, Configure or an HTTP refusal out; frames in, events out;
results in, Deepgram's frames out."""

import hashlib
import json

import pytest

from stt.dialects.base import Handshake, HandshakeRefused
from stt.dialects.deepgram import DeepgramDialect
from stt.events import (
    Audio,
    EndOfAudio,
    EndOfTranscript,
    Final,
    Flush,
    Partial,
    Reply,
    SessionStarted,
    SpeechStarted,
    SpeechStopped,
    Violation,
    Word,
)

RAW = "model=nova-3&encoding=linear16&sample_rate=16000"


def dialect(query: str = RAW, **headers) -> DeepgramDialect:
    return DeepgramDialect(Handshake.from_target("/v1/listen?" + query, list(headers.items())))


def words(*texts: str, start: float = 0.0) -> tuple[Word, ...]:
    return tuple(Word(t, start + i * 0.5, start + i * 0.5 + 0.4, 0.9) for i, t in enumerate(texts))


def sent(frames) -> list[dict]:
    return [json.loads(f) for f in frames]


# --- the query string ---------------------------------------------------------------------------------------


def test_the_query_string_is_the_configuration():
    (configure,) = dialect(RAW + "&interim_results=true&endpointing=300&keyterm=stt&keyterm=deep%20gram").on_open()
    assert (configure.audio.encoding, configure.audio.sample_rate, configure.audio.channels) == ("pcm_s16le", 16000, 1)
    assert configure.partials and configure.endpointing == 0.3
    assert configure.hints == ("stt", "deep gram")


def test_without_an_encoding_the_audio_is_a_container_recognised_from_its_bytes():
    (configure,) = dialect("model=nova-3").on_open()
    assert configure.audio.encoding == "file"


@pytest.mark.parametrize("encoding, decoded, rate", [("mulaw", "mulaw", 8000), ("alaw", "alaw", 8000),
                                                      ("linear32", "pcm_s32le", 16000), ("flac", "file", 0)])
def test_each_deepgram_encoding_maps_to_a_decoder(encoding, decoded, rate):
    query = f"encoding={encoding}" + (f"&sample_rate={rate}" if rate else "")
    (configure,) = dialect(query).on_open()
    assert configure.audio.encoding == decoded


def test_booleans_come_in_any_case_as_the_sdk_sends_python_true():
    assert dialect(RAW + "&interim_results=True").interim_results


def test_multichannel_audio_is_recognised_channel_by_channel():
    (configure,) = dialect("encoding=linear16&sample_rate=8000&channels=2&multichannel=true").on_open()
    assert configure.split_channels and configure.audio.channels == 2


@pytest.mark.parametrize("query, named", [
    ("model=flux", "model"),
    (RAW + "&language=fr", "language"),
    ("encoding=speex&sample_rate=16000", "speex"),
    ("encoding=linear16", "sample_rate"),
    ("encoding=mp3&sample_rate=16000", "encoding"),
    (RAW + "&sample_rate=100", "sample_rate"),
    (RAW + "&utterance_end_ms=1000", "interim_results"),
    (RAW + "&interim_results=yes", "interim_results"),
    (RAW + "&endpointing=soon", "endpointing"),
    (RAW + "&diarize=true", "diarize"),
    (RAW + "&callback=http://127.0.0.1:9/", "callback"),
    (RAW + "&channels=99", "channels"),
])
def test_a_bad_option_refuses_the_upgrade_with_400_naming_it(query, named):
    with pytest.raises(HandshakeRefused) as refused:
        dialect(query)
    assert refused.value.status == 400 and named in refused.value.body


def test_a_refusal_carries_deepgrams_dg_error_header():
    headers = dict(DeepgramDialect.refusal_headers(400, "model 'x' is not a Deepgram model\n"))
    assert headers["dg-error"] == "model 'x' is not a Deepgram model" and headers["dg-request-id"]


def test_the_key_comes_as_token_bearer_or_the_browser_subprotocols():
    assert dialect(authorization="Token k1").credential() == "k1"
    assert dialect(authorization="bearer k2").credential() == "k2"
    browser = DeepgramDialect(Handshake.from_target("/v1/listen?" + RAW, subprotocols=("token", "k3")))
    assert browser.credential() == "k3"


# --- frames in ----------------------------------------------------------------------------------------------


def test_audio_is_binary_frames_and_control_messages_are_text():
    d = dialect()
    assert d.receive(b"\x01\x00" * 160) == [Audio(b"\x01\x00" * 160)]
    assert d.receive('{"type":"KeepAlive"}') == []
    assert d.receive('{"type":"Finalize"}') == [Flush()]
    assert d.receive('{"type":"CloseStream"}') == [EndOfAudio()]
    assert d.machine.state == "closing"


def test_an_empty_binary_frame_is_the_legacy_end_of_the_stream():
    d = dialect()
    assert d.receive(b"") == [EndOfAudio()] and d.machine.state == "closing"


def test_a_text_message_that_cannot_be_parsed_gets_a_schema_error_and_the_stream_goes_on():
    d = dialect()
    (violation,) = d.receive("{not json")
    assert violation.rule.id == "DG-MSG-001" and not violation.rule.fatal
    (error,) = sent(d.render(violation))
    assert error["type"] == "Error" and error["variant"] == "SchemaError" and error["message"] == "{not json"
    (unknown,) = d.receive('{"type":"Flush"}')
    assert unknown.rule.id == "DG-MSG-002" and d.machine.state == "streaming"


def test_configure_switches_formatting_features_and_answers_configure_success():
    d = dialect()
    (reply,) = d.receive('{"type":"Configure","features":{"numerals":true}}')
    assert isinstance(reply, Reply) and json.loads(reply.frames[0])["type"] == "ConfigureSuccess"
    assert d.numerals


def test_configure_with_keyterms_is_refused_as_not_supported_and_changes_nothing():
    d = dialect()
    (violation,) = d.receive('{"type":"Configure","keyterms":["stt"]}')
    (failure,) = sent(d.render(violation))
    assert failure["type"] == "ConfigureFailure" and failure["code"] == "CONFIGURE_KEYTERMS_NOT_SUPPORTED"
    (bad,) = d.receive('{"type":"Configure","features":{"numerals":"yes"}}')
    assert bad.rule.id == "DG-CFG-001"


def test_anything_after_close_stream_is_ignored_silently():
    d = dialect()
    d.receive('{"type":"CloseStream"}')
    for frame in (b"\x00\x00", '{"type":"Finalize"}', '{"type":"CloseStream"}'):
        (violation,) = d.receive(frame)
        assert violation.rule.warning and d.render(violation) == []
    assert d.receive('{"type":"KeepAlive"}') == []


# --- frames out -----------------------------------------------------------------------------------------------


def test_interim_results_are_results_that_are_not_final_and_only_when_asked():
    partial = Partial(words("hello"), 0.0, 0.4)
    (results,) = sent(dialect(RAW + "&interim_results=true").render(partial))
    assert results["type"] == "Results" and results["is_final"] is False and results["speech_final"] is False
    assert results["channel"]["alternatives"][0]["transcript"] == "hello"
    assert dialect().render(partial) == []


def test_a_final_at_a_pause_is_speech_final_and_one_finalize_forced_is_from_finalize():
    d = dialect()
    (paused,) = sent(d.render(Final(words("hello", "world"), 0.0, 0.9)))
    assert paused["is_final"] and paused["speech_final"] and not paused["from_finalize"]
    assert [w["word"] for w in paused["channel"]["alternatives"][0]["words"]] == ["hello", "world"]
    assert paused["start"] == 0.0 and paused["duration"] == 0.9 and paused["channel_index"] == [0, 1]
    (forced,) = sent(d.render(Final(words("again"), 1.0, 1.4, forced=True)))
    assert forced["is_final"] and forced["from_finalize"] and not forced["speech_final"]


def test_with_endpointing_false_no_result_is_speech_final():
    (results,) = sent(dialect(RAW + "&endpointing=false").render(Final(words("hello"), 0.0, 0.4)))
    assert results["is_final"] and not results["speech_final"]


def test_punctuate_gives_punctuated_words_and_smart_format_numbers_in_digits():
    (plain,) = sent(dialect().render(Final(words("i", "saw", "forty", "two"), 0.0, 2.0)))
    assert plain["channel"]["alternatives"][0]["transcript"] == "i saw forty two"
    assert "punctuated_word" not in plain["channel"]["alternatives"][0]["words"][0]
    (smart,) = sent(dialect(RAW + "&smart_format=true").render(Final(words("i", "saw", "forty", "two"), 0.0, 2.0)))
    alternative = smart["channel"]["alternatives"][0]
    assert alternative["transcript"] == "I saw 42."
    assert [(w["word"], w["punctuated_word"]) for w in alternative["words"]] == [("i", "I"), ("saw", "saw"),
                                                                                ("42", "42.")]
    assert alternative["words"][2]["start"] == 1.0 and alternative["words"][2]["end"] == 1.9


def test_speech_started_only_with_vad_events_and_utterance_end_after_words_with_utterance_end_ms():
    d = dialect(RAW + "&interim_results=true&vad_events=true&utterance_end_ms=1000")
    (started,) = sent(d.render(SpeechStarted(0.25)))
    assert started == {"type": "SpeechStarted", "channel": [0, 1], "timestamp": 0.25}
    assert d.render(SpeechStopped(0.3)) == []  # no words yet: no utterance to end
    d.render(Final(words("hello", start=0.3), 0.3, 0.7))
    (end,) = sent(d.render(SpeechStopped(1.5)))
    assert end == {"type": "UtteranceEnd", "channel": [0, 1], "last_word_end": 0.7}
    assert dialect().render(SpeechStarted(0.25)) == []


def test_the_end_of_the_transcript_is_metadata_with_the_digest_and_duration_of_the_audio():
    d = dialect()
    audio = b"\x01\x00" * 16000  # one second
    d.receive(audio)
    d.receive('{"type":"CloseStream"}')
    d.render(SessionStarted("id", d.stream_config, engine="sphinx"))
    (metadata,) = sent(d.render(EndOfTranscript()))
    assert metadata["type"] == "Metadata" and metadata["request_id"] == d.request_id
    assert metadata["sha256"] == hashlib.sha256(audio).hexdigest()
    assert metadata["duration"] == 1.0 and metadata["channels"] == 1
    assert d.machine.state == "finished"


def test_a_closing_error_is_no_message_the_close_frame_carries_its_code():
    d = dialect()
    rule = d.chart.ending("bad_audio")
    assert (rule.close, rule.error) == (1002, "DATA-0000")
    assert d.render(Violation(rule, "not audio")) == []
    assert (d.chart.ending("idle_timeout").close, d.chart.ending("idle_timeout").error) == (1011, "NET-0001")
    assert DeepgramDialect.message_idle_timeout == 10.0
