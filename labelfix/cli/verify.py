"""``labelfix verify``: read a TFRecord dataset back and check it against its manifest."""

from __future__ import annotations

import json

import click

from labelfix.cli import options
from labelfix.cli._common import handle_errors, progress


@click.command()
@click.argument("directory", type=click.Path(exists=True), metavar="DIR")
@click.option("--split", default="train", show_default=True, metavar="NAME", help="Split to check.")
@options.jobs_option
@options.json_option
@handle_errors
def verify(directory, split, jobs, as_json):
    """Decode every record of a to-tfrecord output and check it against the manifest.

    Checks record counts, sizes and sha256 checksums of every shard, every image header, and
    every mask value against num_classes and the stored ignore value. Exit 0 when clean, 1 with
    one line per problem (naming shard and record) otherwise.

    \b
    labelfix verify tfrecords/ --split val
    """
    from labelfix.records.manifest import read_manifest
    from labelfix.records.verify import verify_dataset

    total = read_manifest(directory, split).get("num_records")
    with progress("verify", total=total, unit="records") as advance:
        result = verify_dataset(directory, split=split, jobs=jobs, on_record=advance)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "ok": result.ok,
                    "manifest": result.manifest,
                    "shards": result.shards,
                    "records": result.records,
                    "problems": list(result.problems),
                },
                indent=2,
            )
        )
    else:
        for problem in result.problems:
            click.echo(problem)
        verdict = "OK" if result.ok else "FAILED"
        click.echo(
            f"{verdict}: {result.shards} shard(s), {result.records} record(s), "
            f"{len(result.problems)} problem(s)"
        )
    if not result.ok:
        raise SystemExit(1)
