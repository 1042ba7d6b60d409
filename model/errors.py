"""Errors that callers outside the data layer catch, importable without loading torch (``study/run.py``
reports them before the data, and with it torch, is loaded)."""

from __future__ import annotations


class DataError(ValueError):
    """Bad or missing input data; the message names the file and line (or the missing path) and what is accepted."""
