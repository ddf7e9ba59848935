"""The `stt` command: `stt serve` runs the server, `stt diagrams` regenerates docs/ from statecharts/."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import trio

from stt import __version__
from stt.engines import ENGINE_NAMES
from stt.session import SessionLimits

DEFAULT_DOCS = Path(__file__).resolve().parent.parent / "docs" / "statecharts"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stt",
        description="A real-time speech-to-text server that speaks the WebSocket dialects of commercial STT "
                    "services, offline.",
    )
    parser.add_argument("--version", action="version", version=f"stt {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="run the server",
        description="Run the server. Dialects by path: Speechmatics RT v2 at /v2 and /v2/<language>, "
                    "VoiceRun Transcribe at /ws, YourVoic at /api/v1/stt/realtime/stream.",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    serve.add_argument("--port", type=int, default=9000, help="port to listen on; 0 picks a free one (default: 9000)")
    serve.add_argument("--engine", choices=ENGINE_NAMES, default="sphinx",
                       help="recognizer: sphinx (embedded pocketsphinx, en-us) or scripted (deterministic test "
                            "engine that hears a fixed script) (default: sphinx)")
    serve.add_argument("--api-key", action="append", default=[], metavar="KEY",
                       help="accept this API key (repeatable); with none, every client is accepted")
    serve.add_argument("--decode-workers", type=int, default=None, metavar="N",
                       help="decoder processes for the sphinx engine (default: one per core)")
    limits = SessionLimits()
    serve.add_argument("--idle-timeout", type=float, default=limits.idle_timeout, metavar="SECONDS",
                       help="end a session after this long without a message from the client "
                            f"(default: {limits.idle_timeout:g})")
    serve.add_argument("--max-message-bytes", type=int, default=limits.max_message_bytes, metavar="BYTES",
                       help="largest message a client may send; larger ones close the session with 1009 "
                            f"(default: {limits.max_message_bytes})")
    serve.add_argument("--allow-private-urls", action="store_true",
                       help="let stream modes (Scriptix /v2/client) fetch audio from loopback, private and "
                            "link-local addresses; refused by default, as a guard against server-side request forgery")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"],
                       help="(default: info)")

    diagrams = commands.add_parser("diagrams", help="write docs/statecharts/*.md from statecharts/*.yaml")
    diagrams.add_argument("--out", type=Path, default=DEFAULT_DOCS, help="output folder")
    diagrams.add_argument("--check", action="store_true", help="write nothing; exit 1 if the pages are stale")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "diagrams":
        from stt import diagrams

        if args.check:
            stale = diagrams.stale(args.out)
            for name in stale:
                print(f"stale: {args.out / name} (run: stt diagrams)", file=sys.stderr)
            return 1 if stale else 0
        for path in diagrams.write(args.out):
            print(f"wrote {path}")
        return 0

    from stt.server import ServerConfig, serve

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.decode_workers is not None and args.decode_workers < 1:
        print("stt: --decode-workers must be at least 1", file=sys.stderr)
        return 2
    config = ServerConfig(
        host=args.host,
        port=args.port,
        engine=args.engine,
        decode_workers=args.decode_workers,
        api_keys=tuple(args.api_key),
        limits=SessionLimits(idle_timeout=args.idle_timeout, max_message_bytes=args.max_message_bytes),
        allow_private_urls=args.allow_private_urls,
    )
    try:
        trio.run(serve, config)
    except* KeyboardInterrupt:  # trio may deliver it wrapped in an exception group
        logging.getLogger("stt").info("interrupted: server stopped")
    return 0

