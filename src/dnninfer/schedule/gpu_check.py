"""The GPU check (issue 19): Opara measured on a lent GPU in one bounded run, or dry-run on CPU.

``scripts/gpu_check.sh OUTDIR`` runs each part in its own process under a hard time limit
(``timeout``), so a slow part (Inductor compiling) cannot eat the others' minutes:

    env      torch / torchvision versions against the range pyproject declares, the device
    opara    per (model, batch): eager, the sequential CUDA Graph, ours (Alg. 1 + Alg. 2 in one
             multi-stream CUDA Graph), ours in program order, Nimble, critical-path-first, ours on
             one stream; outputs vs eager on fresh inputs; streams; per-operator GPU times
    serving  dnninfer.serving.gpu: GPU-side JPEG decode + resize + normalise vs CPU decode
    compile  torch.compile(mode="reduce-overhead") vs ours and the sequential graph, timed together,
             compile seconds apart; GoogLeNet and Inception-v3 at every batch, the rest at batch 1
    merge    OUTDIR/gpu_check.json: every part's figures (what finished), ``ours`` in the benches'
             keys, and each part's status (ok / partial / timeout / error)

A part rewrites its JSON after every case, and a SIGTERM at its limit records where it stopped,
so what was measured survives. ``DNNINFER_GPU_DRY_RUN=1`` (``gpu_check.sh --dry-run``) runs the
same code with `FakeCudaBackend` on CPU, small repeats, batch 2 for 8; nothing it writes is a GPU
figure (``dry_run: true``). Overrides, for tests and reruns: ``DNNINFER_GPU_CHECK_MODELS``,
``..._BATCHES``, ``..._SIZES`` (serving) as comma lists, ``..._FAULT`` (modes whose parameters
are perturbed after capture: the negative control of "outputs equal to eager").
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import os
import re
import signal
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from dnninfer.schedule.gpu_results import SCHEMA

__all__ = ["SCHEMA", "Section", "backend_for", "config", "dry_run", "env_list", "log", "main", "merge", "opara_ours",
           "torch_range", "version_in_range"]

DRY_ENV = "DNNINFER_GPU_DRY_RUN"
#: compiled at every batch (the issue's budget); every other model at batch 1 only
COMPILE_ALL_BATCHES = ("googlenet", "inception_v3")
#: a first guess of compile seconds on the lent machine, until one is measured in the run
COMPILE_GUESS_S = {"googlenet": 45.0, "inception_v3": 80.0, "bert_encoder": 30.0, "nasnet_cells": 90.0}
REAL = {"models": ("googlenet", "inception_v3", "nasnet_cells", "bert_encoder"), "batches": (1, 8),
        "repeats": 100, "warmup": 10, "graph_warmup": 3, "profile_repeats": 10, "compile_repeats": 60}
DRY = {"models": ("googlenet", "inception_v3", "nasnet_cells", "bert_encoder"), "batches": (1, 2),
       "repeats": 2, "warmup": 1, "graph_warmup": 1, "profile_repeats": 1, "compile_repeats": 2}


def dry_run() -> bool:
    return os.environ.get(DRY_ENV, "") not in ("", "0")


def env_list(name: str) -> list[str] | None:
    value = os.environ.get(f"DNNINFER_GPU_CHECK_{name}", "").strip()
    return [v.strip() for v in value.split(",") if v.strip()] or None


def config(dry: bool | None = None) -> dict[str, Any]:
    """The run's settings: REAL or DRY, with the environment's overrides."""
    cfg = dict(DRY if (dry_run() if dry is None else dry) else REAL)
    if models := env_list("MODELS"):
        cfg["models"] = tuple(models)
    if batches := env_list("BATCHES"):
        cfg["batches"] = tuple(int(b) for b in batches)
    cfg["fault"] = tuple(env_list("FAULT") or ())
    big = [b for b in cfg["batches"] if b != 1]
    cfg["compile_cases"] = tuple([(m, 1) for m in cfg["models"] if 1 in cfg["batches"]]
                                 + [(m, b) for b in big for m in cfg["models"] if m in COMPILE_ALL_BATCHES])
    return cfg


def backend_for(dry: bool) -> Any:
    from dnninfer.schedule.cuda import CudaBackend, FakeCudaBackend

    return FakeCudaBackend() if dry else CudaBackend()


# -- torch version -----------------------------------------------------------------------------
def torch_range(pyproject: Path | None = None) -> str:
    """The torch requirement pyproject.toml declares (``>=2.11,<2.14``)."""
    import tomllib

    path = pyproject or Path(__file__).resolve().parents[3] / "pyproject.toml"
    try:
        deps = tomllib.loads(path.read_text(encoding="utf-8"))["project"]["dependencies"]
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return ">=2.11,<2.14"
    spec = next((d for d in deps if re.match(r"torch\s*[<>=!~]", d)), "torch>=2.11,<2.14")
    return spec.removeprefix("torch").replace(" ", "")


def _release(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version.split("+")[0])[:3])


def version_in_range(version: str, spec: str) -> bool:
    """``2.11.0+cu130`` against ``>=2.11,<2.14``: each clause compares as many release numbers as it
    names (the local tag is ignored), so ``2.13.9 < 2.14`` and ``2.14.0`` is not."""
    ops = {">=": tuple.__ge__, "<=": tuple.__le__, ">": tuple.__gt__, "<": tuple.__lt__, "==": tuple.__eq__,
           "!=": tuple.__ne__}
    have = _release(version)
    for clause in filter(None, spec.split(",")):
        m = re.fullmatch(r"(>=|<=|==|!=|<|>)([\d.]+)", clause.strip())
        if not m:
            return False
        want = _release(m.group(2))
        if not ops[m.group(1)](have[:len(want)], want):
            return False
    return True


# -- one part of the run: its JSON, rewritten after every case ------------------------------------
def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[:300]}"


class Section:
    """A part's results file. ``case(key)`` runs one case: its failure is recorded and the part goes
    on; after it the file is rewritten (atomically). SIGTERM (the shell's time limit) records the
    case it interrupted and exits 124. ``left()`` is the seconds to the part's deadline."""

    def __init__(self, name: str, out: Path, deadline: float | None, dry: bool) -> None:
        from dnninfer.bench.output import to_jsonable

        self._jsonable = to_jsonable
        self.out, self.deadline, self.t0 = Path(out), deadline, time.time()
        self.data: dict[str, Any] = {"schema": SCHEMA, "section": name, "status": "running", "dry_run": dry,
                                     "started": _now(), "cases": {}, "rows": [], "errors": {}, "skipped": {},
                                     "case_s": {}, "current": None}
        self.out.parent.mkdir(parents=True, exist_ok=True)
        signal.signal(signal.SIGTERM, self._terminated)
        self.write()

    def left(self) -> float:
        return float("inf") if self.deadline is None else self.deadline - time.time()

    def write(self) -> None:
        self.data["wall_s"] = time.time() - self.t0
        tmp = self.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._jsonable(self.data), indent=1, allow_nan=True), encoding="utf-8")
        os.replace(tmp, self.out)

    def _terminated(self, signum: int, frame: Any) -> None:
        self.data["status"] = "timeout"
        self.data["interrupted"] = f"stopped at the part's time limit during {self.data['current']}"
        with contextlib.suppress(Exception):
            self.write()
        os._exit(124)

    def skip(self, key: str, reason: str) -> None:
        self.data["skipped"][key] = reason
        log(f"skip {key}: {reason}")
        self.write()

    @contextlib.contextmanager
    def case(self, key: str) -> Iterator[None]:
        self.data["current"], start = key, time.time()
        self.write()
        log(f"{self.data['section']}: {key} ...")
        try:
            yield
        except Exception as e:  # a failing case is a finding; the next one still runs
            self.data["errors"][key] = _one_line(e)
            log(f"{self.data['section']}: {key} FAILED: {_one_line(e)}\n{traceback.format_exc(limit=8)}")
        finally:
            self.data["case_s"][key] = time.time() - start
            self.data["current"] = None
            log(f"{self.data['section']}: {key} done in {time.time() - start:.1f} s")
            self.write()

    def finish(self) -> None:
        self.data["status"] = "partial" if self.data["errors"] or self.data["skipped"] else "ok"
        self.data["finished"] = _now()
        self.write()


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- the parts -----------------------------------------------------------------------------------
def run_env(sec: Section, dry: bool) -> int:
    """Versions and the device; exit status 3 when a real run finds no CUDA device."""
    import torch

    from dnninfer.env import capture_env

    spec = torch_range()
    try:
        import torchvision

        tv: str | None = torchvision.__version__
    except Exception as e:
        tv = None
        sec.data["torchvision_error"] = _one_line(e)
    ok = version_in_range(torch.__version__, spec)
    sec.data.update({"torch": torch.__version__, "torch_range": spec, "torch_in_range": ok, "torchvision": tv,
                     "cuda_available": torch.cuda.is_available(), "env": capture_env()})
    log(f"torch {torch.__version__} (declared {spec}: {'in range' if ok else 'OUT OF RANGE'}), "
        f"torchvision {tv}, CUDA available: {torch.cuda.is_available()}")
    if not ok:
        log(f"warning: torch {torch.__version__} is outside {spec}; measuring anyway, the JSON says so")
    if not dry and not torch.cuda.is_available():
        sec.data["errors"]["device"] = "no CUDA device visible to torch"
        sec.finish()
        return 3
    sec.data["device"] = backend_for(dry).describe()
    log(f"device: {sec.data['device']}")
    sec.finish()
    return 0


def _inputs(name: str, batch: int, seed: int) -> tuple[Any, Any, Any, Any]:
    from dnninfer import zoo
    from dnninfer.graph import capture

    model = zoo.build_model(name, seed=seed)
    x = zoo.example_inputs(name, batch=batch, seed=seed)
    fresh = zoo.example_inputs(name, batch=batch, seed=seed + 1)
    return model, capture(model, x, name=name), x, fresh


def _run_cases(sec: Section, cfg: dict[str, Any], backend: Any, cases: Sequence[tuple[str, int]],
               estimate: Callable[[str, int], float], **kw: Any) -> None:
    from dnninfer.schedule.gpu_bench import gpu_case

    for name, batch in cases:
        key = f"{name}/b{batch}"
        need = estimate(name, batch)
        if sec.left() < need:
            sec.skip(key, f"time limit: about {need:.0f} s needed, {max(sec.left(), 0):.0f} s left")
            continue
        with sec.case(key):
            model, graph, x, fresh = _inputs(name, batch, cfg.get("seed", 0))
            rows, summary = gpu_case(name, batch, model, graph, x, fresh, backend=backend,
                                     graph_warmup=cfg["graph_warmup"], profile_repeats=cfg["profile_repeats"],
                                     fault=cfg["fault"], **kw)
            sec.data["rows"] += rows
            sec.data["cases"].setdefault(name, {})[str(batch)] = summary
            equal = "equal" if summary["all_equal"] else "NOT EQUAL"
            log(f"  {key}: ours {summary['median_ms']['ours']:.3f} ms, x{summary['speedup_vs_cudagraph']:.2f} vs "
                f"cudagraph, {summary['streams']} streams, outputs {equal} (max err {summary['max_abs_error']:.2e})")


def run_opara(sec: Section, cfg: dict[str, Any], backend: Any) -> None:
    """Every mode but torch.compile, every (model, batch)."""
    def estimate(name: str, batch: int) -> float:
        same = [t for k, t in sec.data["case_s"].items() if k.startswith(f"{name}/")]
        seen = list(sec.data["case_s"].values())
        return 0.8 * (max(same) if same else statistics.median(seen) if seen else 0.0)

    # batch 1 of every model first (the headline), then the larger batches
    cases = [(m, b) for b in sorted(cfg["batches"]) for m in cfg["models"]]
    _run_cases(sec, cfg, backend, cases, estimate, warmup=cfg["warmup"], repeats=cfg["repeats"], use_compile=False)


def run_compile(sec: Section, cfg: dict[str, Any], backend: Any) -> None:
    """torch.compile(mode="reduce-overhead") timed together with eager, the sequential graph and
    ours (Alg. 1 + Alg. 2), highest priority first: what does not fit is skipped, with the reason."""

    def estimate(name: str, batch: int) -> float:
        seen = [s.get("compile_s") for s in sec.data["cases"].get(name, {}).values() if s.get("compile_s")]
        guess = 1.2 * max(seen) if seen else COMPILE_GUESS_S.get(name, 60.0)
        return 0.0 if backend.fake else 0.6 * guess

    _run_cases(sec, cfg, backend, cfg["compile_cases"], estimate, warmup=cfg["warmup"],
               repeats=cfg["compile_repeats"], use_compile=True, modes=("ours",))


# -- merge: one JSON for the run ---------------------------------------------------------------------
def _read(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _status(sections: Path) -> dict[str, dict[str, Any]]:
    """The shell's record per part: exit status, wall seconds, limit."""
    out: dict[str, dict[str, Any]] = {}
    with contextlib.suppress(OSError):
        for line in (sections / "status.tsv").read_text(encoding="utf-8").splitlines():
            parts = line.split("\t")
            if len(parts) >= 4:
                out[parts[0]] = {"rc": int(parts[1]) if parts[1].lstrip("-").isdigit() else parts[1],
                                 "wall_s": float(parts[2] or 0), "limit_s": float(parts[3] or 0)}
    return out


def opara_ours(opara: dict[str, Any] | None, comp: dict[str, Any] | None) -> dict[str, Any]:
    """What `dnninfer bench opara` reports under ``ours`` from a GPU check's two Opara parts."""
    from dnninfer.schedule.summary import gpu_keys

    cases = (opara or {}).get("cases", {})
    ccases = (comp or {}).get("cases", {})
    models = list(dict.fromkeys([*cases, *ccases]))
    ours = gpu_keys(cases, models, ("speedup_vs_cudagraph", "speedup_vs_nimble", "speedup_vs_topo_order",
                                    "speedup_vs_cpfirst", "speedup_vs_eager"))
    ours.update(gpu_keys(ccases, models, ("speedup_vs_compile",)))
    ours["gpu_compile_s"] = {m: {b: s.get("compile_s") for b, s in per.items()} for m, per in ccases.items()}
    ours["gpu_streams_used"] = {m: next(iter(per.values()))["streams"] for m, per in cases.items()}
    ours["gpu_outputs_equal"] = all(s.get("all_equal") for part in (cases, ccases) for per in part.values()
                                    for s in per.values()) if (cases or ccases) else None
    errs = [s.get("max_abs_error") for part in (cases, ccases) for per in part.values() for s in per.values()]
    ours["gpu_max_abs_error"] = max((e for e in errs if e is not None), default=None)
    return ours


def merge(outdir: Path) -> dict[str, Any]:
    """OUTDIR/sections/*.json + status.tsv -> OUTDIR/gpu_check.json."""
    sections = outdir / "sections"
    status = _status(sections)
    parts = {name: _read(sections / f"{name}.json") for name in ("env", "opara", "serving", "compile")}
    env = parts["env"] or {}
    report: dict[str, Any] = {"schema": SCHEMA, "date": _now(), "dry_run": bool(env.get("dry_run", dry_run())),
                              "machine": env.get("device"), "torch": env.get("torch"),
                              "torch_range": env.get("torch_range"), "torch_in_range": env.get("torch_in_range"),
                              "torchvision": env.get("torchvision"), "env": env.get("env"), "sections": {}}
    for name, data in parts.items():
        shell = status.get(name, {})
        state = (data or {}).get("status") or ("not run" if not shell else "no output")
        if shell.get("rc") in (124, 137) and state == "running":
            state = "timeout"
        elif state == "running":
            state = "error" if shell else "not run"
        data = data or {}
        report["sections"][name] = {"status": state, **shell, "errors": data.get("errors", {}),
                                    "skipped": data.get("skipped", {}), "interrupted": data.get("interrupted")}
    report["opara"] = {k: (parts["opara"] or {}).get(k) for k in ("cases", "rows")}
    report["compile"] = {k: (parts["compile"] or {}).get(k) for k in ("cases", "rows")}
    report["serving"] = {k: (parts["serving"] or {}).get(k) for k in ("cases", "rows", "config")}
    report["ours"] = {"opara": opara_ours(parts["opara"], parts["compile"]),
                      "serving": (parts["serving"] or {}).get("ours") or {}}
    from dnninfer.bench.output import to_jsonable

    (outdir / "gpu_check.json").write_text(json.dumps(to_jsonable(report), indent=1), encoding="utf-8")
    _print_summary(report)
    return report


def _print_summary(report: dict[str, Any]) -> None:
    machine = (report.get("machine") or {}).get("name")
    log(f"gpu check{' (DRY RUN, fake CUDA backend: no GPU figure)' if report['dry_run'] else ''} on {machine}, "
        f"torch {report.get('torch')}")
    for name, s in report["sections"].items():
        log(f"  {name}: {s['status']} rc={s.get('rc')} {s.get('wall_s', 0):.0f}/{s.get('limit_s', 0):.0f} s "
            f"errors={len(s['errors'])} skipped={len(s['skipped'])}")
    ours = report["ours"]["opara"]
    for m, v in (ours.get("gpu_speedup_vs_cudagraph") or {}).items():
        b8 = (ours.get("gpu_speedup_vs_cudagraph_b8") or {}).get(m)
        comp = (ours.get("gpu_speedup_vs_compile") or {}).get(m)
        log(f"  opara {m}: vs cudagraph b1 {_x(v)} b8 {_x(b8)}, vs compile b1 {_x(comp)}")
    serving = report["ours"]["serving"]
    if serving:
        log(f"  serving: GPU decode / CPU decode throughput, large: {_x(serving.get('gpu_speedup_large'))}; "
            f"GPU pipeline non-DNN share: {serving.get('gpu_preprocess_share')}")


def _x(v: Any) -> str:
    return f"{v:.2f}x" if isinstance(v, int | float) else "n/a"


# -- entry point -----------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m dnninfer.schedule.gpu_check", description=__doc__.splitlines()[0])
    p.add_argument("part", choices=["env", "opara", "compile", "merge"])
    p.add_argument("outdir_or_file", nargs="?", help="merge: OUTDIR")
    p.add_argument("--out", type=Path, help="the part's JSON file")
    p.add_argument("--deadline", type=float, default=None, help="epoch seconds by which the part must end")
    args = p.parse_args(argv)
    if args.part == "merge":
        merge(Path(args.outdir_or_file or "."))
        return 0
    if args.out is None:
        p.error("--out is required")
    dry = dry_run()
    sec = Section(args.part, args.out, args.deadline, dry)
    cfg = config(dry)
    sec.data["config"] = cfg
    if args.part == "env":
        return run_env(sec, dry)
    import torch

    torch.manual_seed(0)
    backend = backend_for(dry)
    if args.part == "opara":
        run_opara(sec, cfg, backend)
    else:
        run_compile(sec, cfg, backend)
    sec.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
