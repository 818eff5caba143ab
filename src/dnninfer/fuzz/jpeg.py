"""Surface ``jpeg``: request bodies to the serving app, through BOTH pipelines (naive, optimized).

The real FastAPI app runs in-process behind starlette's TestClient (no sockets; its lifespan
starts and drains the `Service`). Bodies: valid JPEGs (baseline, progressive, grayscale, 4:4:4,
EXIF, tiny, odd sizes) and mutants: flipped header or entropy bytes, truncations, a wrong SOI,
swapped or dropped markers, huge or zero declared dimensions (SOF rewritten), trailing garbage,
an oversize body, non-JPEG bytes (PNG, GIF, BMP, text, random), wrong content types, multipart
uploads (good, wrong field, wrong part type, empty, no boundary). Expected: 200 for valid,
400/413/415 for bad, never a 5xx; every error answer is JSON with a one-line ``error``.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import logging
import random
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dnninfer.fuzz.classify import Case, Result
from dnninfer.fuzz.mutate import flip_byte, preview_bytes, rng_for

__all__ = ["BAD_STATUSES", "cases", "http_result", "segments"]

SURFACE = "jpeg"
BAD_STATUSES = (400, 413, 415)
LIMIT = 512 * 1024
ENDPOINTS = ("mobilenet_v2", "detector", "detect_classify")
SOF = (0xC0, 0xC1, 0xC2)


def segments(data: bytes) -> list[tuple[int, int, int]]:
    """(offset, marker, length) of each marker segment up to and including SOS."""
    out, i = [], 2
    while i + 4 <= len(data) and data[i] == 0xFF:
        m = data[i + 1]
        if m == 0xFF:
            i += 1
            continue
        length = int.from_bytes(data[i + 2:i + 4], "big")
        out.append((i, m, length))
        if m == 0xDA:
            break
        i += 2 + length
    return out


@functools.cache
def _bases() -> tuple[tuple[str, str, bytes], ...]:
    """(name, label, bytes) of the valid images every mutation starts from."""
    from PIL import Image

    from dnninfer.serving.images import make_image

    def enc(img: Any, **kw: Any) -> bytes:
        buf = io.BytesIO()
        img.save(buf, "JPEG", **kw)
        return buf.getvalue()

    rgb = make_image(96, 72, seed=1)
    portrait = make_image(120, 200, seed=2)
    exif = Image.Exif()
    exif[0x010F] = "dnninfer-fuzz"
    return (
        ("baseline_96x72", "valid", enc(rgb, quality=85)),
        ("portrait_120x200", "valid", enc(portrait, quality=90)),
        ("progressive", "valid", enc(rgb, quality=80, progressive=True)),
        ("grayscale", "valid", enc(rgb.convert("L"), quality=80)),
        ("subsampling_444", "valid", enc(rgb, quality=95, subsampling=0)),
        ("quality_5", "valid", enc(rgb, quality=5)),
        ("exif", "valid", enc(rgb, quality=80, exif=exif.tobytes())),
        ("tiny_9x8", "valid", enc(make_image(9, 8, seed=3), quality=80)),
        ("one_pixel", "valid", enc(Image.new("RGB", (1, 1), (200, 10, 10)))),
        ("wide_400x20", "valid", enc(make_image(400, 20, seed=4), quality=80)),
        ("cmyk", "maybe", enc(rgb.convert("CMYK"), quality=80)),
        ("restart_markers", "valid", _with_restarts(rgb)),
    )


def _with_restarts(img: Any) -> bytes:
    buf = io.BytesIO()
    try:
        img.save(buf, "JPEG", quality=80, restart_marker_blocks=1)
    except TypeError:  # older Pillow
        img.save(buf, "JPEG", quality=80)
    return buf.getvalue()


@functools.cache
def _foreign() -> tuple[tuple[str, bytes], ...]:
    from dnninfer.serving.images import make_image

    img = make_image(32, 24, seed=5)
    out = []
    for fmt in ("PNG", "GIF", "BMP", "TIFF"):
        buf = io.BytesIO()
        img.save(buf, fmt)
        out.append((fmt.lower(), buf.getvalue()))
    out += [("text", b"hello, this is not an image\n"), ("json", b'{"image": "cat.jpg"}'),
            ("html", b"<html><body>no</body></html>"), ("soi_only", b"\xff\xd8"), ("soi_eoi", b"\xff\xd8\xff\xd9"),
            ("nul", b"\x00" * 64), ("soi_garbage", b"\xff\xd8\xff" + bytes(range(256)))]
    return tuple(out)


def _set_dims(data: bytes, h: int, w: int) -> bytes | None:
    for off, m, _ in segments(data):
        if m in SOF:
            out = bytearray(data)
            out[off + 5:off + 7] = h.to_bytes(2, "big")
            out[off + 7:off + 9] = w.to_bytes(2, "big")
            return bytes(out)
    return None


def _sos_end(data: bytes) -> int:
    seg = segments(data)
    if seg and seg[-1][1] == 0xDA:
        off, _, length = seg[-1]
        return off + 2 + length
    return 2


def _mutant(rng: random.Random, name: str, base: bytes) -> tuple[str, str, bytes, str]:
    """(kind, label, body, description) of one mutation of ``base``."""
    op = rng.choice(["flip_entropy", "flip_entropy", "flip_header", "truncate", "truncate", "truncate_headers",
                     "trailing_garbage", "bad_soi", "swap_marker", "drop_segment", "dims_huge", "dims_zero",
                     "dims_over_limit", "dims_big_under_limit", "dims_wide_line", "dims_sliver",
                     "components"])
    scan = _sos_end(base)
    if op == "flip_entropy":
        body, note = flip_byte(rng, base, scan, len(base) - 2)
        return op, "maybe", body, f"{name}: entropy-coded {note}"
    if op == "flip_header":
        body, note = flip_byte(rng, base, 2, scan)
        return op, "maybe", body, f"{name}: header {note}"
    if op == "truncate":
        cut = rng.randrange(len(base))
        return op, "bad", base[:cut], f"{name}: truncated to {cut} of {len(base)} bytes"
    if op == "truncate_headers":
        return op, "bad", base[:scan], f"{name}: headers only ({scan} bytes), no scan data"
    if op == "trailing_garbage":
        junk = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200)))
        return op, "maybe", base + junk, f"{name}: {len(junk)} bytes after EOI"
    if op == "bad_soi":
        soi = rng.choice([b"\xff\xd9", b"\x00\x00", b"\xd8\xff", b"\xff\xc0", b"\x89P"])
        return op, "bad", soi + base[2:], f"{name}: SOI replaced by {soi.hex()}"
    segs = segments(base)
    if op == "swap_marker" and segs:
        off, m, _ = rng.choice(segs)
        new = rng.choice([0xC0, 0xC2, 0xC3, 0xC5, 0xCF, 0xC4, 0xDB, 0xE0, 0xFE, 0xD9, 0x01, 0xFF])
        if new == m:
            new = 0xC3
        body = bytearray(base)
        body[off + 1] = new
        return op, "maybe", bytes(body), f"{name}: marker {m:02x} at {off} -> {new:02x}"
    if op == "drop_segment" and segs:
        off, m, length = rng.choice(segs)
        label = "bad" if m in (*SOF, 0xDA) else "maybe"
        return op, label, base[:off] + base[off + 2 + length:], f"{name}: segment {m:02x} at {off} removed"
    dims = {"dims_huge": (65535, 65535, "bad"), "dims_zero": (0, rng.choice([0, 64]), "bad"),
            "dims_over_limit": (7100, 7100, "bad"), "dims_big_under_limit": (7000, 7000, "bad"),
            "dims_wide_line": (1, 600, "bad"), "dims_sliver": (1, 65000, "bad")}  # over 64:1: 413 before decode
    if op in dims:
        h, w, label = dims[op]
        body = _set_dims(base, h, w)
        if body is not None:
            return op, label, body, f"{name}: SOF declares {w}x{h}"
    if op == "components":
        for off, m, _ in segs:
            if m in SOF:
                body = bytearray(base)
                body[off + 9] = rng.choice([0, 2, 4, 255])
                return op, "maybe", bytes(body), f"{name}: SOF component count -> {body[off + 9]}"
    cut = rng.randrange(len(base))
    return "truncate", "bad", base[:cut], f"{name}: truncated to {cut} of {len(base)} bytes"


def _multipart(body: bytes, field: str = "file", filename: str | None = "x.jpg",
               ctype: str = "image/jpeg") -> tuple[bytes, str]:
    b = "dnninferfuzzboundary"
    disp = f'form-data; name="{field}"' + (f'; filename="{filename}"' if filename else "")
    head = f"--{b}\r\nContent-Disposition: {disp}\r\nContent-Type: {ctype}\r\n\r\n".encode()
    return head + body + f"\r\n--{b}--\r\n".encode(), f"multipart/form-data; boundary={b}"


def _request_case(rng: random.Random) -> tuple[str, str, bytes, str, str]:
    """(kind, label, body, content type, description): content types, sizes and uploads."""
    name, _, base = rng.choice([b for b in _bases() if b[1] == "valid"])
    op = rng.choice(["ctype_bad", "ctype_ok", "oversize", "multipart_ok", "multipart_wrong_field",
                     "multipart_part_type", "multipart_empty", "multipart_no_boundary", "multipart_broken",
                     "foreign", "foreign", "random", "empty"])
    if op == "ctype_bad":
        ct = rng.choice(["text/plain", "image/png", "application/json", "video/mp4", "image/jpegx"])
        return op, "bad", base, ct, f"{name} sent as {ct}"
    if op == "ctype_ok":
        ct = rng.choice(["application/octet-stream", "image/jpg", "image/pjpeg", "IMAGE/JPEG", "image/jpeg; q=1"])
        return op, "valid", base, ct, f"{name} sent as {ct}"
    if op == "oversize":
        body = base + b"\x00" * (LIMIT + 1 - len(base) + rng.randrange(4096))
        return op, "bad", body, "image/jpeg", f"{name} padded to {len(body)} bytes (limit {LIMIT})"
    if op == "multipart_ok":
        body, ct = _multipart(base)
        return op, "valid", body, ct, f"{name} as a multipart upload"
    if op == "multipart_wrong_field":
        body, ct = _multipart(base, field="other", filename=None)
        return op, "bad", body, ct, f"{name} in a multipart field 'other' without a filename"
    if op == "multipart_part_type":
        body, ct = _multipart(base, ctype="text/plain")
        return op, "bad", body, ct, f"{name} uploaded with part type text/plain"
    if op == "multipart_empty":
        body, ct = _multipart(b"")
        return op, "bad", body, ct, "multipart upload of an empty file"
    if op == "multipart_no_boundary":
        body, _ = _multipart(base)
        return op, "bad", body, "multipart/form-data", "multipart body without a boundary parameter"
    if op == "multipart_broken":
        body, ct = _multipart(base)
        cut = rng.randrange(10, len(body) // 2)
        return op, "bad", body[:cut], ct, f"multipart body cut to {cut} bytes"
    if op == "foreign":
        fname, data = rng.choice(_foreign())
        return f"foreign:{fname}", "bad", data, "image/jpeg", f"{fname} bytes sent as image/jpeg"
    if op == "random":
        data = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 3000)))
        return op, "bad", data, rng.choice(["image/jpeg", "application/octet-stream"]), f"{len(data)} random bytes"
    return "empty", "bad", b"", "image/jpeg", "empty body"


def http_result(status: int, text: str) -> Result:
    """200 accepted; 400/413/415 rejected (error format checked); 5xx crash; anything else a bad error."""
    if status == 200:
        return Result("accepted", status)
    try:
        obj = json.loads(text)
    except ValueError:
        obj = None
    msg = obj.get("error") if isinstance(obj, dict) else None
    line_ok = isinstance(msg, str) and bool(msg.strip()) and "\n" not in msg and obj.get("status") == status
    shown = msg if isinstance(msg, str) else text[:200]
    if status >= 500:
        return Result("crash", status, shown, detail=f"HTTP {status}: {shown[:200]}")
    return Result("rejected", status, shown, error_ok=line_ok and status in BAD_STATUSES)


def cases(n: int, seed: int, work: Path) -> Iterator[Case]:
    """``n`` request cases, the first half on the optimized pipeline and the rest on the naive one."""
    rng = rng_for(seed, SURFACE)
    half = (n + 1) // 2
    for pipeline, count in (("optimized", half), ("naive", n - half)):
        if count <= 0:
            continue
        yield from _pipeline_cases(pipeline, count, rng)


def _pipeline_cases(pipeline: str, count: int, rng: random.Random) -> Iterator[Case]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # starlette's TestClient deprecation note about httpx
        from starlette.testclient import TestClient

    from dnninfer.serving.server import ServeConfig, create_app

    cfg = ServeConfig(model="mobilenet_v2", pipeline=pipeline, max_batch=1, max_delay_ms=0.0, decode_workers=1,
                      threads=1, max_body_bytes=LIMIT, broker="queue", pipeline_timeout_s=20.0, drain_timeout_s=5.0)
    log = logging.getLogger("dnninfer.serving")
    was_disabled, log.disabled = log.disabled, True  # a 500's traceback is in its verdict; keep stderr clean
    with contextlib.ExitStack() as stack:
        stack.callback(setattr, log, "disabled", was_disabled)
        client = stack.enter_context(TestClient(create_app(cfg), raise_server_exceptions=False))
        bases = _bases()
        for i in range(count):
            endpoint = ENDPOINTS[i % len(ENDPOINTS)]
            if i < len(bases):
                name, label, body = bases[i]
                kind, ctype, what = f"valid:{name}", "image/jpeg", f"{name}, unmodified"
            elif rng.random() < 0.65:
                name, _, base = rng.choice(bases)
                kind, label, body, what = _mutant(rng, name, base)
                ctype = "image/jpeg"
            else:
                kind, label, body, ctype, what = _request_case(rng)

            def run(body: bytes = body, ctype: str = ctype, endpoint: str = endpoint) -> Result:
                r = client.post(f"/v1/models/{endpoint}/infer", content=body, headers={"content-type": ctype})
                return http_result(r.status_code, r.text)

            yield Case(SURFACE, f"{pipeline}:{kind}", label, f"{pipeline} /{endpoint} [{ctype}]: {what}", run,
                       preview=preview_bytes(body))
