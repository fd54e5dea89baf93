"""What the engines share (labelfix/engines/common.py), run in this process: the DatasetStats
codec, the fold of batches, the shard cut and the assembly of shards from pieces. The same code
on a real cluster: test_dask.py; on Beam's DirectRunner: test_beam.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from labelfix.checks.stats import DatasetStats, scan_dataset
from labelfix.engines.common import (
    Engine,
    ScanBatch,
    batches,
    engine_for,
    fold_stats,
    scan_dataset_on,
    shard_jobs,
    write_dataset_on,
)
from labelfix.errors import UsageError
from labelfix.io.masks import iter_mask_files
from labelfix.labels.labelmap import LabelMap
from labelfix.records.spec import WriteSpec
from labelfix.records.write import write_dataset

from conftest import save_palette_png, save_png


class InProcess(Engine):
    """Runs each item here, last item first: the fold must not depend on the finishing order."""

    name = "this process"

    def map(self, func, items, *, what):
        results = [func(json.loads(json.dumps(item))) for item in reversed(items)]
        return [json.loads(json.dumps(r)) for r in reversed(results)]  # as JSON, as engines send


def test_stats_json_codec_round_trips_every_field(messy_masks: Path, clean_masks: Path):
    stats = scan_dataset([messy_masks, clean_masks], jobs=1, ignore=(255,), num_classes=21,
                         artifacts=True)  # fmt: skip
    assert stats.unreadable and stats.not_labels and stats.out_of_range and stats.values
    back = DatasetStats.from_json(json.loads(json.dumps(stats.to_json())))
    assert back == stats
    assert list(back.sizes) == list(stats.sizes)  # first-seen order, which to_dict's ties keep
    assert list(back.values) == list(stats.values)


@pytest.mark.parametrize("size", [1, 2, 3, 5, 100])
def test_batches_folded_in_order_are_the_local_report(
    messy_masks: Path, clean_masks: Path, size: int
):
    """Partial stats of consecutive files merged with DatasetStats.merge: the local report,
    its file lists in listing order, its sizes in first-seen order (to_dict's ties)."""
    paths = [messy_masks, clean_masks]
    options = dict(ignore=(255,), num_classes=21)
    local = scan_dataset(paths, jobs=1, **options)
    listed = [list(item) for item in iter_mask_files(paths)]
    scan = ScanBatch(base=str(Path.cwd()), ignore=(255,), num_classes=21)
    partials = [scan(batch) for batch in batches(listed, size)]
    assert fold_stats(partials, ignore=(255,), num_classes=21).to_dict() == local.to_dict()
    assert scan_dataset_on(InProcess(), paths, **options).to_dict() == local.to_dict()


def test_batches_cut_consecutive_items():
    assert batches(list("abcde"), 2) == [[0, ["a", "b"]], [1, ["c", "d"]], [2, ["e"]]]
    assert [len(items) for _, items in batches(list(range(1000)))] == [16] * 62 + [8]


def test_shard_jobs_take_whole_framed_records_from_the_pieces(tmp_path: Path):
    """Records of 10, 20 | 30 bytes in two pieces, two shards: shard 0 is piece 0's two records
    (26 + 36 framed bytes), shard 1 piece 1's one."""
    pieces = [{"piece": "p0", "lengths": [10, 20]}, {"piece": "p1", "lengths": [30]}]
    spec = WriteSpec(images=tmp_path, masks=tmp_path, output=tmp_path / "o", num_classes=2,
                     num_shards=2)  # fmt: skip
    assert shard_jobs(pieces, spec) == [
        {"file": "train-00000-of-00002.tfrecord", "records": 2, "ranges": [["p0", 0, 62]]},
        {"file": "train-00001-of-00002.tfrecord", "records": 1, "ranges": [["p1", 0, 46]]},
    ]


@pytest.mark.parametrize(
    "options",
    [
        {"num_shards": 4},
        {"num_shards": 4, "compression": "gzip"},
        {"shard_size": 1000},
        {"num_shards": 9, "shuffle": True},
    ],
)
def test_records_assembled_from_pieces_are_the_local_shards(
    tmp_path: Path, options: dict, monkeypatch
):
    rng = np.random.default_rng(0)
    for i in range(7):
        mask = np.zeros((6 + i, 8), np.uint8)
        mask[1:4, 1:4] = 255
        mask[2, 2] = 1 + i
        save_palette_png(tmp_path / "gt" / f"{i:03d}.png", mask)
        save_png(tmp_path / "img" / f"{i:03d}.png", rng.integers(0, 255, (6 + i, 8, 3), np.uint8))
    monkeypatch.chdir(tmp_path)
    spec = dict(images="img", masks="gt", num_classes=21, label_map=LabelMap(ignore=(255,)))
    local = write_dataset(output="local", jobs=1, **spec, **options)
    found = write_dataset_on(InProcess(), output="found", **spec, **options)
    assert found.shards == local.shards and len(local.shards) > 1
    for shard in local.shards:
        assert (tmp_path / "found" / shard.file).read_bytes() == (
            tmp_path / "local" / shard.file
        ).read_bytes()
    assert (tmp_path / "found" / "train.labelfix.json").read_text() == (
        tmp_path / "local" / "train.labelfix.json"
    ).read_text()
    assert sorted(p.name for p in (tmp_path / "found").iterdir()) == sorted(
        p.name for p in (tmp_path / "local").iterdir()
    )


def test_unknown_runner_is_a_usage_error():
    with pytest.raises(UsageError, match="unknown runner 'spark'"):
        engine_for("spark")
