"""What every dialect shares: the handshake as data, and the answer to it. Dialects are sans-IO."""

from __future__ import annotations

import json
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlsplit

import attrs

from stt.events import ShuttingDown, Violation
from stt.statechart import Chart, ChartMachine, Refused


@attrs.frozen
class Handshake:
    """The WebSocket upgrade request: path without query, query parameters (last value wins), headers with
    lower-case names."""

    path: str
    query: dict[str, str] = attrs.field(factory=dict)
    headers: dict[str, str] = attrs.field(factory=dict)

    @classmethod
    def from_target(cls, target: str, headers: list[tuple[bytes | str, bytes | str]] = ()) -> Handshake:
        parts = urlsplit(target)

        def text(v: bytes | str) -> str:
            return v.decode("latin-1") if isinstance(v, bytes) else v

        return cls(
            path=parts.path or "/",
            query=dict(parse_qsl(parts.query, keep_blank_values=True)),
            headers={text(k).lower(): text(v) for k, v in headers},
        )

    def bearer_token(self) -> str | None:
        auth = self.headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        return token.strip() or None if scheme.lower() == "bearer" else None


def parse_json(text: str) -> Any:
    """A client's JSON text, or ValueError whose message says briefly what is wrong: also for what `json` does
    not report as a JSON error (nesting too deep for the parser, an integer of more than 4300 digits)."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    except ValueError as exc:
        raise ValueError(getattr(exc, "msg", None) or str(exc)) from None


class RuleBroken(ValueError):
    """Raised inside a dialect while it validates a message: the id of the chart rule the message breaks, and
    what was wrong with it; the dialect turns it into a Violation."""

    def __init__(self, rule_id: str, detail: str):
        super().__init__(detail)
        self.rule_id = rule_id


class HandshakeRefused(Exception):
    """A dialect's constructor raises this to refuse the upgrade with an HTTP status and a text body (V-Blaze:
    400 naming a bad tag), for dialects whose whole configuration is in the handshake."""

    def __init__(self, status: int, body: str):
        super().__init__(f"{status}: {body}")
        self.status, self.body = status, body


class Dialect(Protocol):
    """A vendor's protocol, frames in and frames out, checked by its chart."""

    name: str
    chart: Chart
    machine: ChartMachine
    handshake: Handshake
    #: After the end of the transcript the server closes at once (1000), instead of waiting for the client.
    closes_after_end: bool
    #: A client without a valid key is refused at the upgrade with HTTP 401, instead of a close code.
    rejects_unauthorised: bool
    #: Seconds between SessionStatus events (None: none are sent).
    status_interval: float | None
    #: The client's key may come in its start message (Scriptix's {"action":"start","key":…}): credential() is
    #: checked again when the dialect's Configure arrives, and a connection without one is not refused at once.
    credential_in_start: bool
    #: Optional (getattr): a pattern of the paths whose `token` group is the key (Scriptix stream mode), so that
    #: logs, logbooks and reports redact that segment (stt.redaction.redact_path).
    # secret_path: re.Pattern | None
    #: Seconds the client has to send its start message (None: only the message idle timeout applies); the
    #: session then ends with the chart's idle_timeout ending.
    start_timeout: float | None
    #: Seconds without speech (SpeechStarted/SpeechStopped or words from the engine) that end the session with
    #: the chart's idle_timeout ending (None: only the message idle timeout of SessionLimits applies).
    speech_idle_timeout: float | None

    def greeting(self) -> list[str]:
        """Frames the server sends as soon as the connection is open (before any client message)."""

    def on_open(self) -> list:
        """Events the handshake alone settles, handled before the first client frame: a Configure built from
        the query string, or a Violation for a bad parameter. Most dialects wait for a start message: []."""

    def credential(self) -> str | None:
        """The API key the client presented, if any."""

    def receive(self, frame: str | bytes) -> list:
        """A client frame -> events (stt.events), a Violation for a frame that breaks a rule."""

    def render(self, item) -> list[str | bytes]:
        """A session or recognition event -> frames for the client."""

    def render_violation(self, violation: Violation) -> list[str | bytes]:
        """The vendor's error or warning frame for a broken rule (empty if the vendor sends none)."""

    # Optional: costly(item) -> bool, True for the results whose render is CPU-heavy (V-Blaze's ZIP and scrubbed
    # audio); the session renders those in a worker thread and calls the dialect for nothing else meanwhile.


def render_shutting_down(dialect: Dialect, event: ShuttingDown) -> list[str | bytes]:
    """The frames announcing that the server is going away: the dialect's own where its vendor documents one
    (the dialect sets `announces_shutdown` and renders ShuttingDown: Scriptix), none for the others, whose
    render() does not know the event."""
    return dialect.render(event) if getattr(dialect, "announces_shutdown", False) else []


def refused(outcome) -> list[Violation] | None:
    """[Violation] when the chart refused the event, else None."""
    if isinstance(outcome, Refused):
        return [Violation(outcome.rule, f"{outcome.event} in state {outcome.state}")]
    return None
