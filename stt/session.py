"""One connection: a reader, a decoder and a writer, joined by bounded memory channels, in two nested
nurseries: the inner one (reader, decoder) is what an ending cancels; the writer, in the outer one, stops
between frames by itself, so no frame is ever cut in half.

    reader  : ws -> dialect.receive -> events   (audio goes to the decoder; acks and warnings to the writer)
    decoder : audio -> stt.audio -> engine stream -> results
    writer  : results -> dialect.render -> ws   (a result the dialect calls costly, in a worker thread)
    status, speech idle (only for dialects that ask): periodic SessionStatus; the end of a session without speech

The dialect's greeting frames go out first; events it derives from the handshake alone (on_open) are handled
before the first client frame.

A client that sends faster than the engine decodes fills the audio channel, the reader stops reading, and
TCP pushes back: nothing is buffered without bound. A client that does not read fills the result channel
the same way. Every way a session ends is one call to `_end`, with an ending name (stt.statechart.ENDINGS)
or a broken rule; `_close` then maps it, in this one place, to the dialect's error frame and close code.

Two test modes plug in from outside (stt.testmodes), for testing clients: a recorder (stt.recording; a
NullRecorder, which keeps nothing, unless the server records the session) gets every frame in and out with the
dialect's state after it, and how the session ended; a fault plan (stt.faults), carried out by its FaultRunner,
makes the session misbehave on request (drop, close, a vendor error, late or stalled results) at given seconds
of audio.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections import Counter, deque
from contextlib import AsyncExitStack, aclosing
from typing import Callable

import attrs
import numpy as np
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from stt.admission import Ticket, Unlimited
from stt.audio import (AudioLimitExceeded, BadAudio, DecodeRate, FileBuffers, FileBuffersFull, UnsupportedAudio,
                       open_decoder)
from stt.dialects.base import Dialect, render_shutting_down
from stt.engines.base import Engine, StreamSettings
from stt.fetch import WHY_NOT, FetchError, UrlNotAllowed, stream_url
from stt.events import (
    Audio,
    AudioAccepted,
    Close,
    Configure,
    EndOfAudio,
    EndOfTranscript,
    FetchAudio,
    Final,
    Flush,
    Partial,
    Reconfigure,
    Reply,
    SessionStarted,
    SessionStatus,
    ShuttingDown,
    SpeechStarted,
    SpeechStopped,
    Violation,
)
from stt.faults import DROP, FaultPlan, FaultRunner, Trigger
from stt.metrics import Metrics, SessionMetrics
from stt.recording import NULL_RECORDER, SessionRecorder
from stt.redaction import connection_secrets, redact, redact_path
from stt.statechart import ChartMachine, Rule

log = logging.getLogger("stt.session")

#: Codes that mean the peer is gone: nothing more can be sent.
_GONE = {1005, 1006}

#: A forced shutdown (the grace ran out) first finishes each session's recognizer, so that the utterance in progress
#: goes out as a final before the 1001; this long at most, so that shutdown still ends (stt.server.shut_down).
SHUTDOWN_FLUSH_TIMEOUT = 2.0
_WAKE = object()  # put in the audio queue: the decoder looks at the shutdown flush's flag
_FLUSHED = object()  # put in the result queue after the flush's results: the writer has sent them


@attrs.frozen
class SessionLimits:
    max_message_bytes: int = 1 << 20  # enforced by the transport: larger messages close with 1009
    idle_timeout: float = 180.0  # seconds without a message from the client
    close_grace: float = 5.0  # after the end of the exchange, seconds to wait for the client to close
    send_timeout: float = 10.0  # seconds one frame may take to send before the peer counts as gone
    audio_queue: int = 8  # audio frames between reader and decoder
    result_queue: int = 64  # frames between decoder/reader and writer
    max_batch_bytes: int = 64 * 1024  # audio the decoder coalesces into one engine call
    max_file_bytes: int = 64 << 20  # an MP4/M4A file, which is decoded whole, may be at most this large
    max_session_seconds: float = 0.0  # a session is ended (the "session_timeout" ending) after this long; 0: never
    # What decoding may cost (stt.audio.limits); past the first two, the dialect's bad-audio ending. 0: no limit.
    max_channels: int = 8  # channels in the audio (V-Blaze opens a recognizer stream for each)
    max_message_samples: int = 1 << 24  # decoded samples (all channels, the audio's rate) one audio message may become
    max_samples_per_second: int = 1 << 23  # decoded samples per second of wall time, on average; faster waits


class ChannelStreams:
    """The engine streams of one session: one for mono (or mixed) audio, or, when the dialect asks for channels
    apart, one per channel, opened as the audio reveals them (a WAV header comes with the first bytes). Fed a
    row per channel, it tags each result with its channel."""

    def __init__(self, engine: Engine, settings: StreamSettings, stack: AsyncExitStack, max_channels: int = 0):
        self.engine, self.settings, self._stack = engine, settings, stack
        self.max_channels = max_channels  # more streams than this are never opened (0: no limit)
        self.streams: list = []

    async def open(self, channels: int) -> None:
        if self.max_channels and channels > self.max_channels:
            raise AudioLimitExceeded(f"the audio has {channels} channels; at most {self.max_channels} are served "
                                     "(--max-channels)")
        while len(self.streams) < channels:
            self.streams.append(await self._stack.enter_async_context(self.engine.open_stream(self.settings)))

    async def _each(self, call) -> list:
        results = []
        for channel, stream in enumerate(self.streams):
            out = await call(channel, stream)
            results += out if channel == 0 else [attrs.evolve(r, channel=channel) for r in out]
        return results

    async def feed(self, samples: np.ndarray) -> list:
        if samples.ndim == 1:
            return await self.streams[0].feed(samples)
        await self.open(samples.shape[0])
        return await self._each(lambda channel, stream: stream.feed(samples[channel]))

    async def configure(self, **changes) -> None:
        await self._each(lambda channel, stream: _none(stream.configure(**changes)))

    async def flush(self) -> list:
        return await self._each(lambda channel, stream: stream.flush())

    async def finish(self) -> list:
        return await self._each(lambda channel, stream: stream.finish())


async def _none(call) -> list:
    await call
    return []


@attrs.frozen
class Ending:
    name: str  # an ENDINGS name, "violation" (the client broke a rule), or "fault" (an injected fault)
    rule: Rule
    detail: str = ""


class Session:
    def __init__(
        self,
        ws: WebSocketConnection,
        dialect: Dialect,
        engine: Engine,
        lifecycle: ChartMachine,
        *,
        limits: SessionLimits = SessionLimits(),
        authorise: Callable[[str | None], bool] = lambda credential: True,
        admission: Ticket | None = None,
        allow_private_urls: bool = False,
        metrics: SessionMetrics | None = None,
        recorder: SessionRecorder = NULL_RECORDER,
        faults: FaultPlan = FaultPlan(""),
        file_buffers: FileBuffers | None = None,
    ):
        self.id = str(uuid.uuid4())
        self.ws = ws
        self.dialect = dialect
        self.engine = engine
        self.lifecycle = lifecycle
        #: What the client asked the server to do wrong (stt.faults), carried out.
        self.faults = FaultRunner(faults, dialect, wait=self._fault_wait, ended=lambda: self.ending is not None,
                                  audio_seconds=lambda: self.audio_seconds)
        self.file_buffers = file_buffers  # the server's budget for files decoded whole, all sessions together
        self._rendering: trio.Event | None = None  # set when a costly render, in a worker thread, is done
        self._dialect_held = 0  # bytes of file_buffers taken for the audio the dialect keeps (kept_bytes)
        self.limits = self.faults.limits(limits)
        self._ended = trio.Event()  # an ending is decided (faults' waits stop then)
        #: The server's key check and this session's hold on its limits (stt.admission): a key that comes in the
        #: start message is checked and counted there.
        self.admission = admission if admission is not None else Unlimited(authorise)
        self._authorise = self.admission.authorise  # credential -> allowed
        self.refused_key: tuple[str, str] | None = None  # (reason, detail): the start message's key was over its limit
        self._configured = False  # the dialect's start message (a Configure) has arrived
        self.allow_private_urls = allow_private_urls  # FetchAudio may read from private addresses
        self.metrics = metrics or Metrics().session(dialect.name)  # the server's, or a session's own
        self.recorder = recorder  # every frame, state and ending, told (stt.recording)
        self.close_code: int | None = None  # the close code, once closed (1006: the connection dropped)
        self._opened = trio.current_time()  # the max_session_seconds clock starts with the connection
        self._arrivals: deque[float] = deque()  # when each audio frame still queued for the decoder arrived
        self._last_arrival = self._opened  # when the last audio frame the decoder took arrived
        self._idle: trio.CancelScope | None = None  # the reader's idle timer
        self._fetching = False  # the server reads the audio itself: a silent client is not idle
        self.ending: Ending | None = None
        self.frames_in = 0
        self.violations: Counter[str] = Counter()  # rules the client broke without ending the session
        self.audio_frames = 0
        self.audio_samples = 0  # decoded, at the engine's rate
        self._last_speech = trio.current_time()  # when the engine last reported speech (or the session began)
        self._finished = False  # the dialect's end-of-stream exchange is complete
        self._ready = trio.Event()
        self._peeking: trio.CancelScope | None = None  # a recorded session: waiting for a frame before _ready
        self._early: str | bytes | None = None  # ... and the frame that came, handled once the session started
        self._greeted = trio.Event()  # the greeting (if any) has gone out
        self._nursery: trio.Nursery | None = None
        self._reading: trio.CancelScope | None = None  # the reader's, which a shutdown flush cancels
        self._decoding = False  # the engine stream is open and takes audio: there may be an utterance to flush
        self._flushing = False  # shut_down asked the decoder to finish the stream now (_flush_for_shutdown)
        self._flushed = trio.Event()  # ... and the writer has sent what that gave
        self._audio_send, self._audio_recv = trio.open_memory_channel(self.limits.audio_queue)
        self._out_send, self._out_recv = trio.open_memory_channel(self.limits.result_queue)

    # --- running ------------------------------------------------------------------------------------------

    async def run(self) -> Ending:
        path = self.public_path
        log.info("session %s open: %s %s", self.id, self.dialect.name, path,
                 extra={"session": self.id, "dialect": self.dialect.name, "path": path, "state": self.lifecycle.state})
        if self.ending is not None:
            pass  # refused before it began (refuse): only the error and the close
        elif not self._authorise(self.dialect.credential()) and not self.dialect.credential_in_start:
            self._end("unauthorised", "missing or invalid API key")
        else:
            try:
                # The writer is not in the nursery that _end cancels: cancelling it mid-frame would break the
                # stream. It stops by itself, between frames, once an ending is decided.
                async with trio.open_nursery() as outer:
                    outer.start_soon(self._writer)
                    async with self._out_send:
                        greeting = self.dialect.greeting()
                        if greeting:
                            await self._out_send.send(Reply(tuple(greeting)))
                            await self._greeted.wait()  # sent before anything the client's frames cause
                        if self.ending is None:  # else the client went away during the greeting
                            await self._run_tasks()
            except Exception as exc:  # a bug in the server: end this session, keep serving the others
                log.exception("session %s failed", self.id)
                self._end("internal_error", f"{type(exc).__name__}")
        try:
            await self._close()
        finally:
            if self._dialect_held:  # the audio the dialect kept (_hold_kept_audio) goes with the session
                self.file_buffers.give_back(self._dialect_held)
                self._dialect_held = 0
        return self.ending

    async def _run_tasks(self) -> None:
        """The tasks an ending cancels: reader, decoder, and the timers the dialect asks for."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._read_until_flush)
            nursery.start_soon(self._decoder)
            if self.dialect.status_interval:
                nursery.start_soon(self._status, self.dialect.status_interval)
            if self.dialect.speech_idle_timeout:
                nursery.start_soon(self._speech_idle, self.dialect.speech_idle_timeout)
            if self.limits.max_session_seconds:
                nursery.start_soon(self._time_limit, self.limits.max_session_seconds)
            for trigger in self.faults.at_open():  # as soon as the connection is open
                await self._out_send.send(trigger)

    def refuse(self, ending: str, detail: str = "") -> None:
        """Decide before run() that the session ends as `ending` (the server's admission limits: "busy"): run()
        then sends the dialect's error for it, if any, and closes with its code, without a greeting."""
        self._end(ending, detail)

    def _end(self, ending: str | Rule, detail: str = "", *, fault: bool = False) -> None:
        """Decide how the session ends (the first decision wins) and stop its tasks."""
        if self.ending is None:
            if isinstance(ending, Rule):
                self.ending = Ending("fault" if fault else "violation", ending, detail)
            else:
                self.ending = Ending(ending, self.dialect.chart.ending(ending), detail)
            self._ended.set()
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    async def _close(self) -> None:
        """The one place that turns an ending into the dialect's error frame and close code."""
        ending = self.ending
        assert ending is not None
        rule = ending.rule
        code = self.ws.closed.code if self.ws.closed else None
        if code is None and (rule is DROP or ending.name == "dropped"):
            # An injected drop, or a client that read nothing for the send timeout (counted as gone, 1006: a Close
            # 1000 now would tell it that all went well, and a frame cut off by the timeout may be half sent).
            # trio-websocket has no public way to drop a connection: close its stream, without a close frame.
            await trio.aclose_forcefully(self.ws._stream)
        elif code is None and ending.name not in ("dropped", "client_closed"):
            code = rule.close
            with trio.move_on_after(self.limits.send_timeout):
                try:
                    for frame in self.dialect.render_violation(Violation(rule, ending.detail)):
                        await self.ws.send_message(frame)
                        self.recorder.frame_out(frame, self.dialect.machine.state)
                except ConnectionClosed:
                    pass
            with trio.move_on_after(self.limits.send_timeout):  # cancelled, aclose still closes the stream
                await self.ws.aclose(rule.close, (rule.error or rule.message)[:120])
        else:
            with trio.move_on_after(self.limits.send_timeout):
                await self.ws.aclose()
        self.close_code = 1006 if code is None else code
        previous_state = self.lifecycle.state
        self.lifecycle.advance("end")
        self.dialect.machine.advance("close")
        self.recorder.closed(self.close_code, ending.name, rule.id, ending.detail, self.dialect.machine.state)
        log.log(
            # A client that closes before the exchange completes loses results: a client error, logged as such.
            logging.INFO if ending.name == "normal" or (rule.close == 1000 and ending.name != "client_closed")
            else logging.WARNING,
            "session %s closed %s: %s %s%s (frames in %d, audio frames %d)",
            self.id, self.close_code, ending.name, rule.id, f": {self.redact(ending.detail)}" if ending.detail else "",
            self.frames_in, self.audio_frames,
            extra={"session": self.id, "dialect": self.dialect.name, "previous_state": previous_state,
                   "state": self.lifecycle.state, "ending": ending.name, "rule": rule.id,
                   "close_code": self.close_code, "frames_in": self.frames_in,
                   "audio_frames": self.audio_frames},
        )

    # --- what the log may show (stt.redaction) -------------------------------------------------------------

    @property
    def public_path(self) -> str:
        """The handshake's path as logs show it: a key in it (Scriptix /v2/client/<token>) redacted."""
        return redact_path(self.dialect.handshake.path, self.dialect.secret_path, self._secrets())

    def redact(self, text: str) -> str:
        """`text` without the connection's secrets: its key, however it came (handshake or start message)."""
        return redact(text, self._secrets())

    def _secrets(self) -> list[str | None]:
        handshake = self.dialect.handshake
        return [*connection_secrets(handshake.path, handshake.query, handshake.headers,
                                    self.dialect.secret_path), self.dialect.credential()]

    # --- the server shutting down -------------------------------------------------------------------------

    def shutting_down(self, at: float) -> None:
        """The server stopped accepting and will end this session at `at` (Unix seconds) unless it ends before:
        tell the client, where the dialect has a message for it. A client too slow to leave room for it in the
        queue does not get it."""
        frames = render_shutting_down(self.dialect, ShuttingDown(at))
        if frames and self.ending is None:
            try:
                self._out_send.send_nowait(Reply(tuple(frames)))
            except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
                pass

    def shut_down(self) -> None:
        """The server's grace ran out: end the session as going away (the lifecycle's "shutdown", 1001). A session
        whose recognizer is taking audio first stops reading, finishes the stream (the audio already queued, then
        the utterance in progress) and sends its final, as its dialect renders it, within SHUTDOWN_FLUSH_TIMEOUT;
        a second call ends it at once."""
        if self.ending is not None or self._nursery is None or not self._decoding or self._flushing:
            self._end("shutdown", "the server is shutting down")
            return
        self._flushing = True
        if self._reading is not None:
            self._reading.cancel()  # what the client sends from now on is not decoded
        try:
            self._audio_send.send_nowait(_WAKE)  # a decoder waiting for audio; a busy one looks when it is done
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            pass
        self._nursery.start_soon(self._end_after_flush)

    async def _end_after_flush(self) -> None:
        with trio.move_on_after(SHUTDOWN_FLUSH_TIMEOUT):
            await self._flushed.wait()
        self._end("shutdown", "the server is shutting down" + ("" if self._flushed.is_set() else
                                                                 " (the recognizer's last results did not come in time)"))

    async def _read_until_flush(self) -> None:
        with trio.CancelScope() as self._reading:
            await self._reader()

    # --- reader -------------------------------------------------------------------------------------------

    async def _reader(self) -> None:
        try:
            for event in self.dialect.on_open():  # what the handshake alone settles (YourVoic: its query string)
                await self._handle(event)
            start_timeout = self.dialect.start_timeout
            start_by = trio.current_time() + start_timeout if start_timeout else math.inf
            idle_timeout = min(self.limits.idle_timeout, self.dialect.message_idle_timeout or math.inf)
            with trio.CancelScope() as idle:
                self._idle = idle
                while True:
                    early, self._early = self._early, None
                    if early is None:
                        idle.deadline = math.inf if self._fetching else min(
                            trio.current_time() + idle_timeout,
                            math.inf if self._configured else start_by)
                        frame = await self.ws.get_message()
                        idle.deadline = math.inf  # waiting on a slow engine below is not the client being idle
                    else:
                        frame = early
                    self.frames_in += 1
                    await self._dialect_free()
                    events = self.dialect.receive(frame)
                    if not self._hold_kept_audio():
                        await trio.lowlevel.checkpoint()  # ended busy: we are cancelled here
                    self.recorder.frame_in(frame, self.dialect.machine.state, events, early=early is not None)
                    for event in events:
                        await self._handle(event)
            if idle.cancelled_caught and not self._configured and trio.current_time() >= start_by:
                self._end("idle_timeout", f"no start message within {start_timeout:g} s")
            elif idle.cancelled_caught:
                self._end("idle_timeout", f"{idle_timeout:g} s without a message")
        except ConnectionClosed as exc:
            code = exc.reason.code if exc.reason else 1006
            failure = getattr(self.ws, "protocol_error", None)  # stt.transport's connection: a frame broke RFC 6455
            if failure is not None:
                self._end("invalid_utf8" if failure[0] == 1007 else "protocol_error", failure[1])
            elif code == 1009 and self.ws.closed is not None and "maximum message size" in (exc.reason.reason or ""):
                self._end("message_too_large", exc.reason.reason)
            elif self._finished or (code == 1000 and self.dialect.ends_with_client_close):
                self._end("normal")
            elif code in _GONE:
                self._end("dropped", f"close code {code}")
            else:
                self._end("client_closed", f"close code {code}")

    def _hold_kept_audio(self) -> bool:
        """A dialect that keeps the client's audio whole till the end (`kept_bytes`: V-Blaze's scrubaudio) takes it
        from the server's whole-file budget, as an MP4 does; False, and the session ended busy, past it."""
        kept = self.dialect.kept_bytes
        if self.file_buffers is None or kept <= self._dialect_held:
            return True
        try:
            self.file_buffers.take(kept - self._dialect_held)
        except FileBuffersFull as exc:
            self._end("busy", str(exc))
            return False
        self._dialect_held = kept
        return True

    async def _handle(self, event: object) -> None:
        if isinstance(event, Violation):
            self.recorder.violation(event.rule.id, event.detail)
            if event.rule.fatal:
                self._end(event.rule, event.detail)
                await trio.lowlevel.checkpoint()  # we are cancelled here
            else:
                log.info("session %s: %s %s", self.id, event.rule.id, self.redact(event.detail))
                self.violations[event.rule.id] += 1
                await self._out_send.send(event)
        elif isinstance(event, Reply):
            await self._out_send.send(event)
        elif isinstance(event, FetchAudio):
            self._fetching = True
            if self._idle is not None:
                self._idle.deadline = math.inf
            self._nursery.start_soon(self._fetch, event.url)
        elif isinstance(event, Audio):
            self._arrivals.append(trio.current_time())
            await self._audio_send.send(event)
            self.audio_frames += 1
            await self._out_send.send(AudioAccepted(self.audio_frames))
        elif isinstance(event, Configure):
            self.recorder.configured(event.audio)
            if self.dialect.credential_in_start and not self._authorise(self.dialect.credential()):
                self._end("unauthorised", "missing or invalid API key")  # the key came in the start message
                await trio.lowlevel.checkpoint()  # we are cancelled here
            if self.dialect.credential_in_start:  # counted now, under --max-sessions-per-key
                self.refused_key = self.admission.claim(self.dialect.credential())
                if self.refused_key is not None:
                    self._end("busy", self.refused_key[1])  # the dialect's busy error and close
                    await trio.lowlevel.checkpoint()  # we are cancelled here
            self._configured = True
            await self._audio_send.send(event)
            if self.recorder.marks_early_frames:
                await self._note_early_frame()
            await self._ready.wait()  # read nothing more until the session has started
        elif isinstance(event, (Reconfigure, Flush, EndOfAudio)):
            await self._audio_send.send(event)
        elif isinstance(event, Close):
            self._end("normal")
            await trio.lowlevel.checkpoint()
        else:
            raise TypeError(f"unexpected event {event!r}")

    def _started(self) -> None:
        """The session has started, and the dialect knows it (it has rendered SessionStarted): the reader reads
        on, and a frame that comes from now on is read in the dialect's next state, never in the one before."""
        self._ready.set()
        if self._peeking is not None:
            self._peeking.cancel()

    async def _note_early_frame(self) -> None:
        """A recorded session: a frame that arrives before the session has started (before RecognitionStarted,
        session.updated or listening has even been written) is one the client sent without waiting for it. stt
        serves it all the same, once the session has started; the recorder marks it "early" for the client's
        report (the waits_for_start client rules)."""
        with trio.CancelScope() as self._peeking:
            if not self._ready.is_set():
                self._early = await self.ws.get_message()
        self._peeking = None

    # --- decoder ------------------------------------------------------------------------------------------

    async def _decoder(self) -> None:
        config = await self._audio_recv.receive()
        assert isinstance(config, Configure)
        try:
            decoder = open_decoder(config.audio, self.engine.sample_rate, max_file_bytes=self.limits.max_file_bytes,
                                   split_channels=config.split_channels, max_channels=self.limits.max_channels,
                                   max_message_samples=self.limits.max_message_samples,
                                   file_buffers=self.file_buffers)
        except UnsupportedAudio as exc:  # dialects validate formats; this is a server bug if it happens
            self._end("internal_error", str(exc))
            return
        except BadAudio as exc:  # a raw format of more channels than --max-channels
            self._end("bad_audio", str(exc))
            return
        settings = StreamSettings(config.language, config.partials, config.max_delay, config.endpointing,
                                  config.hints)
        try:
            with decoder:  # a compressed container's decoder thread stops here, however the session ends
                async with AsyncExitStack() as stack:
                    stream = ChannelStreams(self.engine, settings, stack, self.limits.max_channels)
                    await stream.open(1)
                    self.lifecycle.advance("ready")
                    started = SessionStarted(self.id, config, getattr(self.engine, "name", ""))
                    await self._out_send.send(started)  # the writer then sets _ready
                    self._decoding = True
                    try:
                        await self._decode(stream, decoder)
                    finally:
                        self._decoding = False
                    if self._flushing:  # asked during the decoder's last call: what it gave is queued
                        await self._out_send.send(_FLUSHED)
        except BadAudio as exc:
            self._end("bad_audio", str(exc))
        except FileBuffersFull as exc:  # the audio is not at fault: the server is, for now (the client may retry)
            self._end("busy", str(exc))
        except Exception as exc:
            log.exception("session %s: recognizer failed", self.id)
            self._end("internal_error", f"recognizer failed: {type(exc).__name__}")

    async def _decode(self, stream, decoder) -> None:
        pending = None
        limits = self.limits
        rate = DecodeRate(limits.max_samples_per_second, max(limits.max_message_samples, limits.max_samples_per_second),
                          trio.current_time())
        while True:
            if self._flushing:
                await self._flush_for_shutdown(stream, decoder, pending)
                return
            item = pending if pending is not None else await self._audio_recv.receive()
            pending = None
            if item is _WAKE:
                continue
            if isinstance(item, Audio):
                # Take every audio frame already queued, so a busy engine gets fewer, larger calls.
                chunks, size = [item.data], len(item.data)
                while size < self.limits.max_batch_bytes:
                    try:
                        nxt = self._audio_recv.receive_nowait()
                    except trio.WouldBlock:
                        break
                    if not isinstance(nxt, Audio):
                        pending = nxt
                        break
                    chunks.append(nxt.data)
                    size += len(nxt.data)
                if self.lifecycle.state == "listening":
                    self.lifecycle.advance("audio")
                decoded = decoder.decoded
                samples = await self._run_decoder(decoder.decode, b"".join(chunks))
                await self._throttle(rate.spend(decoder.decoded - decoded, trio.current_time()))
                self.audio_samples += samples.shape[-1]
                for trigger in self.faults.due(self.audio_seconds):
                    await self._out_send.send(trigger)  # after the results so far
                self.metrics.audio(self.audio_seconds, self._arrived(len(chunks)))
                results = await self._timed(stream.feed(samples)) if samples.size else []
            elif isinstance(item, Reconfigure):
                await stream.configure(partials=item.partials, max_delay=item.max_delay)
                results = []
            elif isinstance(item, Flush):
                results = await self._timed(stream.flush())
            elif isinstance(item, EndOfAudio):
                results, tails = [], 0
                while True:  # a file decoded whole (MP4) comes in pieces
                    decoded = decoder.decoded
                    tail = await self._run_decoder(decoder.finish)
                    await self._throttle(rate.spend(decoder.decoded - decoded, trio.current_time()))
                    tails += tail.shape[-1]
                    if tail.size:  # what a container held back until its end arrived, with the last frame
                        self.metrics.audio((self.audio_samples + tails) / self.engine.sample_rate,
                                           self._last_arrival)
                    results += await self._timed(stream.feed(tail)) if tail.size else []
                    if not decoder.more:
                        break
                    for result in results:
                        await self._out_send.send(result)
                    results = []
                results += await self._timed(stream.finish())
                results.append(EndOfTranscript())
            else:
                raise TypeError(f"unexpected item {item!r}")
            for result in results:
                await self._out_send.send(result)
            if isinstance(item, EndOfAudio):
                return

    @staticmethod
    async def _throttle(seconds: float) -> None:
        """--max-samples-per-second: wait while the session's audio decodes faster than that; meanwhile the
        audio queue fills, the reader stops reading, and TCP slows the client down."""
        if seconds > 0:
            await trio.sleep(seconds)

    async def _flush_for_shutdown(self, stream, decoder, pending) -> None:
        """The server is going away: decode the audio already queued (at most max_batch_bytes of it: this must be
        quick), then finish the stream, whose results (the utterance in progress as a final) go to the writer."""
        queued = [pending] if pending is not None else []
        while (item := self._next_queued()) is not None:
            queued.append(item)
        chunks, size = [], 0
        for item in queued:
            if isinstance(item, Audio) and size < self.limits.max_batch_bytes:
                chunks.append(item.data)
                size += len(item.data)
        samples = await self._run_decoder(decoder.decode, b"".join(chunks)) if chunks else None
        results = []
        if samples is not None and samples.size:
            self.audio_samples += samples.shape[-1]
            results += await self._timed(stream.feed(samples))
        tail = await self._run_decoder(decoder.finish)
        if tail.size:
            results += await self._timed(stream.feed(tail))
        results += await self._timed(stream.finish())
        for result in results:
            await self._out_send.send(result)

    def _next_queued(self):
        try:
            return self._audio_recv.receive_nowait()
        except (trio.WouldBlock, trio.EndOfChannel):
            return None

    def _arrived(self, frames: int) -> float:
        """When the last of the next `frames` queued audio frames arrived (and forget them)."""
        for _ in range(min(frames, len(self._arrivals))):
            self._last_arrival = self._arrivals.popleft()
        return self._last_arrival

    async def _timed(self, call):
        """Await a call to the engine, counting the time it takes as decode time."""
        start = trio.current_time()
        try:
            return await call
        finally:
            self.metrics.decoded(trio.current_time() - start)

    @staticmethod
    async def _run_decoder(method, *args):
        """Raw audio decodes in microseconds, here; FFmpeg's containers take milliseconds, in a worker thread
        (not abandoned on cancel: the session closes the decoder only after the call returns)."""
        if not method.__self__.slow:
            return method(*args)
        return await trio.to_thread.run_sync(method, *args)

    # --- writer -------------------------------------------------------------------------------------------

    async def _writer(self) -> None:
        try:
            with trio.CancelScope() as sending:
                async for item in self._out_recv:
                    if self.ending is not None:
                        return  # what is still queued is dropped: the session is over
                    if item is _FLUSHED:
                        self._flushed.set()  # shut_down's flush has gone out: the session may end now
                        continue
                    if isinstance(item, (SpeechStarted, SpeechStopped)) or (isinstance(item, (Partial, Final))
                                                                             and item.words):
                        self._last_speech = trio.current_time()
                    if isinstance(item, Trigger):
                        frames = []  # the fault runner's own, below
                    elif isinstance(item, Reply):
                        frames = item.frames
                    else:
                        frames = await self._render(item)
                    if isinstance(item, SessionStarted):
                        self._started()  # the dialect has moved on (RecognitionStarted, ...): read on
                    frames = await self.faults.on_send(item, frames)  # as the fault plan has them (stt.faults)
                    if frames is None:
                        return  # the session ended while the plan held them
                    for frame in frames:
                        sending.deadline = trio.current_time() + self.limits.send_timeout
                        try:
                            await self.ws.send_message(frame)
                        except ConnectionClosed:
                            return  # the reader sees the close and ends the session
                        self.recorder.frame_out(frame, self.dialect.machine.state)
                    sending.deadline = math.inf
                    if frames and isinstance(item, (Partial, Final)):
                        self.metrics.sent(item, trio.current_time())  # the result's lag
                    self._greeted.set()
                    if isinstance(item, Trigger) and item.rule.fatal:
                        self._end(item.rule, f"injected fault: {self.faults.text}", fault=True)
                        return
                    if isinstance(item, EndOfTranscript):
                        self._finished = True
                        if self.dialect.closes_after_end:
                            self._end("normal")
                        elif self.ending is None:  # a rule the client broke meanwhile may have ended it
                            self._nursery.start_soon(self._close_after_grace)
            if sending.cancelled_caught:
                self._end("dropped", f"the client read nothing for {self.limits.send_timeout:g} s")
        finally:
            # However the writer ends (a client gone mid-frame), the session must not wait on the greeting, nor
            # the reader on a start it would have sent: reading on, the reader sees how the connection ended.
            self._greeted.set()
            self._started()

    async def _render(self, item) -> list:
        """The dialect's frames for a result. Those the dialect calls costly (`costly(item)`: V-Blaze's ZIP and
        scrubbed audio, a second per 32 MiB) are rendered in a worker thread, so that the other sessions of the
        process go on meanwhile; until it is done the reader does not call the dialect (see _dialect_free)."""
        if not self.dialect.costly(item):
            return self.dialect.render(item)
        self._rendering = trio.Event()
        try:
            return await trio.to_thread.run_sync(self.dialect.render, item)
        finally:
            self._rendering.set()
            self._rendering = None

    async def _dialect_free(self) -> None:
        """Wait until no costly render (_render) is using the dialect in a worker thread: a dialect is no more
        thread-safe than any sans-IO object. Without one under way, this does not even checkpoint, so the call to
        the dialect that follows cannot overlap one started meanwhile."""
        while self._rendering is not None:
            await self._rendering.wait()

    # --- injected faults (stt.faults: the FaultRunner waits so) ----------------------------------------------

    async def _fault_wait(self, seconds: float) -> None:
        """Wait, as a fault asks, until the session ends or the connection closes at the latest (the reader may
        not be reading: before the session has started, only the connection says that the client has gone)."""
        with trio.move_on_after(seconds):
            while self.ws.closed is None:
                with trio.move_on_after(0.1):
                    await self._ended.wait()
                    return

    @property
    def audio_seconds(self) -> float:
        return self.audio_samples / self.engine.sample_rate

    async def _fetch(self, url: str) -> None:
        """Audio the server reads itself goes the way client audio goes, then ends the audio."""
        try:
            async with aclosing(stream_url(url, allow_private=self.allow_private_urls)) as chunks:
                async for chunk in chunks:
                    self._arrivals.append(trio.current_time())
                    await self._audio_send.send(Audio(chunk))
                    self.audio_frames += 1
        except UrlNotAllowed as exc:  # the client learns no address; the operator, which flag lifts the guard
            log.warning("session %s: stream URL refused: %s, not a public address (--allow-private-urls lifts this)",
                        self.id, exc.reason, extra={"session": self.id, "dialect": self.dialect.name})
            rule_id = self.dialect.url_not_allowed_rule
            if rule_id:
                self._end(self.dialect.chart.rule(rule_id), WHY_NOT)
            else:
                self._end("bad_audio", str(exc))
            return
        except FetchError as exc:
            self._end("bad_audio", self.redact(str(exc)))
            return
        await self._audio_send.send(EndOfAudio())

    async def _status(self, interval: float) -> None:
        """The dialect's periodic status message."""
        start = trio.current_time()
        while True:
            await trio.sleep(interval)
            await self._out_send.send(SessionStatus(self.audio_seconds, trio.current_time() - start))

    async def _speech_idle(self, timeout: float) -> None:
        """Dialects that bill for speech end a session in which nobody spoke for `timeout` seconds."""
        while trio.current_time() < self._last_speech + timeout:
            await trio.sleep_until(self._last_speech + timeout)
        self._end("idle_timeout", f"no speech for {timeout:g} s")

    async def _time_limit(self, seconds: float) -> None:
        """max_session_seconds: warn the client ahead where the dialect has a warning for it (Speechmatics:
        45, 30 and 15 minutes ahead, those within the limit), then end the session as "session_timeout"."""
        end = self._opened + seconds
        rule_id = self.dialect.time_limit_warning_rule
        for ahead in sorted(self.dialect.time_limit_warnings, reverse=True):
            if rule_id and ahead < seconds:
                await trio.sleep_until(end - ahead)
                # The server's own notice, not a rule the client broke: not counted in self.violations.
                await self._out_send.send(Violation(self.dialect.chart.rule(rule_id),
                                                    f"it will be ended in {ahead:g} s (the limit is {seconds:g} s)"))
        await trio.sleep_until(end)
        self._end("session_timeout", f"the session lasted the limit of {seconds:g} s")

    async def _close_after_grace(self) -> None:
        """The client closes after the end of the transcript (the reader then ends the session); if it does
        not within close_grace, the server closes normally."""
        await trio.sleep(self.limits.close_grace)
        self._end("normal", "the client did not close after the end of the transcript")


__all__ = ["Ending", "Session", "SessionLimits"]
