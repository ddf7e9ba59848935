"""Punctuation that dialects apply to recognised words where the client asks for it (punctuate=true): the
recognizers here give bare lower-case words, so this is the little that is safe without a model."""

from __future__ import annotations

from typing import Sequence

_PRONOUN_I = {"i", "i'm", "i've", "i'll", "i'd"}


def punctuate(tokens: Sequence[str], final: bool) -> list[str]:
    """The tokens with "i" as "I", the first capitalised, and a final one ending with a period."""
    out = ["I" + t[1:] if t.lower() in _PRONOUN_I else t for t in tokens]
    if out:
        out[0] = out[0][:1].upper() + out[0][1:]
        if final and not out[-1].endswith((".", "?", "!")):
            out[-1] += "."
    return out
