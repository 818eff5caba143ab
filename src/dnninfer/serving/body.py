"""Reading a request body safely: content types, a size limit and multipart uploads.

Every rejection drains what the client is still sending before answering (up to a cap), so a
client that posts a 40 MB body to a 32 MB limit reads a clean 413 instead of a reset connection.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ACCEPTED_TYPES", "BodyTimeout", "HTTPError", "multipart_file", "read_body"]

RAW_TYPES = frozenset({"image/jpeg", "image/jpg", "image/pjpeg", "application/octet-stream", ""})
MULTIPART = "multipart/form-data"
ACCEPTED_TYPES = (*sorted(t for t in RAW_TYPES if t), MULTIPART)
#: Beyond this many bytes a rejected body is no longer drained; the connection is closed instead.
DRAIN_CAP = 256 * 2**20


class HTTPError(Exception):
    """An error the server answers with ``{"error": message}`` and ``status``."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


class BodyTimeout(HTTPError):
    """The body did not arrive within the read timeout: 408, and the connection is closed (the
    gate's receive raises it, so whatever is reading the body unwinds and frees its slot)."""

    def __init__(self, seconds: float) -> None:
        super().__init__(408, f"request body not received within {seconds:g} s (server option --read-timeout)")


async def _drain(request: Any, already: int = 0) -> None:
    seen = already
    try:
        async for chunk in request.stream():
            seen += len(chunk)
            if seen > DRAIN_CAP:
                return
    except Exception:  # client went away, or the stream was consumed already
        return


def _limit_error(n: int | str, limit: int) -> HTTPError:
    return HTTPError(413, f"body of {n} bytes exceeds the limit of {limit} bytes (server option --max-body-mb)")


async def read_body(request: Any, limit: int) -> bytes:
    """The JPEG bytes of a request: raw ``image/jpeg`` / ``application/octet-stream`` bodies or the
    first file of a ``multipart/form-data`` upload. Raises ``HTTPError`` 400/413/415."""
    ctype_full = request.headers.get("content-type", "")
    ctype = ctype_full.split(";")[0].strip().lower()
    if ctype not in RAW_TYPES and ctype != MULTIPART:
        await _drain(request)
        raise HTTPError(415, f"unsupported content type {ctype!r}: send the JPEG bytes as image/jpeg or "
                             f"application/octet-stream, or as multipart/form-data with a 'file' field")
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            n = int(declared)
        except ValueError:
            raise HTTPError(400, f"bad Content-Length header {declared!r}") from None
        if n > limit:
            await _drain(request)
            raise _limit_error(n, limit)
    buf = bytearray()
    async for chunk in request.stream():
        buf += chunk
        if len(buf) > limit:
            await _drain(request, len(buf))
            raise _limit_error(f"more than {limit}", limit)
    if not buf:
        raise HTTPError(400, "empty body: expected the bytes of a JPEG image")
    if ctype == MULTIPART:
        return multipart_file(bytes(buf), ctype_full)
    return bytes(buf)


def multipart_file(body: bytes, content_type: str) -> bytes:
    """The first file part (or a part named ``file``/``image``) of a multipart body."""
    from python_multipart.multipart import MultipartParser, parse_options_header

    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise HTTPError(400, "multipart/form-data without a boundary parameter")
    parts: list[dict[str, Any]] = []
    state: dict[str, Any] = {}

    def on_part_begin() -> None:
        state["part"] = {"headers": {}, "data": bytearray()}
        state["field"], state["value"] = b"", b""

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state["field"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state["value"] += data[start:end]

    def on_header_end() -> None:
        state["part"]["headers"][state["field"].decode("latin-1").lower()] = state["value"].decode("latin-1")
        state["field"], state["value"] = b"", b""

    def on_part_data(data: bytes, start: int, end: int) -> None:
        state["part"]["data"] += data[start:end]

    def on_part_end() -> None:
        parts.append(state.pop("part"))

    callbacks = {"on_part_begin": on_part_begin, "on_header_field": on_header_field,
                 "on_header_value": on_header_value, "on_header_end": on_header_end,
                 "on_part_data": on_part_data, "on_part_end": on_part_end}
    try:
        parser = MultipartParser(boundary, callbacks)  # type: ignore[arg-type]
        parser.write(body)
        parser.finalize()
    except Exception as e:
        raise HTTPError(400, f"malformed multipart/form-data body: {e}") from None
    chosen = None
    for p in parts:
        _, disp = parse_options_header(p["headers"].get("content-disposition", ""))
        name = disp.get(b"name", b"").decode("latin-1")
        if b"filename" in disp or name in ("file", "image"):
            chosen = p
            break
    if chosen is None:
        raise HTTPError(400, "multipart/form-data body has no file part (send the JPEG in a field named 'file')")
    part_type = chosen["headers"].get("content-type", "").split(";")[0].strip().lower()
    if part_type not in RAW_TYPES:
        raise HTTPError(415, f"unsupported content type {part_type!r} for the uploaded file: expected image/jpeg")
    if not chosen["data"]:
        raise HTTPError(400, "empty file in the multipart upload: expected the bytes of a JPEG image")
    return bytes(chosen["data"])
