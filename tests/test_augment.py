"""Augmentation for (image, mask) pairs: identical geometry, nearest neighbour, ignore padding."""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from labelfix.training.augment import (  # noqa: E402
    augment,
    pad_to_multiple,
    random_crop,
    random_flip,
    random_scale,
)


def blocks(height=24, width=36, dtype=np.int32, ignore=-1, block=6):
    """A mask of square blocks with ids 0..4 and one void block; the image's channel 0 repeats
    it."""
    rng = np.random.default_rng(0)
    grid = rng.integers(0, 5, size=(height // block, width // block))
    grid[1, 1] = ignore
    mask = np.kron(grid, np.ones((block, block), int)).astype(dtype)
    image = np.stack(
        [mask.astype(np.float32), np.zeros_like(mask, np.float32), np.ones_like(mask, np.float32)],
        axis=-1,
    )
    return tf.constant(image), tf.constant(mask)


def test_crop_and_flip_keep_image_and_mask_aligned():
    image, mask = blocks()
    for seed in range(6):
        out_image, out_mask = augment(
            image, mask, seed=[seed, 1], crop_size=(16, 16), ignore=-1, scale_range=None
        )
        np.testing.assert_array_equal(out_image[..., 0].numpy(), out_mask.numpy())


def test_scale_uses_nearest_for_masks_only():
    image, mask = blocks(height=48, width=72, block=12)
    originals = set(np.unique(mask.numpy()))
    for seed in range(8):
        out_image, out_mask = random_scale(
            image, mask, seed=[seed, 0], ignore=-1, scale_range=(0.5, 2.0)
        )
        m = out_mask.numpy()
        assert out_mask.dtype == tf.int32
        assert set(np.unique(m)) <= originals  # no invented ids (bilinear would give 0.5, 1.5..)
        # Same geometry: away from block edges (where the bilinear image blends) they agree.
        agree = np.abs(out_image[..., 0].numpy() - m) < 0.5
        interior = np.ones_like(agree)
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                interior &= m == np.roll(m, (dy, dx), axis=(0, 1))
        interior[[0, -1]] = interior[:, [0, -1]] = False
        assert interior.sum() > 0.2 * m.size
        assert agree[interior].all()


def test_padding_uses_ignore_never_zero():
    image, mask = blocks(height=12, width=12)
    out_image, out_mask = random_crop(
        image, mask, seed=[0, 0], crop_size=(32, 48), ignore=-1, image_fill=0.5
    )
    assert out_mask.shape == (32, 48) and out_image.shape == (32, 48, 3)
    np.testing.assert_array_equal(out_mask.numpy()[12:], -1)
    np.testing.assert_array_equal(out_mask.numpy()[:, 12:], -1)
    np.testing.assert_array_equal(out_image.numpy()[12:, :, 0], 0.5)
    np.testing.assert_array_equal(out_mask.numpy()[:12, :12], mask.numpy())


def test_uint8_masks_padded_with_255():
    image, mask = blocks(height=12, width=12, dtype=np.uint8, ignore=255)
    _, out_mask = augment(image, mask, seed=[3, 4], crop_size=(32, 32), ignore=255)
    assert out_mask.dtype == tf.uint8
    values = set(np.unique(out_mask.numpy()))
    assert 255 in values and values <= set(range(5)) | {255}


def test_ignore_that_does_not_fit_the_mask_dtype_is_an_error():
    image, mask = blocks(dtype=np.uint8, ignore=255)
    with pytest.raises(ValueError, match="does not fit the mask dtype uint8"):
        augment(image, mask, seed=[0, 0], crop_size=(16, 16), ignore=-1)


def test_same_seed_same_result_and_flips_happen():
    image, mask = blocks()
    first = augment(image, mask, seed=[7, 7], crop_size=(16, 16), ignore=-1)
    again = augment(image, mask, seed=[7, 7], crop_size=(16, 16), ignore=-1)
    np.testing.assert_array_equal(first[1].numpy(), again[1].numpy())
    flipped = [
        np.array_equal(random_flip(image, mask, seed=[s, 0])[1].numpy(), mask.numpy()[:, ::-1])
        for s in range(20)
    ]
    assert 0 < sum(flipped) < 20


def test_inside_tf_data_with_static_shapes():
    image, mask = blocks()
    ds = tf.data.Dataset.from_tensors((image, mask)).repeat(4)
    seeds = tf.data.Dataset.random(seed=1).batch(2)
    ds = tf.data.Dataset.zip((seeds, ds)).map(
        lambda s, ex: augment(ex[0], ex[1], seed=s, crop_size=(32, 32), ignore=-1)
    )
    assert ds.element_spec[0].shape == (32, 32, 3)
    assert ds.element_spec[1].shape == (32, 32)
    for out_image, out_mask in ds.batch(4):
        assert out_image.shape == (4, 32, 32, 3) and out_mask.shape == (4, 32, 32)


def test_pad_to_multiple():
    image, mask = blocks(height=18, width=30)
    out_image, out_mask = pad_to_multiple(image, mask, multiple=16, ignore=-1)
    assert out_image.shape == (32, 32, 3)
    assert (out_mask.numpy()[18:] == -1).all() and (out_mask.numpy()[:, 30:] == -1).all()


def test_docstring_examples_run():
    import doctest

    import labelfix.training.augment

    result = doctest.testmod(labelfix.training.augment)
    assert result.attempted > 0 and result.failed == 0
