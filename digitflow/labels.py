"""Digit labels as files and people write them: exactly one ASCII digit, 0 to 9.

Python's `int()` would also take `0_7`, `+1`, Arabic-Indic or full-width digits; every reader
of a label or a predicted digit goes through `parse_digit` instead. Standard library only.
"""

from __future__ import annotations

DIGITS = "0123456789"


def parse_digit(text: str) -> int | None:
    """The digit `text` is, whitespace around it ignored; None unless it is one of 0-9."""
    stripped = text.strip()
    return DIGITS.index(stripped) if len(stripped) == 1 and stripped in DIGITS else None
