"""labelfix.io.fs: one filesystem layer; remote paths tested on fsspec's in-memory filesystem."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from labelfix.checks.stats import scan_dataset
from labelfix.cli import main
from labelfix.errors import MissingExtra, UnreadableMask
from labelfix.io import fs
from labelfix.io.masks import iter_mask_files, read_mask

from conftest import save_palette_png, save_png, voc_mask

fsspec = pytest.importorskip("fsspec")


@pytest.fixture
def memory_root():
    """A fresh ``memory://`` directory, removed afterwards (the filesystem is process-wide)."""
    root = f"memory://labelfix-{uuid.uuid4().hex[:8]}"
    yield root
    fs.rmtree(root)


def upload(local: Path, remote: str) -> None:
    """Copy a local directory tree to ``remote``, file by file."""
    for path in sorted(local.rglob("*")):
        if path.is_file():
            with fs.open(fs.join(remote, path.relative_to(local).as_posix()), "wb") as fh:
                fh.write(path.read_bytes())


# ----------------------------------------------------------------------------- paths


def test_url_paths_keep_their_scheme():
    assert fs.is_url("gs://b/m") and fs.is_url("memory://x") and not fs.is_url("/data/gs://x")
    assert not fs.is_url("masks/a.png")
    assert fs.join("gs://b/masks/", "a", "0001.png") == "gs://b/masks/a/0001.png"
    assert fs.dirname("gs://b/masks/a/0001.png") == "gs://b/masks/a"
    assert fs.basename("s3://b/masks/") == "masks"
    assert fs.normpath("gs://b/masks/./a/../0001.png") == "gs://b/masks/0001.png"
    assert fs.relpath("gs://b/masks/a/0001.png", "gs://b/masks") == "a/0001.png"
    assert fs.join("masks", "a") == str(Path("masks") / "a")


def test_missing_fsspec_names_the_extra(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "fsspec", None)
    with pytest.raises(
        MissingExtra, match=r"gs://b/m: remote paths need fsspec.*labelfix\[remote\]"
    ):
        fs.exists("gs://b/m")


# ----------------------------------------------------------------------------- reading


def test_remote_listing_and_reads_equal_local(clean_masks: Path, memory_root: str):
    upload(clean_masks, memory_root)
    local = [(rel, read_mask(p).array.tolist()) for p, rel in iter_mask_files([clean_masks])]
    remote = [(rel, read_mask(p).array.tolist()) for p, rel in iter_mask_files([memory_root])]
    assert remote == local
    assert next(p for p, _ in iter_mask_files([memory_root])) == f"{memory_root}/a/0001.png"
    first = read_mask(f"{memory_root}/a/0001.png")
    assert first.kind == "palette" and first.palette is not None


def test_remote_unreadable_masks_name_the_url(memory_root: str):
    with fs.open(f"{memory_root}/empty.png", "wb"):
        pass
    with pytest.raises(UnreadableMask, match=r"^memory://.*/empty.png: empty file$"):
        read_mask(f"{memory_root}/empty.png")
    with pytest.raises(UnreadableMask, match="no such file"):
        read_mask(f"{memory_root}/missing.png")
    with pytest.raises(UnreadableMask, match=r"missing\.npy: no such file$"):  # the same words
        read_mask(f"{memory_root}/missing.npy")


def test_remote_stats_equal_local_stats(messy_masks: Path, memory_root: str):
    upload(messy_masks, memory_root)
    local = scan_dataset([messy_masks], ignore=(255,), num_classes=21, jobs=1).to_dict()
    remote = scan_dataset([memory_root], ignore=(255,), num_classes=21, jobs=1).to_dict()
    as_text = json.dumps(remote).replace(memory_root, str(messy_masks))
    assert json.loads(as_text) == local


def test_cli_stats_reads_a_url_and_checks_that_it_exists(clean_masks: Path, memory_root: str):
    upload(clean_masks, memory_root)
    result = CliRunner().invoke(main, ["stats", memory_root, "--json", "-j", "1"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["files"] == 4
    result = CliRunner().invoke(main, ["stats", f"{memory_root}/nothing"])
    assert result.exit_code == 2
    assert "does not exist" in result.output


# ----------------------------------------------------------------------------- writing


def test_replace_uploads_under_a_temporary_name_then_moves(tmp_path: Path, memory_root: str):
    from labelfix.io.atomic import move_into_place, write_atomic

    src = tmp_path / "shard"
    src.write_bytes(b"records")
    move_into_place(str(src), f"{memory_root}/out/train-00000-of-00001.tfrecord")
    assert not src.exists()
    assert fs.listdir(f"{memory_root}/out") == ["train-00000-of-00001.tfrecord"]
    write_atomic(f"{memory_root}/out/m.json", b"{}")
    assert sorted(fs.listdir(f"{memory_root}/out")) == ["m.json", "train-00000-of-00001.tfrecord"]


def test_to_tfrecord_reads_and_writes_remote_paths(tmp_path: Path, memory_root: str):
    pytest.importorskip("tensorflow")
    from labelfix.io.pairing import DatasetProblems
    from labelfix.labels.labelmap import LabelMap
    from labelfix.records.shards import shard_info
    from labelfix.records.write import write_dataset

    for i in range(5):
        save_palette_png(tmp_path / "in" / "masks" / f"{i:03d}.png", voc_mask())
        save_png(tmp_path / "in" / "images" / f"{i:03d}.png", np.full((8, 10, 3), i, np.uint8))
    upload(tmp_path / "in", memory_root)
    common = dict(num_classes=21, label_map=LabelMap(ignore=(255,)), num_shards=2, jobs=1)
    local = write_dataset(
        images=tmp_path / "in" / "images",
        masks=tmp_path / "in" / "masks",
        output=tmp_path / "out",
        **common,
    )
    out = f"{memory_root}/tfr"
    remote_in = dict(images=f"{memory_root}/images", masks=f"{memory_root}/masks")
    write_dataset(**remote_in, output=out, **common)
    remote = write_dataset(**remote_in, output=out, **common)  # replaces the first run
    # the same bytes as the local run, under the final names only (no temporary names left)
    assert [s.sha256 for s in remote.shards] == [s.sha256 for s in local.shards]
    assert sorted(fs.listdir(out)) == [
        ".labelfix-written",  # which files labelfix wrote there, and their digests
        "train-00000-of-00002.tfrecord",
        "train-00001-of-00002.tfrecord",
        "train.labelfix.json",
    ]
    manifest = json.loads(fs.read_bytes(f"{out}/train.labelfix.json"))
    assert manifest["shards"] == [s.__dict__ for s in local.shards]
    assert shard_info(f"{out}/train-00001-of-00002.tfrecord") == local.shards[1]

    bad = voc_mask()
    bad[0, 0] = 40
    with fs.open(f"{memory_root}/masks/003.png", "wb") as fh:
        save_png(tmp_path / "bad.png", bad)
        fh.write((tmp_path / "bad.png").read_bytes())
    with pytest.raises(DatasetProblems, match="no shard was written"):
        write_dataset(**remote_in, output=out, **common)
    assert len(fs.listdir(out)) == 4  # the earlier dataset (and its ledger) untouched


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_shard_info_counts_what_tensorflow_wrote(tmp_path: Path, compression: str):
    tf = pytest.importorskip("tensorflow")
    from labelfix.records.shards import count_records, shard_info

    path = tmp_path / "s.tfrecord"
    options = tf.io.TFRecordOptions(compression_type="GZIP" if compression == "gzip" else "")
    with tf.io.TFRecordWriter(str(path), options) as writer:
        for n in (0, 1, 300, 70_000):
            writer.write(b"x" * n)
    info = shard_info(str(path), compression=compression)
    assert (info.file, info.records, info.bytes) == ("s.tfrecord", 4, path.stat().st_size)
    data = path.read_bytes()
    assert count_records([data[i : i + 7] for i in range(0, len(data), 7)], compression=compression)
    if compression == "none":
        with pytest.raises(ValueError, match="ends inside a record"):
            count_records([data[:-1]])


def test_read_text_refuses_special_files_big_files_and_other_encodings(tmp_path: Path):
    """Issue 21: the one reader of small option files. A FIFO is refused without opening it
    (opening one waits for a writer), a device likewise; a file over the limit is never read
    whole; text is UTF-8 (a BOM is dropped) or UTF-16/32 with a BOM; anything else is one line."""
    import os

    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(fs.UnreadableText, match=r"fifo: cannot read the map file: not a regular"):
        fs.read_text(tmp_path / "fifo", what="map file")
    with pytest.raises(fs.UnreadableText, match=r"/dev/zero: .* \(a character device\)"):
        fs.read_text("/dev/zero", what="map file")
    with pytest.raises(fs.UnreadableText, match=r": cannot read the id list: Is a directory"):
        fs.read_text(tmp_path, what="id list")
    path = tmp_path / "t.txt"
    path.write_bytes(b"x" * 11)
    with pytest.raises(fs.UnreadableText, match=r"t\.txt: the names is over 10 bytes; is it"):
        fs.read_text(path, what="names", limit=10)
    assert fs.read_text(path, what="names", limit=11) == "x" * 11
    for data, text in (
        (b"\xef\xbb\xbfa,b", "a,b"),
        ("a,é".encode("utf-16-be").join([b"\xfe\xff", b""]), "a,é"),
        ("a,é".encode("utf-32"), "a,é"),
    ):
        path.write_bytes(data)
        assert fs.read_text(path, what="names") == text
    path.write_bytes(b"\x00a\x00b")
    with pytest.raises(fs.UnreadableText, match=r"not text \(it holds NUL characters; UTF-16"):
        fs.read_text(path, what="names")
