"""labelfix verify: every record read back and checked against the manifest."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from test_tfrecord import make_pairs, read_records, voc_mask, write

from labelfix.cli import main
from labelfix.io.png import encode_png
from labelfix.records.example import parse_example, serialize_example
from labelfix.records.verify import verify_dataset

tf = pytest.importorskip("tensorflow")


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    masks = {f"{i:03d}": voc_mask(cls=1 + i) for i in range(6)}
    images, mask_dir = make_pairs(tmp_path, masks)
    write(images, mask_dir, tmp_path / "tfr", num_shards=2)
    return tmp_path / "tfr"


def verify(*args: str):
    return CliRunner().invoke(main, ["verify", *args])


def edit_manifest(directory: Path, change) -> None:
    path = directory / "train.labelfix.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def test_clean_dataset_exit_0(dataset: Path):
    result = verify(str(dataset))
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "OK: 2 shard(s), 6 record(s), 0 problem(s)"


def test_corrupted_shard_is_caught_naming_shard_and_record(dataset: Path):
    shard = dataset / "train-00000-of-00002.tfrecord"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    result = verify(str(dataset))
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert any(
        line.startswith(f"{dataset}/train-00000-of-00002.tfrecord: record 1: unreadable (")
        for line in lines
    ), lines
    assert any(
        "sha256" in line and line.startswith(f"{dataset}/train-00000-of-00002.tfrecord: ")
        for line in lines
    )
    assert lines[-1].startswith("FAILED: 2 shard(s)")


def test_manifest_that_lies_about_counts(dataset: Path):
    def lie(manifest):
        manifest["shards"][1]["records"] += 1
        manifest["num_records"] += 1

    edit_manifest(dataset, lie)
    result = verify(str(dataset))
    assert result.exit_code == 1
    assert (
        f"{dataset}/train-00001-of-00002.tfrecord: the manifest says 4 records, the shard holds 3"
        in result.stdout
    )
    assert "the manifest says 7 records, the shards hold 6" in result.stdout


def test_bad_mask_value_inside_a_record(dataset: Path):
    shard = dataset / "train-00000-of-00002.tfrecord"
    records = read_records(shard)
    features = {k: v[0] for k, v in parse_example(records[0]).items()}
    bad = voc_mask(cls=1)
    bad[0, 3] = 37
    features["image/segmentation/class/encoded"] = encode_png(bad)
    records[0] = serialize_example(features)
    with tf.io.TFRecordWriter(str(shard)) as writer:
        for record in records:
            writer.write(record)
    result = verify_dataset(dataset)
    assert not result.ok
    assert result.problems[0] == (
        f"{dataset}/train-00000-of-00002.tfrecord: record 0 (000): value 37 is not a class id "
        "(expected 0..20 or ignore 255): 1 px, first at y=0 x=3"
    )
    assert any("sha256" in p for p in result.problems)
    assert any("class_pixel_counts disagree" in p for p in result.problems)


def test_missing_and_extra_shards_named_with_their_directory(dataset: Path):
    """Regression (a hostile-user pass): problem lines named shards without their directory,
    so with several datasets open nobody could tell which one was damaged."""
    (dataset / "train-00001-of-00002.tfrecord").rename(dataset / "train-00005-of-00009.tfrecord")
    result = verify_dataset(dataset)
    assert f"{dataset}/train-00001-of-00002.tfrecord: shard listed in the manifest is missing" in (
        result.problems
    )
    assert any(
        p.startswith(f"{dataset}/train-00005-of-00009.tfrecord: shard not in the manifest")
        for p in result.problems
    )


def test_gzip_raw_and_parallel_datasets_verify_clean(tmp_path: Path):
    masks = {f"{i:03d}": voc_mask(cls=i % 21) for i in range(20)}
    images, mask_dir = make_pairs(tmp_path, masks)
    write(images, mask_dir, tmp_path / "gz", compression="gzip", mask_encoding="raw")
    assert verify_dataset(tmp_path / "gz", jobs=2).ok
    shard = tmp_path / "gz" / "train-00000-of-00001.tfrecord"
    data = bytearray(shard.read_bytes())
    data[200] ^= 0x55
    shard.write_bytes(bytes(data))
    problems = verify_dataset(tmp_path / "gz", jobs=1).problems
    assert any("unreadable" in p for p in problems)
    assert np.any(["sha256" in p for p in problems])


def test_missing_manifest_exit_1(tmp_path: Path):
    result = verify(str(tmp_path), "--split", "val")
    assert result.exit_code == 1
    assert "no manifest for split 'val'" in result.stderr
    assert "Traceback" not in result.output
