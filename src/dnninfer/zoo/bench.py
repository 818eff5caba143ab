"""`dnninfer bench onnx`: every zoo model through both torch.onnx exporters and back via `import_onnx`.

Not a paper's system but intake: a model that only exists as an ``.onnx`` file must come back as a
torch.fx graph that computes what onnxruntime and the original model compute, with the same
conv/linear/matmul nodes and FLOPs (what every partitioner and cost model reads), and that runs about
as fast as the original. Each case is exported to a temp folder, imported, compared with ORT and
with the original, captured, and timed: ORT (1 intra-op thread) vs the imported GraphModule vs the
original eager module, interleaved, torch pinned to 1 thread. An export or import that fails is a
row with its one-line error, not a crash.
"""

from __future__ import annotations

import collections
import contextlib
import io
import logging
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from dnninfer.bench.harness import compare
from dnninfer.bench.registry import BenchArgs, register_system
from dnninfer.bench.stats import median
from dnninfer.env import pinned_threads
from dnninfer.graph import max_abs_diff
from dnninfer.zoo.report import CLAIMS, TOL, report_section

EXPORTERS = {"legacy": {"dynamo": False, "opset_version": 17}, "dynamo": {"dynamo": True, "opset_version": 18}}
MAC_KINDS = ("conv", "linear", "matmul")
QUICK = {"models": ("digits_cnn", "lenet_digits", "resnet18"), "exporters": ("legacy",), "image": {"resnet18": 32}}
#: --smoke (the test suite's run): one small CNN (conv and linear nodes) through every stage, less timing.
SMOKE = {"models": ("lenet_digits",), "exporters": ("legacy",), "image": {}}
#: Image side per CNN: small where the model allows it (every zoo CNN ends in an adaptive pool);
#: alexnet and vgg16 stay at 224, the smallest side whose last feature map the legacy exporter's
#: adaptive_avg_pool2d accepts (6x6 and 7x7 must divide it). inception_v3 needs >= 75.
FULL_IMAGE = {"resnet18": 64, "resnet50": 64, "mobilenet_v2": 64, "googlenet": 64, "inception_v3": 96,
              "alexnet": 224, "vgg16": 224}
BERT_SEQ = 32
ROUND_BUDGET_S = (2.0, 0.5, 0.1)  # timed seconds per case, full / quick / smoke: repeats = budget / round
REPEATS = (5, 200)
TIMING = ("latency medians measured on this machine, 1 thread (torch pinned to 1, ORT intra/inter-op 1), "
          "ORT vs imported vs eager interleaved per case (harness.compare)")


def _one_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return (f"{type(e).__name__}: {lines[0].strip()}" if lines else type(e).__name__)[:200]


@contextlib.contextmanager
def _silenced() -> Iterator[None]:
    """Exporters print progress and, on failure, whole IR graphs, some from C++ straight to fds 1
    and 2; keep all of it off stdout, which carries the one ``--json`` object."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    logging.disable(logging.WARNING)
    try:
        with tempfile.TemporaryFile() as sink:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            try:
                with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), \
                        warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    yield
            finally:
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
    finally:
        logging.disable(logging.NOTSET)
        for fd in saved:
            os.close(fd)


def _inputs(name: str, image: dict[str, int], seed: int) -> tuple[torch.Tensor, ...]:
    from dnninfer import zoo

    if name in image:
        side = image[name]
        return (torch.randn(1, 3, side, side, generator=torch.Generator().manual_seed(seed)),)
    inputs = zoo.example_inputs(name, seed=seed)
    return (inputs[0][:, :BERT_SEQ],) if name == "bert_encoder" else inputs


def _outputs(out: Any) -> list[torch.Tensor]:
    from torch.utils import _pytree as pytree

    return [t.detach() for t in pytree.tree_leaves(out)]


def _compare(ours: list[torch.Tensor], theirs: list[torch.Tensor]) -> tuple[float, bool]:
    """(max |ours - theirs|, allclose at atol = rtol = TOL over every output)."""
    if len(ours) != len(theirs) or any(a.shape != b.shape for a, b in zip(ours, theirs, strict=True)):
        return float("inf"), False
    ok = all(torch.allclose(a.double(), b.double(), atol=TOL, rtol=TOL) for a, b in zip(ours, theirs, strict=True))
    return max_abs_diff(ours, theirs), ok


def _mac(graph: Any) -> tuple[dict[str, int], dict[str, float]]:
    nodes = collections.Counter(n.kind for n in graph.nodes.values())
    flops: dict[str, float] = collections.defaultdict(float)
    for n in graph.nodes.values():
        flops[n.kind] += n.flops
    return {k: nodes[k] for k in MAC_KINDS}, {k: flops[k] for k in MAC_KINDS}


def _slash(counts: dict[str, int]) -> str:
    return "/".join(str(counts[k]) for k in MAC_KINDS)


def _case(name: str, exporter: str, model: torch.nn.Module, inputs: tuple[torch.Tensor, ...], original: Any,
          eager_out: list[torch.Tensor], root: Path, args: BenchArgs) -> dict[str, Any]:
    import onnxruntime as ort

    from dnninfer.graph import capture
    from dnninfer.zoo.onnx_import import import_onnx

    row: dict[str, Any] = {"model": name, "exporter": exporter,
                           "input": "x".join(map(str, inputs[0].shape))}
    folder = Path(tempfile.mkdtemp(prefix=f"{name}_{exporter}_", dir=root))
    path = folder / f"{name}.onnx"
    stage = "export"
    try:
        start = time.perf_counter()
        with _silenced():
            torch.onnx.export(model, inputs, str(path), **EXPORTERS[exporter])
        row["export_s"] = time.perf_counter() - start
        stage = "import"
        start = time.perf_counter()
        gm, _ = import_onnx(path)
        row["import_s"] = time.perf_counter() - start
        stage = "run"
        ours = _outputs(gm(*inputs))
        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        feed = {i.name: x.numpy() for i, x in zip(session.get_inputs(), inputs, strict=True)}
        theirs = [torch.from_numpy(a) for a in session.run(None, feed)]
        row["max_err_ort"], row["match_ort"] = _compare(ours, theirs)
        row["max_err_torch"], row["match_torch"] = _compare(ours, eager_out)
        stage = "capture"
        nodes_o, flops_o = _mac(original)
        nodes_i, flops_i = _mac(capture(gm, inputs, name=f"{name}_{exporter}"))
        ratios = [flops_i[k] / flops_o[k] for k in MAC_KINDS if flops_o[k] > 0]
        same = nodes_i == nodes_o
        row.update({"mac_nodes": _slash(nodes_i) if same else f"{_slash(nodes_i)} vs {_slash(nodes_o)}",
                    "mac_nodes_match": same,
                    "flops_ratio_min": min(ratios, default=None), "flops_ratio_max": max(ratios, default=None)})
        stage = "timing"
        cases = {"ort": lambda: session.run(None, feed), "imported": lambda: gm(*inputs),
                 "eager": lambda: model(*inputs)}
        start = time.perf_counter()
        for fn in cases.values():  # one untimed round: sizes the repeats, warms the caches
            fn()
        one_round = time.perf_counter() - start
        budget = args.pick(*ROUND_BUDGET_S)
        repeats = int(min(REPEATS[1], max(REPEATS[0], budget / one_round)))
        t = compare(cases, warmup=1, repeats=repeats, seed=args.seed, description=f"{name} {exporter}")
        row.update({"ort_ms": t["ort"].median * 1e3, "imported_ms": t["imported"].median * 1e3,
                    "eager_ms": t["eager"].median * 1e3,
                    "imported_over_eager": t["imported"].median / t["eager"].median,
                    "imported_over_ort": t["imported"].median / t["ort"].median, "repeats": repeats})
    except Exception as e:
        row["error"] = f"{stage}: {_one_line(e)}"
    finally:
        for f in folder.iterdir():  # the dynamo exporter writes weights to a side file
            f.unlink()
        folder.rmdir()
    return row


def _ours(rows: list[dict[str, Any]], models: tuple[str, ...], exporters: tuple[str, ...]) -> dict[str, Any]:
    ok = [r for r in rows if "max_err_ort" in r]
    imports = [r["import_s"] for r in rows if "import_s" in r]
    timed = [r for r in rows if "imported_over_eager" in r]
    lo = [r["flops_ratio_min"] for r in ok if r.get("flops_ratio_min") is not None]
    hi = [r["flops_ratio_max"] for r in ok if r.get("flops_ratio_max") is not None]
    return {
        "cases": f"{len(models)} models x {len(exporters)} exporters ({', '.join(exporters)})",
        "exported": sum("export_s" in r for r in rows),
        "imported": f"{len(imports)}/{len(rows)}",
        "failed": sum("error" in r for r in rows),
        "all_match_ort": bool(ok) and all(r["match_ort"] for r in ok),
        "all_match_torch": bool(ok) and all(r["match_torch"] for r in ok),
        "max_err_ort": max((r["max_err_ort"] for r in ok), default=None),
        "max_err_torch": max((r["max_err_torch"] for r in ok), default=None),
        "mac_nodes_all_match": bool(ok) and all(r.get("mac_nodes_match") for r in ok),
        "flops_ratio_min": min(lo, default=None),
        "flops_ratio_max": max(hi, default=None),
        "median_imported_over_eager": median([r["imported_over_eager"] for r in timed]) if timed else None,
        "median_imported_over_ort": median([r["imported_over_ort"] for r in timed]) if timed else None,
        "median_import_s": median(imports) if imports else None,
        "threads": 1,
    }


@register_system("onnx", description="ONNX intake: zoo models x both torch.onnx exporters, imported vs ORT "
                 "vs the original (errors, MAC nodes/FLOPs, import time, 1-thread latency)",
                 report_section=report_section, headline=CLAIMS[0])
def bench_onnx(args: BenchArgs) -> dict[str, Any]:
    from dnninfer import zoo
    from dnninfer.graph import capture

    full = {"models": tuple(zoo.names(origin="zoo")), "exporters": tuple(EXPORTERS), "image": FULL_IMAGE}
    cfg = args.pick(full, QUICK, SMOKE)
    models, exporters, image = cfg["models"], cfg["exporters"], cfg["image"]
    rows = []
    with pinned_threads(1), torch.no_grad(), tempfile.TemporaryDirectory(prefix="dnninfer_onnx_") as tmp:
        for name in models:
            model = zoo.build_model(name, seed=args.seed)
            inputs = _inputs(name, image, args.seed)
            original = capture(model, inputs, name=name)
            eager_out = _outputs(model(*inputs))
            for exporter in exporters:
                rows.append(_case(name, exporter, model, inputs, original, eager_out, Path(tmp), args))
    return {
        "paper": {"note": "intake, no paper figure: ONNX files must import as torch graphs that match "
                          "onnxruntime and the original and cost what the original costs",
                  "timing": TIMING},
        "ours": _ours(rows, models, exporters),
        "rows": rows,
    }
