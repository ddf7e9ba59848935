"""Secrets out of everything the server writes: log lines (text and JSON), conformance logbooks and the reports
made from them, and `stt conform`'s reports. One function, `redact`, does it everywhere, so that a key is hidden
the same way wherever it would have appeared:

  * every secret the connection is known to carry (its API key, wherever it came from: a header, the query, a
    subprotocol, a path token, a start message) is replaced by "<redacted>" wherever it appears in the text;
  * and, whether or not the secret is known, the value of every `NAME=VALUE` whose NAME is a credential's
    (token=, api_key=, jwt=, ...: a query string in a URL) is replaced too.

`redact_items` applies it to headers and query parameters (a credential's name: the whole value goes), and
`redact_path` to a path, where a dialect's pattern marks a path segment as the key (Scriptix stream mode:
`/v2/client/<token>`): that segment goes whatever its length, right key or wrong. `connection_secrets` gathers
what a handshake carries. Sans-IO: pure functions on text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

#: Header and query names whose values are credentials: never written anywhere.
SECRET_NAMES = frozenset({
    "authorization", "x-api-key", "api_key", "apikey", "api-key", "key", "token", "access_token", "jwt",
    "x-zoom-s2t-key", "x-voci-token", "sec-websocket-key", "password", "secret",
})
REDACTED = "<redacted>"
#: A known secret shorter than this is not searched for in free text (it would redact ordinary words); in a path
#: segment or a credential's NAME=VALUE it is redacted whatever its length.
MIN_SECRET = 4

_NAMES = "|".join(sorted((re.escape(n) for n in SECRET_NAMES), key=len, reverse=True))
#: NAME=VALUE (a query string, a tag list) and "NAME": "VALUE" (JSON) for a credential's NAME.
_NAMED = re.compile(rf"(?i)(?<![\w-])((?:{_NAMES})=)[^&\s\"'<>;,]+")
_NAMED_JSON = re.compile(rf"(?i)(\"(?:{_NAMES})\"\s*:\s*\")[^\"]*(\")")


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """`text` with every one of `secrets` (those of at least MIN_SECRET characters) and every credential's
    NAME=VALUE (or JSON "NAME": "VALUE") value replaced by "<redacted>"."""
    if not isinstance(text, str) or not text:
        return text
    for secret in sorted({s for s in secrets if s and len(s) >= MIN_SECRET}, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    text = _NAMED.sub(lambda m: m[1] + REDACTED, text)
    return _NAMED_JSON.sub(lambda m: m[1] + REDACTED + m[2], text)


def redact_items(items: Mapping[str, str], secrets: Iterable[str | None] = ()) -> dict[str, str]:
    """Headers or query parameters: a credential's name keeps its name and loses its value; other values are
    `redact`ed."""
    secrets = tuple(secrets)
    return {k: REDACTED if k.lower() in SECRET_NAMES else redact(v, secrets) for k, v in items.items()}


def redact_path(path: str, pattern: re.Pattern | None = None, secrets: Iterable[str | None] = ()) -> str:
    """A request path, its secret segment (the `token` group of the dialect's `pattern`) replaced whatever its
    length, and the rest `redact`ed."""
    match = pattern.match(path) if pattern is not None else None
    if match is not None and "token" in pattern.groupindex and match["token"]:
        path = path[:match.start("token")] + REDACTED + path[match.end("token"):]
    return redact(path, secrets)


def path_token(path: str, pattern: re.Pattern | None) -> str | None:
    match = pattern.match(path) if pattern is not None else None
    return match["token"] if match is not None and "token" in pattern.groupindex else None


def connection_secrets(path: str, query: Mapping[str, str], headers: Mapping[str, str],
                       pattern: re.Pattern | None = None) -> list[str]:
    """Every secret a handshake carries by name: the values of credentials' headers and query parameters (the
    token of an Authorization header as well as the whole value), and the path's token (`pattern`). A key that
    comes another way (a subprotocol, a start message) is the dialect's credential(): callers add it."""
    found = []
    for name, value in (*query.items(), *headers.items()):
        if name.lower() not in SECRET_NAMES or not value:
            continue
        found.append(value)
        if name.lower() == "authorization":  # "Bearer <token>": the token alone may appear elsewhere
            found.append(value.partition(" ")[2].strip())
    token = path_token(path, pattern)
    if token:
        found.append(token)
    return found


__all__ = ["MIN_SECRET", "REDACTED", "SECRET_NAMES", "connection_secrets", "path_token", "redact", "redact_items",
           "redact_path"]
