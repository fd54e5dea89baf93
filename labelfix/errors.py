"""Exceptions raised by the labelfix library.

Every error carries a one-line message that names the file (when there is one) and says what
was expected and what was found; the CLI prints ``str(err)`` and exits 2 for a
:class:`UsageError`, 1 for any other :class:`LabelfixError`.
"""

from __future__ import annotations

import os


class LabelfixError(Exception):
    """Base class for every error labelfix raises on purpose (the CLI exits 1)."""


class UsageError(LabelfixError):
    """A request that cannot be carried out as asked, whatever the data (the CLI exits 2)."""


class UnreadableMask(LabelfixError):
    """A mask file that cannot be decoded (corrupt, truncated, empty, not an image, too large)."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class NotALabelMask(UnreadableMask):
    """A readable image that does not hold class ids (a colour or JPEG mask)."""


class MappingError(LabelfixError):
    """A label mapping that cannot be built or applied (bad map file, unmapped value, ...)."""


class MissingExtra(LabelfixError):
    """An optional dependency (TensorFlow) is not installed."""
