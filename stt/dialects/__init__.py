"""The dialects the server speaks, and the route from a request path to one of them."""

from __future__ import annotations

from stt.dialects.speechmatics import SpeechmaticsDialect
from stt.dialects.voicerun import VoiceRunDialect
from stt.dialects.yourvoic import YourVoicDialect

DIALECTS = (SpeechmaticsDialect, VoiceRunDialect, YourVoicDialect)


def dialect_for(path: str):
    """The dialect class serving `path`, or None."""
    for dialect in DIALECTS:
        if dialect.match(path):
            return dialect
    return None


__all__ = ["DIALECTS", "dialect_for"]
