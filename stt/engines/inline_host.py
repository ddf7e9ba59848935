"""Host a cheap recognizer on the event loop itself (the scripted engine: microseconds per call)."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import AsyncIterator, Callable

import attrs
import numpy as np

from stt.engines.base import Recognizer, StreamSettings
from stt.events import Final, Partial


@attrs.define
class InlineStream:
    recognizer: Recognizer

    async def feed(self, samples: np.ndarray) -> list[Partial | Final]:
        return self.recognizer.feed(samples)

    async def flush(self) -> list[Partial | Final]:
        return self.recognizer.flush()

    async def finish(self) -> list[Partial | Final]:
        return self.recognizer.finish()

    async def configure(self, partials: bool | None = None, max_delay: float | None = None) -> None:
        self.recognizer.configure(partials=partials, max_delay=max_delay)


@attrs.define
class InlineEngine:
    name: str
    sample_rate: int
    factory: Callable[[StreamSettings], Recognizer]
    capacity: int | None = None  # base.Engine.capacity: None (unknown, the scripted engine) unless configured

    @asynccontextmanager
    async def open_stream(self, settings: StreamSettings) -> AsyncIterator[InlineStream]:
        recognizer = self.factory(settings)
        try:
            yield InlineStream(recognizer)
        finally:
            recognizer.close()
