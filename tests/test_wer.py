import pytest

from stt.wer import edit_distance, normalize, wer


def test_identical_is_zero():
    assert wer("go forward ten meters", "go forward ten meters") == 0.0


def test_substitution_deletion_insertion():
    assert wer("go forward ten meters", "go forward ten years") == pytest.approx(1 / 4)
    assert wer("go forward ten meters", "go forward meters") == pytest.approx(1 / 4)
    assert wer("go forward ten meters", "go go forward ten meters") == pytest.approx(1 / 4)
    assert wer("a b c", "x y z") == 1.0
    assert wer("a b", "x y z w") == 2.0  # insertions can push it past 1


def test_case_and_punctuation_ignored():
    assert wer("Go forward, ten meters!", "go FORWARD ten meters") == 0.0
    assert normalize("Mr. John's 'quoted' -- don't") == ["mr", "john's", "quoted", "don't"]


def test_empty_texts():
    assert wer("", "") == 0.0
    assert wer("", "something said") == 1.0
    assert wer("something said", "") == 1.0


def test_edit_distance_is_minimal():
    assert edit_distance(list("kitten"), list("sitting")) == 3
    assert edit_distance([], list("abc")) == 3
