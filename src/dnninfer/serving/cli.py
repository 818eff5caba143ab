"""`dnninfer serve MODEL` and `dnninfer loadtest URL`."""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import re
import signal
import socket
import sys
from typing import Any
from urllib.parse import urlparse

from dnninfer import argtypes as at
from dnninfer.cliutil import emit, stdout
from dnninfer.errors import UserError, expected

__all__ = ["add_commands", "add_serve_arguments", "cmd_loadtest", "cmd_serve"]


def add_serve_arguments(p: argparse.ArgumentParser, *, with_model: bool = True) -> None:
    if with_model:
        p.add_argument("model", help="zoo image classifier (mobilenet_v2, resnet18...) or a user's classifier: "
                                     "path/model.py[:factory], model.onnx, model.pt2")
    p.add_argument("--input-shape", type=at.input_shape, default=None,
                   help="input shape of a user model file, e.g. 1,3,32,32 (crops are resized to it)")
    p.add_argument("--weights", metavar="FILE", default=None, help="state_dict for a model.py factory")
    p.add_argument("--trust-pickle", action="store_true",
                   help="load a pickled whole-module .pt (unpickling runs the file's code: trusted files only)")
    p.add_argument("--pipeline", choices=["naive", "optimized"], default="optimized",
                   help="naive: Pillow decode + model on the event loop, one at a time; optimized: DCT-scaled "
                        "decode in a worker pool + dynamic batching")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=at.bounded_int(0, 65535), default=8000, help="0: any free port")
    p.add_argument("--max-batch", type=at.positive_int, default=4, help="dynamic batcher: largest batch (optimized)")
    p.add_argument("--max-delay-ms", type=at.nonneg_float, default=5.0,
                   help="dynamic batcher: longest wait after the oldest queued request (optimized)")
    p.add_argument("--max-queue", type=at.positive_int, default=64,
                   help="admitted requests in flight; beyond: 503 + Retry-After")
    p.add_argument("--max-body-mb", type=at.positive_float, default=32.0, help="largest request body; beyond: 413")
    p.add_argument("--read-timeout", type=at.positive_float, default=10.0, metavar="S",
                   help="close a connection whose request headers, or then body, are not complete within S "
                        "seconds (408); a stalled client holds no slot longer than this")
    p.add_argument("--decode-workers", type=at.positive_int, default=2, help="decode threads (optimized)")
    p.add_argument("--threads", type=at.threads, default=1, help="torch intra-op threads")
    p.add_argument("--no-channels-last", action="store_true", help="optimized: keep NCHW-contiguous tensors")
    p.add_argument("--topk", type=at.positive_int, default=5)
    p.add_argument("--broker", default="queue",
                   help="broker between the detector and the per-crop classifier (detect_classify): none, queue, "
                        "redis, or several (queue,redis; the first is the default, ?broker=redis picks another)")
    p.add_argument("--redis-url", default=None, help="redis://HOST:PORT for --broker redis")
    p.add_argument("--start-redis", action="store_true",
                   help="with --broker redis: start a private redis-server on a free loopback port")
    p.add_argument("--seed", type=at.seed, default=0)


def user_classifier(spec: str, input_shape: Any = None, weights: str | None = None,
                    trust_pickle: bool = False) -> Any:
    """(name, `UserClassifier`) for a MODEL that is not a zoo name, else (spec, None)."""
    from dnninfer import zoo

    if spec in zoo.names():
        return spec, None
    from dnninfer.serving.models import UserClassifier
    from dnninfer.zoo import load_model

    loaded = load_model(spec, input_shape=input_shape, weights=weights, trust_pickle=trust_pickle)
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", loaded.name)[:64] or "model"
    return name, UserClassifier(loaded.model, loaded.inputs[0], name)


def config_from_args(args: argparse.Namespace, name: str | None = None) -> Any:
    from dnninfer.serving.server import ServeConfig

    return ServeConfig(model=name or args.model, pipeline=args.pipeline, max_batch=args.max_batch,
                       max_delay_ms=args.max_delay_ms, max_queue=args.max_queue,
                       max_body_bytes=int(args.max_body_mb * 2**20), decode_workers=args.decode_workers,
                       threads=args.threads, channels_last=not args.no_channels_last, topk=args.topk,
                       seed=args.seed, broker=args.broker, redis_url=args.redis_url,
                       read_timeout_s=args.read_timeout)


def cmd_serve(args: argparse.Namespace) -> None:
    """Serve until SIGINT/SIGTERM; both drain in-flight requests first."""
    from dnninfer.serving.redis_server import RedisServer, redis_missing_reason
    from dnninfer.serving.server import create_app
    from dnninfer.serving.transport import make_server, uvicorn_config

    redis = None
    if args.start_redis:
        if "redis" not in args.broker.split(","):
            raise UserError("--start-redis needs --broker redis (or a list with redis)")
        reason = redis_missing_reason()
        if reason:
            raise UserError(f"--start-redis: {reason}")
        redis = RedisServer().start()
        args.redis_url = redis.url
        print(f"dnninfer: started redis-server at {redis.url}", file=sys.stderr)
    try:
        name, classifier = user_classifier(args.model, args.input_shape, args.weights, args.trust_pickle)
        cfg = config_from_args(args, name).validate(user_model=classifier is not None)
        app = create_app(cfg, classifier=classifier)
        sock = _listen(args.host, args.port)  # bind here: a busy port is a user error, not a uvicorn exit(1)
        print(f"dnninfer: serving {cfg.model} ({cfg.pipeline}) on http://{args.host}:{args.port} "
              f"POST /v1/models/{{{', '.join(app.state.service.models)}}}/infer", file=sys.stderr)
        config = uvicorn_config(app, cfg.read_timeout_s, cfg.drain_timeout_s)
        # uvicorn drains on SIGTERM, then re-raises it to the previous handler; make that handler
        # unwind (not kill) the process so the `finally` below stops a --start-redis server
        previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
        try:
            make_server(app, config).run(sockets=[sock])
        finally:
            signal.signal(signal.SIGTERM, previous)
    finally:
        if redis is not None:
            redis.stop()


def _exit_on_sigterm(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)


def _listen(host: str, port: int) -> socket.socket:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        family, _, _, _, addr = infos[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
    except OSError as e:
        raise UserError(f"--port {port}: cannot listen on {host}: {e.strerror or e}") from None
    return sock


def _check_url(url: str, allow_remote: bool) -> str:
    u = urlparse(url)
    if u.scheme not in ("http", "https") or not u.hostname:
        raise expected("URL", "http://HOST:PORT/v1/models/NAME/infer", url)
    if "/v1/models/" not in u.path or not u.path.rstrip("/").endswith("/infer"):
        raise expected("URL", "an inference endpoint such as http://127.0.0.1:8000/v1/models/mobilenet_v2/infer",
                       url)
    host = u.hostname
    loopback = host == "localhost"
    with contextlib.suppress(ValueError):
        loopback = loopback or ipaddress.ip_address(host).is_loopback
    if not loopback and not allow_remote:
        raise UserError(f"URL {url}: {host} is not a loopback address; load tests target 127.0.0.1 unless "
                        f"--allow-remote is given (and you own that server)")
    return url


def cmd_loadtest(args: argparse.Namespace) -> None:
    from pathlib import Path

    import httpx

    from dnninfer.serving.images import jpeg_for
    from dnninfer.serving.loadgen import run_load

    url = _check_url(args.url, args.allow_remote)
    if args.image:
        try:
            bodies = [Path(args.image).read_bytes()]
        except OSError as e:
            raise UserError(f"--image {args.image}: cannot read it ({e.strerror})") from None
    else:
        bodies = [jpeg_for(args.image_size, seed=args.seed + i) for i in range(args.images)]
    base = url.split("/v1/models/")[0]
    try:
        httpx.get(f"{base}/health", timeout=5.0)
    except httpx.HTTPError as e:
        raise UserError(f"cannot reach {base} ({type(e).__name__}); is `dnninfer serve` running there?") from None
    result = run_load(url, bodies, concurrency=args.concurrency, rate=args.rate, requests=args.requests,
                      duration_s=args.duration, **({"poisson": not args.constant, "seed": args.seed}
                                                   if args.rate is not None else {}))
    summary = result.summary()
    summary["image"] = args.image or args.image_size
    summary["body_bytes"] = len(bodies[0])
    if args.json:
        emit(args, summary, "")
        return
    row = {k: summary[k] for k in ("mode", "sent", "ok", "errors", "wall_s", "throughput_rps")}
    row.update({f"lat_{k}_ms": v for k, v in summary["latency_ms"].items() if k != "mean"})
    emit(args, summary, f"load test: {url} ({summary['image']}, {len(bodies[0])} bytes)", [row])
    stages = summary["server_stage_median_ms"]
    if stages:
        emit(args, stages, "server stage medians (ms)", [stages])
    if summary["errors"]:
        stdout().print(f"statuses: {summary['statuses']}; first errors: {summary['first_errors']}", markup=False)


def add_commands(sub: Any) -> None:
    p = sub.add_parser("serve", help="serve a zoo classifier (and a detector -> classifier pipeline) over HTTP")
    add_serve_arguments(p)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("loadtest", help="load a dnninfer server: closed loop (--concurrency) or open loop (--rate)")
    p.add_argument("url", help="inference endpoint, e.g. http://127.0.0.1:8000/v1/models/mobilenet_v2/infer")
    p.add_argument("--image-size", choices=["small", "medium", "large"], default="medium",
                   help="generated JPEG: ~0.1, ~1 or ~12 megapixels")
    p.add_argument("--image", default=None, help="send this JPEG file instead of a generated one")
    p.add_argument("--images", type=at.positive_int, default=2, help="distinct generated images to cycle through")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--concurrency", type=at.positive_int, default=None, help="closed loop: N workers (default 4)")
    mode.add_argument("--rate", type=at.positive_float, default=None, help="open loop: requests per second")
    p.add_argument("--constant", action="store_true", help="open loop: constant gaps instead of Poisson")
    p.add_argument("--requests", type=at.positive_int, default=200, help="stop after this many requests")
    p.add_argument("--duration", type=at.positive_float, default=30.0, help="stop after this many seconds")
    p.add_argument("--allow-remote", action="store_true", help="allow a non-loopback target")
    p.add_argument("--seed", type=at.seed, default=0)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_loadtest)
