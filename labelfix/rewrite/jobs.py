"""The units of a rewrite run: an input and where it goes, one file's job, one file's result."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Target:
    """One input (directory or file) and the directory its outputs go to; with several inputs
    into one ``--output``, a directory's outputs go to its own ``prefix`` folder there."""

    source: str
    destination: str
    prefix: str = ""


@dataclass(frozen=True)
class FileJob:
    """One file to remap. ``record_root``/``record_name`` place it in a manifest.

    ``keep_png``: a PNG given the ``npy`` format only because the mapping *can* produce a value
    no PNG holds (``--out -1``); when its own output holds none, it stays a PNG
    (:meth:`as_png`).
    """

    source: str
    relpath: str
    destination: str
    format: str
    record_root: str
    record_name: str
    keep_png: bool = False

    def as_png(self) -> FileJob:
        """This job writing a PNG of the same name, not a ``.npy``."""
        stem = os.path.splitext(self.destination)[0]
        return dataclasses.replace(
            self,
            destination=stem + ".png",
            record_name=os.path.splitext(self.record_name)[0] + ".png",
            format="png",
            keep_png=False,
        )


@dataclass(frozen=True)
class FileResult:
    """What happened to one file. ``status`` is ``changed``, ``unchanged`` or ``failed``.

    ``values``/``counts`` are the input values and their pixels, ``outputs`` what each becomes;
    ``stored`` says how the output was (or, in a dry run, would be) stored.
    """

    source: str
    destination: str
    status: str
    written: bool = False
    stored: str | None = None
    values: tuple[int, ...] = ()
    counts: tuple[int, ...] = ()
    outputs: tuple[int, ...] = ()
    errors: tuple[str, ...] = ()
    #: with a repair: stray pixels changed, and how many of them became the ignore value
    repaired: int = 0
    to_ignore: int = 0
    #: with a repair: stray pixels left as drawn, the mask having no lossy signature
    held: int = 0
