"""The command line as users call it, against the loops users write today, on every kind of mask.

Generates its own data in a temporary directory, one folder per family of masks (each saved as
Pillow saves it by default, so rows mix the filters Pillow's encoder picks):

* ``polygons``: 2048x1024, polygons rasterized at full resolution (Cityscapes gtFine);
* ``superpixels``: 2048x1024, irregular region boundaries, every boundary pixel jittered;
* ``predictions``: 2048x1024, a model's half-resolution prediction upsampled 2x;
* ``voc``: 500x375 / 375x500 palette masks with void borders (Pascal VOC), 15x as many;
* ``many-16bit``: 2048x1024 16-bit ids of up to 1,000 classes;
* ``blocky``: 2048x1024 Cityscapes-like labelIds with jittered bands (the old benchmark's).

Per family, every timing a fresh process, start-up included, on both sides:

* ``stats``: the naive loop (Pillow decode + ``np.unique`` per file, one process) vs
  ``labelfix stats DIR --json``;
* ``remap 2 rules``: the naive loop (Pillow open, ``np.where`` per rule, Pillow save with the
  input's palette) vs ``labelfix remap --map 3:4 --ignore 255 --out 250 DIR -o OUT``;
* ``remap cityscapes``: the same with the Cityscapes labelIds -> trainIds rules vs
  ``labelfix remap --preset cityscapes``.

Remap outputs must hold the same values as the naive loop's, and their total size is compared
with the naive loop's files (Pillow's default save of the same arrays). Beside each line is the
decode-only floor: the same files decoded by Pillow on every core (labelfix's worker pool), no
other work. Then ``to-tfrecord`` on VOC-size pairs (500x375 JPEG + palette PNG) against a
DeepLab-style writer (``build_voc2012_data.py``'s steps, TensorFlow).

Rounds are interleaved (every method once per round) and each line reports the best round, the
median beside it, so a slow spell of a shared machine hits every method alike. The ``cpu``
column is the ratio of CPU seconds (all processes), which a busy machine hardly changes: the
naive loops run in one process, labelfix on every core, so on a loaded machine its wall-time
ratio falls towards the CPU ratio divided by the cores it no longer gets.

    python benchmarks/bench_cli.py                        # about 15 minutes on 2 cores
    python benchmarks/bench_cli.py --masks 24 --pairs 0 --repeat 1 --families polygons voc
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
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
from labelfix.synthetic import (
    cityscapes_like_mask,
    many_class_mask,
    polygon_mask,
    prediction_mask,
    shapes_sample,
    superpixel_mask,
)


def _voc_mask(rng: np.random.Generator) -> np.ndarray:
    shape = (375, 500) if rng.random() < 0.5 else (500, 375)
    return shapes_sample(rng, height=shape[0], width=shape[1], num_classes=21, void=255)[1]


#: family -> (mask generator, palette or None, masks per --masks)
FAMILIES = {
    "polygons": (polygon_mask, None, 1),
    "superpixels": (superpixel_mask, None, 1),
    "predictions": (prediction_mask, None, 1),
    "voc": (_voc_mask, voc_palette(), 15),  # 3,000 at 200: VOC 2012 has 2,913 masks
    "many-16bit": (many_class_mask, None, 1),
    "blocky": (cityscapes_like_mask, None, 1),
}

TWO_RULES = [(3, 4), (255, 250)]
TWO_RULES_ARGS = ["--map", "3:4", "--ignore", "255", "--out", "250"]

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
import sys, json, numpy as np
from pathlib import Path
from PIL import Image
src, dst, rules, fill = Path(sys.argv[1]), Path(sys.argv[2]), json.loads(sys.argv[3]), sys.argv[4]
for f in sorted(src.rglob("*.png")):
    im = Image.open(f)
    labels = np.asarray(im)
    out = labels.copy() if fill == "keep" else np.full(labels.shape, int(fill), np.uint8)
    for a, b in rules:
        out = np.where(labels == a, b, out).astype(out.dtype)
    target = dst / f.relative_to(src)
    target.parent.mkdir(parents=True, exist_ok=True)
    new = Image.fromarray(out)
    if im.mode == "P":
        new.putpalette(im.getpalette())
    new.save(target)
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


def make_family(root: str, family: str, n: int, *, distinct: int = 16, seed: int = 0) -> None:
    """``n`` masks of ``family`` under ``root`` (``distinct`` different ones, repeated)."""
    generate, palette, _ = FAMILIES[family]
    rng = np.random.default_rng(seed)
    blobs = []
    for _ in range(min(n, distinct)):
        im = Image.fromarray(generate(rng))
        if palette is not None:
            im.putpalette(palette)
        buf = io.BytesIO()
        im.save(buf, "PNG")
        blobs.append(buf.getvalue())
    for i in range(n):
        path = os.path.join(root, f"part{i % 4}", f"{i:06d}_{family}.png")
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


def run(args: list[str]) -> tuple[float, float]:
    """``(wall seconds, CPU seconds)`` of a command, its worker processes' CPU included (CPU
    time hardly changes with the machine's load; on a busy machine the wall time does)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(args, check=True, capture_output=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return wall, cpu


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
    return sum(os.path.getsize(p) for p in files_under(root, ".png"))


def mask_methods(tmp: str, family: str, jobs: list[str]) -> dict[str, tuple[list[str], str]]:
    """``{line: (command, output directory or "")}`` for one family, naive and labelfix."""
    py, cli = sys.executable, [sys.executable, "-m", "labelfix"]
    src = os.path.join(tmp, family)
    city = json.dumps(sorted(CITYSCAPES_TRAIN_IDS.items()))
    out = {}
    out["stats naive"] = ([py, "-c", NAIVE_STATS, src], "")
    out["stats labelfix"] = ([*cli, "stats", src, "--json", *jobs], "")
    for name, rules, fill, options in (
        ("remap 2 rules", json.dumps(TWO_RULES), "keep", TWO_RULES_ARGS),
        ("remap cityscapes", city, "255", ["--preset", "cityscapes"]),
    ):
        naive_dir = os.path.join(tmp, f"{family}-{name[6:9]}-naive")
        ours_dir = os.path.join(tmp, f"{family}-{name[6:9]}-labelfix")
        out[f"{name} naive"] = ([py, "-c", NAIVE_REMAP, src, naive_dir, rules, fill], naive_dir)
        out[f"{name} labelfix"] = ([*cli, "remap", *options, src, "-o", ours_dir, *jobs], ours_dir)
    return out


def compile_bytecode() -> None:
    """Compile labelfix's modules as ``pip install`` does, so that start-up is not timed with a
    compilation of every module (which PYTHONDONTWRITEBYTECODE=1 would make happen in every run;
    numpy and Pillow, which the naive loops import, come compiled from their installation)."""
    import compileall

    import labelfix

    compileall.compile_dir(os.path.dirname(labelfix.__file__), quiet=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--masks", type=int, default=200, help="masks per family (VOC: 15x)")
    parser.add_argument("--pairs", type=int, default=1500, help="VOC-size pairs (0: skip)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=default_jobs())
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    jobs = ["-j", str(args.jobs)]
    compile_bytecode()
    with tempfile.TemporaryDirectory() as tmp:
        methods: dict[tuple[str, str], tuple[list[str], str]] = {}
        for family in args.families:
            make_family(os.path.join(tmp, family), family, args.masks * FAMILIES[family][2])
            for line, method in mask_methods(tmp, family, jobs).items():
                methods[family, line] = method
        if args.pairs:
            voc = os.path.join(tmp, "pairs")
            make_pairs(voc, args.pairs)
            img, seg = os.path.join(voc, "JPEGImages"), os.path.join(voc, "SegmentationClass")
            py, cli = sys.executable, [sys.executable, "-m", "labelfix"]
            methods["pairs", "to-tfrecord naive"] = (
                [py, "-c", NAIVE_TFRECORD, img, seg, os.path.join(tmp, "n.rec")],
                "",
            )
            methods["pairs", "to-tfrecord labelfix"] = (
                [*cli, "to-tfrecord", "--images", img, "--masks", seg, "-o",
                 os.path.join(tmp, "tfr"), "--preset", "voc", *jobs],
                "",
            )  # fmt: skip
        times: dict[tuple[str, str], list[float]] = {key: [] for key in methods}
        cpu: dict[tuple[str, str], list[float]] = {key: [] for key in methods}
        floors: dict[str, list[float]] = {}
        for _ in range(args.repeat):
            for key, (command, output) in methods.items():
                if output:  # remap writes a fresh output each round
                    shutil.rmtree(output, ignore_errors=True)
                wall, seconds = run(command)
                times[key].append(wall)
                cpu[key].append(seconds)
            for family in {family for family, _ in methods}:
                root = os.path.join(tmp, family)
                paths = files_under(root, ".png") + files_under(root, ".jpg")
                floors.setdefault(family, []).append(decode_floor(paths, args.jobs))
        sizes = {}
        for (family, line), (_, output) in methods.items():
            if output and line.endswith("labelfix"):
                naive = methods[family, line.replace("labelfix", "naive")][1]
                assert same_values(naive, output), f"{family} {line}: values differ"
                sizes[family, line[:-9]] = size(output) / size(naive)
        rows = report(times, cpu, floors, sizes, args)
        if args.json:
            with open(args.json, "w") as fh:
                json.dump(rows, fh, indent=1)


#: the ratio each line must reach (issue 25)
TARGETS = {"stats": 8.0, "remap 2 rules": 6.0, "remap cityscapes": 6.0, "to-tfrecord": 6.0}


def report(times, cpu, floors, sizes, args) -> list[dict]:
    load = os.getloadavg()[0]
    print(
        f"{os.cpu_count()} cores, {args.jobs} jobs, best of {args.repeat} (median ratio), "
        f"load {load:.1f} at the end"
    )
    print(
        f"{'family':<12} {'command':<17} {'naive s':>8} {'labelfix s':>10} {'ratio':>6} "
        f"{'median':>6} {'target':>6} {'cpu':>6} {'size':>5} {'floor s':>8} {'vs floor':>8}"
    )
    rows = []
    for family, line in dict.fromkeys((f, k.rsplit(" ", 1)[0]) for f, k in times):
        naive, ours = times[family, f"{line} naive"], times[family, f"{line} labelfix"]
        ratio = min(naive) / min(ours)
        median = statistics.median(naive) / statistics.median(ours)
        cpu_ratio = min(cpu[family, f"{line} naive"]) / min(cpu[family, f"{line} labelfix"])
        floor = min(floors[family])
        size_ratio = sizes.get((family, line))
        target = TARGETS[line]
        ok = ratio >= target and (size_ratio is None or size_ratio <= 1.0)
        shown = f"{size_ratio:5.2f}" if size_ratio is not None else "    -"
        print(
            f"{family:<12} {line:<17} {min(naive):8.2f} {min(ours):10.2f} {ratio:5.1f}x "
            f"{median:5.1f}x {target:5.0f}x {cpu_ratio:5.1f}x {shown} {floor:8.2f} "
            f"{min(ours) / floor:7.2f}x {'PASS' if ok else 'FAIL'}"
        )
        rows.append(
            {"family": family, "command": line, "naive_s": min(naive), "labelfix_s": min(ours),
             "ratio": ratio, "median_ratio": median, "cpu_ratio": cpu_ratio,
             "size_ratio": size_ratio, "floor_s": floor, "pass": ok, "load": load}
        )  # fmt: skip
    return rows


if __name__ == "__main__":
    main()
