"""``labelfix verify``: read TFRecords back and check them, against their manifest when there is
one."""

from __future__ import annotations

import json

import click

from labelfix.cli import options
from labelfix.cli._common import handle_errors, progress


@click.command()
@options.storage_paths_argument
@click.option(
    "--split",
    default=None,
    metavar="NAME",
    help="Split to check (default: train; for shard files, the split their names say).",
)
@options.num_classes_option()
@options.ignore_option
@options.record_key_options
@options.jobs_option
@options.json_option
@handle_errors
def verify(paths, split, num_classes, ignore, jobs, as_json, **record_keys):
    """Decode every record and check it: against the manifest of a to-tfrecord output, or, for
    other tools' shards, on its own.

    With a manifest: record counts, sizes and sha256 checksums of every shard, every image
    header, and every mask value against num_classes and the stored ignore value. Shard files
    of an output are checked against their own entries. Without one (DeepLab's or Model
    Garden's records, files, globs or a directory): framing and CRCs, every Example, image and
    mask, masks TensorFlow's decoders would misread, and with -n every value. Exit 0 when
    clean, 1 with one line per problem (naming shard and record) otherwise.

    \b
    labelfix verify tfrecords/ --split val
    labelfix verify tfrecords/val-00000-of-00004.tfrecord
    labelfix verify deeplab/tfrecord/ -n 21 --ignore 255
    """
    from labelfix.records.foreign_checks import verify_records, verify_target
    from labelfix.records.manifest import read_manifest
    from labelfix.records.verify import verify_dataset

    target = verify_target(paths, split)
    if target.directory is not None:
        given = [o for o, v in (("--num-classes", num_classes), ("--ignore", ignore)) if v]
        given += [f"--{k.replace('_', '-')}" for k, v in record_keys.items() if v]
        if given:
            raise click.UsageError(
                f"{given[0]}: a labelfix output's manifest says how to read its records"
            )
        manifest = read_manifest(target.directory, target.split)
        listed = [
            s for s in manifest["shards"] if target.shards is None or s["file"] in target.shards
        ]
        total = sum(s["records"] for s in listed)
        with progress("verify", total=total, unit="records") as advance:
            result = verify_dataset(
                target.directory,
                split=target.split,
                jobs=jobs,
                on_record=advance,
                shards=target.shards,
            )
    else:
        with progress("verify", unit="records") as advance:
            result = verify_records(
                target.records,
                keys=options.record_keys(**record_keys),
                num_classes=num_classes,
                ignore=ignore,
                jobs=jobs,
                on_record=lambda found, problems: advance(1),
            )
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
        against = "" if result.manifest is not None else " (no manifest)"
        click.echo(
            f"{verdict}: {result.shards} shard(s), {result.records} record(s), "
            f"{len(result.problems)} problem(s){against}"
        )
    if not result.ok:
        raise SystemExit(1)
