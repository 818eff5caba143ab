"""DPRA: Lyapunov dynamic DNN partitioning and AP resource allocation for B-DT (partitioning.md §2.3, §6.2(b)).

Seed paper: Deng et al., "Trustworthy DNN Partition for Blockchain-enabled Digital Twin in Wireless
IIoT Networks", arXiv 2405.17914. The paper body could not be read, so every equation below is the
reconstruction of partitioning.md §2.3 and is marked **[R]**.

Model, per slot ``t`` of ``tau`` seconds, ``G`` gateways, ``M`` APs, gateway ``g`` attached to AP
``m(g)``, an ``L``-block DNN with ``w[l]`` cycles per block and ``d[s]`` bits at split point ``s``:

* [R] split ``s_g in 0..L``: blocks ``0..s-1`` run at the gateway, ``s..L-1`` at its AP.
  ``W_low(s) = sum(w[:s])``, ``W_top(s) = sum(w[s:])``. ``s = L`` offloads nothing and sends 0 bits;
  otherwise the cut tensor ``d[s]`` goes over the air (``d[0]`` is the input). The result stays at
  the AP (its digital twin), so ``d[L]`` is never sent.
* [R] latency ``T_g = W_low(s)/f_g + [s<L] (d[s]/r_g(t) + W_top(s)/f_inf[g])``.
* [R] Rayleigh block fading: ``r_g(t) = B log2(1 + snr_g |h_g(t)|^2)``, ``|h|^2 ~ Exp(1)`` i.i.d.
  per slot and gateway (`Channel`).
* [R] AP budget ``sum_{g->m} f_inf[g] + f_blk[m] <= F[m]``, every used share ``>= f_min``;
  ``f_inf[g] = 0`` when ``s_g = L``; ``f_blk[m] >= f_min`` always (so a block is always possible).
* [R] reputation-as-stake PoW (shared formulas in `dnninfer.ledger.consensus`): hash rate
  ``h_m = f_blk[m]/C_h``, target ``T_m = stake_target(t0, kappa, rho_m)``, block rate
  ``lambda_m = h_m T_m / 2^256``, expected consensus latency ``E[T_con] = 1/sum_m lambda_m``.
* [R] verified contribution ``u_m(t) = sum_{g->m, s_g<L} W_top(s_g) / (F[m] tau)`` and reputation
  ``rho_m(t+1) = update_reputation(rho_m, u_m, beta) = (1-beta) rho_m + beta u_m``.
* [R] long-term trust constraint ``lim (1/T) sum_t u_m(t) >= u_th`` for every AP, enforced by the
  virtual queue ``Q_m(t+1) = max(Q_m(t) + u_th - u_m(t), 0)``.
* [R] drift-plus-penalty, per slot: minimise ``V (sum_g T_g + E[T_con]) - sum_m Q_m u_m`` over the
  integer split vector ``s`` and the frequencies ``f``.

Solver (`solve_slot`). For a fixed ``s`` the queue, local and transmission terms are constants and
the rest, ``sum_g c_g/f_inf[g] + 1/sum_m a_m f_blk[m]`` (``c_g = W_top(s_g)``,
``a_m = T_m/(C_h 2^256)``), is convex (``V`` scales it and drops out). KKT, with AP budget multiplier
``nu_m`` and the common block rate ``S = sum_m a_m f_blk[m]``:

* ``f_inf[g] = max(f_min, sqrt(c_g/nu_m))``. When AP ``m`` mines above ``f_min`` the marginal value of
  mining equals the budget price, ``nu_m = a_m/S^2``, so ``f_inf[g] = max(f_min, S sqrt(c_g/a_m))``;
  otherwise ``f_blk[m] = f_min`` and ``nu_m`` water-fills ``F[m] - f_min`` over the AP's gateways.
* With ``t_m = 1/sqrt(nu_m) = min(S/sqrt(a_m), t*_m)`` (``t*_m``: the water level when the AP mines at
  ``f_min``), ``f_blk[m](S) = max(f_min, F[m] - sum_g max(f_min, t_m sqrt(c_g)))`` is non-increasing in
  ``S``, so ``S = sum_m a_m f_blk[m](S)`` has one root. Both equations (``t*_m`` inside, ``S`` outside)
  are piecewise linear in their unknown, so instead of bisecting to a tolerance `_pwl_root` brackets
  the root between sorted breakpoints and closes it by one linear interpolation: exact to rounding
  (tests agree with SLSQP/trust-constr to ~1e-12) and vectorised over every candidate ``s``.

Over ``s``: ``mode="exact"`` enumerates all ``(L+1)^G`` vectors and solves ``f`` for each (vectorised);
``mode="bcd"`` is block coordinate descent: a block is one AP's gateways (or a single gateway when an
AP has too many), each step enumerates the block's splits with ``f`` re-solved exactly for each,
until the objective changes ``< 1e-9`` relative or 20 sweeps; it runs once per rotation of the block
order (up to 8) and keeps the best. (With ``f`` frozen instead, a gateway that keeps everything
local has ``f_inf = 0`` and could never start offloading.) Coordinate descent can stop at a local
optimum: once one AP takes work, the other APs' mining is worth more, so "which AP offloads" is a
swap no single block move makes. On the default scenario plain per-gateway descent missed the
optimum in 113 of 300 slots (up to 10% worse); AP blocks with rotations missed 1 of 300 (1.1%
worse). So ``mode="auto"`` is exact when ``(L+1)^G <= EXACT_LIMIT`` (5000; 7^4 = 2401 for the
default 6-block, 4-gateway case, ~5 ms a slot) and BCD beyond.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from dnninfer.errors import UserError
from dnninfer.ledger.consensus import (
    HASH_SPACE,
    MAX_TARGET,
    stake_target,
    target_for_expected_hashes,
    update_reputation,
)

__all__ = [
    "EXACT_LIMIT",
    "METHODS",
    "REFERENCE_HZ",
    "Channel",
    "DPRAConfig",
    "SimResult",
    "SlotDecision",
    "SlotState",
    "Workload",
    "allocate",
    "simulate",
    "solve_slot",
    "v_sweep",
    "vgg16_workload",
    "workload_from_blocks",
]

METHODS = ("dpra", "myopic", "fixed", "all_offload", "all_local", "equal_freq", "pure_pow")
EXACT_LIMIT = 5000
"""`mode="auto"` enumerates every split vector when there are at most this many, else runs BCD."""
EXACT_HARD_LIMIT = 200_000
"""`mode="exact"` refuses more split vectors than this (memory: a few arrays of size K x G)."""
REFERENCE_HZ = 2.0e9
"""Reference clock turning measured host seconds into cycles (a 2 GHz core; partitioning.md §5.2)."""
_BCD_SWEEPS = 20
_BCD_RTOL = 1e-9
_BCD_ROTATIONS = 8


# ---------------------------------------------------------------------------- workload and config


@dataclass(frozen=True, eq=False)
class Workload:
    """An ``L``-block chain: ``w[l]`` cycles of block ``l``; ``d[s]`` bits of the tensor at split ``s``
    (``d[0]`` the input, ``d[L]`` the output, which stays at the AP and is never sent)."""

    w: np.ndarray
    d: np.ndarray
    name: str = "workload"

    def __post_init__(self) -> None:
        w = np.asarray(self.w, dtype=float)
        d = np.asarray(self.d, dtype=float)
        if w.ndim != 1 or len(w) < 1:
            raise UserError(f"workload {self.name!r}: expected w as a 1-D array of >= 1 block cycles, got {w.shape}")
        if d.shape != (len(w) + 1,):
            raise UserError(f"workload {self.name!r}: expected d of length L+1 = {len(w) + 1}, got shape {d.shape}")
        if not (np.all(np.isfinite(w)) and np.all(w >= 0) and w.sum() > 0):
            raise UserError(f"workload {self.name!r}: expected finite cycles >= 0 with a positive total, got {w}")
        if not (np.all(np.isfinite(d)) and np.all(d >= 0)):
            raise UserError(f"workload {self.name!r}: expected finite bits >= 0, got {d}")
        object.__setattr__(self, "w", w)
        object.__setattr__(self, "d", d)

    @property
    def L(self) -> int:
        return len(self.w)

    @property
    def w_low(self) -> np.ndarray:
        """``W_low(s) = sum(w[:s])`` for ``s = 0..L``."""
        return np.concatenate([[0.0], np.cumsum(self.w)])

    @property
    def w_top(self) -> np.ndarray:
        """``W_top(s) = sum(w[s:])`` for ``s = 0..L`` (``W_top(L) = 0``)."""
        low = self.w_low
        return low[-1] - low


def workload_from_blocks(
    block_seconds: Sequence[float],
    cut_bytes: Sequence[int],
    in_bytes: int,
    out_bytes: int,
    hz: float = REFERENCE_HZ,
    name: str = "workload",
) -> Workload:
    """A `Workload` from measured per-block host seconds and tensor sizes.

    ``cycles = seconds * hz`` with ``hz`` the clock of the measuring host (default `REFERENCE_HZ`,
    a 2 GHz core: gateway/AP speeds in `DPRAConfig` are then in the same cycles). ``cut_bytes`` are
    the tensors between blocks: either ``L-1`` of them, or ``L`` (each block's output, as
    `Graph.chain()` gives ``Block.out_bytes``), in which case the last one is the model output and
    ``out_bytes`` takes its place. Bits are ``8 * bytes``.
    """
    secs = [float(x) for x in block_seconds]
    cuts = [float(x) for x in cut_bytes]
    big_l = len(secs)
    if big_l < 1:
        raise UserError("block_seconds: expected at least one block, got none")
    if len(cuts) == big_l:
        cuts = cuts[:-1]
    if len(cuts) != big_l - 1:
        raise UserError(f"cut_bytes: expected {big_l - 1} or {big_l} sizes for {big_l} blocks, got {len(cut_bytes)}")
    if not hz > 0:
        raise UserError(f"hz: expected a clock > 0, got {hz}")
    w = np.asarray(secs) * hz
    d = 8.0 * np.asarray([float(in_bytes), *cuts, float(out_bytes)])
    return Workload(w=w, d=d, name=name)


def vgg16_workload() -> Workload:
    """VGG16 as 6 blocks from partitioning.md §5.2 (1 thread, batch 1, 224x224 fp32, per-layer ms).

    Blocks: conv1+pool1 (12.8+101+20 ms), conv2 (27+51), conv3 (22+83+50), conv4 (31+62+62),
    conv5 (20+21+20), fc6-8 (36+7.7+2); cuts after pool1..pool5 of 3.2 MB, 1.6 MB, 803 KB,
    401 KB, 100 KB; input 602 KB, output 4 KB (1000 fp32 logits). Sum 629 ms (the table's whole
    model: 620 ms). Cycles at `REFERENCE_HZ`.
    """
    ms = [133.8, 78.0, 155.0, 155.0, 61.0, 45.7]
    cuts = [3_211_264, 1_605_632, 802_816, 401_408, 100_352]
    return workload_from_blocks([x / 1000 for x in ms], cuts, in_bytes=602_112, out_bytes=4_000, name="vgg16-6")


def _vec(value: float | Sequence[float], n: int, name: str) -> tuple[float, ...]:
    try:
        arr = np.atleast_1d(np.asarray(value, dtype=float))
    except (TypeError, ValueError):
        raise UserError(f"DPRAConfig.{name}: expected a number or a sequence of numbers, got {value!r}") from None
    if arr.ndim != 1 or len(arr) not in (1, n):
        raise UserError(f"DPRAConfig.{name}: expected a scalar or {n} values, got {value!r}")
    if not np.all(np.isfinite(arr)):
        raise UserError(f"DPRAConfig.{name}: expected finite values, got {value!r}")
    return tuple(float(x) for x in np.broadcast_to(arr, (n,)))


def _default_t0() -> int:
    # One block per tau = 1 s when an AP mines with all of F = 4 GHz at C_h = 1000 cycles/hash:
    # 4e6 hashes per block on average.
    return target_for_expected_hashes(4.0e9 / 1000.0)


@dataclass(frozen=True)
class DPRAConfig:
    """Scenario constants (SI units: Hz, s, bits/s). Defaults, each chosen here [R], not from the paper:

    * ``gateways=4``, ``aps=2``; ``attach=()`` means round-robin ``g % aps`` (two gateways per AP).
      Scalars in ``f_gateway``, ``F_ap``, ``snr_db`` apply to every gateway/AP and are kept as given,
      so ``dataclasses.replace(cfg, gateways=...)`` works; read them through ``f_gw``, ``F``, ``snr``.
    * ``f_gateway=1.5e9`` Hz: an industrial gateway's core. ``F_ap=4.0e9`` Hz per AP: an edge box
      shared by two gateways' top blocks and mining. With VGG16 (1.26e9 cycles) a gateway alone
      needs 0.84 s; offloading pays only on a good channel (the input is 4.8 Mbit) and when the
      AP's mining can spare the cycles, so a latency-only controller offloads in ~25% of the
      gateway-slots (u ~ 0.15).
    * ``f_min=1e7`` Hz: the smallest share worth scheduling (0.25% of an AP).
    * ``C_h=1000`` cycles per hash (software double SHA-256 costs ~1-2 kcycles) and ``t0`` for 4e6
      expected hashes: an AP mining with all of its 4 GHz finds a block every ``tau`` = 1 s at
      ``rho = 0``; both mining flat out give E[T_con] = 0.5 s.
    * ``kappa=2``: reputation ``rho`` makes the puzzle ``1 + 2 rho`` times easier (``rho = u_th``:
      1.4x); large enough to matter (pure PoW is 7% slower), small enough that meeting ``u_th``
      still costs latency, so the usual O(1/V) / O(V) trade-off holds. With a stronger stake effect
      reputation starts paying for itself and latency stops being monotone in V (``kappa = 4``:
      V = 5 beats V = 50 over 300 slots); with ``F_ap = 3e9`` (``t0`` for 3e6 hashes) and
      ``kappa = 4`` DPRA even beat the myopic controller, 3.57 vs 3.85 s, whose APs stay at ``rho = 0``.
    * ``beta=0.1``: reputation smooths over ~10 slots.
    * ``u_th=0.2``: each AP must, on average, run top blocks worth 20% of its capacity; it binds
      (myopic: ~0.15) and is feasible (everything offloaded would be 0.63 per AP).
    * ``V=0.5`` (per second of latency; ``Q`` is in units of ``u``): enough weight on the queues that
      300 slots meet the constraint, little enough that latency stays within ~1% of myopic.
    * ``tau=1`` s; ``bandwidth_hz=10e6`` (a 10 MHz Wi-Fi-like uplink); ``snr_db`` 10, 13.3, 16.7, 20 dB
      (mean SNR per gateway; Rayleigh fading on top); ``seed=0``.
    """

    gateways: int = 4
    aps: int = 2
    attach: tuple[int, ...] = ()
    f_gateway: float | tuple[float, ...] = 1.5e9
    F_ap: float | tuple[float, ...] = 4.0e9
    f_min: float = 1.0e7
    C_h: float = 1000.0
    t0: int = field(default_factory=_default_t0)
    kappa: float = 2.0
    beta: float = 0.1
    u_th: float = 0.2
    V: float = 0.5
    tau: float = 1.0
    bandwidth_hz: float = 10.0e6
    snr_db: float | tuple[float, ...] = (10.0, 13.33, 16.67, 20.0)
    seed: int = 0

    def __post_init__(self) -> None:
        def bad(name: str, what: str, got: object) -> UserError:
            return UserError(f"DPRAConfig.{name}: expected {what}, got {got!r}")

        if not isinstance(self.gateways, int) or self.gateways < 1:
            raise bad("gateways", "an int >= 1", self.gateways)
        if not isinstance(self.aps, int) or self.aps < 1:
            raise bad("aps", "an int >= 1", self.aps)
        attach = self.attach_resolved
        if len(attach) != self.gateways:
            raise bad("attach", f"one AP index per gateway ({self.gateways})", self.attach)
        if any(not isinstance(m, int | np.integer) or not 0 <= m < self.aps for m in attach):
            raise bad("attach", f"AP indices in 0..{self.aps - 1}", self.attach)
        f_gw, f_ap = self.f_gw, self.F
        _vec(self.snr_db, self.gateways, "snr_db")
        if f_gw.min() <= 0:
            raise bad("f_gateway", "frequencies > 0 Hz", self.f_gateway)
        if f_ap.min() <= 0:
            raise bad("F_ap", "frequencies > 0 Hz", self.F_ap)
        for name in ("f_min", "C_h", "tau", "bandwidth_hz", "V", "kappa", "beta", "u_th"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float | np.floating | np.integer):
                raise bad(name, "a number", value)
            if not math.isfinite(value):
                raise bad(name, "a finite number", value)
        for name in ("f_min", "C_h", "tau", "bandwidth_hz", "V"):
            if getattr(self, name) <= 0:
                raise bad(name, "a number > 0", getattr(self, name))
        if not isinstance(self.t0, int) or not 1 <= self.t0 <= MAX_TARGET:
            raise bad("t0", "an int target in 1..2^256-1", self.t0)
        if self.kappa < 0:
            raise bad("kappa", "a number >= 0", self.kappa)
        if not 0 < self.beta <= 1:
            raise bad("beta", "a number in (0, 1]", self.beta)
        if not 0 <= self.u_th <= 1:
            raise bad("u_th", "a fraction of AP capacity in [0, 1]", self.u_th)
        if not isinstance(self.seed, int | np.integer):
            raise bad("seed", "an int", self.seed)
        for m in range(self.aps):
            n = attach.count(m)
            if (n + 1) * self.f_min > f_ap[m]:
                raise UserError(
                    f"DPRAConfig.F_ap[{m}]: expected >= (gateways + 1) * f_min = {(n + 1) * self.f_min:g} "
                    f"Hz so every share can get f_min, got {f_ap[m]:g}"
                )

    @property
    def attach_resolved(self) -> tuple[int, ...]:
        """The AP of each gateway (``attach``, or round-robin ``g % aps`` when it is empty)."""
        return tuple(self.attach) if len(self.attach) else tuple(g % self.aps for g in range(self.gateways))

    @property
    def f_gw(self) -> np.ndarray:
        """Gateway frequencies (Hz), one per gateway."""
        return np.asarray(_vec(self.f_gateway, self.gateways, "f_gateway"))

    @property
    def F(self) -> np.ndarray:
        """AP capacities (Hz), one per AP."""
        return np.asarray(_vec(self.F_ap, self.aps, "F_ap"))

    @property
    def snr(self) -> np.ndarray:
        """Mean SNR of each gateway's uplink, linear."""
        return 10.0 ** (np.asarray(_vec(self.snr_db, self.gateways, "snr_db")) / 10.0)

    @property
    def ap_of(self) -> np.ndarray:
        return np.asarray(self.attach_resolved, dtype=int)


class Channel:
    """[R] Rayleigh block fading: ``|h_g(t)|^2 ~ Exp(1)`` i.i.d. per slot and gateway,
    ``r_g(t) = B log2(1 + snr_g |h_g(t)|^2)``.

    Slot ``t`` draws from its own generator seeded by ``(seed, t)``, so ``rates(t)`` is the same in
    any call order and for every method that uses the same seed.
    """

    def __init__(self, cfg: DPRAConfig) -> None:
        self.seed = int(cfg.seed)
        self.gateways = cfg.gateways
        self.bandwidth_hz = float(cfg.bandwidth_hz)
        self.snr = cfg.snr

    def gains(self, t: int) -> np.ndarray:
        """``|h_g(t)|^2`` for every gateway."""
        return np.random.default_rng((self.seed, int(t))).exponential(1.0, self.gateways)

    def rates(self, t: int) -> np.ndarray:
        """Uplink rate of every gateway in slot ``t`` (bits/s)."""
        return self.bandwidth_hz * np.log2(1.0 + self.snr * self.gains(t))


# ---------------------------------------------------------------------------- per-slot solver


@dataclass
class SlotDecision:
    """One slot's decision and what it costs (latencies in s, frequencies in Hz)."""

    s: np.ndarray  # (G,) int split points
    f_inf: np.ndarray  # (G,) AP Hz for each gateway's top blocks (0 if s = L)
    f_blk: np.ndarray  # (M,) AP Hz for mining
    latency: np.ndarray  # (G,) T_g
    consensus_latency: float  # E[T_con]
    objective: float  # V (sum T_g + E[T_con]) - sum Q u
    u: np.ndarray  # (M,) verified contribution

    @property
    def total_latency(self) -> float:
        """``sum_g T_g + E[T_con]``: the slot's system latency."""
        return float(self.latency.sum() + self.consensus_latency)


def _mining_coeff(cfg: DPRAConfig, rho: np.ndarray, kappa: float) -> tuple[np.ndarray, list[int]]:
    """``a_m = T_m / (C_h 2^256)``: blocks per second per Hz of mining, and the targets ``T_m``."""
    targets = [stake_target(cfg.t0, kappa, float(r)) for r in rho]
    return np.asarray([tg / HASH_SPACE for tg in targets]) / cfg.C_h, targets


def _pwl_root(fn: Callable[[np.ndarray], np.ndarray], kinks: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Root of a continuous, non-decreasing, piecewise-linear ``fn`` per row, exactly.

    ``kinks (K, P)`` holds every breakpoint of row ``k`` (non-finite entries are ignored), and
    ``fn(lo) <= 0 <= fn(hi)``. ``fn`` is evaluated at the sorted breakpoints; the root lies on the
    first segment where it turns non-negative, where ``fn`` is linear, so one interpolation solves it
    (the bracketing step of a bisection, done over the breakpoints, then closed).
    """
    kinks = np.where(np.isfinite(kinks), kinks, hi[:, None])
    pts = np.sort(np.concatenate([lo[:, None], np.clip(kinks, lo[:, None], hi[:, None]), hi[:, None]], axis=1), axis=1)
    vals = np.stack([fn(pts[:, j]) for j in range(pts.shape[1])], axis=1)
    rows = np.arange(len(pts))
    j = np.maximum(np.argmax(vals >= 0, axis=1), 1)
    x0, x1, y0, y1 = pts[rows, j - 1], pts[rows, j], vals[rows, j - 1], vals[rows, j]
    with np.errstate(divide="ignore", invalid="ignore"):
        x = np.where(y1 > y0, x0 - y0 * (x1 - x0) / (y1 - y0), x1)
    x = np.clip(x, x0, x1)
    x = np.where(vals[:, 0] >= 0, pts[:, 0], x)
    return np.where(vals[:, -1] < 0, hi, x)


def allocate(c: np.ndarray, a: np.ndarray, F: np.ndarray, f_min: float, ap_of: np.ndarray) -> tuple[np.ndarray, ...]:
    """Optimal AP frequencies for fixed splits, vectorised over ``K`` candidates.

    Minimises ``sum_g c_g/f_inf[g] + 1/sum_m a_m f_blk[m]`` s.t. ``sum_{g->m} f_inf[g] + f_blk[m] <= F[m]``,
    ``f >= f_min`` (module docstring: KKT, nested root finding). ``c`` is ``(K, G)`` top-block cycles,
    NaN where a gateway does not offload (its ``f_inf`` is then 0). Returns ``f_inf (K, G)``,
    ``f_blk (K, M)``, ``S (K,)`` the block rate.
    """
    c = np.atleast_2d(np.asarray(c, dtype=float))
    k, _ = c.shape
    m_count = len(F)
    offl = ~np.isnan(c)
    root_c = np.sqrt(np.where(offl, c, 0.0))
    with np.errstate(divide="ignore"):
        kink_t = np.where(offl & (root_c > 0), f_min / root_c, np.inf)  # level where f_inf leaves f_min

    # t*_m: the water level that fills F[m] - f_min when AP m mines at f_min (inf: nobody offloads
    # there, or only zero-work tops, so mining is never squeezed to f_min).
    t_star = np.full((k, m_count), np.inf)
    for m in range(m_count):
        own = ap_of == m
        off_m, rc_m = offl[:, own], root_c[:, own]
        rest = F[m] - f_min

        def fill(t: np.ndarray, off_m: np.ndarray = off_m, rc_m: np.ndarray = rc_m, rest: float = rest) -> np.ndarray:
            return np.where(off_m, np.maximum(f_min, t[:, None] * rc_m), 0.0).sum(axis=1) - rest

        big = rc_m.max(axis=1, initial=0.0)
        hi = np.where(big > 0, rest / np.where(big > 0, big, 1.0), 1.0)  # any level >= this overfills
        root = _pwl_root(fill, kink_t[:, own], np.zeros(k), hi)
        t_star[:, m] = np.where(big > 0, root, np.inf)  # fill(hi) >= 0 whenever big > 0

    sqrt_a = np.sqrt(a)

    def f_inf_at(big_s: np.ndarray) -> np.ndarray:  # (K,) -> (K, G)
        level = np.minimum(big_s[:, None] / sqrt_a[None, :], t_star)[:, ap_of]
        return np.where(offl, np.maximum(f_min, level * root_c), 0.0)

    def f_blk_at(big_s: np.ndarray) -> np.ndarray:  # (K,) -> (K, M)
        used = np.stack([f_inf_at(big_s)[:, ap_of == m].sum(axis=1) for m in range(m_count)], axis=1)
        return np.maximum(f_min, F[None, :] - used)

    # Outer: the block rate S solves S = sum_m a_m f_blk[m](S); the left side minus the right is
    # increasing and piecewise linear with kinks where a gateway leaves f_min or an AP hits t*.
    kinks = np.concatenate([kink_t * sqrt_a[ap_of][None, :], t_star * sqrt_a[None, :]], axis=1)
    lo, hi = np.full(k, f_min * a.sum()), np.full(k, float(a @ F))
    big_s = _pwl_root(lambda x: x - f_blk_at(x) @ a, kinks, lo, hi)
    f_inf, f_blk = f_inf_at(big_s), f_blk_at(big_s)
    return f_inf, f_blk, f_blk @ a


@dataclass
class _Batch:
    """Everything `solve_slot` needs for ``K`` candidate split vectors."""

    s: np.ndarray
    f_inf: np.ndarray
    f_blk: np.ndarray
    latency: np.ndarray
    t_con: np.ndarray
    u: np.ndarray
    objective: np.ndarray


def _evaluate(
    s: np.ndarray,
    wl: Workload,
    cfg: DPRAConfig,
    rates: np.ndarray,
    q: np.ndarray,
    a: np.ndarray,
    v: float,
    equal_freq: bool,
) -> _Batch:
    """Objective of candidate split vectors ``s (K, G)`` with their best (or equal) frequencies."""
    s = np.atleast_2d(s)
    big_l = wl.L
    offl = s < big_l
    w_low, w_top = wl.w_low[s], wl.w_top[s]
    local = w_low / cfg.f_gw[None, :]
    bits = wl.d[s]
    with np.errstate(divide="ignore", invalid="ignore"):
        tx = np.where(offl & (bits > 0), bits / rates[None, :], 0.0)
    ap_of, F = cfg.ap_of, cfg.F
    onehot = (ap_of[:, None] == np.arange(len(F))[None, :]).astype(float)
    c = np.where(offl, w_top, np.nan)
    if equal_freq:
        share = F[None, :] / (1.0 + offl.astype(float) @ onehot)  # (K, M): F / (offloaders + 1)
        f_inf = np.where(offl, share[:, ap_of], 0.0)
        f_blk = share
    else:
        f_inf, f_blk, _ = allocate(c, a, F, cfg.f_min, ap_of)
    with np.errstate(divide="ignore", invalid="ignore"):
        comp = np.where(offl, w_top / np.where(offl, f_inf, 1.0), 0.0)
    latency = local + tx + comp
    t_con = 1.0 / (f_blk @ a)
    u = np.where(offl, w_top, 0.0) @ onehot / (F[None, :] * cfg.tau)
    objective = v * (latency.sum(axis=1) + t_con) - u @ q
    return _Batch(s, f_inf, f_blk, latency, t_con, u, objective)


def _all_splits(big_l: int, g: int) -> np.ndarray:
    """Every split vector, lexicographic (``(L+1)^G`` rows)."""
    return np.asarray(list(itertools.product(range(big_l + 1), repeat=g)), dtype=int).reshape(-1, g)


def _pick(batch: _Batch, i: int) -> SlotDecision:
    return SlotDecision(
        s=batch.s[i].copy(),
        f_inf=batch.f_inf[i].copy(),
        f_blk=batch.f_blk[i].copy(),
        latency=batch.latency[i].copy(),
        consensus_latency=float(batch.t_con[i]),
        objective=float(batch.objective[i]),
        u=batch.u[i].copy(),
    )


def _bcd(wl: Workload, cfg: DPRAConfig, ev: Callable[[np.ndarray], _Batch]) -> SlotDecision:
    """Block coordinate descent: each step enumerates the splits of one AP's gateways (or of one
    gateway when an AP has too many), others fixed, with ``f`` re-solved exactly for each candidate."""
    big_l, g = wl.L, cfg.gateways
    blocks: list[list[int]] = []
    for m in range(cfg.aps):
        members = [i for i in range(g) if cfg.ap_of[i] == m]
        if (big_l + 1) ** len(members) <= EXACT_LIMIT:
            blocks.append(members)
        else:
            blocks.extend([i] for i in members)
    blocks = [b for b in blocks if b]
    starts = np.stack([np.full(g, big_l), np.zeros(g, dtype=int), np.full(g, big_l // 2)])
    first = ev(starts)
    i0 = int(np.argmin(first.objective))
    result = (first.objective[i0], first, i0)
    # One descent per rotation of the block order: which AP takes the work first matters (once one
    # AP offloads, the others' mining is worth more), and a single order can lock in the wrong one.
    for r in range(min(len(blocks), _BCD_ROTATIONS)):
        order = blocks[r:] + blocks[:r]
        best, cur, batch, row = first.objective[i0], starts[i0].copy(), first, i0
        for _ in range(_BCD_SWEEPS):
            before = best
            for members in order:
                sub = _all_splits(big_l, len(members))
                cand = np.repeat(cur[None, :], len(sub), axis=0)
                cand[:, members] = sub
                b = ev(cand)
                j = int(np.argmin(b.objective))
                if b.objective[j] < best:
                    best, cur, batch, row = b.objective[j], cand[j].copy(), b, j
            if abs(before - best) <= _BCD_RTOL * max(abs(best), 1e-300):
                break
        if best < result[0]:
            result = (best, batch, row)
    return _pick(result[1], result[2])


def solve_slot(
    workload: Workload,
    cfg: DPRAConfig,
    rates: np.ndarray,
    Q: np.ndarray,
    rho: np.ndarray,
    *,
    V: float | None = None,
    mode: str = "auto",
    ignore_queues: bool = False,
    equal_freq: bool = False,
    fixed_s: int | Sequence[int] | np.ndarray | None = None,
    kappa: float | None = None,
) -> SlotDecision:
    """One slot of DPRA: minimise ``V (sum_g T_g + E[T_con]) - sum_m Q_m u_m`` over ``s`` and ``f`` [R].

    ``V`` and ``kappa`` default to the config's. ``ignore_queues`` drops the queue term (myopic
    latency minimisation). ``fixed_s`` (one int for all gateways, or one per gateway) skips the split
    search. ``equal_freq`` keeps the split DPRA would choose (or ``fixed_s``) but splits each AP
    equally between its offloading gateways and mining. ``mode``: ``"exact"`` (enumerate all
    ``(L+1)^G`` split vectors), ``"bcd"`` (coordinate descent), ``"auto"`` (exact up to `EXACT_LIMIT`).
    """
    v = cfg.V if V is None else float(V)
    kap = cfg.kappa if kappa is None else float(kappa)
    if not (math.isfinite(v) and v > 0):
        raise UserError(f"V: expected a finite number > 0, got {V!r}")
    if mode not in ("auto", "exact", "bcd"):
        raise UserError(f"mode: expected one of auto, exact, bcd, got {mode!r}")
    g, m = cfg.gateways, cfg.aps
    rates = np.asarray(rates, dtype=float)
    q = np.zeros(m) if ignore_queues else np.asarray(Q, dtype=float)
    rho = np.asarray(rho, dtype=float)
    if rates.shape != (g,) or np.any(rates < 0) or np.any(np.isnan(rates)):
        raise UserError(f"rates: expected {g} rates >= 0 bits/s, got {rates}")
    if q.shape != (m,) or rho.shape != (m,):
        raise UserError(f"Q, rho: expected {m} values each, got shapes {q.shape}, {rho.shape}")
    a, _ = _mining_coeff(cfg, rho, kap)

    if fixed_s is not None:
        s = np.broadcast_to(np.asarray(fixed_s, dtype=int), (g,)).copy()
        if np.any(s < 0) or np.any(s > workload.L):
            raise UserError(f"fixed_s: expected split points in 0..{workload.L}, got {fixed_s!r}")
        return _pick(_evaluate(s[None, :], workload, cfg, rates, q, a, v, equal_freq), 0)

    def ev(cand: np.ndarray) -> _Batch:
        return _evaluate(cand, workload, cfg, rates, q, a, v, False)

    count = (workload.L + 1) ** g
    if mode == "exact" or (mode == "auto" and count <= EXACT_LIMIT):
        if count > EXACT_HARD_LIMIT:
            raise UserError(f"mode='exact': {count} split vectors is more than {EXACT_HARD_LIMIT}; use mode='bcd'")
        batch = ev(_all_splits(workload.L, g))
        best = _pick(batch, int(np.argmin(batch.objective)))
    else:
        best = _bcd(workload, cfg, ev)
    if equal_freq:
        return _pick(_evaluate(best.s[None, :], workload, cfg, rates, q, a, v, True), 0)
    return best


# ---------------------------------------------------------------------------- simulator


@dataclass(frozen=True)
class SlotState:
    """What the controller saw in slot ``t`` (before the update), for `simulate`'s ``on_slot`` hook."""

    t: int
    rates: np.ndarray  # (G,) bits/s
    Q: np.ndarray  # (M,) virtual queues
    rho: np.ndarray  # (M,) reputations
    targets: tuple[int, ...]  # (M,) PoW targets from rho (kappa of the method)
    kappa: float


@dataclass
class SimResult:
    """Per-slot histories of one method on one channel trace."""

    method: str
    u_th: float
    latency: np.ndarray  # (T,) sum_g T_g + E[T_con]
    gateway_latency: np.ndarray  # (T, G)
    consensus_latency: np.ndarray  # (T,)
    Q: np.ndarray  # (T+1, M)
    rho: np.ndarray  # (T+1, M)
    u: np.ndarray  # (T, M)
    s: np.ndarray  # (T, G)
    f_inf: np.ndarray  # (T, G)
    f_blk: np.ndarray  # (T, M)
    solve_seconds: np.ndarray  # (T,) wall time of each solve_slot call
    rates: np.ndarray  # (T, G) the channel the controller saw (bits/s)

    @property
    def avg_latency(self) -> float:
        return float(self.latency.mean())

    @property
    def avg_u(self) -> np.ndarray:
        """Time-average contribution of each AP."""
        return self.u.mean(axis=0)

    @property
    def avg_backlog(self) -> float:
        """Time average of the total virtual backlog ``sum_m Q_m(t)``, ``t = 1..T``."""
        return float(self.Q[1:].sum(axis=1).mean())

    def constraint_met(self, tol: float = 0.01) -> bool:
        """Every AP's time-average contribution is at least ``u_th - tol``."""
        return bool(np.all(self.avg_u >= self.u_th - tol))


def _method_args(method: str, wl: Workload) -> dict:
    return {
        "dpra": {},
        "myopic": {"ignore_queues": True},
        "fixed": {"fixed_s": wl.L // 2, "equal_freq": True},
        "all_offload": {"fixed_s": 0},
        "all_local": {"fixed_s": wl.L},
        "equal_freq": {"equal_freq": True},
        "pure_pow": {"kappa": 0.0},
    }[method]


def simulate(
    workload: Workload,
    cfg: DPRAConfig,
    slots: int,
    method: str = "dpra",
    *,
    on_slot: Callable[[int, SlotDecision, SlotState], None] | None = None,
    mode: str = "auto",
) -> SimResult:
    """Run ``method`` for ``slots`` slots on the seeded channel, updating queues and reputations [R].

    Every method sees the same channel realisations and the same ledger model; what differs:
    ``dpra`` the full controller; ``myopic`` ignores the queues (latency only); ``fixed`` splits every
    gateway at ``L // 2`` with equal AP shares; ``all_offload`` ``s = 0`` and ``all_local`` ``s = L``
    (APs only mine), both with optimal frequencies; ``equal_freq`` DPRA's split with equal AP shares;
    ``pure_pow`` DPRA with ``kappa = 0``. ``on_slot(t, decision, state)`` runs after each decision
    and before the queue/reputation update (the integration executes the split and writes receipts).
    """
    if method not in METHODS:
        raise UserError(f"method: expected one of {', '.join(METHODS)}, got {method!r}")
    if not isinstance(slots, int) or slots < 1:
        raise UserError(f"slots: expected an int >= 1, got {slots!r}")
    if cfg.u_th > 0:
        best_u = np.bincount(cfg.ap_of, minlength=cfg.aps) * workload.w.sum() / (cfg.F * cfg.tau)
        if np.any(best_u < cfg.u_th):
            m = int(np.argmin(best_u))
            raise UserError(
                f"u_th={cfg.u_th}: infeasible, AP {m} can earn at most u={best_u[m]:.4g} per slot "
                f"with workload {workload.name!r}; lower u_th"
            )
    args = _method_args(method, workload)
    kappa = args.get("kappa", cfg.kappa)
    channel = Channel(cfg)
    g, m = cfg.gateways, cfg.aps
    q_hist, rho_hist = np.zeros((slots + 1, m)), np.zeros((slots + 1, m))
    lat, con, secs = np.zeros(slots), np.zeros(slots), np.zeros(slots)
    gw_lat, s_hist, f_inf = np.zeros((slots, g)), np.zeros((slots, g), dtype=int), np.zeros((slots, g))
    u_hist, f_blk, rate_hist = np.zeros((slots, m)), np.zeros((slots, m)), np.zeros((slots, g))
    for t in range(slots):
        rates = rate_hist[t] = channel.rates(t)
        q, rho = q_hist[t], rho_hist[t]
        start = time.perf_counter()
        dec = solve_slot(workload, cfg, rates, q, rho, mode=mode, **args)
        secs[t] = time.perf_counter() - start
        if on_slot is not None:
            targets = tuple(stake_target(cfg.t0, kappa, float(r)) for r in rho)
            on_slot(t, dec, SlotState(t, rates.copy(), q.copy(), rho.copy(), targets, kappa))
        lat[t], con[t], gw_lat[t] = dec.total_latency, dec.consensus_latency, dec.latency
        s_hist[t], f_inf[t], f_blk[t], u_hist[t] = dec.s, dec.f_inf, dec.f_blk, dec.u
        q_hist[t + 1] = np.maximum(q + cfg.u_th - dec.u, 0.0)
        rho_hist[t + 1] = [update_reputation(float(r), float(x), cfg.beta) for r, x in zip(rho, dec.u, strict=True)]
    return SimResult(
        method, cfg.u_th, lat, gw_lat, con, q_hist, rho_hist, u_hist, s_hist, f_inf, f_blk, secs, rate_hist
    )


def v_sweep(workload: Workload, cfg: DPRAConfig, slots: int, Vs: Sequence[float]) -> list[dict]:
    """DPRA at each ``V``: the O(1/V) latency vs O(V) backlog trade-off [R]."""
    rows = []
    for v in Vs:
        res = simulate(workload, dataclasses.replace(cfg, V=float(v)), slots, "dpra")
        rows.append(
            {
                "V": float(v),
                "avg_latency": res.avg_latency,
                "avg_backlog": res.avg_backlog,
                "min_avg_u": float(res.avg_u.min()),
                "constraint_met": res.constraint_met(),
            }
        )
    return rows
