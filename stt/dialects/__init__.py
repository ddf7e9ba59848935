"""The dialects the server speaks, and the route from a request path to one of them."""

from __future__ import annotations

import functools

from stt.dialects.assemblyai import AssemblyAIDialect
from stt.dialects.base import DialectBase, Route
from stt.dialects.deepgram import DeepgramDialect
from stt.dialects.openai import OpenAIDialect
from stt.dialects.scriptix import ScriptixDialect
from stt.dialects.speechmatics import SpeechmaticsDialect
from stt.dialects.vblaze import VBlazeDialect
from stt.dialects.voicerun import VoiceRunDialect
from stt.dialects.yourvoic import YourVoicDialect

#: Every dialect the server speaks. The order is not a rule: dialect_for routes the most specific path first.
DIALECTS = (ScriptixDialect, SpeechmaticsDialect, VoiceRunDialect, YourVoicDialect, VBlazeDialect, DeepgramDialect,
            AssemblyAIDialect, OpenAIDialect)


@functools.lru_cache(maxsize=4)
def route_table(dialects: tuple[type[DialectBase], ...]) -> tuple[tuple[Route, type[DialectBase]], ...]:
    """Every route the dialects declare with its dialect, the most specific first: exact paths, then patterns
    by their literal characters (Scriptix's /v2/realtime before Speechmatics's /v2/<language>), whatever the
    order of `dialects`."""
    return tuple(sorted(((route, dialect) for dialect in dialects for route in dialect.routes),
                        key=lambda pair: (pair[0].specificity(), pair[1].name)))


def dialect_for(path: str):
    """The dialect class serving `path`, or None."""
    for route, dialect in route_table(DIALECTS):
        if route.pattern.match(path):
            return dialect
    return None


def dialect_paths() -> str:
    """The dialects by path, for `stt serve --help` and the server's answer to plain HTTP."""
    return "Dialects by path: " + ", ".join(
        f"{d.title} at {' and '.join(route.shown() for route in d.routes)}" for d in DIALECTS) + "."


def dialect_table() -> str:
    """The Markdown table of the dialects, their paths and the ways their keys come (README.md's)."""
    rows = ["| dialect | path | key |", "|---|---|---|"]
    for d in DIALECTS:
        paths = ", ".join(f"`{r.template}{r.query}`" + (f" ({r.note})" if r.note else "") for r in d.routes)
        keys = [way.shown() for way in d.credentials]
        keys += ["the path's <token>"] if d.secret_path is not None else []
        keys += ["the start message"] if d.credential_in_start else []
        keys = ", ".join(keys) or "none"
        rows.append(f"| {d.title} | {paths} | {keys} |")
    return "\n".join(rows) + "\n"


def dialect_named(name: str):
    """The dialect class called `name` (its `name` attribute: "speechmatics", ...)."""
    for dialect in DIALECTS:
        if dialect.name == name:
            return dialect
    raise KeyError(f"no dialect {name!r} (known: {', '.join(sorted(d.name for d in DIALECTS))})")


#: The dialects by path, built from their declared routes: for `stt serve --help` and for a plain HTTP request
#: to the WebSocket port (stt.transport.server_description); tests/test_cli.py routes each path to its dialect.
DIALECT_PATHS = dialect_paths()


__all__ = ["DIALECTS", "DIALECT_PATHS", "dialect_for", "dialect_named", "dialect_paths", "dialect_table",
           "route_table"]
