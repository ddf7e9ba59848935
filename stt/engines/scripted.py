"""A deterministic engine for protocol tests and benchmarks: it "hears" a fixed script, one word per
`word_seconds` of audio, whatever the audio says.

Word i spans [i * word_seconds, i * word_seconds + 0.8 * word_seconds]. A word is heard once the audio
covers its end. The script is spoken in utterances of `words_per_utterance` words (words 0..n-1, n..2n-1, ...);
a Final comes at the end of each utterance, or when the oldest unfinished word is max_delay old, or on
flush/finish. Partials (if enabled) follow each new word.

Voice activity: SpeechStarted comes once the audio goes past the start of an utterance's first word (at
that start), before the word's Partial; SpeechStopped (at the end of the utterance's last word) comes right
after the utterance's Final. Finals at max_delay or on a flush cut an utterance without stopping it.
finish() stops speech still going: at the end of the audio if a word is under way there, else at the end of
the last word. `endpointing` and `hints` are ignored: the script decides.
"""

from __future__ import annotations

import attrs
import numpy as np

from stt.engines.base import Results, StreamSettings
from stt.events import Final, Partial, SpeechStarted, SpeechStopped, Word

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
        self._speaking = False  # a SpeechStarted went out without its SpeechStopped

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

    def _speech_started(self, now: float, results: Results) -> None:
        """SpeechStarted once the audio goes past the start of the next word, if speech is not already going."""
        word = self._word(self._heard)
        if not self._speaking and word.start < now:
            self._speaking = True
            results.append(SpeechStarted(word.start))

    def feed(self, samples: np.ndarray) -> Results:
        self._samples += len(samples)
        now = self._samples / self.sample_rate
        if self._fail_at is not None and now >= self._fail_at:
            raise RuntimeError(f"scripted failure at {self._fail_at} s of audio")
        results: Results = []
        while self._word(self._heard).end <= now:
            self._speech_started(now, results)
            word = self._word(self._heard)
            self._pending.append(word)
            self._heard += 1
            if self.settings.partials:
                results.append(Partial(tuple(self._pending), self._pending[0].start, self._pending[-1].end))
            if self._heard % self._per_utterance == 0:  # the utterance's last word
                results.append(self._final())
                results.append(SpeechStopped(word.end))
                self._speaking = False
        self._speech_started(now, results)
        if self._pending and now - self._pending[0].start >= self.settings.max_delay:
            results.append(self._final())
        return results

    def flush(self) -> Results:
        return [self._final(forced=True)]

    def finish(self) -> Results:
        results: Results = [self._final()] if self._pending else []
        if self._speaking:
            now = self._samples / self.sample_rate
            under_way = self._word(self._heard).start < now
            results.append(SpeechStopped(round(now, 3) if under_way else self._word(self._heard - 1).end))
            self._speaking = False
        return results

    def configure(self, partials: bool | None = None, max_delay: float | None = None) -> None:
        if partials is not None:
            self.settings = attrs.evolve(self.settings, partials=partials)
        if max_delay is not None:
            self.settings = attrs.evolve(self.settings, max_delay=max_delay)

    def close(self) -> None:
        pass
