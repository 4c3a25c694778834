"""Errors that describe a user's mistake rather than a bug.

The CLI prints their message as one line and exits non-zero, with no traceback.
Messages say what was received, what was expected and, where possible, what to do.
"""

from __future__ import annotations


class SelfdenError(Exception):
    """A problem the user can fix: bad input, a broken model folder, a wrong option."""


class InputError(SelfdenError):
    """An input file is missing, unreadable or unsuitable (message names the file)."""


class ModelError(SelfdenError):
    """A model folder or package is missing, broken or unsupported."""
