"""English number words -> digits, for transcripts: "twenty five" -> "25", "one hundred and five" -> "105".

Small and conservative, over a recognizer's words (one word per item, no punctuation, any case):

* A number is cardinal words up to the billions: units, teens, tens ("twenty five"), "hundred" after 1-99
  ("twelve hundred" is 1200), "thousand", "million", "billion", with "and" after "hundred" or a scale word
  ("two thousand and five" is 2005). It may end in an ordinal ("twenty first" -> "21st", "one hundredth" ->
  "100th"), or go on with "point" and digits ("five point two five" -> "5.25"; "oh" is the digit 0 there).
* A number of one word below ten stays a word ("one of them", "no one", "two", "second", "zero"): style
  guides spell those out, and "one" and "second" are more often not numbers at all. "ten" and up are digits.
* Numbers that follow one another with no other word between them stay as spoken ("three thirty",
  "nineteen eighty four", "one two three four", "four oh two"): a time, a year or a string of digits, which
  this normaliser does not tell apart, so it changes none of them.
* A number starts with a unit, teen or tens word: "a hundred" stays. No currency, percent, dates or signs.
* From 10,000 up the digits get thousands separators ("250,000"); below, none ("2026", "1200").

`smart_format(words)` answers tokens, each with the span of input words it stands for, so that a caller can
keep the recognizer's words and their times beside the formatted text.
"""

from __future__ import annotations

from typing import Sequence

import attrs

UNITS = {w: i for i, w in enumerate("zero one two three four five six seven eight nine".split())}
TEENS = {w: i + 10 for i, w in enumerate(
    "ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen".split())}
TENS = {w: (i + 2) * 10 for i, w in enumerate("twenty thirty forty fifty sixty seventy eighty ninety".split())}
SCALES = {"thousand": 10**3, "million": 10**6, "billion": 10**9}
ORDINAL_UNITS = {w: i + 1 for i, w in enumerate(
    "first second third fourth fifth sixth seventh eighth ninth".split())}
ORDINAL_TEENS = {w: i + 10 for i, w in enumerate(
    "tenth eleventh twelfth thirteenth fourteenth fifteenth sixteenth seventeenth eighteenth nineteenth".split())}
ORDINAL_TENS = {w: (i + 2) * 10 for i, w in enumerate(
    "twentieth thirtieth fortieth fiftieth sixtieth seventieth eightieth ninetieth".split())}
ORDINAL_SCALES = {"thousandth": 10**3, "millionth": 10**6, "billionth": 10**9}
DIGITS = {**UNITS, "oh": 0}  # after "point"


@attrs.frozen
class Token:
    """A word of the formatted text, standing for the input words [start, end)."""

    text: str
    start: int
    end: int


@attrs.frozen
class _Number:
    value: int
    end: int  # index after its last word
    ordinal: bool = False
    decimals: str = ""


def _below_hundred(w: Sequence[str], i: int) -> _Number | None:
    """0-99 from w[i]: "zero", "seven", "twelve", "forty", "forty two", "forty second", "twelfth"."""
    if i >= len(w):
        return None
    word = w[i]
    if word in TENS:
        nxt = w[i + 1] if i + 1 < len(w) else ""
        if UNITS.get(nxt, 0) > 0:
            return _Number(TENS[word] + UNITS[nxt], i + 2)
        if nxt in ORDINAL_UNITS:
            return _Number(TENS[word] + ORDINAL_UNITS[nxt], i + 2, ordinal=True)
        return _Number(TENS[word], i + 1)
    for table, ordinal in ((UNITS, False), (TEENS, False), (ORDINAL_UNITS, True), (ORDINAL_TEENS, True),
                           (ORDINAL_TENS, True)):
        if word in table:
            return _Number(table[word], i + 1, ordinal)
    return None


def _after_and(w: Sequence[str], i: int, part, below: int) -> _Number | None:
    """A non-zero `part` (below `below`) at w[i], or after an "and" there; None leaves the "and" alone."""
    for start in ((i + 1, i) if i < len(w) and w[i] == "and" else (i,)):
        n = part(w, start)
        if n is not None and 0 < n.value < below:
            return n
    return None


def _below_thousand(w: Sequence[str], i: int) -> _Number | None:
    """A group: 0-99, or 1-99 "hundred" [and] [1-99] ("twelve hundred" is 1200), or 1-99 "hundredth"."""
    n = _below_hundred(w, i)
    if n is None or n.ordinal or n.value == 0 or n.end >= len(w):
        return n
    if w[n.end] == "hundredth":
        return _Number(n.value * 100, n.end + 1, ordinal=True)
    if w[n.end] != "hundred":
        return n
    rest = _after_and(w, n.end + 1, _below_hundred, 100)
    if rest is None:
        return _Number(n.value * 100, n.end + 1)
    return _Number(n.value * 100 + rest.value, rest.end, rest.ordinal)


def _number(w: Sequence[str], i: int) -> _Number | None:
    """The longest number starting at w[i]: groups joined by falling scale words, then decimals."""
    group = _below_thousand(w, i)
    if group is None:
        return None
    total, last_scale = 0, None
    while not group.ordinal and group.value > 0 and group.end < len(w):
        word = w[group.end]
        scale = SCALES.get(word) or ORDINAL_SCALES.get(word)
        if scale is None or (last_scale is not None and scale >= last_scale):
            break
        if word in ORDINAL_SCALES:
            return _Number(total + group.value * scale, group.end + 1, ordinal=True)
        total, last_scale = total + group.value * scale, scale
        nxt = _after_and(w, group.end + 1, _below_thousand, 1000)
        after = nxt.end if nxt is not None else group.end + 1
        if nxt is None or (not nxt.ordinal and after < len(w) and w[after] in SCALES
                           and SCALES[w[after]] >= last_scale):
            # Nothing follows the scale word, or what follows starts a number of its own ("one thousand
            # two thousand"): the number ends at the scale word.
            return _decimals(w, _Number(total, group.end + 1))
        group = nxt
    return _decimals(w, _Number(total + group.value, group.end, group.ordinal))


def _decimals(w: Sequence[str], n: _Number) -> _Number:
    j = n.end
    if n.ordinal or j + 1 >= len(w) or w[j] != "point" or w[j + 1] not in DIGITS:
        return n
    digits = []
    j += 1
    while j < len(w) and w[j] in DIGITS:
        digits.append(str(DIGITS[w[j]]))
        j += 1
    return _Number(n.value, j, decimals="".join(digits))


def _render(n: _Number) -> str:
    text = f"{n.value:,}" if n.value >= 10_000 else str(n.value)
    if n.decimals:
        return f"{text}.{n.decimals}"
    if n.ordinal:
        last_two = n.value % 100
        return text + ("th" if 10 <= last_two <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n.value % 10, "th"))
    return text


def smart_format(words: Sequence[str]) -> list[Token]:
    """The words with their numbers as digits; each token names the input words it stands for."""
    w = [word.lower() for word in words]
    out: list[Token] = []
    i = 0
    while i < len(w):
        first = _number(w, i)
        if first is None:
            out.append(Token(words[i], i, i + 1))
            i += 1
            continue
        run, end = [first], first.end
        while end < len(w):  # numbers back to back (or joined by "oh": "four oh two")
            nxt = _number(w, end)
            if nxt is None and w[end] == "oh":
                nxt = _Number(0, end + 1)
            if nxt is None:
                break
            run.append(nxt)
            end = nxt.end
        if len(run) == 1 and not (first.end - i == 1 and first.value < 10):
            out.append(Token(_render(first), i, end))
        else:
            out.extend(Token(words[k], k, k + 1) for k in range(i, end))
        i = end
    return out


def format_numbers(text: str) -> str:
    """`smart_format` over the words of a string (split on white space)."""
    return " ".join(t.text for t in smart_format(text.split()))


__all__ = ["Token", "format_numbers", "smart_format"]
