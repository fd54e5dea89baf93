"""Terminal plumbing shared by the commands: errors to one line, progress bars, tables."""

from __future__ import annotations

import codecs
import contextlib
import functools
import io
import json
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import IO, NoReturn

import click

from labelfix._imports import around_import
from labelfix.errors import LabelfixError, MissingExtra, UsageError

#: Progress bars appear only for runs of at least this many files.
PROGRESS_MIN_FILES = 20


class _PipeEnd(io.RawIOBase):
    """Writes to a file descriptor that, once its reader has gone (EPIPE), drop what they are
    given instead of failing: the command goes on, silently."""

    def __init__(self, fd: int):
        super().__init__()
        self.fd = fd
        self.broken = False

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self.fd

    def isatty(self) -> bool:
        return os.isatty(self.fd)

    def write(self, data) -> int:
        if self.broken:
            return len(data)
        try:
            return os.write(self.fd, data)
        except BrokenPipeError:
            self.broken = True
            return len(data)


def _raw_writer(stream) -> _PipeEnd | None:
    """The :class:`_PipeEnd` under a stream :func:`guard_standard_streams` made, else None."""
    raw = getattr(getattr(stream, "buffer", None), "raw", None)
    return raw if isinstance(raw, _PipeEnd) else None


#: TensorFlow's own log lines (absl format); anything else native code prints while images are
#: decoded comes from libjpeg or libpng.
_TF_LOG_LINE = re.compile(r"^[IWEF]\d{4} ")


@contextlib.contextmanager
def decoder_messages(*, enabled: bool = True) -> Iterator[None]:
    """Collect what native code prints on stderr (file descriptor 2) while TensorFlow decodes
    images, and say it in one labelfix warning when the block ends.

    libjpeg and libpng print their complaints themselves, past TensorFlow's log level:
    ``Corrupt JPEG data: 216 extraneous bytes before marker 0xda``, ``Improper call to JPEG
    library in state 201``, stray lines among labelfix's. Python's own stderr (progress, errors)
    still goes straight to the terminal; TensorFlow's log lines are passed on when it ends.
    When the block fails, its error names the image and the messages are dropped. Off with
    ``enabled=False`` (``-v``), or where fd 2 cannot be moved (not the main thread).
    """
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield
        return
    import tempfile

    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    own = _raw_writer(sys.stderr)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        if own is not None:
            own.fd = saved  # labelfix's lines go to the terminal, not into the capture
        failed = False
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            sys.stderr.flush()
            if own is not None:
                own.fd = 2
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            if not failed:  # else the block's error says what went wrong, naming the image
                _report_decoder_messages(captured)


def verbosity() -> int:
    """``-v`` count less ``-q`` count of the running command line (0 outside one)."""
    ctx = click.get_current_context(silent=True)
    return int(((ctx.find_root().obj or {}) if ctx is not None else {}).get("verbosity", 0))


#: TensorFlow log lines passed on after a :func:`decoder_messages` block, at most.
MAX_PASSED_ON = 50


def _report_decoder_messages(captured: IO[bytes]) -> None:
    """Pass TensorFlow's log lines on, and count the rest into one warning (read line by
    line: a long training run may have collected many)."""
    count, first, passed = 0, None, 0
    for raw in captured:
        line = raw.decode("utf-8", "replace").rstrip()
        if not line.strip():
            continue
        if _TF_LOG_LINE.match(line):
            if passed < MAX_PASSED_ON:
                click.echo(line, err=True)
                passed += 1
            continue
        count += 1
        first = first or (line if len(line) <= 120 else line[:117] + "...")
    if count:
        click.echo(
            f"labelfix: warning: TensorFlow's image decoders printed {count} message(s) about "
            f"damaged image data, e.g. {first!r}: the images decoded, maybe not all of them as "
            "they should (-v shows each message as it comes)",
            err=True,
        )


def guard_standard_streams() -> None:
    """Make the process's stdout and stderr survive a reader that goes away, and print any
    file name.

    ``labelfix repair masks/ -o out | head -1`` closes stdout after one line; the next line
    raised BrokenPipeError and the command stopped after a few files ("Broken pipe", exit 1).
    Output written to a closed pipe is now dropped: the command finishes its work and exits
    with the status the work earns (0 when every file was written), as if the rest had been
    read. A file name that is not valid UTF-8 (held as surrogate escapes) is written to stdout
    as its own bytes, as ``ls`` does, instead of failing with UnicodeEncodeError; stderr
    already escapes it (``\\xff``). Streams replaced by a caller (CliRunner, pytest) are left
    alone.
    """
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is None or stream is not getattr(sys, f"__{name}__"):
            continue
        try:
            fd = stream.fileno()
            stream.flush()
        except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
            continue
        errors = stream.errors
        utf8 = codecs.lookup(stream.encoding).name == "utf-8"
        if name == "stdout" and errors == "strict" and utf8:
            errors = "surrogateescape"
        guarded = io.TextIOWrapper(
            io.BufferedWriter(_PipeEnd(fd)),
            encoding=stream.encoding,
            errors=errors,
            line_buffering=stream.line_buffering,
            write_through=getattr(stream, "write_through", False),
        )
        setattr(sys, name, guarded)


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


#: Whether :func:`interrupted` has said so already.
_said_interrupted = False


def interrupted() -> NoReturn:
    """Ctrl-C: end the worker processes now (waiting for them at exit could last forever when
    it came while they were starting, see :func:`labelfix.parallel.stop_workers`), exit 130.

    Said once: a second Ctrl-C while the first is handled (``timeout -s INT`` signals the
    process and its group: twice) ends up here again."""
    global _said_interrupted
    if not _said_interrupted:
        _said_interrupted = True
        click.echo("labelfix: interrupted", err=True)
    parallel = sys.modules.get("labelfix.parallel")  # none to stop if it was never imported
    if parallel is not None:
        parallel.stop_workers()
    sys.exit(130)


class Bar:
    """A one-line stderr progress bar: done/total, a bar, rate and ETA (a counter when the total
    is unknown). Redrawn at most ten times a second; ``close`` ends the line.

    ``bar(n)`` counts ``n`` more units; ``bar(0, total=N)`` sets the total once it is known;
    ``note`` (``"loss 0.4567"``) is shown after the ETA.

    >>> bar = Bar("epoch 1/2", unit="steps", total=10)
    >>> bar.done, bar.note = 5, "loss 0.5000"
    >>> bar.line(bar.started + 2.0)
    'epoch 1/2: 5/10 steps [############............] 2.5/s ETA 0:02 loss 0.5000'
    """

    def __init__(self, label: str, *, unit: str = "files", total: int | None = None, stream=None):
        self.label, self.unit, self.total = label, unit, total
        self.stream = stream if stream is not None else sys.stderr
        self.done = 0
        self.note = ""
        self.started = time.monotonic()
        self.drawn = 0.0

    def __call__(self, n: int = 1, *, total: int | None = None, note: str | None = None) -> None:
        if total is not None:
            self.total = total
        if note is not None:
            self.note = note
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
        return f"{text} {self.note}" if self.note else text

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


def records_input(paths, record_keys: dict) -> bool:
    """Whether a command's inputs are TFRecord shards (a usage error when only some are, or
    when a record key option, ``--mask-key`` ..., comes with mask files)."""
    from labelfix.records.foreign import looks_like_records

    if looks_like_records(paths):
        return True
    for option, value in record_keys.items():
        if value:
            raise click.UsageError(
                f"--{option.replace('_', '-')} reads TFRecords, but {', '.join(paths)} holds "
                "mask files"
            )
    if len(paths) > 1 and any(looks_like_records([p]) for p in paths):
        raise click.UsageError("give TFRecord shards or mask files, not both")
    return False


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
        with open(os.devnull, "w") as null, _ctrl_c_ends_the_import(saved):
            os.dup2(null.fileno(), 2)
            run(module)
    finally:
        os.dup2(saved, 2)
        os.close(saved)


@contextlib.contextmanager
def _ctrl_c_ends_the_import(stderr: int) -> Iterator[None]:
    """Ctrl-C during ``import tensorflow`` (seconds) ends the process at once, exit 130, with
    ``labelfix: interrupted`` on ``stderr`` (a descriptor). A KeyboardInterrupt raised inside
    the import was swallowed by a bare ``except:`` in one of its modules (the command then
    ran to its end), or left TensorFlow half-initialised and the process crashed at exit
    (SIGSEGV). The commands import it before writing anything, so nothing is left behind."""
    import signal

    def end(signum, frame) -> None:
        os.write(stderr, b"labelfix: interrupted\n")
        os._exit(130)

    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield  # a caller's handler (or not the main thread's turn): leave it
        return
    try:
        signal.signal(signal.SIGINT, end)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


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
