"""Text formatting that dialects apply to recognised words (smart_format: numbers as digits)."""

from stt.text.numbers import Token, format_numbers, smart_format
from stt.text.punctuation import punctuate

__all__ = ["Token", "format_numbers", "punctuate", "smart_format"]
