"""The one rule every command checks values with, and the one message it words problems with.

A value is valid when it is a class id ``0..num_classes-1`` or a void value. ``stats``,
``validate``, ``remap``, ``repair``, ``to-tfrecord`` and ``verify`` call :func:`find_bad_values`
and :func:`bad_value_message` on masks, and the losses, metrics and training pipelines on label
tensors (:mod:`labelfix.checks.tensors`), so a bad value reads the same wherever it is found:

>>> labels = np.array([[0, 37, 37], [255, 5, 5]], np.uint8)
>>> bad = find_bad_values([0, 5, 37, 255], [1, 2, 2, 1], labels, num_classes=21, void=(255,))
>>> bad_value_message("masks/0007.png", bad[0], num_classes=21, ignore=(255,))
'masks/0007.png: value 37 is not a class id (expected 0..20 or ignore 255): 2 px, first at y=0 x=1'
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from labelfix.io.masks import ValueAt


@dataclass(frozen=True)
class BadValue(ValueAt):
    """A value that is neither a class id nor void, where it first occurs (see
    :class:`~labelfix.io.masks.ValueAt`); ``source`` is the file's value when a mapping turned
    it into ``value`` (else None)."""

    source: int | None = None


def is_valid(values: np.ndarray, num_classes: int, void: Sequence[int] = ()) -> np.ndarray:
    """Elementwise: True where a value is a class id ``0..num_classes-1`` or one of ``void``."""
    values = np.asarray(values)
    valid = (values >= 0) & (values < num_classes)
    for v in void:
        valid |= values == v
    return valid


def find_bad_values(
    values: Sequence[int] | np.ndarray,
    counts: Sequence[int] | np.ndarray,
    labels: np.ndarray | Callable[[], np.ndarray],
    *,
    num_classes: int,
    void: Sequence[int] = (),
    outputs: Sequence[int] | np.ndarray | None = None,
) -> tuple[BadValue, ...]:
    """The values of a mask that are no class id, with their pixel count and first pixel.

    ``values`` are the distinct values of ``labels`` (ascending) and ``counts`` their pixels;
    ``outputs[i]``, when given, is what a mapping turns ``values[i]`` into, and the output is
    what is checked (against ``void`` in the output's terms). ``labels`` (or a function that
    returns it, called only when a value is bad) locates the first pixel of each bad value:
    ``[H, W]``, or ``[B, H, W]`` (a batch; a trailing axis of size 1 is dropped), or ``[N]``.
    """
    values = np.asarray(values, np.int64)
    outputs = values if outputs is None else np.asarray(outputs, np.int64)
    bad = ~is_valid(outputs, num_classes, void)
    if not bad.any():
        return ()
    array = labels() if callable(labels) else labels
    found = []
    for v, o, c in zip(values[bad], outputs[bad], np.asarray(counts)[bad], strict=True):
        at = ValueAt.find(array, v, c)
        source = int(v) if o != v else None
        found.append(BadValue(int(o), at.pixels, at.y, at.x, at.image, source=source))
    return tuple(found)


def expected_text(num_classes: int, ignore: Sequence[int]) -> str:
    """``expected 0..20 or ignore 255``: the phrase every range error uses."""
    text = f"expected 0..{num_classes - 1}"
    if ignore:
        text += " or ignore " + ", ".join(str(v) for v in ignore)
    return text


def bad_value_message(where: str, bad: BadValue, *, num_classes: int, ignore: Sequence[int]) -> str:
    """``where: value 37 is not a class id (expected 0..20 or ignore 255): 412 px, first at ...``"""
    text = (
        f"{where}: value {bad.value} is not a class id ({expected_text(num_classes, ignore)}): "
        f"{bad.pixels} px, first at {bad.where}"
    )
    return text + (f" (mapped from {bad.source})" if bad.source is not None else "")


#: At most this many further bad values are named after the first one.
MAX_LISTED = 4


def bad_values_message(
    where: str, bad: Sequence[BadValue], *, num_classes: int, ignore: Sequence[int]
) -> str:
    """:func:`bad_value_message` of the first bad value, then the others' values and pixels.

    >>> bad = [BadValue(7, 3, 0, 1), BadValue(9, 1, 2, 2)]
    >>> bad_values_message("a", bad, num_classes=3, ignore=())
    'a: value 7 is not a class id (expected 0..2): 3 px, first at y=0 x=1; also 9 (1 px)'
    """
    text = bad_value_message(where, bad[0], num_classes=num_classes, ignore=ignore)
    others = [f"{b.value} ({b.pixels} px)" for b in bad[1 : 1 + MAX_LISTED]]
    if len(bad) > 1 + MAX_LISTED:
        others.append(f"{len(bad) - 1 - MAX_LISTED} more values")
    return text + ("; also " + ", ".join(others) if others else "")


def unused_ignore_message(value: int, *, masks: int, seen: Iterable[int]) -> str:
    """The warning for an ``--ignore`` value no pixel of the ``masks`` read holds (``seen``:
    the values they do hold): usually the wrong void value for the dataset.

    >>> unused_ignore_message(255, masks=12, seen=range(6))
    "ignore value 255 matches no pixel of the 12 mask(s) (values seen: 0, 1, 2, 3, 4, 5); is it \
this dataset's void value?"
    """
    values = sorted(seen)
    shown = f"{values[0]}..{values[-1]}" if len(values) > 8 else ", ".join(map(str, values))
    return (
        f"ignore value {value} matches no pixel of the {masks} mask(s) (values seen: "
        f"{shown or 'none'}); is it this dataset's void value?"
    )
