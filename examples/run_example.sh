#!/usr/bin/env bash
# The main job on the bundled example data (examples/data): ask doctor what convention it
# follows, inspect, draw and validate the masks,
# write TFRecords ready for an ignore-aware loss, verify them, train a small model (about half a
# minute on a CPU), evaluate it on the val split and predict masks for the val images; then the
# binary case: the same masks as foreground/background, trained as one sigmoid channel.
# Run from anywhere, with labelfix installed ('.[tf]'); outputs go to ${1:-example-output}/.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
data="$here/data"
out=${1:-example-output}
rm -rf "$out"
mkdir -p "$out"

echo "== labelfix doctor (what convention the dataset follows, and the commands to run)"
labelfix doctor "$data" --output "$out/records" --model "$out/model"

echo "== labelfix stats"
labelfix stats "$data/masks" --ignore 255 --num-classes 6

echo "== labelfix show (contact sheet: class colours over the images, void hatched)"
labelfix show "$data/masks" --images "$data/images" --ignore 255 --num-classes 6 \
    --class-names "$data/classes.txt" --zoom 2 -o "$out/contact-sheet.png"

echo "== labelfix stats --html"
# The HTML report needs matplotlib (pip install 'labelfix[viz]'): skipped, saying so, without it.
if labelfix stats "$data/masks" --ignore 255 --num-classes 6 --class-names "$data/classes.txt" \
    --html "$out/report.html" > /dev/null 2> "$out/stats-html.log"; then
    echo "wrote $out/report.html (open it in a browser)"
elif grep -q "needs matplotlib" "$out/stats-html.log"; then
    echo "skipped: $(cat "$out/stats-html.log")"
else
    cat "$out/stats-html.log" >&2
    exit 1
fi

echo "== labelfix validate"
labelfix validate "$data/masks" --num-classes 6 --ignore 255 --images "$data/images" \
    --json > "$out/validate.json"
echo "clean: every mask holds only ids 0..5 or 255, and every image matches ($out/validate.json)"

echo "== labelfix remap (void 255 -> -1, written as signed .npy)"
labelfix remap --ignore 255 --out -1 "$data/masks" --output "$out/masks-npy"

for split in train val; do
    echo "== labelfix to-tfrecord --split $split"
    labelfix to-tfrecord --images "$data/images/$split" --masks "$data/masks/$split" \
        --output "$out/records" --split "$split" --num-classes 6 --ignore 255 --out -1 \
        --class-names "$data/classes.txt"
    echo "== labelfix verify --split $split"
    labelfix verify "$out/records" --split "$split"
done

echo "== labelfix train"
labelfix train "$out/records" --num-classes 6 --epochs 30 --batch-size 4 --val-split val \
    --crop-size 112x160 --class-weights auto --output "$out/model"

echo "== labelfix evaluate (val split, full resolution: per-class IoU, confusion matrix)"
labelfix evaluate "$out/model/model.keras" "$out/records" --split val --output "$out/evaluate"

echo "== labelfix predict (val images -> palette PNG masks at each image's size)"
labelfix predict "$out/model/model.keras" "$data/images/val" --output "$out/predictions" \
    --records "$out/records" --split val
labelfix validate "$out/predictions" --num-classes 6 > /dev/null
echo "the predicted masks hold only class ids 0..5 (labelfix validate: clean)"

echo "== binary segmentation: every coloured shape is foreground (remap 2..5 -> 1; void stays 255)"
labelfix remap --map 2:1 --map 3:1 --map 4:1 --map 5:1 -n 2 --ignore 255 "$data/masks" \
    --output "$out/masks-binary"
printf 'background\nforeground\n' > "$out/binary-classes.txt"
for split in train val; do
    labelfix to-tfrecord --images "$data/images/$split" --masks "$out/masks-binary/$split" \
        --output "$out/records-binary" --split "$split" --num-classes 2 --ignore 255 --out -1 \
        --class-names "$out/binary-classes.txt"
done

echo "== labelfix train --binary --loss ce+dice (one sigmoid channel, scored as 2 classes)"
labelfix train "$out/records-binary" --num-classes 2 --binary --loss ce+dice --epochs 15 \
    --batch-size 4 --val-split val --crop-size 112x160 --output "$out/model-binary"
labelfix evaluate "$out/model-binary/model.keras" "$out/records-binary" --split val \
    --output "$out/evaluate-binary"
