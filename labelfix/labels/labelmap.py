"""Label mappings: a lookup table plus a policy for the values no rule names.

A :class:`LabelMap` is built once (from ``--ignore/--out``, ``--map A:B``, a map file or a
preset, see :mod:`labelfix.labels.presets`) and applied to whole arrays with one table lookup
per pixel.

>>> lm = LabelMap(ignore=(255,), out=-1)
>>> lm.apply(np.array([[0, 5, 255]], np.uint8)).tolist()
[[0, 5, -1]]
>>> LabelMap(rules=((7, 0), (26, 13)), unmapped="ignore", out=255).apply(
...     np.array([[7, 26, 0]], np.uint8)).tolist()
[[0, 13, 255]]
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from labelfix.errors import MappingError
from labelfix.io.masks import ValueAt, smallest_int_dtype, value_counts

UNMAPPED_POLICIES = ("keep", "ignore", "error")
#: :meth:`LabelMap.apply` changes the pixels of at most this many values one value at a time
#: (three vectorized passes each, 0.15 ms per 2 M pixels) rather than looking every pixel up
#: (1.2 ms per 2 M pixels through ``bytes.translate``, 1.7 ms through ``np.take``).
FEW_CHANGES = 6

#: The values a label may take anywhere (rules, ignore, out): what a signed 32-bit integer
#: holds, as TensorFlow's int32 labels and the ``.npy`` masks remap writes do.
LABEL_MIN, LABEL_MAX = -(2**31), 2**31 - 1


@dataclass(frozen=True)
class LabelMap:
    """How every input value becomes an output value.

    ``rules`` map values explicitly; every value in ``ignore`` becomes ``out`` (the canonical
    void; it defaults to the first ignore value); values named by neither follow ``unmapped``:
    ``keep`` (unchanged), ``ignore`` (become ``out``) or ``error``.
    """

    rules: tuple[tuple[int, int], ...] = ()
    ignore: tuple[int, ...] = ()
    out: int | None = None
    unmapped: str = "keep"
    num_classes: int | None = None
    class_names: tuple[str, ...] | None = None
    name: str | None = None
    rules_dict: dict[int, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.unmapped not in UNMAPPED_POLICIES:
            raise MappingError(f"unmapped must be one of {', '.join(UNMAPPED_POLICIES)}")
        given = (*(v for rule in self.rules for v in rule), *self.ignore)
        for v in (*given, *((self.out,) if self.out is not None else ())):
            try:
                check_label_value(int(v))
            except ValueError as err:
                raise MappingError(str(err)) from None
        rules: dict[int, int] = {}
        for a, b in self.rules:
            if a in rules and rules[a] != b:
                raise MappingError(f"value {a} is mapped twice: to {rules[a]} and to {b}")
            rules[a] = b
        for v in self.ignore:
            if v in rules and rules[v] != self.out_value:
                raise MappingError(
                    f"value {v} is both an ignore value and mapped to {rules[v]} by a rule"
                )
        if self.unmapped == "ignore" and self.out_value is None:
            raise MappingError(
                "unmapped values become ignore, but no ignore value is known:"
                " give --ignore or --out"
            )
        object.__setattr__(self, "rules_dict", rules)

    @property
    def out_value(self) -> int | None:
        """The canonical ignore value the output uses (None when there is no ignore at all)."""
        if self.out is not None:
            return self.out
        return self.ignore[0] if self.ignore else None

    @property
    def is_identity(self) -> bool:
        return (
            all(a == b for a, b in self.rules)
            and all(v == self.out_value for v in self.ignore)
            and self.unmapped == "keep"
        )

    def lookup(self, value: int) -> int | None:
        """The output for one input value; None when ``unmapped="error"`` and no rule names it."""
        if value in self.rules_dict:
            return self.rules_dict[value]
        if value in self.ignore:
            return self.out_value
        if self.unmapped == "keep":
            return value
        if self.unmapped == "ignore":
            return self.out_value
        return None

    @property
    def outputs(self) -> tuple[int, ...]:
        """The values the rules and the ignore policy produce (kept values not included).

        >>> LabelMap(rules=((7, 0),), ignore=(255,), out=-1).outputs
        (-1, 0)
        """
        values = set(self.rules_dict.values())
        if self.out_value is not None and (self.ignore or self.unmapped == "ignore"):
            values.add(self.out_value)
        return tuple(sorted(values))

    @property
    def idempotent(self) -> bool:
        """True when applying the map twice gives the same result as applying it once."""
        outputs = set(self.rules_dict.values()) | set(v for v in (self.out_value,) if v is not None)
        return all(self.lookup(b) == b for b in outputs)

    # ------------------------------------------------------------------------- applying

    def table(self, dtype: np.dtype | type) -> tuple[np.ndarray, np.ndarray]:
        """``(lut, known)`` for every value of an 8- or 16-bit unsigned ``dtype``.

        ``lut[v]`` is the output for ``v`` (smallest integer dtype holding every output);
        ``known[v]`` is False where ``unmapped="error"`` and no rule names ``v``.
        """
        dtype = np.dtype(dtype)
        if dtype not in (np.dtype(np.uint8), np.dtype(np.uint16)):
            raise ValueError(f"a lookup table needs uint8 or uint16 input, got {dtype}")
        size = 1 << (8 * dtype.itemsize)
        lut = np.arange(size, dtype=np.int64)
        known = np.ones(size, dtype=bool)
        if self.unmapped != "keep":
            fill = self.out_value if self.unmapped == "ignore" else 0
            lut[:] = fill
            known[:] = self.unmapped == "ignore"
        for v in self.ignore:
            if 0 <= v < size:
                lut[v] = self.out_value
                known[v] = True
        for a, b in self.rules_dict.items():
            if 0 <= a < size:
                lut[a] = b
                known[a] = True
        lut = lut.astype(smallest_int_dtype(int(lut.min()), int(lut.max())))
        return lut, known

    def apply(
        self,
        labels: np.ndarray,
        *,
        path: str | None = None,
        present: Iterable[int] | None = None,
    ) -> np.ndarray:
        """Map a whole label array; raise MappingError (naming ``path``) on unmapped values.

        The result has the smallest integer dtype that holds its values. uint8 and uint16
        arrays go through a cached lookup table; other integer arrays through a table over the
        values they hold. ``present``, the values ``labels`` holds (every one of them), lets a
        map that changes only a few of them change just those pixels.
        """
        if labels.dtype in (np.uint8, np.uint16):
            lut, known = self._cached_table(labels.dtype)
            if self.unmapped == "error" and not known.all():
                self._check_known(labels, known, path)
            if present is not None and lut.dtype == labels.dtype:
                changed = [v for v in present if lut[v] != v]
                if len(changed) <= FEW_CHANGES:
                    return _put_values(labels, changed, lut)
            if lut.dtype == labels.dtype == np.uint8 and labels.flags.c_contiguous:
                mapped = labels.tobytes().translate(lut.tobytes())  # 1.5x np.take's speed
                return np.frombuffer(mapped, np.uint8).reshape(labels.shape)
            return np.take(lut, labels)
        if labels.size == 0:
            return labels.astype(np.int8)
        values, _ = value_counts(labels)
        outputs = [self.lookup(int(v)) for v in values]
        if any(o is None for o in outputs):
            known = np.array([o is not None for o in outputs])
            self._raise_unmapped(labels, values[~known], path)
        out = np.asarray(outputs, dtype=np.int64)
        dtype = smallest_int_dtype(int(out.min()), int(out.max()))
        return replace_values(labels, values, out, dtype)

    def _cached_table(self, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
        key = f"_table_{np.dtype(dtype).name}"
        cached = self.__dict__.get(key)
        if cached is None:
            cached = self.table(dtype)
            object.__setattr__(self, key, cached)
        return cached

    def _check_known(self, labels: np.ndarray, known: np.ndarray, path: str | None) -> None:
        values, _ = value_counts(labels)
        missing = [int(v) for v in values if not known[int(v)]]
        if missing:
            self._raise_unmapped(labels, np.asarray(missing), path)

    def _raise_unmapped(self, labels: np.ndarray, values: np.ndarray, path: str | None) -> None:
        first = ValueAt.find(labels, int(values[0]))
        where = f"{path}: " if path else ""
        more = f" (and {len(values) - 1} more unmapped values)" if len(values) > 1 else ""
        raise MappingError(
            f"{where}value {first.value} has no mapping rule (--unmapped error): "
            f"{first.pixels} px, first at {first.where}{more}"
        )

    # ------------------------------------------------------------------------- records

    def to_dict(self) -> dict:
        """JSON-ready description (stored in manifests)."""
        return {
            "name": self.name,
            "rules": [[a, b] for a, b in sorted(self.rules_dict.items())],
            "ignore": list(self.ignore),
            "out": self.out_value,
            "unmapped": self.unmapped,
            "num_classes": self.num_classes,
            "class_names": list(self.class_names) if self.class_names else None,
            "idempotent": self.idempotent,
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> LabelMap:
        return cls(
            rules=tuple((int(a), int(b)) for a, b in data.get("rules", ())),
            ignore=tuple(int(v) for v in data.get("ignore", ())),
            out=data.get("out"),
            unmapped=data.get("unmapped", "keep"),
            num_classes=data.get("num_classes"),
            class_names=tuple(data["class_names"]) if data.get("class_names") else None,
            name=data.get("name"),
        )

    def describe(self) -> str:
        """One line for summaries: ``cityscapes preset: 19 rules, unmapped -> 255``."""
        parts = []
        if self.name:
            parts.append(f"{self.name} preset")
        if self.rules_dict:
            parts.append(f"{len(self.rules_dict)} rule(s)")
        if self.ignore:
            parts.append(f"ignore {', '.join(map(str, self.ignore))} -> {self.out_value}")
        parts.append(
            f"unmapped values: {self.unmapped}"
            + (f" -> {self.out_value}" if self.unmapped == "ignore" else "")
        )
        return "; ".join(parts)


def _put_values(labels: np.ndarray, changed: list[int], lut: np.ndarray) -> np.ndarray:
    """A copy of ``labels`` (uint8 or uint16, as ``lut``) with the pixels of each value in
    ``changed`` set to ``lut[value]``: its difference added where the value is (unsigned
    arithmetic wraps exactly; three vectorized passes a value, faster than ``np.putmask``)."""
    out = labels.copy()
    for value in changed:
        step = (int(lut[value]) - value) % (1 << (8 * labels.itemsize))
        out += (labels == value).view(np.uint8) * labels.dtype.type(step)
    return out


# ----------------------------------------------------------------------------- map files

_DIGITS = {"0x": "0123456789abcdef", "0o": "01234567", "0b": "01"}


class OutOfRange(ValueError):
    """An integer label value outside :data:`LABEL_MIN` .. :data:`LABEL_MAX`."""


def _shown(value: object, width: int = 24) -> str:
    """``value`` for a message, cut to ``width`` characters (a value can be megabytes long).

    >>> _shown("9" * 40)
    "'99999999999999999999999... (42 characters)"
    """
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= width else f"{text[:width]}... ({len(text):,} characters)"


def parse_label_value(text: str) -> int:
    """A label value written as an integer: decimal, or hexadecimal/octal/binary with a
    ``0x``/``0o``/``0b`` prefix. Leading zeros are decimal (``07`` is 7, ``010`` is 10), as a
    spreadsheet writes them: never octal. ValueError (a readable message) for anything else or
    a value outside :data:`LABEL_MIN` .. :data:`LABEL_MAX`.

    >>> parse_label_value("07"), parse_label_value("-1"), parse_label_value("0xff")
    (7, -1, 255)
    >>> parse_label_value("4294967296")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    labelfix.labels.labelmap.OutOfRange: value 4294967296 is out of range (label values are ...)
    """
    body = text.strip()
    sign = -1 if body.startswith("-") else 1
    body = body[1:] if body[:1] in "+-" else body
    prefix = body[:2].lower()
    digits = _DIGITS.get(prefix)
    base = {"0x": 16, "0o": 8, "0b": 2}.get(prefix, 10)
    number = body[2:] if digits else body
    allowed = digits or "0123456789"
    if not number or any(c not in allowed for c in number.lower()):
        raise ValueError(f"expected an integer, got {_shown(text)}")
    if len(number.lstrip("0")) > 40:  # int() of thousands of digits is slow, and refused
        shown = f"{'-' * (sign < 0)}{number[:12]}... ({len(number):,} digits)"
        raise OutOfRange(
            f"value {shown} is out of range (label values are {LABEL_MIN}..{LABEL_MAX})"
        )
    value = sign * int(number, base)
    check_label_value(value)
    return value


def check_label_value(value: int) -> int:
    """``value``, or OutOfRange when it is outside :data:`LABEL_MIN` .. :data:`LABEL_MAX`."""
    if not LABEL_MIN <= value <= LABEL_MAX:
        raise OutOfRange(
            f"value {_shown(value, 40)} is out of range (label values are {LABEL_MIN}..{LABEL_MAX})"
        )
    return value


def parse_map_rule(text: str) -> tuple[int, int]:
    """``"7:0"`` -> ``(7, 0)``; ValueError with a readable message otherwise."""
    a, sep, b = text.partition(":")
    if not sep:
        raise ValueError(f"expected A:B (e.g. 7:0), got {_shown(text)}")
    try:
        return parse_label_value(a), parse_label_value(b)
    except ValueError as err:
        raise ValueError(f"{text}: {err}" if len(text) <= 40 else str(err)) from None


def _json_rules(path: str, text: str) -> list[tuple[object, object]]:
    try:  # pairs, not a dict: a key given twice must not silently keep its last value;
        # integers stay text, checked below (int() refuses thousands of digits)
        data = json.loads(text, object_pairs_hook=lambda pairs: pairs, parse_int=str)
    except json.JSONDecodeError as err:
        raise MappingError(f"{path}: invalid JSON ({err.msg} at line {err.lineno})") from None
    except RecursionError:
        raise MappingError(f"{path}: invalid map file (JSON nested too deeply)") from None
    if not isinstance(data, list) or not all(isinstance(p, tuple) for p in data):
        raise MappingError(f'{path}: expected a JSON object like {{"7": 0}}')
    return list(data)


def _is_label_value(text: str) -> bool:
    try:
        parse_label_value(text)
    except ValueError:
        return False
    return True


def _csv_rules(path: str, text: str) -> list[tuple[object, object]]:
    try:
        rows = [r for r in csv.reader(text.splitlines()) if r and not r[0].startswith("#")]
    except csv.Error as err:
        raise MappingError(f"{path}: not a CSV of from,to rows ({err})") from None
    if rows and not any(_is_label_value(cell) for cell in rows[0][:2]):
        rows = rows[1:]  # a header: from,to
    items = []
    for i, row in enumerate(rows, 1):
        if len(row) < 2:
            raise MappingError(f"{path}: row {i}: expected from,to, got {_shown(','.join(row))}")
        items.append((row[0], row[1]))
    return items


_JSON_KINDS = {list: "an array or object", float: "a fraction", bool: "true or false"}
_JSON_KINDS[type(None)] = "null"


def read_map_file(path: str | os.PathLike) -> tuple[tuple[int, int], ...]:
    """Rules from a JSON object (``{"7": 0, ...}``) or a CSV of ``from,to`` rows.

    Values are integers (leading zeros are decimal, see :func:`parse_label_value`) from
    :data:`LABEL_MIN` to :data:`LABEL_MAX`; the file is read by :func:`labelfix.io.fs.read_text`
    (UTF-8, or UTF-16 with a byte-order mark; no FIFOs or devices).
    """
    from labelfix.io import fs

    path = os.fspath(path)
    try:
        text = fs.read_text(path, what="map file")
    except fs.UnreadableText as err:
        raise MappingError(str(err)) from None
    if path.lower().endswith(".json") or text.lstrip().startswith("{"):
        items = _json_rules(path, text)
    else:
        items = _csv_rules(path, text)
    rules = []
    for a, b in items:
        if not isinstance(b, str):  # JSON integers arrive as text; an array can be huge
            kind = _JSON_KINDS.get(type(b), "not an integer")
            raise MappingError(f"{path}: the value of {_shown(a)} is {kind}, expected an integer")
        try:
            rules.append((parse_label_value(str(a)), parse_label_value(str(b))))
        except ValueError as err:
            raise MappingError(f"{path}: {err}") from None
    if not rules:
        raise MappingError(f"{path}: no mapping rules in it (expected JSON or from,to rows)")
    return tuple(rules)


# ----------------------------------------------------------------------------- value replacement


def replace_values(
    labels: np.ndarray, values: np.ndarray, outputs: np.ndarray, dtype: np.dtype | type
) -> np.ndarray:
    """``labels`` with each of ``values`` (sorted, every value present) replaced by the output
    at the same position, as ``dtype``: one lookup-table pass over the pixels.

    >>> replace_values(np.array([[3, 7]], np.uint8), np.array([3, 7]), np.array([0, -1]), "int8")
    array([[ 0, -1]], dtype=int8)
    """
    dtype = np.dtype(dtype)
    outputs = np.asarray(outputs)
    if labels.dtype in (np.uint8, np.uint16):
        lut = np.zeros(1 << (8 * labels.dtype.itemsize), dtype)
        lut[values] = outputs
        return np.take(lut, labels)
    lo, hi = int(values[0]), int(values[-1])
    if hi - lo < (1 << 20):
        lut = np.zeros(hi - lo + 1, dtype)
        lut[np.asarray(values, np.int64) - lo] = outputs
        return lut[(labels.astype(np.int64, copy=False) - lo)]
    return outputs.astype(dtype)[np.searchsorted(values, labels)]


def void_class_problem(void: int | None, num_classes: int | None) -> str | None:
    """What is wrong with ``void`` as the value void pixels become, when it is a class id
    (``0..num_classes-1``): they would train as that class. None when it is not.

    >>> void_class_problem(0, 21)
    'void pixels would become 0, which is a class id (num_classes 21: 0..20), so they would \
train as that class; choose another --out (e.g. -1 or 255)'
    """
    if void is None or num_classes is None or not 0 <= void < num_classes:
        return None
    return (
        f"void pixels would become {void}, which is a class id (num_classes {num_classes}: "
        f"0..{num_classes - 1}), so they would train as that class; choose another --out "
        f"(e.g. -1 or {255 if num_classes <= 255 else 65535})"
    )
