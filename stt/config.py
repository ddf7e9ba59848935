"""The settings of `stt serve` from four places; for each option, the first that gives it wins:

    the command line  >  environment variables STT_*  >  a TOML file (--config PATH, or STT_CONFIG)  >  defaults

Every option has the three names, made from its name on the command line (its argparse dest):

    --idle-timeout SECONDS   <->   STT_IDLE_TIMEOUT=SECONDS   <->   idle_timeout = SECONDS

The options, their types and their defaults are the command's own parser's (stt.cli), so an option added there
can be set in all three places at once. By kind:

    a switch (--allow-private-urls)    env: true/false, 1/0, yes/no, on/off      TOML: true or false
    repeatable (--api-key, dest        env: comma-separated                       TOML: an array
      api_keys: STT_API_KEYS)
    a number, a text, a choice, a path env: the text, as on the command line      TOML: a number or a string, as
                                                                                    the option's type asks
Paths in the file are relative to the file's folder. The file is flat: top-level keys only. An unknown key, or a
value of the wrong type, in the file, and a bad value in an STT_ variable, are a ConfigError naming the key or the
variable; an empty STT_ variable counts as unset, and variables that name no option are ignored.

`server_config` then makes the ServerConfig: API keys from --api-key and --api-keys-file are hashed into its
KeyRing, which is all it keeps of them.
"""

from __future__ import annotations

import argparse
import os
import ssl
import sys
import tomllib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from stt.session import SessionLimits
from stt.settings import KeyRing, ServerConfig
from stt.transport import HandshakeLimits, tls_context

ENV_PREFIX = "STT_"
CONFIG_ENV = "STT_CONFIG"  # the TOML file, when --config is not given
_CLI_ONLY = {"help", "version", "config", "command"}
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


class ConfigError(ValueError):
    """A setting that cannot be used; the message names the option, variable, key or file."""


@attrs.frozen
class Option:
    """One option of a command, as the environment and the TOML file see it."""

    key: str  # the argparse dest: the TOML key
    flag: str  # its long flag, for messages
    kind: str  # "switch", "list" (a repeatable option) or "value"
    type: Callable[[str], Any]  # text -> value, as argparse converts it
    choices: tuple | None = None

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.key.upper()

    def from_text(self, text: str, where: str) -> Any:
        """A value from an environment variable."""
        if self.kind == "switch":
            if text.strip().lower() not in _TRUE | _FALSE:
                raise ConfigError(f"{where}: {text!r} is not true or false (nor 1/0, yes/no, on/off)")
            return text.strip().lower() in _TRUE
        if self.kind == "list":
            return [self._convert(item.strip(), where) for item in text.split(",") if item.strip()]
        return self._convert(text, where)

    def from_toml(self, value: Any, where: str, folder: Path) -> Any:
        """A value from the TOML file, whose folder relative paths are taken from."""
        if self.kind == "switch":
            if not isinstance(value, bool):
                raise ConfigError(f"{where}: must be true or false, not {_describe(value)}")
            return value
        if self.kind == "list":
            if not isinstance(value, list):
                raise ConfigError(f"{where}: must be an array, not {_describe(value)}")
            return [self._one_from_toml(item, f"{where}[{i}]", folder) for i, item in enumerate(value)]
        return self._one_from_toml(value, where, folder)

    def _one_from_toml(self, value: Any, where: str, folder: Path) -> Any:
        if self.type is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{where}: must be an integer, not {_describe(value)}")
            return self._check_choice(value, where)
        if self.type is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"{where}: must be a number, not {_describe(value)}")
            return self._check_choice(float(value), where)
        if getattr(self.type, "takes_integers", False) and isinstance(value, int) and not isinstance(value, bool):
            return self._check_choice(self._convert(str(value), where), where)  # a number or a word (--max-sessions)
        if not isinstance(value, str):
            raise ConfigError(f"{where}: must be a string, not {_describe(value)}")
        converted = self._convert(value, where)
        return folder / converted if isinstance(converted, Path) else converted

    def _convert(self, text: str, where: str) -> Any:
        try:
            value = self.type(text)
        except (ValueError, TypeError, argparse.ArgumentTypeError):
            kind = {int: "an integer", float: "a number"}.get(self.type, f"a valid {self.flag} value")
            raise ConfigError(f"{where}: {text!r} is not {kind}") from None
        return self._check_choice(value, where)

    def _check_choice(self, value: Any, where: str) -> Any:
        if self.choices is not None and value not in self.choices:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(str, self.choices))}")
        return value


def options_of(parser: argparse.ArgumentParser) -> dict[str, Option]:
    """The options of a command's parser that the environment and the file may set, by key. Options of a kind
    this module does not know (several values per use, say) stay command-line only."""
    options = {}
    for action in parser._actions:
        if action.dest in _CLI_ONLY or not action.option_strings:
            continue
        flag = max(action.option_strings, key=len)
        if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
            kind = "switch"
        elif isinstance(action, argparse._AppendAction) and action.nargs is None:
            kind = "list"
        elif isinstance(action, argparse._StoreAction) and action.nargs is None:
            kind = "value"
        else:
            continue
        choices = tuple(action.choices) if action.choices is not None else None
        options[action.dest] = Option(action.dest, flag, kind, action.type or str, choices)
    return options


def resolve(make_parser: Callable[[], argparse.ArgumentParser], argv: Sequence[str] | None = None,
            env: Mapping[str, str] = os.environ, command: str = "serve") -> argparse.Namespace:
    """The settings of `stt <command>`: what parse_args gives, with each option the command line does not give
    taken from the environment, else from the TOML file, else left at its default. `make_parser` builds the
    `stt` parser (it is called twice: once more to tell the options given from the defaults)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = make_parser()
    settings = parser.parse_args(argv)
    options = options_of(_subcommand(parser, command))
    given = _given_on_command_line(make_parser(), argv)
    config = settings.config if "config" in given else env.get(CONFIG_ENV) or None
    from_file = read_toml(Path(config), options) if config else {}
    from_env = {key: option.from_text(env[option.env], option.env)
                for key, option in options.items() if env.get(option.env)}
    for key in options:
        if key in given:
            continue
        if key in from_env:
            setattr(settings, key, from_env[key])
        elif key in from_file:
            setattr(settings, key, from_file[key])
    settings.config = config
    return settings


def read_toml(path: Path, options: Mapping[str, Option]) -> dict[str, Any]:
    """The settings in a TOML file, checked against `options`."""
    try:
        with open(path, "rb") as file:
            data = tomllib.load(file)
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    values = {}
    for key, value in data.items():
        option = options.get(key)
        if option is None:
            hint = f"; did you mean {key.replace('-', '_')!r}?" if key.replace("-", "_") in options else ""
            raise ConfigError(f"{path}: unknown key {key!r}{hint} (known keys: {', '.join(sorted(options))})")
        values[key] = option.from_toml(value, f"{path}: {key}", path.parent)
    return values


def read_api_keys(path: Path | str) -> list[str]:
    """The keys in a file: one a line, spaces around it dropped; blank lines and lines starting with # skipped.
    A file without a key is an error: it would let every client in."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"--api-keys-file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"--api-keys-file {path}: not UTF-8 text") from None
    keys = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    if not keys:
        raise ConfigError(f"--api-keys-file {path}: no key in it (with none, every client would be let in)")
    return keys


def server_config(settings: argparse.Namespace, **fields: Any) -> ServerConfig:
    """The ServerConfig of resolved `serve` settings (`fields` adds to them: engine_options, say). The API keys
    of --api-key and --api-keys-file are hashed into its KeyRing, and the plain keys not kept."""
    _check_ranges(settings)
    keys = list(settings.api_keys or [])
    if settings.api_keys_file:
        keys += read_api_keys(settings.api_keys_file)
    certfile, keyfile = _path(settings.certfile), _path(settings.keyfile)
    if keyfile and not certfile:
        raise ConfigError("--keyfile needs --certfile")
    if certfile:
        try:
            tls_context(certfile, keyfile)  # fail now, naming the files, not in the middle of start-up
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise ConfigError(f"--certfile {certfile}{f' --keyfile {keyfile}' if keyfile else ''}: "
                              f"{getattr(exc, 'strerror', None) or exc}") from None
    return ServerConfig(
        host=settings.host,
        port=settings.port,
        engine=settings.engine,
        decode_workers=settings.decode_workers,
        api_keys=KeyRing(keys),
        limits=SessionLimits(idle_timeout=settings.idle_timeout, max_message_bytes=settings.max_message_bytes,
                             max_session_seconds=settings.max_session_seconds, **_audio_limits(settings)),
        allow_private_urls=settings.allow_private_urls,
        certfile=certfile,
        keyfile=keyfile,
        shutdown_grace=settings.shutdown_grace,
        max_sessions=settings.max_sessions,
        max_sessions_per_key=settings.max_sessions_per_key,
        admin_host=settings.admin_host,
        admin_port=settings.admin_port,
        conformance_dir=Path(settings.conformance) if settings.conformance else None,  # a Path: open_logbook mkdirs it
        conformance_opt_in=settings.conformance_opt_in,
        faults=_faults(settings.fault),
        allow_client_faults=settings.allow_client_faults,
        handshakes=_handshake_limits(settings),
        max_file_buffer_bytes=settings.max_file_buffer_bytes,
        explorer=not settings.no_explorer,
        **fields,
    )


def _handshake_limits(settings: argparse.Namespace) -> HandshakeLimits:
    """--handshake-timeout, --max-pending-handshakes and --max-pending-handshakes-per-address, checked."""
    checks = [
        ("--handshake-timeout", settings.handshake_timeout, settings.handshake_timeout > 0, "must be more than 0"),
        ("--max-pending-handshakes", settings.max_pending_handshakes, settings.max_pending_handshakes >= 0,
         "must be 0 (no limit) or more"),
        ("--max-pending-handshakes-per-address", settings.max_pending_handshakes_per_address,
         settings.max_pending_handshakes_per_address >= 0, "must be 0 (no limit) or more"),
    ]
    for flag, value, ok, rule in checks:
        if not ok:
            raise ConfigError(f"{flag} {rule} (got {value:g})")
    return HandshakeLimits(timeout=settings.handshake_timeout, max_pending=settings.max_pending_handshakes,
                           max_pending_per_address=settings.max_pending_handshakes_per_address)


def _audio_limits(settings: argparse.Namespace) -> dict[str, int]:
    """The SessionLimits of the audio limits group (stt.cli._add_audio_limits_options), checked."""
    limits = {"max_channels": settings.max_channels, "max_message_samples": settings.max_message_samples,
              "max_samples_per_second": settings.max_samples_per_second, "max_file_bytes": settings.max_file_bytes}
    for key, value in [*limits.items(), ("max_file_buffer_bytes", settings.max_file_buffer_bytes)]:
        if value < 0:
            raise ConfigError(f"--{key.replace('_', '-')} must be 0 (no limit) or more (got {value})")
    if limits["max_file_bytes"] == 0:
        raise ConfigError("--max-file-bytes must be more than 0")
    return limits


def _faults(text: str | None) -> str:
    """--fault: checked now against every dialect that could serve it (a bad item fails at start-up)."""
    from stt.dialects import DIALECTS
    from stt.faults import FaultError, parse_faults

    text = (text or "").strip()
    errors = []
    for dialect in DIALECTS:
        try:
            parse_faults(text, dialect.chart)
        except FaultError as exc:
            errors.append(str(exc))
    if len(errors) == len(DIALECTS):  # an error= only some dialects have applies to those
        raise ConfigError(f"--fault: {errors[0]}")
    return text


def _check_ranges(settings: argparse.Namespace) -> None:
    checks = [
        ("--port", settings.port, 0 <= settings.port <= 65535, "must be between 0 and 65535"),
        ("--decode-workers", settings.decode_workers, settings.decode_workers is None or settings.decode_workers >= 1,
         "must be at least 1"),
        ("--workers", settings.workers, settings.workers >= 1, "must be at least 1"),
        ("--idle-timeout", settings.idle_timeout, settings.idle_timeout > 0, "must be more than 0"),
        ("--max-message-bytes", settings.max_message_bytes, settings.max_message_bytes > 0, "must be more than 0"),
        ("--shutdown-grace", settings.shutdown_grace, settings.shutdown_grace >= 0, "must be 0 or more"),
        ("--max-sessions", settings.max_sessions, settings.max_sessions == "auto" or settings.max_sessions >= 0,
         "must be 0 (no limit) or more, or auto"),
        ("--max-sessions-per-key", settings.max_sessions_per_key, settings.max_sessions_per_key >= 0,
         "must be 0 (no limit) or more"),
        ("--max-session-seconds", settings.max_session_seconds, settings.max_session_seconds >= 0,
         "must be 0 (no limit) or more"),
        ("--admin-port", settings.admin_port, settings.admin_port is None or 0 <= settings.admin_port <= 65535,
         "must be between 0 and 65535"),
    ]
    for flag, value, ok, rule in checks:
        if not ok:
            raise ConfigError(f"{flag} {rule} (got {value:g})")
    if settings.admin_port is not None and settings.workers > 1:
        raise ConfigError("--admin-port cannot be used with --workers above 1 (each worker process would need a port "
                          "of its own)")


def _path(value: Path | str | None) -> str | None:
    return str(value) if value else None


def _subcommand(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices[name]
    raise KeyError(name)


def _given_on_command_line(parser: argparse.ArgumentParser, argv: Sequence[str]) -> set[str]:
    """The dests that argv sets: parsed again with every default suppressed, only those are in the result."""
    parsers = [parser]
    while parsers:
        current = parsers.pop()
        current._defaults.clear()
        for action in current._actions:
            action.default = argparse.SUPPRESS
            if isinstance(action, argparse._SubParsersAction):
                parsers.extend(action.choices.values())
    return set(vars(parser.parse_args(argv)))


def _describe(value: Any) -> str:
    kind = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array",
            dict: "a table"}.get(type(value), type(value).__name__)
    return f"{kind} ({value!r})" if not isinstance(value, (list, dict)) else kind


__all__ = ["CONFIG_ENV", "ENV_PREFIX", "ConfigError", "Option", "options_of", "read_api_keys", "read_toml",
           "resolve", "server_config"]
