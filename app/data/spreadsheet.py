"""Cells a spreadsheet would run as formulas (CSV injection) and how to write them safely."""

from __future__ import annotations

from typing import Any

# A cell starting with one of these looks like a formula to Excel, LibreOffice or Sheets.
FORMULA_PREFIXES = ("=", "+", "-", "@")
# Escaped on export as well: a leading tab or carriage return can hide a formula (OWASP).
_ESCAPED_PREFIXES = FORMULA_PREFIXES + ("\t", "\r")


def looks_like_formula(value: Any) -> bool:
    """Whether a cell is a string a spreadsheet could read as a formula."""
    return isinstance(value, str) and value.startswith(FORMULA_PREFIXES)


def csv_safe(value: Any) -> Any:
    """The value to write into a CSV cell: formula-looking strings get a leading single
    quote, so a spreadsheet shows them as text instead of running them. Use it on every
    cell of every CSV that Forgeloop writes."""
    if isinstance(value, str) and value.startswith(_ESCAPED_PREFIXES):
        return "'" + value
    return value
