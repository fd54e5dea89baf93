"""Writer speed: ``labelfix to-tfrecord`` against a DeepLab-style single-process writer.

Generates VOC-size data (500x375 JPEG images, VOC-palette PNG masks with 255 borders), then
times, in this one process (TensorFlow imported once, before any timing) and on the same files:

* ``deeplab-style``: build_voc2012_data.py's loop with a value check added: read image and mask
  bytes (``tf.io.gfile``), image size by decoding the image (as its ``ImageReader`` does), mask
  decoded by Pillow and its values checked (``np.unique``), ``tf.train.Example``,
  ``tf.io.TFRecordWriter``. Palettes stay in.
* ``deeplab-style, header size``: the same, but the image size read from the JPEG header by
  Pillow: the lightest single-process writer that still checks every mask.
* ``build_voc2012_data.py as written``: TensorFlow decodes image and mask just for their sizes;
  no value check at all (reference row).
* ``labelfix``: ``labelfix.records.write.write_dataset`` (what ``labelfix to-tfrecord`` runs): the
  same checks plus the mapping, palette stripping, per-class counts, manifest and sha256
  checksums, on every core.

Each writer runs ``--repeat`` times, round robin; the table shows the best run, the median and
the first (cold) run; the labelfix cold run includes starting its worker processes. On a shared
machine the best run is the one least disturbed by other work; the load average is printed.

    python benchmarks/bench_tfrecord.py            # 400 pairs, about a minute on 2 cores
    python benchmarks/bench_tfrecord.py --pairs 200 --repeat 3
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import sys
import tempfile
import time

import numpy as np
from PIL import Image

from labelfix.labels.presets import voc_palette
from labelfix.synthetic import shapes_sample

NUM_CLASSES = 21
IGNORE = 255


def make_voc_like(root: str, pairs: int, seed: int = 0) -> list[tuple[str, str, str]]:
    """``pairs`` VOC-size JPEG images + palette masks under ``root``; [(image, mask, id)].

    The image noise is set so the JPEGs weigh about what VOC2012's do (~80-100 KB).
    """
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(root, "JPEGImages"), exist_ok=True)
    os.makedirs(os.path.join(root, "SegmentationClass"), exist_ok=True)
    palette = voc_palette()
    out = []
    for i in range(pairs):
        height, width = (375, 500) if i % 4 else (500, 375)  # VOC has portrait images too
        image, mask = shapes_sample(
            rng, height=height, width=width, num_classes=NUM_CLASSES, shapes=6, noise=14.0
        )
        sid = f"2007_{i:06d}"
        image_path = os.path.join(root, "JPEGImages", sid + ".jpg")
        mask_path = os.path.join(root, "SegmentationClass", sid + ".png")
        Image.fromarray(image).save(image_path, quality=90)
        im = Image.fromarray(mask)
        im.putpalette(palette)
        im.save(mask_path)
        out.append((image_path, mask_path, sid))
    return out


def deeplab_style(pairs, output: str, *, header_size: bool = False) -> None:
    """build_voc2012_data.py's loop, with the mask decoded by Pillow to check its values."""
    import tensorflow as tf

    def bytes_feature(value):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

    def int_feature(value):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))

    with tf.io.TFRecordWriter(output) as writer:
        for image_path, mask_path, sid in pairs:
            image_data = tf.io.gfile.GFile(image_path, "rb").read()
            if header_size:
                with Image.open(io.BytesIO(image_data)) as im:
                    width, height = im.size
            else:
                height, width = tf.io.decode_jpeg(image_data, channels=3).shape[:2]
            seg_data = tf.io.gfile.GFile(mask_path, "rb").read()
            seg = np.array(Image.open(io.BytesIO(seg_data)))
            if seg.shape != (height, width):
                raise RuntimeError("Shape mismatched between image and label.")
            values = np.unique(seg)
            if ((values >= NUM_CLASSES) & (values != IGNORE)).any():
                raise RuntimeError(f"{mask_path}: bad values {values}")
            example = tf.train.Example(
                features=tf.train.Features(
                    feature={
                        "image/encoded": bytes_feature(image_data),
                        "image/filename": bytes_feature(sid.encode()),
                        "image/format": bytes_feature(b"jpeg"),
                        "image/height": int_feature(int(height)),
                        "image/width": int_feature(int(width)),
                        "image/channels": int_feature(3),
                        "image/segmentation/class/encoded": bytes_feature(seg_data),
                        "image/segmentation/class/format": bytes_feature(b"png"),
                    }
                )
            )
            writer.write(example.SerializeToString())


def build_voc2012_as_written(pairs, output: str) -> None:
    """Upstream's loop: TF decodes image and mask for their sizes (no value check)."""
    import tensorflow as tf

    def bytes_feature(value):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

    def int_feature(value):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))

    with tf.io.TFRecordWriter(output) as writer:
        for image_path, mask_path, sid in pairs:
            image_data = tf.io.gfile.GFile(image_path, "rb").read()
            height, width = tf.io.decode_jpeg(image_data, channels=3).shape[:2]
            seg_data = tf.io.gfile.GFile(mask_path, "rb").read()
            seg_height, seg_width = tf.io.decode_png(seg_data, channels=1).shape[:2]
            if (height, width) != (seg_height, seg_width):
                raise RuntimeError("Shape mismatched between image and label.")
            example = tf.train.Example(
                features=tf.train.Features(
                    feature={
                        "image/encoded": bytes_feature(image_data),
                        "image/filename": bytes_feature(sid.encode()),
                        "image/format": bytes_feature(b"jpeg"),
                        "image/height": int_feature(int(height)),
                        "image/width": int_feature(int(width)),
                        "image/channels": int_feature(3),
                        "image/segmentation/class/encoded": bytes_feature(seg_data),
                        "image/segmentation/class/format": bytes_feature(b"png"),
                    }
                )
            )
            writer.write(example.SerializeToString())


def labelfix_writer(root: str, output: str, **options) -> None:
    from labelfix.labels.presets import preset
    from labelfix.records.write import write_dataset

    write_dataset(
        images=os.path.join(root, "JPEGImages"),
        masks=os.path.join(root, "SegmentationClass"),
        output=output,
        label_map=preset("voc"),
        num_classes=NUM_CLASSES,
        num_shards=4,
        **options,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=400)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--workdir", default=None, help="keep the data here (default: temp)")
    args = parser.parse_args(argv)

    import tensorflow as tf  # imported once, before any timing, for every writer

    tf.constant(0)
    root = args.workdir or tempfile.mkdtemp(prefix="bench-tfrecord-")
    try:
        start = time.perf_counter()
        pairs = make_voc_like(os.path.join(root, "data"), args.pairs)
        print(
            f"generated {len(pairs)} VOC-size pairs in {time.perf_counter() - start:.1f}s "
            f"({os.cpu_count()} cores)",
            file=sys.stderr,
        )
        out = os.path.join(root, "out")
        os.makedirs(out, exist_ok=True)
        data = os.path.join(root, "data")
        rows = [
            ("deeplab-style", lambda: deeplab_style(pairs, os.path.join(out, "a.tfrecord"))),
            (
                "deeplab-style, header size",
                lambda: deeplab_style(pairs, os.path.join(out, "b.tfrecord"), header_size=True),
            ),
            (
                "build_voc2012_data.py as written",
                lambda: build_voc2012_as_written(pairs, os.path.join(out, "c.tfrecord")),
            ),
            ("labelfix png", lambda: labelfix_writer(data, os.path.join(out, "png"))),
            (
                "labelfix raw",
                lambda: labelfix_writer(data, os.path.join(out, "raw"), mask_encoding="raw"),
            ),
            (
                "labelfix png gzip",
                lambda: labelfix_writer(data, os.path.join(out, "gz"), compression="gzip"),
            ),
        ]
        results: dict[str, list[float]] = {name: [] for name, _ in rows}
        for _ in range(args.repeat):  # round robin, so a busy moment hits every writer alike
            for name, func in rows:
                start = time.perf_counter()
                func()
                results[name].append(time.perf_counter() - start)
        base = min(results["deeplab-style"])
        light = min(results["deeplab-style, header size"])
        print(
            f"\n{args.pairs} pairs, 500x375 JPEG + palette PNG, {os.cpu_count()} cores, "
            f"best of {args.repeat} round-robin runs\n"
        )
        print(
            f"  {'writer':<34} {'best s':>7} {'median':>7} {'first':>7} {'pairs/s':>8} "
            f"{'vs deeplab':>10} {'vs header':>9}"
        )
        for name, times in results.items():
            best = min(times)
            print(
                f"  {name:<34} {best:7.3f} {statistics.median(times):7.3f} {times[0]:7.3f} "
                f"{args.pairs / best:8.0f} {base / best:9.2f}x {light / best:8.2f}x"
            )
        print(
            "\n  first: the first run in this process (labelfix's includes starting its worker"
            " processes)\n  load average at the end: "
            + ", ".join(f"{x:.2f}" for x in os.getloadavg())
        )
    finally:
        if args.workdir is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
