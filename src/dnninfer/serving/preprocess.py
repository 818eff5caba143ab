"""JPEG decode, resize and normalise: the naive path and the optimised one.

Both produce the same geometry, the usual ImageNet evaluation transform: resize the shorter side
to 256, take the centre 224 x 224, normalise with the ImageNet mean and std.

* naive (what a first server does): decode every pixel at full scale (libjpeg-turbo, the same
  library and the same pixels as Pillow's decoder), Pillow resizes the whole image, then crops.
* optimised (paper's lever "reduced-resolution decode", research notes §2.2): libjpeg-turbo via
  simplejpeg decodes with DCT scaling straight to the smallest M/8 scale whose shorter side is
  still >= 256 (a 12 MP photo decodes at 1/8 size, skipping most of the IDCT and colour work),
  then one Pillow resize of just the centre box. Output is HWC so a batch stacks into a
  channels-last NCHW tensor for free.

The two paths are not bit-identical (DCT-domain downscaling is a different filter); each is
exact against itself, which is what the serving tests check.

Both paths first read the JPEG's marker structure with ``read_header`` (no pixel is decoded):
the frame size from the SOF marker, so a tiny file that claims 7000 x 7000 is refused with 413
before any decoder allocates for it; truncated or mis-marked files get one 400 reason, the same
in both pipelines; and the EXIF Orientation tag, which both paths apply so a phone photo taken
sideways is classified upright.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass

import numpy as np
from PIL import Image

__all__ = [
    "CROP",
    "MEAN",
    "RESIZE",
    "STD",
    "ImageError",
    "JpegHeader",
    "Prepared",
    "apply_orientation",
    "check_jpeg",
    "fast_decode",
    "fast_preprocess",
    "fast_resize",
    "naive_decode",
    "naive_preprocess",
    "naive_resize",
    "normalise_chw",
    "normalise_hwc",
    "read_header",
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
#: Refuse slivers too: the naive path resizes the shorter side to 256 before it crops, so a 65000 x 1
#: header would ask for a 16.6 M x 256 image. 64:1 keeps that under 4.2 MP; no photo is thinner.
MAX_ASPECT = 64


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
    if max(width, height) > MAX_ASPECT * min(width, height):
        raise ImageError(f"image of {width}x{height} has an aspect ratio over {MAX_ASPECT}:1; resizing its shorter "
                         f"side to {RESIZE} would make it {RESIZE * max(width, height) // max(1, min(width, height))} "
                         "pixels long", status=413)


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


# -- the header, read before any decoder runs ------------------------------------------------------
#: Frame headers both decoders handle identically: baseline, extended and progressive Huffman.
_SOF_OK = {0xC0: "baseline", 0xC1: "extended", 0xC2: "progressive"}
#: Other SOF markers (lossless, hierarchical, arithmetic): refused, so the pipelines cannot disagree.
_SOF_OTHER = frozenset({0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_SOS, _EOI, _APP1 = 0xDA, 0xD9, 0xE1


@dataclass(frozen=True)
class JpegHeader:
    """What the marker segments say, read without decoding: stored size and EXIF orientation."""

    width: int
    height: int
    components: int
    orientation: int = 1  # EXIF Orientation 1..8 (1 = as stored, also when absent or unreadable)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) as displayed: orientations 5..8 swap the axes."""
        return (self.height, self.width) if self.orientation >= 5 else (self.width, self.height)


def _exif_orientation(tiff: bytes) -> int:
    """The Orientation tag (0x0112) of IFD0 in an EXIF TIFF block; 1 when absent or unreadable
    (a broken EXIF block is not a reason to refuse the image)."""
    order = {b"II": "<", b"MM": ">"}.get(tiff[:2])
    if order is None:
        return 1
    try:
        if struct.unpack_from(order + "H", tiff, 2)[0] != 42:
            return 1
        ifd = struct.unpack_from(order + "I", tiff, 4)[0]
        (n,) = struct.unpack_from(order + "H", tiff, ifd)
        for i in range(min(n, 512)):
            tag, kind, count = struct.unpack_from(order + "HHI", tiff, ifd + 2 + 12 * i)
            if tag == 0x0112:
                if kind != 3 or count != 1:  # SHORT, one value
                    return 1
                value = struct.unpack_from(order + "H", tiff, ifd + 10 + 12 * i)[0]
                return value if 1 <= value <= 8 else 1
    except struct.error:
        return 1
    return 1


def read_header(body: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> JpegHeader:
    """Walk the marker segments up to the first scan: the frame size (SOF), the EXIF orientation
    (APP1) and a structural check. Over ``max_pixels`` is 413 as soon as SOF is read; a wrong
    marker, a segment running past the end, no frame header or no end-of-image marker is 400."""
    check_jpeg(body)
    n, pos = len(body), 2
    frame: tuple[int, int, int] | None = None
    orientation = 1
    while True:
        if pos >= n:
            raise ImageError(f"truncated JPEG: the body ends at byte {n} before the image data (no SOS marker)")
        if body[pos] != 0xFF:
            raise ImageError(f"malformed JPEG: expected a marker (FF) at byte {pos}, found {body[pos]:02X}")
        while pos < n and body[pos] == 0xFF:  # fill bytes may pad a marker
            pos += 1
        if pos >= n:
            raise ImageError(f"truncated JPEG: the body ends at byte {n} inside a marker")
        marker, at = body[pos], pos - 1
        pos += 1
        if marker == 0x00 or marker == 0xD8 or 0xD0 <= marker <= _EOI:
            raise ImageError(f"malformed JPEG: unexpected marker FF{marker:02X} at byte {at} before the image data")
        if pos + 2 > n:
            raise ImageError(f"truncated JPEG: the body ends at byte {n} inside the FF{marker:02X} segment")
        length = (body[pos] << 8) | body[pos + 1]
        end = pos + length
        if length < 2:
            raise ImageError(f"malformed JPEG: segment FF{marker:02X} at byte {at} has length {length} (< 2)")
        if end > n:
            raise ImageError(f"truncated JPEG: segment FF{marker:02X} at byte {at} runs past the end of the body "
                             f"({end} > {n} bytes)")
        seg = body[pos + 2:end]
        if marker in _SOF_OK or marker in _SOF_OTHER:
            frame = _frame(marker, seg, at, frame is not None, max_pixels)
        elif marker == _APP1 and seg[:6] == b"Exif\x00\x00" and orientation == 1:
            orientation = _exif_orientation(seg[6:])
        elif marker == _SOS:
            if frame is None:
                raise ImageError(f"malformed JPEG: scan (FFDA) at byte {at} before any frame header (SOF)")
            if body.rfind(b"\xff\xd9") < end:
                raise ImageError("truncated JPEG: no end-of-image marker (FFD9) after the image data")
            return JpegHeader(frame[0], frame[1], frame[2], orientation)
        pos = end


def _frame(marker: int, seg: bytes, at: int, seen: bool, max_pixels: int) -> tuple[int, int, int]:
    if seen:
        raise ImageError(f"malformed JPEG: a second frame header (FF{marker:02X}) at byte {at}")
    if marker not in _SOF_OK:
        raise ImageError(f"unsupported JPEG: frame type FF{marker:02X} (lossless, hierarchical or arithmetic "
                         f"coding); expected baseline or progressive (FFC0-FFC2)")
    if len(seg) < 6:
        raise ImageError(f"malformed JPEG: frame header at byte {at} is {len(seg)} bytes, expected at least 6")
    precision, height, width, ncomp = seg[0], (seg[1] << 8) | seg[2], (seg[3] << 8) | seg[4], seg[5]
    if width == 0 or height == 0:
        raise ImageError(f"malformed JPEG: frame header gives a size of {width}x{height}")
    _check_pixels(width, height, max_pixels)  # before anything else can cost memory
    if precision != 8:
        raise ImageError(f"unsupported JPEG: {precision}-bit samples, expected 8-bit")
    if ncomp not in (1, 3):
        raise ImageError(f"unsupported JPEG: {ncomp} colour components, expected 1 (grey) or 3 (YCbCr)")
    if len(seg) != 6 + 3 * ncomp:
        raise ImageError(f"malformed JPEG: frame header at byte {at} is {len(seg)} bytes, expected "
                         f"{6 + 3 * ncomp} for {ncomp} components")
    return width, height, ncomp


def apply_orientation(img: np.ndarray, orientation: int) -> np.ndarray:
    """An HWC array turned upright for an EXIF orientation (views, then one contiguous copy): the
    same pixels as Pillow's ``ImageOps.exif_transpose``, cheap on a DCT-scaled array."""
    if orientation <= 1:
        return img
    return np.ascontiguousarray(_ORIENT[orientation](img))


_ORIENT = {2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
           5: lambda a: a.transpose(1, 0, 2), 6: lambda a: np.rot90(a, -1),
           7: lambda a: a[::-1, ::-1].transpose(1, 0, 2), 8: lambda a: np.rot90(a, 1)}


# -- naive: full resolution -------------------------------------------------------------------
def naive_decode(body: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode every pixel (libjpeg-turbo at full scale: the same library and the same pixels as
    Pillow's decoder, bit for bit), then turn it upright (EXIF). The header is read first, so an
    over-limit image is 413 before anything is allocated, and both pipelines run the same strict
    libjpeg checks, so a damaged file gets the same verdict in both."""
    header = read_header(body, max_pixels)
    return Image.fromarray(apply_orientation(_decode(body), header.orientation))


def _decode(body: bytes, **scale: int) -> np.ndarray:
    """libjpeg-turbo decode to RGB, strict: corrupt-data warnings refuse the image (one-line 400).
    simplejpeg is imported here, not at the top, so the rest of this module (geometry, normalise)
    imports on the lent GPU machine, which has no simplejpeg unless its wheel is carried."""
    import simplejpeg

    try:
        return simplejpeg.decode_jpeg(body, colorspace="RGB", strict=True, **scale)
    except (ValueError, OSError) as e:
        raise ImageError(f"malformed JPEG: {_one_line(e)}") from None


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
def fast_decode(body: bytes, target: int = RESIZE, max_pixels: int = DEFAULT_MAX_PIXELS,
                header: JpegHeader | None = None) -> np.ndarray:
    """Decode with libjpeg-turbo at the smallest M/8 scale whose shorter side is >= ``target``,
    then turn it upright (EXIF)."""
    header = header or read_header(body, max_pixels)
    w, h = header.width, header.height
    arr = _decode(body, min_height=min(target, h)) if h <= w else _decode(body, min_width=min(target, w))
    return apply_orientation(arr, header.orientation)


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
    header = read_header(body, max_pixels)
    arr = fast_decode(body, max_pixels=max_pixels, header=header)
    t1 = time.perf_counter()
    small = fast_resize(arr)
    t2 = time.perf_counter()
    x = normalise_hwc(small)
    t3 = time.perf_counter()
    return Prepared(x, t1 - t0, t2 - t1, t3 - t2, t0, arr if keep_image else None, header.size)
