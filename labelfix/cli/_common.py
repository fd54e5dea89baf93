"""Terminal plumbing shared by the commands: errors to one line, progress bars, tables."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import NoReturn

import click

from labelfix._imports import around_import
from labelfix.errors import LabelfixError, MissingExtra, UsageError

#: Progress bars appear only for runs of at least this many files.
PROGRESS_MIN_FILES = 20


def fail(message: str, code: int = 1, *, problems: Sequence[str] | None = None) -> None:
    """Print ``labelfix: error: message`` on stderr and exit with ``code``.

    Under ``--json`` the failure is also a JSON document on stdout, so scripts that parse the
    output always get one: ``{"ok": false, "error": message, "problems": [...]}``.
    """
    ctx = click.get_current_context(silent=True)
    if ctx is not None and ctx.params.get("as_json"):
        lines = list(problems) if problems else [message]
        document = {"ok": False, "error": message, "exit_code": code, "problems": lines}
        click.echo(json.dumps(document, indent=2))
    click.echo(f"labelfix: error: {message}", err=True)
    sys.exit(code)


def handle_errors(func: Callable) -> Callable:
    """Turn library errors, I/O errors and Ctrl-C into one line on stderr and an exit code."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except MissingExtra as err:
            fail(str(err), 1)
        except UsageError as err:
            fail(str(err), 2)
        except LabelfixError as err:
            fail(str(err), 1)
        except OSError as err:
            where = f"{err.filename}: " if getattr(err, "filename", None) else ""
            fail(f"{where}{err.strerror or err}", 1)
        except KeyboardInterrupt:
            interrupted()

    return wrapper


def interrupted() -> NoReturn:
    """Ctrl-C: end the worker processes now (waiting for them at exit could last forever when
    it came while they were starting, see :func:`labelfix.parallel.stop_workers`), exit 130."""
    click.echo("labelfix: interrupted", err=True)
    parallel = sys.modules.get("labelfix.parallel")  # none to stop if it was never imported
    if parallel is not None:
        parallel.stop_workers()
    sys.exit(130)


class Bar:
    """A one-line stderr progress bar: done/total, a bar, rate and ETA (a counter when the total
    is unknown). Redrawn at most ten times a second; ``close`` ends the line.

    ``bar(n)`` counts ``n`` more units; ``bar(0, total=N)`` sets the total once it is known.
    """

    def __init__(self, label: str, *, unit: str = "files", total: int | None = None, stream=None):
        self.label, self.unit, self.total = label, unit, total
        self.stream = stream if stream is not None else sys.stderr
        self.done = 0
        self.started = time.monotonic()
        self.drawn = 0.0

    def __call__(self, n: int = 1, *, total: int | None = None) -> None:
        if total is not None:
            self.total = total
        self.done += n
        now = time.monotonic()
        if now - self.drawn >= 0.1 or (self.total is not None and self.done >= self.total):
            self.drawn = now
            self.stream.write("\r" + self.line(now) + "\x1b[K")
            self.stream.flush()

    def line(self, now: float) -> str:
        elapsed = max(now - self.started, 1e-9)
        rate = self.done / elapsed
        text = f"{self.label}: {self.done:,}"
        if self.total:
            filled = int(24 * min(self.done / self.total, 1.0))
            left = (self.total - self.done) / rate if rate > 0 else 0.0
            text += f"/{self.total:,} {self.unit} [{'#' * filled}{'.' * (24 - filled)}]"
            text += f" {rate:,.1f}/s ETA {_clock(left)}"
        else:
            text += f" {self.unit}, {rate:,.1f}/s, {_clock(elapsed)}"
        return text

    def close(self) -> None:
        if self.done or self.total:
            self.stream.write("\r" + self.line(time.monotonic()) + "\x1b[K\n")
            self.stream.flush()


def _clock(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 60}:{seconds % 60:02d}" if seconds < 3600 else f"{seconds // 3600}h"


def _nothing(n: int = 1, *, total: int | None = None) -> None:
    return None


def show_progress(enabled: bool = True) -> bool:
    """Progress bars are drawn on a terminal, or when ``labelfix --progress`` forces them
    (``--no-progress`` turns them off)."""
    ctx = click.get_current_context(silent=True)
    forced = (ctx.find_root().obj or {}).get("progress") if ctx is not None else None
    if not enabled or forced is False:
        return False
    return bool(forced) or sys.stderr.isatty()


@contextlib.contextmanager
def progress(
    label: str, *, enabled: bool = True, total: int | None = None, unit: str = "files"
) -> Iterator[Callable[..., None]]:
    """Yield ``advance(n=1, *, total=None)``: a :class:`Bar` on stderr, or nothing.

    >>> with progress("stats", enabled=False) as advance:
    ...     advance(3)
    """
    if not show_progress(enabled):
        yield _nothing
        return
    bar = Bar(label, unit=unit, total=total)
    try:
        yield bar
    finally:
        bar.close()


def count_masks(paths, glob: str | None = None) -> int | None:
    """How many masks a run will read (for the bar's total), when a bar is shown."""
    if not show_progress():
        return None
    from labelfix.io.masks import iter_mask_files

    return sum(1 for _ in iter_mask_files(list(paths), glob=glob))


def plural(count: int, noun: str, plural_form: str | None = None) -> str:
    """``1 file``, ``2 files``, ``1,024 records``.

    >>> plural(1, "file"), plural(3, "image"), plural(2, "mask", "masks")
    ('1 file', '3 images', '2 masks')
    """
    return f"{count:,} {noun if count == 1 else plural_form or noun + 's'}"


def no_masks(paths, glob: str | None = None) -> str:
    """``no mask files (*.png, *.npy) under masks/``: the error of a run that found nothing."""
    pattern = glob or "*.png, *.npy"
    return f"no mask files ({pattern}) under {', '.join(map(str, paths))}"


def table(rows: Sequence[Sequence[object]], header: Sequence[str], *, right: set[int]) -> str:
    """Format rows as an aligned plain-text table (columns in ``right`` right-aligned)."""
    cells = [[str(h) for h in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = []
    for row in cells:
        parts = [
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ]
        lines.append("  " + "  ".join(parts).rstrip())
    return "\n".join(lines)


def require_tensorflow(command: str) -> None:
    """Raise MissingExtra naming the extra to install when TensorFlow is not importable."""
    import importlib.util

    if importlib.util.find_spec("tensorflow") is None:
        raise MissingExtra(f"`labelfix {command}` needs TensorFlow: pip install 'labelfix[tf]'")


def _stderr_silenced(run, module) -> None:
    """Run ``import tensorflow`` with the process's stderr (fd 2) sent to /dev/null.

    TensorFlow's native libraries print start-up lines (oneDNN, CUDA probing, CPU features)
    before absl logging is set up, so ``TF_CPP_MIN_LOG_LEVEL`` cannot silence them; they are
    noise to our users. Python errors raised by the import still reach stderr: the descriptor
    is restored before they propagate.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        run(module)
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def quiet_tensorflow() -> None:
    """Keep TensorFlow's start-up and C++ log lines, its Python warnings (``tf.function``
    retracing notes, one per image size in ``predict``) and Keras' ``UserWarning``s off stderr:
    labelfix says what matters in its own lines (``-v`` shows them all)."""
    import logging
    import warnings

    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"  # also over the 1 that an importing parent set
    logging.getLogger("tensorflow").setLevel(logging.ERROR)  # TF keeps a level set before import
    warnings.filterwarnings("ignore", category=UserWarning, module=r"keras(\.|$)")
    around_import("tensorflow", _stderr_silenced)
