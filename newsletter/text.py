"""Stored single-line text without control characters: the one function every writer of one uses.

Names, attribute values, list names and the texts of bounce reports come from strangers (forms, CSV files,
mail) and end up in terminals (`newsletter subscribers search`), headers and pages. A control character
(Unicode category Cc: C0, DEL, C1) has no business in any of them, and an escape sequence in a name could
repaint an admin's terminal; so they are removed when the text is stored, whatever prints it later.
"""

from __future__ import annotations

# Whitespace controls (tab, line breaks, ...) become a space, so words stay apart; the others go. NUL stays:
# the writers refuse it with a message (no name holds one, PostgreSQL would refuse it) instead of storing
# something else than what was typed without a word.
_WHITESPACE = "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f\x85"
_SINGLE_LINE = {code: (" " if chr(code) in _WHITESPACE else None) for code in (*range(0x01, 0x20), *range(0x7F, 0xA0))}


def single_line(value: str) -> str:
    """`value` without control characters (category Cc) but NUL, the whitespace ones turned into spaces."""
    if value.isprintable():  # the common case, checked in C
        return value
    return value.translate(_SINGLE_LINE)
