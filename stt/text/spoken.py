"""Written text -> spoken-form words: what an engine that writes ("Mr. Dashwood paid $27.") hands the dialects,
which expect a recognizer's words ("mister dashwood paid twenty seven dollars") and format them themselves
(smart_format, punctuate; stt.text.numbers is the way back).

`spoken_words(text)` answers lowercase words without punctuation, as the pocketsphinx engine gives them:
* hyphens and slashes split words ("cold-hearted" -> "cold hearted"); apostrophes stay ("don't").
* numbers are spelled out: cardinals up to the billions ("1,250" -> "one thousand two hundred fifty"),
  ordinals ("21st" -> "twenty first"), decimals ("3.5" -> "three point five"), "%" -> "percent",
  "$"/"£"/"€" -> "dollars"/"pounds"/"euros" after the number; years are read as numbers.
* a few titles: Mr., Mrs., Ms., Dr., St. -> mister, missus, miz, doctor, saint.
Anything else that is not a letter, digit or apostrophe is dropped.
"""

from __future__ import annotations

import re

from stt.text.numbers import ORDINAL_TEENS, ORDINAL_TENS, ORDINAL_UNITS, TEENS, TENS, UNITS

_UNIT_WORDS = {v: k for k, v in UNITS.items()}
_TEEN_WORDS = {v: k for k, v in TEENS.items()}
_TENS_WORDS = {v: k for k, v in TENS.items()}
_ORDINALS = {v: k for table in (ORDINAL_UNITS, ORDINAL_TEENS, ORDINAL_TENS) for k, v in table.items()}
_SCALES = ((10**9, "billion"), (10**6, "million"), (10**3, "thousand"))
_TITLES = {"mr": "mister", "mrs": "missus", "ms": "miz", "dr": "doctor", "st": "saint"}
_CURRENCY = {"$": "dollars", "£": "pounds", "€": "euros"}
_NUMBER = re.compile(r"^([$£€]?)(\d[\d,]*)(?:\.(\d+))?(st|nd|rd|th|%|s)?$")


def cardinal(n: int) -> list[str]:
    """0 <= n < 10**12 as words: 105 -> ["one", "hundred", "five"]."""
    if n < 10:
        return [_UNIT_WORDS[n]]
    if n < 20:
        return [_TEEN_WORDS[n]]
    if n < 100:
        tens, units = divmod(n, 10)
        return [_TENS_WORDS[tens * 10]] + ([_UNIT_WORDS[units]] if units else [])
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        return [_UNIT_WORDS[hundreds], "hundred"] + (cardinal(rest) if rest else [])
    for scale, name in _SCALES:
        if n >= scale:
            high, rest = divmod(n, scale)
            return cardinal(high) + [name] + (cardinal(rest) if rest else [])
    raise ValueError(n)  # pragma: no cover (the scales cover everything from 1000)


def ordinal(n: int) -> list[str]:
    """n >= 1 as ordinal words: 21 -> ["twenty", "first"], 100 -> ["one", "hundredth"]."""
    words = cardinal(n)
    last = words[-1]
    value = {**UNITS, **TEENS, **TENS}.get(last)
    if value is not None and value in _ORDINALS:
        words[-1] = _ORDINALS[value]
    else:  # hundred, thousand, million, billion
        words[-1] = last + "th"
    return words


def _number(token: str) -> list[str] | None:
    match = _NUMBER.match(token)
    if not match:
        return None
    currency, digits, decimals, suffix = match.groups()
    digits = digits.replace(",", "")
    if not digits or len(digits) > 12:
        return None
    value = int(digits)
    if suffix in ("st", "nd", "rd", "th") and not decimals and value > 0:
        words = ordinal(value)
    else:
        words = cardinal(value)
        if decimals:
            words += ["point"] + [_UNIT_WORDS[int(d)] for d in decimals]
        if suffix == "s":  # "1990s": read as the number, plural
            words[-1] = words[-1][:-1] + "ies" if words[-1].endswith("y") else words[-1] + "s"
    if suffix == "%":
        words.append("percent")
    if currency:
        words.append(_CURRENCY[currency])
    return words


def spoken_words(text: str) -> list[str]:
    """The spoken-form words of written text."""
    out: list[str] = []
    for raw in re.split(r"[\s\-–—/]+", text):
        token = raw.strip("\"'“”‘’()[]{}.,;:!?…")
        if raw.endswith(".") and token.lower() in _TITLES:
            out.append(_TITLES[token.lower()])
            continue
        token = token.rstrip(".")
        number = _number(token.replace("’", "'"))
        if number is not None:
            out += number
            continue
        word = re.sub(r"[^\w']", "", token.replace("’", "'")).strip("'")
        if not word:
            continue
        if any(ch.isdigit() for ch in word) and not word.isdigit():
            out += [part for part in re.split(r"(\d+)", word) if part for part in _digits_or_word(part)]
            continue
        out.append(word.lower())
    return out


def _digits_or_word(part: str) -> list[str]:
    return cardinal(int(part)) if part.isdigit() and len(part) <= 12 else [part.lower()]


__all__ = ["cardinal", "ordinal", "spoken_words"]
