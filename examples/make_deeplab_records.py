"""Write examples/data's train split as DeepLab's ``build_voc2012_data.py`` writes VOC: records
for README's "I already have records" section, without TensorFlow.

DeepLab's writer (``research/deeplab/datasets/build_data.py``, ``image_seg_to_tfexample``)
stores each mask FILE's bytes as they are (the palette PNGs here, as VOC's SegmentationClass
unless ``remove_gt_colormap.py`` ran), the image's bytes, ``image/filename`` = the stem,
``image/format`` "jpeg", height, width, ``image/channels`` 3 and
``image/segmentation/class/format`` "png", in ``{split}-%05d-of-00004.tfrecord`` shards of
ceil(n / 4) records each. Run from the directory that should hold ``deeplab/``:

    python examples/make_deeplab_records.py [DATA] [OUT]
"""

from __future__ import annotations

import math
import os
import sys

from PIL import Image

from labelfix.records.example import serialize_example
from labelfix.records.framing import write_record

NUM_SHARDS = 4


def main(data: str, out: str, split: str = "train") -> None:
    stems = sorted(n[:-4] for n in os.listdir(os.path.join(data, "masks", split)))
    os.makedirs(out, exist_ok=True)
    per_shard = math.ceil(len(stems) / NUM_SHARDS)
    for shard in range(NUM_SHARDS):
        name = f"{split}-{shard:05d}-of-{NUM_SHARDS:05d}.tfrecord"
        with open(os.path.join(out, name), "wb") as fh:
            for stem in stems[shard * per_shard : (shard + 1) * per_shard]:
                image_path = os.path.join(data, "images", split, stem + ".jpg")
                with open(image_path, "rb") as f:
                    image = f.read()
                with open(os.path.join(data, "masks", split, stem + ".png"), "rb") as f:
                    seg = f.read()
                with Image.open(image_path) as im:
                    width, height = im.size
                example = {
                    "image/encoded": image,
                    "image/filename": stem,
                    "image/format": "jpeg",
                    "image/height": height,
                    "image/width": width,
                    "image/channels": 3,
                    "image/segmentation/class/encoded": seg,
                    "image/segmentation/class/format": "png",
                }
                write_record(fh, serialize_example(example))
    print(f"wrote {NUM_SHARDS} shards of {split} to {out}")


if __name__ == "__main__":
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
    main(
        sys.argv[1] if len(sys.argv) > 1 else here, sys.argv[2] if len(sys.argv) > 2 else "deeplab"
    )
