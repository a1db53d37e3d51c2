"""Exceptions and warnings raised by the data package."""

from __future__ import annotations


class DataError(ValueError):
    """Bad input data: a missing or corrupt file, an inconsistent record, an unknown key."""


class DuplicateAnnotationsWarning(UserWarning):
    """Two annotation files are byte-identical (e.g. the released cvc300 test.json is ColonDB's)."""
