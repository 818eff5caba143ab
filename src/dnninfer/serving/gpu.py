"""Serving on a GPU, in-process (issue 19; the GPU check's ``serving`` part).

Two pipelines in front of the same classifier on the GPU, each with dynamic batching
(`DynamicBatcher`), for the small / medium / large images of images.py:

* ``gpu_decode``: a batcher collects the JPEG bytes; one batched nvJPEG decode on the GPU
  (``torchvision.io.decode_jpeg(list, device="cuda")``), then the centre box (the part of the image
  that survives "shorter side to 256, centre 224") cropped and resized with an antialiased bilinear
  filter, and the ImageNet normalisation, all on the GPU on the pre-processing stream; a second
  batcher (no extra delay: the rows arrive together) runs the DNN on its own stream, so the next
  batch decodes while this one classifies.
* ``cpu_decode``: the server's optimised CPU path (preprocess.fast_preprocess: DCT-scaled decode
  with simplejpeg, resize of the centre box, normalise) in a pool of CPU threads; the batcher copies
  the batch to the GPU and runs the DNN. Without simplejpeg (the lent machine has none unless its
  wheel is carried) Pillow's draft mode gives libjpeg-turbo's power-of-two DCT scaling.

Per size: stage times at low load (one request at a time, the device synchronised between stages,
so each stage's time is its own), their shares, the non-DNN share; closed-loop peak throughput of
both, rounds interleaved; GPU over CPU-decode throughput. With `FakeCudaBackend` (the dry run) the
"GPU" stages run on CPU tensors and decode with Pillow: every code path, no GPU figure.
"""

from __future__ import annotations

import abc
import argparse
import asyncio
import io
import itertools
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from dnninfer.serving.batcher import DynamicBatcher
from dnninfer.serving.preprocess import CROP, MEAN, RESIZE, STD, Prepared, fast_resize, normalise_hwc

__all__ = ["PIPELINES", "CpuDecodePipeline", "GpuDecodePipeline", "ImageOps", "cpu_preprocessor", "main",
           "run_serving", "serving_ours"]

PIPELINES = ("gpu_decode", "cpu_decode")
#: ``batch``: forming the DNN's input (CPU decode: stack on the host and copy to the device; GPU decode:
#: stack on the device); ``queue``: waiting for a batcher, and every hand-off between threads
STAGES = ("decode", "resize", "normalise", "queue", "batch", "infer", "post")
#: large first: the issue's goal is measured on it, so a part stopped at its limit loses the small images
REAL = {"model": "mobilenet_v2", "sizes": ("large", "medium", "small"), "images": 4, "lowload": 20, "warmup": 3,
        "peak_s": 3.0, "rounds": 2, "concurrency": 64, "max_batch": 32, "max_delay_ms": 2.0}
DRY = {"model": "mobilenet_v2", "sizes": ("small", "medium", "large"), "images": 1, "lowload": 2, "warmup": 1,
       "peak_s": 0.3, "rounds": 1, "concurrency": 4, "max_batch": 4, "max_delay_ms": 2.0}


# -- the image operations on the device ------------------------------------------------------------
class ImageOps:
    """Batched decode, centre-box resize and normalise on the backend's device (module docstring)."""

    def __init__(self, backend: Any) -> None:
        self.backend, self.device = backend, backend.device
        self.scale = backend.to_device(torch.from_numpy(1.0 / (255.0 * STD)).view(1, 3, 1, 1))
        self.shift = backend.to_device(torch.from_numpy(-MEAN / STD).view(1, 3, 1, 1))

    @property
    def decoder(self) -> str:
        if self.backend.fake:
            return "Pillow on CPU (fake backend)"
        return "nvJPEG: torchvision.io.decode_jpeg(list, device=cuda)"

    def decode(self, bodies: Sequence[bytes]) -> list[torch.Tensor]:
        """JPEG bytes -> (3, H, W) uint8 images on the device, one batched call."""
        data = [torch.from_numpy(np.frombuffer(b, dtype=np.uint8).copy()) for b in bodies]
        if self.backend.fake:
            from PIL import Image

            return [torch.from_numpy(np.array(Image.open(io.BytesIO(d.numpy().tobytes())).convert("RGB"))
                                     ).permute(2, 0, 1).contiguous() for d in data]
        from torchvision.io import ImageReadMode, decode_jpeg

        out = decode_jpeg(data, mode=ImageReadMode.UNCHANGED, device=self.device)
        return [img.expand(3, -1, -1) if img.shape[0] == 1 else img for img in out]

    def resize(self, images: Sequence[torch.Tensor]) -> torch.Tensor:
        """The centre box of each image (shorter side * 224/256, centred) to 224 x 224, bilinear with
        antialiasing (what Pillow's resize does), float 0..255; one kernel per distinct box size."""
        boxes = []
        for img in images:
            h, w = img.shape[-2:]
            side = max(1, round(min(w, h) * CROP / RESIZE))
            top, left = (h - side) // 2, (w - side) // 2
            boxes.append(img[:, top:top + side, left:left + side])
        out: list[torch.Tensor | None] = [None] * len(boxes)
        for idx in _groups([tuple(b.shape) for b in boxes]).values():
            batch = torch.stack([boxes[i] for i in idx]).float()
            small = F.interpolate(batch, size=(CROP, CROP), mode="bilinear", antialias=True, align_corners=False)
            for j, i in enumerate(idx):
                out[i] = small[j]
        return torch.stack(out)  # type: ignore[arg-type]

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """(x / 255 - mean) / std as one multiply-add, in place."""
        return x.mul_(self.scale).add_(self.shift)


def _groups(keys: Sequence[Any]) -> dict[Any, list[int]]:
    out: dict[Any, list[int]] = {}
    for i, k in enumerate(keys):
        out.setdefault(k, []).append(i)
    return out


def pillow_preprocess(body: bytes) -> Prepared:
    """fast_preprocess without simplejpeg: Pillow's draft mode asks libjpeg-turbo for DCT scaling
    too, but only at 1/2, 1/4, 1/8 (simplejpeg takes any M/8): the same scale for the small and
    large images, 1/2 where simplejpeg takes 3/8 for the medium one. Then the same resize and
    normalise. (No EXIF rotation: the generated images have none.)"""
    from PIL import Image

    t0 = time.perf_counter()
    img = Image.open(io.BytesIO(body))
    w, h = img.size
    s = RESIZE / min(w, h)
    img.draft("RGB", (math.ceil(w * s), math.ceil(h * s)))
    arr = np.asarray(img.convert("RGB"))
    t1 = time.perf_counter()
    small = fast_resize(arr)
    t2 = time.perf_counter()
    x = normalise_hwc(small)
    return Prepared(x, t1 - t0, t2 - t1, time.perf_counter() - t2, t0, None, (w, h))


def cpu_preprocessor() -> tuple[Callable[[bytes], Prepared], str]:
    """The server's optimised CPU path where simplejpeg imports, else the Pillow equivalent."""
    try:
        import simplejpeg  # noqa: F401

        from dnninfer.serving.preprocess import fast_preprocess

        return fast_preprocess, "simplejpeg DCT-scaled decode (preprocess.fast_preprocess)"
    except ImportError:
        return pillow_preprocess, "Pillow draft-mode DCT-scaled decode (simplejpeg not installed)"


# -- the two pipelines ----------------------------------------------------------------------------------
class _Pipeline(abc.ABC):
    """The DNN half both pipelines share: a batcher whose forward runs the model on its own stream.
    ``timed``: synchronise between stages so each stage's time is its own (low load only)."""

    name = ""

    def __init__(self, backend: Any, model: torch.nn.Module, cfg: dict[str, Any]) -> None:
        self.backend, self.cfg = backend, cfg
        self.model = backend.to_device(model).eval()
        self.dnn_stream = backend.new_stream()
        self.dnn_pool = ThreadPoolExecutor(1, thread_name_prefix=f"{self.name}-dnn")
        self.timed = False
        self.dnn: DynamicBatcher | None = None

    def _sync(self, stream: Any) -> None:
        if self.timed:
            self.backend.sync_stream(stream)

    @abc.abstractmethod
    def _to_batch(self, xs: Sequence[Any]) -> torch.Tensor:
        """The model's input batch on the device from one batch of decoded requests."""

    def _dnn_forward(self, xs: Sequence[Any]) -> tuple[torch.Tensor, float, float]:
        def work() -> tuple[torch.Tensor, float, float]:
            with torch.inference_mode():
                t0 = time.perf_counter()
                batch = self._to_batch(xs)
                self._sync(self.dnn_stream)
                t1 = time.perf_counter()
                logits = self.model(batch)
                self._sync(self.dnn_stream)
                return logits, t1 - t0, time.perf_counter() - t1

        return self.backend.launch(self.dnn_stream, "dnn", work)

    def _dnn_post(self, out: tuple[torch.Tensor, float, float]) -> list[tuple[int, float, float]]:
        logits, batch_s, infer_s = out
        top1 = self.backend.launch(self.dnn_stream, "post", lambda: logits.argmax(dim=1).cpu().tolist())
        return [(int(c), batch_s, infer_s) for c in top1]

    def start(self, dnn_delay_s: float) -> None:
        cfg = self.cfg
        self.dnn = DynamicBatcher(self._dnn_forward, self._dnn_post, executor=self.dnn_pool,
                                  max_batch=cfg["max_batch"], max_delay_s=dnn_delay_s,
                                  max_queue=4 * max(cfg["concurrency"], cfg["max_batch"]), name=f"{self.name}-dnn")
        self.dnn.start()

    async def stop(self) -> None:
        if self.dnn is not None:
            await self.dnn.stop()

    @abc.abstractmethod
    async def request(self, body: bytes) -> dict[str, float]:
        """One JPEG request through the pipeline: its stage seconds."""

    async def _classify(self, x: Any, t0: float, stages: dict[str, float]) -> dict[str, float]:
        assert self.dnn is not None
        r = await self.dnn.submit(x)
        _, batch_s, infer_s = r.value
        stages.update({"batch": batch_s, "infer": infer_s, "post": r.post_s})
        stages["queue"] = stages.get("queue", 0.0) + r.queue_s
        total = time.perf_counter() - t0
        stages["queue"] += max(0.0, total - sum(stages.values()))  # hand-offs between threads count as queueing
        stages["total"] = total
        return stages


class GpuDecodePipeline(_Pipeline):
    """JPEG bytes batched -> decode, resize, normalise on the device (pre stream) -> the DNN batcher."""

    name = "gpu_decode"

    def __init__(self, backend: Any, model: torch.nn.Module, cfg: dict[str, Any]) -> None:
        super().__init__(backend, model, cfg)
        self.ops = ImageOps(backend)
        self.pre_stream = backend.new_stream()
        self.pre_pool = ThreadPoolExecutor(1, thread_name_prefix="gpu-pre")
        self.pre: DynamicBatcher | None = None

    def preprocess(self, bodies: Sequence[bytes]) -> tuple[torch.Tensor, dict[str, float]]:
        """The batch as a normalised (N, 3, 224, 224) float tensor on the device, with stage seconds."""
        @torch.inference_mode()
        def work() -> tuple[torch.Tensor, dict[str, float]]:
            self.backend.sync_stream(self.pre_stream)  # nothing of ours still reads a block nvJPEG may get
            t0 = time.perf_counter()
            images = self.ops.decode(bodies)
            self._sync(self.pre_stream)
            t1 = time.perf_counter()
            x = self.ops.resize(images)
            self._sync(self.pre_stream)
            t2 = time.perf_counter()
            x = self.ops.normalise(x)
            self.backend.sync_stream(self.pre_stream)  # the rows are complete before the DNN stream reads them
            return x, {"decode": t1 - t0, "resize": t2 - t1, "normalise": time.perf_counter() - t2}

        return self.backend.launch(self.pre_stream, "pre", work)

    def _pre_post(self, out: tuple[torch.Tensor, dict[str, float]]) -> list[tuple[torch.Tensor, dict[str, float]]]:
        x, stages = out
        return [(x[i], stages) for i in range(x.shape[0])]

    def _to_batch(self, xs: Sequence[torch.Tensor]) -> torch.Tensor:
        for row in xs:
            self.backend.keep_alive(row, self.dnn_stream)
        return torch.stack(list(xs))

    def start(self, dnn_delay_s: float = 0.0) -> None:
        cfg = self.cfg
        self.pre = DynamicBatcher(self.preprocess, self._pre_post, executor=self.pre_pool,
                                  max_batch=cfg["max_batch"], max_delay_s=cfg["max_delay_ms"] / 1e3,
                                  max_queue=4 * max(cfg["concurrency"], cfg["max_batch"]), name="gpu-pre")
        self.pre.start()
        super().start(0.0)  # rows of one decoded batch arrive together: no second wait

    async def stop(self) -> None:
        if self.pre is not None:
            await self.pre.stop()
        await super().stop()

    async def request(self, body: bytes) -> dict[str, float]:
        assert self.pre is not None
        t0 = time.perf_counter()
        r = await self.pre.submit(body)
        row, pre = r.value
        return await self._classify(row, t0, {**pre, "queue": r.queue_s})


class CpuDecodePipeline(_Pipeline):
    """fast_preprocess in a CPU thread pool -> the DNN batcher, which copies the batch to the device."""

    name = "cpu_decode"

    def __init__(self, backend: Any, model: torch.nn.Module, cfg: dict[str, Any], workers: int) -> None:
        super().__init__(backend, model, cfg)
        self.prep, self.decoder = cpu_preprocessor()
        self.workers = workers
        self.cpu_pool = ThreadPoolExecutor(workers, thread_name_prefix="cpu-decode")

    def _to_batch(self, xs: Sequence[np.ndarray]) -> torch.Tensor:
        batch = torch.from_numpy(np.stack(xs)).permute(0, 3, 1, 2)  # HWC rows: a channels-last view
        return self.backend.to_device(batch).contiguous()

    def start(self, dnn_delay_s: float | None = None) -> None:
        super().start(self.cfg["max_delay_ms"] / 1e3 if dnn_delay_s is None else dnn_delay_s)

    async def request(self, body: bytes) -> dict[str, float]:
        t0 = time.perf_counter()
        p = await asyncio.get_running_loop().run_in_executor(self.cpu_pool, self.prep, body)
        return await self._classify(p.tensor, t0, {"decode": p.decode_s, "resize": p.resize_s,
                                                   "normalise": p.normalise_s})


# -- measuring ----------------------------------------------------------------------------------------
async def _low_load(pipes: dict[str, _Pipeline], bodies: Sequence[bytes], n: int,
                    warmup: int) -> dict[str, list[dict[str, float]]]:
    """One request at a time, pipelines alternating ABBA, stages synchronised."""
    out: dict[str, list[dict[str, float]]] = {p: [] for p in pipes}
    for p in pipes.values():
        p.timed = True
        p.start()
    try:
        for i in range(warmup + n):
            for name in (list(pipes) if i % 2 == 0 else list(pipes)[::-1]):
                stages = await pipes[name].request(bodies[i % len(bodies)])
                if i >= warmup:
                    out[name].append(stages)
    finally:
        for p in pipes.values():
            await p.stop()
            p.timed = False
    return out


async def _closed_loop(pipe: _Pipeline, bodies: Sequence[bytes], concurrency: int, duration_s: float) -> dict[str, Any]:
    """``concurrency`` clients, each sending its next request when the last one returns."""
    pipe.start()
    done = 0
    lat: list[float] = []
    counter = itertools.count()
    stop_at = time.perf_counter() + duration_s

    async def client() -> None:
        nonlocal done
        while time.perf_counter() < stop_at:
            stages = await pipe.request(bodies[next(counter) % len(bodies)])
            done += 1
            lat.append(stages["total"])

    t0 = time.perf_counter()
    try:
        await asyncio.gather(*(client() for _ in range(concurrency)))
    finally:
        elapsed = time.perf_counter() - t0
        batcher = pipe.dnn
        mean_batch = batcher.items / batcher.batches if batcher and batcher.batches else None
        await pipe.stop()
    return {"rps": done / elapsed, "requests": done, "p50_ms": 1e3 * statistics.median(lat) if lat else None,
            "mean_batch": mean_batch}


def _shares(records: list[dict[str, float]]) -> dict[str, Any]:
    med = {s: 1e3 * statistics.median(r.get(s, 0.0) for r in records) for s in STAGES}
    total = sum(med.values())
    shares = {s: (v / total if total > 0 else 0.0) for s, v in med.items()}
    return {"stage_ms": med, "stage_share": shares, "preprocess_share": 1.0 - shares["infer"],
            "latency_p50_ms": 1e3 * statistics.median(r["total"] for r in records)}


def _check(pipes: dict[str, Any], body: bytes, backend: Any, cpu_model: torch.nn.Module) -> dict[str, float]:
    """How far the GPU pipeline's input is from the CPU one (different decoders: not bit-equal), and
    the device DNN from the CPU DNN on the same input."""
    gpu, cpu = pipes["gpu_decode"], pipes["cpu_decode"]
    x_gpu, _ = gpu.preprocess([body])
    x_cpu = torch.from_numpy(cpu.prep(body).tensor).permute(2, 0, 1).unsqueeze(0)
    diff = (x_gpu.cpu() - x_cpu).abs()
    with torch.inference_mode():
        dev = gpu.model(backend.to_device(x_cpu)).cpu()
        ref = cpu_model(x_cpu)
    return {"preprocess_max_abs_diff": float(diff.max()), "preprocess_mean_abs_diff": float(diff.mean()),
            "dnn_device_vs_cpu_max_abs_err": float((dev - ref).abs().max())}


def run_serving(sec: Any, cfg: dict[str, Any], backend: Any, sizes: Sequence[str]) -> None:
    """Every size through both pipelines; one case per size in ``sec`` (schedule.gpu_check.Section)."""
    import copy

    from dnninfer import zoo
    from dnninfer.schedule.gpu_check import log
    from dnninfer.serving.images import jpeg_for

    model = zoo.build_model(cfg["model"], seed=0).eval()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 2)
    workers = cfg.get("cpu_workers") or max(1, cores - 2)  # the event loop and the two GPU threads keep 2
    pipes: dict[str, Any] = {"gpu_decode": GpuDecodePipeline(backend, copy.deepcopy(model), cfg),
                             "cpu_decode": CpuDecodePipeline(backend, copy.deepcopy(model), cfg, workers)}
    sec.data["config"] = {**cfg, "sizes": list(sizes), "cpu_workers": workers,
                          "gpu_decoder": pipes["gpu_decode"].ops.decoder, "cpu_decoder": pipes["cpu_decode"].decoder,
                          "dnn": f"{cfg['model']} fp32 NCHW eager",
                          "pipelines": {"gpu_decode": "batched GPU decode+resize+normalise -> DNN batcher (2 streams)",
                                        "cpu_decode": f"{workers} CPU threads decode+resize+normalise -> DNN batcher "
                                                      "(copy to device, DNN)"}}
    with torch.inference_mode():  # every batch size once, so no first-call cost lands in a measurement
        for pipe in pipes.values():
            for n in range(1, cfg["max_batch"] + 1):
                pipe.model(backend.to_device(torch.zeros(n, 3, CROP, CROP)))
        backend.synchronize()
    for size in sizes:
        with sec.case(size):
            bodies = [jpeg_for(size, seed=i) for i in range(cfg["images"])]
            case: dict[str, Any] = {"body_bytes": len(bodies[0]), **_check(pipes, bodies[0], backend, model)}
            low = asyncio.run(_low_load(pipes, bodies, cfg["lowload"], cfg["warmup"]))
            for name in PIPELINES:
                case[name] = _shares(low[name])
            rounds: dict[str, list[dict[str, Any]]] = {p: [] for p in PIPELINES}
            for rnd in range(cfg["rounds"]):
                for name in (PIPELINES if rnd % 2 == 0 else PIPELINES[::-1]):
                    rounds[name].append(asyncio.run(_closed_loop(pipes[name], bodies, cfg["concurrency"],
                                                                 cfg["peak_s"])))
            for name in PIPELINES:
                case[name]["throughput_rounds"] = rounds[name]
                case[name]["throughput_rps"] = statistics.median(r["rps"] for r in rounds[name])
            # per round, then the median: each ratio pairs back-to-back runs
            case["gpu_speedup"] = statistics.median(g["rps"] / c["rps"] for g, c in
                                                    zip(rounds["gpu_decode"], rounds["cpu_decode"], strict=True))
            sec.data["cases"][size] = case
            sec.data["rows"] += [{"size": size, "pipeline": p, "body_bytes": case["body_bytes"],
                                  "throughput_rps": case[p]["throughput_rps"],
                                  "preprocess_share": case[p]["preprocess_share"],
                                  "latency_p50_ms": case[p]["latency_p50_ms"],
                                  **{f"ms_{s}": v for s, v in case[p]["stage_ms"].items()}} for p in PIPELINES]
            sec.data["ours"] = serving_ours(sec.data["cases"])
            log(f"  serving {size}: gpu_decode {case['gpu_decode']['throughput_rps']:.0f} rps, cpu_decode "
                f"{case['cpu_decode']['throughput_rps']:.0f} rps, x{case['gpu_speedup']:.2f}; non-DNN share "
                f"{case['gpu_decode']['preprocess_share']:.1%} / {case['cpu_decode']['preprocess_share']:.1%}")


def serving_ours(cases: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The serving bench's GPU keys from the per-size cases."""
    return {
        "gpu_preprocess_share": {s: c["gpu_decode"]["preprocess_share"] for s, c in cases.items()},
        "gpu_preprocess_share_cpu_decode": {s: c["cpu_decode"]["preprocess_share"] for s, c in cases.items()},
        "gpu_throughput_rps": {s: {p: c[p]["throughput_rps"] for p in PIPELINES} for s, c in cases.items()},
        "gpu_speedup": {s: c["gpu_speedup"] for s, c in cases.items()},
        "gpu_speedup_large": cases["large"]["gpu_speedup"] if "large" in cases else None,
        "gpu_stage_ms": {s: {p: c[p]["stage_ms"] for p in PIPELINES} for s, c in cases.items()},
    }


def main(argv: Sequence[str] | None = None) -> int:
    from dnninfer.schedule.gpu_check import Section, backend_for, dry_run, env_list

    p = argparse.ArgumentParser(prog="python -m dnninfer.serving.gpu", description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--deadline", type=float, default=None)
    args = p.parse_args(argv)
    dry = dry_run()
    cfg = dict(DRY if dry else REAL)
    sec = Section("serving", args.out, args.deadline, dry)
    torch.manual_seed(0)
    run_serving(sec, cfg, backend_for(dry), env_list("SIZES") or cfg["sizes"])
    sec.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
