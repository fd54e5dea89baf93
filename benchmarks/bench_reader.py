"""Reader speed: ``labelfix.data.load`` with png vs raw masks, VOC and Cityscapes sizes.

Writes the same generated pairs with ``--mask-encoding png`` and ``raw`` (``raw``: void kept as
255, int16; ``raw -1``: ``--out -1``, raw's most compact form, int8; and that gzipped), then
reports for each:

* ``pipeline ex/s``: ``labelfix.data.load(...)`` iterated end to end (read shards from disk,
  parse, decode image + mask, ignore -> -1, prefetch), best of ``--passes`` round-robin passes
  (the pass least disturbed by other work on a shared machine);
* ``ceiling ex/s``: the same decoder over the same records held in memory, with every core
  (what the CPU can decode, with no I/O at all); ``of ceiling`` = pipeline / ceiling;
* ``1-core ex/s``: the decoder on one thread (private thread pool of 1, no intra-op threads);
* ``disk``: bytes of the shards, and relative to png.

VOC: 500x375 JPEG images + palette masks (void 255). Cityscapes: 2048x1024 PNG images (as the
real leftImg8bit) + labelIds masks through the cityscapes preset.

    python benchmarks/bench_reader.py                 # ~2 minutes on 2 cores
    python benchmarks/bench_reader.py --voc 100 --cityscapes 12 --passes 2
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
import tempfile
import time

import numpy as np
from bench_tfrecord import make_voc_like
from PIL import Image

from labelfix.synthetic import CLASS_COLOURS, cityscapes_like_mask


def make_cityscapes_like(root: str, pairs: int, seed: int = 0) -> None:
    """2048x1024 PNG images and ``*_gtFine_labelIds.png`` masks under root/{images,masks}."""
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(root, "images"), exist_ok=True)
    os.makedirs(os.path.join(root, "masks"), exist_ok=True)
    shade = np.linspace(0.7, 1.1, 2048, dtype=np.float32)[None, :, None]
    for i in range(pairs):
        mask = cityscapes_like_mask(rng)
        colours = CLASS_COLOURS[mask % len(CLASS_COLOURS)].astype(np.float32) * shade
        colours += rng.normal(0, 3.0, size=(1024, 2048, 1)).astype(np.float32)
        image = np.clip(colours, 0, 255).astype(np.uint8)
        Image.fromarray(image).save(os.path.join(root, "images", f"city_{i:04d}.png"))
        Image.fromarray(mask).save(os.path.join(root, "masks", f"city_{i:04d}.png"))


def pipelines(out: str, *, min_examples: int) -> dict:
    """The three datasets measured for one written output, plus its facts."""
    import tensorflow as tf

    from labelfix import data

    manifest = data.read_manifest(out, "train")
    records = [r.numpy() for r in data.records(out, "train")]
    decoder = data.make_decoder(manifest)
    epochs = -(-min_examples // len(records))
    memory = tf.data.Dataset.from_tensor_slices(records).repeat(epochs)
    one_core = tf.data.Options()
    one_core.threading.private_threadpool_size = 1
    one_core.threading.max_intra_op_parallelism = 1
    return {
        "datasets": {
            "pipeline": data.load(out, "train").repeat(epochs),
            "ceiling": memory.map(decoder, num_parallel_calls=tf.data.AUTOTUNE).prefetch(2),
            "single": memory.map(decoder).prefetch(2).with_options(one_core),
        },
        "count": len(records) * epochs,
        "disk": sum(s["bytes"] for s in manifest["shards"]),
        "dtype": manifest["mask_dtype"],
    }


def measure(setups: dict, passes: int) -> dict:
    """Best examples/s of each dataset over ``passes`` round-robin passes (after a warm-up)."""
    best: dict = {}
    for rep in range(passes + 1):
        for key, setup in setups.items():
            for kind, ds in setup["datasets"].items():
                start = time.perf_counter()
                for _ in ds:
                    pass
                if rep:  # pass 0 warms up: graph building, file cache
                    value = setup["count"] / (time.perf_counter() - start)
                    best[key, kind] = max(best.get((key, kind), 0.0), value)
    return best


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--voc", type=int, default=200, help="VOC-size pairs")
    parser.add_argument("--cityscapes", type=int, default=24, help="Cityscapes-size pairs")
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args(argv)

    import tensorflow as tf

    from labelfix.labels.presets import preset
    from labelfix.records.write import write_dataset

    tf.constant(0)
    root = args.workdir or tempfile.mkdtemp(prefix="bench-reader-")
    try:
        start = time.perf_counter()
        make_voc_like(os.path.join(root, "voc"), args.voc)
        make_cityscapes_like(os.path.join(root, "city"), args.cityscapes)
        print(
            f"generated data in {time.perf_counter() - start:.1f}s ({os.cpu_count()} cores)",
            file=sys.stderr,
        )
        setups_in = {
            "VOC 500x375": (
                os.path.join(root, "voc", "JPEGImages"),
                os.path.join(root, "voc", "SegmentationClass"),
                preset("voc"),
                21,
            ),
            "Cityscapes 2048x1024": (
                os.path.join(root, "city", "images"),
                os.path.join(root, "city", "masks"),
                preset("cityscapes"),
                19,
            ),
        }
        minimum = {"VOC 500x375": 400, "Cityscapes 2048x1024": 64}  # examples per pass
        variants = {
            "png": {"mask_encoding": "png"},
            "raw": {"mask_encoding": "raw"},
            "raw -1": {"mask_encoding": "raw", "out": -1},
            "raw+gzip": {"mask_encoding": "raw", "out": -1, "compression": "gzip"},
        }
        setups = {}
        for name, (images, masks, label_map, num_classes) in setups_in.items():
            for variant, options in variants.items():
                options = dict(options)
                lm = label_map
                if "out" in options:
                    lm = dataclasses.replace(label_map, out=options.pop("out"))
                out = os.path.join(root, "out", name.split()[0], variant)
                write_dataset(
                    images=images,
                    masks=masks,
                    output=out,
                    label_map=lm,
                    num_classes=num_classes,
                    num_shards=4,
                    **options,
                )
                setups[name, variant] = pipelines(out, min_examples=minimum[name])
        best = measure(setups, args.passes)
        print(f"\nlabelfix.data.load, {os.cpu_count()} cores, best of {args.passes} passes\n")
        print(
            f"  {'data':<21} {'masks':<9} {'mask dtype':<10} {'pipeline ex/s':>13} "
            f"{'ceiling ex/s':>12} {'of ceiling':>10} {'1-core ex/s':>11} "
            f"{'disk MB':>8} {'disk vs png':>11}"
        )
        for (name, variant), setup in setups.items():
            png = setups[name, "png"]
            pipe, ceil = best[(name, variant), "pipeline"], best[(name, variant), "ceiling"]
            print(
                f"  {name:<21} {variant:<9} {setup['dtype']:<10} {pipe:13.1f} {ceil:12.1f} "
                f"{pipe / ceil:10.0%} {best[(name, variant), 'single']:11.1f} "
                f"{setup['disk'] / 1e6:8.1f} {setup['disk'] / png['disk']:10.2f}x"
            )
        print("\n  load average at the end: " + ", ".join(f"{x:.2f}" for x in os.getloadavg()))
    finally:
        if args.workdir is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
