"""Generate the small bundled dataset in examples/data (committed, with this script).

A handful of RGB images of coloured shapes, of mixed sizes and orientations (landscape 160x120,
portrait 120x160, and 176x136, as real datasets mix them), with masks in the forms real datasets
use: Pascal-VOC-style palette PNGs with 255 borders (train), plain 8-bit PNGs (val), one 16-bit
PNG (val/0012), and a class-names file. Run from the repository root:

    python examples/make_example_data.py
"""

from __future__ import annotations

import os
import shutil

import numpy as np
from PIL import Image

from labelfix.labels.presets import voc_palette
from labelfix.synthetic import shapes_sample

CLASSES = ["background", "red", "green", "blue", "yellow", "magenta"]
#: (height, width) of the images, in turn: landscape, portrait, another size.
SIZES = ((120, 160), (160, 120), (136, 176))
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


def main() -> None:
    rng = np.random.default_rng(2026)
    shutil.rmtree(ROOT, ignore_errors=True)
    for split, ids in (("train", range(1, 9)), ("val", range(9, 13))):
        os.makedirs(os.path.join(ROOT, "images", split))
        os.makedirs(os.path.join(ROOT, "masks", split))
        for i in ids:
            height, width = SIZES[i % len(SIZES)]
            image, mask = shapes_sample(
                rng, height=height, width=width, num_classes=len(CLASSES), void=255, shapes=5
            )
            name = f"{i:04d}"
            Image.fromarray(image).save(
                os.path.join(ROOT, "images", split, name + ".jpg"), quality=90
            )
            path = os.path.join(ROOT, "masks", split, name + ".png")
            if split == "train":
                im = Image.fromarray(mask)
                im.putpalette(voc_palette())
                im.save(path)
            elif i == 12:
                Image.fromarray(mask.astype(np.uint16)).save(path)  # a 16-bit mask
            else:
                Image.fromarray(mask).save(path)
    with open(os.path.join(ROOT, "classes.txt"), "w") as fh:
        fh.write("\n".join(CLASSES) + "\n")
    with open(os.path.join(ROOT, "train.txt"), "w") as fh:
        fh.write("\n".join(f"{i:04d}" for i in range(1, 9)) + "\n")


if __name__ == "__main__":
    main()
