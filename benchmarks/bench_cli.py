"""The command line as users call it, against the loops users write today, in one run.

Generates its own data in a temporary directory: Cityscapes-size labelId masks (2048x1024, 8-bit,
irregular boundaries, saved as Pillow saves them) for ``stats`` and ``remap``, and VOC-size pairs
(500x375 and 375x500 JPEG images with palette PNG masks) for ``to-tfrecord``. Every timing is a
fresh process, start-up included, on both sides:

* ``stats``: the naive loop (Pillow decode + ``np.unique`` per file, one process) vs
  ``labelfix stats DIR --ignore 0 -n 34``;
* ``remap``: the naive loop (Pillow open, ``np.where`` per Cityscapes rule, Pillow save) vs
  ``labelfix remap --preset cityscapes DIR -o OUT``; outputs must hold the same values, and their
  total size is compared;
* ``to-tfrecord``: a DeepLab-style writer (``build_voc2012_data.py``'s steps: read the image,
  decode it for its size, decode the mask and check its values, ``tf.train.Example`` +
  ``tf.io.TFRecordWriter``) vs ``labelfix to-tfrecord ... --preset voc``.

Beside each line is the decode-only floor: the same files decoded with Pillow on every core
(labelfix's worker pool), no other work. ``stats`` and ``remap`` can go below it: for 8-bit PNG
masks they inflate each file once (for its integrity check) and rebuild most rows from the
inflated bytes with NumPy, leaving only Average/Paeth rows to Pillow's decoder
(``labelfix.io.png.decode_scanlines``). Rounds are interleaved and the best of ``--repeat`` is
reported (the median beside it), so a slow spell of a shared machine hits every method alike.

    python benchmarks/bench_cli.py                  # a few minutes on 2 cores
    python benchmarks/bench_cli.py --masks 32 --pairs 300 --repeat 1   # quick look
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
from PIL import Image

from labelfix.labels.presets import CITYSCAPES_TRAIN_IDS, voc_palette
from labelfix.parallel import default_jobs, ordered_map
from labelfix.synthetic import cityscapes_like_mask, shapes_sample

NAIVE_STATS = """
import sys, numpy as np
from pathlib import Path
from PIL import Image
totals = {}
for f in sorted(Path(sys.argv[1]).rglob("*.png")):
    values, counts = np.unique(np.asarray(Image.open(f)), return_counts=True)
    for v, c in zip(values.tolist(), counts.tolist()):
        totals[v] = totals.get(v, 0) + c
print(len(totals))
"""

NAIVE_REMAP = """
import sys, os, json, numpy as np
from pathlib import Path
from PIL import Image
src, dst, rules = Path(sys.argv[1]), Path(sys.argv[2]), json.loads(sys.argv[3])
for f in sorted(src.rglob("*.png")):
    labels = np.asarray(Image.open(f))
    out = np.full(labels.shape, 255, np.uint8)
    for a, b in rules:
        out = np.where(labels == a, b, out).astype(np.uint8)
    target = dst / f.relative_to(src)
    target.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(out).save(target)
"""

NAIVE_TFRECORD = """
# build_voc2012_data.py's steps, in TF 2 names
import sys, io, numpy as np, tensorflow as tf
from pathlib import Path
from PIL import Image
images, masks, out = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
def feature(v):
    if isinstance(v, int):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[v]))
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))
with tf.io.TFRecordWriter(out) as writer:
    for mask_path in sorted(masks.glob("*.png")):
        image_data = (images / (mask_path.stem + ".jpg")).read_bytes()
        height, width = np.asarray(Image.open(io.BytesIO(image_data))).shape[:2]
        seg_data = mask_path.read_bytes()
        seg = np.asarray(Image.open(io.BytesIO(seg_data)))
        if seg.shape != (height, width):
            raise RuntimeError("Shape mismatched between image and label.")
        if not np.isin(np.unique(seg), list(range(21)) + [255]).all():
            raise RuntimeError(f"{mask_path}: bad value")
        example = tf.train.Example(features=tf.train.Features(feature={
            "image/encoded": feature(image_data),
            "image/filename": feature(mask_path.stem.encode()),
            "image/format": feature(b"jpeg"), "image/height": feature(int(height)),
            "image/width": feature(int(width)), "image/channels": feature(3),
            "image/segmentation/class/encoded": feature(seg_data),
            "image/segmentation/class/format": feature(b"png"),
        }))
        writer.write(example.SerializeToString())
"""


def make_masks(root: str, n: int, *, distinct: int = 16) -> None:
    rng = np.random.default_rng(0)
    blobs = []
    for _ in range(min(n, distinct)):
        buf = io.BytesIO()
        Image.fromarray(cityscapes_like_mask(rng)).save(buf, "PNG")
        blobs.append(buf.getvalue())
    for i in range(n):
        path = os.path.join(root, f"city{i % 4}", f"{i:06d}_gtFine_labelIds.png")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(blobs[i % len(blobs)])


def make_pairs(root: str, n: int, *, distinct: int = 24) -> None:
    rng = np.random.default_rng(1)
    os.makedirs(os.path.join(root, "JPEGImages"))
    os.makedirs(os.path.join(root, "SegmentationClass"))
    blobs = []
    for k in range(min(n, distinct)):
        height, width = (375, 500) if k % 2 == 0 else (500, 375)
        image, mask = shapes_sample(rng, height=height, width=width, num_classes=21, void=255)
        jpg, png = io.BytesIO(), io.BytesIO()
        Image.fromarray(image).save(jpg, "JPEG", quality=90)
        im = Image.fromarray(mask)
        im.putpalette(voc_palette())
        im.save(png, "PNG")
        blobs.append((jpg.getvalue(), png.getvalue()))
    for i in range(n):
        jpg, png = blobs[i % len(blobs)]
        stem = f"2007_{i:06d}"
        with open(os.path.join(root, "JPEGImages", stem + ".jpg"), "wb") as fh:
            fh.write(jpg)
        with open(os.path.join(root, "SegmentationClass", stem + ".png"), "wb") as fh:
            fh.write(png)


def _decode(path: str) -> int:
    with Image.open(path) as im:
        im.load()
    return 0


def decode_floor(paths: list[str], jobs: int) -> float:
    t0 = time.perf_counter()
    for _ in ordered_map(_decode, paths, jobs=jobs, preload=("PIL.PngImagePlugin",)):
        pass
    return time.perf_counter() - t0


def run(args: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(args, check=True, capture_output=True)
    return time.perf_counter() - t0


def files_under(root: str, suffix: str) -> list[str]:
    return sorted(
        os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs if f.endswith(suffix)
    )


def same_values(a: str, b: str) -> bool:
    pa, pb = files_under(a, ".png"), files_under(b, ".png")
    return len(pa) == len(pb) and all(
        np.array_equal(np.asarray(Image.open(x)), np.asarray(Image.open(y)))
        for x, y in zip(pa, pb, strict=True)
    )


def size(root: str) -> int:
    return sum(os.path.getsize(p) for p in files_under(root, ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--masks", type=int, default=96, help="Cityscapes-size masks")
    parser.add_argument("--pairs", type=int, default=1500, help="VOC-size pairs")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=default_jobs())
    args = parser.parse_args()
    py, cli = sys.executable, [sys.executable, "-m", "labelfix"]
    rules = json.dumps(sorted(CITYSCAPES_TRAIN_IDS.items()))
    with tempfile.TemporaryDirectory() as tmp:
        masks, voc = os.path.join(tmp, "masks"), os.path.join(tmp, "voc")
        make_masks(masks, args.masks)
        make_pairs(voc, args.pairs)
        img, seg = os.path.join(voc, "JPEGImages"), os.path.join(voc, "SegmentationClass")
        jobs = ["-j", str(args.jobs)]
        methods = {
            "stats naive": [py, "-c", NAIVE_STATS, masks],
            "stats labelfix": [*cli, "stats", masks, "--ignore", "0", "-n", "34", *jobs],
            "remap naive": [py, "-c", NAIVE_REMAP, masks, os.path.join(tmp, "rn"), rules],
            "remap labelfix": [
                *cli,
                "remap",
                "--preset",
                "cityscapes",
                masks,
                "-o",
                os.path.join(tmp, "rl"),
                *jobs,
            ],
            "to-tfrecord naive": [py, "-c", NAIVE_TFRECORD, img, seg, os.path.join(tmp, "n.rec")],
            "to-tfrecord labelfix": [
                *cli,
                "to-tfrecord",
                "--images",
                img,
                "--masks",
                seg,
                "-o",
                os.path.join(tmp, "tfr"),
                "--preset",
                "voc",
                *jobs,
            ],
        }
        times: dict[str, list[float]] = {key: [] for key in methods}
        floors = {"stats": [], "remap": [], "to-tfrecord": []}
        mask_files, seg_files = files_under(masks, ".png"), files_under(seg, ".png")
        img_files = files_under(img, ".jpg")
        for _ in range(args.repeat):
            for key, command in methods.items():
                fresh = {"remap naive": "rn", "remap labelfix": "rl"}.get(key)
                if fresh:  # remap writes a fresh output each round
                    shutil.rmtree(os.path.join(tmp, fresh), ignore_errors=True)
                times[key].append(run(command))
            floors["stats"].append(decode_floor(mask_files, args.jobs))
            floors["to-tfrecord"].append(decode_floor(seg_files + img_files, args.jobs))
        floors["remap"] = floors["stats"]
        assert same_values(os.path.join(tmp, "rn"), os.path.join(tmp, "rl")), "remap values differ"
        naive_size, ours_size = size(os.path.join(tmp, "rn")), size(os.path.join(tmp, "rl"))
        report(times, floors, args, naive_size, ours_size)


def report(times, floors, args, naive_size: int, ours_size: int) -> None:
    targets = {"stats": 8.0, "remap": 5.0, "to-tfrecord": 3.0}
    units = {"stats": f"{args.masks} masks", "remap": f"{args.masks} masks",
             "to-tfrecord": f"{args.pairs} pairs"}  # fmt: skip
    print(f"{os.cpu_count()} cores, {args.jobs} jobs, best of {args.repeat} (median)")
    print(
        f"{'command':<12} {'data':>11} {'naive s':>9} {'labelfix s':>11} {'ratio':>7} "
        f"{'target':>7} {'floor s':>8} {'labelfix/floor':>15}"
    )
    for job, target in targets.items():
        naive, ours = times[f"{job} naive"], times[f"{job} labelfix"]
        floor = min(floors[job])
        ratio = min(naive) / min(ours)
        print(
            f"{job:<12} {units[job]:>11} {min(naive):9.2f} {min(ours):11.2f} {ratio:6.1f}x "
            f"{target:6.1f}x {floor:8.2f} {min(ours) / floor:14.2f}x  "
            f"(median {statistics.median(naive) / statistics.median(ours):.1f}x) "
            f"{'PASS' if ratio >= target else 'FAIL'}"
        )
    print(
        f"remap output: {ours_size / 1e6:.1f} MB vs the naive loop's {naive_size / 1e6:.1f} MB "
        f"({ours_size / naive_size:.2f}x); values identical"
    )


if __name__ == "__main__":
    main()
