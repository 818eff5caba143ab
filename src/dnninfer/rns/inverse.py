"""Inverse calibration of the Mirage cost model: is there a set of cost constants, each within the range
its sources allow, that reproduces the paper's three ratios at once?

The forward model (rns/photonic.py, kept as is) turns cited constants into ratios (ours: 2.2x speed,
5.6x EDP, 0.39x power: 2.6x *more*, against 23.8x / 32.1x / 42.8x less). Here the direction is
reversed: every numeric cost constant gets a search range (``RANGES``: the span of the sources cited
for it, or, where only one source is cited, that value times or divided by ``ONE_SOURCE_FACTOR``), and
``scipy.optimize.differential_evolution`` looks for the set whose modelled ratios are closest to the
targets in log space (``max |log(ours / target)|`` must fall within ``rtol``). Design choices (moduli,
h, rows, clocks, array size, precision) are fixed: they are choices, not constants with sources.

The search is fast because the constants enter the model only through per-event energies, static
powers and areas: every event count (tiles, readouts, bytes moved) and every cycle count depends on
the design alone, so ``FastModel`` counts them once per workload and re-prices them per candidate.
It reprices through the forward model's own ``MirageCore``/``SystolicArray`` methods, and a test
checks it equals ``photonic.compare`` (tests/rns/test_rns_inverse.py).

A structural bound explains the answer for the paper's targets under our iso-energy reading (equal
power): per workload ``EDP_SA / EDP_M = (P_SA / P_M) * (T_SA / T_M)^2 >= speedup^2`` since
``P_M <= P_SA``, so a mean speedup of 23.8 forces a mean EDP ratio of at least 23.8^2 = 566
(Jensen), not 32.1. No constant set can meet all three; the search says so and reports the closest
set, and each pair of targets is searched on its own to show which two can be met and where the
constants must then sit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import differential_evolution, minimize

from dnninfer.rns.photonic import (
    CONFIGS,
    PAPER,
    Config,
    MirageCore,
    SystolicArray,
    Workload,
    _with_constants,
    load_config,
)

__all__ = ["ONE_SOURCE_FACTOR", "RANGES", "TARGETS", "CalibrationResult", "FastModel", "Range", "calibrate",
           "inverse_calibration"]

#: The paper's three ratios (SA / photonic): speedup and EDP at iso-energy, power at iso-area.
TARGETS = {k: float(PAPER[k]) for k in ("speedup_iso_energy", "edp_ratio_iso_energy", "power_ratio_iso_area")}
#: Where a constant has one cited source, its range is value / 3 .. value * 3 (dB and dBm figures:
#: +- 10 log10(3) = 4.8 dB; a wall-plug efficiency is capped at 1). A stated, not a sourced, factor.
ONE_SOURCE_FACTOR = 3.0
_LT = "Lightening-Transformer (HPCA 2024) hardware_simulator, commit 642cab0"
_HZ = "Horowitz ISSCC 2014 (45 nm)"


@dataclass(frozen=True)
class Range:
    """A constant's search range and where it comes from. ``kind``: ``log`` (a positive quantity,
    searched in log space) or ``db`` (a level in dB/dBm, searched linearly)."""

    config: str
    key: str
    lo: float
    hi: float
    source: str
    kind: str = "log"

    @property
    def name(self) -> str:
        return f"{self.config}.{self.key}"

    def to_x(self, v: float) -> float:
        return math.log(v) if self.kind == "log" else v

    def from_x(self, x: float) -> float:
        return math.exp(x) if self.kind == "log" else x


def _one_source(config: str, key: str, value: float, source: str, kind: str = "log", cap: float | None = None
                ) -> Range:
    if kind == "db" and value < 0:  # a level (dBm): shift by the factor in dB
        d = 10 * math.log10(ONE_SOURCE_FACTOR)
        return Range(config, key, value - d, value + d, f"one source ({source}); +- {d:.1f} dB stated", "db")
    hi = value * ONE_SOURCE_FACTOR if cap is None else min(cap, value * ONE_SOURCE_FACTOR)
    return Range(config, key, value / ONE_SOURCE_FACTOR, hi,
                 f"one source ({source}); x/÷{ONE_SOURCE_FACTOR:g} stated", kind)


def _ranges() -> tuple[Range, ...]:
    """Every numeric cost constant the forward model reads, with its range (values from configs/photonic)."""
    mirage, systolic, memory = (load_config(n) for n in CONFIGS)
    m, s, mem = mirage.constants, systolic.constants, memory.constants
    two = [
        # two LT device files: MZI modulator (default.yaml, 450 fJ/bit, 1.2 dB) and ring modulator
        # (Bs_mrr_bank_8bit.yaml, 42 fJ/bit, 0.95 dB); the cited value is the MZI one
        Range("mirage", "modulator_energy_fj_per_bit", 42.0, 450.0,
              f"{_LT}: device_params/Bs_mrr_bank_8bit.yaml mrr_modulator 42 .. default.yaml mzi_modulator 450"),
        Range("mirage", "modulator_insertion_loss_db", 0.95, 1.2,
              f"{_LT}: Bs_mrr_bank_8bit.yaml mrr_modulator 0.95 dB .. default.yaml mzi_modulator 1.2 dB"),
    ]
    single_lt = ("adc_power_mw", "adc_area_um2", "dac_power_mw", "dac_area_um2", "photodetector_power_mw",
                 "photodetector_area_um2", "tia_power_mw", "tia_area_um2", "laser_area_um2",
                 "phase_shifter_insertion_loss_db", "phase_shifter_area_um2", "y_branch_insertion_loss_db")
    out = list(two)
    out += [_one_source("mirage", k, float(m[k].value), _LT) for k in single_lt]
    out.append(_one_source("mirage", "photodetector_sensitivity_dbm", float(m["photodetector_sensitivity_dbm"].value),
                           _LT, kind="db"))
    out.append(_one_source("mirage", "laser_wall_plug_efficiency", float(m["laser_wall_plug_efficiency"].value), _LT,
                           cap=1.0))
    out += [_one_source("mirage", k, float(m[k].value), _HZ)
            for k in ("int8_add_pj", "int8_mult_pj", "int32_add_pj", "fp32_add_pj", "digital_area_per_output_um2")]
    prec = "fp32" if systolic["precision"] == "fp32" else "fp16"
    out += [_one_source("systolic", f"{prec}_{k}", float(s[f"{prec}_{k}"].value), _HZ)
            for k in ("mult_pj", "add_pj", "mult_area_um2", "add_area_um2")]
    out.append(_one_source("systolic", "pe_register_bytes_per_mac", float(s["pe_register_bytes_per_mac"].value),
                           "[R] our reading of a weight-stationary PE"))
    out += [_one_source("memory", k, float(mem[k].value), f"{_LT} default.yaml arch.datamovement (CACTI)")
            for k in ("sram_pj_per_2bytes", "rf_pj_per_2bytes")]
    return tuple(out)


RANGES: tuple[Range, ...] = _ranges()
#: Not searched: reference points of scaling laws (ADC/DAC bits and rates, laser bits model), whose
#: effect the power figures already span, and DRAM energy, which the model does not charge.
FIXED = ("adc_bits_ref", "adc_rate_gsps", "dac_bits_ref", "dac_rate_gsps", "laser_bits_model", "dram_pj_per_2bytes")


# -- the fast forward model -----------------------------------------------------------------------------
@dataclass
class _Counts:
    """Design-only quantities of one workload (events, bytes, cycles), priced per candidate."""

    sa_time: float
    sa_macs: int
    sa_bytes: float
    m_drive: float
    m_dac: float
    m_adc: float
    m_conv: float
    m_crt: float
    m_bytes: float
    tiles: np.ndarray  # per GEMM
    per_tile_cycles: np.ndarray  # count * (rows + load) per GEMM
    candidates: np.ndarray  # iso-energy array counts, as photonic.iso_energy_arrays
    cand_time: np.ndarray

    def time(self, arrays: int, f: float) -> float:
        return float(np.sum(np.ceil(self.tiles / arrays) * self.per_tile_cycles)) / f


class FastModel:
    """``photonic.compare``'s three mean ratios as a function of the cost constants, for fixed workloads
    and design. ``ratios({name: value})`` -> dict; names are ``config.key`` as in ``RANGES``."""

    def __init__(self, workloads: Sequence[Workload], configs: dict[str, Config] | None = None) -> None:
        self.configs = configs or {n: load_config(n) for n in CONFIGS}
        self.core = MirageCore(self.configs["mirage"], self.configs["memory"])
        self.sa = SystolicArray(self.configs["systolic"], self.configs["memory"])
        self.counts = [self._count(w) for w in workloads]

    def _count(self, w: Workload) -> _Counts:
        core, sa = self.core, self.sa
        c, n = core.cfg, core.n
        load = core.rows * c["weight_load_cycles_per_row"]
        r, cc = int(sa.cfg["rows"]), int(sa.cfg["cols"])
        sa_cycles = sa_bytes = 0.0
        d = dict.fromkeys(("drive", "dac", "adc", "conv", "crt", "bytes"), 0.0)
        tiles, per = [], []
        for g in w.gemms:
            kt_s, nt_s = math.ceil(g.red / r), math.ceil(g.cols / cc)
            sa_cycles += g.count * kt_s * nt_s * (g.rows + r + cc - 2)
            sa_bytes += g.count * (g.rows * g.red * nt_s * sa.bytes + g.red * g.cols * sa.bytes
                                   + g.rows * g.cols * (2 * kt_s - 1) * 4)
            kt, nt = math.ceil(g.red / core.h), math.ceil(g.cols / core.rows)
            t = kt * nt
            tiles.append(t)
            per.append(g.count * (g.rows + load))
            d["drive"] += n * g.count * t * g.rows * core.h * core.rows
            d["dac"] += n * g.count * t * core.h * core.rows * core.k
            d["adc"] += n * g.count * t * g.rows * core.rows * core.q
            d["conv"] += g.count * (g.rows * g.red + g.red * g.cols) * n
            d["crt"] += g.count * g.rows * g.cols * kt
            d["bytes"] += g.count * (g.rows * g.red * nt * core.bfp_bytes + g.red * g.cols * core.bfp_bytes
                                     + g.rows * g.cols * (2 * kt - 1) * 4)
        tiles_a, per_a = np.array(tiles, float), np.array(per, float)
        top = max(tiles)
        cands = np.array(sorted(a for a in {1, top, *(round(1.25**i) for i in range(int(math.log(top, 1.25)) + 2))}
                                if a <= top), float)
        cand_time = np.array([np.sum(np.ceil(tiles_a / a) * per_a) for a in cands]) / core.f
        return _Counts(sa_cycles / (sa.cfg["clock_ghz"] * 1e9), w.macs, sa_bytes, d["drive"], d["dac"], d["adc"],
                       d["conv"], d["crt"], d["bytes"], tiles_a, per_a, cands, cand_time)

    def cores(self, values: dict[str, float]) -> tuple[SystolicArray, MirageCore]:
        """The forward model's cores with ``values`` (``config.key``) in place of the cited constants."""
        per: dict[str, dict[str, float]] = {n: {} for n in CONFIGS}
        for name, v in values.items():
            cfg, key = name.split(".", 1)
            per[cfg][key] = v
        cf = {n: _with_constants(self.configs[n], **per[n]) if per[n] else self.configs[n] for n in CONFIGS}
        return SystolicArray(cf["systolic"], cf["memory"]), MirageCore(cf["mirage"], cf["memory"])

    def ratios(self, values: dict[str, float]) -> dict[str, float]:
        sa, core = self.cores(values)
        c, mem = core.cfg, core.mem
        sram = mem["sram_pj_per_2bytes"] / 2 * 1e-12
        rf = mem["rf_pj_per_2bytes"] / 2 * 1e-12
        e_drive = c["switching_activity"] * c["modulator_energy_fj_per_bit"] * 1e-15
        e_crt = (core.n * 1.5 * c["int8_mult_pj"] + (2 * core.n + 1) * c["int32_add_pj"] + c["fp32_add_pj"]) * 1e-12
        e_adc, e_dac = core.adc_energy(), core.dac_energy()
        p_static = core.n * core.static_power_per_array()
        a1 = core.area_mm2(1)
        sa_area = int(sa.cfg["rows"]) * int(sa.cfg["cols"]) * sa.pe_area_um2 * 1e-6
        speed, edp, power = [], [], []
        for k in self.counts:
            e_sa = (k.sa_macs * sa.e_mac_pj * 1e-12 + k.sa_macs * sa.cfg["pe_register_bytes_per_mac"] * rf
                    + k.sa_bytes * sram)
            p_sa = e_sa / k.sa_time
            dyn = (k.m_drive * e_drive + k.m_dac * e_dac + k.m_adc * e_adc + k.m_conv * c["int8_add_pj"] * 1e-12
                   + k.m_crt * e_crt + k.m_bytes * sram)
            a_area = max(1, int(sa_area // a1))
            t_area = k.time(a_area, core.f)
            power.append(p_sa / ((dyn + p_static * a_area * t_area) / t_area))
            p_cand = (dyn + p_static * k.candidates * k.cand_time) / k.cand_time
            ok = p_cand <= p_sa
            if not ok.any():
                continue
            i = int(np.argmin(np.where(ok, k.cand_time, np.inf)))
            t, e = k.cand_time[i], dyn + p_static * k.candidates[i] * k.cand_time[i]
            speed.append(k.sa_time / t)
            edp.append(e_sa * k.sa_time / (e * t))
        nan = float("nan")
        return {"speedup_iso_energy": float(np.mean(speed)) if speed else nan,
                "edp_ratio_iso_energy": float(np.mean(edp)) if edp else nan,
                "power_ratio_iso_area": float(np.mean(power))}


# -- the search -----------------------------------------------------------------------------------------
@dataclass
class CalibrationResult:
    exists: bool
    targets: dict[str, float]
    reached: dict[str, float]
    max_log_error: float
    values: dict[str, float]
    ranges: dict[str, Range] = field(repr=False, default_factory=dict)
    cited: dict[str, float] = field(default_factory=dict)

    def constants(self) -> dict[str, dict[str, Any]]:
        """Each searched constant: value found, cited value, range, source, distance from the cited value
        (``factor`` = found / cited, or ``offset_db``), its place in the range (0 = lo, 1 = hi) and
        whether it sits at an edge (within 2 % of the range), i.e. where the fit pushes it."""
        out = {}
        for name, v in self.values.items():
            r, cv = self.ranges[name], self.cited[name]
            pos = (r.to_x(v) - r.to_x(r.lo)) / (r.to_x(r.hi) - r.to_x(r.lo))
            dist = {"factor_from_cited": v / cv} if r.kind == "log" else {"offset_db_from_cited": v - cv}
            out[name] = {"value": v, "cited": cv, "range": [r.lo, r.hi], "source": r.source, **dist,
                         "position_in_range": pos, "at_edge": "lo" if pos < 0.02 else "hi" if pos > 0.98 else None}
        return out

    def summary(self) -> dict[str, Any]:
        return {"exists": self.exists, "targets": self.targets, "reached": self.reached,
                "max_log_error": self.max_log_error, "constants": self.constants()}


def calibrate(model: FastModel, targets: dict[str, float], *, ranges: Sequence[Range] = RANGES,
              fixed: dict[str, float] | None = None, rtol: float = 0.02, seed: int = 0, maxiter: int = 200,
              popsize: int = 12) -> CalibrationResult:
    """Search ``ranges`` for constants whose ratios meet every ``targets`` entry within ``rtol``.

    Objective: the sum over targets of ``log(ours / target)^2`` (scale-free; a target missed by 2x
    costs the same above as below), minimised by ``scipy.optimize.differential_evolution`` (global,
    derivative-free: the array counts make the model piecewise), then polished by Powell. ``exists``
    iff the best set meets every target within ``rtol``; ``fixed`` pins other constants."""
    fixed = dict(fixed or {})
    lo = np.array([r.to_x(r.lo) for r in ranges])
    hi = np.array([r.to_x(r.hi) for r in ranges])
    names = [r.name for r in ranges]
    keys = list(targets)
    goal = np.log(np.array([targets[k] for k in keys]))

    def errors(x: np.ndarray) -> np.ndarray:
        got = model.ratios({**fixed, **{n: r.from_x(v) for n, r, v in zip(names, ranges, x, strict=True)}})
        vals = np.array([got[k] for k in keys])
        return np.where(np.isfinite(vals) & (vals > 0), np.log(np.abs(vals) + 1e-300) - goal, 10.0)

    def objective(x: np.ndarray) -> float:
        return float(np.sum(errors(x) ** 2))

    res = differential_evolution(objective, list(zip(lo, hi, strict=True)), seed=seed, maxiter=maxiter,
                                 popsize=popsize, tol=1e-10, atol=(math.log1p(rtol) / 4) ** 2 / len(keys),
                                 polish=False, init="sobol")
    # polish: Powell (derivative-free, bounded) from the best member, for the last digits DE leaves
    local = minimize(objective, res.x, method="Powell", bounds=list(zip(lo, hi, strict=True)),
                     options={"xtol": 1e-6, "ftol": 1e-12, "maxfev": 20000})
    x = local.x if local.fun <= res.fun else res.x
    err = errors(x)
    values = {n: r.from_x(v) for n, r, v in zip(names, ranges, x, strict=True)}
    got = model.ratios({**fixed, **values})
    cited = {r.name: float(model.configs[r.config].constants[r.key].value) for r in ranges}
    worst = float(np.max(np.abs(err)))
    return CalibrationResult(worst <= math.log1p(rtol), dict(targets), {k: got[k] for k in keys}, worst, values,
                             {r.name: r for r in ranges}, cited)


def inverse_calibration(workloads: Sequence[Workload], *, seed: int = 0, maxiter: int = 200, popsize: int = 12,
                        pairs: bool = True) -> dict[str, Any]:
    """The bench's figure: the all-three search, each pair of targets alone (``pairs``), and the
    structural bound."""
    model = FastModel(workloads)
    full = calibrate(model, TARGETS, seed=seed, maxiter=maxiter, popsize=popsize)
    found: dict[str, Any] = {}
    keys = list(TARGETS)
    for i in range(3 if pairs else 0):
        for j in range(i + 1, 3):
            sub = {keys[i]: TARGETS[keys[i]], keys[j]: TARGETS[keys[j]]}
            r = calibrate(model, sub, seed=seed, maxiter=maxiter, popsize=popsize)
            found[f"{keys[i]}+{keys[j]}"] = {
                "exists": r.exists, "reached": r.reached, "max_log_error": r.max_log_error,
                "at_edge": {n: c["at_edge"] for n, c in r.constants().items() if c["at_edge"]},
                "factor_from_cited": {n: c.get("factor_from_cited", c.get("offset_db_from_cited"))
                                      for n, c in r.constants().items()}}
    s = TARGETS["speedup_iso_energy"]
    return {
        **full.summary(),
        "cited_ratios": model.ratios({}),
        "rtol": 0.02,
        "workloads": [w.name for w in workloads],
        "one_source_factor": ONE_SOURCE_FACTOR,
        "structural_bound": {
            "edp_ratio_iso_energy_min": s * s,
            "why": "at iso-energy (equal power) EDP_SA/EDP_M = (P_SA/P_M) (T_SA/T_M)^2 >= speedup^2 per "
                   "workload, so a mean speedup of 23.8 needs a mean EDP ratio >= 566 (Jensen), not 32.1",
        },
        "pairs": found,
        "search": {"method": "scipy.optimize.differential_evolution + Powell polish", "seed": seed,
                   "maxiter": maxiter, "popsize": popsize, "constants_searched": len(RANGES)},
    }
