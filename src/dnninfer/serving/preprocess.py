"""JPEG decode, resize and normalise: the naive path and the optimised one.

Both produce the same geometry, the usual ImageNet evaluation transform: resize the shorter side
to 256, take the centre 224 x 224, normalise with the ImageNet mean and std.

* naive (what a first server does): Pillow decodes every pixel, resizes the whole image, crops.
* optimised (paper's lever "reduced-resolution decode", research notes §2.2): libjpeg-turbo via
  simplejpeg decodes with DCT scaling straight to the smallest M/8 scale whose shorter side is
  still >= 256 (a 12 MP photo decodes at 1/8 size, skipping most of the IDCT and colour work),
  then one Pillow resize of just the centre box. Output is HWC so a batch stacks into a
  channels-last NCHW tensor for free.

The two paths are not bit-identical (DCT-domain downscaling is a different filter); each is
exact against itself, which is what the serving tests check.
"""

from __future__ import annotations

import io
import time
import warnings
from dataclasses import dataclass

import numpy as np
import simplejpeg
from PIL import Image, UnidentifiedImageError

__all__ = [
    "CROP",
    "MEAN",
    "RESIZE",
    "STD",
    "ImageError",
    "Prepared",
    "check_jpeg",
    "fast_decode",
    "fast_preprocess",
    "fast_resize",
    "naive_decode",
    "naive_preprocess",
    "naive_resize",
    "normalise_chw",
    "normalise_hwc",
    "squash",
]

RESIZE = 256
CROP = 224
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
_SCALE = (1.0 / (255.0 * STD)).astype(np.float32)
_SHIFT = (-MEAN / STD).astype(np.float32)
#: Refuse decompression bombs before decoding: 50 MP is 4x a 12 MP photo.
DEFAULT_MAX_PIXELS = 50_000_000


class ImageError(ValueError):
    """The body is not a usable JPEG. ``status`` is the HTTP status the server answers with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def check_jpeg(body: bytes) -> None:
    """Cheap checks before any decoder runs: non-empty, JPEG SOI marker."""
    if not body:
        raise ImageError("empty body: expected JPEG bytes")
    if body[:2] != b"\xff\xd8":
        raise ImageError(f"not a JPEG: the body does not start with the JPEG SOI marker FFD8 (starts {body[:4].hex()})")


def _check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise ImageError(f"image of {width}x{height} = {width * height} pixels exceeds the limit of {max_pixels}",
                         status=413)


# -- naive: Pillow, full resolution ------------------------------------------------------------
def naive_decode(body: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode every pixel with Pillow (truncated or corrupt data raises ``ImageError``)."""
    check_jpeg(body)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(body))
            if img.format != "JPEG":
                raise ImageError(f"not a JPEG: Pillow reads it as {img.format}")
            _check_pixels(*img.size, max_pixels)
            img.load()
            return img.convert("RGB")
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError("malformed JPEG: Pillow cannot identify the image data") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombWarning,
            Image.DecompressionBombError) as e:
        raise ImageError(f"malformed JPEG: {e}") from None


def naive_resize(img: Image.Image, resize: int = RESIZE, crop: int = CROP) -> Image.Image:
    """Resize the whole image so its shorter side is ``resize``, then take the centre ``crop``."""
    w, h = img.size
    s = resize / min(w, h)
    nw, nh = max(crop, round(w * s)), max(crop, round(h * s))
    img = img.resize((nw, nh), Image.Resampling.BILINEAR)
    left, top = (nw - crop) // 2, (nh - crop) // 2
    return img.crop((left, top, left + crop, top + crop))


def normalise_chw(img: Image.Image | np.ndarray) -> np.ndarray:
    """uint8 HWC -> float32 CHW, ImageNet-normalised."""
    return np.ascontiguousarray(normalise_hwc(np.asarray(img)).transpose(2, 0, 1))


def naive_preprocess(body: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """The naive path in one call (tests compare the server with this)."""
    return normalise_chw(naive_resize(naive_decode(body, max_pixels)))


# -- optimised: DCT-scaled decode, one resize of the centre box ---------------------------------
def fast_decode(body: bytes, target: int = RESIZE, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode with libjpeg-turbo at the smallest M/8 scale whose shorter side is >= ``target``."""
    check_jpeg(body)
    try:
        h, w, _cs, _sub = simplejpeg.decode_jpeg_header(body)
        _check_pixels(w, h, max_pixels)
        if h <= w:
            return simplejpeg.decode_jpeg(body, colorspace="RGB", min_height=min(target, h), strict=True)
        return simplejpeg.decode_jpeg(body, colorspace="RGB", min_width=min(target, w), strict=True)
    except ImageError:
        raise
    except (ValueError, OSError) as e:
        raise ImageError(f"malformed JPEG: {e}") from None


def _centre_box(w: int, h: int, resize: int, crop: int) -> tuple[float, float, float, float]:
    side = min(w, h) * crop / resize
    left, top = (w - side) / 2, (h - side) / 2
    return (left, top, left + side, top + side)


def fast_resize(arr: np.ndarray, resize: int = RESIZE, crop: int = CROP) -> np.ndarray:
    """Resize only the centre box (the region that survives the crop) to ``crop`` x ``crop``."""
    h, w = arr.shape[:2]
    img = Image.fromarray(arr)
    out = img.resize((crop, crop), Image.Resampling.BILINEAR, box=_centre_box(w, h, resize, crop))
    return np.asarray(out)


def normalise_hwc(arr: np.ndarray) -> np.ndarray:
    """uint8 HWC -> float32 HWC, ImageNet-normalised (x / 255 - mean) / std in one multiply-add."""
    out = arr.astype(np.float32)
    out *= _SCALE
    out += _SHIFT
    return out


def squash(img: Image.Image | np.ndarray, size: int = CROP) -> np.ndarray:
    """The whole image resized to ``size`` x ``size`` (aspect not kept): the detector's input."""
    pil = img if isinstance(img, Image.Image) else Image.fromarray(img)
    return np.asarray(pil.resize((size, size), Image.Resampling.BILINEAR))


@dataclass
class Prepared:
    """Output of one preprocessing call with the seconds each stage took (measured where it ran)."""

    tensor: np.ndarray
    decode_s: float
    resize_s: float
    normalise_s: float
    started: float
    image: np.ndarray | Image.Image | None = None
    size: tuple[int, int] = (0, 0)  # (width, height) of the original image


def fast_preprocess(body: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, keep_image: bool = False) -> Prepared:
    """decode -> resize -> normalise (HWC), timed per stage; run in a worker thread."""
    t0 = time.perf_counter()
    arr = fast_decode(body, max_pixels=max_pixels)
    t1 = time.perf_counter()
    small = fast_resize(arr)
    t2 = time.perf_counter()
    x = normalise_hwc(small)
    t3 = time.perf_counter()
    h, w = simplejpeg.decode_jpeg_header(body)[:2]
    return Prepared(x, t1 - t0, t2 - t1, t3 - t2, t0, arr if keep_image else None, (w, h))
