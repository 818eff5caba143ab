"""The IDX format of MNIST-family files (http://yann.lecun.com/exdb/mnist/ format description):
magic = 0x00 0x00 <type code> <ndim>, then ndim big-endian uint32 sizes, then the data, big-endian.
Plain or gzip-compressed (`.gz`). Malformed files are a `UserError` naming the file and the problem.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

from dnninfer.errors import UserError

_TYPES = {0x08: np.dtype(np.uint8), 0x09: np.dtype(np.int8), 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
          0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(np.int16): 0x0B, np.dtype(np.int32): 0x0C,
          np.dtype(np.float32): 0x0D, np.dtype(np.float64): 0x0E}


def _open(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise UserError(f"IDX file {path}: cannot read it ({e.strerror or e})") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise UserError(f"IDX file {path}: broken gzip data ({e})") from None
    return raw


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file into a native-endian array."""
    path = Path(path)
    raw = _open(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise UserError(f"IDX file {path}: not an IDX file (expected magic 00 00 <type> <ndim>)")
    code, ndim = raw[2], raw[3]
    if code not in _TYPES:
        raise UserError(f"IDX file {path}: unknown data type code 0x{code:02x}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise UserError(f"IDX file {path}: truncated header ({len(raw)} bytes for {ndim} dimensions)")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = _TYPES[code]
    need = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != need:
        raise UserError(f"IDX file {path}: expected {need} data bytes for shape {shape}, got {len(raw) - header}")
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="))


def write_idx(path: str | Path, array: np.ndarray, *, compress: bool | None = None) -> Path:
    """Write an array as IDX (gzip when the name ends in .gz or `compress`): for tests and exports."""
    path = Path(path)
    arr = np.asarray(array)
    dtype = arr.dtype.newbyteorder("=")
    if dtype not in _CODES:
        raise ValueError(f"IDX cannot store dtype {arr.dtype}")
    body = bytes([0, 0, _CODES[dtype], arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    body += arr.astype(dtype.newbyteorder(">")).tobytes()
    if compress or (compress is None and path.suffix == ".gz"):
        body = gzip.compress(body)
    path.write_bytes(body)
    return path
