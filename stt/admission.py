"""Who may have a session, and how many at once: the server's key check and its limits (--max-sessions,
--max-sessions-per-key) in one object, so that a key is counted the same way however it arrives: in a header,
the query, a subprotocol, a path token (whatever the dialect's credential() finds at the upgrade), or in a start
message (Scriptix {"action":"start","key":…}), counted when it arrives.

A connection takes its slot (`admit`) before the upgrade completes, so that handshakes under way count too; the
slot is given back when its block exits, however the connection ends. A key that comes later is `claim`ed on the
ticket: over its limit, the claim is refused and the session ends with the dialect's busy error. Keys are
counted by their SHA-256 digests; a key that is not valid is never counted (its session ends at once). Sans-IO:
no trio, no clock.
"""

from __future__ import annotations

import collections
import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager

#: (reason, detail): why a session is not admitted. The reason is the metrics' label, the detail the client's.
Refusal = tuple[str, str]


def key_digest(credential: str) -> bytes:
    return hashlib.sha256(credential.encode()).digest()


class Admission:
    def __init__(self, allows: Callable[[str | None], bool], max_sessions: int = 0, max_sessions_per_key: int = 0,
                 *, limit_source: str = ""):
        self.allows = allows  # credential -> whether it is a valid key (KeyRing.allows)
        self.max_sessions, self.max_sessions_per_key = max_sessions, max_sessions_per_key
        self.limit_source = limit_source  # where max_sessions comes from, for the refusal's text ("" : the operator)
        self.admitted = 0  # sessions holding a slot, all clients together
        self.by_key: collections.Counter[bytes] = collections.Counter()  # ... and by key digest

    def counted_key(self, credential: str | None) -> bytes | None:
        """The digest a valid key is counted by (None: no key, or not a valid one: not counted)."""
        return key_digest(credential) if credential and self.allows(credential) else None

    def refusal(self, key: bytes | None) -> Refusal | None:
        """Why a new session with this key digest would be over a limit, else None."""
        if self.max_sessions and self.admitted >= self.max_sessions:
            source = f" ({self.limit_source})" if self.limit_source else ""
            return "max_sessions", f"the server's limit of {self.max_sessions} concurrent sessions{source} is reached"
        return self._over_per_key(key)

    def _over_per_key(self, key: bytes | None) -> Refusal | None:
        per_key = self.max_sessions_per_key
        if per_key and key is not None and self.by_key[key] >= per_key:
            return "max_sessions_per_key", f"the limit of {per_key} concurrent sessions for this API key is reached"
        return None

    @contextmanager
    def admit(self, key: bytes | None) -> Iterator[Ticket]:
        """A slot for one session (and its key's, if it has one), given back when the block exits, however it
        exits (a dropped handshake, a cancelled connection, a failure)."""
        ticket = Ticket(self)
        self.admitted += 1
        if key is not None:
            ticket._count(key)
        try:
            yield ticket
        finally:
            self.admitted -= 1
            ticket._release()

    @property
    def full(self) -> bool:
        return bool(self.max_sessions) and self.admitted >= self.max_sessions


class Ticket:
    """One admitted session's hold on the counts; what the session asks when a key arrives late."""

    def __init__(self, admission: Admission):
        self._admission = admission
        self.key: bytes | None = None  # the key digest this session is counted under

    def authorise(self, credential: str | None) -> bool:
        return self._admission.allows(credential)

    def claim(self, credential: str | None) -> Refusal | None:
        """A key that arrived after the upgrade (a start message): counted now under the per-key limit, or its
        refusal when that key is at its limit already. No key, an invalid key, or the key this session is counted
        under already: nothing to count."""
        key = self._admission.counted_key(credential)
        if key is None or key == self.key:
            return None
        refusal = self._admission._over_per_key(key)
        if refusal is None:
            self._release()
            self._count(key)
        return refusal

    def _count(self, key: bytes) -> None:
        self.key = key
        self._admission.by_key[key] += 1

    def _release(self) -> None:
        key, self.key = self.key, None
        if key is not None:
            by_key = self._admission.by_key
            by_key[key] -= 1
            if by_key[key] <= 0:
                del by_key[key]


#: A session not counted (refused at once, or built without a server): it claims nothing.
class Unlimited(Ticket):
    def __init__(self, allows: Callable[[str | None], bool] = lambda credential: True):
        super().__init__(Admission(allows))

    def claim(self, credential: str | None) -> Refusal | None:
        return None


__all__ = ["Admission", "Refusal", "Ticket", "Unlimited", "key_digest"]
