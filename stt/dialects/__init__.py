"""The dialects the server speaks, and the route from a request path to one of them."""

from __future__ import annotations

from stt.dialects.scriptix import ScriptixDialect
from stt.dialects.speechmatics import SpeechmaticsDialect
from stt.dialects.vblaze import VBlazeDialect
from stt.dialects.voicerun import VoiceRunDialect
from stt.dialects.yourvoic import YourVoicDialect

# Scriptix's /v2/realtime and /v2/client/… come before Speechmatics, whose /v2/<language> would take them.
DIALECTS = (ScriptixDialect, SpeechmaticsDialect, VoiceRunDialect, YourVoicDialect, VBlazeDialect)


def dialect_for(path: str):
    """The dialect class serving `path`, or None."""
    for dialect in DIALECTS:
        if dialect.match(path):
            return dialect
    return None


def dialect_named(name: str):
    """The dialect class called `name` (its `name` attribute: "speechmatics", ...)."""
    for dialect in DIALECTS:
        if dialect.name == name:
            return dialect
    raise KeyError(f"no dialect {name!r} (known: {', '.join(sorted(d.name for d in DIALECTS))})")


#: The dialects by path, for `stt serve --help` and for a plain HTTP request to the WebSocket port
#: (stt.transport.server_description); tests/test_cli.py routes each path to its dialect.
DIALECT_PATHS = ("Dialects by path: Speechmatics RT v2 at /v2 and /v2/<language>, VoiceRun Transcribe at /ws, "
                 "YourVoic at /api/v1/stt/realtime/stream, Voci V-Blaze at /transcribe, Scriptix at /v2/realtime "
                 "(microphone mode) and /v2/client/<token>?url=<audio URL> (stream mode).")


__all__ = ["DIALECTS", "dialect_for", "dialect_named"]
