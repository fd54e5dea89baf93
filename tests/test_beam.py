"""``--runner beam`` on the DirectRunner: the same reports and records as the local runner; Beam's
options reach their runner; nothing is left in the system's temporary directory. (Beam's
DaskRunner on a real cluster: test_dask.py.)"""

from __future__ import annotations

import io
import json
import os
import tempfile
import uuid
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from labelfix.checks.stats import scan_dataset
from labelfix.cli import main
from labelfix.io.pairing import DatasetProblems
from labelfix.labels.labelmap import LabelMap
from labelfix.records.example import feature_key, parse_example
from labelfix.records.shards import shard_name
from labelfix.records.verify import verify_dataset
from labelfix.records.write import write_dataset

pytest.importorskip("apache_beam")
tf = pytest.importorskip("tensorflow")

from test_tfrecord import make_pairs, save_mask, voc_mask  # noqa: E402

from labelfix.engines.beam import (  # noqa: E402
    BeamEngine,
    runner_args,
    scan_dataset_beam,
    write_dataset_beam,
)

#: Beam's own flags for a test run: one in-process worker, nothing left to chance.
DIRECT = ("--runner=DirectRunner", "--direct_num_workers=1")


@pytest.fixture
def pairs(tmp_path: Path) -> tuple[Path, Path]:
    """12 image/mask pairs, VOC-style, classes 1..12 with a 255 border."""
    masks = {f"2007_{i:06d}": voc_mask(cls=1 + i) for i in range(12)}
    return make_pairs(tmp_path / "data", masks)


def write_local(images: Path, masks: Path, output: Path, **kwargs):
    kwargs.setdefault("num_classes", 21)
    kwargs.setdefault("label_map", LabelMap(ignore=(255,)))
    return write_dataset(images=images, masks=masks, output=output, jobs=1, **kwargs)


def write_beam(images: Path, masks: Path, output: Path, **kwargs):
    kwargs.setdefault("num_classes", 21)
    kwargs.setdefault("label_map", LabelMap(ignore=(255,)))
    return write_dataset_beam(
        images=images, masks=masks, output=output, pipeline_args=DIRECT, **kwargs
    )


def masks_by_id(result) -> dict[str, list]:
    """source_id -> decoded mask, over every record of every shard."""
    compression = "GZIP" if result.compression == "gzip" else ""
    found = {}
    for path in result.paths:
        for record in tf.data.TFRecordDataset(path, compression_type=compression):
            features = parse_example(record.numpy())
            png = features[feature_key("mask")][0]
            found[features[feature_key("source_id")][0].decode()] = np.asarray(
                Image.open(io.BytesIO(png))
            ).tolist()
    return found


def names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# ----------------------------------------------------------------------------- stats


@pytest.mark.parametrize("artifacts", [False, True])
def test_beam_stats_equal_local_stats(messy_masks: Path, clean_masks: Path, artifacts: bool):
    paths = [messy_masks, clean_masks]
    options = dict(ignore=(255,), num_classes=21, artifacts=artifacts)
    local = scan_dataset(paths, jobs=1, **options)
    beam = scan_dataset_beam(paths, pipeline_args=DIRECT, **options)
    assert beam.to_dict() == local.to_dict()
    assert beam.class_weights() == local.class_weights()
    assert beam.unreadable and beam.out_of_range  # the lists whose order had to be restored


def test_beam_stats_read_remote_paths(clean_masks: Path):
    pytest.importorskip("fsspec")
    from test_fs import upload

    from labelfix.io import fs

    root = f"memory://labelfix-{uuid.uuid4().hex[:8]}"
    upload(clean_masks, root)
    try:
        beam = scan_dataset_beam([root], ignore=(255,), num_classes=21, pipeline_args=DIRECT)
    finally:
        fs.rmtree(root)
    local = scan_dataset([clean_masks], ignore=(255,), num_classes=21, jobs=1)
    assert beam.to_dict() == local.to_dict()


def test_cli_stats_beam_json_equals_local(messy_masks: Path):
    args = ["stats", str(messy_masks), "--ignore", "255", "-n", "21", "--json"]
    local = CliRunner().invoke(main, [*args, "-j", "1"])
    beam = CliRunner().invoke(main, [*args, "--runner", "beam", "--", *DIRECT])
    assert beam.exit_code == local.exit_code == 1  # messy_masks has unreadable files
    assert json.loads(beam.stdout) == json.loads(local.stdout)
    assert beam.stderr == local.stderr


def test_cli_runner_options_need_a_runner_that_takes_them(clean_masks: Path, tmp_path: Path):
    result = CliRunner().invoke(main, ["stats", str(clean_masks), "--", "--runner=DirectRunner"])
    assert result.exit_code == 2
    assert (
        "runner options after -- (--runner=DirectRunner) need --runner beam or --runner dask"
        in result.output
    )
    result = CliRunner().invoke(
        main, ["stats", str(clean_masks), "--runner", "beam", "--per-image", "x.csv"]
    )
    assert result.exit_code == 2 and "--per-image needs --runner local" in result.output
    assert "[-- RUNNER_OPTION...]" in CliRunner().invoke(main, ["to-tfrecord", "--help"]).output


def test_runner_options_reach_the_runner_whose_module_defines_them(caplog):
    """Issue 26: ``--dask_client_address`` was discarded ("Discarding unparseable args"): the
    DaskRunner's options exist only once its module is imported."""
    address = "tcp://127.0.0.1:8786"
    args = runner_args(["--runner=DaskRunner", f"--dask_client_address={address}"])
    assert args == ["--runner=apache_beam.runners.dask.dask_runner.DaskRunner",
                    f"--dask_client_address={address}"]  # fmt: skip
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.runners.dask.dask_runner import DaskOptions

    with caplog.at_level("WARNING"):
        options = PipelineOptions(args).get_all_options()
    assert options["address"] == address
    assert PipelineOptions(args).view_as(DaskOptions).get_all_options()["address"] == address
    assert "Discarding" not in caplog.text
    assert runner_args(["--runner", "direct", "--direct_num_workers=2"]) == [
        "--runner=apache_beam.runners.direct.direct_runner.DirectRunner",
        "--direct_num_workers=2",
    ]


def test_unknown_runner_options_are_one_line_usage_errors(clean_masks: Path):
    cases = {
        ("--runner=DaskRunner", "--dask_client_adress=tcp://x:1"): (
            "unknown Beam pipeline option --dask_client_adress=tcp://x:1 (not an option of Beam "
            "or of DaskRunner)"
        ),
        ("--runner=NoSuchRunner",): "--runner=NoSuchRunner: not a Beam runner (known: ",
        ("--direct_num_workers=two",): (
            "Beam pipeline options: argument --direct_num_workers: invalid int value: 'two'"
        ),
    }
    for extra, message in cases.items():
        result = CliRunner().invoke(
            main, ["stats", str(clean_masks), "--runner", "beam", "--", *extra]
        )
        assert result.exit_code == 2, (extra, result.output)
        errors = [line for line in result.stderr.splitlines() if "error" in line]
        assert errors == [f"labelfix: error: {message}"] or errors[0].startswith(
            f"labelfix: error: {message}"
        ), (extra, result.stderr)


def test_a_failing_pipeline_is_one_line_naming_the_runner():
    import functools
    import operator

    from labelfix.errors import LabelfixError
    from labelfix.io.door import Door, Rules

    engine = BeamEngine(DIRECT)
    with Door(Rules.of("stats")) as door, engine.session(door):
        assert engine.map(functools.partial(operator.truediv, 6), [1, 2], what="dividing") == [
            6.0,
            3.0,
        ]
        with pytest.raises(LabelfixError) as err:
            engine.map(functools.partial(operator.truediv, 6), [1, 0], what="dividing")
    message = str(err.value)
    assert message.startswith("dividing failed on Beam's DirectRunner: ZeroDivisionError: ")
    assert "\n" not in message


def test_beam_runs_leave_nothing_in_the_temporary_directory(
    pairs, messy_masks: Path, tmp_path: Path, monkeypatch
):
    """Issue 26: every Beam run left an empty ``beam-temp*`` directory (the DirectRunner's try
    at starting its Prism job server), plus ``tmp*`` and ``beam-requirements-cache`` ones, in
    the system's temporary directory."""
    system_tmp = tmp_path / "system-tmp"
    system_tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(system_tmp))
    monkeypatch.setattr(tempfile, "tempdir", str(system_tmp))
    images, masks = pairs
    stats = CliRunner().invoke(
        main, ["stats", str(messy_masks), "--runner", "beam", "--", "--runner=DirectRunner"]
    )
    assert stats.exit_code == 1 and "Scanned 9 files" in stats.stdout
    args = ["to-tfrecord", "--images", str(images), "--masks", str(masks), "-n", "21"]
    written = CliRunner().invoke(
        main, [*args, "--ignore", "255", "-o", str(tmp_path / "tfr"), "--runner", "beam"]
    )
    assert written.exit_code == 0, written.output
    assert os.listdir(system_tmp) == []
    assert tempfile.gettempdir() == str(system_tmp)  # put back after the runs


# ----------------------------------------------------------------------------- to-tfrecord


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_beam_records_decode_to_the_local_masks(pairs, tmp_path: Path, compression: str):
    images, masks = pairs
    local = write_local(images, masks, tmp_path / "local", num_shards=3, compression=compression)
    beam = write_beam(images, masks, tmp_path / "beam", num_shards=3, compression=compression)
    assert [s.file for s in beam.shards] == [shard_name("train", i, 3) for i in range(3)]
    assert names(tmp_path / "beam") == names(tmp_path / "local")  # no staging directory left
    assert masks_by_id(beam) == masks_by_id(local)
    assert sum(s.records for s in beam.shards) == 12
    assert beam.shards == local.shards  # byte for byte: the same records in the same order
    manifests = [
        json.loads((tmp_path / d / "train.labelfix.json").read_text()) for d in ("local", "beam")
    ]
    assert manifests[0] == manifests[1]
    assert verify_dataset(tmp_path / "beam", jobs=1).problems == ()
    assert beam.to_dict() | {"output": "", "manifest": ""} == local.to_dict() | {
        "output": "",
        "manifest": "",
    }


def test_beam_cuts_the_shards_as_the_local_runner(pairs, tmp_path: Path):
    """More shards than records (empty ones keep the -of-N names true), and --shard-size: the
    local runner's cut, not an estimate from the file sizes."""
    images, masks = pairs
    beam = write_beam(images, masks, tmp_path / "many", num_shards=15, split="val")
    local = write_local(images, masks, tmp_path / "many-local", num_shards=15, split="val")
    assert [s.file for s in beam.shards] == [shard_name("val", i, 15) for i in range(15)]
    assert [s.records for s in beam.shards] == [1, 1, 1, 1, 0, 1, 1, 1, 1, 0, 1, 1, 1, 1, 0]
    assert beam.shards == local.shards
    one_pair = (images / "2007_000000.jpg").stat().st_size + (
        masks / "2007_000000.png"
    ).stat().st_size
    beam = write_beam(images, masks, tmp_path / "sized", shard_size=one_pair * 4)
    local = write_local(images, masks, tmp_path / "sized-local", shard_size=one_pair * 4)
    assert len(beam.shards) > 2 and beam.shards == local.shards


def test_beam_bad_mask_fails_with_the_local_report(pairs, tmp_path: Path):
    images, masks = pairs
    out = tmp_path / "tfr"
    write_beam(images, masks, out, num_shards=2)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    for name, value in (("2007_000003.png", 37), ("2007_000008.png", 40)):
        bad = voc_mask(cls=4)
        bad[0, 7] = value
        save_mask(masks / name, bad)
    with pytest.raises(DatasetProblems) as local:
        write_local(images, masks, tmp_path / "local")
    with pytest.raises(DatasetProblems) as beam:
        write_beam(images, masks, out, num_shards=2)
    assert str(beam.value) == str(local.value)
    assert beam.value.problems == local.value.problems
    assert len(beam.value.problems) == 2 and "value 37 is not a class id" in beam.value.problems[0]
    # the earlier dataset is untouched, and no staging directory is left
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_cli_to_tfrecord_beam_same_exit_and_message(pairs, tmp_path: Path):
    images, masks = pairs
    args = ["to-tfrecord", "--images", str(images), "--masks", str(masks), "-n", "21"]
    args += ["--ignore", "255", "--num-shards", "2"]
    beam_args = ["--runner", "beam", "--", *DIRECT]
    ok = CliRunner().invoke(main, [*args, "-o", str(tmp_path / "b"), *beam_args])
    assert ok.exit_code == 0, ok.output
    assert "Wrote 12 records" in ok.stdout and "in 2 shard(s)" in ok.stdout
    bad = voc_mask()
    bad[2, 3] = 99
    save_mask(masks / "2007_000005.png", bad)
    local = CliRunner().invoke(main, [*args, "-o", str(tmp_path / "l"), "-j", "1"])
    beam = CliRunner().invoke(main, [*args, "-o", str(tmp_path / "b"), *beam_args])
    assert beam.exit_code == local.exit_code == 1
    assert beam.stderr == local.stderr
    assert "value 99 is not a class id" in beam.stderr
