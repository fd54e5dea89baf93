"""``labelfix predict``: one mask per image, whole and at the image's size, written as class
ids that labelfix's own commands read back as such."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

import keras  # noqa: E402
from click.testing import CliRunner  # noqa: E402
from PIL import Image  # noqa: E402

from labelfix.errors import LabelfixError  # noqa: E402
from labelfix.training.model import build_model  # noqa: E402
from labelfix.training.predict import palette_for, predict  # noqa: E402

#: Relative path -> (height, width): landscape, portrait, nested, a JPEG; none a multiple of 16.
IMAGES = {"a/0001.png": (20, 30), "a/b/0002.jpg": (37, 23), "0003.png": (17, 17)}


def run_cli(*args):
    from labelfix.cli import main

    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """``(images dir, model path, model, the CLI run's output dir)``: the CLI has run once."""
    root = tmp_path_factory.mktemp("predict")
    rng = np.random.default_rng(0)
    for rel, (h, w) in IMAGES.items():
        path = root / "images" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    (root / "images" / "notes.txt").write_text("not an image")
    keras.utils.set_random_seed(5)
    model = build_model(num_classes=4, width=4)
    model.save(root / "model.keras")
    out = root / "masks"
    result = run_cli("predict", root / "model.keras", root / "images", "-o", out, "-b", 2)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"Wrote 3 mask(s) to {out} (palette PNG, Pascal VOC colours")
    return root / "images", root / "model.keras", model, out


def decoded(path):
    """The image as training and predict decode it."""
    return tf.cast(tf.io.decode_image(tf.io.read_file(str(path)), channels=3), tf.float32)


def test_one_palette_png_per_image_at_its_size_equal_to_whole_image_prediction(setup):
    """Same relative path, .png, the image's size, palette indices 0..3, and exactly the argmax
    of the model run on that image alone (padded to multiples of 16, logits cropped back)."""
    images, _, model, out = setup
    for rel, (h, w) in IMAGES.items():
        mask_file = (out / rel).with_suffix(".png")
        with Image.open(mask_file) as im:
            assert im.mode == "P" and im.size == (w, h)
            mask = np.asarray(im)
        image = decoded(images / rel)
        padded = tf.pad(image, [[0, -h % 16], [0, -w % 16], [0, 0]])[tf.newaxis]
        expected = np.argmax(model(padded, training=False)[0, :h, :w].numpy(), axis=-1)
        np.testing.assert_array_equal(mask, expected)
    assert not (out / "notes.png").exists()


def test_stats_and_validate_read_the_masks_as_class_ids(setup):
    out = setup[3]
    result = run_cli("validate", out, "--num-classes", 4)
    assert result.exit_code == 0, result.output
    assert "OK: 3 files, 0 with problems" in result.stdout
    result = run_cli("stats", out, "--num-classes", 4, "--json")
    assert result.exit_code == 0, result.output
    text = json.dumps(json.loads(result.stdout))
    assert '"palette"' in text  # read as palette indices, not colours
    report = json.loads(result.stdout)
    values = {int(v["value"]) for v in report["values"]}
    assert values and values <= {0, 1, 2, 3}


def test_npy_format_and_the_manifest_palette(setup, tmp_path):
    images, _, model, out = setup
    result = predict(model, images / "a", tmp_path / "npy", fmt="npy")
    assert result.format == "npy" and len(result.masks) == 2
    assert result.masks[0] == tmp_path / "npy" / "0001.npy"
    array = np.load(result.masks[0])
    assert array.dtype == np.uint8 and array.shape == IMAGES["a/0001.png"]
    with Image.open(out / "a" / "0001.png") as im:
        np.testing.assert_array_equal(array, np.asarray(im))
    assert run_cli("validate", tmp_path / "npy", "-n", 4).exit_code == 0

    colours = [[10, 20, 30], [40, 50, 60], [70, 80, 90], [1, 2, 3]]
    palette, kind = palette_for({"palette": colours}, 4)
    assert kind == "manifest" and palette[:12] == bytes(c for rgb in colours for c in rgb)
    assert palette_for(None, 4)[1] == "voc" and palette_for(None, 300) == (None, "none")
    with pytest.raises(LabelfixError, match="num_classes=5, the model scores 4 classes"):
        predict(model, images, tmp_path / "x", manifest={"num_classes": 5})


def test_a_model_with_a_fixed_input_size_runs_on_tiles(tmp_path):
    """A static 16x16 model on a 20x30 image: padded to 32x32, four tiles, cropped back; a 1x1
    convolution gives on tiles what it gives on the whole image."""
    keras.utils.set_random_seed(2)
    model = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Conv2D(3, 1)])
    image = np.random.default_rng(1).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "x.png")
    result = predict(model, tmp_path / "x.png", tmp_path / "out")
    with Image.open(result.masks[0]) as im:
        mask = np.asarray(im)
    kernel, bias = (w.numpy() for w in model.layers[0].weights)
    expected = np.argmax(image.astype(np.float32) @ kernel[0, 0] + bias, axis=-1)
    np.testing.assert_array_equal(mask, expected)


def test_predict_never_replaces_images_ground_truth_or_one_of_its_own_masks(setup, tmp_path):
    """Regression (a hostile-user pass): ``-o`` holding ground-truth masks, ``-o`` equal to the
    images directory, and two images of one stem (a.jpg, a.png) all lost files silently. Now
    each is an error naming the file before anything is written; a rerun into its own output
    replaces its own masks; --overwrite replaces other files but never an image."""
    images, model_path, _, out = setup
    gt = tmp_path / "gt"
    (gt / "a").mkdir(parents=True)
    (gt / "a" / "0001.png").write_bytes(b"ground truth")
    result = run_cli("predict", model_path, images, "-o", gt)
    assert result.exit_code == 2
    assert f"{gt / 'a' / '0001.png'} already exists and labelfix did not write it" in result.stderr
    assert (gt / "a" / "0001.png").read_bytes() == b"ground truth"
    assert sorted(p.name for p in gt.rglob("*")) == ["0001.png", "a"]
    result = run_cli("predict", model_path, images, "-o", gt, "--overwrite")
    assert result.exit_code == 0, result.output
    assert (gt / "a" / "0001.png").read_bytes() != b"ground truth"
    before = {p: p.read_bytes() for p in images.rglob("*.png")}
    result = run_cli("predict", model_path, images, "-o", images, "--overwrite")
    assert result.exit_code == 2
    assert f"{images} is the input {images}, which this `labelfix predict` reads" in result.stderr
    result = run_cli("predict", model_path, images, "-o", images / "masks")  # among the images
    assert result.exit_code == 2
    assert f"{images / 'masks'} is inside the input {images}" in result.stderr
    assert {p: p.read_bytes() for p in images.rglob("*.png")} == before
    result = run_cli("predict", model_path, images, "-o", out)  # its own output: replaced
    assert result.exit_code == 0, result.output
    twins = tmp_path / "twins"
    twins.mkdir()
    Image.new("RGB", (8, 8)).save(twins / "a.jpg")
    Image.new("RGB", (8, 8)).save(twins / "a.png")
    result = run_cli("predict", model_path, twins, "-o", tmp_path / "p")
    assert result.exit_code == 1
    assert "a.jpg and" in result.stderr and "would both be predicted into" in result.stderr
    assert not (tmp_path / "p").exists()


def test_libjpeg_complaints_become_one_labelfix_warning(setup, tmp_path, capfd):
    """Regression (issue 21): libjpeg inside TensorFlow's decoder prints its complaints itself
    ("Corrupt JPEG data: 216 extraneous bytes before marker 0xda", "Improper call to JPEG
    library in state 201"): stray lines among labelfix's. They are collected while the images
    decode and said in one labelfix warning; an image that does not decode is one error that
    names it, without the stray line."""
    _, model, _, _ = setup
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
    good = tmp_path / "good.jpg"
    Image.fromarray(pixels).save(good, format="JPEG")
    data = good.read_bytes()
    damaged = tmp_path / "damaged" / "x.jpg"
    damaged.parent.mkdir()
    damaged.write_bytes(data[:300] + bytes(200) + data[500:])  # decodes, with a complaint
    capfd.readouterr()
    result = run_cli("predict", model, damaged.parent, "-o", tmp_path / "out1")
    assert result.exit_code == 0, result.output
    assert re.fullmatch(
        r"labelfix: warning: TensorFlow's image decoders printed 1 message\(s\) about damaged "
        r"image data, e\.g\. 'Corrupt JPEG data: \d+ extraneous bytes before marker 0x[0-9a-f]+'"
        r": the images decoded, maybe not all of them as they should \(-v shows each message "
        r"as it comes\)\n",
        result.stderr,
    ), result.stderr
    cut = tmp_path / "cut" / "x.jpg"
    cut.parent.mkdir()
    cut.write_bytes(data[:200])
    result = run_cli("predict", model, cut.parent, "-o", tmp_path / "out2")
    assert result.exit_code == 1
    assert (
        result.stderr
        == f"labelfix: error: {cut}: does not decode completely (Truncated File Read)\n"
    )
    assert "JPEG" not in capfd.readouterr().err  # nothing reached the real stderr
