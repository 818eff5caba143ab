"""Seeded, natural-looking JPEG test images at the paper's three size classes.

Decode cost depends on content: white noise inflates entropy decoding, a flat image deflates it.
Real photos are smooth regions, edges and a little sensor noise, so the generator draws exactly
that (research notes §2.3 item 3): a two-colour gradient, low-frequency colour blotches (a tiny
random image upsampled bicubically), filled shapes with hard edges, and mild Gaussian noise,
encoded by Pillow at quality 90 with 4:2:0 chroma subsampling.
"""

from __future__ import annotations

import functools
import io

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["SIZES", "jpeg_for", "make_image", "make_jpeg"]

#: Size classes (width, height): ~0.1 MP, ~1 MP, ~12 MP (a 4:3 phone photo).
SIZES: dict[str, tuple[int, int]] = {
    "small": (384, 256),
    "medium": (1280, 800),
    "large": (4032, 3024),
}


def make_image(width: int, height: int, seed: int = 0) -> Image.Image:
    """An RGB image of ``width`` x ``height`` with photo-like statistics, reproducible from ``seed``."""
    if width < 8 or height < 8:
        raise ValueError(f"image size: expected at least 8x8, got {width}x{height}")
    rng = np.random.default_rng(seed)
    # low-frequency colour field: a 6x5 random image upsampled (cheap even at 12 MP), muted
    small = rng.integers(60, 196, size=(5, 6, 3), dtype=np.uint8)
    base = np.asarray(Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC), dtype=np.float32)
    # a diagonal brightness gradient
    base += np.linspace(-40.0, 40.0, width, dtype=np.float32)[None, :, None]
    base += np.linspace(-25.0, 25.0, height, dtype=np.float32)[:, None, None]
    # texture at two scales (surfaces, foliage): small random fields upsampled bilinearly
    for cells, amp in ((48, 18.0), (6, 10.0)):
        tw, th = max(2, width // cells), max(2, height // cells)
        field = rng.normal(0.0, amp, size=(th, tw)).astype(np.float32)
        up = Image.fromarray(field, mode="F").resize((width, height), Image.Resampling.BILINEAR)
        base += np.asarray(up, dtype=np.float32)[:, :, None]
    img = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    # shapes with hard edges
    draw = ImageDraw.Draw(img)
    scale = min(width, height)
    for _ in range(int(rng.integers(15, 30))):
        x0, y0 = rng.uniform(0, width), rng.uniform(0, height)
        w, h = rng.uniform(0.03, 0.35) * scale, rng.uniform(0.03, 0.35) * scale
        colour = tuple(int(c) for c in rng.integers(20, 236, 3))
        box = (x0, y0, x0 + w, y0 + h)
        kind = int(rng.integers(0, 3))
        if kind == 0:
            draw.ellipse(box, fill=colour, outline=(0, 0, 0), width=max(1, scale // 400))
        elif kind == 1:
            draw.rectangle(box, fill=colour)
        else:
            pts = [(float(rng.uniform(x0, x0 + w)), float(rng.uniform(y0, y0 + h))) for _ in range(3)]
            draw.polygon(pts, fill=colour)
    # mild sensor noise (sigma ~4 grey levels), drawn in int16 to stay cheap at 12 MP
    arr = np.asarray(img, dtype=np.int16)
    noise = rng.normal(0.0, 4.0, size=arr.shape).astype(np.int16)
    arr = np.clip(arr + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(arr)


def make_jpeg(width: int, height: int, seed: int = 0, quality: int = 90) -> bytes:
    """``make_image`` encoded as a baseline JPEG (4:2:0) by Pillow."""
    buf = io.BytesIO()
    make_image(width, height, seed).save(buf, format="JPEG", quality=quality, subsampling="4:2:0")
    return buf.getvalue()


@functools.lru_cache(maxsize=16)
def jpeg_for(size: str, seed: int = 0) -> bytes:
    """The JPEG for a size class (``small``, ``medium``, ``large``), cached per process."""
    if size not in SIZES:
        from dnninfer.errors import expected

        raise expected("image size", f"one of {', '.join(SIZES)}", size)
    w, h = SIZES[size]
    return make_jpeg(w, h, seed)
