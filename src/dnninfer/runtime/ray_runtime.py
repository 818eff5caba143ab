"""Run a split model as Ray actors, one per node: a local cluster on this machine, or a real one
through an address. Tensors move actor to actor through Ray's object store, never via the driver.

Ray is imported lazily: it takes seconds, and most commands do not need it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

from dnninfer.errors import UserError
from dnninfer.graph import Graph, Stage
from dnninfer.graph.split import assemble_output
from dnninfer.runtime.common import Links, RunResult, check_placement, compact, producers
from dnninfer.runtime.inprocess import incoming


class NodeFailure(RuntimeError):
    """A stage failed or its node died; the message names the node, `node` holds its name."""

    def __init__(self, message: str, node: str | None = None) -> None:
        super().__init__(message)
        self.node = node


class _NodeWorker:
    """Lives in one Ray actor: holds the stages placed on its node and runs them on request."""

    def __init__(self, node: str, stages: dict[int, Any], threads: int, links: Links) -> None:
        import torch

        torch.set_num_threads(threads)
        self.node, self.stages, self.links = node, stages, links

    def ping(self) -> str:
        return self.node

    def load(self, stages: dict[int, Any], links: Links) -> str:
        """Swap in new stages (a re-plan) without restarting the actor's process."""
        self.stages, self.links = stages, links
        return self.node

    def run(self, label: int, names: list[str], sources: list[str], *envs: dict[str, Any]) -> dict[str, Any]:
        import torch

        env: dict[str, Any] = {}
        for e in envs:
            env.update(e["values"])
        where = dict(zip(names, sources, strict=True))
        hops = incoming(names, env, where, self.node, self.links)
        time.sleep(max((h.delay_s for h in hops), default=0.0))
        stage = self.stages[label]
        t0 = time.perf_counter()
        with torch.no_grad():
            outs = stage(*(env[n] for n in names))
        compute = time.perf_counter() - t0
        return {"values": dict(zip(stage.outputs, compact(outs), strict=True)), "compute_s": compute,
                "transfers": hops, "label": label}


class RayRuntime:
    """Deploy stages on Ray actors and run inferences through them.

    `address=None` starts (or joins) a local cluster with this machine's cores; pass
    ``"ray://host:port"`` or ``"auto"`` to use a real cluster with the same code.
    Actors ask for `cpus_per_node` logical CPUs (0 lets more nodes than cores share a box,
    each pinned to `threads` intra-op threads).
    """

    def __init__(self, address: str | None = None, *, num_cpus: int | None = None,
                 cpus_per_node: float = 0, threads: int = 1) -> None:
        self.address, self.num_cpus = address, num_cpus
        self.cpus_per_node, self.threads = cpus_per_node, threads
        self.actors: dict[str, Any] = {}
        self._started = False

    def __enter__(self) -> RayRuntime:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def start(self) -> None:
        import ray

        if ray.is_initialized():
            return
        os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                  "configure_logging": False}
        try:
            if self.address is None:
                ray.init(num_cpus=self.num_cpus or os.cpu_count(), **kwargs)
            else:
                ray.init(address=self.address, **kwargs)
        except (ConnectionError, TimeoutError, ValueError, RuntimeError) as e:
            raise UserError(f"ray cluster {self.address or 'local'}: cannot connect: {e}".splitlines()[0]) from None
        self._started = True

    def shutdown(self) -> None:
        import ray

        for a in self.actors.values():
            ray.kill(a)
        self.actors.clear()
        if self._started:
            ray.shutdown()
            self._started = False

    def deploy(self, stages: Sequence[Stage], placement: Mapping[int, str] | Sequence[str],
               links: Links = None) -> dict[int, str]:
        """One actor per node holding its stages; returns the checked placement.

        Actors of nodes that stay in the placement are reused (their stages swapped), so a
        re-plan costs a message, not a process start; actors of nodes left out are stopped.
        """
        import ray

        place = check_placement(stages, placement)
        worker = ray.remote(_NodeWorker)
        nodes = list(dict.fromkeys(place.values()))
        for node in [n for n in self.actors if n not in nodes]:
            ray.kill(self.actors.pop(node))
        calls = []
        for node in nodes:
            mine = {st.index: st for st in stages if place[st.index] == node}
            if node in self.actors:
                calls.append(self.actors[node].load.remote(mine, links))
            else:
                self.actors[node] = worker.options(num_cpus=self.cpus_per_node, name=None).remote(
                    node, mine, self.threads, links)
                calls.append(self.actors[node].ping.remote())
        try:
            ray.get(calls, timeout=120)
        except Exception as e:  # any failure to start is a node failure
            raise NodeFailure(f"could not start actors: {type(e).__name__}: {e}".splitlines()[0]) from None
        self._stages, self._place, self._links = list(stages), place, links
        return place

    def run(self, graph: Graph, inputs: Sequence[Any], *, source: str | None = None,
            timeout_s: float = 300) -> RunResult:
        """One inference. Stage calls are chained by object refs, so nodes overlap where the
        DAG allows; the driver only waits at the end."""
        import ray
        from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

        stages, place, links = self._stages, self._place, self._links
        source = source or place[stages[0].index]
        where = producers(graph, stages, place, source)
        owner = {name: "inputs" for name in graph.input_names}
        for st in stages:
            owner.update({o: st.index for o in st.outputs})
        refs: dict[Any, Any] = {"inputs": ray.put({"values": dict(zip(graph.input_names, inputs, strict=True))})}
        t0 = time.perf_counter()
        for st in stages:
            deps = list(dict.fromkeys(owner[n] for n in st.inputs))
            node = place[st.index]
            refs[st.index] = self.actors[node].run.remote(
                st.index, list(st.inputs), [where[n] for n in st.inputs], *(refs[d] for d in deps))
        done: dict[int, dict[str, Any]] = {}
        for st in stages:
            node = place[st.index]
            try:
                done[st.index] = ray.get(refs[st.index], timeout=timeout_s)
            except RayTaskError as e:
                cause = e.cause if getattr(e, "cause", None) is not None else e
                raise NodeFailure(f"stage {st.index} on node {node!r} failed: {type(cause).__name__}: "
                                  f"{str(cause).strip().splitlines()[-1] if str(cause).strip() else ''}",
                                  node) from None
            except RayActorError:
                raise NodeFailure(f"node {node!r} is unreachable: its actor died (stage {st.index})", node) from None
            except GetTimeoutError:
                raise NodeFailure(f"node {node!r} did not answer within {timeout_s}s (stage {st.index})",
                                  node) from None
        env: dict[str, Any] = dict(zip(graph.input_names, inputs, strict=True))
        for r in done.values():
            env.update(r["values"])
        back = incoming([n.name for n in graph.output_node.all_input_nodes], env, where, source, links)
        time.sleep(max((h.delay_s for h in back), default=0.0))
        result = RunResult(output=assemble_output(graph, env), wall_s=time.perf_counter() - t0,
                           emulated=links is not None)
        for label, r in done.items():
            result.compute_s[label] = r["compute_s"]
            result.transfers += r["transfers"]
        result.transfers += back
        return result

    def kill_node(self, node: str) -> None:
        """Stop one node's actor (failure injection for tests and re-planning demos)."""
        import ray

        ray.kill(self.actors[node])  # the handle stays, as after a real crash: calls on it fail
