"""Subtitles (SubRip, WebVTT) from final results with word times."""

from __future__ import annotations

from stt.clients import Segment
from stt.events import Word

MAX_CUE_SECONDS = 6.0
MAX_CUE_CHARS = 84  # two lines of 42


def cues(finals: list[Segment]) -> list[tuple[float, float, str]]:
    """Subtitle cues from finals' words: a final is cut where a cue would be longer than MAX_CUE_SECONDS or
    MAX_CUE_CHARS. A final without words (nothing timed) is one cue over its span."""
    out = []
    for final in finals:
        if not final.words:
            if final.start is not None and final.end is not None and final.text:
                out.append((final.start, final.end, final.text))
            continue
        current: list[Word] = []
        for word in final.words:
            text = " ".join(w.text for w in [*current, word])
            if current and (word.end - current[0].start > MAX_CUE_SECONDS or len(text) > MAX_CUE_CHARS):
                out.append((current[0].start, current[-1].end, " ".join(w.text for w in current)))
                current = []
            current.append(word)
        if current:
            same = len(current) == len(final.words) and final.text
            out.append((current[0].start, current[-1].end, final.text if same else " ".join(w.text for w in current)))
    return out


def _timestamp(seconds: float, separator: str) -> str:
    ms = max(0, round(seconds * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{separator}{ms:03d}"


def subtitles(finals: list[Segment], kind: str) -> str:
    """SubRip (srt) or WebVTT (vtt) text of the finals."""
    separator = "," if kind == "srt" else "."
    blocks = []
    for i, (start, end, text) in enumerate(cues(finals), 1):
        timing = f"{_timestamp(start, separator)} --> {_timestamp(max(end, start + 0.001), separator)}"
        blocks.append(f"{i}\n{timing}\n{text}\n" if kind == "srt" else f"{timing}\n{text}\n")
    body = "\n".join(blocks)
    return body if kind == "srt" else "WEBVTT\n\n" + body


__all__ = ["cues", "subtitles"]
