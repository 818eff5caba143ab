"""Issue 14 items 9-13: admission before the body in every pipeline, a live /health, header checks
before decode, draining with ``Connection: close``, read timeouts, EXIF orientation, the project's
error format everywhere, 499 for clients that hang up. Real uvicorn on loopback, raw sockets where
the test is about the connection itself."""

from __future__ import annotations

import contextlib
import io
import json
import select
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageOps

from dnninfer import zoo
from dnninfer.serving import preprocess as pp
from dnninfer.serving.images import jpeg_for, make_image, make_jpeg
from dnninfer.serving.metrics import parse_metrics
from dnninfer.serving.models import topk_rows
from dnninfer.serving.runner import ServerProcess, ServerThread
from dnninfer.serving.server import ServeConfig, _prepare, create_app

MODEL = "mobilenet_v2"
READ_TIMEOUT = 0.5
PIPES = ("naive", "optimized")


# -- helpers ------------------------------------------------------------------------------------------
def _cfg(pipeline: str, **kw) -> ServeConfig:
    base = {"model": MODEL, "pipeline": pipeline, "broker": "none", "read_timeout_s": READ_TIMEOUT, "max_queue": 2,
            "max_batch": 2, "max_delay_ms": 1.0, "decode_workers": 1}
    return ServeConfig(**{**base, **kw})


def _probe_route(app) -> None:
    """A route with a typed parameter, so the 422 handler can be exercised."""

    @app.get("/probe/{n}")
    async def probe(n: int) -> dict:
        return {"n": n}


def _post(body: bytes, model: str = MODEL, extra: str = "") -> bytes:
    return (f"POST /v1/models/{model}/infer HTTP/1.1\r\nHost: t\r\nContent-Type: image/jpeg\r\n"
            f"Content-Length: {len(body)}\r\n{extra}\r\n").encode() + body


class _Conn:
    """One raw HTTP/1.1 connection: send bytes, read whole responses, tell a clean close from a reset."""

    def __init__(self, port: int, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError("server closed the connection")
        self.buf += chunk

    def response(self) -> tuple[int, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
        n = int(headers.get("content-length", "0"))
        while len(self.buf) < n:
            self._fill()
        body, self.buf = self.buf[:n], self.buf[n:]
        return int(lines[0].split()[1]), headers, body

    def clean_eof(self) -> bool:
        """True when the server closed the connection with a FIN (not a reset, not still open)."""
        try:
            return not self.buf and self.sock.recv(1) == b""
        except (ConnectionResetError, TimeoutError):
            return False

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


class _Gate:
    """Holds every decode (naive and optimised) until ``open`` is set: requests stay in flight for
    as long as a test needs, without a wall-clock assumption."""

    def __init__(self) -> None:
        self.open = threading.Event()

    def wrap(self, fn: Callable) -> Callable:
        def held(*args, **kwargs):
            self.open.wait(30)
            return fn(*args, **kwargs)

        return held


@pytest.fixture
def gate(monkeypatch) -> Iterator[_Gate]:
    g = _Gate()
    monkeypatch.setattr(pp, "naive_decode", g.wrap(pp.naive_decode))
    monkeypatch.setattr(pp, "fast_decode", g.wrap(pp.fast_decode))
    try:
        yield g
    finally:
        g.open.set()


def _until(pred: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.005)


def _health(srv) -> dict:
    return httpx.get(f"{srv.url}/health", timeout=3.0).json()


def _codes(srv) -> dict[str, float]:
    m = parse_metrics(httpx.get(f"{srv.url}/metrics", timeout=3.0).text)
    prefix = f'dnninfer_requests_total{{model="{MODEL}",code="'
    return {k[len(prefix):-2]: v for k, v in m.items() if k.startswith(prefix)}


@pytest.fixture(scope="module")
def servers() -> Iterator[dict]:
    out, stack = {}, contextlib.ExitStack()
    with stack:
        for pipe in PIPES:
            app = create_app(_cfg(pipe))
            _probe_route(app)
            out[pipe] = stack.enter_context(ServerThread(app, graceful_timeout_s=10))
            out[pipe].service = app.state.service
        yield out


@pytest.fixture(scope="module")
def reference():
    return zoo.build_model(MODEL, seed=0).eval()


def _top_classes(model, body: bytes, naive: bool) -> list[int]:
    x = _prepare(body, naive, pp.DEFAULT_MAX_PIXELS, "crop", False).tensor
    x = torch.from_numpy(x if naive else np.ascontiguousarray(x.transpose(2, 0, 1)))[None]
    with torch.inference_mode():
        return [r["class"] for r in topk_rows(model(x), 5)[0]]


# -- item 9: admission before the handler, /health live, in every pipeline ---------------------------------
@pytest.mark.parametrize("pipe", PIPES)
def test_max_queue_refuses_with_503_and_health_answers_while_the_pipeline_is_busy(servers, pipe, gate):
    srv, svc = servers[pipe], servers[pipe].service
    before, rejected = _codes(srv), svc.rejected
    conns = [_Conn(srv.port, timeout=30) for _ in range(6)]
    try:
        for c in conns:
            c.send(_post(jpeg_for("small")))
        _until(lambda: _health(srv)["rejected"] - rejected == 4, 15, "four 503s while two requests are held")
        h = _health(srv)  # answered although both admitted requests are stuck in the pipeline
        assert h["status"] == "ok" and h["inflight"] == 2
        gate.open.set()
        answers = [c.response() for c in conns]
    finally:
        gate.open.set()
        for c in conns:
            c.close()
    codes = sorted(a[0] for a in answers)
    assert codes == [200, 200, 503, 503, 503, 503]
    for status, headers, body in answers:
        if status == 503:
            assert int(headers["retry-after"]) >= 1
            err = json.loads(body)
            assert err["status"] == 503 and "overloaded" in err["error"] and "--max-queue 2" in err["error"]
    after = _codes(srv)
    assert after.get("503", 0) - before.get("503", 0) == 4 and after["200"] - before.get("200", 0) == 2
    _until(lambda: svc.inflight == 0, 5, "inflight back to 0")
    # negative control: idle, /health is fine and a normal request gets in
    assert _health(srv)["inflight"] == 0
    assert httpx.post(f"{srv.url}/v1/models/{MODEL}/infer", content=jpeg_for("small"),
                      headers={"content-type": "image/jpeg"}, timeout=30).status_code == 200


# -- item 12: read timeouts --------------------------------------------------------------------------
def test_a_stalled_body_is_admitted_at_its_headers_and_freed_with_408_after_the_read_timeout(servers):
    srv, svc = servers["naive"], servers["naive"].service
    accepted, completed, before = svc.accepted, svc.completed, _codes(srv)
    c = _Conn(srv.port)
    try:
        c.send(_post(b"\xff\xd8" + b"\x00" * 9998)[:-9900])  # headers + 100 of 10 000 bytes, then silence
        _until(lambda: svc.inflight == 1, READ_TIMEOUT * 0.9, "admission at the headers, before the body")
        status, headers, body = c.response()
        assert status == 408 and headers["connection"] == "close"
        assert json.loads(body) == {"error": "request body not received within 0.5 s (server option --read-timeout)",
                                    "status": 408}
        assert c.clean_eof()
    finally:
        c.close()
    _until(lambda: svc.inflight == 0, 5, "the slot to be released")
    assert svc.accepted - accepted == 1 and svc.completed - completed == 1
    assert _codes(srv).get("408", 0) - before.get("408", 0) == 1


def test_stalled_headers_and_silent_connections_are_closed_after_the_read_timeout(servers):
    srv = servers["optimized"]
    keep = _Conn(srv.port)
    keep.send(_post(jpeg_for("small")))
    assert keep.response()[0] == 200
    partial = [_Conn(srv.port, timeout=3) for _ in range(8)]
    silent = [_Conn(srv.port, timeout=3) for _ in range(8)]
    trickle = _Conn(srv.port, timeout=3)
    try:
        for c in partial:
            c.send(b"POST /v1/models/mobilenet_v2/infer HTTP/1.1\r\nHost: t\r\n")
        t0, answered = time.monotonic(), False
        for ch in b"GET /health HTTP/1.1\r\nHost: t\r\nX-Slow: " + b"a" * 200:  # a byte every 50 ms
            if select.select([trickle.sock], [], [], 0.05)[0]:
                answered = True  # the server spoke first: cut off by the deadline, not kept alive by each byte
                break
            trickle.send(bytes([ch]))
        assert answered and time.monotonic() - t0 < 5
        for c in [*partial, trickle]:
            status, headers, body = c.response()
            assert status == 408 and headers["connection"] == "close"
            assert json.loads(body)["status"] == 408 and "request headers" in json.loads(body)["error"]
            assert c.clean_eof()
        for c in silent:
            assert c.clean_eof()
        _until(lambda: len(srv.server.server_state.connections) == 1, 5, "only the kept-alive connection left")
        # negative control: a kept-alive connection idle for twice the read timeout still serves
        time.sleep(2 * READ_TIMEOUT)
        keep.send(_post(jpeg_for("small")))
        status, headers, _ = keep.response()
        assert status == 200 and headers.get("connection") != "close"
    finally:
        for c in [keep, *partial, *silent, trickle]:
            c.close()


# -- item 11: draining ----------------------------------------------------------------------------
@pytest.mark.parametrize("pipe", PIPES)
def test_shutdown_answers_in_flight_requests_with_connection_close_and_refuses_new_ones(pipe, gate):
    srv = ServerThread(create_app(_cfg(pipe, max_queue=8)), graceful_timeout_s=20).start()
    svc = srv.app.state.service
    conns = [_Conn(srv.port, timeout=30) for _ in range(3)]
    try:
        gate.open.set()
        for c in conns:  # kept-alive connections: the negative control has no Connection: close
            c.send(_post(jpeg_for("small")))
            status, headers, _ = c.response()
            assert status == 200 and "close" not in headers.get("connection", "")
        gate.open.clear()
        for c in conns:
            c.send(_post(jpeg_for("small")))
        _until(lambda: svc.inflight == 3, 10, "three requests in flight")
        srv.server.should_exit = True  # what SIGTERM does
        _until(lambda: svc.draining, 5, "the service to be draining while requests are in flight")

        def refused() -> bool:
            try:
                socket.create_connection(("127.0.0.1", srv.port), timeout=1).close()
            except ConnectionRefusedError:
                return True
            return False

        _until(refused, 5, "new connections to be refused")
        gate.open.set()
        for c in conns:
            status, headers, body = c.response()
            assert status == 200 and b"top_k" in body
            assert headers["connection"] == "close"
            assert c.clean_eof()
    finally:
        gate.open.set()
        for c in conns:
            c.close()
        srv.stop()
    assert svc.accepted == svc.completed == 6 and svc.inflight == 0 and not svc.started


def test_sigterm_on_the_cli_server_answers_kept_alive_requests_with_connection_close():
    # a long batching delay keeps the requests in flight across the signal without a sleep
    args = ["--pipeline", "optimized", "--broker", "none", "--max-batch", "8", "--max-delay-ms", "1500",
            "--read-timeout", "5", MODEL]
    srv = ServerProcess(args, env={"OMP_NUM_THREADS": "1"}).start()
    conns: list[_Conn] = []
    try:
        conns = [_Conn(srv.port, timeout=30) for _ in range(3)]
        for c in conns:
            c.send(_post(jpeg_for("small")))
        for c in conns:
            status, headers, _ = c.response()
            assert status == 200 and "close" not in headers.get("connection", "")
        for c in conns:
            c.send(_post(jpeg_for("small")))
        _until(lambda: httpx.get(f"{srv.url}/health", timeout=3).json()["queue_depth"][MODEL] == 3, 10,
               "three requests waiting in the batcher")
        srv.proc.send_signal(signal.SIGTERM)
        for c in conns:
            status, headers, body = c.response()
            assert status == 200 and b"top_k" in body
            assert headers["connection"] == "close"
            assert c.clean_eof()
        srv.proc.wait(30)
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{srv.url}/health", timeout=2)
    finally:
        for c in conns:
            c.close()
        srv.stop()


# -- item 13: 499, error format ---------------------------------------------------------------------
def test_a_client_that_hangs_up_while_waiting_is_counted_499_not_200(servers, gate):
    srv, svc = servers["optimized"], servers["optimized"].service
    before = _codes(srv)
    c = _Conn(srv.port)
    c.send(_post(jpeg_for("small")))
    _until(lambda: svc.inflight == 1, 10, "the request in flight")
    local = c.sock.getsockname()
    c.close()
    _until(lambda: all(p.client != local for p in list(srv.server.server_state.connections)), 5,
           "the server to see the client hang up")
    gate.open.set()
    _until(lambda: svc.inflight == 0, 10, "the abandoned request to finish")
    after = _codes(srv)
    assert after.get("499", 0) - before.get("499", 0) == 1
    assert after.get("200", 0) == before.get("200", 0)
    # negative control: a client that waits is a 200
    r = httpx.post(f"{srv.url}/v1/models/{MODEL}/infer", content=jpeg_for("small"),
                   headers={"content-type": "image/jpeg"}, timeout=30)
    assert r.status_code == 200 and _codes(srv)["200"] == after.get("200", 0) + 1


@pytest.mark.parametrize("method, path, status, words", [
    ("GET", f"/v1/models/{MODEL}/infer", 405, "use POST"),
    ("DELETE", "/health", 405, "use GET"),
    ("GET", "/no/such/endpoint", 404, "POST /v1/models/{name}/infer"),
    ("GET", "/probe/notanint", 422, "path/n"),
])
def test_404_405_422_use_the_project_error_format(servers, method, path, status, words):
    r = httpx.request(method, servers["naive"].url + path, timeout=5)
    assert r.status_code == status
    body = r.json()
    assert set(body) == {"error", "status"} and body["status"] == status and words in body["error"], body
    # negative control: the route itself works
    assert httpx.get(servers["naive"].url + "/probe/3", timeout=5).json() == {"n": 3}


# -- item 10: the header before any decode ------------------------------------------------------------
def _with_size(body: bytes, width: int, height: int) -> bytes:
    i = body.index(b"\xff\xc0")
    return body[:i + 5] + height.to_bytes(2, "big") + width.to_bytes(2, "big") + body[i + 9:]


def test_an_over_limit_header_is_413_in_both_pipelines_without_decoding(servers, reference, monkeypatch):
    decoded = []
    real = pp._decode
    monkeypatch.setattr(pp, "_decode", lambda body, **kw: decoded.append(len(body)) or real(body, **kw))
    bomb = _with_size(make_jpeg(64, 48, seed=1), 12000, 12000)  # a few KB claiming 144 MP
    answers = {}
    for pipe, srv in servers.items():
        r = httpx.post(f"{srv.url}/v1/models/{MODEL}/infer", content=bomb, headers={"content-type": "image/jpeg"},
                       timeout=30)
        answers[pipe] = (r.status_code, r.json()["error"])
    assert answers["naive"] == answers["optimized"]
    assert answers["naive"][0] == 413 and "12000x12000" in answers["naive"][1]
    assert decoded == []
    # negative control: a normal JPEG is decoded and classified like the model does it
    body = make_jpeg(300, 200, seed=4)
    for pipe, srv in servers.items():
        n = len(decoded)
        r = httpx.post(f"{srv.url}/v1/models/{MODEL}/infer", content=body, headers={"content-type": "image/jpeg"},
                       timeout=30)
        assert r.status_code == 200 and len(decoded) == n + 1  # the check above does see decodes
        assert [g["class"] for g in r.json()["top_k"]] == _top_classes(reference, body, pipe == "naive")


_GOOD = make_jpeg(96, 64, seed=3)
_SOF = _GOOD.index(b"\xff\xc0")
_SOS = _GOOD.index(b"\xff\xda")
BROKEN = {
    "truncated in the header": (_GOOD[:_SOF + 4], "truncated JPEG"),
    "truncated in the scan": (_GOOD[:(_SOS + len(_GOOD)) // 2], "truncated JPEG"),
    "wrong marker": (_GOOD[:2] + b"\x00" + _GOOD[3:], "malformed JPEG: expected a marker"),
    "bad segment length": (_GOOD[:4] + b"\x00\x01" + _GOOD[6:], "malformed JPEG: segment"),
    "zero width": (_with_size(_GOOD, 0, 64), "malformed JPEG: frame header gives a size of 0x64"),
    "arithmetic coding": (_GOOD[:_SOF + 1] + b"\xc9" + _GOOD[_SOF + 2:], "unsupported JPEG"),
    "no frame header": (_GOOD[:_SOF] + _GOOD[_SOF + 2 + int.from_bytes(_GOOD[_SOF + 2:_SOF + 4], "big"):],
                        "before any frame header"),
    "junk in the scan": (_GOOD[:-2] + b"\x00" * 40 + b"\xff\xd9", "malformed JPEG: Corrupt JPEG data"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_jpegs_get_the_same_one_line_400_in_both_pipelines(servers, case):
    body, words = BROKEN[case]
    answers = {}
    for pipe, srv in servers.items():
        r = httpx.post(f"{srv.url}/v1/models/{MODEL}/infer", content=body, headers={"content-type": "image/jpeg"},
                       timeout=30)
        answers[pipe] = (r.status_code, r.json()["error"])
    assert answers["naive"] == answers["optimized"], answers
    status, message = answers["naive"]
    assert status == 400 and words in message and "\n" not in message
    # negative control: the unbroken file is fine in both
    for srv in servers.values():
        assert httpx.post(f"{srv.url}/v1/models/{MODEL}/infer", content=_GOOD,
                          headers={"content-type": "image/jpeg"}, timeout=30).status_code == 200


def _verdict(decode: Callable[[bytes], object], body: bytes) -> int:
    try:
        decode(body)
    except pp.ImageError as e:
        assert "\n" not in str(e)
        return e.status
    return 200


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(_GOOD) - 1), st.integers(0, 255)), min_size=1, max_size=4),
       st.integers(1, len(_GOOD)))
def test_decoders_agree_on_every_mutated_or_truncated_jpeg(edits, keep):
    body = bytearray(_GOOD[:keep])
    for pos, value in edits:
        if pos < len(body):
            body[pos] = value
    assert _verdict(pp.naive_decode, bytes(body)) == _verdict(pp.fast_decode, bytes(body))


# -- item 13: EXIF orientation ----------------------------------------------------------------------------
def _jpeg(img: Image.Image, orientation: int | None = None) -> bytes:
    buf, kw = io.BytesIO(), {}
    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation
        kw["exif"] = exif.tobytes()
    img.save(buf, format="JPEG", quality=95, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("orientation", range(1, 9))
def test_both_decoders_apply_exif_orientation_like_pillow(orientation):
    body = _jpeg(make_image(40, 24, seed=2), orientation)
    assert pp.read_header(body).orientation == orientation
    want = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(body))).convert("RGB"))
    assert np.array_equal(np.asarray(pp.naive_decode(body)), want)  # same decoder, same pixels, same turn
    fast = pp.fast_decode(body)  # small images decode at full scale: equal too
    assert np.array_equal(fast, want)
    w, h = pp.read_header(body).size
    assert want.shape[:2] == (h, w)


@pytest.mark.parametrize("pipe", PIPES)
def test_a_sideways_photo_with_an_orientation_tag_is_classified_upright(servers, pipe):
    upright = make_image(320, 240, seed=7)
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # what the camera wrote; tag 6 turns it back
    tagged, untagged, plain = _jpeg(stored, 6), _jpeg(stored), _jpeg(upright)
    naive = pipe == "naive"
    x_up, x_tag, x_untag = (_prepare(b, naive, pp.DEFAULT_MAX_PIXELS, "crop", False).tensor
                            for b in (plain, tagged, untagged))
    assert np.abs(x_tag - x_up).mean() < 0.05  # upright: only JPEG noise apart
    assert np.abs(x_untag - x_up).mean() > 0.5  # negative control: ignoring the tag is far off
    r = httpx.post(f"{servers[pipe].url}/v1/models/{MODEL}/infer", content=tagged,
                   headers={"content-type": "image/jpeg"}, timeout=30)
    assert r.status_code == 200 and r.json()["image"] == {"width": 320, "height": 240}
    r = httpx.post(f"{servers[pipe].url}/v1/models/{MODEL}/infer", content=untagged,
                   headers={"content-type": "image/jpeg"}, timeout=30)
    assert r.json()["image"] == {"width": 240, "height": 320}


# -- detector boxes on thin images ------------------------------------------------------------------------
@given(w=st.integers(1, 40), h=st.integers(1, 40),
       rel=st.lists(st.floats(-0.5, 1.5, allow_nan=False), min_size=4, max_size=4))
@settings(max_examples=200, deadline=None)
def test_box_pixels_always_lie_inside_the_image(w, h, rel):
    """A 1-pixel-high image once gave a negative box offset (500 on /detect_classify)."""
    from dnninfer.serving.models import Box

    x0, y0, x1, y1 = Box(*rel, score=0.5).pixels(w, h)
    assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
    assert x1 - x0 >= min(2, w) and y1 - y0 >= min(2, h)


def test_crops_of_a_one_pixel_high_image():
    from dnninfer.serving.models import Box
    from dnninfer.serving.server import _crops

    img = np.zeros((1, 9, 3), np.uint8)
    (crop,) = _crops(img, [Box(0.2, 0.9, 0.8, 1.0, 0.9)], 8)
    assert crop.shape == (8, 8, 3)


@pytest.mark.parametrize("prep", [pp.naive_preprocess, pp.fast_preprocess])
def test_sliver_headers_are_413_before_decoding_and_big_claims_over_a_small_scan_are_400(prep, monkeypatch):
    """A 65000 x 1 header once made the naive path resize to 16.6 M x 256; a 7000 x 7000 claim over a
    64 x 48 scan must not decode to a grey 49 MP image."""
    decoded = []
    real = pp._decode
    monkeypatch.setattr(pp, "_decode", lambda body, **kw: decoded.append(len(body)) or real(body, **kw))
    small = make_jpeg(64, 48, seed=1)
    for w, h in ((65000, 1), (1, 65000), (6500, 100)):
        with pytest.raises(pp.ImageError, match="aspect ratio over 64:1") as info:
            prep(_with_size(small, w, h))
        assert info.value.status == 413
    assert decoded == []
    with pytest.raises(pp.ImageError) as info:
        prep(_with_size(small, 7000, 7000))
    assert info.value.status == 400
    # negative controls: a 64:1 image and a 1 x 1 image are fine
    one = io.BytesIO()
    Image.new("RGB", (1, 1), (200, 30, 30)).save(one, "JPEG")
    assert prep(make_jpeg(640, 10, seed=2)) is not None and prep(one.getvalue()) is not None
