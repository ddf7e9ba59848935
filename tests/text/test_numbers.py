"""smart_format's number normaliser: what becomes digits, what must stay a word, and the word spans."""

import pytest

from stt.text import Token, format_numbers, smart_format


@pytest.mark.parametrize(
    "spoken, written",
    [
        # cardinals
        ("twenty five", "25"),
        ("ten", "10"),
        ("eleven apples", "11 apples"),
        ("go forward ten meters", "go forward 10 meters"),
        ("ninety nine", "99"),
        ("seven hundred", "700"),
        ("one hundred and five", "105"),
        ("one hundred five", "105"),
        ("twelve hundred dollars", "1200 dollars"),
        ("two thousand twenty six", "2026"),
        ("two thousand and twenty six", "2026"),
        ("two hundred and fifty thousand", "250,000"),
        ("one million two hundred thousand", "1,200,000"),
        ("twelve hundred thousand", "1,200,000"),
        ("two billion three million four thousand five hundred sixty seven", "2,003,004,567"),
        ("twenty thousand people", "20,000 people"),
        ("Twenty Five", "25"),
        # ordinals
        ("twenty first", "21st"),
        ("twenty second", "22nd"),
        ("ninety third", "93rd"),
        ("eleventh", "11th"),
        ("twelfth night", "12th night"),
        ("one hundredth", "100th"),
        ("one hundred and first", "101st"),
        ("one thousandth", "1000th"),
        # decimals
        ("five point two five", "5.25"),
        ("zero point five", "0.5"),
        ("three point oh four", "3.04"),
        # "and" joins only after hundred or a scale word
        ("twenty and thirty", "20 and 30"),
        ("one hundred and", "100 and"),
        ("ten point", "10 point"),
    ],
)
def test_numbers_become_digits(spoken, written):
    assert format_numbers(spoken) == written


@pytest.mark.parametrize(
    "spoken",
    [
        # a lone number word below ten stays a word
        "one of them", "no one", "the one", "i have one dog", "two", "nine lives", "zero", "wait a second",
        "the first time", "first second third", "five and six", "at one point",
        # "oh" is a digit only after "point"
        "oh", "oh no",
        # numbers back to back: a time, a year or digits, not told apart, so left as spoken
        "three thirty", "nineteen eighty four", "twenty twenty six", "one two three four", "four oh two",
        "nineteen oh five", "one thousand two thousand",
        # a number starts with a unit, teen or tens word
        "a hundred", "a thousand and one nights", "hundred", "thousand",
        # not numbers at all
        "he was not an ill disposed young man", "",
    ],
)
def test_words_that_stay(spoken):
    assert format_numbers(spoken) == spoken


def test_tokens_name_the_words_they_stand_for():
    words = ["i", "paid", "twenty", "five", "dollars", "for", "one", "hundred", "and", "five", "eggs"]
    assert smart_format(words) == [
        Token("i", 0, 1), Token("paid", 1, 2), Token("25", 2, 4), Token("dollars", 4, 5), Token("for", 5, 6),
        Token("105", 6, 10), Token("eggs", 10, 11),
    ]


def test_tokens_tile_the_input():
    words = "on the twenty first of may three thirty two thousand people came one by one".split()
    tokens = smart_format(words)
    assert tokens[0].start == 0 and tokens[-1].end == len(words)
    assert all(a.end == b.start for a, b in zip(tokens, tokens[1:]))
    assert " ".join(t.text for t in tokens) == (
        "on the 21st of may three thirty two thousand people came one by one")


def test_unchanged_words_keep_their_case():
    assert [t.text for t in smart_format(["Hello", "World"])] == ["Hello", "World"]
