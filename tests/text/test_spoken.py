import pytest

from stt.text import smart_format
from stt.text.spoken import cardinal, ordinal, spoken_words


@pytest.mark.parametrize("text, words", [
    ("And Mr. John Dashwood had then leisure.", "and mister john dashwood had then leisure"),
    ("Go forward 10 meters.", "go forward ten meters"),
    ("He was cold-hearted and ill-disposed.", "he was cold hearted and ill disposed"),
    ("She sold 27 tickets, then 1,250 more!", "she sold twenty seven tickets then one thousand two hundred fifty more"),
    ("the 21st and the 100th", "the twenty first and the one hundredth"),
    ("3.5 or 50%", "three point five or fifty percent"),
    ("$5 and £20", "five dollars and twenty pounds"),
    ("I don't know, I'm sure", "i don't know i'm sure"),
    ("“Quoted” (words) ... and/or", "quoted words and or"),
    ("Dr. Who met St. John", "doctor who met saint john"),
    ("mp3 players", "mp three players"),
    ("", ""),
    ("...", ""),
])
def test_spoken_words(text, words):
    assert spoken_words(text) == words.split()


def test_a_title_without_its_period_is_a_word():
    assert spoken_words("the dr said") == ["the", "dr", "said"]


@pytest.mark.parametrize("n, words", [
    (0, "zero"), (7, "seven"), (13, "thirteen"), (40, "forty"), (42, "forty two"), (100, "one hundred"),
    (105, "one hundred five"), (1200, "one thousand two hundred"), (2026, "two thousand twenty six"),
    (1_000_001, "one million one"), (3_000_000_000, "three billion"),
])
def test_cardinal(n, words):
    assert cardinal(n) == words.split()


@pytest.mark.parametrize("n, words", [
    (1, "first"), (2, "second"), (12, "twelfth"), (20, "twentieth"), (21, "twenty first"), (100, "one hundredth"),
    (1000, "one thousandth"),
])
def test_ordinal(n, words):
    assert ordinal(n) == words.split()


@pytest.mark.parametrize("n", [10, 27, 68, 105, 999, 1200, 2026, 250_000, 1_000_001])
def test_smart_format_writes_the_spoken_number_back(n):
    """spoken_words and stt.text.numbers are each other's way back, for the numbers smart_format writes."""
    tokens = smart_format(spoken_words(str(n)))
    assert [t.text for t in tokens] == [f"{n:,}" if n >= 10_000 else str(n)]
