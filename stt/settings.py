"""What one server is told to do (ServerConfig), with the API keys it accepts (KeyRing) and the session limit an
engine's capacity puts in force (session_limit). stt/config.py builds a ServerConfig from the command line, STT_*
environment variables and a TOML file; stt/server.py serves by it."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path
from typing import Iterable

import attrs

from stt.audio.limits import MAX_FILE_BUFFER_BYTES
from stt.session import SessionLimits
from stt.transport import HandshakeLimits


@attrs.frozen
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 9000
    engine: str = "whisper"  # stt serve's default (docs/engines.md)
    decode_workers: int | None = None  # engine worker processes; None: one per core
    engine_options: dict = attrs.field(factory=dict)  # passed to the engine (e.g. the scripted engine's script)
    #: The accepted keys, as digests only: plain keys given here are hashed on the way in and not kept.
    api_keys: KeyRing = attrs.field(factory=tuple, converter=lambda keys: keys if isinstance(keys, KeyRing)
                                    else KeyRing(keys))
    limits: SessionLimits = SessionLimits()
    allow_private_urls: bool = False  # stream modes may fetch from loopback/private addresses
    certfile: str | None = None  # TLS (wss://): the certificate chain, PEM; with it the key unless keyfile
    keyfile: str | None = None
    shutdown_grace: float = 30.0  # seconds sessions may go on after a SIGTERM or SIGINT before they are ended
    reuse_port: bool = False  # SO_REUSEPORT: several processes listen on the port (serve_workers sets it)
    max_sessions: int | str = "auto"  # sessions at once, all clients together; 0: no limit; AUTO: the engine's capacity
    max_sessions_per_key: int = 0  # sessions at once with one API key (those presenting none: not limited); 0: none
    admin_host: str = "127.0.0.1"
    admin_port: int | None = None  # /healthz, /readyz, /metrics (stt.admin); None: no admin port; 0: a free one
    #: record sessions' logbooks and client-conformance reports here (a str from the command line becomes a Path)
    conformance_dir: Path | None = attrs.field(default=None, converter=attrs.converters.optional(Path))
    conformance_opt_in: bool = False  # ... only those of connections that ask (x-stt-conformance, stt_conformance)
    faults: str = ""  # the fault plan of every connection that gives none of its own (stt.faults)
    #: Connections may bring their own fault plan (x-stt-fault, stt_fault); implied by conformance_dir. Off: 403.
    allow_client_faults: bool = False
    handshakes: HandshakeLimits = attrs.field(factory=lambda: HandshakeLimits())  # connections not upgraded yet
    explorer: bool = True  # serve the protocol explorer page at /explore on the WebSocket port (stt.explorer)
    max_file_buffer_bytes: int = MAX_FILE_BUFFER_BYTES  # files decoded whole (MP4), all sessions of the process together; 0: none


AUTO = "auto"  # max_sessions: as many as the engine serves (its capacity)


def session_limit(max_sessions: int | str, capacity: int | None) -> int:
    """The limit on sessions at once that `max_sessions` puts in force on an engine of `capacity` (base.Engine):
    AUTO is the capacity (no limit where it is unknown), a number itself; 0: no limit."""
    if max_sessions == AUTO:
        return capacity or 0
    return int(max_sessions)


class KeyRing:
    """API keys, held as SHA-256 digests and compared in constant time. Empty: every client is let in."""

    def __init__(self, keys: Iterable[str] = ()):
        self._digests = tuple(dict.fromkeys(hashlib.sha256(k.encode()).digest() for k in keys if k))

    def __len__(self) -> int:
        return len(self._digests)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, KeyRing) and set(self._digests) == set(other._digests)

    def __hash__(self) -> int:
        return hash(frozenset(self._digests))

    def __repr__(self) -> str:
        return f"KeyRing(<{len(self)} keys>)"

    def allows(self, key: str | None) -> bool:
        if not self._digests:
            return True
        digest = hashlib.sha256((key or "").encode()).digest()
        # Compare with every key, so the time taken does not say which key came close.
        return any([hmac.compare_digest(digest, d) for d in self._digests])
