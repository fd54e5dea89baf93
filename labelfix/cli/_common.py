"""Terminal plumbing shared by the commands: errors to one line, progress bars, tables."""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Callable, Iterator, Sequence

import click

from labelfix.errors import LabelfixError, MissingExtra, UsageError

#: Progress bars appear only for runs of at least this many files.
PROGRESS_MIN_FILES = 20


def fail(message: str, code: int = 1) -> None:
    """Print ``labelfix: error: message`` on stderr and exit with ``code``."""
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
            click.echo("labelfix: interrupted", err=True)
            sys.exit(130)

    return wrapper


@contextlib.contextmanager
def progress(label: str, *, enabled: bool = True) -> Iterator[Callable[[int], None]]:
    """A stderr progress bar of unknown length that turns itself off when stderr is no TTY.

    Yields ``advance(n)``.
    """
    stream = sys.stderr
    if not enabled or not stream.isatty():
        yield lambda n=1: None
        return
    state = {"n": 0}

    def advance(n: int = 1) -> None:
        state["n"] += n
        if state["n"] % 10 == 0:
            stream.write(f"\r{label}: {state['n']} files")
            stream.flush()

    try:
        yield advance
    finally:
        stream.write(f"\r{label}: {state['n']} files\n")
        stream.flush()


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
