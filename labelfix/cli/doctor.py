"""``labelfix doctor``: what convention a dataset follows, and the commands to run next."""

from __future__ import annotations

import json
import shlex

import click

from labelfix.cli import options
from labelfix.cli._common import handle_errors, progress


@click.command()
@click.argument("root", type=click.Path(exists=True, file_okay=False), metavar="ROOT")
@click.option(
    "--sample",
    type=click.IntRange(min=1),
    default=200,
    show_default=True,
    metavar="N",
    help="Read at most N masks, spread over the dataset (every pair is still checked by name).",
)
@click.option(
    "--output",
    "-o",
    default="records",
    show_default=True,
    metavar="DIR",
    help="Where the printed to-tfrecord commands write the records.",
)
@click.option(
    "--model",
    default="model",
    show_default=True,
    metavar="DIR",
    help="Where the printed train command writes the model.",
)
@options.jobs_option
@options.json_option
@handle_errors
def doctor(root, sample, output, model, jobs, as_json):
    """Look at a dataset folder: say what convention it follows, and print the commands.

    Finds the masks and images under ROOT (VOC, Cityscapes, ADE20K, mmsegmentation, labelme,
    images/ beside masks/), pairs them, reads a sample of the masks, and concludes, each
    conclusion with its evidence and how sure it is (high, medium, low): the void value, the
    number of classes and their names, the storage, palettes and colormaps, lossy masks; then
    the problems (unpaired files, size mismatches, EXIF-rotated images, mixed conventions) and
    the commands to run next, every option filled in. Where the data cannot decide (a 255
    that might be a class), it says so and prints the commands of both readings. Reads only.

    \b
    labelfix doctor VOCdevkit/VOC2012
    labelfix doctor cityscapes/ --json
    """
    from labelfix.doctor import diagnose

    with progress("doctor", total=None, unit="masks") as advance:
        report = diagnose(
            root,
            sample=sample,
            output=output,
            model=model,
            jobs=jobs,
            on_mask=lambda facts: advance(1),
        )
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
        return
    click.echo(render(report))


def render(report) -> str:
    """The report as text: the dataset, conclusions, problems, commands (quoted for a shell)."""
    splits = ", ".join(f"{s.name} {s.pairs}" for s in report.splits)
    pairs = sum(s.pairs for s in report.splits)
    lines = [
        f"Dataset {report.root}: {pairs} pair(s) in {len(report.splits)} split(s)"
        + (f" ({splits})" if splits else ""),
        "",
        "Conclusions (how sure):",
    ]
    width = max((len(c.topic) for c in report.conclusions), default=0)
    for c in report.conclusions:
        lines.append(f"  {c.topic.ljust(width)}  [{c.confidence}]  {c.text}")
        lines.extend(f"  {' ' * width}      - {e}" for e in c.evidence)
    if report.problems:
        lines += ["", "Problems:"]
        lines.extend(f"  - {p.message}" for p in report.problems)
    lines.append("")
    if not report.command_sets:
        lines.append("No commands: nothing to write until the problems above are fixed.")
    elif len(report.command_sets) == 1:
        lines.append("Commands to run next:")
        lines.extend(_commands(report.command_sets[0].commands))
    else:
        lines.append("The data cannot decide; the commands of each reading:")
        for s in report.command_sets:
            lines += ["", f"If {s.assumption}:"]
            lines.extend(_commands(s.commands))
    if report.notes:
        lines.append("")
        lines.extend(f"Note: {n}" for n in report.notes)
    return "\n".join(lines)


def _commands(commands) -> list[str]:
    return [f"  $ {shlex.join(c)}" for c in commands]
