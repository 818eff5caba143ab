"""The chain DPs of chain_dp.py over device *types*: polynomial in the number of devices.

chain_dp.py's state is (last block, used-device set as a bitmask, last device): exact, and
exponential in the number of devices. With interchangeable devices (partition/fleet.py) the set of
used devices only matters through how many of each type it holds, so the state becomes (last
block ``j``, multiset of types used ``n`` (a count per type), last type ``u``) — PipeEdge's
multiset state (Hu et al., DSD'22). For a fixed number of types ``T`` the states number
``L x T x Π_t (c_t + 1)``: polynomial in the number of devices ``Σ_t c_t``.

Most of those states are never worth keeping, so the DP is label-setting with dominance:

* a label (``n``, value) at ``(j, u)`` is dropped when another label there uses no more of any
  type (``n' <= n``) and costs no more: whatever completes one completes the other at no more
  cost (a type's devices are interchangeable, so what is left of each type is all that matters);
* a label whose value combined with a lower bound on the blocks still to run (each block on the
  type that runs it fastest, no hops) exceeds the best complete plan so far is dropped
  (branch-and-bound);
* the stage costs are one table per type (``stage[u, i, j]``, running sums as chain_dp.py's), so
  extending a front of labels by one stage is one numpy broadcast per (previous type, type).

Both objectives are kept exactly: ``sum`` (latency) and ``max`` (PipeEdge's bottleneck). With
`deadline` the search stops when the time is up and returns the best complete plan it has seen,
saying how far it got (`TypedPlan.complete`, `TypedPlan.blocks_done`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from dnninfer.errors import UserError
from dnninfer.partition.chain_dp import Combine, Need

__all__ = ["BEAM", "TypedPlan", "stage_tables", "typed_dp"]

_TIE_REL = 1e-12
#: labels kept per (block, last type) by default: every non-dominated one while there are at most
#: this many (so the DP is exact on clusters whose multisets of types number at most BEAM per
#: state, e.g. every cluster of up to 9 nodes), else the cheapest ones (`TypedPlan.exact` False)
BEAM = 256

TypeComm = Callable[[int, int, float], float]
"""``comm(from_type, to_type, nbytes) -> seconds``; ``from_type == to_type`` means two different
devices of that type (asked only when the type has at least two)."""


@dataclass(frozen=True)
class TypedPlan:
    """Stages ``(device, first_block, last_block)`` (devices materialised from types), the DP's
    value, and how far the search got."""

    stages: tuple[tuple[int, int, int], ...]
    cost_s: float
    complete: bool  # False: the deadline stopped the search; the plan is the best seen so far
    blocks_done: int  # blocks whose labels were all expanded
    labels: int  # labels kept (after dominance and bound pruning)
    exact: bool = True  # False: the beam left a non-dominated label out somewhere (the plan may not be optimal)


def typed_dp(comp: np.ndarray, members: Sequence[Sequence[int]], out_bytes: Sequence[float], in_bytes: float,
             comm: TypeComm, source: int, *, combine: Combine, need: Need | None = None,
             cap: Sequence[float | None] | None = None, max_devices: int | None = None,
             deadline: float | None = None, beam: int | None = BEAM,
             upper_s: float | None = None, tables: tuple[np.ndarray, np.ndarray] | None = None) -> TypedPlan | None:
    """The best chain plan over device types; None only when the deadline came before any plan.

    ``comp[t][b]``: seconds of block ``b`` on a device of type ``t``; ``members[t]``: the device
    indices of type ``t`` in the order they are used; ``source``: the type of the source device
    (it must have exactly one member, the source itself); ``cap[t]``: bytes per device of the type.
    ``beam``: labels kept per (block, last type), None for all (exact, possibly slow);
    ``upper_s``: the value of a plan known to exist (prunes from the start); ``tables``:
    `stage_tables` of these costs, when the caller solves the same problem more than once.
    Raises `UserError` when no plan fits, as chain_dp.py does."""
    arr = np.asarray(comp, dtype=float)
    n_typ, n_blk = arr.shape
    counts = np.array([len(m) for m in members])
    if len(members) != n_typ or (counts < 1).any():
        raise UserError(f"typed_dp: members: expected {n_typ} non-empty types, got {list(counts)}")
    if counts[source] != 1:
        raise UserError(f"typed_dp: source type {source}: expected one member (the source), got {counts[source]}")
    if np.isnan(arr).any() or (arr < 0).any():
        raise UserError("typed_dp: comp: expected non-negative seconds (inf = not allowed), got NaN or a negative")
    total = int(counts.sum())
    kmax = min(total, n_blk, max_devices if max_devices is not None else total)
    start, stage = tables if tables is not None else stage_tables(arr, need, cap)

    def hop(a: int, b: int, nbytes: float) -> float:
        t = float(comm(a, b, nbytes))
        if math.isnan(t) or t < 0:
            raise UserError(f"typed_dp: comm({a}, {b}, {nbytes!r}) must be a non-negative number of seconds, got {t!r}")
        return t

    both = np.maximum if combine == "max" else np.add
    hop_in = np.array([0.0 if u == source else hop(source, u, in_bytes) for u in range(n_typ)])
    hop_out = np.array([0.0 if u == source else hop(u, source, out_bytes[-1]) for u in range(n_typ)])
    edges = {(v, u): np.array([hop(v, u, out_bytes[i]) for i in range(n_blk)])
             for v in range(n_typ) for u in range(n_typ) if v != u or counts[u] >= 2}
    # lower bounds on what blocks b..L-1 still cost: each block on its fastest type, no hops; for
    # the bottleneck also their total work spread evenly over the stages still possible
    fastest = arr.min(axis=0)
    work = np.concatenate([np.cumsum(fastest[::-1])[::-1], [0.0]])  # work[b] = Σ_{b' >= b} fastest
    peak = np.concatenate([np.maximum.accumulate(fastest[::-1])[::-1], [0.0]])

    def bound(vals: np.ndarray, used: np.ndarray, after: int | np.ndarray) -> np.ndarray:
        """Lower bound of a plan completing labels (value, devices used) whose last block is
        ``after - 1``: inf when blocks remain and no device or stage is left."""
        left = n_blk - np.asarray(after)
        stages_left = np.minimum(total - used, kmax - used)
        stuck = (left > 0) & (stages_left <= 0)
        if combine == "sum":
            out = vals + work[after]
        else:
            spread = np.where(left > 0, work[after] / np.maximum(np.minimum(stages_left, left), 1), 0.0)
            out = np.maximum(vals, np.maximum(peak[after], spread))
        return np.where(stuck, np.inf, out)

    # label store: type, first block, last block, parent label
    lab_u: list[int] = []
    lab_a: list[int] = []
    lab_b: list[int] = []
    lab_p: list[int] = []
    pending: dict[tuple[int, int], list[tuple[np.ndarray, np.ndarray, np.ndarray, int]]] = {}
    best_val, finals = (math.inf if upper_s is None else float(upper_s)), []
    eye = np.eye(n_typ, dtype=np.int32)

    def push(j: int, u: int, cnt: np.ndarray, vals: np.ndarray, parents: np.ndarray, first: int) -> None:
        nonlocal best_val
        if j == n_blk - 1 and len(vals):
            best_val = min(best_val, float(both(vals, hop_out[u]).min()))
        pending.setdefault((j, u), []).append((cnt, vals, parents, first))

    for u in range(n_typ):
        row = both(hop_in[u], start[u])
        for j in np.flatnonzero(np.isfinite(row)):
            push(int(j), u, eye[u][None, :], row[j:j + 1], np.array([-1]), 0)

    done, complete, exact = 0, True, True
    for i in range(n_blk):
        if deadline is not None and time.perf_counter() > deadline and math.isfinite(best_val):
            complete = False
            break
        for v in range(n_typ):
            got = pending.pop((i, v), None)
            if not got:
                continue
            cnt = np.concatenate([g[0] for g in got])
            vals = np.concatenate([g[1] for g in got])
            parents = np.concatenate([g[2] for g in got])
            firsts = np.concatenate([np.full(len(g[1]), g[3]) for g in got])
            limit = best_val + _TIE_REL * max(1.0, abs(best_val)) if math.isfinite(best_val) else math.inf
            alive = bound(vals, cnt.sum(axis=1), i + 1) <= limit
            cnt, vals, parents, firsts = cnt[alive], vals[alive], parents[alive], firsts[alive]
            keep, cut = _pareto(cnt, vals, beam)
            exact &= not cut
            cnt, vals, parents, firsts = cnt[keep], vals[keep], parents[keep], firsts[keep]
            ids = np.arange(len(lab_u), len(lab_u) + len(vals))
            lab_u.extend([v] * len(vals))
            lab_a.extend(firsts.tolist())
            lab_b.extend([i] * len(vals))
            lab_p.extend(parents.tolist())
            if i == n_blk - 1:
                finals.extend(zip(both(vals, hop_out[v]).tolist(), ids.tolist(), strict=True))
                continue
            used = cnt.sum(axis=1)
            for u in range(n_typ):
                edge = edges.get((v, u))
                if edge is None:
                    continue
                ok = (cnt[:, u] < counts[u]) & (used < kmax)
                if not ok.any():
                    continue
                base = both(vals[ok], edge[i])
                m = both(base[:, None], stage[u, i, i + 1:][None, :])  # columns: last block i+1..L-1
                new_cnt = cnt[ok] + eye[u]
                m[bound(m, new_cnt.sum(axis=1)[:, None], np.arange(i + 2, n_blk + 1)[None, :]) > limit] = np.inf
                for col in np.flatnonzero(np.isfinite(m).any(axis=0)):
                    rows = np.isfinite(m[:, col])
                    push(i + 1 + int(col), u, new_cnt[rows], m[rows, col], ids[ok][rows], i + 1)
        done = i + 1
    if not complete:  # stopped by the deadline: the complete plans already found are the candidates
        for v in range(n_typ):
            for _, vals_, parents_, first in pending.pop((n_blk - 1, v), []):
                for val, parent in zip(vals_.tolist(), parents_.tolist(), strict=True):
                    finals.append((float(both(val, hop_out[v])), len(lab_u)))
                    lab_u.append(v)
                    lab_a.append(first)
                    lab_b.append(n_blk - 1)
                    lab_p.append(parent)
    if not finals:
        if not complete or upper_s is not None:  # stopped early, or nothing beat the known plan
            return None
        raise UserError(f"no plan fits: no chain of at most {kmax} stage(s) on distinct devices has a finite cost "
                        "within every device's memory")

    def stages_of(label: int) -> tuple[tuple[int, int, int], ...]:
        chain = []
        while label >= 0:
            chain.append((lab_u[label], lab_a[label], lab_b[label]))
            label = lab_p[label]
        chain.reverse()
        used_of = [0] * n_typ
        out = []
        for u, a, b in chain:
            out.append((int(members[u][used_of[u]]), a, b))
            used_of[u] += 1
        return tuple(out)

    low = min(c for c, _ in finals)
    tied = [stages_of(lab) for c, lab in finals if c <= low + _TIE_REL * max(1.0, abs(low))]
    stages = min(tied, key=lambda s: (len(s), tuple(d for d, _, _ in s), s))
    return TypedPlan(stages, low, complete, done, len(lab_u), exact)


def stage_tables(arr: np.ndarray, need: Need | None, cap: Sequence[float | None] | None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """``start[u, j]`` = blocks 0..j on type ``u``; ``stage[u, i, j]`` = blocks i+1..j; inf where
    not allowed or not fitting (chain_dp.py's running sums, one per first block)."""
    from dnninfer.partition.chain_dp import _prepare
    from dnninfer.partition.chain_dp import _stage_tables as device_tables

    n_blk = arr.shape[1]
    if (need is None) != (cap is None):
        raise UserError("typed_dp: need and cap go together: give both for a memory check, or neither")
    p = _prepare(arr, [0.0] * n_blk, 0.0, lambda a, b, n: 0.0, 0, need=need, cap=cap)
    return device_tables(p)


def _pareto(cnt: np.ndarray, vals: np.ndarray, cap: int | None, chunk: int = 256) -> tuple[np.ndarray, bool]:
    """Indices of the labels no other label dominates (uses no more of any type, costs no more),
    at most `cap` of them (the cheapest), among equals the one listed first; and whether the cap
    left a non-dominated label out. Labels are scanned in order of value, a chunk at a time against
    the front kept so far, then one by one within the chunk."""
    n = len(vals)
    if n <= 1:
        return np.arange(n), False
    order = np.lexsort((np.arange(n), cnt.sum(axis=1), vals))
    kept: list[int] = []
    front = np.empty((0, cnt.shape[1]), dtype=cnt.dtype)
    for lo in range(0, n, chunk):
        idx = order[lo:lo + chunk]
        c = cnt[idx]
        if len(front):
            free = ~(front[None, :, :] <= c[:, None, :]).all(axis=2).any(axis=1)
            idx, c = idx[free], c[free]
        for j, row in zip(idx, c, strict=True):
            if len(kept) and (front <= row).all(axis=1).any():
                continue
            if cap is not None and len(kept) >= cap:
                return np.sort(np.array(kept, dtype=int)), True
            kept.append(int(j))
            front = np.vstack([front, row])
    return np.sort(np.array(kept, dtype=int)), False
