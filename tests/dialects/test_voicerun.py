"""VoiceRun Transcribe, sans-IO: frames in, events out; results in, frames out (protocols.md §5)."""

import base64
import inspect
import json
import re

import pytest

from stt.dialects import dialect_for
from stt.dialects.base import Handshake
from stt.dialects import voicerun
from stt.dialects.voicerun import MODELS, VoiceRunDialect
from stt.events import (
    Audio,
    AudioAccepted,
    AudioFormat,
    Configure,
    EndOfAudio,
    EndOfTranscript,
    Final,
    Partial,
    Reply,
    SessionStarted,
    SessionStatus,
    SpeechStarted,
    SpeechStopped,
    Violation,
    Word,
)
from stt.statechart import load_chart

UPDATE = {"model": "nova-3", "provider": "DEEPGRAM", "language": "en", "input_audio_format": "pcm16",
          "sample_rate": 16000}


def update(**session):
    return json.dumps({"type": "session.update", "session": session})


def append(data: bytes) -> str:
    return json.dumps({"type": "audio.append", "audio": base64.b64encode(data).decode()})


CLOSE = '{"type":"session.close"}'


def dialect(headers=(), updated=True, **session):
    d = VoiceRunDialect(Handshake.from_target("/ws", list(headers)))
    d.greeting()
    if updated:
        [configure] = d.receive(update(**{**UPDATE, **session}))
        d.render(SessionStarted("id-1", configure))
    return d


def violation(events):
    assert len(events) == 1 and isinstance(events[0], Violation), events
    return events[0]


def frames(d, item):
    return [json.loads(f) for f in d.render(item)]


def error_frame(d, v):
    [frame] = [json.loads(f) for f in d.render_violation(v)]
    assert frame["type"] == "error" and set(frame["error"]) == {"type", "code", "message"}
    return frame["error"]


def words(*texts):
    return tuple(Word(t, i * 0.5, i * 0.5 + 0.4) for i, t in enumerate(texts))


# --- routing and handshake -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/ws", "/ws/"])
def test_path_served(path):
    assert VoiceRunDialect.match(path) and dialect_for(path) is VoiceRunDialect


@pytest.mark.parametrize("path", ["/", "/ws/v1", "/wss", "/v2"])
def test_paths_not_served(path):
    assert not VoiceRunDialect.match(path)


def test_credential_is_the_bearer_token():
    assert dialect([(b"Authorization", b"Bearer k1")], updated=False).credential() == "k1"
    assert dialect(updated=False).credential() is None
    assert dialect([(b"Authorization", b"Token k1")], updated=False).credential() is None


def test_hooks():
    d = dialect(updated=False)
    assert d.closes_after_end and not d.rejects_unauthorised
    assert d.status_interval is None and d.speech_idle_timeout is None and d.on_open() == []


def test_greeting_is_session_created_with_a_ts_id():
    d = VoiceRunDialect(Handshake.from_target("/ws"))
    [created] = [json.loads(f) for f in d.greeting()]
    assert created["type"] == "session.created" and set(created) == {"type", "session"}
    assert re.fullmatch(r"ts_[0-9a-f]{12}", created["session"]["id"])
    assert created["session"] == {"id": d.session_id}
    assert VoiceRunDialect(Handshake.from_target("/ws")).session_id != d.session_id


# --- session.update ------------------------------------------------------------------------------------


def test_session_update_configures_and_session_updated_echoes_the_config():
    d = dialect(updated=False)
    [configure] = d.receive(update(**UPDATE, prompt="insurance, policy premium,policy"))
    assert configure == Configure(AudioFormat("pcm_s16le", 16000), "en", partials=True,
                                  hints=("insurance", "policy", "premium"))
    assert d.machine.state == "updating"
    assert frames(d, SessionStarted("x", configure)) == [{
        "type": "session.updated",
        "session": {"model": "nova-3", "provider": "DEEPGRAM", "language": "en", "sample_rate": 16000,
                    "input_audio_format": "pcm16", "prompt": "insurance, policy premium,policy"},
    }]
    assert d.machine.state == "updated"


def test_defaults_language_en_pcm16_16k_and_no_prompt_echoed():
    d = dialect(updated=False)
    [configure] = d.receive(update(model="gpt-4o-transcribe", provider="OPENAI"))
    assert configure == Configure(AudioFormat("pcm_s16le", 16000), "en", partials=True)
    [updated] = frames(d, SessionStarted("x", configure))
    assert updated["session"] == {"model": "gpt-4o-transcribe", "provider": "OPENAI", "language": "en",
                                  "sample_rate": 16000, "input_audio_format": "pcm16"}


def test_null_optional_fields_mean_not_given():
    d = dialect(updated=False)
    [configure] = d.receive(update(model="nova-3", provider="DEEPGRAM", prompt=None, sample_rate=None))
    assert configure.audio == AudioFormat("pcm_s16le", 16000) and configure.hints == ()


def test_mulaw_8k():
    [configure] = dialect(updated=False).receive(update(**{**UPDATE, "input_audio_format": "mulaw",
                                                           "sample_rate": 8000}))
    assert configure.audio == AudioFormat("mulaw", 8000)


@pytest.mark.parametrize("model", list(MODELS))
def test_every_published_model_with_its_provider(model):
    [configure] = dialect(updated=False).receive(update(model=model, provider=MODELS[model]))
    assert isinstance(configure, Configure)


def test_multi_is_served_as_english_and_echoed_as_asked():
    d = dialect(updated=False)
    [configure] = d.receive(update(**{**UPDATE, "language": "multi"}))
    assert configure.language == "en"
    assert frames(d, SessionStarted("x", configure))[0]["session"]["language"] == "multi"


@pytest.mark.parametrize("language", ["en-US", "en-GB", "EN"])
def test_english_variants(language):
    [configure] = dialect(updated=False).receive(update(**{**UPDATE, "language": language}))
    assert configure.language == language


@pytest.mark.parametrize(
    "session, rule, code, detail",
    [
        ({"provider": "DEEPGRAM"}, "VR-CFG-001", "invalid_config", "session.model is required"),
        ({"model": "nova-3"}, "VR-CFG-001", "invalid_config", "session.provider is required"),
        ({**UPDATE, "sample_rate": "16000"}, "VR-CFG-001", "invalid_config", "session.sample_rate must be an integer"),
        ({**UPDATE, "sample_rate": True}, "VR-CFG-001", "invalid_config", "must be an integer"),
        ({**UPDATE, "prompt": ["a"]}, "VR-CFG-001", "invalid_config", "session.prompt must be a string"),
        ({**UPDATE, "vad": "on"}, "VR-CFG-001", "invalid_config", "session.vad is not a known field"),
        ({**UPDATE, "model": "whisper-1"}, "VR-CFG-002", "unsupported_model", "model 'whisper-1' is not one of"),
        ({**UPDATE, "provider": "deepgram"}, "VR-CFG-002", "unsupported_model", "provider 'deepgram' is not one of"),
        ({**UPDATE, "provider": "OPENAI"}, "VR-CFG-002", "unsupported_model", "'nova-3' is a DEEPGRAM model, not OPENAI"),
        ({**UPDATE, "language": "de"}, "VR-CFG-003", "unsupported_language", "'de' is not supported"),
        ({**UPDATE, "language": "english"}, "VR-CFG-003", "unsupported_language", "not a BCP-47 tag"),
        ({**UPDATE, "input_audio_format": "opus"}, "VR-CFG-004", "invalid_audio_format", "'opus' is not pcm16 or mulaw"),
        ({**UPDATE, "sample_rate": 4000}, "VR-CFG-004", "invalid_audio_format", "from 8000 to 48000 Hz, not 4000"),
        ({**UPDATE, "sample_rate": 96000}, "VR-CFG-004", "invalid_audio_format", "not 96000"),
    ],
)
def test_a_bad_first_update_is_an_error_and_the_session_waits_for_a_good_one(session, rule, code, detail):
    d = dialect(updated=False)
    v = violation(d.receive(update(**session)))
    assert v.rule.id == rule and detail in v.detail and not v.rule.fatal
    error = error_frame(d, v)
    assert error == {"type": "invalid_request_error", "code": code, "message": f"{v.rule.message}: {v.detail}"}
    assert d.machine.state == "created" and d.config is None
    assert isinstance(d.receive(update(**UPDATE))[0], Configure)


@pytest.mark.parametrize("frame", ['{"type":"session.update"}', '{"type":"session.update","session":[1]}'])
def test_session_update_without_a_session_object(frame):
    v = violation(dialect(updated=False).receive(frame))
    assert v.rule.id == "VR-CFG-001" and '"session" is required' in v.detail


# --- a later session.update ----------------------------------------------------------------------------


def test_re_update_changes_the_prompt_and_model_and_echoes_the_whole_config():
    d = dialect()
    [reply] = d.receive(update(prompt="claims", model="flux-general-en"))
    assert isinstance(reply, Reply) and d.machine.state == "updated"
    assert [json.loads(f) for f in reply.frames] == [{  # the session sends a Reply's frames as they are
        "type": "session.updated",
        "session": {"model": "flux-general-en", "provider": "DEEPGRAM", "language": "en", "sample_rate": 16000,
                    "input_audio_format": "pcm16", "prompt": "claims"},
    }]


def test_re_update_may_repeat_the_fixed_fields_and_switch_provider_with_model():
    d = dialect()
    [reply] = d.receive(update(**{**UPDATE, "model": "ink-whisper", "provider": "CARTESIA"}))
    assert json.loads(reply.frames[0])["session"]["provider"] == "CARTESIA"


@pytest.mark.parametrize("field, value", [("input_audio_format", "mulaw"), ("sample_rate", 8000),
                                          ("language", "en-US")])
def test_re_update_cannot_change_what_the_audio_depends_on(field, value):
    d = dialect()
    v = violation(d.receive(update(**{field: value})))
    assert v.rule.id == "VR-CFG-005" and not v.rule.fatal and f"session.{field} is" in v.detail
    assert error_frame(d, v)["code"] == "immutable_field"
    assert d.config.input_audio_format == "pcm16" and d.config.sample_rate == 16000 and d.config.language == "en"


def test_a_bad_re_update_leaves_the_config_as_it_was():
    d = dialect(prompt="one")
    assert violation(d.receive(update(prompt="two", provider="OPENAI"))).rule.id == "VR-CFG-002"
    assert d.config.prompt == "one" and d.config.provider == "DEEPGRAM"


def test_re_update_before_session_updated_is_answered_after_it():
    d = dialect(updated=False)
    [configure] = d.receive(update(**UPDATE))
    [reply] = d.receive(update(prompt="late"))  # pipelined: the recognizer is still opening
    first = frames(d, SessionStarted("x", configure))
    assert "prompt" not in first[0]["session"]  # the first echo is the first configuration
    assert json.loads(reply.frames[0])["session"]["prompt"] == "late"


# --- audio.append --------------------------------------------------------------------------------------


def test_audio_append_decodes_base64():
    d = dialect()
    assert d.receive(append(b"\x01\x02\x03\x04")) == [Audio(b"\x01\x02\x03\x04")]
    assert d.receive('{"type":"audio.append","audio":""}') == []
    mime = base64.encodebytes(bytes(range(256)) * 2).decode()  # line breaks every 76 characters
    assert d.receive(json.dumps({"type": "audio.append", "audio": mime})) == [Audio(bytes(range(256)) * 2)]


def test_audio_may_follow_a_valid_update_before_session_updated():
    d = dialect(updated=False)
    d.receive(update(**UPDATE))
    assert d.receive(append(b"\x00\x00")) == [Audio(b"\x00\x00")]


@pytest.mark.parametrize("frame, detail", [
    ('{"type":"audio.append","audio":"AAA"}', "not valid base64"),
    ('{"type":"audio.append","audio":"AA!A"}', "not valid base64"),
    ('{"type":"audio.append"}', '"audio" is missing'),
    ('{"type":"audio.append","audio":12}', '"audio" is not a string'),
])
def test_invalid_audio_is_fatal_1007(frame, detail):
    d = dialect()
    v = violation(d.receive(frame))
    assert v.rule.id == "VR-AUDIO-001" and detail in v.detail and v.rule.close == 1007
    assert error_frame(d, v)["code"] == "invalid_audio"


def test_audio_before_configuration_is_fatal_1008():
    d = dialect(updated=False)
    v = violation(d.receive(append(b"\x00\x00")))
    assert v.rule.id == "VR-ORDER-001" and v.rule.close == 1008
    assert error_frame(d, v) == {"type": "invalid_request_error", "code": "session_not_configured",
                                 "message": v.rule.message + ": audio.append in state created"}


def test_audio_before_configuration_after_a_bad_update_is_still_refused():
    d = dialect(updated=False)
    d.receive(update(model="nope", provider="DEEPGRAM"))
    assert violation(d.receive(append(b"\x00\x00"))).rule.id == "VR-ORDER-001"


# --- session.close -------------------------------------------------------------------------------------


def test_session_close_ends_the_audio_and_session_closed_follows_the_last_transcript():
    d = dialect()
    assert d.receive(CLOSE) == [EndOfAudio()]
    assert d.machine.state == "closing"
    assert frames(d, Final(words("bye"), 0, 0.4)) == [{"type": "transcription.completed", "text": "bye"}]
    assert frames(d, EndOfTranscript()) == [{"type": "session.closed"}]
    assert d.machine.state == "finished"


def test_session_close_before_configuration_closes_at_once_with_session_closed():
    d = dialect(updated=False)
    v = violation(d.receive(CLOSE))
    assert v.rule.id == "VR-CLOSE-001" and v.rule.close == 1000 and v.rule.error is None
    assert [json.loads(f) for f in d.render_violation(v)] == [{"type": "session.closed"}]


def test_session_close_while_the_recognizer_opens():
    d = dialect(updated=False)
    [configure] = d.receive(update(**UPDATE))
    assert d.receive(CLOSE) == [EndOfAudio()]
    assert frames(d, SessionStarted("x", configure))[0]["type"] == "session.updated"
    assert frames(d, EndOfTranscript()) == [{"type": "session.closed"}]


def test_audio_after_session_close_is_a_non_fatal_error_and_ignored():
    d = dialect()
    d.receive(CLOSE)
    v = violation(d.receive(append(b"\x00\x00")))
    assert v.rule.id == "VR-CLOSE-002" and not v.rule.fatal
    assert frames(d, v) == [{"type": "error", "error": {"type": "invalid_request_error", "code": "session_closing",
                                                         "message": v.rule.message + ": " + v.detail}}]
    assert d.machine.state == "closing"


@pytest.mark.parametrize("frame", [CLOSE, update(prompt="x")])
def test_nothing_else_after_session_close(frame):
    d = dialect()
    d.receive(CLOSE)
    v = violation(d.receive(frame))
    assert v.rule.id == "VR-CLOSE-003" and not v.rule.fatal and error_frame(d, v)["code"] == "session_closing"


# --- frames that are not the protocol ------------------------------------------------------------------


@pytest.mark.parametrize("frame, rule, code, close", [
    ("{not json", "VR-MSG-001", "invalid_json", 1003),
    ("[1, 2]", "VR-MSG-001", "invalid_json", 1003),
    ('{"audio":"AAAA"}', "VR-MSG-002", "missing_type", 1003),
    ('{"type":7}', "VR-MSG-002", "missing_type", 1003),
    (b"\x00\x01", "VR-MSG-004", "binary_not_supported", 1003),
])
def test_frames_that_are_not_the_protocol_are_fatal(frame, rule, code, close):
    for d in (dialect(updated=False), dialect()):
        v = violation(d.receive(frame))
        assert (v.rule.id, v.rule.close) == (rule, close) and error_frame(d, v)["code"] == code


def test_unknown_type_is_a_non_fatal_error():
    d = dialect()
    v = violation(d.receive('{"type":"input_audio_buffer.commit"}'))
    assert v.rule.id == "VR-MSG-003" and not v.rule.fatal and "'input_audio_buffer.commit'" in v.detail
    assert error_frame(d, v)["code"] == "unknown_event"
    assert d.machine.state == "updated"


# --- results out ---------------------------------------------------------------------------------------


def test_render_recognition_events():
    d = dialect()
    assert frames(d, SpeechStarted(0.3)) == [{"type": "speech.started"}]
    assert frames(d, Partial(words("go"), 0, 0.4)) == [{"type": "transcription.partial", "text": "go"}]
    assert frames(d, Partial(words("go", "forward"), 0, 0.9)) == [{"type": "transcription.partial",
                                                                   "text": "go forward"}]
    assert frames(d, Final(words("go", "forward"), 0, 0.9)) == [{"type": "transcription.completed",
                                                                 "text": "go forward"}]
    assert frames(d, SpeechStopped(1.2)) == [{"type": "speech.stopped"}]
    assert d.render(AudioAccepted(1)) == [] and d.render(SessionStatus(1.0, 1.0)) == []


def test_empty_results_only_retract_what_was_shown():
    d = dialect()
    assert d.render(Final((), 1.0, 1.0)) == []  # nothing said, nothing shown
    assert d.render(Partial((), 1.0, 1.0)) == []
    d.render(Partial(words("uh"), 1.0, 1.4))
    assert frames(d, Final((), 1.0, 1.4)) == [{"type": "transcription.completed", "text": ""}]
    assert d.render(Final((), 2.0, 2.0)) == []


def test_internal_error_is_a_server_error():
    d = dialect()
    rule = d.chart.ending("internal_error")
    assert error_frame(d, Violation(rule, "recognizer failed: RuntimeError")) == {
        "type": "server_error", "code": "internal_error", "message": "internal error: recognizer failed: RuntimeError"}
    assert rule.close == 1011


def test_unauthorised_closes_4001_unauthorized_and_sends_nothing():
    d = dialect(updated=False)
    rule = d.chart.ending("unauthorised")
    assert rule.close == 4001 and (rule.error or rule.message) == "Unauthorized"  # the close reason
    assert d.render_violation(Violation(rule, "missing or invalid API key")) == []


@pytest.mark.parametrize("ending, code, close", [("idle_timeout", "idle_timeout", 1008),
                                                 ("bad_audio", "invalid_audio", 1007)])
def test_endings_with_an_error_event(ending, code, close):
    d = dialect()
    rule = d.chart.ending(ending)
    assert rule.close == close and error_frame(d, Violation(rule, "why"))["code"] == code


@pytest.mark.parametrize("ending, close", [("normal", 1000), ("message_too_large", 1009), ("shutdown", 1001)])
def test_lifecycle_endings_send_no_error(ending, close):
    d = dialect()
    rule = d.chart.ending(ending)
    assert rule.close == close and d.render_violation(Violation(rule)) == []


# --- the chart -----------------------------------------------------------------------------------------


def test_the_chart_gives_every_client_event_in_every_state_a_transition_or_a_rule():
    chart = load_chart("voicerun")
    targets = {(t.source, t.event) for t in chart.transitions}
    for state in set(chart.states) - chart.final:
        for event in chart.client_events:
            assert ((state, event) in targets) != ((state, event) in chart.forbidden)


def test_every_rule_is_reachable_from_the_dialect_or_an_ending():
    chart = VoiceRunDialect.chart
    source = inspect.getsource(voicerun)
    used = set(chart.forbidden.values()) | set(chart.endings.values()) | set(re.findall(r'"(VR-[A-Z]+-\d+)"', source))
    assert {r for r in chart.rules if r.startswith("VR-")} <= used


def test_happy_path_walks_the_chart():
    d = dialect(updated=False)
    assert d.machine.state == "created"
    [configure] = d.receive(update(**UPDATE))
    d.render(SessionStarted("x", configure))
    for _ in range(3):
        assert d.receive(append(b"\x00\x00" * 320)) == [Audio(b"\x00\x00" * 320)]
    d.receive(CLOSE)
    d.render(EndOfTranscript())
    assert d.machine.state == "finished"
