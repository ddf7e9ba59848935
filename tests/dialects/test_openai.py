"""OpenAI Realtime transcription sessions, sans-IO: frames in, events out; results in, frames out (protocols.md §7)."""

import base64
import json

import pytest

from stt.dialects import dialect_for
from stt.dialects.base import Handshake, HandshakeRefused, subprotocol_to_accept
from stt.dialects.openai import LOGPROBS, MODELS, OpenAIDialect
from stt.events import (
    Audio,
    AudioAccepted,
    AudioFormat,
    Configure,
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

PCM_100MS = bytes(4800)  # 100 ms of PCM16 at 24 kHz


def event(kind: str, **fields) -> str:
    return json.dumps({"type": kind, **fields})


def ga_update(**session) -> str:
    return event("session.update", session={"type": "transcription", **session})


def turn(value) -> str:
    return ga_update(audio={"input": {"turn_detection": value}})


def append(data: bytes = PCM_100MS) -> str:
    return event("input_audio_buffer.append", audio=base64.b64encode(data).decode())


COMMIT = event("input_audio_buffer.commit")
CLEAR = event("input_audio_buffer.clear")


def opened(query=None, headers=None, subprotocols=()) -> OpenAIDialect:
    return OpenAIDialect(Handshake("/v1/realtime", {"intent": "transcription"} if query is None else query,
                                   headers or {}, tuple(subprotocols)))


def replied(events) -> list[dict]:
    (reply,) = events
    assert isinstance(reply, Reply)
    return [json.loads(f) for f in reply.frames]


def frames(out) -> list[dict]:
    return [json.loads(f) for f in out]


def kinds(out) -> list[str]:
    return [json.loads(f)["type"] for f in out]


def error_of(events) -> dict:
    (violation,) = events
    assert isinstance(violation, Violation) and not violation.rule.fatal
    return violation


def words(*texts, start=0.0, confidence=1.0) -> tuple[Word, ...]:
    return tuple(Word(t, start + i * 0.5, start + i * 0.5 + 0.4, confidence) for i, t in enumerate(texts))


def streaming(*updates) -> OpenAIDialect:
    d = opened()
    d.greeting()
    for update in updates:
        d.receive(update)
    configure, _ = d.receive(append())
    d.render(SessionStarted("s", configure))
    return d


# --- the handshake ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/realtime", "/v1/realtime/"])
def test_the_realtime_path_is_served(path):
    assert dialect_for(path) is OpenAIDialect


def test_the_key_comes_as_bearer_or_as_the_browser_subprotocol_and_realtime_is_accepted():
    assert opened(headers={"authorization": "Bearer sk-1"}).credential() == "sk-1"
    browser = opened(subprotocols=("realtime", "openai-insecure-api-key.sk-2"))
    assert browser.credential() == "sk-2"
    assert subprotocol_to_accept(browser, browser.handshake) == "realtime"
    assert opened().credential() is None


@pytest.mark.parametrize("intent", ["conversation", "", "Transcription"])
def test_an_intent_other_than_transcription_is_refused_at_the_upgrade_with_400(intent):
    with pytest.raises(HandshakeRefused) as refused:
        opened(query={"intent": intent})
    assert refused.value.status == 400
    assert "intent=transcription" in refused.value.body and repr(intent) in refused.value.body


def test_a_missing_intent_is_taken_as_transcription():
    assert opened(query={}).greeting()


def test_the_ga_greeting_is_session_created_with_the_defaults():
    (created,) = frames(opened().greeting())
    assert created["type"] == "session.created" and created["event_id"].startswith("event_")
    session = created["session"]
    assert session["id"].startswith("sess_") and session["type"] == "transcription"
    assert session["object"] == "realtime.transcription_session"
    audio = session["audio"]["input"]
    assert audio["format"] == {"type": "audio/pcm", "rate": 24000}
    assert audio["turn_detection"] == {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300,
                                       "silence_duration_ms": 500}
    assert audio["transcription"]["model"] == "gpt-4o-transcribe" and audio["noise_reduction"] is None


@pytest.mark.parametrize("how", [{"headers": {"openai-beta": "realtime=v1"}},
                                 {"subprotocols": ("realtime", "openai-beta.realtime-v1")}])
def test_the_beta_header_or_subprotocol_greets_with_transcription_session_created(how):
    (created,) = frames(opened(query={"intent": "transcription", "model": "whisper-1"}, **how).greeting())
    assert created["type"] == "transcription_session.created"
    session = created["session"]
    assert session["input_audio_format"] == "pcm16"
    assert session["input_audio_transcription"]["model"] == "whisper-1"  # the beta SDK's model= query
    assert session["turn_detection"]["type"] == "server_vad" and session["input_audio_noise_reduction"] is None


def test_every_server_event_has_its_own_event_id():
    d = streaming(turn(None))
    out = d.greeting() + d.render(Final(words("go"), 0, 0.4)) + d.render(Final(words("on"), 0.5, 0.9, forced=True))
    d.receive(COMMIT)
    out += d.render(Final(words("on"), 0.5, 0.9, forced=True))
    ids = [f["event_id"] for f in frames(out)]
    assert len(ids) == len(set(ids)) == len(out) >= 4


# --- configuration ---------------------------------------------------------------------------------------------


def test_session_update_is_answered_by_session_updated_with_the_whole_configuration():
    d = opened()
    (updated,) = replied(d.receive(ga_update(audio={"input": {
        "format": {"type": "audio/pcmu"}, "transcription": {"model": "whisper-1", "language": "en"},
        "noise_reduction": {"type": "near_field"}, "turn_detection": {"type": "semantic_vad", "eagerness": "high"}}},
        include=[LOGPROBS])))
    assert updated["type"] == "session.updated"
    audio = updated["session"]["audio"]["input"]
    assert audio["format"] == {"type": "audio/pcmu"}
    assert audio["transcription"] == {"model": "whisper-1", "language": "en", "prompt": ""}
    assert audio["noise_reduction"] == {"type": "near_field"}
    assert audio["turn_detection"] == {"type": "semantic_vad", "eagerness": "high"}
    assert updated["session"]["include"] == [LOGPROBS]


def test_fields_left_out_of_an_update_keep_their_values_and_null_turns_a_setting_off():
    d = opened()
    d.receive(ga_update(audio={"input": {"transcription": {"model": "whisper-1", "prompt": "names"}}}))
    (updated,) = replied(d.receive(ga_update(audio={"input": {"transcription": {"language": "en"},
                                                              "turn_detection": None}})))
    audio = updated["session"]["audio"]["input"]
    assert audio["transcription"] == {"model": "whisper-1", "prompt": "names", "language": "en"}
    assert audio["turn_detection"] is None and audio["format"]["type"] == "audio/pcm"


def test_the_beta_update_is_answered_in_the_beta_shape():
    d = opened(headers={"openai-beta": "realtime=v1"})
    (updated,) = replied(d.receive(event("transcription_session.update", session={
        "input_audio_format": "g711_alaw", "input_audio_transcription": {"model": "gpt-4o-mini-transcribe"},
        "turn_detection": {"type": "server_vad", "silence_duration_ms": 800},
        "input_audio_noise_reduction": {"type": "far_field"}, "include": [LOGPROBS]})))
    assert updated["type"] == "transcription_session.updated"
    session = updated["session"]
    assert session["input_audio_format"] == "g711_alaw"
    assert session["input_audio_transcription"]["model"] == "gpt-4o-mini-transcribe"
    assert session["turn_detection"] == {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300,
                                         "silence_duration_ms": 800}
    assert session["input_audio_noise_reduction"] == {"type": "far_field"} and session["include"] == [LOGPROBS]


def test_a_client_that_mixes_the_protocols_gets_each_answer_in_its_own_shape():
    d = opened(headers={"openai-beta": "realtime=v1"})
    assert replied(d.receive(ga_update()))[0]["type"] == "session.updated"
    d = opened()
    assert replied(d.receive(event("transcription_session.update", session={})))[0]["type"] == \
        "transcription_session.updated"


@pytest.mark.parametrize("fmt, expected", [
    ({"type": "audio/pcm", "rate": 24000}, AudioFormat("pcm_s16le", 24000)),
    ({"type": "audio/pcmu"}, AudioFormat("mulaw", 8000)),
    ({"type": "audio/pcma"}, AudioFormat("alaw", 8000)),
])
def test_the_first_audio_opens_the_recognizer_in_the_format_configured(fmt, expected):
    d = opened()
    d.receive(ga_update(audio={"input": {"format": fmt}}))
    configure, audio = d.receive(append(b"\x01\x02"))
    assert isinstance(configure, Configure) and configure.audio == expected and configure.partials
    assert audio == Audio(b"\x01\x02")
    assert d.receive(append(b"\x03")) == [Audio(b"\x03")]
    assert d.render(SessionStarted("s", configure)) == []  # session.created was the announcement


def test_audio_before_any_update_gets_the_defaults():
    configure, _ = opened().receive(append())
    assert configure.audio == AudioFormat("pcm_s16le", 24000) and configure.endpointing == 0.5


@pytest.mark.parametrize("turn_detection, endpointing", [
    ({"type": "server_vad", "silence_duration_ms": 900}, 0.9),
    ({"type": "semantic_vad", "eagerness": "low"}, 1.0),
    ({"type": "semantic_vad"}, 0.6),
    (None, None),
])
def test_turn_detection_sets_the_engine_s_endpointing(turn_detection, endpointing):
    d = opened()
    d.receive(turn(turn_detection))
    configure, _ = d.receive(append())
    assert configure.endpointing == endpointing


def test_keywords_are_the_engine_s_hints():
    d = opened()
    d.receive(ga_update(audio={"input": {"transcription": {"model": "gpt-transcribe", "keywords": ["Zorg", " "]}}}))
    configure, _ = d.receive(append())
    assert configure.hints == ("Zorg",)


@pytest.mark.parametrize("model", MODELS)
def test_every_published_transcription_model_is_served(model):
    update = {"transcription": {"model": model}}
    if model == "gpt-realtime-whisper":
        update["turn_detection"] = None
    assert replied(opened().receive(ga_update(audio={"input": update})))


@pytest.mark.parametrize("frame, rule, code, param", [
    (event("session.update"), "OA-CFG-003", "missing_required_parameter", "session"),
    (event("session.update", session={"audio": {}}), "OA-CFG-003", "missing_required_parameter", "session.type"),
    (event("session.update", session={"type": "realtime"}), "OA-CFG-004", "invalid_value", "session.type"),
    (event("session.update", session=[]), "OA-CFG-002", "invalid_type", "session"),
    (ga_update(voice="alloy"), "OA-CFG-001", "unknown_parameter", "session.voice"),
    (ga_update(audio={"input": {"format": {"type": "audio/pcm", "rate": 16000}}}), "OA-CFG-004", "invalid_value",
     "session.audio.input.format.rate"),
    (ga_update(audio={"input": {"format": {"type": "audio/opus"}}}), "OA-CFG-004", "invalid_value",
     "session.audio.input.format.type"),
    (ga_update(audio={"input": {"transcription": {"model": "gpt-9"}}}), "OA-CFG-004", "invalid_value",
     "session.audio.input.transcription.model"),
    (ga_update(audio={"input": {"transcription": {"language": "fr"}}}), "OA-CFG-005", "unsupported_language",
     "session.audio.input.transcription.language"),
    (ga_update(audio={"input": {"transcription": {"prompt": 3}}}), "OA-CFG-002", "invalid_type",
     "session.audio.input.transcription.prompt"),
    (turn({"type": "server_vad", "threshold": 2}), "OA-CFG-004", "invalid_value",
     "session.audio.input.turn_detection.threshold"),
    (turn({"type": "server_vad", "silence_duration_ms": 0.5}), "OA-CFG-002", "invalid_type",
     "session.audio.input.turn_detection.silence_duration_ms"),
    (turn({"type": "semantic_vad", "eagerness": "eager"}), "OA-CFG-004", "invalid_value",
     "session.audio.input.turn_detection.eagerness"),
    (turn({"type": "push_to_talk"}), "OA-CFG-004", "invalid_value", "session.audio.input.turn_detection.type"),
    (ga_update(audio={"input": {"transcription": {"model": "gpt-realtime-whisper"}}}), "OA-CFG-004",
     "invalid_value", "session.audio.input.turn_detection"),
    (ga_update(audio={"input": {"noise_reduction": {"type": "studio"}}}), "OA-CFG-004", "invalid_value",
     "session.audio.input.noise_reduction.type"),
    (ga_update(include=["item.foo"]), "OA-CFG-004", "invalid_value", "session.include"),
    (event("transcription_session.update", session={"input_audio_format": "pcm24"}), "OA-CFG-004",
     "invalid_value", "session.input_audio_format"),
    (event("transcription_session.update", session={"turn_detection": {"idle_timeout_ms": 5}}), "OA-CFG-001",
     "unknown_parameter", "session.turn_detection.idle_timeout_ms"),
])
def test_a_bad_update_is_an_error_naming_the_parameter_and_changes_nothing(frame, rule, code, param):
    d = opened()
    violation = error_of(d.receive(json.dumps({**json.loads(frame), "event_id": "evt_9"})))
    assert violation.rule.id == rule and violation.param == param
    (error,) = frames(d.render(violation))
    assert error["type"] == "error" and error["event_id"].startswith("event_")
    assert error["error"]["type"] == "invalid_request_error" and error["error"]["code"] == code
    assert error["error"]["param"] == param and error["error"]["event_id"] == "evt_9"
    configure, _ = d.receive(append())
    assert configure == opened().receive(append())[0]  # the defaults still


def test_the_audio_format_cannot_change_once_audio_was_appended_but_the_rest_can():
    d = streaming()
    violation = error_of(d.receive(ga_update(audio={"input": {"format": {"type": "audio/pcmu"}}})))
    assert violation.rule.id == "OA-CFG-006" and violation.rule.error == "cannot_update_audio_format"
    assert replied(d.receive(ga_update(audio={"input": {"format": {"type": "audio/pcm"}, "turn_detection": None}})))
    assert d.config.turn_detection is None


# --- frames that are not the protocol --------------------------------------------------------------------------


@pytest.mark.parametrize("frame, rule, code", [
    ("not json", "OA-MSG-001", "invalid_json"),
    ("[1, 2]", "OA-MSG-001", "invalid_json"),
    ('{"audio": "AAAA"}', "OA-MSG-002", "missing_required_parameter"),
    ('{"type": 7}', "OA-MSG-002", "missing_required_parameter"),
    ('{"type": "response.create"}', "OA-MSG-003", "invalid_value"),
    (b"\x00\x01", "OA-MSG-004", "invalid_request_error"),
    (event("input_audio_buffer.append"), "OA-AUDIO-001", "invalid_value"),
    (event("input_audio_buffer.append", audio="not base64!"), "OA-AUDIO-001", "invalid_value"),
])
def test_frames_that_break_the_protocol_get_an_error_and_leave_the_session_open(frame, rule, code):
    d = opened()
    violation = error_of(d.receive(frame))
    assert violation.rule.id == rule and violation.rule.error == code
    assert d.machine.state == "open"
    assert kinds(d.render(violation)) == ["error"]


def test_base64_with_line_breaks_is_accepted():
    d = opened()
    text = base64.encodebytes(bytes(range(200))).decode()
    assert d.receive(event("input_audio_buffer.append", audio=text))[1] == Audio(bytes(range(200)))


# --- commit and clear ------------------------------------------------------------------------------------------


def test_a_commit_before_any_audio_is_the_buffer_too_small_error():
    d = opened()
    violation = error_of(d.receive(event("input_audio_buffer.commit", event_id="c1")))
    assert violation.rule.id == "OA-BUF-001" and violation.event_id == "c1"
    (error,) = frames(d.render(violation))
    assert error["error"]["code"] == "input_audio_buffer_commit_empty" and "0.00ms" in error["error"]["message"]


def test_a_commit_needs_100_ms_since_the_last_commit():
    d = opened()
    d.receive(append(bytes(4798)))
    assert error_of(d.receive(COMMIT)).rule.id == "OA-BUF-001"  # 99.96 ms
    d.receive(append(bytes(2)))
    assert d.receive(COMMIT) == [Flush()]
    assert error_of(d.receive(COMMIT)).rule.id == "OA-BUF-001"  # nothing since
    d.receive(append(bytes(800)))  # pcmu: 8000 bytes a second
    assert error_of(d.receive(COMMIT)).rule.id == "OA-BUF-001"


def test_without_turn_detection_nothing_is_sent_before_the_commit_then_committed_delta_completed():
    d = streaming(turn(None))
    out = d.render(SpeechStarted(0.0)) + d.render(Partial(words("go"), 0.0, 0.4))
    out += d.render(Final(words("go", "forward"), 0.0, 0.9)) + d.render(SpeechStopped(0.9))
    out += d.render(Partial(words("ten", start=2.0), 2.0, 2.4))
    assert out == []
    assert d.receive(COMMIT) == [Flush()]
    out = frames(d.render(Final(words("ten", "meters", start=2.0), 2.0, 2.9, forced=True)))
    assert [f["type"] for f in out] == ["input_audio_buffer.committed",
                                        "conversation.item.input_audio_transcription.delta",
                                        "conversation.item.input_audio_transcription.completed"]
    committed, delta, completed = out
    assert committed["previous_item_id"] is None
    assert delta["item_id"] == completed["item_id"] == committed["item_id"]
    assert delta["delta"] == completed["transcript"] == "go forward ten meters"
    assert completed["content_index"] == 0 and "logprobs" not in completed
    # 100 ms of audio was committed: one audio token (10 a second) in, a token a word out
    assert completed["usage"] == {"type": "tokens", "input_tokens": 1, "output_tokens": 4, "total_tokens": 5,
                                  "input_token_details": {"text_tokens": 0, "audio_tokens": 1}}


def test_the_next_commit_is_a_new_item_after_the_previous_one():
    d = streaming(turn(None))
    d.receive(COMMIT)
    first = frames(d.render(Final(words("one"), 0, 0.4, forced=True)))[0]
    d.receive(append())
    d.receive(COMMIT)
    second = frames(d.render(Final((), 0.5, 0.5, forced=True)))
    assert second[0]["previous_item_id"] == first["item_id"] != second[0]["item_id"]
    assert second[-1]["transcript"] == ""  # silence committed: an empty transcript


def test_whisper_1_usage_is_the_duration_of_the_committed_audio():
    d = streaming(ga_update(audio={"input": {"transcription": {"model": "whisper-1"}, "turn_detection": None}}))
    d.receive(append(bytes(48000 * 2)))
    d.receive(COMMIT)
    completed = frames(d.render(Final(words("hi"), 0, 0.4, forced=True)))[-1]
    assert completed["usage"] == {"type": "duration", "seconds": 2.1}


def test_clear_drops_the_uncommitted_text_and_answers_cleared_once_the_engine_is_done():
    d = streaming(turn(None))
    d.render(Final(words("dropped"), 0, 0.4))
    assert d.receive(CLEAR) == [Flush()]
    assert kinds(d.render(Final(words("too"), 0.5, 0.9, forced=True))) == ["input_audio_buffer.cleared"]
    assert error_of(d.receive(COMMIT)).rule.id == "OA-BUF-001"  # the buffer is empty again
    d.receive(append())
    d.receive(COMMIT)
    assert frames(d.render(Final(words("kept"), 1, 1.4, forced=True)))[-1]["transcript"] == "kept"


def test_clear_before_any_audio_is_answered_at_once():
    (cleared,) = replied(opened().receive(CLEAR))
    assert cleared["type"] == "input_audio_buffer.cleared" and cleared["event_id"]


# --- server_vad ---------------------------------------------------------------------------------------------


def test_server_vad_each_final_is_an_item_with_speech_events_around_it():
    d = streaming()
    started = frames(d.render(SpeechStarted(0.25)))[0]
    assert started["type"] == "input_audio_buffer.speech_started" and started["audio_start_ms"] == 250
    item_id = started["item_id"]
    assert d.render(Partial(words("go"), 0.3, 0.7)) == []  # a partial's last word is held back
    deltas = frames(d.render(Partial(words("go", "forward"), 0.3, 1.2))
                    + d.render(Partial(words("go", "forward", "ten"), 0.3, 1.7)))
    assert [f["delta"] for f in deltas] == ["go", " forward"] and {f["item_id"] for f in deltas} == {item_id}
    out = frames(d.render(Final(words("go", "forward", "ten"), 0.3, 1.7)))
    assert [f["type"] for f in out] == ["input_audio_buffer.committed",
                                        "conversation.item.input_audio_transcription.delta",
                                        "conversation.item.input_audio_transcription.completed"]
    assert out[1]["delta"] == " ten" and out[2]["transcript"] == "go forward ten"
    assert {f["item_id"] for f in out} == {item_id}
    stopped = frames(d.render(SpeechStopped(1.7)))[0]
    assert stopped == {**stopped, "type": "input_audio_buffer.speech_stopped", "audio_end_ms": 1700,
                       "item_id": item_id}
    assert frames(d.render(SpeechStarted(3.0)))[0]["item_id"] != item_id


def test_the_last_word_of_a_partial_is_held_back_so_a_revision_of_it_costs_nothing():
    d = streaming()
    d.render(SpeechStarted(0))
    assert kinds(d.render(Partial(words("go", "for"), 0, 1))) == [
        "conversation.item.input_audio_transcription.delta"]
    assert [f["delta"] for f in frames(d.render(Final(words("go", "forward"), 0, 1)))
            if f["type"].endswith(".delta")] == [" forward"]


def test_a_partial_that_revises_sent_words_gives_no_delta_until_the_text_extends_them_again():
    d = streaming()
    d.render(SpeechStarted(0))
    assert [f["delta"] for f in frames(d.render(Partial(words("i", "scream", "a"), 0, 1)))] == ["i scream"]
    assert d.render(Partial(words("ice", "cream", "a"), 0, 1)) == []  # a revision: nothing can take text back
    assert d.render(Partial(words("ice", "cream", "is", "a"), 0, 1.5)) == []
    assert [f["delta"] for f in frames(d.render(Partial(words("i", "scream", "for", "a"), 0, 1.5)))] == [" for"]
    out = frames(d.render(Final(words("ice", "cream", "is", "cold"), 0, 2)))
    assert [f["type"] for f in out][-1].endswith(".completed") and len(out) == 2  # committed, completed
    assert out[-1]["transcript"] == "ice cream is cold"  # the final is authoritative


def test_an_empty_final_that_nothing_announced_is_no_item():
    d = streaming()
    assert d.render(Final((), 0, 0)) == []
    d.render(SpeechStarted(0))
    assert kinds(d.render(Final((), 0, 1))) == ["input_audio_buffer.committed",
                                                "conversation.item.input_audio_transcription.completed"]


def test_a_commit_with_server_vad_completes_the_item_under_way():
    d = streaming()
    item_id = frames(d.render(SpeechStarted(0)))[0]["item_id"]
    d.render(Partial(words("go", "o"), 0, 0.4))
    d.receive(COMMIT)
    out = frames(d.render(Final(words("go", "on"), 0, 0.9, forced=True)))
    assert {f["item_id"] for f in out} == {item_id} and out[-1]["transcript"] == "go on"


def test_logprobs_are_one_token_a_word_when_included():
    d = streaming(ga_update(include=[LOGPROBS]))
    d.render(SpeechStarted(0))
    (delta,) = frames(d.render(Partial(words("go", "o", confidence=0.5), 0, 0.4)))
    assert delta["logprobs"] == [{"token": "go", "logprob": -0.6931, "bytes": [103, 111]}]
    completed = frames(d.render(Final(words("go", "on"), 0, 0.9)))[-1]
    assert [p["token"] for p in completed["logprobs"]] == ["go", " on"]
    assert completed["logprobs"][1]["logprob"] == 0.0 and completed["logprobs"][1]["bytes"] == [32, 111, 110]


def test_transcription_null_commits_items_without_transcripts():
    d = streaming(ga_update(audio={"input": {"transcription": None}}))
    d.render(SpeechStarted(0))
    assert d.render(Partial(words("go", "on"), 0, 0.4)) == []
    assert kinds(d.render(Final(words("go"), 0, 0.4))) == ["input_audio_buffer.committed"]


# --- endings ---------------------------------------------------------------------------------------------------


def test_an_internal_failure_fails_the_item_under_way_then_a_server_error():
    d = streaming()
    d.render(SpeechStarted(0))
    failed, error = frames(d.render_violation(Violation(d.chart.ending("internal_error"), "boom")))
    assert failed["type"] == "conversation.item.input_audio_transcription.failed"
    assert failed["error"]["code"] == "server_error" and failed["item_id"]
    assert error["error"]["type"] == "server_error" and d.chart.ending("internal_error").close == 1011


@pytest.mark.parametrize("ending, code, close", [
    ("busy", "rate_limit_exceeded", 1013),
    ("session_timeout", "session_expired", 1008),
    ("idle_timeout", "idle_timeout", 1008),
    ("bad_audio", "invalid_audio", 1007),
])
def test_the_lifecycle_endings_send_an_error_then_close(ending, code, close):
    d = opened()
    rule = d.chart.ending(ending)
    (error,) = frames(d.render_violation(Violation(rule, "x")))
    assert error["error"]["code"] == code and rule.close == close


def test_a_bad_key_is_refused_at_the_upgrade_and_the_client_closes_the_session():
    assert OpenAIDialect.rejects_unauthorised and not OpenAIDialect.closes_after_end
    assert OpenAIDialect.chart.ending("unauthorised").id == "OA-AUTH-001"


def test_what_the_session_tells_the_dialect_is_not_announced():
    d = streaming()
    assert d.render(AudioAccepted(1)) == [] and d.render(EndOfTranscript()) == []


def test_the_happy_path_walks_the_chart():
    d = opened()
    assert d.machine.state == "open"
    d.receive(ga_update())
    assert d.machine.state == "open"
    d.receive(append())
    assert d.machine.state == "streaming"
    d.receive(COMMIT)
    d.receive(CLEAR)
    assert d.machine.state == "streaming"
    d.machine.advance("close")
    assert d.machine.finished
