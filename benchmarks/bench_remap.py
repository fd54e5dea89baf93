"""Benchmark ``labelfix remap`` against the naive loop on Cityscapes-sized masks.

Generates its own data (``--files`` masks of 2048x1024 labelIds, saved as Pillow saves them by
default) in a temporary directory, then times, in one run:

* the naive loop: Pillow open, ``np.where`` per mapped value, Pillow save with default settings,
  one process;
* ``labelfix.rewrite.run.remap`` with the cityscapes preset, on all cores at several PNG compression
  levels and on one core, and the ``labelfix remap`` command end to end (a new process);
* the PNG encoders alone, per mask.

Every method runs once per round and rounds are interleaved, so a slow spell of a shared
machine hits all methods alike; a method's time is its best round (as ``timeit`` reports), the
median is printed beside it. The script asserts that every output holds exactly the values the
naive loop gives, and that remap at the default level is at least ``--min-ratio`` times faster.

    python benchmarks/bench_remap.py            # about 40 s on 2 cores
    python benchmarks/bench_remap.py --files 96 --repeat 3
"""

from __future__ import annotations

import argparse
import functools
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
from PIL import Image

from labelfix.io.masks import iter_mask_files
from labelfix.io.png import PNG_COMPRESS_LEVEL, encode_png
from labelfix.labels.presets import preset
from labelfix.parallel import default_jobs
from labelfix.rewrite.run import remap
from labelfix.synthetic import cityscapes_like_mask

HEIGHT, WIDTH = 1024, 2048


def make_data(directory: str, files: int) -> None:
    rng = np.random.default_rng(0)
    for i in range(files):
        sub = os.path.join(directory, f"city{i % 3}")
        os.makedirs(sub, exist_ok=True)
        mask = cityscapes_like_mask(rng, height=HEIGHT, width=WIDTH)
        Image.fromarray(mask).save(os.path.join(sub, f"{i:04d}_gtFine_labelIds.png"))


def naive(src: str, dst: str, rules: list[tuple[int, int]], fill: int) -> None:
    """What one writes without labelfix: one np.where per mapped value, one process."""
    for path, rel in iter_mask_files([src]):
        labels = np.asarray(Image.open(path))
        out = np.full(labels.shape, fill, np.uint8)
        for a, b in rules:
            out = np.where(labels == a, b, out)
        target = os.path.join(dst, rel)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        Image.fromarray(out.astype(np.uint8)).save(target)


def timed(func, *args, **kwargs) -> float:
    start = time.perf_counter()
    func(*args, **kwargs)
    return time.perf_counter() - start


def bytes_per_file(directory: str) -> int:
    sizes = [os.path.getsize(p) for p, _ in iter_mask_files([directory])]
    return int(statistics.mean(sizes))


def same_values(a: str, b: str) -> int:
    """Number of files compared; AssertionError on the first difference."""
    files_a = list(iter_mask_files([a]))
    files_b = list(iter_mask_files([b]))
    assert [r for _, r in files_a] == [r for _, r in files_b], "different file lists"
    for (pa, _), (pb, _) in zip(files_a, files_b, strict=True):
        va, vb = np.asarray(Image.open(pa)), np.asarray(Image.open(pb))
        assert va.shape == vb.shape and np.array_equal(va, vb), f"{pb} differs from {pa}"
    return len(files_a)


def pillow_png(array: np.ndarray, *, compress_level: int = PNG_COMPRESS_LEVEL) -> bytes:
    """Pillow's PNG encoder (adaptive row filters), for comparison."""
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=48)
    parser.add_argument("--jobs", type=int, default=default_jobs())
    parser.add_argument("--repeat", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--levels", default="1,6,9", help="levels for whole remap runs")
    parser.add_argument("--encoder-levels", default="0,1,3,6,9", help="levels for encoders")
    parser.add_argument("--min-ratio", type=float, default=4.0)
    args = parser.parse_args()
    levels = [int(v) for v in args.levels.split(",")]
    label_map = preset("cityscapes")
    rules = sorted(label_map.rules_dict.items())

    with tempfile.TemporaryDirectory(prefix="bench-remap-") as tmp:
        src = os.path.join(tmp, "gtFine")
        make_data(src, args.files)
        print(
            f"{args.files} masks {WIDTH}x{HEIGHT}, cityscapes preset ({len(rules)} rules), "
            f"{args.jobs} jobs, {bytes_per_file(src):,} bytes per input file, "
            f"{args.repeat} rounds\n"
        )
        out = {key: os.path.join(tmp, str(key)) for key in ["naive", *levels, "one-core", "cli"]}
        cli = [sys.executable, "-c", "from labelfix.cli import main; main()", "remap"]
        cli += ["--preset", "cityscapes", src, "-o", out["cli"], "-j", str(args.jobs)]
        methods = {"naive": lambda: naive(src, out["naive"], rules, label_map.out_value)}
        for level in levels:
            methods[level] = functools.partial(
                remap, [src], label_map, output=out[level], jobs=args.jobs, compress_level=level
            )
        methods["one-core"] = functools.partial(remap, [src], label_map, output=out["one-core"],
                                                jobs=1)  # fmt: skip
        methods["cli"] = functools.partial(subprocess.run, cli, check=True, capture_output=True)
        times: dict = {key: [] for key in methods}
        for _ in range(args.repeat):
            for key, method in methods.items():
                times[key].append(timed(method))
        for key in methods:
            assert same_values(out["naive"], out[key]) == args.files, key

        names = {
            "naive": "naive loop (Pillow default = level 6)",
            "one-core": f"labelfix remap(), 1 job, level {PNG_COMPRESS_LEVEL}",
            "cli": f"labelfix remap command, level {PNG_COMPRESS_LEVEL}",
        }
        for level in levels:
            default = " (default)" if level == PNG_COMPRESS_LEVEL else ""
            names[level] = f"labelfix remap(), level {level}{default}"
        best = {k: min(v) for k, v in times.items()}
        median = {k: statistics.median(v) for k, v in times.items()}
        width = max(len(n) for n in names.values())
        print(
            f"{'method':<{width}}  {'best s':>6}  {'speed-up':>8}  {'median s':>8}  "
            f"{'speed-up':>8}  {'bytes/file':>10}"
        )
        for key in methods:
            print(
                f"{names[key]:<{width}}  {best[key]:6.2f}  {best['naive'] / best[key]:7.1f}x  "
                f"{median[key]:8.2f}  {median['naive'] / median[key]:7.1f}x  "
                f"{bytes_per_file(out[key]):10,}"
            )
        print(
            f"\nThe command pays ~0.3 s for a new interpreter, imports and worker start; the "
            f"first library call (which starts the workers) took {times[levels[0]][0]:.2f} s. "
            "Every output holds exactly the naive loop's values."
        )
        encoder_table(out["naive"], [int(v) for v in args.encoder_levels.split(",")])

        ratio = best["naive"] / best[PNG_COMPRESS_LEVEL]
        print(f"\nspeed-up at the default level {PNG_COMPRESS_LEVEL}: {ratio:.1f}x")
        assert ratio >= args.min_ratio, f"remap is only {ratio:.1f}x faster than the naive loop"


def encoder_table(directory: str, levels: list[int]) -> None:
    """Milliseconds and kilobytes per mask for each PNG encoder and zlib level."""
    print("\nPNG encoders alone, per mask (one process):")
    labels = np.asarray(Image.open(next(iter_mask_files([directory]))[0]))
    encoders = {
        "Pillow, adaptive filters": pillow_png,
        "None/Up rows + zlib RLE (png.encode_png)": encode_png,
    }
    print(f"  {'encoder':<48}" + "".join(f"  {'level ' + str(lv):>15}" for lv in levels))
    for name, encode in encoders.items():
        cells = []
        for level in levels:
            start = time.perf_counter()
            for _ in range(5):
                data = encode(labels, compress_level=level)
            ms = (time.perf_counter() - start) / 5 * 1000
            assert np.array_equal(np.asarray(Image.open(io.BytesIO(data))), labels)
            cells.append(f"{ms:5.1f} ms {len(data) // 1024:>4} KB")
        print(f"  {name:<48}" + "".join(f"  {c:>15}" for c in cells))


if __name__ == "__main__":
    main()
