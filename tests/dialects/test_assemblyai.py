"""AssemblyAI Universal-Streaming v3, sans-IO: the query string in, Configure out; frames in, events out; results in,
Turns out (protocols.md §8). Every frame the dialect renders is also parsed with the vendor SDK's own models,
whose reader thread dies on a mismatch."""

import json
import time

import pytest

from stt.dialects import dialect_for
from stt.dialects.assemblyai import AssemblyAIDialect, close_reason
from stt.dialects.base import Handshake
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
    SessionStarted,
    SpeechStarted,
    SpeechStopped,
    Violation,
    Word,
)

PATH = "/v3/ws"
SDK_QUERY = "format_turns=True&sample_rate=16000&encoding=pcm_s16le&speech_model=universal-streaming-english"
CHUNK_100MS = bytes(3200)  # pcm_s16le at 16 kHz

sdk_models = pytest.importorskip("assemblyai.streaming.v3._base")


def dialect(query: str = "sample_rate=16000", opened: bool = True) -> AssemblyAIDialect:
    d = AssemblyAIDialect(Handshake.from_target(f"{PATH}?{query}" if query else PATH))
    if opened:
        [configure] = d.on_open()
        assert isinstance(configure, Configure), configure
        [begin] = d.render(SessionStarted("sess-1", configure))
        assert sdk_parsed(begin).id == "sess-1"
    return d


def configure(query: str) -> Configure:
    [event] = dialect(query, opened=False).on_open()
    assert isinstance(event, Configure), event
    return event


def violation(events) -> Violation:
    assert len(events) == 1 and isinstance(events[0], Violation), events
    return events[0]


def refusal(query: str) -> Violation:
    return violation(dialect(query, opened=False).on_open())


def sdk_parsed(frame: str):
    """The frame as the vendor's SDK reads it (pydantic-validated; raises on a schema mismatch)."""
    message = sdk_models._BaseStreamingClient._parse_message(json.loads(frame))
    assert message is not None, frame
    return message


def turns(d, item) -> list[dict]:
    frames = d.render(item)
    for frame in frames:
        sdk_parsed(frame)
    return [json.loads(f) for f in frames]


WORDS = (Word("i", 0.5, 0.7, 0.9), Word("was", 0.7, 0.9, 0.8), Word("twenty", 1.0, 1.3, 0.7),
         Word("five", 1.3, 1.6, 0.6))


# --- routing and handshake -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [PATH, PATH + "/"])
def test_path_served(path):
    assert AssemblyAIDialect.match(path) and dialect_for(path) is AssemblyAIDialect


@pytest.mark.parametrize("path", ["/", "/v3", "/v3/ws/x", "/v2/ws", "/v3/token"])
def test_paths_not_served(path):
    assert not AssemblyAIDialect.match(path)


def test_the_key_is_the_raw_authorization_header_or_the_token_query_parameter():
    assert AssemblyAIDialect(Handshake(PATH, {}, {"authorization": "k3y"})).credential() == "k3y"
    assert AssemblyAIDialect(Handshake(PATH, {"token": "t0k"}, {})).credential() == "t0k"
    assert AssemblyAIDialect(Handshake(PATH)).credential() is None


def test_a_bad_key_is_closed_1008_after_the_upgrade_with_the_vendors_reason():
    assert not AssemblyAIDialect.rejects_unauthorised and AssemblyAIDialect.closes_after_end
    rule = AssemblyAIDialect.chart.ending("unauthorised")
    assert rule.close == 1008 and rule.message == "Unauthorized Connection: Missing Authorization header"
    assert AssemblyAIDialect(Handshake(PATH)).render_violation(Violation(rule)) == []


@pytest.mark.parametrize("ending, code, reason", [
    ("busy", 3009, "Unauthorized Connection: Too many concurrent sessions"),
    ("session_timeout", 3008, "Session Expired: Maximum session duration exceeded"),
    ("internal_error", 3005, "Session Cancelled: An error occurred"),
])
def test_the_server_endings_close_with_the_vendors_codes_and_reasons(ending, code, reason):
    rule = AssemblyAIDialect.chart.ending(ending)
    assert (rule.close, rule.message, rule.error) == (code, reason, None)


# --- the query string -----------------------------------------------------------------------------------


def test_the_sdks_query_configures_the_session_with_its_capitalised_booleans():
    d = dialect(SDK_QUERY, opened=False)
    [event] = d.on_open()
    assert event.audio == AudioFormat("pcm_s16le", 16000) and event.partials and event.language == "en"
    assert d.settings.format_turns and d.speech_model == "universal-streaming-english"


def test_defaults_are_pcm_s16le_at_16_khz_and_turns_unformatted():
    event = configure("")
    assert event.audio == AudioFormat("pcm_s16le", 16000)
    assert event.endpointing == pytest.approx(0.752)  # 400 + (1280 - 400) * 0.4 ms
    assert not dialect("", opened=False).settings.format_turns


def test_pcm_mulaw_is_served_at_its_rate():
    assert configure("encoding=pcm_mulaw&sample_rate=8000").audio == AudioFormat("mulaw", 8000)


@pytest.mark.parametrize("query, seconds", [
    ("end_of_turn_confidence_threshold=0&min_turn_silence=160", 0.16),
    ("end_of_turn_confidence_threshold=1&max_turn_silence=2000", 2.0),
    ("end_of_turn_confidence_threshold=0.5&min_turn_silence=200&max_turn_silence=1000", 0.6),
])
def test_turn_detection_parameters_set_the_endpointing_between_min_and_max_turn_silence(query, seconds):
    assert configure(query).endpointing == pytest.approx(seconds)


def test_keyterms_prompt_is_a_json_list_that_becomes_the_hints():
    assert configure('keyterms_prompt=["Sonny", "voice agent", "Sonny"]').hints == ("Sonny", "voice agent")


def test_inactivity_timeout_ends_a_silent_session():
    assert dialect("inactivity_timeout=30", opened=False).speech_idle_timeout == 30.0
    assert dialect("", opened=False).speech_idle_timeout is None


def test_unknown_query_parameters_are_ignored():
    assert configure("vad_threshold=0.5&language_detection=True&speaker_labels=false&frobnicate=1").partials


@pytest.mark.parametrize("query, rule, detail", [
    ("encoding=opus", "AA-PARAM-001", "encoding must be pcm_s16le or pcm_mulaw, not 'opus'"),
    ("sample_rate=4000", "AA-PARAM-001", "sample_rate must be a whole number of Hz from 8000 to 48000"),
    ("sample_rate=16k", "AA-PARAM-001", "not '16k'"),
    ("speech_model=nova-3", "AA-PARAM-002", "speech_model 'nova-3' is not a published model"),
    ("format_turns=yes", "AA-PARAM-003", "format_turns must be true or false, not 'yes'"),
    ("end_of_turn_confidence_threshold=1.5", "AA-PARAM-003", "from 0 to 1, not '1.5'"),
    ("end_of_turn_confidence_threshold=nan", "AA-PARAM-003", "not 'nan'"),
    ("min_turn_silence=-1", "AA-PARAM-003", "min_turn_silence must be a whole number of ms"),
    ("min_turn_silence=2000&max_turn_silence=1000", "AA-PARAM-003", "is above max_turn_silence"),
    ("keyterms_prompt=Sonny", "AA-PARAM-004", "a JSON list of strings"),
    ('keyterms_prompt=["' + "x" * 51 + '"]', "AA-PARAM-004", "longer than 50 characters"),
    ("keyterms_prompt=" + json.dumps(["k"] * 101), "AA-PARAM-004", "101 keyterms; at most 100"),
    ("inactivity_timeout=4", "AA-PARAM-005", "from 5 to 3600"),
])
def test_a_bad_query_parameter_closes_3006_after_the_upgrade_naming_it(query, rule, detail):
    v = refusal(query)
    assert v.rule.id == rule and v.rule.close == 3006 and detail in v.detail
    assert v.rule.message == f"Invalid Query Parameter: {v.detail}"  # the close reason


# --- frames in ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [1600, 3200, 32000])  # 50 ms, 100 ms, 1 s
def test_audio_frames_of_50_to_1000_ms_are_audio(size):
    d = dialect()
    assert d.receive(bytes(size)) == [Audio(bytes(size))]
    assert d.machine.state == "streaming"


@pytest.mark.parametrize("size, shown", [(960, "30"), (1598, "49.9"), (32002, "1000.1"), (0, "0"), (64000, "2000")])
def test_a_frame_outside_50_to_1000_ms_closes_3007_with_the_vendors_reason(size, shown):
    v = violation(dialect().receive(bytes(size)))
    assert v.rule.id == "AA-AUDIO-001" and v.rule.close == 3007
    assert v.rule.message == f"Input duration violation: {shown} ms. Expected between 50 and 1000 ms"


def test_the_frame_duration_counts_bytes_at_the_declared_rate_and_encoding():
    d = dialect("encoding=pcm_mulaw&sample_rate=8000")
    assert d.receive(bytes(800)) == [Audio(bytes(800))]  # 100 ms of 8 kHz mu-law
    assert violation(d.receive(bytes(300))).rule.message.startswith("Input duration violation: 37.5 ms")


@pytest.mark.parametrize("frame, rule, reason", [
    ("{bad", "AA-MSG-001", "Invalid JSON: {bad"),
    ("[]", "AA-MSG-002", "Invalid Message: []"),
    ('"Terminate"', "AA-MSG-002", 'Invalid Message: "Terminate"'),
    ('{"type":"Frobnicate"}', "AA-MSG-003", "Invalid Message Type: Frobnicate"),
    ('{"type":7}', "AA-MSG-003", "Invalid Message Type: 7"),
    ('{"message":"Terminate"}', "AA-MSG-003", "Invalid Message Type: null"),
    ('{"type":"audio"}', "AA-MSG-003", "Invalid Message Type: audio"),  # a chart event, not a message
])
def test_text_that_is_not_a_known_message_closes_3006_with_the_vendors_reason(frame, rule, reason):
    v = violation(dialect().receive(frame))
    assert (v.rule.id, v.rule.close, v.rule.message) == (rule, 3006, reason)


def test_a_close_reason_fits_a_close_frame_however_long_the_detail():
    assert len(close_reason("Invalid JSON", "é" * 200).encode()) <= 120
    v = violation(dialect().receive("{" + "💥" * 500))
    assert v.rule.message.startswith("Invalid JSON: {💥") and len(v.rule.message.encode()) <= 120


def test_force_endpoint_is_a_flush_and_keep_alive_changes_nothing():
    d = dialect()
    assert d.receive('{"type":"ForceEndpoint"}') == [Flush()]
    assert d.receive('{"type":"KeepAlive"}') == []
    assert d.machine.state == "streaming"


def test_terminate_ends_the_audio_and_what_follows_is_ignored_without_a_word():
    d = dialect()
    assert d.receive('{"type":"Terminate"}') == [EndOfAudio()]
    assert d.machine.state == "terminating"
    for frame, rule in [(CHUNK_100MS, "AA-CLOSE-001"), ('{"type":"ForceEndpoint"}', "AA-CLOSE-002"),
                        ('{"type":"Terminate"}', "AA-CLOSE-002"), ('{"type":"KeepAlive"}', "AA-CLOSE-002")]:
        v = violation(d.receive(frame))
        assert v.rule.id == rule and not v.rule.fatal
        assert d.render(v) == []
    assert d.machine.state == "terminating"


def test_update_configuration_applies_format_turns_and_validates_turn_detection():
    d = dialect()
    assert d.receive('{"type":"UpdateConfiguration","format_turns":true,"end_of_turn_confidence_threshold":0.7,'
                     '"min_turn_silence":100,"max_turn_silence":900,"vad_threshold":0.3}') == []
    assert d.settings.format_turns and d.settings.min_turn_silence == 100


@pytest.mark.parametrize("update, detail", [
    ('"end_of_turn_confidence_threshold":2', "from 0 to 1, not 2"),
    ('"end_of_turn_confidence_threshold":true', "not true"),
    ('"min_turn_silence":1.5', "whole milliseconds"),
    ('"min_turn_silence":5000', "is above max_turn_silence"),
    ('"format_turns":"True"', 'format_turns must be a boolean, not "True"'),
])
def test_a_bad_update_configuration_closes_3006_and_leaves_the_settings(update, detail):
    d = dialect()
    before = d.settings
    v = violation(d.receive('{"type":"UpdateConfiguration",' + update + "}"))
    assert v.rule.id == "AA-MSG-004" and v.rule.close == 3006 and detail in v.detail
    assert v.rule.message.startswith("Invalid Message: ") and d.settings == before


# --- frames out -----------------------------------------------------------------------------------------


def test_begin_carries_the_session_id_and_an_expiry_three_hours_on():
    d = dialect(opened=False)
    [configure_event] = d.on_open()
    [begin] = d.render(SessionStarted("abc", configure_event))
    msg = json.loads(begin)
    assert msg["type"] == "Begin" and msg["id"] == "abc"
    assert abs(msg["expires_at"] - (time.time() + 3 * 3600)) < 5


def test_a_turn_grows_from_partials_to_finals_to_its_end():
    d = dialect()
    [partial] = turns(d, Partial(WORDS[:2], 0.5, 0.9))
    assert partial["turn_order"] == 0 and not partial["end_of_turn"] and not partial["turn_is_formatted"]
    assert partial["transcript"] == "" and [w["word_is_final"] for w in partial["words"]] == [False, False]
    assert partial["words"][0] == {"start": 500, "end": 700, "confidence": 0.9, "text": "i", "word_is_final": False}
    [cut] = turns(d, Final(WORDS[:2], 0.5, 0.9))  # an utterance cut (max_delay): the turn goes on
    assert cut["transcript"] == "i was" and cut["utterance"] == "I was" and not cut["end_of_turn"]
    [more] = turns(d, Partial(WORDS[2:], 1.0, 1.6))
    assert more["transcript"] == "i was" and [w["word_is_final"] for w in more["words"]] == [True, True, False, False]
    [final] = turns(d, Final(WORDS[2:], 1.0, 1.6))
    assert final["transcript"] == "i was twenty five" and not final["end_of_turn"]
    [end] = turns(d, SpeechStopped(1.6))
    assert end["end_of_turn"] and end["turn_order"] == 0 and end["transcript"] == "i was twenty five"
    assert end["end_of_turn_confidence"] == 1.0 and all(w["word_is_final"] for w in end["words"])
    [nxt] = turns(d, Partial((Word("hello", 3.0, 3.4),), 3.0, 3.4))
    assert nxt["turn_order"] == 1 and nxt["transcript"] == ""


def test_format_turns_sends_a_formatted_turn_after_the_end_of_turn():
    d = dialect(SDK_QUERY)
    turns(d, Final(WORDS, 0.5, 1.6))
    plain, formatted = turns(d, SpeechStopped(1.6))
    assert plain["end_of_turn"] and not plain["turn_is_formatted"] and plain["transcript"] == "i was twenty five"
    assert formatted["end_of_turn"] and formatted["turn_is_formatted"] and formatted["turn_order"] == 0
    assert formatted["transcript"] == "I was 25."
    assert [(w["text"], w["start"], w["end"]) for w in formatted["words"]] == [
        ("I", 500, 700), ("was", 700, 900), ("25.", 1000, 1600)]
    assert formatted["words"][-1]["confidence"] == 0.6


def test_update_configuration_turns_formatting_on_mid_session():
    d = dialect()
    d.receive('{"type":"UpdateConfiguration","format_turns":true}')
    turns(d, Final(WORDS[:1], 0.5, 0.7))
    assert [t["turn_is_formatted"] for t in turns(d, SpeechStopped(0.7))] == [False, True]


def test_force_endpoint_ends_the_turn_at_its_forced_final():
    d = dialect()
    turns(d, Partial(WORDS[:1], 0.5, 0.7))
    final, end = turns(d, Final(WORDS[:1], 0.5, 0.7, forced=True))
    assert not final["end_of_turn"] and end["end_of_turn"] and end["turn_order"] == 0
    assert turns(d, SpeechStopped(0.7)) == []  # speech goes on after a forced final; nothing is left to end
    assert turns(d, Final((), 0.8, 0.8, forced=True)) == []  # a flush with nothing said sends nothing


def test_nothing_said_sends_nothing_and_partials_that_came_to_nothing_end_empty():
    d = dialect()
    assert turns(d, Partial((), 0.0, 0.0)) == [] and turns(d, Final((), 0.0, 0.0)) == []
    assert turns(d, SpeechStopped(0.0)) == []
    turns(d, Partial(WORDS[:1], 0.5, 0.7))
    [gone] = turns(d, Final((), 0.5, 0.7))
    assert gone["words"] == [] and gone["transcript"] == ""
    [end] = turns(d, SpeechStopped(0.7))
    assert end["end_of_turn"] and end["transcript"] == ""


def test_speech_started_is_sent_in_milliseconds():
    assert turns(dialect(), SpeechStarted(1.25)) == [{"type": "SpeechStarted", "timestamp": 1250}]


def test_the_end_of_the_transcript_ends_the_open_turn_then_sends_termination():
    d = dialect()
    for _ in range(25):
        d.receive(CHUNK_100MS)
    d.receive('{"type":"Terminate"}')
    turns(d, Final(WORDS[:2], 0.5, 0.9))
    end, termination = turns(d, EndOfTranscript())
    assert end["end_of_turn"] and end["transcript"] == "i was"
    assert termination["type"] == "Termination" and termination["audio_duration_seconds"] == 2
    assert isinstance(termination["session_duration_seconds"], int)
    assert d.machine.state == "terminated"


def test_inactivity_ends_the_session_with_termination():
    d = dialect("inactivity_timeout=5")
    rule = d.chart.ending("idle_timeout")
    assert rule.close == 1000
    [termination] = d.render_violation(Violation(rule, "no speech for 5 s"))
    assert sdk_parsed(termination).type == "Termination"


def test_audio_is_not_acknowledged():
    assert dialect().render(AudioAccepted(1)) == []
