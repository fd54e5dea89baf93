#!/usr/bin/env bash
# Regenerate README's pictures from the bundled example data (examples/data):
#   docs/contact-sheet.png  `labelfix show` over the images
#   docs/report.png         headless Chromium's screenshot of `labelfix stats --html`
# Needs labelfix with its viz extra and Pillow on PATH (PATH="$PWD/.venv/bin:$PATH") and chromium.
# Both pictures are quantized to 256 colours (no dithering) to stay small.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
data=examples/data

labelfix show "$data/masks" --images "$data/images" --ignore 255 -n 6 \
    --class-names "$data/classes.txt" --zoom 2 --columns 3 -o "$tmp/contact-sheet.png" >/dev/null
labelfix stats "$data/masks" --ignore 255 -n 6 --class-names "$data/classes.txt" \
    --html "$tmp/report.html" >/dev/null 2>&1
chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --user-data-dir="$tmp/profile" \
    --window-size=1100,2600 --screenshot="$tmp/report.png" "file://$tmp/report.html" \
    >/dev/null 2>&1

python3 - "$tmp" docs <<'PY'
import sys

import numpy as np
from PIL import Image

tmp, docs = sys.argv[1:]
for name, bottom_margin in (("contact-sheet.png", 12), ("report.png", 24)):
    with Image.open(f"{tmp}/{name}") as im:
        rgb = im.convert("RGB")
    rows = np.flatnonzero((np.asarray(rgb) < 250).any(axis=(1, 2)))
    rgb = rgb.crop((0, 0, rgb.width, min(rgb.height, int(rows[-1]) + 1 + bottom_margin)))
    small = rgb.quantize(colors=256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
    small.save(f"{docs}/{name}", optimize=True)
    print(f"{docs}/{name}: {small.width}x{small.height}")
PY
