"""dnninfer's public Python API: one verb per concern, each taking a user's model.

Every verb takes a model as an ``nn.Module`` plus example inputs, or anything `load` takes (a zoo
name, ``model.py[:factory]``, an ``.onnx`` file...) with the inputs found for it. Everything else
in the package is internal and may change; this module is the surface the README documents and
its examples exercise (tests/test_api.py runs every Python block of README.md).

    load(spec)                                   -> Model (module + example inputs + name)
    capture(model, inputs)                       -> Graph
    partition(model, inputs, cluster, ...)       -> Partition (.explain(), .run(), .to_json())
    compare_partitions(model, inputs, cluster)   -> list[Partition], every strategy side by side
    plan_memory(model, inputs, planner, ...)     -> MemoryPlanResult (.run(x), .codegen(dir), .peak_bytes)
    schedule(model, inputs, algo, ...)           -> Schedule (.run(*inputs), .streams)
    quantize(model, SignedBinaryConfig(), ...)   -> nn.Module with {0,+s}/{0,-s} (or binary/ternary) layers
    rnsify(model, RNSConfig(), ...)              -> nn.Module whose GEMMs run in RNS (Mirage) numerics
    serve(model, inputs, ...)                    -> Server (an ASGI app; .run(host, port))
    dpra_simulate(model, inputs, ...)            -> dict: DPRA / B-DT over time slots, with a real ledger
    cbnet(train, test, CBNetConfig())            -> CBNetResult (.predict(x), .summary())

Figures a verb returns are predictions of the cost model unless it says measured: `Partition`'s
latency is the simulator's, `Partition.run` measures a real run (links emulated).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dnninfer.adaptive.pipeline import CBNetConfig
from dnninfer.bdt.dpra import DPRAConfig
from dnninfer.errors import UserError
from dnninfer.graph import Graph
from dnninfer.graph.swap import FilterFn
from dnninfer.rns.numerics import Numerics as RNSConfig
from dnninfer.zoo.load import LoadedModel as Model
from dnninfer.zoo.load import load_model

__all__ = [
    "BinaryConfig",
    "CBNetConfig",
    "CBNetResult",
    "DPRAConfig",
    "MemoryPlanResult",
    "Model",
    "Partition",
    "RNSConfig",
    "Schedule",
    "Server",
    "SignedBinaryConfig",
    "TernaryConfig",
    "capture",
    "cbnet",
    "compare_partitions",
    "dpra_simulate",
    "load",
    "partition",
    "plan_memory",
    "profile_cluster",
    "quantize",
    "rnsify",
    "schedule",
    "serve",
]

#: Version of `Partition.to_json`'s format; `from_json` refuses other versions by name.
PLAN_FORMAT = "dnninfer-plan/1"

ModelLike = nn.Module | Model | str | Path


def load(spec: str | Path, input_shape: str | Sequence[int] | None = None, *, batch: int = 1,
         seed: int = 0, weights: str | Path | None = None, trust_pickle: bool = False) -> Model:
    """A zoo name, ``path/model.py[:factory]``, an ``.onnx`` file (imported to torch ops: no ONNX
    at run time) or a torch.export ``.pt2`` -> module, example inputs and name. `weights`: a
    state_dict for the zoo model or factory, read without running code. Pickled whole-module
    ``.pt`` files run code when loaded, so they need ``trust_pickle=True``.

    A user mistake (unknown name, missing file, a factory that raises) is one `UserError` line.
    """
    return load_model(str(spec), input_shape=input_shape, batch=batch, seed=seed, weights=weights,
                      trust_pickle=trust_pickle)


def _resolve(model: ModelLike, inputs: Sequence[Any] | torch.Tensor | None) -> Model:
    """(module, inputs, name) from whatever a verb was given; explicit inputs win."""
    if isinstance(inputs, torch.Tensor):
        inputs = (inputs,)
    if isinstance(model, (str, Path)):
        loaded = load(model)
        return Model(loaded.name, loaded.model, tuple(inputs) if inputs is not None else loaded.inputs)
    if isinstance(model, Model):
        return Model(model.name, model.model, tuple(inputs) if inputs is not None else model.inputs)
    if isinstance(model, nn.Module):
        if inputs is None:
            raise UserError(f"{type(model).__name__}: example inputs are needed to trace an nn.Module")
        return Model(type(model).__name__, model.eval(), tuple(inputs))
    raise UserError(f"model: expected an nn.Module, a dnninfer.Model or a model spec, got {type(model).__name__}")


def capture(model: ModelLike, inputs: Sequence[Any] | torch.Tensor | None = None, *,
            name: str | None = None) -> Graph:
    """The model as a functional DAG with shape, bytes and FLOPs per node (torch.fx, torch.export
    fallback); what every planner below works on."""
    from dnninfer.graph import capture as _capture

    m = _resolve(model, inputs)
    return _capture(m.model, m.inputs, name=name or m.name)


# -- partitioning (HiDP and its baselines) ---------------------------------------------------------
@dataclass
class Partition:
    """A scored partition plan of one model on one cluster, ready to run.

    ``latency_ms``, ``energy_mj`` and ``throughput_ips`` are the simulator's predictions for the
    cluster's devices; `run` measures a real execution on this host (links emulated)."""

    plan: Any  # dnninfer.partition.plan.Plan
    cost_model: Any = field(repr=False)  # dnninfer.partition.costmodel.CostModel
    model: Model = field(repr=False)
    bandwidth_mbps: float | None = None  # the link override it was planned under, if any

    @property
    def strategy(self) -> str:
        return self.plan.strategy

    @property
    def latency_ms(self) -> float:
        return self.plan.latency_s * 1e3

    @property
    def energy_mj(self) -> float:
        return self.plan.energy_j * 1e3

    @property
    def throughput_ips(self) -> float:
        return self.plan.throughput_ips

    def explain(self) -> str:
        """What runs where and why, in a few lines (predicted figures are labelled so)."""
        p = self.plan
        lines = [f"{p.strategy} ({p.mode}, objective {p.objective}): {self.model.name} on {p.cluster}",
                 f"predicted: latency {p.latency_s * 1e3:.2f} ms, energy {p.energy_j * 1e3:.2f} mJ, "
                 f"throughput {p.throughput_ips:.2f}/s, bottleneck {p.bottleneck}, {p.bytes_sent} bytes sent"]
        for i, part in enumerate(p.parts):
            where = ", ".join(f"{t} x{s:.2f}" if part.tiled else str(t)
                              for t, s in zip(part.targets, part.shares or (1.0,) * len(part.targets), strict=True))
            span = f"{len(part.nodes)} nodes {part.nodes[0]}..{part.nodes[-1]}"
            lines.append(f"  part {i} [{part.role}]: {span} -> {where}")
        if p.reason:
            lines.append(f"why: {p.reason}")
        return "\n".join(lines)

    def run(self, *inputs: Any, runtime: str = "inprocess", address: str | None = None,
            sleep: bool = True) -> Any:
        """One real inference through the plan; returns the runtime's `RunResult` (``.output``,
        ``.wall_s`` measured, ``.bytes_sent``). ``runtime="ray"`` deploys one actor per node on a
        local Ray instance, or on the cluster at ``address``."""
        from dnninfer.partition.execute import run_plan

        xs = inputs or self.model.inputs
        if runtime == "inprocess":
            with torch.no_grad():
                return run_plan(self.plan, self.cost_model, xs, sleep=sleep)
        if runtime == "ray":
            from dnninfer.runtime import RayRuntime

            with RayRuntime(threads=1, address=address) as rt, torch.no_grad():
                return run_plan(self.plan, self.cost_model, xs, runtime=rt)
        raise UserError(f"runtime {runtime!r}: expected 'inprocess' or 'ray'")

    def to_dict(self) -> dict[str, Any]:
        """Everything needed to rebuild the plan on the same model and cluster, plus its scores."""
        p = self.plan
        return {"format": PLAN_FORMAT, **p.to_dict(), "bandwidth_mbps": self.bandwidth_mbps,
                "parts": [{"role": q.role, "nodes": list(q.nodes), "shares": list(q.shares),
                           "targets": [{"node": t.node, "pu": t.pu, "lanes": t.lanes} for t in q.targets]}
                          for q in p.parts]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_json(cls, text: str | dict[str, Any], model: ModelLike, inputs: Sequence[Any] | None = None,
                  cluster: Any = None, *, profile: str = "measure") -> Partition:
        """Rebuild a saved plan on `model` and `cluster` (the cluster, source node and bandwidth
        override of the file by default) and score it again on this cost model; a plan whose nodes
        the model lacks is refused."""
        from dnninfer.partition.costmodel import Target
        from dnninfer.partition.plan import Part, evaluate

        d = json.loads(text) if isinstance(text, str) else dict(text)
        if d.get("format") != PLAN_FORMAT:
            raise UserError(f"plan: expected format {PLAN_FORMAT!r}, got {d.get('format')!r}")
        m = _resolve(model, inputs)
        bw = d.get("bandwidth_mbps")
        cm = _cost_model(m, cluster if cluster is not None else d["cluster"], profile, bw, d.get("source"))
        known = {n.name for n in cm.graph.compute_nodes()}
        parts = []
        for q in d["parts"]:
            missing = [n for n in q["nodes"] if n not in known]
            if missing:
                raise UserError(f"plan: node {missing[0]!r} is not in {m.name}'s graph (a plan for another model?)")
            parts.append(Part(tuple(q["nodes"]), tuple(Target(**t) for t in q["targets"]), tuple(q["shares"]),
                              q["role"]))
        try:
            p = evaluate(cm, parts, strategy=d["strategy"], objective=d["objective"], mode=d["mode"],
                         reason=d.get("reason", ""))
        except ValueError as e:
            raise UserError(f"plan: {e}") from None
        p.model, p.cluster = d.get("model", m.name), cm.cluster.name
        return cls(p, cm, m, bw)


def _cost_model(m: Model, cluster: Any, profile: str, bandwidth_mbps: float | None = None,
                source: str | None = None, measured: Any = None) -> Any:
    from dnninfer.cost import Cluster, load_cluster
    from dnninfer.graph import capture as _capture
    from dnninfer.partition.costmodel import CostModel
    from dnninfer.partition.replan import with_bandwidth

    c = cluster if isinstance(cluster, Cluster) else load_cluster(str(cluster))
    if bandwidth_mbps is not None:
        c = with_bandwidth(c, bandwidth_mbps)
    g = _capture(m.model, m.inputs, name=m.name)
    if isinstance(measured, (str, Path)):
        from dnninfer.cost.measured import load_cluster_profile

        measured = load_cluster_profile(measured)
    return CostModel.build(g, c, host=profile, source=source, measured=measured)


def partition(model: ModelLike, inputs: Sequence[Any] | torch.Tensor | None, cluster: Any, *,
              strategy: str = "hidp", objective: str = "latency", profile: str = "measure",
              bandwidth_mbps: float | None = None, source: str | None = None,
              cluster_profile: Any = None) -> Partition:
    """Split `model` over `cluster` (a `Cluster`, a shipped name like ``"edge3"``, or a YAML path).

    `strategy`: ``hidp`` or a baseline (see `dnninfer partition --help`); `objective`: latency,
    energy or throughput; `profile`: ``"measure"`` times every node here once (cached),
    ``"flops"`` estimates from FLOPs (fast, no measurement); `bandwidth_mbps` overrides every
    link; `source`: the node where inputs arrive (default the cluster's first);
    `cluster_profile`: a measured profile of the cluster's devices (`profile_cluster`, or its file):
    plans from each PU's measured seconds instead of cited speed ratios.
    """
    from dnninfer.partition.strategies import plan as _plan

    m = _resolve(model, inputs)
    cm = _cost_model(m, cluster, profile, bandwidth_mbps, source, cluster_profile)
    p = _plan(cm, strategy, objective)
    p.model, p.cluster = m.name, cm.cluster.name
    return Partition(p, cm, m, bandwidth_mbps)


def profile_cluster(model: str | Path, where: str = "testbed", *, config: str | None = None, seed: int = 0,
                    warmup: int = 2, repeats: int = 5, input_shape: Sequence[int] | None = None,
                    weights: str | Path | None = None, out: str | Path | None = None) -> Any:
    """Per-node seconds of `model` measured on every processing unit of a running cluster: the
    testbed (``where="testbed"``) or real boards joined to a Ray cluster (``where="HOST:PORT"``
    with `config`, the cluster YAML naming them). Each node rebuilds the model itself (a zoo name,
    or a model file every node reads at the same absolute path), so no weights cross the links.
    The result (`ClusterProfile`, also written to `out`) is what `partition(...,
    cluster_profile=...)` plans from: measured devices instead of cited speed ratios."""
    from dnninfer.testbed.profile import profile_cluster as _profile
    from dnninfer.testbed.profile import resolve_cluster
    from dnninfer.testbed.runtime import ModelSource

    state = resolve_cluster(where, config)
    src = ModelSource.of(str(model), seed=seed, input_shape=input_shape,
                         weights=str(weights) if weights is not None else None)
    prof = _profile(src, state, warmup=warmup, repeats=repeats)
    if out is not None:
        prof.save(out)
    return prof


def compare_partitions(model: ModelLike, inputs: Sequence[Any] | torch.Tensor | None, cluster: Any, *,
                       objective: str = "latency", profile: str = "measure",
                       bandwidth_mbps: float | None = None, source: str | None = None,
                       strategies: Sequence[str] | None = None, cluster_profile: Any = None) -> list[Partition]:
    """Every strategy's plan on one cost model, best first by `objective` (a strategy that finds
    no feasible plan is left out); `cluster_profile` as in `partition`."""
    from dnninfer.partition.strategies import STRATEGIES
    from dnninfer.partition.strategies import plan as _plan

    m = _resolve(model, inputs)
    cm = _cost_model(m, cluster, profile, bandwidth_mbps, source, cluster_profile)
    out = []
    for name in strategies or list(STRATEGIES):
        try:
            p = _plan(cm, name, objective)
        except UserError:
            continue
        p.model, p.cluster = m.name, cm.cluster.name
        out.append(Partition(p, cm, m, bandwidth_mbps))
    if not out:
        raise UserError("no strategy found a feasible plan")
    return sorted(out, key=lambda q: q.plan.score(objective))


# -- MCU memory (vMCU and its baselines) -----------------------------------------------------------
@dataclass
class MemoryPlanResult:
    """An int8 model with a static activation-memory plan (bytes; KiB = 1024 B)."""

    ir: Any = field(repr=False)  # dnninfer.memory.ir.IR, quantised
    plan: Any  # dnninfer.memory.plan.MemoryPlan

    @property
    def peak_bytes(self) -> int:
        return self.plan.peak_bytes

    @property
    def planner(self) -> str:
        return self.plan.planner

    def run(self, x: torch.Tensor | Any) -> torch.Tensor:
        """Run the int8 network inside one pool laid out by the plan (shadow-checked: an unsafe
        plan is refused, never silently wrong); returns the dequantised float output."""
        import numpy as np

        from dnninfer.memory.executor import run
        from dnninfer.memory.quantize import dequantize, quantize_input

        q = run(self.ir, self.plan, quantize_input(self.ir, x))
        return torch.from_numpy(np.asarray(dequantize(self.ir.tensors[self.ir.output], q), dtype=np.float32))

    def codegen(self, out_dir: str | Path) -> Path:
        """C source with one static pool of the plan's size; returns the path of model.c."""
        from dnninfer.memory.codegen import generate

        return generate(self.ir, self.plan, out_dir)


def plan_memory(model: ModelLike, inputs: Sequence[Any] | torch.Tensor | None = None, *,
                planner: str | None = None, budget_bytes: int | None = None,
                calibration: torch.Tensor | None = None, max_mac_overhead: float | None = None) -> MemoryPlanResult:
    """Quantise to int8 (activation ranges from `calibration`, default the example inputs) and plan
    activation memory.

    `planner`: naive, tflm, tinyengine, vmcu, vmcu_fused (the default without a budget), or
    ``"patch"``: the first steps run patch by patch inside the vMCU pool (MCUNetV2), the setting
    with the smallest peak within `max_mac_overhead` (default 1.15: at most 15 % more MACs).
    With `budget_bytes` and no `planner`, every planner and patch setting is searched and the plan
    that fits (activations + scratch) with the least MAC overhead is returned
    (`dnninfer.memory.patch.fit_budget`; `max_mac_overhead` bounds the patch settings tried).
    Over the budget, a `UserError` names the (smallest reachable) peak and the layer that sets it.
    """
    from dnninfer.memory.patch import fit_budget, search
    from dnninfer.memory.planners import plan as _plan
    from dnninfer.memory.quantize import quantize

    m = _resolve(model, inputs)
    calib = calibration if calibration is not None else m.inputs[0]
    ir = quantize(m.model, calib, name=m.name)
    if planner is None and budget_bytes is not None:
        return MemoryPlanResult(ir, fit_budget(ir, budget_bytes, max_overhead=max_mac_overhead, who="plan_memory"))
    if planner == "patch":
        if budget_bytes is not None:
            return MemoryPlanResult(ir, fit_budget(ir, budget_bytes, planners=(), who="plan_memory",
                                                   max_overhead=max_mac_overhead))
        bound = 1.15 if max_mac_overhead is None else max_mac_overhead
        p = search(ir, max_overhead=bound)
        if p is None:
            raise UserError(f"plan_memory: no patch plan for {m.name!r} within MAC overhead x{bound:g} "
                            "(the network must start with a chain of conv/depthwise/pointwise/pool steps)")
        return MemoryPlanResult(ir, p)
    planner = planner or "vmcu_fused"
    p = _plan(ir, planner)
    if budget_bytes is not None and p.total_bytes > budget_bytes:
        worst = max(range(len(p.live_per_layer)), key=p.live_per_layer.__getitem__)
        raise UserError(f"plan_memory: {planner} needs {p.total_bytes} bytes ({p.peak_bytes} + {p.scratch_bytes} "
                        f"scratch), over the budget of {budget_bytes}; the peak is set by layer "
                        f"{ir.layers[worst].name!r} ({p.live_per_layer[worst]} bytes live)")
    return MemoryPlanResult(ir, p)


# -- operator parallelism (Opara and its baselines) ------------------------------------------------
@dataclass
class Schedule:
    """Operators assigned to streams with a launch order; runs as CPU lanes or one CUDA Graph."""

    plan: Any = field(repr=False)  # dnninfer.schedule.plan.StreamPlan
    runner: Any = field(repr=False)

    @property
    def streams(self) -> list[list[str]]:
        return [list(s) for s in self.plan.streams]

    def run(self, *inputs: Any) -> Any:
        with torch.no_grad():
            return self.runner(*inputs)

    def close(self) -> None:
        if hasattr(self.runner, "close"):
            self.runner.close()


def schedule(model: ModelLike, inputs: Sequence[Any] | torch.Tensor | None = None, *, algo: str = "opara",
             order: str = "opara", device: str = "cpu", max_streams: int | None = None,
             profile: bool = True) -> Schedule:
    """Opara's stream allocation and launch order (or a baseline `algo`) on the model's operator
    DAG; `profile` measures each operator once here (else a roofline estimate)."""
    from dnninfer.schedule.dag import OpDAG
    from dnninfer.schedule.plan import make_plan

    m = _resolve(model, inputs)
    g = capture(m.model, m.inputs, name=m.name)
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device cuda: torch {torch.__version__} sees no CUDA device; use device='cpu'")
    if device not in ("cpu", "cuda"):
        raise UserError(f"device {device!r}: expected 'cpu' or 'cuda'")
    node_s = None
    if profile:
        if device == "cuda":
            from dnninfer.schedule.cuda import cuda_node_profile

            node_s = cuda_node_profile(g)
        else:
            from dnninfer.cost.measure import profile as _profile

            node_s = _profile(g, threads=1, warmup=1, repeats=3).node_s
    dag = OpDAG.from_graph(g, node_s)
    cap = max_streams if max_streams is not None else (2 if device == "cpu" else None)
    sp = make_plan(dag, algo, order, max_streams=cap)
    if device == "cuda":
        from dnninfer.schedule.cuda import CudaStreamGraph

        runner: Any = CudaStreamGraph(g, sp, dag, inputs=tuple(x.cuda() for x in m.inputs))
    else:
        from dnninfer.schedule.lanes import LaneExecutor

        runner = LaneExecutor(g, sp, dag)
    return Schedule(sp, runner)


# -- weight quantisation (signed binarization and its baselines) ----------------------------------
@dataclass(frozen=True)
class BinaryConfig:
    """{-a, +a} weights per layer (BinaryConnect/XNOR-style). `first_last`: ``"fp32"`` keeps the
    first and last eligible layer full precision (the usual policy), ``"quantize"`` quantises them."""

    first_last: str = "fp32"

    method = "binary"


@dataclass(frozen=True)
class TernaryConfig(BinaryConfig):
    """{-a, 0, +a} weights (TWN)."""

    method = "ternary"


@dataclass(frozen=True)
class SignedBinaryConfig(BinaryConfig):
    """Signed binarization (PLUM): each filter is {0, +s} or {0, -s}. `signed_scale`: ``"mean"``
    derives s from each filter's weights (usable without retraining), a number fixes it (PLUM's 1.0
    for QAT)."""

    signed_scale: str | float = "mean"

    method = "signed"


def quantize(model: nn.Module, config: BinaryConfig, filter_fn: FilterFn | None = None, *,
             calibration: Any = None, inputs: Any = None) -> nn.Module:
    """A copy of `model` with its Conv2d/Linear layers (those `filter_fn(module, fqn)` accepts)
    swapped for quantised twins that still train. `calibration`: batches on which BatchNorm
    statistics are re-estimated for the new weights; `inputs`: run once, a non-finite output is a
    `UserError` naming the first layer that went inf/NaN."""
    from dnninfer.quant.quantizers import quantize as _quantize

    if not isinstance(config, BinaryConfig):
        raise UserError(f"quantize: expected a SignedBinaryConfig, BinaryConfig or TernaryConfig, "
                        f"got {type(config).__name__}")
    scale = getattr(config, "signed_scale", "mean")
    return _quantize(model, config.method, config.first_last, signed_scale=scale, calibrate=calibration,
                     example_inputs=inputs, filter_fn=filter_fn)


def rnsify(model: nn.Module, config: RNSConfig | None = None, filter_fn: FilterFn | None = None) -> nn.Module:
    """A copy of `model` whose Conv2d/Linear layers (those `filter_fn` accepts) compute every
    forward and backward GEMM in `config`'s numerics (default: Mirage's RNS over BFP, noiseless);
    parameters are shared with the copy's layers, so it trains as before."""
    from dnninfer.rns.layers import rnsify as _rnsify

    if config is not None and not isinstance(config, RNSConfig):
        raise UserError(f"rnsify: expected an RNSConfig, got {type(config).__name__}")
    return _rnsify(model, config or RNSConfig(), filter_fn=filter_fn)


# -- serving (Beyond Inference) --------------------------------------------------------------------
class Server:
    """The serving app (ASGI: hand it to any ASGI server) plus `run` for a blocking local server."""

    def __init__(self, app: Any, config: Any) -> None:
        self.app, self.config = app, config

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)

    def run(self, host: str = "127.0.0.1", port: int = 8000) -> None:
        """Serve until SIGINT/SIGTERM (both drain in-flight requests first)."""
        from dnninfer.serving.transport import make_server, uvicorn_config

        config = uvicorn_config(self.app, self.config.read_timeout_s, self.config.drain_timeout_s)
        config.host, config.port = host, port
        make_server(self.app, config).run()


def serve(model: ModelLike, inputs: Sequence[Any] | torch.Tensor | None = None, *,
          pipeline: str = "optimized", config: Any = None) -> Server:
    """Serve an image classifier over HTTP (``POST /v1/models/NAME/infer`` with a JPEG body; top-k).

    Any module taking (N, 1|3, H, W) and returning (N, classes) logits: the pipelines decode,
    resize and normalise to 224 x 224 crops, which are resized to the module's own input size (from
    `inputs`). `config`: a `dnninfer.serving.server.ServeConfig` (batching, queue, limits); its
    ``model`` field is replaced by the model's name."""
    import dataclasses
    import re

    from dnninfer import zoo
    from dnninfer.serving.models import UserClassifier
    from dnninfer.serving.server import ServeConfig, create_app

    cfg = config or ServeConfig()
    if isinstance(model, str) and model in zoo.names():
        cfg = dataclasses.replace(cfg, model=model, pipeline=pipeline).validate()
        return Server(create_app(cfg), cfg)
    m = _resolve(model, inputs)
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", m.name)[:64] or "model"
    classifier = UserClassifier(m.model, m.inputs[0], name)
    cfg = dataclasses.replace(cfg, model=name, pipeline=pipeline).validate(user_model=True)
    return Server(create_app(cfg, classifier=classifier), cfg)


# -- dynamic partitioning under a varying channel (DPRA / B-DT) -----------------------------------
def dpra_simulate(model: ModelLike, inputs: Sequence[Any] | torch.Tensor | None = None, *, slots: int = 50,
                  method: str = "dpra", config: DPRAConfig | None = None, segments: int = 6,
                  ledger_path: str | Path | None = None, execute: bool = True, profile: str = "measure",
                  seed: int = 0) -> dict[str, Any]:
    """DPRA's Lyapunov controller (or a baseline `method`) choosing each gateway's partition point
    and the APs' frequencies over `slots` slots of a seeded fading channel, on `model`'s chain cut
    into `segments`. With `execute`, every slot's splits really run (outputs checked against the
    whole model: ``ledger.max_abs_err``) and receipts and blocks go into the ledger at
    `ledger_path` (a temporary one when None). Latencies are the simulator's (predicted); the
    returned dict also holds the raw ``result`` (a SimResult)."""
    from dnninfer.bdt.run import run

    m = _resolve(model, inputs)
    return run(m, slots=slots, method=method, cfg=config, segments=segments, ledger_path=ledger_path,
               execute=execute, seed=seed, host=profile)


# -- converting autoencoders (CBNet) ---------------------------------------------------------------
@dataclass
class CBNetResult:
    """Everything CBNet trained: the full net, BranchyNet, autoencoders, the CBNet pipelines."""

    trained: Any = field(repr=False)  # dnninfer.adaptive.pipeline.Trained

    @property
    def model(self) -> nn.Module:
        """The primary CBNet: ``light(autoencoder(x))``."""
        return self.trained.cbnets[self.trained.primary_ae]

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Class indices from the primary CBNet."""
        with torch.inference_mode():
            return self.model(x).argmax(1)

    def summary(self) -> dict[str, Any]:
        """Test accuracies of full / BranchyNet / light / CBNet, exit fractions (no timing)."""
        from dnninfer.adaptive.pipeline import summary

        return summary(self.trained)


def cbnet(train: tuple[torch.Tensor, torch.Tensor], test: tuple[torch.Tensor, torch.Tensor],
          config: CBNetConfig | None = None, *, name: str = "user") -> CBNetResult:
    """Train CBNet on the user's images (N, 1, H, W) in [0, 1] with int labels: the multi-exit
    backbone, the converting autoencoder(s) that map hard inputs onto easy ones, and the light
    classifier they feed. `config` sets backbone, epochs, threshold...; its dataset fields are
    ignored (the data is given)."""
    from dnninfer.adaptive.pipeline import fit, prepare_split
    from dnninfer.data.datasets import Split

    cfg = config or CBNetConfig()
    tensors = {"train x": train[0], "test x": test[0]}
    for what, x in tensors.items():
        if not (isinstance(x, torch.Tensor) and x.dim() == 4 and x.shape[1] == 1 and x.is_floating_point()):
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise UserError(f"cbnet {what}: expected float images (N, 1, H, W) in [0, 1], got {shape}")
    for what, (x, y) in {"train": train, "test": test}.items():
        if not (isinstance(y, torch.Tensor) and y.dim() == 1 and len(y) == len(x) and not y.is_floating_point()):
            raise UserError(f"cbnet {what} labels: expected (N,) integers matching the {len(x)} images")
    split = Split(name, train[0].float(), train[1].long(), test[0].float(), test[1].long())
    size = cfg.image_size if cfg.image_size is not None else (28 if cfg.backbone == "blenet" else None)
    return CBNetResult(fit(cfg, prepare_split(split, size)))
