"""Scriptix real-time, microphone mode, sans-IO: the query string and the start action in, Configure out;
frames in, events out; results in, compact JSON frames out, in both documented shapes (protocols.md §3)."""

import json
import uuid

import pytest

from stt.dialects import DIALECTS, dialect_for
from stt.dialects.base import Handshake
from stt.dialects.scriptix import ScriptixDialect
from stt.events import (
    Audio,
    AudioAccepted,
    AudioFormat,
    Configure,
    EndOfAudio,
    EndOfTranscript,
    FetchAudio,
    Final,
    Partial,
    SessionStarted,
    SessionStatus,
    SpeechStarted,
    SpeechStopped,
    Violation,
    Word,
)
from stt.statechart import load_chart

PATH = "/v2/realtime"
SESSION_ID = "7079f6cc-1d2b-4c3e-9f00-0123456789ab"
WORDS = (Word("he", 0.5, 0.7, 0.9), Word("was", 0.7, 0.9, 0.8), Word("twenty", 1.0, 1.3, 0.7),
         Word("five", 1.3, 1.6, 0.61))


def dialect(query: str = "type=fast&language=en", headers=(), path: str = PATH) -> ScriptixDialect:
    d = ScriptixDialect(Handshake.from_target(f"{path}?{query}" if query else path, list(headers)))
    assert d.on_open() == []
    return d


def started(query: str = "type=fast&language=en", **start) -> ScriptixDialect:
    d = dialect(query)
    events = d.receive(json.dumps({"action": "start", **start}))
    assert isinstance(events[-1], Configure), events
    assert d.render(SessionStarted(SESSION_ID, events[-1])) == ['{"state":"listening","session_id":"%s"}'
                                                                 % uuid.UUID(SESSION_ID).hex]
    return d


def violation(events) -> Violation:
    assert len(events) == 1 and isinstance(events[0], Violation), events
    return events[0]


# --- routing ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v2/realtime", "/v2/realtime/", "/v2/client/tok123", "/v2/client/tok123/"])
def test_scriptix_paths_route_to_scriptix(path):
    assert dialect_for(path) is ScriptixDialect


@pytest.mark.parametrize("path", ["/v2", "/v2/", "/v2/en", "/v2/de/", "/v2/realtimes", "/v2/client"])
def test_speechmatics_paths_still_route_to_speechmatics(path):
    assert dialect_for(path).name == "speechmatics"


def test_scriptix_is_tried_before_speechmatics():
    names = [d.name for d in DIALECTS]
    assert names.index("scriptix") < names.index("speechmatics")


# --- the query string ------------------------------------------------------------------------------------


@pytest.mark.parametrize("query", ["", "type=fast", "type=quality", "type=quality&language=en",
                                   "language=EN-us", "shape=v", "shape=K"])
def test_valid_query_strings_are_accepted(query):
    assert dialect(query).on_open() == []


@pytest.mark.parametrize("query, rule_id", [
    ("type=slow", "SX-PARAM-001"),
    ("language=nl", "SX-PARAM-002"),
    ("language=english", "SX-PARAM-002"),
    ("shape=x", "SX-PARAM-003"),
])
def test_bad_query_parameters_are_fatal_errors(query, rule_id):
    d = ScriptixDialect(Handshake.from_target(f"{PATH}?{query}"))
    v = violation(d.on_open())
    assert v.rule.id == rule_id and v.rule.fatal and v.rule.close == 1000
    [frame] = d.render_violation(v)
    assert frame.startswith('{"error":"') and json.loads(frame)["error"].startswith(v.rule.message + ": ")


def test_unsupported_language_error_names_it():
    d = ScriptixDialect(Handshake.from_target(f"{PATH}?language=nl"))
    [frame] = d.render_violation(d.on_open()[0])
    assert frame == '{"error":"unsupported language: language \'nl\' is not supported (supported: en)"}'


def test_stream_mode_reads_the_url_itself():
    d = ScriptixDialect(Handshake.from_target("/v2/client/tok?url=https://example.com/a.mp3&type=fast"))
    assert d.credential() == "tok" and not d.credential_in_start
    assert d.greeting() == ['{"state":"loading"}']
    configure, fetch = d.on_open()
    assert configure.audio == AudioFormat("file") and fetch == FetchAudio("https://example.com/a.mp3")
    assert d.machine.state == "starting"
    [v] = d.receive(b"\x00\x00")  # the client's own audio is ignored
    assert v.rule.id == "SX-STREAM-002" and not v.rule.fatal and d.render_violation(v) == []


def test_stream_mode_without_a_url_is_an_error():
    d = ScriptixDialect(Handshake.from_target("/v2/client/tok?type=fast"))
    v = violation(d.on_open())
    assert v.rule.id == "SX-STREAM-001" and v.rule.close == 1000
    assert d.render_violation(v) == ['{"error":"missing stream URL"}']


# --- the token -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("query, headers", [
    ("token=T", ()),
    ("", [("X-Zoom-S2T-Key", "T")]),
    ("", [("x-api-key", "T")]),
    ("", [("Api-Key", "T")]),
    ("token=T", [("x-api-key", "other")]),  # the query's token comes first
])
def test_token_from_query_or_headers(query, headers):
    d = dialect(query, headers)
    assert d.credential() == "T" and not d.credential_in_start
    d.receive('{"action":"start","key":"ignored"}')
    assert d.credential() == "T"  # a token at the upgrade wins over the start action's key


def test_token_from_the_start_action_when_the_upgrade_has_none():
    d = dialect("")
    assert d.credential() is None and d.credential_in_start
    d.receive('{"action":"start","key":"K"}')
    assert d.credential() == "K"


def test_unauthorised_ending_is_an_error_and_1008():
    d = dialect()
    rule = d.chart.ending("unauthorised")
    assert rule.id == "SX-AUTH-001" and rule.close == 1008
    assert d.render_violation(Violation(rule, "missing or invalid API key")) == ['{"error":"missing or invalid token"}']


def test_start_timeout_is_15_s_and_its_error_is_connection_timeout():
    d = dialect()
    assert ScriptixDialect.start_timeout == 15.0
    rule = d.chart.ending("idle_timeout")
    assert rule.close == 1000
    assert d.render_violation(Violation(rule, "no start message within 15 s")) == ['{"error":"connection timeout"}']


def test_other_endings():
    d = dialect()
    assert d.render_violation(Violation(d.chart.ending("internal_error"))) == ['{"error":"internal error"}']
    assert d.chart.ending("internal_error").close == 1011
    assert d.chart.ending("bad_audio").close == 1000
    for ending in ("shutdown", "message_too_large"):  # the lifecycle's: Scriptix has no message for them
        assert d.render_violation(Violation(d.chart.ending(ending))) == []


# --- the start action ------------------------------------------------------------------------------------


def test_start_opens_raw_pcm_16k_with_wav_sniffing_and_partials():
    d = dialect()
    [configure] = d.receive('{"action":"start"}')
    assert configure == Configure(AudioFormat("pcm_s16le", 16000, sniff=True), language="en", partials=True)
    assert d.machine.state == "starting"


def test_start_options():
    d = dialect()
    [configure] = d.receive('{"action":"start","partial":false,"actual_numbers":true}')
    assert configure.partials is False and d.actual_numbers and not d.partial


def test_shape_v_sends_no_loading_state_so_listening_is_the_first_answer():
    d = dialect("shape=v")
    [configure] = d.receive('{"action":"start"}')
    assert isinstance(configure, Configure)


@pytest.mark.parametrize("start", ['{"action":"start","partial":"no"}', '{"action":"start","key":5}',
                                   '{"action":"start","actual_numbers":1}'])
def test_badly_typed_start_options_are_fatal(start):
    d = dialect()
    v = violation(d.receive(start))
    assert v.rule.id == "SX-START-001" and v.rule.close == 1000 and d.machine.state == "open"


def test_listening_is_compact_with_a_uuid_hex_session_id():
    d = started()
    assert d.machine.state == "listening"


# --- order -----------------------------------------------------------------------------------------------


def test_audio_before_start_is_ignored_with_a_silent_warning():
    d = dialect()
    v = violation(d.receive(b"\x00\x00" * 100))
    assert v.rule.id == "SX-ORDER-001" and not v.rule.fatal and v.rule.warning
    assert d.render_violation(v) == [] and d.render(v) == []
    assert d.machine.state == "open"


def test_audio_pipelined_after_start_is_kept():
    d = dialect()
    d.receive('{"action":"start"}')
    assert d.receive(b"\x01\x00") == [Audio(b"\x01\x00")]


def test_audio_after_listening_is_audio():
    d = started()
    assert d.receive(b"\x01\x00\x02\x00") == [Audio(b"\x01\x00\x02\x00")]
    assert d.receive(b"") == []


def test_second_start_is_a_non_fatal_error():
    d = started()
    v = violation(d.receive('{"action":"start"}'))
    assert v.rule.id == "SX-ORDER-003" and not v.rule.fatal
    assert d.render(v) == ['{"error":"the session has already started"}']
    assert d.machine.state == "listening"


def test_stop_then_finals_then_stopped():
    d = started()
    assert d.receive('{"action":"stop"}') == [EndOfAudio()]
    assert d.machine.state == "stopping"
    assert d.render(EndOfTranscript()) == ['{"state":"stopped"}']
    assert d.machine.state == "stopped"


def test_no_restart_after_stop():
    d = started()
    d.receive('{"action":"stop"}')
    v = violation(d.receive('{"action":"start"}'))
    assert v.rule.id == "SX-ORDER-004" and not v.rule.fatal
    assert d.render(v) == ['{"error":"a stopped session cannot be restarted; open a new connection"}']


def test_audio_and_stop_after_stop_are_ignored_silently():
    d = started()
    d.receive('{"action":"stop"}')
    for frame, rule_id in ((b"\x00\x00", "SX-CLOSE-001"), ('{"action":"stop"}', "SX-CLOSE-002")):
        v = violation(d.receive(frame))
        assert v.rule.id == rule_id and not v.rule.fatal and d.render(v) == []


def test_stop_before_start_answers_stopped_and_closes_1000():
    d = dialect()
    v = violation(d.receive('{"action":"stop"}'))
    assert v.rule.id == "SX-ORDER-002" and v.rule.close == 1000
    assert d.render_violation(v) == ['{"state":"stopped"}']


def test_stop_while_starting_then_listening_is_rendered():
    d = dialect()
    [configure] = d.receive('{"action":"start"}')
    d.receive('{"action":"stop"}')
    assert d.render(SessionStarted(SESSION_ID, configure))[0].startswith('{"state":"listening"')
    assert d.machine.state == "stopping"


@pytest.mark.parametrize("frame", ["not json", "[1]", '{"type":"start"}', '{"action":5}'])
def test_frames_that_are_not_actions_are_fatal(frame):
    v = violation(dialect().receive(frame))
    assert v.rule.id == "SX-MSG-001" and v.rule.close == 1000


def test_unknown_action_is_a_non_fatal_error():
    d = started()
    v = violation(d.receive('{"action":"pause"}'))
    assert v.rule.id == "SX-MSG-002" and not v.rule.fatal
    assert d.render(v) == ['{"error":"unknown action: \'pause\'"}']


def test_every_forbidden_pair_has_a_rule_and_the_chart_names_every_ending():
    chart = load_chart("scriptix")
    for (state, event), rule_id in chart.forbidden.items():
        assert rule_id in chart.rules
    assert set(chart.endings) == {"unauthorised", "idle_timeout", "bad_audio", "internal_error", "busy",
                                  "session_timeout"}


# --- results: shape K ------------------------------------------------------------------------------------


def test_shape_k_partial_and_final_exact_strings():
    d = started()
    assert d.render(Partial(WORDS[:2], 0.5, 0.9)) == ['{"partial":"he was"}']
    assert d.render(Final(WORDS, 0.5, 1.6)) == [
        '{"result":[["he",500,700,0.9],["was",700,900,0.8],["twenty",1000,1300,0.7],["five",1300,1600,0.61]],'
        '"speaker":"Speaker 1","text":"he was twenty five"}'
    ]


def test_shape_k_actual_numbers_join_a_number_into_one_item():
    d = started(actual_numbers=True)
    assert d.render(Partial(WORDS, 0.5, 1.6)) == ['{"partial":"he was 25"}']
    assert d.render(Final(WORDS, 0.5, 1.6)) == [
        '{"result":[["he",500,700,0.9],["was",700,900,0.8],["25",1000,1600,0.61]],'
        '"speaker":"Speaker 1","text":"he was 25"}'
    ]


def test_partial_false_sends_no_partials():
    d = started(partial=False)
    assert d.render(Partial(WORDS, 0.5, 1.6)) == []
    assert json.loads(d.render(Final(WORDS, 0.5, 1.6))[0])["text"] == "he was twenty five"


def test_empty_results():
    d = started()
    assert d.render(Partial((), 0.0, 0.0)) == []
    assert d.render(Final((), 1.0, 1.0)) == []  # nothing said, nothing shown: nothing sent
    d.render(Partial(WORDS[:1], 0.5, 0.7))
    assert d.render(Final((), 1.0, 1.0)) == ['{"result":[],"speaker":"Speaker 1","text":""}']


def test_nothing_for_voice_activity_acks_and_status():
    d = started()
    for item in (SpeechStarted(0.5), SpeechStopped(1.6), AudioAccepted(1), SessionStatus(1.0, 1.0)):
        assert d.render(item) == []


# --- results: shape V ------------------------------------------------------------------------------------


def test_shape_v_partial_and_final_exact_strings():
    d = started("shape=v")
    assert d.render(Partial(WORDS[:2], 0.5, 0.9)) == [
        '{"text":"he was","is_final":false,"offset_ms":900,"stability":0.85}'
    ]
    assert d.render(Final(WORDS, 0.5, 1.6)) == [
        '{"text":"he was twenty five","is_final":true,"offset_ms":1600,'
        '"words":[["he",500,700,0.9],["was",700,900,0.8],["twenty",1000,1300,0.7],["five",1300,1600,0.61]],'
        '"speaker":"Speaker 1"}'
    ]
    d.receive('{"action":"stop"}')
    assert d.render(EndOfTranscript()) == ['{"state":"stopped"}']


def test_shape_v_actual_numbers():
    d = started("shape=v", actual_numbers=True)
    final = json.loads(d.render(Final(WORDS, 0.5, 1.6))[0])
    assert final["text"] == "he was 25" and final["words"][-1] == ["25", 1000, 1600, 0.61]


# --- compactness -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("query", ["", "shape=v"])
def test_every_frame_is_compact_json(query):
    d = started(query)
    frames = [*d.render(Partial(WORDS, 0.5, 1.6)), *d.render(Final(WORDS, 0.5, 1.6))]
    d.receive('{"action":"stop"}')
    frames += d.render(EndOfTranscript())
    for frame in frames:
        assert frame == json.dumps(json.loads(frame), separators=(",", ":")) and ": " not in frame
    assert frames[-1] == '{"state":"stopped"}'
    times = [t for f in frames for item in json.loads(f).get("result", json.loads(f).get("words", []))
             for t in item[1:3]]
    assert times and all(isinstance(t, int) for t in times)
