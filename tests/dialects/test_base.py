"""What every dialect shares (stt.dialects.base): a client's JSON that the parser itself chokes on is a broken
rule like any other bad JSON, never a server failure."""

import pytest

from stt.dialects.base import Handshake, parse_json
from stt.dialects.scriptix import ScriptixDialect
from stt.dialects.speechmatics import SpeechmaticsDialect
from stt.dialects.voicerun import VoiceRunDialect
from stt.dialects.yourvoic import YourVoicDialect
from stt.events import Violation


@pytest.mark.parametrize("text, says", [
    ("[" * 5000, "nested too deeply"),
    ("1" * 5000, "Exceeds the limit (4300 digits)"),
    ("{not json", "Expecting property name enclosed in double quotes"),
])
def test_parse_json_says_what_is_wrong_with_a_value_error(text, says):
    with pytest.raises(ValueError, match=r"^" + says.replace("(", r"\(").replace(")", r"\)")):
        parse_json(text)


@pytest.mark.parametrize("dialect, path, rule", [
    (SpeechmaticsDialect, "/v2", "SM-MSG-001"),
    (VoiceRunDialect, "/ws", "VR-MSG-001"),
    (YourVoicDialect, "/api/v1/stt/realtime/stream", "YV-MSG-001"),
    (ScriptixDialect, "/v2/realtime", "SX-MSG-001"),
])
@pytest.mark.parametrize("frame", ["[" * 5000, "1" * 5000], ids=["deep", "long-integer"])
def test_json_the_parser_chokes_on_breaks_the_dialects_json_rule(dialect, path, rule, frame):
    (violation,) = dialect(Handshake.from_target(path)).receive(frame)
    assert isinstance(violation, Violation) and violation.rule.id == rule and violation.rule.fatal
    assert violation.detail.startswith("not JSON (")
