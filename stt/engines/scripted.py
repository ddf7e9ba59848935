"""A deterministic engine for protocol tests and benchmarks: it "hears" a fixed script, one word per
`word_seconds` of audio, whatever the audio says.

Word i spans [i * word_seconds, i * word_seconds + 0.8 * word_seconds]. A word is heard once the audio
covers its end; a Final comes every `words_per_utterance` words, or when the oldest unfinished word is
max_delay old, or on flush/finish. Partials (if enabled) follow each new word.
"""

from __future__ import annotations

import numpy as np

from stt.engines.base import StreamSettings
from stt.events import Final, Partial, Word

DEFAULT_SCRIPT = "one two three four five six seven eight nine ten"


class ScriptedRecognizer:
    sample_rate = 16000

    def __init__(
        self,
        settings: StreamSettings,
        *,
        script: str = DEFAULT_SCRIPT,
        word_seconds: float = 0.5,
        words_per_utterance: int = 4,
        fail_at_seconds: float | None = None,
    ):
        self.settings = settings
        self._script = script.split() or ["word"]
        self._word_seconds = word_seconds
        self._per_utterance = words_per_utterance
        self._fail_at = fail_at_seconds
        self._samples = 0
        self._heard = 0  # words heard so far
        self._pending: list[Word] = []  # heard, not yet final

    def _word(self, i: int) -> Word:
        start = i * self._word_seconds
        return Word(self._script[i % len(self._script)], round(start, 3), round(start + 0.8 * self._word_seconds, 3),
                    1.0)

    def _final(self, forced: bool = False) -> Final:
        words, self._pending = tuple(self._pending), []
        now = self._samples / self.sample_rate
        if words:
            return Final(words, words[0].start, words[-1].end, forced)
        return Final((), now, now, forced)

    def feed(self, samples: np.ndarray) -> list[Partial | Final]:
        self._samples += len(samples)
        now = self._samples / self.sample_rate
        if self._fail_at is not None and now >= self._fail_at:
            raise RuntimeError(f"scripted failure at {self._fail_at} s of audio")
        results: list[Partial | Final] = []
        while self._word(self._heard).end <= now:
            self._pending.append(self._word(self._heard))
            self._heard += 1
            if self.settings.partials:
                results.append(Partial(tuple(self._pending), self._pending[0].start, self._pending[-1].end))
            if len(self._pending) >= self._per_utterance:
                results.append(self._final())
        if self._pending and now - self._pending[0].start >= self.settings.max_delay:
            results.append(self._final())
        return results

    def flush(self) -> list[Partial | Final]:
        return [self._final(forced=True)]

    def finish(self) -> list[Partial | Final]:
        return [self._final()] if self._pending else []

    def configure(self, partials: bool | None = None, max_delay: float | None = None) -> None:
        if partials is not None or max_delay is not None:
            self.settings = StreamSettings(
                self.settings.language,
                self.settings.partials if partials is None else partials,
                self.settings.max_delay if max_delay is None else max_delay,
            )

    def close(self) -> None:
        pass
