"""Text formatting that dialects apply to recognised words (smart_format: numbers as digits)."""

from stt.text.numbers import Token, format_numbers, smart_format

__all__ = ["Token", "format_numbers", "smart_format"]
