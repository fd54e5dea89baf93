"""The ``labelfix`` command line: a click group whose commands live one per module.

Commands are imported only when they run (or when ``--help`` lists them), and none of the
modules imports TensorFlow at import time, so ``labelfix --help`` starts fast.
"""

from __future__ import annotations

# The C module under ``signal``: ``import signal`` builds its enums (milliseconds), a window
# in which Ctrl-C would still meet no handler of labelfix's.
import _signal
import contextlib
import os


def _interrupted_while_starting(signum, frame) -> None:
    """Ctrl-C before a command runs: nothing is written yet, so exit at once (130) with the
    line a command's Ctrl-C prints. A KeyboardInterrupt here came out of an import as a
    traceback, or was swallowed by a library's bare ``except:`` (TensorFlow's)."""
    os.write(2, b"labelfix: interrupted\n")
    os._exit(130)


def _hold_ctrl_c() -> None:
    """Let Ctrl-C end the start-up at once (see :func:`_interrupted_while_starting`), when the
    handler is Python's default (not a caller's) and this is the main thread."""
    if _signal.getsignal(_signal.SIGINT) is _signal.default_int_handler:
        with contextlib.suppress(ValueError):  # not the main thread
            _signal.signal(_signal.SIGINT, _interrupted_while_starting)


def _release_ctrl_c() -> None:
    """Ctrl-C raises KeyboardInterrupt again (commands end their work cleanly on it)."""
    if _signal.getsignal(_signal.SIGINT) is _interrupted_while_starting:
        _signal.signal(_signal.SIGINT, _signal.default_int_handler)


_hold_ctrl_c()  # first, before the imports below (click, labelfix's modules: tens of ms)

import importlib  # noqa: E402
import logging  # noqa: E402

import click  # noqa: E402

from labelfix._version import __version__  # noqa: E402
from labelfix.cli import _common  # noqa: E402
from labelfix.cli._common import (  # noqa: E402
    guard_standard_streams,
    interrupted,
    quiet_tensorflow,
)

# command name -> "module:function"; each module imports TensorFlow only inside its function.
COMMANDS: dict[str, str] = {
    "doctor": "labelfix.cli.doctor:doctor",
    "stats": "labelfix.cli.stats:stats",
    "show": "labelfix.cli.show:show",
    "validate": "labelfix.cli.validate:validate",
    "remap": "labelfix.cli.remap:remap",
    "repair": "labelfix.cli.repair:repair",
    "to-tfrecord": "labelfix.cli.to_tfrecord:to_tfrecord",
    "verify": "labelfix.cli.verify:verify",
    "train": "labelfix.cli.train:train",
    "evaluate": "labelfix.cli.evaluate:evaluate",
    "predict": "labelfix.cli.predict:predict",
}


class LazyGroup(click.Group):
    """A group that imports a command's module only when the command is needed."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, _, attr = target.partition(":")
        return getattr(importlib.import_module(module), attr)

    def main(self, args=None, *rest, **kwargs):
        """Run the command line; output to a closed pipe never stops the work
        (:func:`~labelfix.cli._common.guard_standard_streams`). Ctrl-C while the arguments are
        parsed exits 130 at once (click would say "Aborted!" and exit 1). The command line is
        recorded for the marks an in-place run leaves."""
        import sys

        from labelfix.io.marks import set_command_line

        set_command_line(list(args) if args is not None else sys.argv[1:])
        guard_standard_streams()
        _common._said_interrupted = False  # a new run (CliRunner runs many in one process)
        _hold_ctrl_c()
        try:
            return super().main(args, *rest, **kwargs)
        finally:
            _release_ctrl_c()

    def invoke(self, ctx: click.Context):
        """Ctrl-C while a command is still being set up (imports) exits 130 like one during
        its run, not with click's "Aborted!" and exit 1 (a data problem's code)."""
        _release_ctrl_c()
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            interrupted()


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="labelfix")
@click.option("-v", "--verbose", count=True, help="More log output on stderr (repeatable).")
@click.option("-q", "--quiet", count=True, help="Less log output on stderr (repeatable).")
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Progress bars on stderr (default: only when stderr is a terminal).",
)
@click.pass_context
def main(ctx: click.Context, verbose: int, quiet: int, progress: bool | None) -> None:
    """Find and fix the label-mask problems that make segmentation training go wrong silently.

    \b
    labelfix doctor dataset/
    labelfix stats masks/ --ignore 255
    labelfix validate masks/ --num-classes 21 --ignore 255
    labelfix remap --ignore 255 --out -1 masks/
    """
    if verbose < 1:
        quiet_tensorflow()
    level = logging.WARNING - 10 * (verbose - quiet)
    logging.basicConfig(level=max(logging.DEBUG, level), format="labelfix: %(message)s")
    ctx.ensure_object(dict)
    ctx.obj["verbosity"] = verbose - quiet
    ctx.obj["progress"] = progress


_release_ctrl_c()  # importing labelfix.cli (a test, a script) leaves Ctrl-C as it was
