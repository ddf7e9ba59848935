"""What every dialect shares: the handshake as data, and the answer to it. Dialects are sans-IO."""

from __future__ import annotations

import json
import re
import types
import typing
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlsplit

import attrs

from stt.events import ShuttingDown, Violation
from stt.statechart import Chart, ChartMachine, Refused


@attrs.frozen
class Handshake:
    """The WebSocket upgrade request: path without query, query parameters (last value wins), headers with
    lower-case names, the subprotocols the client offers (Sec-WebSocket-Protocol), in its order, and each
    query parameter's values in order where a dialect takes a repeated one (Deepgram's keyterm=a&keyterm=b)."""

    path: str
    query: dict[str, str] = attrs.field(factory=dict)
    headers: dict[str, str] = attrs.field(factory=dict)
    subprotocols: tuple[str, ...] = ()
    repeated: dict[str, tuple[str, ...]] = attrs.field(factory=dict)

    @classmethod
    def from_target(cls, target: str, headers: list[tuple[bytes | str, bytes | str]] = (),
                    subprotocols: tuple[str, ...] | list[str] = ()) -> Handshake:
        parts = urlsplit(target)

        def text(v: bytes | str) -> str:
            return v.decode("latin-1") if isinstance(v, bytes) else v

        pairs = parse_qsl(parts.query, keep_blank_values=True)
        repeated: dict[str, tuple[str, ...]] = {}
        for name, value in pairs:
            repeated[name] = repeated.get(name, ()) + (value,)
        return cls(
            path=parts.path or "/",
            query=dict(pairs),
            headers={text(k).lower(): text(v) for k, v in headers},
            subprotocols=tuple(subprotocols),
            repeated=repeated,
        )

    def values(self, name: str) -> tuple[str, ...]:
        """Every value the query gives `name`, in order (one where it is given once; none where it is not)."""
        if name in self.repeated:
            return self.repeated[name]
        return (self.query[name],) if name in self.query else ()

    def bearer_token(self) -> str | None:
        return self.credential((BEARER,))

    def credential(self, ways: tuple[Credential, ...]) -> str | None:
        """The first key found the `ways` a dialect declares (its `credentials`), in their order, or None."""
        for way in ways:
            key = way.read(self)
            if key:
                return key
        return None


@attrs.frozen
class Credential:
    """One way a client's key may come at the upgrade: `kind` is "bearer" (Authorization: Bearer KEY), "token"
    (Authorization: Token KEY), "header" (the header `name` holds the key), "query" (the query parameter `name`)
    "subprotocol" (an offered subprotocol `name`KEY: the key after the prefix `name`) or "subprotocol_after"
    (the offered subprotocol that follows the one called `name`: Deepgram's browser form `token, KEY`)."""

    kind: str
    name: str = ""

    def __attrs_post_init__(self):
        if self.kind not in CREDENTIAL_KINDS:
            raise ValueError(f"credential kind {self.kind!r} is not one of {', '.join(CREDENTIAL_KINDS)}")
        if self.kind in ("header", "query", "subprotocol_after") and not self.name:
            raise ValueError(f"a {self.kind} credential names its {self.kind}")

    def read(self, handshake: Handshake) -> str | None:
        if self.kind in ("bearer", "token"):
            scheme, _, token = handshake.headers.get("authorization", "").partition(" ")
            return token.strip() or None if scheme.lower() == self.kind else None
        if self.kind == "header":
            return handshake.headers.get(self.name) or None
        if self.kind == "query":
            return handshake.query.get(self.name) or None
        if self.kind == "subprotocol_after":
            offered = handshake.subprotocols
            at = offered.index(self.name) if self.name in offered else len(offered)
            return offered[at + 1] if at + 1 < len(offered) and offered[at + 1] else None
        for offered in handshake.subprotocols:
            if offered.startswith(self.name) and len(offered) > len(self.name):
                return offered[len(self.name):]
        return None

    def shown(self) -> str:
        """How help and docs name it: "Authorization: Bearer", "query api_key", "header x-api-key", ..."""
        if self.kind in ("bearer", "token"):
            return f"Authorization: {self.kind.title()}"
        if self.kind == "subprotocol":
            return f"subprotocol {self.name}<key>"
        if self.kind == "subprotocol_after":
            return f"subprotocols {self.name}, <key>"
        return f"{self.kind} {self.name}"


CREDENTIAL_KINDS = ("bearer", "token", "header", "query", "subprotocol", "subprotocol_after")
BEARER = Credential("bearer")
TOKEN = Credential("token")


def in_header(name: str) -> Credential:
    return Credential("header", name.lower())


def in_query(name: str) -> Credential:
    return Credential("query", name)


_PLACEHOLDER = re.compile(r"<([a-z_]+)>")


@attrs.frozen
class Route:
    """A path a dialect serves, as help and docs show it: literal segments and <name> placeholders, each one
    segment (`/v2/<language>`); a trailing slash is allowed. `query` is shown after it (Scriptix stream mode's
    `?url=<audio URL>`), `note` in brackets after that ("microphone mode")."""

    template: str
    query: str = ""
    note: str = ""
    pattern: re.Pattern = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self):
        if not self.template.startswith("/"):
            raise ValueError(f"route {self.template!r} does not start with /")
        parts, end = [], 0
        for m in _PLACEHOLDER.finditer(self.template):
            parts += [re.escape(self.template[end:m.start()]), f"(?P<{m[1]}>[^/]+)"]
            end = m.end()
        parts.append(re.escape(self.template[end:].rstrip("/")))
        object.__setattr__(self, "pattern", re.compile("^" + "".join(parts) + "/?$"))

    @property
    def exact(self) -> bool:
        return "<" not in self.template

    def specificity(self) -> tuple:
        """Sorts the most specific route first: exact paths, then patterns by their literal characters."""
        literal = _PLACEHOLDER.sub("", self.template)
        return (not self.exact, -len(literal), self.template)

    def example(self) -> str:
        """A path this route serves: each placeholder filled in."""
        return _PLACEHOLDER.sub(lambda m: "en" if m[1] == "language" else "example", self.template)

    def shown(self) -> str:
        return self.template + self.query + (f" ({self.note})" if self.note else "")


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


class DialectBase:
    """What every dialect is: each trait the core (server, session, conformance kit) reads, with its type and
    its default, and what the dialects share. A dialect subclasses it and sets the traits that differ.

    A public class attribute that is not a trait below is refused when the subclass is defined (a misspelt
    trait would otherwise leave its behaviour silently off), and so is a trait of the wrong type."""

    # --- what it is, where it is served, how the key comes (no defaults: each dialect says) ----------------
    #: The dialect's name ("speechmatics"): `--dialect`, metrics labels, conformance profiles.
    name: ClassVar[str]
    #: The vendor's API, as help and docs name it.
    title: ClassVar[str]
    #: The dialect's chart, with the lifecycle's endings.
    chart: ClassVar[Chart]
    #: The paths it serves (stt.dialects.dialect_for routes the most specific first, whatever the order).
    routes: ClassVar[tuple[Route, ...]]
    #: After the end of the transcript the server closes at once (1000), instead of waiting for the client.
    closes_after_end: ClassVar[bool]
    #: A client without a valid key is refused at the upgrade with HTTP 401, instead of a close code.
    rejects_unauthorised: ClassVar[bool]

    # --- traits with a default ------------------------------------------------------------------------------
    #: The ways the client's key may come at the upgrade, tried in order by credential().
    credentials: ClassVar[tuple[Credential, ...]] = ()
    #: The WebSocket subprotocol the server accepts for it when the client offers it (None: none).
    subprotocol: ClassVar[str | None] = None
    #: Seconds between SessionStatus events (None: none are sent).
    status_interval: ClassVar[float | None] = None
    #: The client's key may come in its start message (Scriptix's {"action":"start","key":…}): credential() is
    #: checked again when the dialect's Configure arrives, and a connection without one is not refused at once.
    #: A dialect may set it per connection.
    credential_in_start: bool = False
    #: Seconds the client has to send its start message (None: only the message idle timeout applies); the
    #: session then ends with the chart's idle_timeout ending.
    start_timeout: ClassVar[float | None] = None
    #: Seconds without speech (SpeechStarted/SpeechStopped or words from the engine) that end the session with
    #: the chart's idle_timeout ending (None: only the message idle timeout of SessionLimits applies).
    speech_idle_timeout: ClassVar[float | None] = None
    #: A pattern of the paths whose `token` group is the key (Scriptix stream mode), so that logs, logbooks and
    #: reports redact that segment (stt.redaction.redact_path).
    secret_path: ClassVar[re.Pattern | None] = None
    #: At the session limit the upgrade is refused with HTTP 503 and the chart's busy message (V-Blaze), instead
    #: of the dialect's error and close after it.
    refuses_busy_at_upgrade: ClassVar[bool] = False
    #: The HTTP status of that refusal (Deepgram: 429 Too Many Requests).
    busy_status: ClassVar[int] = 503
    #: The protocol has no end of stream: the client's close with 1000 is the session's normal ending, not a
    #: client that left early (OpenAI Realtime: the client closes when it has the transcripts it wants).
    ends_with_client_close: ClassVar[bool] = False
    #: Seconds without a client message that end the session with the chart's idle_timeout ending, where the
    #: vendor's limit is shorter than the server's --idle-timeout (Deepgram: 10 s, NET-0001); None: that alone.
    message_idle_timeout: ClassVar[float | None] = None
    #: The dialect renders ShuttingDown: the server's going away is announced to its clients (Scriptix).
    announces_shutdown: ClassVar[bool] = False
    #: The rule that ends a session whose stream URL is not a public address (None: the bad_audio ending).
    url_not_allowed_rule: ClassVar[str | None] = None
    #: Before --max-session-seconds ends a session, a warning of this rule `time_limit_warnings` seconds ahead
    #: (Speechmatics's session_timeout Warning); None: no warning.
    time_limit_warning_rule: ClassVar[str | None] = None
    time_limit_warnings: ClassVar[tuple[float, ...]] = ()
    #: Bytes of the client's audio the dialect keeps whole till the end (V-Blaze's scrubaudio), which the session
    #: counts against the server's budget for whole files (--max-file-buffer-bytes).
    kept_bytes: int = 0

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        declared = traits()
        for attr, value in vars(cls).items():
            if attr.startswith("_") or isinstance(value, (types.FunctionType, staticmethod, classmethod)):
                continue
            if attr not in declared:
                raise TypeError(f"{cls.__name__}.{attr} is not a dialect trait (DialectBase declares "
                                f"{', '.join(sorted(declared))}): misspelt?")
            if not isinstance(value, property) and not conforms(value, declared[attr]):
                raise TypeError(f"{cls.__name__}.{attr} is {value!r}, not {declared[attr]}")

    def __init__(self, handshake: Handshake):
        self.handshake = handshake
        self.machine: ChartMachine = self.chart.machine()

    @classmethod
    def match(cls, path: str) -> bool:
        """Whether one of the dialect's routes serves `path`."""
        return any(route.pattern.match(path) for route in cls.routes)

    def credential(self) -> str | None:
        """The API key the client presented, if any: the first of the declared `credentials` found."""
        return self.handshake.credential(self.credentials)

    def greeting(self) -> list[str]:
        """Frames the server sends as soon as the connection is open (before any client message)."""
        return []

    def on_open(self) -> list:
        """Events the handshake alone settles, handled before the first client frame: a Configure built from
        the query string, or a Violation for a bad parameter. Most dialects wait for a start message: []."""
        return []

    def receive(self, frame: str | bytes) -> list:
        """A client frame -> events (stt.events), a Violation for a frame that breaks a rule. Ask the chart
        first (machine.peek), validate the message, and fire only when both pass."""
        raise NotImplementedError

    def render(self, item) -> list[str | bytes]:
        """A session or recognition event -> frames for the client."""
        raise NotImplementedError

    def render_violation(self, violation: Violation) -> list[str | bytes]:
        """The vendor's error or warning frame for a broken rule (empty if the vendor sends none)."""
        raise NotImplementedError

    @classmethod
    def refusal_headers(cls, status: int, body: str) -> list[tuple[str, str]]:
        """Headers of an HTTP refusal of the upgrade (a bad option, key or busy server), as the vendor sends
        them (Deepgram's dg-error); none by default."""
        return []

    def costly(self, item) -> bool:
        """True for the results whose render is CPU-heavy (V-Blaze's ZIP and scrubbed audio): the session renders
        those in a worker thread and calls the dialect for nothing else meanwhile."""
        return False

    def _violation(self, rule_id: str, detail: str) -> Violation:
        return Violation(self.chart.rule(rule_id), detail)


#: What the server and the session hold a dialect as.
Dialect = DialectBase


def traits() -> dict[str, Any]:
    """Every trait DialectBase declares -> its type."""
    return {name: (hint.__args__[0] if typing.get_origin(hint) is ClassVar else hint)
            for name, hint in typing.get_type_hints(DialectBase).items()}


def conforms(value: Any, hint: Any) -> bool:
    """Whether `value` is of the declared type `hint` (classes, `X | None`, `tuple[X, ...]`)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(conforms(value, arg) for arg in typing.get_args(hint))
    if origin is tuple:
        item = typing.get_args(hint)[0]
        return isinstance(value, tuple) and all(conforms(v, item) for v in value)
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, origin or hint)


def dump(obj: dict) -> str:
    """A frame of compact JSON (no spaces: some vendors' clients find messages by substring)."""
    return json.dumps(obj, separators=(",", ":"))


def subprotocol_to_accept(dialect: DialectBase, handshake: Handshake) -> str | None:
    """The dialect's subprotocol, when the client offered it (Sec-WebSocket-Protocol); else None."""
    offered = handshake.subprotocols
    return dialect.subprotocol if dialect.subprotocol is not None and dialect.subprotocol in offered else None


def render_shutting_down(dialect: DialectBase, event: ShuttingDown) -> list[str | bytes]:
    """The frames announcing that the server is going away: the dialect's own where its vendor documents one
    (the dialect sets `announces_shutdown` and renders ShuttingDown: Scriptix), none for the others, whose
    render() does not know the event."""
    return dialect.render(event) if dialect.announces_shutdown else []


def refused(outcome) -> list[Violation] | None:
    """[Violation] when the chart refused the event, else None."""
    if isinstance(outcome, Refused):
        return [Violation(outcome.rule, f"{outcome.event} in state {outcome.state}")]
    return None
