"""Run a partition plan on the testbed: one actor per processing unit, on its device's Ray node,
throttled by its cgroup; the same code path a cluster of real boards would take.

What crosses the shaped links is what would cross a real network: activations, node to node
through Ray's object store. Weights do not: each actor rebuilds the model from its source (zoo
name and seed) and keeps its stage's tensors, checked against the driver's hash. The input is made
on the source device and the output collected there; the driver only reads small timing records.
Measured times are divided by the dilation before they are reported.
"""

from __future__ import annotations

import hashlib
import os
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from dnninfer.errors import UserError
from dnninfer.graph import Graph, Stage
from dnninfer.graph.split import assemble_output
from dnninfer.runtime.common import SameNode, compact, producers
from dnninfer.runtime.inprocess import incoming
from dnninfer.testbed import procs
from dnninfer.testbed.core import TestbedState, connect


@dataclass(frozen=True)
class RttLink:
    """The testbed's user-space share of a link: half the (dilated) RTT; the kernel adds the bytes."""

    rtt_ms: float

    def transfer_s(self, nbytes: int) -> float:
        return self.rtt_ms / 2e3


def state_hash(module: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in sorted(module.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


#: real seconds of back-to-back whole-model runs that set a profiled PU's sustained speed
SUSTAIN_S = 0.3


@dataclass
class ModelSource:
    """How a node rebuilds the model without receiving its weights: a zoo name and seed, or a model
    file (and weights file) on a filesystem every node shares, by absolute path."""

    name: str
    seed: int = 0
    batch: int = 1
    input_shape: tuple[int, ...] | None = None
    weights: str | None = None
    trust_pickle: bool = False
    flops_rules: str | None = None  # a rules file: part of the graph's identity (FLOPs are hashed)

    def load(self) -> Any:
        """`zoo.load_model` of this source: the same model (and example inputs) on every node."""
        from dnninfer.zoo import load_model

        return load_model(self.name, input_shape=self.input_shape, batch=self.batch, seed=self.seed,
                          weights=self.weights, trust_pickle=self.trust_pickle)

    def capture(self) -> tuple[Any, Graph]:
        """(loaded model, its Graph) captured with this source's FLOPs rules, as the driver does."""
        import warnings

        from dnninfer.graph import capture
        from dnninfer.zoo.load import load_flops_rules

        loaded = self.load()
        rules = load_flops_rules(self.flops_rules) if self.flops_rules else None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the driver already said which ops are estimated
            return loaded, capture(loaded.model, loaded.inputs, name=loaded.name, flops_rules=rules)

    @classmethod
    def of(cls, spec: str, *, seed: int = 0, batch: int = 1, input_shape: Any = None, weights: str | None = None,
           trust_pickle: bool = False, flops_rules: str | None = None) -> ModelSource:
        """A source whose file paths (if any) are absolute, so a node's working folder does not matter."""
        from pathlib import Path

        from dnninfer import zoo

        if spec not in zoo.names():
            path, sep, factory = spec.partition(":") if spec.count(":") == 1 else (spec, "", "")
            spec = str(Path(path).resolve()) + sep + factory
        shape = tuple(int(x) for x in input_shape) if input_shape is not None else None
        return cls(spec, seed, batch, shape, str(Path(weights).resolve()) if weights else None, trust_pickle,
                   str(Path(flops_rules).resolve()) if flops_rules else None)


class PUWorker:
    """One processing unit: a single-threaded actor on its device's node (its cgroup is joined
    from the host side, where the cgroup tree is mounted)."""

    def __init__(self, target: str, threads: int = 1) -> None:
        torch.set_num_threads(threads)  # 1 on the testbed (the quota sets the speed); a board's PU: its lanes
        self.target, self.stages, self.links, self._model = target, {}, None, None

    def pid(self) -> int:
        return os.getpid()

    def load(self, source: ModelSource, skeletons: dict[int, Any], hashes: dict[int, str], links: Any,
             shipped: dict[int, dict[str, torch.Tensor]] | None = None) -> dict[str, Any]:
        """Stages from their weightless skeletons, filled from the model built here from `source`.

        Tensors the local model does not have (none for a zoo model's stages) are asked for by
        name and come in `shipped` on a second call; a stage whose filled weights do not hash to
        the driver's is refused, naming this node."""
        if self._model is None or self._model[0] != source:
            self._model = (source, source.load().model.state_dict())
        full, shipped = self._model[1], shipped or {}
        missing = {label: [k for k in st.module.state_dict() if k not in full and k not in shipped.get(label, {})]
                   for label, st in skeletons.items()}
        if any(missing.values()):
            return {"target": self.target, "missing": missing}
        stages = {}
        for label, stage in skeletons.items():
            have = shipped.get(label, {})
            stage.module.load_state_dict({k: have[k] if k in have else full[k] for k in stage.module.state_dict()},
                                         strict=True, assign=True)
            got = state_hash(stage.module)
            if got != hashes[label]:
                raise UserError(f"testbed node {self.target}: stage {label} weights hash {got}, the driver's is "
                                f"{hashes[label]} (different model source, dnninfer or torch version)")
            stages[label] = stage
        self.stages, self.links = stages, links
        import dnninfer

        return {"target": self.target, "missing": {}, "torch": torch.__version__, "dnninfer": dnninfer.__version__}

    def call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run `fn` on this PU, under its quota: a user's own code timed on an edge-class worker."""
        return fn(*args, **kwargs)

    def make_inputs(self, source: ModelSource) -> tuple[Any, ...]:
        """The request's inputs, made here on the source device (they never cross a link)."""
        if getattr(self, "_inputs", (None,))[0] != source:  # a model file is loaded once, not per request
            from dnninfer import zoo

            made = (zoo.example_inputs(source.name, batch=source.batch, seed=source.seed)
                    if source.name in zoo.names() and source.input_shape is None else source.load().inputs)
            self._inputs = (source, tuple(compact(list(made))))
        inputs = self._inputs[1]
        return inputs if len(inputs) > 1 else inputs[0]

    def run(self, label: int, names: list[str], sources: list[str], *values: Any) -> tuple[Any, ...]:
        """One stage: its inputs come one object per value (a reader fetches only what it reads),
        its outputs leave the same way, after a small timing record."""
        env = dict(zip(names, values, strict=True))
        hops = incoming(names, env, dict(zip(names, sources, strict=True)), self.target, self.links)
        time.sleep(max((h.delay_s for h in hops), default=0.0))
        stage = self.stages[label]
        t0 = time.perf_counter()
        with torch.no_grad():
            outs = stage(*values)
        compute = time.perf_counter() - t0
        return ({"compute_s": compute, "label": label, "hops": len(hops)}, *compact(outs))

    def collect(self, names: list[str], sources: list[str], *values: Any) -> tuple[float, dict[str, Any]]:
        """The output's values, gathered on the sink device (the source, as the simulator assumes),
        and the moment they were all there: the request ends here, not when the driver has read
        them back over the sink's link."""
        env = dict(zip(names, values, strict=True))
        hops = incoming(names, env, dict(zip(names, sources, strict=True)), self.target, self.links)
        time.sleep(max((h.delay_s for h in hops), default=0.0))
        return time.perf_counter(), env

    def profile(self, source: ModelSource, warmup: int, repeats: int) -> dict[str, Any]:
        """Per-node seconds of the whole model on this PU, at its sustained speed.

        Per-node medians (`cost.measure.profile`, not cached: the cache is keyed by the CPU model,
        which a throttled PU shares with the host) see a CFS quota only as rare stalls, which a
        median drops: a layer shorter than the quota runs at full speed. So the medians are scaled
        to the mean time of back-to-back whole-model runs over at least `SUSTAIN_S` (many CFS
        periods); on a real board that scale is just the interpreter's overhead."""
        import dnninfer
        from dnninfer.cost.measure import graph_key, profile

        _, graph = source.capture()
        p = profile(graph, warmup=warmup, repeats=repeats, threads=torch.get_num_threads(), cache=False)
        runs, t0 = 0, time.perf_counter()
        with torch.no_grad():
            while runs < 2 or time.perf_counter() - t0 < SUSTAIN_S:
                graph.gm(*graph.example_inputs)
                runs += 1
        sustained = (time.perf_counter() - t0) / runs
        scale = sustained / p.total_s
        node_s = {n: v * scale for n, v in p.node_s.items()}
        return {"target": self.target, "graph_key": graph_key(graph), "node_s": node_s,
                "whole_model_s": sustained, "node_median_total_s": p.total_s, "sustained_runs": runs,
                "torch": torch.__version__, "dnninfer": dnninfer.__version__}

    # calibration probes
    def probe(self, repeats: int) -> float:
        """Seconds of a fixed single-threaded workload (the same one the host is timed on)."""
        return probe_seconds(repeats)

    def blob(self, nbytes: int) -> Any:
        import numpy as np

        return np.ones(nbytes, dtype=np.uint8)

    def echo(self, value: Any) -> Any:
        return value

    def fetch(self, blob: Any) -> int:
        return len(blob)


def task_error_line(e: BaseException) -> str:
    """The last line of what a remote task raised (a RayTaskError wraps it as ``cause``)."""
    cause = e.cause if getattr(e, "cause", None) is not None else e  # type: ignore[attr-defined]
    return str(cause).strip().splitlines()[-1]


def probe_seconds(repeats: int, cpu_time: bool = False) -> float:
    """Median of `repeats` timings of 150 fixed 256x256 matmul-ReLU steps on one thread (about
    0.1 s on a host core: many CFS periods, so a throttled PU shows its average share).

    `cpu_time` times the calling thread's CPU seconds instead of wall seconds: the host's reference
    must be the work an uncontended core needs, not what it got while other processes (a parallel
    test worker, the testbed's own Ray daemons) shared the box; a PU is timed on the wall clock,
    which is what its quota throttles."""
    clock = time.thread_time if cpu_time else time.perf_counter
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(256, 256, generator=g), torch.randn(256, 256, generator=g) / 16
    times = []
    for _ in range(repeats):
        t0 = clock()
        x = a
        for _ in range(150):
            x = torch.relu(x @ b)
        times.append(clock() - t0)
    return statistics.median(times)


@dataclass
class TestbedRun:
    """One request on the testbed, with times already divided by the dilation."""

    output: Any
    latency_s: float
    compute_s: dict[int, float] = field(default_factory=dict)


class TestbedRuntime:
    """Deploy a materialised plan (`partition.execute.Deployment`) on the testbed and run requests."""

    def __init__(self, state: TestbedState | None = None) -> None:
        self.state = state or TestbedState.load()
        connect(self.state)
        self.actors: dict[str, Any] = {}

    def actor(self, target: str) -> Any:
        """The actor of `node/pu`, started on the node's Ray node and moved into the PU's cgroup."""
        import ray

        if target not in self.actors:
            node, pu = target.split("/", 1)
            self.state.node(node)
            threads = 1
            if self.state.boards:  # a real board's PU runs with all its lanes; the testbed's: one thread in a quota
                threads = self.state.load_cluster().device(node).pu(pu).lanes
            a = ray.remote(PUWorker).options(num_cpus=0, resources={f"tb_{node}": 1}).remote(target, threads)
            pid = ray.get(a.pid.remote(), timeout=120)
            if target in self.state.quotas:
                procs.join_cpu_group(target, pid)
            self.actors[target] = a
        return self.actors[target]

    def links(self, targets: Sequence[str]) -> dict[tuple[str, str], Any]:
        out: dict[tuple[str, str], Any] = {}
        for a in targets:
            for b in targets:
                if a != b:
                    na, nb = a.split("/", 1)[0], b.split("/", 1)[0]
                    out[(a, b)] = SameNode() if na == nb else RttLink(self.state.link(na, nb)[1] * self.state.dilation)
        return out

    def deploy(self, graph: Graph, stages: Sequence[Stage], placement: Mapping[int, str], source_target: str,
               model: ModelSource, sink_target: str | None = None) -> dict[str, Any]:
        """Send each actor its stages without weights and their hash; each rebuilds them from
        `model`. Only tensors a node cannot rebuild (asked for by name) cross a link, counted."""
        import copy

        import ray
        from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

        import dnninfer

        sink_target = sink_target or source_target  # where the output is gathered (the source, as planned)
        targets = list(dict.fromkeys([source_target, sink_target, *placement.values()]))
        links = self.links(targets)
        jobs = {}
        for target in targets:
            mine = [st for st in stages if placement[st.index] == target]
            skeletons = {}
            for st in mine:
                skel = copy.copy(st)
                object.__setattr__(skel, "module", copy.deepcopy(st.module).to("meta"))
                skeletons[st.index] = skel
            jobs[target] = (skeletons, {st.index: state_hash(st.module) for st in mine},
                            {st.index: st.module.state_dict() for st in mine})
        shipped_bytes = 0
        try:
            answers = ray.get([self.actor(t).load.remote(model, jobs[t][0], jobs[t][1], links) for t in targets],
                              timeout=600)
            again = [(t, a["missing"]) for t, a in zip(targets, answers, strict=True) if a["missing"]]
            for t, missing in again:
                shipped = {label: {k: jobs[t][2][label][k] for k in keys} for label, keys in missing.items()}
                shipped_bytes += sum(v.numel() * v.element_size() for d in shipped.values() for v in d.values())
                answers[targets.index(t)] = ray.get(self.actor(t).load.remote(model, jobs[t][0], jobs[t][1], links,
                                                                              shipped), timeout=600)
        except RayTaskError as e:
            raise UserError(task_error_line(e)) from None
        except (RayActorError, GetTimeoutError) as e:
            raise UserError(f"deploying on {', '.join(targets)} failed ({type(e).__name__}): a node died or did "
                            "not answer") from None
        for v in answers:
            if (v["torch"], v["dnninfer"]) != (torch.__version__, dnninfer.__version__):
                raise UserError(f"testbed node {v['target']}: torch {v['torch']} / dnninfer {v['dnninfer']}, the "
                                f"driver has {torch.__version__} / {dnninfer.__version__}")
        self.graph, self.stages, self.placement = graph, list(stages), dict(placement)
        self.source_target, self.sink_target, self.model, self.link_map = source_target, sink_target, model, links
        return {"targets": targets, "weights_shipped_bytes": shipped_bytes}

    def _inputs(self, timeout_s: float) -> dict[str, Any]:
        """One request's inputs, made (and waited for) on the source PU: refs by input name."""
        import ray

        n_in = len(self.graph.input_names)
        made = self.actor(self.source_target).make_inputs.options(num_returns=n_in).remote(self.model)
        made = list(made) if n_in > 1 else [made]
        ray.wait(made, num_returns=n_in, timeout=timeout_s, fetch_local=False)
        return dict(zip(self.graph.input_names, made, strict=True))

    def _submit(self, refs: dict[str, Any]) -> tuple[Any, list[Any]]:
        """Chain one request's stage calls by object refs (nothing waits); returns the gathered
        output's ref on the source and the stages' timing records."""
        graph, place = self.graph, self.placement
        where = producers(graph, self.stages, place, self.source_target)
        metas = []
        for st in self.stages:
            out = self.actor(place[st.index]).run.options(num_returns=1 + len(st.outputs)).remote(
                st.index, list(st.inputs), [where[n] for n in st.inputs], *(refs[n] for n in st.inputs))
            out = list(out)
            metas.append(out[0])
            refs.update(zip(st.outputs, out[1:], strict=True))
        out_names = [n.name for n in graph.output_node.all_input_nodes]
        done, final = self.actor(self.sink_target).collect.options(num_returns=2).remote(
            out_names, [where[n] for n in out_names], *(refs[n] for n in out_names))
        return (done, final), metas

    def run(self, timeout_s: float = 600) -> TestbedRun:
        """One request: input made on the source PU, stages chained by object refs, output
        gathered on the sink PU; latency measured from the first call to the moment the output is
        there. The testbed's nodes share this machine's monotonic clock, so that moment is read on
        the sink, and the driver's read-back of the output over the sink's link is not counted; on
        real boards (other clocks) it is the moment the driver learns it (a small message)."""
        import ray
        from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

        from dnninfer.runtime.ray_runtime import NodeFailure

        try:
            refs = self._inputs(timeout_s)
            t0 = time.perf_counter()
            (done, final), metas = self._submit(refs)
            t_done = ray.get(done, timeout=timeout_s)
            t_end = time.perf_counter()
            values = ray.get(final, timeout=timeout_s)
        except (GetTimeoutError, RayActorError, RayTaskError) as e:
            node = self._stuck_node(locals().get("metas", []))
            raise NodeFailure(f"testbed request failed ({type(e).__name__}) at node {node!r}", node) from None
        wall = (t_end if self.state.boards else t_done) - t0
        d = self.state.dilation
        meta = ray.get(metas, timeout=timeout_s)
        return TestbedRun(output=assemble_output(self.graph, values), latency_s=wall / d,
                          compute_s={m["label"]: m["compute_s"] / d for m in meta})

    def _stuck_node(self, metas: list[Any]) -> str | None:
        """The device of the first stage that never answered (None when every stage did)."""
        import ray

        for st, meta in zip(self.stages, metas, strict=False):
            ready, _ = ray.wait([meta], timeout=0.5, fetch_local=False)
            if not ready:
                return self.placement[st.index].split("/", 1)[0]
        return None

    def forget(self, node: str) -> None:
        """Drop the actors of a lost device (killing them may never reach it)."""
        import ray

        for target in [t for t in self.actors if t.split("/", 1)[0] == node]:
            ray.kill(self.actors.pop(target))

    def stream(self, requests: int, timeout_s: float = 600) -> float:
        """Requests per second (undilated) of a bounded stream submitted back to back: each PU's
        actor takes its calls in order, so stages of successive requests overlap across PUs. The
        emulated RTT is slept inside the receiving actor, so it occupies that PU: a lower bound."""
        import ray
        from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

        from dnninfer.runtime.ray_runtime import NodeFailure

        try:
            inputs = [self._inputs(timeout_s) for _ in range(requests)]
            t0 = time.perf_counter()
            done = [self._submit(refs)[0][0] for refs in inputs]
            t_done = max(ray.get(done, timeout=timeout_s))
        except (GetTimeoutError, RayActorError, RayTaskError) as e:
            raise NodeFailure(f"testbed stream of {requests} requests failed ({type(e).__name__}, "
                              f"limit {timeout_s:.0f} s)") from None
        end = time.perf_counter() if self.state.boards else t_done
        return requests / ((end - t0) / self.state.dilation)

    def call(self, target: str, fn: Any, *args: Any, timeout_s: float = 1800, **kwargs: Any) -> Any:
        """`fn(*args, **kwargs)` run on the PU `node/pu` (its arguments and result travel through
        Ray; `fn` must be importable there). Times it measures are dilated: divide by
        ``self.state.dilation``."""
        import ray
        from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

        try:
            return ray.get(self.actor(target).call.remote(fn, *args, **kwargs), timeout=timeout_s)
        except RayTaskError as e:
            raise UserError(f"on testbed PU {target}: {task_error_line(e)}") from None
        except (GetTimeoutError, RayActorError) as e:
            raise UserError(f"testbed PU {target} did not answer ({type(e).__name__})") from None

    def reset(self) -> None:
        """Kill every PU actor (the next call starts fresh ones in their cgroups): after a failed
        or timed-out request their queues may still hold its stages, which would delay the next plan."""
        import ray

        for a in self.actors.values():
            ray.kill(a)
        self.actors.clear()

    def shutdown(self) -> None:
        import ray

        self.reset()
        ray.shutdown()
