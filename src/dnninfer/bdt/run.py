"""DPRA on a real model: split points from a zoo model's Graph, each slot's split executed for real,
every offloaded inference written as a signed receipt, and one reputation-staked PoW block per slot.

The controller (`dnninfer.bdt.dpra`) decides in simulated time; this module makes its decisions concrete:
* the workload is the model's chain of blocks (graph/) grouped into `segments` pieces of about equal
  measured host time (few split points keep the exact per-slot search cheap: (L+1)^G vectors);
* every slot, every gateway runs its bottom segments and the AP its top segments with the
  foundation's stages (Graph.split), the intermediate and output tensors are hashed into a receipt
  signed with the gateway's Ed25519 key, and the output is checked against the whole model;
* the slot's winning AP (drawn from the Poisson race of the miners' block rates, as the controller
  models it) mines a real block over those receipts on the ledger (ledger/) and signs it with its
  own key; the ledger's reputation table must then track the controller's: the receipts carry
  exactly the work the controller counted.

The run plays every gateway and AP, so it holds all their private keys: derived from the seed by
default (reproducible, hence no secret: a simulation's shortcut), or a `Keyring` it is given (e.g.
`Keyring.load` of the parties' key files). Only the public keys go into the ledger.

Real hashing at the controller's difficulty (millions of hashes per block) would take seconds per
slot in Python, so the ledger's base target is `difficulty_scale` times easier; mining time is
accounted as hashes x scale / hash rate (simulated seconds), stated in the results.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils import _pytree as pytree

from dnninfer.bdt.dpra import REFERENCE_HZ, DPRAConfig, SlotDecision, SlotState, Workload, workload_from_blocks
from dnninfer.errors import UserError
from dnninfer.graph import Graph, max_abs_diff
from dnninfer.graph.split import assemble_output
from dnninfer.ledger.consensus import MAX_TARGET, block_rate


@dataclass(frozen=True)
class GraphWorkload:
    """A model's chain grouped into segments: the controller's workload and how to cut the graph."""

    workload: Workload
    graph: Graph
    segment_blocks: tuple[tuple[int, int], ...]  # (first block, last block) of each segment

    def assignment(self, s: int) -> dict[str, int]:
        """Segments before `s` on the gateway (stage 0), the rest on the AP (stage 1)."""
        blocks = self.graph.chain()
        labels = [0 if seg < s else 1 for seg, (a, b) in enumerate(self.segment_blocks) for _ in range(a, b + 1)]
        return self.graph.blocks_to_assignment(blocks, labels)


def graph_workload(graph: Graph, block_seconds: Sequence[float], segments: int = 6,
                   hz: float = REFERENCE_HZ) -> GraphWorkload:
    """Group the chain into `segments` pieces of about equal time; cuts fall on chain boundaries."""
    blocks = graph.chain()
    if len(block_seconds) != len(blocks):
        raise ValueError(f"{len(block_seconds)} block times for {len(blocks)} blocks")
    k = max(1, min(segments, len(blocks)))
    total = sum(block_seconds) or 1.0
    bounds, acc, start = [], 0.0, 0
    for i, sec in enumerate(block_seconds):
        acc += sec
        remaining_blocks = len(blocks) - i - 1
        remaining_segments = k - len(bounds) - 1
        if (acc >= total * (len(bounds) + 1) / k or remaining_blocks == remaining_segments) and remaining_segments > 0:
            bounds.append((start, i))
            start = i + 1
    bounds.append((start, len(blocks) - 1))
    seg_s = [sum(block_seconds[a:b + 1]) for a, b in bounds]
    cuts = [blocks[b].out_bytes for _, b in bounds]
    in_bytes = sum(graph.nodes[n].out_bytes for n in graph.input_names)
    wl = workload_from_blocks(seg_s, cuts, in_bytes, blocks[-1].out_bytes, hz=hz, name=f"{graph.name}-{len(bounds)}")
    return GraphWorkload(wl, graph, tuple(bounds))


def config_for(workload: Workload, seed: int = 0, **overrides: Any) -> DPRAConfig:
    """The default scenario (tuned on VGG16, dpra.py) with every clock scaled by this workload's
    cycles, so compute times, the compute/transfer balance and the hashes per block stay those of the
    tuned scenario whatever the model [R]: the regime where the reputation constraint binds."""
    from dnninfer.bdt.dpra import vgg16_workload

    base = DPRAConfig()
    k = float(workload.w.sum() / vgg16_workload().w.sum())
    scaled = {"f_gateway": tuple(f * k for f in base.f_gw), "F_ap": tuple(f * k for f in base.F),
              "f_min": base.f_min * k, "C_h": base.C_h * k}
    return DPRAConfig(**{**scaled, "seed": seed, **overrides})


def measured_block_seconds(graph: Graph, repeats: int = 5) -> list[float]:
    """Per-block host seconds from the cached one-thread profile (cost/measure.py)."""
    from dnninfer.cost.measure import profile

    node_s = profile(graph, threads=1, repeats=repeats, warmup=2).node_s
    return [sum(node_s[n] for n in b.nodes) for b in graph.chain()]


def block_seconds(graph: Graph, host: str = "measure") -> list[float]:
    """Per-block host seconds, measured here (``"measure"``, cached) or estimated from FLOPs
    (``"flops"``: no timing, so the same on every machine)."""
    if host == "measure":
        return measured_block_seconds(graph)
    if host == "flops":
        from dnninfer.partition.costmodel import flops_estimate

        est = flops_estimate(graph)
        return [sum(est[n] for n in b.nodes) for b in graph.chain()]
    raise UserError(f"host estimate {host!r}: expected 'measure' or 'flops'")


def _digest(values: Sequence[torch.Tensor]) -> str:
    """One SHA-256 over several tensors (a cut may carry more than one)."""
    from dnninfer.ledger.receipt import tensor_digest

    if len(values) == 1:
        return tensor_digest(values[0])
    return hashlib.sha256("".join(tensor_digest(v) for v in values).encode()).hexdigest()


@dataclass
class RunLog:
    slots: int = 0
    receipts: int = 0
    blocks: int = 0
    hashes: int = 0
    mining_s: list[float] = field(default_factory=list)
    max_abs_err: float = 0.0
    rejected: list[str] = field(default_factory=list)


class SlotExecutor:
    """The `on_slot` hook of `dpra.simulate`: run each gateway's split, sign receipts, mine a block."""

    def __init__(self, gw: GraphWorkload, cfg: DPRAConfig, inputs: Sequence[torch.Tensor], *,
                 ledger_path: str | Path | None = None, difficulty_scale: float = 2**10, seed: int = 0,
                 keys: Any = None) -> None:
        from dnninfer.ledger.chain import Ledger
        from dnninfer.ledger.identity import Keyring
        from dnninfer.ledger.params import LedgerParams
        from dnninfer.ledger.store import open_ledger

        self.gw, self.cfg, self.inputs, self.seed = gw, cfg, tuple(inputs), seed
        self.scale = float(difficulty_scale)
        self.gateways = tuple(f"gw{g}" for g in range(cfg.gateways))
        self.aps = tuple(f"ap{m}" for m in range(cfg.aps))
        self.params = LedgerParams(
            gateways=self.gateways, aps=self.aps, t0=min(MAX_TARGET, int(cfg.t0 * self.scale)), kappa=cfg.kappa,
            beta=cfg.beta, capacity_cycles={a: round(cfg.F[m] * cfg.tau) for m, a in enumerate(self.aps)},
            slot_s=cfg.tau)
        self.keys = keys if keys is not None else Keyring.derive(self.gateways + self.aps,
                                                                 secret=f"dpra-seed-{seed}")
        self.ledger = (open_ledger(ledger_path, self.params, self.keys) if ledger_path is not None
                       else Ledger(self.params, self.keys))
        self._stages: dict[int, Any] = {}
        with torch.no_grad():
            self.reference = gw.graph(*self.inputs)
        self.log = RunLog()

    def _run_split(self, s: int) -> tuple[list[torch.Tensor], Any]:
        """Bottom `s` segments then the top: (tensors crossing the cut, model output)."""
        g = self.gw.graph
        if s == 0:
            with torch.no_grad():
                return list(self.inputs), g(*self.inputs)
        if s not in self._stages:
            self._stages[s] = g.split(self.gw.assignment(s))
        stages = self._stages[s]
        env: dict[str, Any] = dict(zip(g.input_names, self.inputs, strict=True))
        with torch.no_grad():
            for st in stages:
                env.update(zip(st.outputs, st(*(env[n] for n in st.inputs)), strict=True))
        return [env[n] for n in stages[0].outputs], assemble_output(g, env)

    def __call__(self, t: int, dec: SlotDecision, state: SlotState) -> None:
        from dnninfer.ledger.errors import LedgerError
        from dnninfer.ledger.miner import mine_block
        from dnninfer.ledger.receipt import Receipt

        wl = self.gw.workload
        receipts = []
        for g, s in enumerate(int(x) for x in dec.s):
            if s >= wl.L:  # everything ran at the gateway: no work for the AP to claim
                continue
            cut, out = self._run_split(s)
            err = max_abs_diff(out, self.reference)
            self.log.max_abs_err = err if math.isnan(err) else max(self.log.max_abs_err, err)
            ap = self.aps[self.cfg.ap_of[g]]
            receipts.append(Receipt.create(
                chain=self.ledger.chain, gateway=self.gateways[g], ap=ap, slot=t, split=s, layers=(s, wl.L - 1),
                intermediate=_digest(cut), output=_digest(pytree.tree_leaves(out)), cycles=float(wl.w_top[s]),
                timestamp=t * self.cfg.tau, key=self.keys[self.gateways[g]]))
        # the slot's miner: the first to find a block in the race of Poisson miners (rates as modelled)
        rates = np.array([block_rate(dec.f_blk[m] / self.cfg.C_h, state.targets[m]) for m in range(self.cfg.aps)])
        rng = random.Random(hash((self.seed, t)) & 0xFFFFFFFF)
        winner = rng.choices(range(self.cfg.aps), weights=rates.tolist())[0] if rates.sum() > 0 else 0
        hash_rate = max(dec.f_blk[winner], 1.0) / self.cfg.C_h
        try:
            mined = mine_block(self.ledger, self.aps[winner], receipts, key=self.keys[self.aps[winner]], rng=rng,
                               hash_rate=hash_rate, timestamp_us=round(t * self.cfg.tau * 1e6))
            self.ledger.add_block(mined.block)
        except LedgerError as e:
            self.log.rejected.append(f"slot {t}: {e}")
            return
        self.log.slots += 1
        self.log.receipts += len(receipts)
        self.log.blocks += 1
        self.log.hashes += mined.hashes
        self.log.mining_s.append(mined.hashes * self.scale / hash_rate)

    def reputation(self) -> np.ndarray:
        table = self.ledger.reputation()
        return np.array([table[a] for a in self.aps])

    def close(self) -> None:
        close = getattr(self.ledger, "close", None)
        if close is not None:
            close()


def run(model: str | Any, *, slots: int, method: str = "dpra", cfg: DPRAConfig | None = None, segments: int = 6,
        ledger_path: str | Path | None = None, execute: bool = True, seed: int = 0,
        host: str = "measure", keys: Any = None) -> dict[str, Any]:
    """Simulate `method` on a model's workload; with `execute`, run every split and keep a ledger.

    `model`: a zoo name, or a loaded user model (anything with ``.name``, ``.model``, ``.inputs``).
    `keys`: the parties' private keys (a `ledger.identity.Keyring`; default: derived from `seed`)."""
    from dnninfer import zoo
    from dnninfer.bdt.dpra import simulate
    from dnninfer.graph import capture

    if isinstance(model, str):
        m, inputs = zoo.build_model(model, seed=seed), zoo.example_inputs(model, seed=seed)
    else:
        model, m, inputs = model.name, model.model, tuple(model.inputs)
    graph = capture(m, inputs, name=model)
    gw = graph_workload(graph, block_seconds(graph, host), segments)
    cfg = cfg or config_for(gw.workload, seed)
    executor = SlotExecutor(gw, cfg, inputs, ledger_path=ledger_path, seed=seed, keys=keys) if execute else None
    try:
        result = simulate(gw.workload, cfg, slots, method, on_slot=executor)
        out: dict[str, Any] = {
            "model": model, "method": method, "slots": slots, "workload": gw.workload.name,
            "segments": [list(b) for b in gw.segment_blocks], "avg_latency_s": result.avg_latency,
            "avg_u": result.avg_u.tolist(), "u_th": cfg.u_th, "constraint_met": result.constraint_met(),
            "avg_backlog": result.avg_backlog, "split_histogram": np.bincount(result.s.ravel(),
                                                                              minlength=gw.workload.L + 1).tolist(),
            "result": result,
        }
        if executor is not None:
            log = executor.log
            rho_ledger = executor.reputation()
            out["ledger"] = {
                "path": str(ledger_path) if ledger_path else None, "blocks": log.blocks, "receipts": log.receipts,
                "hashes": log.hashes, "difficulty_scale": executor.scale,
                "mean_mining_s": float(np.mean(log.mining_s)) if log.mining_s else None,
                "rejected": log.rejected, "max_abs_err": log.max_abs_err,
                "reputation": dict(zip(executor.aps, rho_ledger.tolist(), strict=True)),
                "reputation_gap_vs_controller": float(np.abs(rho_ledger - result.rho[-1]).max()),
                "mined": executor.ledger.mined_counts(),
            }
        return out
    finally:
        if executor is not None:
            executor.close()
