"""What `stt serve` checks before it loads its engine.

`check_startup` fails fast, with one line naming the option, on what would otherwise fail only after the
engine has loaded (seconds for whisper) or in the middle of a traceback: an address that does not resolve or is
not this machine's, a port in use or not allowed, a whisper model directory that is not one, a conformance
directory that cannot be written. (The TLS files and every value's range are checked by stt.config.)

(The block of log lines the server starts with, `stt.server.startup_lines`, is the server's own.)
"""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path

from stt.config import ConfigError
from stt.settings import ServerConfig

def check_startup(config: ServerConfig) -> None:
    """Raise ConfigError, naming the option, for what would stop the server after its engine has loaded."""
    check_listen("--host", "--port", config.host, config.port, reuse_port=config.reuse_port)
    if config.admin_port is not None:
        check_listen("--admin-host", "--admin-port", config.admin_host, config.admin_port)
    if config.engine == "whisper":
        from stt.engines.base import EngineError
        from stt.engines.whisper import check_model

        model = config.engine_options.get("model")
        try:
            check_model(model)
        except EngineError as exc:
            flag = "--whisper-model" if model is not None else "the whisper engine"
            raise ConfigError(f"{flag}: {exc}") from None
    if config.conformance_dir is not None:
        check_writable_directory("--conformance", Path(config.conformance_dir))


def check_listen(host_flag: str, port_flag: str, host: str, port: int, *, reuse_port: bool = False) -> None:
    """Bind (and let go) every address `host` resolves to, at `port`, as the listeners will: a name that does not
    resolve, an address that is not this machine's, a port in use or below 1024 without the right are errors."""
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"{host_flag} {host}: cannot resolve it ({exc.strerror})") from None
    except (UnicodeError, ValueError) as exc:
        raise ConfigError(f"{host_flag} {host!r}: not a host name or address ({exc})") from None
    for family, kind, proto, _, address in infos:
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as trio's listeners do
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                raise ConfigError(listen_error(host_flag, port_flag, host, port, address[0], exc)) from None


def listen_error(host_flag: str, port_flag: str, host: str, port: int, address: str, exc: OSError) -> str:
    """One line for a failed bind."""
    where = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
    if exc.errno == errno.EADDRINUSE:
        return (f"{port_flag} {port}: {where} is in use by another program (stop it, or pick another port: "
                f"{port_flag} 0 takes any free one)")
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"{host_flag} {host}: {address} is not an address of this machine"
    if exc.errno == errno.EACCES:
        return f"{port_flag} {port}: not allowed to listen on {where} (ports below 1024 need privileges)"
    return f"{host_flag} {host} {port_flag} {port}: cannot listen on {where}: {exc.strerror or exc}"


def check_writable_directory(flag: str, path: Path) -> None:
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{flag} {path}: not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{flag} {path}: cannot create it ({exc.strerror})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"{flag} {path}: not writable")


__all__ = ["check_listen", "check_startup"]
