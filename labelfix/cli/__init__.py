"""The ``labelfix`` command line: a click group whose commands live one per module.

Commands are imported only when they run (or when ``--help`` lists them), and none of the
modules imports TensorFlow at import time, so ``labelfix --help`` starts fast.
"""

from __future__ import annotations

import importlib
import logging

import click

from labelfix._version import __version__
from labelfix.cli._common import interrupted, quiet_tensorflow

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
        """Record the command line (for the marks an in-place run leaves), then run it."""
        import sys

        from labelfix.io.marks import set_command_line

        set_command_line(list(args) if args is not None else sys.argv[1:])
        return super().main(args, *rest, **kwargs)

    def invoke(self, ctx: click.Context):
        """Ctrl-C while a command is still being set up (imports) exits 130 like one during
        its run, not with click's "Aborted!" and exit 1 (a data problem's code)."""
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
