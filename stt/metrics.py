"""What the server counts, as Prometheus metrics, in a CollectorRegistry of each Server's own (so that several
servers, in tests, do not share one). `stt/admin.py` serves them at /metrics.

    stt_sessions_active{dialect,state}            sessions under way, by lifecycle state (read at scrape time)
    stt_sessions_total{dialect,ending,rule,code}  sessions (upgraded connections) that ended: how
                                                  (stt.statechart.ENDINGS, or "violation"), the chart rule, the
                                                  WebSocket close code (1006: the connection dropped)
    stt_connections_rejected_total{dialect,reason}  connections refused at the upgrade or right after it, by
                                                  reason: no_dialect, bad_handshake, bad_fault_plan,
                                                  client_faults_off, unauthorised, max_sessions,
                                                  max_sessions_per_key, shutting_down; dialect "none" before
                                                  any request: pending_handshakes, handshake_timeout,
                                                  not_websocket, internal_error
    stt_rule_violations_total{dialect,rule}       rules clients broke without ending their session
    stt_audio_seconds_total{dialect}              audio decoded for the recognizer, in seconds of audio
    stt_decode_seconds_total{dialect}             time the sessions waited on the recognizer (queueing for a
                                                  decoder included)
    stt_real_time_factor{dialect}                 per session with audio: decode seconds / audio seconds
    stt_final_lag_seconds{dialect}                from the arrival of the audio at a result's end to the result
    stt_partial_lag_seconds{dialect}              being sent (finals and partials with words, that the dialect sends)

Nothing here does I/O or reads a clock: the session passes the times in.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from stt.events import Final, Partial

LAG_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
RTF_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 5.0)

#: (audio end, arrival) pairs a session keeps: one per batch of audio the decoder takes, so at 20 ms frames, with
#: no coalescing, some 10 s of audio; a result older than the ring is not measured.
LAG_RING = 512


class Metrics:
    """The metrics of one server. `sessions` is read at each scrape: (dialect, lifecycle state) per session
    under way."""

    def __init__(self, sessions: Callable[[], Iterable[tuple[str, str]]] = tuple):
        self.registry = CollectorRegistry()
        r = self.registry
        self.sessions_total = Counter("stt_sessions", "Sessions that ended, by ending, chart rule and close code",
                                      ["dialect", "ending", "rule", "code"], registry=r)
        self.rejected = Counter("stt_connections_rejected",
                                "Connections refused at the upgrade or right after it, by reason",
                                ["dialect", "reason"], registry=r)
        self.violations = Counter("stt_rule_violations", "Rules clients broke without ending their session",
                                  ["dialect", "rule"], registry=r)
        self.audio_seconds = Counter("stt_audio_seconds", "Audio decoded for the recognizer, in seconds of audio",
                                     ["dialect"], registry=r)
        self.decode_seconds = Counter("stt_decode_seconds", "Seconds sessions waited on the recognizer",
                                      ["dialect"], registry=r)
        self.real_time_factor = Histogram("stt_real_time_factor",
                                          "Per session: seconds waiting on the recognizer / seconds of audio",
                                          ["dialect"], buckets=RTF_BUCKETS, registry=r)
        self.final_lag = Histogram("stt_final_lag_seconds",
                                   "From the arrival of the audio at a final's end to the final being sent",
                                   ["dialect"], buckets=LAG_BUCKETS, registry=r)
        self.partial_lag = Histogram("stt_partial_lag_seconds",
                                     "From the arrival of the audio at a partial's end to the partial being sent",
                                     ["dialect"], buckets=LAG_BUCKETS, registry=r)
        r.register(_ActiveSessions(sessions))

    def session(self, dialect: str) -> SessionMetrics:
        return SessionMetrics(self, dialect)

    def ended(self, dialect: str, ending: str, rule: str, code: int) -> None:
        self.sessions_total.labels(dialect, ending, rule, str(code)).inc()

    def reject(self, dialect: str, reason: str) -> None:
        self.rejected.labels(dialect, reason).inc()

    def violated(self, dialect: str, rule: str, count: int = 1) -> None:
        self.violations.labels(dialect, rule).inc(count)

    def exposition(self) -> tuple[bytes, str]:
        """The text format, and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class _ActiveSessions(Collector):
    def __init__(self, sessions: Callable[[], Iterable[tuple[str, str]]]):
        self._sessions = sessions

    def describe(self):
        return [GaugeMetricFamily("stt_sessions_active", "Sessions under way, by lifecycle state",
                                  labels=["dialect", "state"])]

    def collect(self):
        counts: dict[tuple[str, str], int] = {}
        for key in self._sessions():
            counts[key] = counts.get(key, 0) + 1
        family = GaugeMetricFamily("stt_sessions_active", "Sessions under way, by lifecycle state",
                                   labels=["dialect", "state"])
        for (dialect, state), count in sorted(counts.items()):
            family.add_metric([dialect, state], count)
        yield family


class LagClock:
    """When the audio up to a point of the stream arrived: a ring of (audio end in seconds, arrival time), one
    per batch of audio decoded, so that a result ending at `end` seconds of audio can say how long ago the audio
    at its end arrived."""

    def __init__(self, size: int = LAG_RING):
        self._ring: deque[tuple[float, float]] = deque(maxlen=size)
        self._dropped = False  # the ring is full and has let its oldest entries go

    def arrived(self, audio_end: float, at: float) -> None:
        """The audio up to `audio_end` seconds had all arrived at time `at`."""
        if self._ring and audio_end <= self._ring[-1][0]:
            return  # no new audio
        if len(self._ring) == self._ring.maxlen:
            self._dropped = True
        self._ring.append((audio_end, at))

    def lag(self, end: float, now: float) -> float | None:
        """Seconds from the arrival of the audio at `end` to `now`; None when the ring no longer holds it."""
        ring = self._ring
        if not ring:
            return None
        arrival = ring[-1][1]  # a result past the audio decoded (an engine's rounding): the latest audio
        for audio_end, at in reversed(ring):  # results are near the end: a few steps back
            if audio_end < end:
                break
            arrival = at
        else:
            if self._dropped and ring[0][0] > end:
                return None  # older than the ring: its batch is gone
        return max(0.0, now - arrival)


class SessionMetrics:
    """What one session reports, bound to its dialect's series once (the hot path is an addition)."""

    def __init__(self, metrics: Metrics, dialect: str):
        self._audio = metrics.audio_seconds.labels(dialect)
        self._decode = metrics.decode_seconds.labels(dialect)
        self._rtf = metrics.real_time_factor.labels(dialect)
        self._final_lag = metrics.final_lag.labels(dialect)
        self._partial_lag = metrics.partial_lag.labels(dialect)
        self.clock = LagClock()
        self.audio_seconds = 0.0
        self.decode_seconds = 0.0

    def audio(self, audio_end: float, arrived: float) -> None:
        """The decoder has the audio up to `audio_end` seconds, the last of which arrived at `arrived`."""
        if audio_end > self.audio_seconds:
            self._audio.inc(audio_end - self.audio_seconds)
            self.audio_seconds = audio_end
            self.clock.arrived(audio_end, arrived)

    def decoded(self, seconds: float) -> None:
        """The session waited `seconds` on the recognizer."""
        self.decode_seconds += seconds
        self._decode.inc(seconds)

    def sent(self, result: object, now: float) -> None:
        """A result went out to the client at `now`."""
        if isinstance(result, (Partial, Final)) and result.words:
            lag = self.clock.lag(result.end, now)
            if lag is not None:
                (self._final_lag if isinstance(result, Final) else self._partial_lag).observe(lag)

    def closed(self) -> None:
        if self.audio_seconds > 0:
            self._rtf.observe(self.decode_seconds / self.audio_seconds)


__all__ = ["LagClock", "Metrics", "SessionMetrics"]
