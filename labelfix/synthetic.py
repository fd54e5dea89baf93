"""Synthetic segmentation data for examples, tests and benchmarks (no downloads).

>>> image, mask = shapes_sample(np.random.default_rng(0), height=64, width=96, num_classes=4)
>>> image.shape, image.dtype, mask.shape, mask.dtype
((64, 96, 3), dtype('uint8'), (64, 96), dtype('uint8'))
"""

from __future__ import annotations

import numpy as np

#: A distinct, saturated colour per class for the synthetic images (class k -> CLASS_COLOURS[k]).
CLASS_COLOURS = np.array(
    [
        (40, 40, 40),
        (220, 40, 40),
        (40, 200, 60),
        (50, 80, 230),
        (230, 210, 40),
        (200, 60, 220),
        (40, 210, 220),
        (240, 140, 30),
        (140, 90, 40),
        (250, 250, 250),
        (120, 120, 200),
        (30, 120, 30),
        (200, 120, 160),
        (90, 200, 150),
        (160, 160, 60),
        (60, 60, 140),
        (240, 100, 100),
        (100, 240, 100),
        (100, 100, 240),
        (180, 30, 90),
        (30, 90, 180),
    ],
    dtype=np.uint8,
)


def shapes_sample(
    rng: np.random.Generator,
    *,
    height: int,
    width: int,
    num_classes: int,
    void: int | None = 255,
    border: int = 2,
    shapes: int = 4,
    noise: float = 12.0,
) -> tuple[np.ndarray, np.ndarray]:
    """One learnable sample: class-coloured rectangles and discs on class 0 background.

    Each shape's outline of ``border`` pixels is ``void`` (like VOC's 255 borders); the image
    colour says the class, plus Gaussian noise. Returns ``(image uint8 [H,W,3], mask [H,W])``
    (uint8, or uint16 when ``void`` or a class id exceeds 255).
    """
    if num_classes > len(CLASS_COLOURS):
        raise ValueError(f"at most {len(CLASS_COLOURS)} classes")
    dtype = np.uint16 if max(num_classes - 1, void or 0) > 255 else np.uint8
    mask = np.zeros((height, width), dtype=dtype)
    yy, xx = np.mgrid[0:height, 0:width]
    for _ in range(shapes):
        cls = int(rng.integers(1, num_classes)) if num_classes > 1 else 0
        cy, cx = rng.integers(0, height), rng.integers(0, width)
        ry = int(rng.integers(max(3, height // 10), max(4, height // 3)))
        rx = int(rng.integers(max(3, width // 10), max(4, width // 3)))
        if rng.random() < 0.5:
            inside = (np.abs(yy - cy) <= ry) & (np.abs(xx - cx) <= rx)
            ring = inside & ~((np.abs(yy - cy) <= ry - border) & (np.abs(xx - cx) <= rx - border))
        else:
            d = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2
            inside = d <= 1.0
            shrink = (1 - border / min(ry, rx)) ** 2
            ring = inside & (d > shrink)
        mask[inside] = cls
        if void is not None and border:
            mask[ring] = void
    colours = CLASS_COLOURS[np.minimum(mask, num_classes - 1).astype(np.intp)].astype(np.float32)
    if void is not None:
        # void pixels get arbitrary content: the loss must not care what is there
        is_void = mask == void
        colours[is_void] = rng.uniform(0, 255, size=(int(is_void.sum()), 3))
    colours += rng.normal(0.0, noise, size=colours.shape)
    image = np.clip(colours, 0, 255).astype(np.uint8)
    return image, mask


def cityscapes_like_mask(
    rng: np.random.Generator, *, height: int = 1024, width: int = 2048
) -> np.ndarray:
    """A uint8 mask shaped like Cityscapes labelIds: road/sky bands, buildings, objects, void.

    Region boundaries are irregular (per-row jitter), so PNG sizes and decode costs are close
    to the real thing (~20-60 KB per 2048x1024 mask).
    """
    mask = np.empty((height, width), np.uint8)
    horizon = int(height * rng.uniform(0.35, 0.5))
    mask[:horizon] = 23  # sky
    mask[horizon:] = 7  # road
    x = np.arange(width)
    # building skyline with a jittered top edge
    top = (horizon * rng.uniform(0.2, 0.6) + 40 * np.sin(x / rng.uniform(30, 90))).astype(int)
    top = np.clip(top + rng.integers(-3, 4, size=width), 0, horizon)
    rows = np.arange(height)[:, None]
    mask[(rows >= top[None, :]) & (rows < horizon)] = 11
    # sidewalks
    side = int(width * rng.uniform(0.15, 0.3))
    mask[horizon:, :side] = 8
    mask[horizon:, width - side :] = 8
    ids = np.array([17, 19, 20, 21, 22, 24, 25, 26, 26, 26, 27, 28, 31, 32, 33, 4, 5, 13])
    for _ in range(int(rng.integers(25, 60))):
        cls = int(rng.choice(ids))
        cy = int(rng.integers(horizon // 2, height))
        cx = int(rng.integers(0, width))
        ry = int(rng.integers(8, 120))
        rx = int(rng.integers(8, 200))
        y0, y1 = max(0, cy - ry), min(height, cy + ry)
        x0, x1 = max(0, cx - rx), min(width, cx + rx)
        yy, xx = np.mgrid[y0:y1, x0:x1]
        jitter = rng.uniform(0.85, 1.15, size=(y1 - y0, 1))
        inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / (rx * jitter)) ** 2 <= 1.0
        mask[y0:y1, x0:x1][inside] = cls
    # ego vehicle and out-of-roi border, as in real labelIds
    hood = int(height * 0.9)
    mask[hood:, :] = 1
    mask[:, :4] = 3
    mask[:, -4:] = 3
    return mask


# ----------------------------------------------------------------------------- mask families
# Masks of the shapes real datasets have, for the speed benchmarks and the tests that compare
# the fast PNG paths with Pillow on each (benchmarks/bench_cli.py).


def polygon_mask(
    rng: np.random.Generator,
    *,
    height: int = 1024,
    width: int = 2048,
    num_classes: int = 19,
    void: int = 255,
) -> np.ndarray:
    """A uint8 mask of polygons rasterized at full resolution, as annotation tools draw them
    (Cityscapes gtFine): slanted background regions, then 40-90 overlapping polygons of 5-25
    vertices, some outlined or filled with ``void``, and a void band at the bottom (ego car)."""
    from PIL import Image, ImageDraw

    im = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(im)
    horizon = height * rng.uniform(0.35, 0.5)
    tilt = rng.uniform(-0.05, 0.05) * height
    draw.polygon([(0, 0), (width, 0), (width, horizon + tilt), (0, horizon - tilt)], fill=10)
    for _ in range(int(rng.integers(40, 90))):
        value = int(rng.integers(0, num_classes)) if rng.random() > 0.08 else void
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        radius = rng.uniform(8, 0.25 * height)
        corners = int(rng.integers(5, 25))
        angle = np.sort(rng.uniform(0, 2 * np.pi, corners))
        reach = radius * rng.uniform(0.5, 1.3, corners)
        stretch = rng.uniform(0.6, 2.0)
        points = list(
            zip(
                (cx + stretch * reach * np.cos(angle)).tolist(),
                (cy + reach * np.sin(angle)).tolist(),
                strict=True,
            )
        )
        draw.polygon(points, fill=value)
        if rng.random() < 0.3:
            draw.line([*points, points[0]], fill=void, width=int(rng.integers(1, 4)))
    mask = np.array(im)
    mask[int(height * 0.92) :] = void
    return mask


def _smooth_argmax(
    rng: np.random.Generator, height: int, width: int, num_classes: int, scale: float
) -> np.ndarray:
    """Class ids as the argmax of ``num_classes`` smooth random fields (features ~``scale`` px)."""
    gh, gw = int(height / scale) + 2, int(width / scale) + 2
    ys = np.linspace(0, gh - 1.001, height)
    xs = np.linspace(0, gw - 1.001, width)
    y0, x0 = ys.astype(np.intp), xs.astype(np.intp)
    fy, fx = (ys - y0).astype(np.float32)[:, None], (xs - x0).astype(np.float32)[None, :]
    best = np.full((height, width), -np.inf, np.float32)
    ids = np.zeros((height, width), np.uint8 if num_classes <= 256 else np.uint16)
    for k in range(num_classes):
        grid = rng.normal(0, 1, (gh, gw)).astype(np.float32)
        top = grid[y0][:, x0] * (1 - fx) + grid[y0][:, x0 + 1] * fx
        bottom = grid[y0 + 1][:, x0] * (1 - fx) + grid[y0 + 1][:, x0 + 1] * fx
        field = top * (1 - fy) + bottom * fy
        wins = field > best
        best[wins] = field[wins]
        ids[wins] = k
    return ids


def superpixel_mask(
    rng: np.random.Generator,
    *,
    height: int = 1024,
    width: int = 2048,
    num_classes: int = 19,
    void: int = 255,
    jitter: int = 2,
) -> np.ndarray:
    """A uint8 mask with irregular, noisy region boundaries (superpixel-based labelling): smooth
    regions whose every boundary pixel is displaced by up to ``jitter`` pixels at random, with
    ``void`` on a few regions."""
    coarse = _smooth_argmax(rng, -(-height // 4), -(-width // 4), num_classes + 1, scale=40)
    coarse[coarse == num_classes] = void
    ids = np.repeat(np.repeat(coarse, 4, axis=0), 4, axis=1)[:height, :width]
    yy = np.arange(height)[:, None] + rng.integers(-jitter, jitter + 1, (height, width))
    xx = np.arange(width)[None, :] + rng.integers(-jitter, jitter + 1, (height, width))
    return ids[np.clip(yy, 0, height - 1), np.clip(xx, 0, width - 1)].astype(np.uint8)


def prediction_mask(
    rng: np.random.Generator,
    *,
    height: int = 1024,
    width: int = 2048,
    num_classes: int = 19,
    void: int = 255,
    noise: float = 0.15,
) -> np.ndarray:
    """A uint8 mask like a model's prediction at half resolution upsampled 2x (nearest): the
    argmax of noisy smooth class scores, staircase boundaries and small islands, with the least
    confident pixels set to ``void``."""
    h, w = -(-height // 2), -(-width // 2)
    ids = _smooth_argmax(rng, h, w, num_classes, scale=120)
    flip = rng.random((h, w)) < noise * 0.2  # a few scattered mistakes next to a boundary
    shifted = np.roll(ids, int(rng.integers(1, 3)), axis=1)
    ids = np.where(flip, shifted, ids)
    ids[rng.random((h, w)) < noise * 0.02] = void
    up = np.repeat(np.repeat(ids, 2, axis=0), 2, axis=1)
    return up[:height, :width].astype(np.uint8)


def many_class_mask(
    rng: np.random.Generator,
    *,
    height: int = 1024,
    width: int = 2048,
    num_classes: int = 1000,
    void: int = 65535,
) -> np.ndarray:
    """A uint16 mask of ids up to ``num_classes`` (ADE20K-full, COCO-stuff + things, LVIS):
    polygons of many classes over a smooth background of regions, ``void`` in a band."""
    from PIL import Image, ImageDraw

    back = _smooth_argmax(rng, height // 8, width // 8, 24, scale=12).astype(np.int32)
    classes = rng.choice(num_classes, 24, replace=False)
    base = np.repeat(np.repeat(classes[back], 8, axis=0), 8, axis=1)
    im = Image.fromarray(base.astype(np.int32), "I")
    draw = ImageDraw.Draw(im)
    for _ in range(int(rng.integers(60, 120))):
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        radius = rng.uniform(6, 0.15 * height)
        corners = int(rng.integers(4, 16))
        angle = np.sort(rng.uniform(0, 2 * np.pi, corners))
        reach = radius * rng.uniform(0.5, 1.3, corners)
        xs, ys = (cx + reach * np.cos(angle)).tolist(), (cy + reach * np.sin(angle)).tolist()
        draw.polygon(list(zip(xs, ys, strict=True)), fill=int(rng.integers(0, num_classes)))
    mask = np.array(im).astype(np.uint16)
    mask[: max(1, height // 40)] = void
    return mask
