"""Layer-wise partitioning of a chain of blocks over an ordered subset of distinct devices.

A plan is a sequence of stages ``(device, first_block, last_block)`` covering blocks ``0..L-1``
contiguously, each device used at most once. The input (``in_bytes``) arrives at ``source`` and
the output (``out_bytes[L-1]``) goes back to ``source``; both hops are free when the device at
that end is the source. Between stages the cut after block ``i`` costs ``comm(v, u, out_bytes[i])``.

Two objectives over the same terms (partitioning.md §3.2 and §6.1 step 3):

* ``latency_dp`` — one request run sequentially: the *sum* of every stage's compute and every
  hop (Neurosurgeon/DADS-style latency, generalised to several devices):
  ``L[j][S∪u][u] = min_{i<j, v∈S} L[i][S][v] + comm(v→u, out_i) + Σ_{i<l≤j} comp[u][l]``.
* ``bottleneck_dp`` — PipeEdge (Hu, Imes, Zhao, Mundra, Crago, Walters, "PipeEdge: Pipeline
  Parallelism for Large-Scale Model Inference on Heterogeneous Edge Devices", Euromicro DSD 2022;
  ``usc-isi/PipeEdge`` ``src-native/schedule.cpp``): the *max* over the same terms, i.e. the
  pipeline's slowest stage or link, so throughput = 1 / cost:
  ``h[j][S∪u][u] = min_{i<j, v∈S} max(h[i][S][v], comm(v→u, out_i), comp_u(i+1..j))``.

The state is (last block ``j``, used-device set ``S`` as a bitmask, last device ``u``): polynomial
in the number of blocks, exponential only in the number of devices (D ≤ 6 in practice). For each
``(S, u, v)`` the inner minimisation over ``i`` is one numpy reduction over an ``L × L`` matrix of
stage costs precomputed from per-device running sums, so L = 60, D = 5 takes milliseconds.

Memory (PipeEdge's ``is_layers_fit``): a stage holding blocks ``i..j`` needs ``need(i, j)`` bytes
and must fit ``cap[d]`` (a ``None`` entry means unlimited).

Ties (deterministic): the DP keeps one plan per final state (device set, last device); among
final states within a relative 1e-12 of the best it takes fewer stages, then the
lexicographically smaller device sequence. Inside a state it keeps the lowest previous device,
then the earliest split. `brute_force` applies the same final rule over all plans.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, TypedDict, Unpack

import numpy as np

from dnninfer.errors import UserError

__all__ = ["ChainPlan", "Comm", "Comp", "DPOptions", "Need", "bottleneck_dp", "brute_force", "evaluate", "latency_dp"]

Comm = Callable[[int, int, float], float]
"""``comm(from_device, to_device, nbytes) -> seconds``; never called with equal devices."""
Need = Callable[[int, int], float]
"""``need(first_block, last_block) -> bytes`` for a stage holding that inclusive block range."""
Combine = Literal["sum", "max"]
Comp = Sequence[Sequence[float]] | np.ndarray
"""``comp[device][block]`` -> seconds of that block on that device (``inf``: not allowed there)."""


class DPOptions(TypedDict, total=False):
    """The optional constraints every solver takes (each defaults to ``None``: no constraint)."""

    need: Need | None  # with cap: the memory check (give both or neither)
    cap: Sequence[float | None] | None  # bytes per device, None = unlimited
    max_devices: int | None  # at most this many stages

_TIE_REL = 1e-12


@dataclass(frozen=True)
class ChainPlan:
    """Stages ``(device, first_block, last_block)`` in execution order, and the objective value."""

    stages: tuple[tuple[int, int, int], ...]
    cost_s: float

    @property
    def devices(self) -> tuple[int, ...]:
        return tuple(d for d, _, _ in self.stages)


@dataclass
class _Problem:
    comp: np.ndarray  # (D, L)
    out_bytes: Sequence[float]
    in_bytes: float
    comm: Comm
    source: int
    fit: np.ndarray | None  # (D, L, L) bool: fit[d, i, j] = blocks i..j fit on d (i <= j)
    kmax: int
    need: Need | None
    cap: Sequence[float | None] | None

    @property
    def n_dev(self) -> int:
        return int(self.comp.shape[0])

    @property
    def n_blk(self) -> int:
        return int(self.comp.shape[1])


def _hop(comm: Comm, u: int, v: int, nbytes: float) -> float:
    """Seconds to move ``nbytes`` from ``u`` to ``v``; 0 on the same device."""
    if u == v:
        return 0.0
    t = float(comm(u, v, nbytes))
    if math.isnan(t) or t < 0:
        raise UserError(f"chain_dp: comm({u}, {v}, {nbytes!r}) must be a non-negative number of seconds, got {t!r}")
    return t


def _prepare(
    comp: Comp, out_bytes: Sequence[float], in_bytes: float, comm: Comm, source: int,
    need: Need | None = None, cap: Sequence[float | None] | None = None, max_devices: int | None = None,
) -> _Problem:
    """Validate the inputs and build the memory-fit table."""
    arr = np.asarray(comp, dtype=float)
    if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise UserError(f"chain_dp: comp: expected a non-empty devices x blocks table, got shape {arr.shape}")
    n_dev, n_blk = arr.shape
    if np.isnan(arr).any() or (arr < 0).any():
        raise UserError("chain_dp: comp: expected non-negative seconds (inf = not allowed), got NaN or a negative")
    if len(out_bytes) != n_blk:
        raise UserError(f"chain_dp: out_bytes: expected {n_blk} entries (one per block), got {len(out_bytes)}")
    if not (isinstance(source, int | np.integer) and 0 <= source < n_dev):
        raise UserError(f"chain_dp: source: expected a device index in 0..{n_dev - 1}, got {source!r}")
    if max_devices is not None and max_devices < 1:
        raise UserError(f"chain_dp: max_devices: expected >= 1, got {max_devices!r}")
    kmax = min(n_dev, n_blk, max_devices if max_devices is not None else n_dev)
    if (need is None) != (cap is None):
        raise UserError("chain_dp: need and cap go together: give both for a memory check, or neither")
    fit = None
    if need is not None and cap is not None:
        if len(cap) != n_dev:
            raise UserError(f"chain_dp: cap: expected {n_dev} entries (one per device), got {len(cap)}")
        needs = np.full((n_blk, n_blk), np.inf)
        for i in range(n_blk):
            for j in range(i, n_blk):
                needs[i, j] = float(need(i, j))
        caps = np.array([np.inf if c is None else float(c) for c in cap])
        fit = needs[None, :, :] <= caps[:, None, None]
    return _Problem(arr, out_bytes, in_bytes, comm, int(source), fit, kmax, need, cap)


def _infeasible(p: _Problem) -> UserError:
    """Explain why no plan has a finite cost."""
    if p.need is not None and p.cap is not None:
        singles = [float(p.need(b, b)) for b in range(p.n_blk)]
        worst = max(range(p.n_blk), key=lambda b: singles[b])
        caps = [math.inf if c is None else float(c) for c in p.cap]
        big = max(range(p.n_dev), key=lambda d: caps[d])
        return UserError(
            f"no plan fits: the largest single-block need is {singles[worst]:.6g} bytes (block {worst}) and the "
            f"largest cap is {caps[big]:.6g} bytes (device {big}); the blocks must be split into at most "
            f"{p.kmax} stage(s) on distinct devices, each within its device's cap and with finite compute and links"
        )
    bad = [b for b in range(p.n_blk) if np.isinf(p.comp[:, b]).all()]
    why = f"block {bad[0]} is not allowed on any device (inf compute)" if bad else "every plan has an inf cost"
    return UserError(f"no plan: {why} (at most {p.kmax} stage(s) on distinct devices)")


def _stage_tables(p: _Problem) -> tuple[np.ndarray, np.ndarray]:
    """``start[u, j]`` = blocks 0..j on ``u``; ``stage[u, i, j]`` = blocks i+1..j on ``u``; inf if not allowed.

    Running sums start afresh at every first block (one cumsum per start), so a stage's compute is
    summed left to right exactly as `evaluate` does, and an inf block never produces inf - inf."""
    n_dev, n_blk = p.comp.shape
    sums = np.full((n_dev, n_blk + 1, n_blk), np.inf)  # sums[d, a, b] = Σ comp[d, a..b], a <= b
    for a in range(n_blk):
        sums[:, a, a:] = np.cumsum(p.comp[:, a:], axis=1)
    if p.fit is not None:
        sums[:, :n_blk, :] = np.where(p.fit, sums[:, :n_blk, :], np.inf)
    return sums[:, 0, :], sums[:, 1:, :]


def _run_dp(p: _Problem, combine: Combine) -> ChainPlan:
    """The shared DP; ``combine`` picks latency (sum) or bottleneck (max)."""
    n_dev, n_blk = p.comp.shape
    start, stage = _stage_tables(p)
    hop_in = [_hop(p.comm, p.source, u, p.in_bytes) for u in range(n_dev)]
    hop_out = [_hop(p.comm, u, p.source, p.out_bytes[-1]) for u in range(n_dev)]
    # hop[v][u][i]: move the cut after block i from v to u (only i < L-1 is ever used)
    hop = [
        [np.array([_hop(p.comm, v, u, p.out_bytes[i]) for i in range(n_blk)]) if u != v else None for u in range(n_dev)]
        for v in range(n_dev)
    ]
    cols = np.arange(n_blk)
    best: dict[tuple[int, int], np.ndarray] = {}
    back: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
    for u in range(n_dev):
        best[(1 << u, u)] = hop_in[u] + start[u] if combine == "sum" else np.maximum(hop_in[u], start[u])
    for mask in range(1, 1 << n_dev):
        k = mask.bit_count()
        if k < 2 or k > p.kmax:
            continue
        for u in range(n_dev):
            if not mask >> u & 1:
                continue
            prev = mask ^ (1 << u)
            val = np.full(n_blk, np.inf)
            arg_i = np.zeros(n_blk, dtype=int)
            arg_v = np.full(n_blk, -1)
            for v in range(n_dev):
                if not prev >> v & 1:
                    continue
                h = best.get((prev, v))
                if h is None or not np.isfinite(h).any():
                    continue
                edge = hop[v][u]
                assert edge is not None
                if combine == "sum":
                    m = (h + edge)[:, None] + stage[u]
                else:
                    m = np.maximum(np.maximum(h, edge)[:, None], stage[u])
                i_best = np.argmin(m, axis=0)
                cand = m[i_best, cols]
                better = cand < val
                val[better] = cand[better]
                arg_i[better] = i_best[better]
                arg_v[better] = v
            best[(mask, u)] = val
            back[(mask, u)] = (arg_i, arg_v)

    def stages_of(mask: int, u: int) -> tuple[tuple[int, int, int], ...]:
        out: list[tuple[int, int, int]] = []
        j = n_blk - 1
        while mask != 1 << u:
            arg_i, arg_v = back[(mask, u)]
            i, v = int(arg_i[j]), int(arg_v[j])
            out.append((u, i + 1, j))
            mask, u, j = mask ^ (1 << u), v, i
        out.append((u, 0, j))
        return tuple(reversed(out))

    finals: list[tuple[float, tuple[tuple[int, int, int], ...]]] = []
    for (mask, u), h in best.items():
        last = float(h[-1])
        total = last + hop_out[u] if combine == "sum" else max(last, hop_out[u])
        if math.isfinite(total):
            finals.append((total, stages_of(mask, u)))
    return _pick(finals, p, combine)


def _pick(finals: list[tuple[float, tuple[tuple[int, int, int], ...]]], p: _Problem, combine: Combine) -> ChainPlan:
    """Apply the tie-break (module docstring) and report the plan's cost as `evaluate` computes it."""
    if not finals:
        raise _infeasible(p)
    low = min(c for c, _ in finals)
    tied = [s for c, s in finals if c <= low + _TIE_REL * max(1.0, abs(low))]
    stages = min(tied, key=lambda s: (len(s), tuple(d for d, _, _ in s), s))
    cost = evaluate(stages, p.comp, p.out_bytes, p.in_bytes, p.comm, p.source, combine=combine)
    return ChainPlan(stages, cost)


def latency_dp(comp: Comp, out_bytes: Sequence[float], in_bytes: float, comm: Comm, source: int,
               **options: Unpack[DPOptions]) -> ChainPlan:
    """Plan minimising one request's end-to-end latency (sum of stage compute and hops)."""
    return _run_dp(_prepare(comp, out_bytes, in_bytes, comm, source, **options), "sum")


def bottleneck_dp(comp: Comp, out_bytes: Sequence[float], in_bytes: float, comm: Comm, source: int,
                  **options: Unpack[DPOptions]) -> ChainPlan:
    """PipeEdge plan minimising the slowest stage or hop (pipeline throughput = 1 / cost)."""
    return _run_dp(_prepare(comp, out_bytes, in_bytes, comm, source, **options), "max")


def evaluate(
    plan_stages: Sequence[tuple[int, int, int]], comp: Comp, out_bytes: Sequence[float], in_bytes: float, comm: Comm,
    source: int, *, combine: Combine,
) -> float:
    """The objective of a plan: ``sum`` (latency) or ``max`` (bottleneck) over the input hop, each
    stage's compute, each inter-stage hop and the output hop. `UserError` if the plan is malformed
    (not contiguous, not covering every block, or reusing a device). Memory is not checked here."""
    if combine not in ("sum", "max"):
        raise UserError(f"chain_dp: combine: expected 'sum' or 'max', got {combine!r}")
    arr = np.asarray(comp, dtype=float)
    n_dev, n_blk = arr.shape
    stages = [tuple(int(x) for x in s) for s in plan_stages]
    if not stages:
        raise UserError("chain_dp: plan: expected at least one stage, got none")
    nxt = 0
    for d, a, b in stages:
        if not 0 <= d < n_dev:
            raise UserError(f"chain_dp: plan: device {d} out of range 0..{n_dev - 1}")
        if a != nxt or b < a:
            raise UserError(f"chain_dp: plan: stage {(d, a, b)} does not continue at block {nxt}")
        nxt = b + 1
    if nxt != n_blk:
        raise UserError(f"chain_dp: plan: covers blocks 0..{nxt - 1}, expected 0..{n_blk - 1}")
    devs = [d for d, _, _ in stages]
    if len(set(devs)) != len(devs):
        raise UserError(f"chain_dp: plan: a device is used twice: {devs}")
    terms = [_hop(comm, source, devs[0], in_bytes)]
    for k, (d, a, b) in enumerate(stages):
        if k:
            terms.append(_hop(comm, devs[k - 1], d, out_bytes[a - 1]))
        t = 0.0
        for blk in range(a, b + 1):
            t += float(arr[d, blk])
        terms.append(t)
    terms.append(_hop(comm, devs[-1], source, out_bytes[-1]))
    if combine == "max":
        return max(terms)
    total = 0.0
    for t in terms:
        total += t
    return total


def brute_force(comp: Comp, out_bytes: Sequence[float], in_bytes: float, comm: Comm, source: int, *,
                combine: Combine, **options: Unpack[DPOptions]) -> ChainPlan:
    """Reference solver: every split into k stages × every ordered choice of k distinct devices."""
    p = _prepare(comp, out_bytes, in_bytes, comm, source, **options)
    n_dev, n_blk = p.comp.shape
    finals: list[tuple[float, tuple[tuple[int, int, int], ...]]] = []
    for k in range(1, p.kmax + 1):
        for cuts in itertools.combinations(range(n_blk - 1), k - 1):
            bounds = [-1, *cuts, n_blk - 1]
            ranges = [(bounds[s] + 1, bounds[s + 1]) for s in range(k)]
            for devs in itertools.permutations(range(n_dev), k):
                if p.fit is not None and not all(p.fit[d, a, b] for d, (a, b) in zip(devs, ranges, strict=True)):
                    continue
                stages = tuple((d, a, b) for d, (a, b) in zip(devs, ranges, strict=True))
                cost = evaluate(stages, p.comp, out_bytes, in_bytes, comm, source, combine=combine)
                if math.isfinite(cost):
                    finals.append((cost, stages))
    return _pick(finals, p, combine)
