"""Analytical model: a Mirage-style photonic RNS core vs a weight-stationary systolic array (SA).

What is modelled (research note §2.5, §2.9; every constant is read from ``configs/photonic/*.yaml``,
each with its source; entries marked [R] there are our reconstruction):

* Workload: the three GEMMs of every matrix product in one training step (forward ``(M, K, N)``,
  grad of the left operand ``(M, N, K)``, of the right one ``(N, M, K)``; an operand computed from
  no parameter, such as the model input, needs no gradient), read from the captured Graph: conv,
  linear and the attention matmuls (Q K^T, P V) alike (graph/ops.py `matmuls`), at a training batch.
* SA: ``R x C`` PEs at ``f``; cycles ``ceil(K/R) ceil(N/C) (M + R + C - 2)``; energy per MAC = one
  FP32 (or FP16/bf16) multiply + add + PE register traffic; SRAM traffic for the streamed operand (once
  per column tile), the stationary operand and the partial sums (once per reduction tile).
* Photonic core: per modulus ``arrays`` MMVMUs of ``rows`` MDPUs of length ``h``; weight-stationary,
  ``ceil(K/h) ceil(N/rows)`` weight tiles shared by the arrays, ``M + rows`` cycles per tile (stream +
  weight programming). Energy: phase-segment drive per MMU input (dynamic), weight DACs per tile,
  ADC per readout (I/Q), receivers and CW laser as static power per array (laser from the detector
  sensitivity and the waveguide's insertion loss, as in the Lightening-Transformer simulator), digital
  BFP/forward conversion per operand element and CRT + FP32 accumulation per tile output, and SRAM
  traffic with BFP operands (b-bit mantissas + a shared 8-bit exponent per block).

The paper's comparisons, as we read them [R]:
* **iso-area**: the photonic core gets as many arrays as fit in the SA's area; Mirage reports 42.8x
  lower power with comparable or better EDP.
* **iso-energy**: both cores get the same energy budget per unit time, i.e. the photonic core gets as
  many arrays as keep its power within the SA's (equal energy per training step is no constraint on
  either design: both spend an almost size-independent energy per MAC, so "same energy" only pins a
  size through a rate); Mirage reports > 23.8x faster training and 32.1x lower EDP. Under this reading
  the EDP ratio is the speedup times the energy ratio, which equals the speedup at equal power.
Both are averaged over workloads (arithmetic mean of per-workload ratios), like the paper's "on
average across several DNNs". These are modelled, not measured, numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch import nn

from dnninfer.errors import UserError
from dnninfer.graph import Graph, capture, matmuls
from dnninfer.graph.core import COMPUTE_OPS

__all__ = [
    "PAPER",
    "Config",
    "Cost",
    "Gemm",
    "MirageCore",
    "SystolicArray",
    "Workload",
    "compare",
    "graph_gemms",
    "load_config",
    "sensitivity",
    "training_gemms",
    "workload",
]

PAPER = {
    "speedup_iso_energy": 23.8,
    "edp_ratio_iso_energy": 32.1,
    "power_ratio_iso_area": 42.8,
    "edp_iso_area": "comparable or better",
    "source": "Mirage abstract (Demirkiran, Yang, Bunandar, Joshi; ISCA 2024 pp. 73-87; arXiv 2311.17323): on "
              "average across several DNNs vs systolic arrays",
}
CONFIGS = ("mirage", "systolic", "memory")


# -- configs -----------------------------------------------------------------------------------------
class Constant(BaseModel):
    """One number (or choice) with its unit and where it comes from."""

    model_config = ConfigDict(extra="forbid")
    value: float | int | str | list[int]
    unit: str = ""
    source: str = Field(min_length=8)
    note: str | None = None


class Config(BaseModel):
    """A ``configs/photonic/*.yaml`` file: design choices and device constants, all cited."""

    model_config = ConfigDict(extra="forbid")
    name: str
    description: str
    design: dict[str, Constant]
    constants: dict[str, Constant]

    def __getitem__(self, key: str) -> Any:
        if key in self.design:
            return self.design[key].value
        return self.constants[key].value

    def entries(self) -> dict[str, Constant]:
        return {**self.design, **self.constants}

    def with_design(self, **overrides: Any) -> Config:
        """A copy with some design values replaced (sweeps, tests); sources are kept, marked."""
        design = dict(self.design)
        for k, v in overrides.items():
            if k not in design:
                raise UserError(f"{self.name}: unknown design key {k!r}; expected one of {', '.join(design)}")
            design[k] = design[k].model_copy(update={"value": v, "source": design[k].source + " (overridden)"})
        return self.model_copy(update={"design": design})


def photonic_dir() -> Path:
    from dnninfer.cost.profiles import configs_dir

    return configs_dir() / "photonic"


def load_config(name_or_path: str | Path) -> Config:
    """``mirage``, ``systolic``, ``memory`` (files in configs/photonic) or a path to a YAML file."""
    raw = str(name_or_path)
    path = Path(raw) if raw.endswith((".yaml", ".yml")) or "/" in raw else photonic_dir() / f"{raw}.yaml"
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: expected a photonic config (one of {', '.join(CONFIGS)} or a .yaml path), "
                        "got no such file") from None
    except yaml.YAMLError as e:
        raise UserError(f"{path}: expected valid YAML, got a syntax error ({str(e).splitlines()[0]})") from None
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise UserError(f"{path}: {loc}: {err['msg']}") from None


# -- workloads ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Gemm:
    """``(rows x red) @ (red x cols)``, `count` times; the (red x cols) operand is the stationary one.

    `kind`: ``fwd``, ``dx`` (gradient of an activation) or ``dw`` (gradient of a parameter).
    """

    rows: int
    red: int
    cols: int
    kind: str = "fwd"
    count: int = 1

    @property
    def macs(self) -> int:
        return self.rows * self.red * self.cols * self.count


@dataclass(frozen=True)
class Workload:
    name: str
    batch: int
    gemms: tuple[Gemm, ...]

    @property
    def macs(self) -> int:
        return sum(g.macs for g in self.gemms)


def _trainable(graph: Graph) -> set[str]:
    """Values a training step differentiates: trainable parameters and everything computed from one
    (the model's inputs, and values made from inputs alone, need no gradient)."""
    params = {name for name, p in graph.gm.named_parameters() if p.requires_grad}
    out: set[str] = set()
    for node in graph.gm.graph.nodes:
        if node.op == "get_attr":
            if str(node.target) in params:
                out.add(node.name)
        elif node.op in COMPUTE_OPS:
            own = node.op == "call_module" and any(
                p.requires_grad for p in graph.gm.get_submodule(str(node.target)).parameters())
            if own or any(a.name in out for a in node.all_input_nodes):
                out.add(node.name)
    return out


def graph_gemms(graph: Graph, batch: int = 1) -> list[Gemm]:
    """The forward and backward GEMMs of one training step over a captured graph, in node order.

    Every matrix product the graph performs (graph/ops.py `matmuls`: conv, linear, and the
    activation matmuls of attention, Q K^T and P V) gives its forward GEMM ``(M, K, N)``, the
    gradient of its left operand ``(M, N, K)`` and of its right operand ``(N, M, K)`` ("dw" for a
    parameter, "dx" for an activation), each only if that operand needs a gradient. `batch`
    rescales a batch-1 capture (the batch multiplies pixels/rows, or the count of batched matmuls).
    """
    trainable = _trainable(graph)
    gemms: list[Gemm] = []
    for info in graph.compute_nodes():
        for mm in matmuls(graph, info.name):
            mm = mm.scaled(batch) if batch != 1 else mm
            gemms.append(Gemm(mm.m, mm.k, mm.n, "fwd", mm.count))
            if mm.a_param or any(v in trainable for v in mm.a):
                gemms.append(Gemm(mm.m, mm.n, mm.k, "dw" if mm.a_param else "dx", mm.count))
            if mm.b_param or any(v in trainable for v in mm.b):
                gemms.append(Gemm(mm.n, mm.m, mm.k, "dw" if mm.b_param else "dx", mm.count))
    return gemms


def training_gemms(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> list[Gemm]:
    """The forward, grad-input and grad-weight GEMMs of one training step of `model` on `inputs`,
    read from its captured graph (`graph_gemms`); the model's train/eval mode is left as it was."""
    was_training = model.training
    try:
        graph = capture(model, inputs, name=type(model).__name__)
    finally:
        model.train(was_training)
    return graph_gemms(graph)


#: Workloads (zoo model, training batch): CNNs at 32 ImageNet images, BERT at 8 sequences of 128.
#: Depthwise-separable nets (mobilenet_v2) are left out of the default set: both cores would run each
#: depthwise group as its own tiny GEMM, which measures the mapping, not the arithmetic.
WORKLOADS = {"resnet18": 32, "resnet50": 32, "vgg16": 32, "bert_encoder": 8}


def workload(name: str, batch: int | None = None) -> Workload:
    """GEMMs of one training step of a zoo model (shapes from a batch-1 pass, rows scaled by batch)."""
    from dnninfer import zoo

    batch = batch or WORKLOADS.get(name, 32)
    graph = capture(zoo.build_model(name), zoo.example_inputs(name, batch=1), name=name)
    return Workload(name, batch, tuple(graph_gemms(graph, batch)))


# -- costs -------------------------------------------------------------------------------------------
@dataclass
class Cost:
    """One training step on one accelerator."""

    time_s: float
    energy_j: float
    area_mm2: float
    macs: int
    breakdown_j: dict[str, float] = field(default_factory=dict)
    units: int = 0  # PEs (SA) or arrays per modulus (photonic)

    @property
    def power_w(self) -> float:
        return self.energy_j / self.time_s

    @property
    def edp(self) -> float:
        return self.energy_j * self.time_s

    @property
    def pj_per_mac(self) -> float:
        return self.energy_j / self.macs * 1e12

    def summary(self) -> dict[str, Any]:
        return {"time_ms": self.time_s * 1e3, "energy_mj": self.energy_j * 1e3, "power_w": self.power_w,
                "area_mm2": self.area_mm2, "pj_per_mac": self.pj_per_mac, "units": self.units,
                "breakdown_pj_per_mac": {k: v / self.macs * 1e12 for k, v in self.breakdown_j.items()}}


class SystolicArray:
    """Weight-stationary digital array (configs/photonic/systolic.yaml + memory.yaml)."""

    def __init__(self, cfg: Config | None = None, mem: Config | None = None) -> None:
        self.cfg = cfg or load_config("systolic")
        self.mem = mem or load_config("memory")
        prec = self.cfg["precision"]
        if prec not in ("fp32", "bf16"):
            raise UserError(f"systolic precision: expected fp32 or bf16, got {prec!r}")
        c = self.cfg
        p = "fp32" if prec == "fp32" else "fp16"
        self.e_mac_pj = c[f"{p}_mult_pj"] + c[f"{p}_add_pj"]
        self.pe_area_um2 = c[f"{p}_mult_area_um2"] + c[f"{p}_add_area_um2"]
        self.bytes = 4 if prec == "fp32" else 2

    def cost(self, gemms: tuple[Gemm, ...] | list[Gemm], rows: int | None = None, cols: int | None = None) -> Cost:
        r = rows or int(self.cfg["rows"])
        c = cols or int(self.cfg["cols"])
        f = self.cfg["clock_ghz"] * 1e9
        sram = self.mem["sram_pj_per_2bytes"] / 2 * 1e-12
        rf = self.mem["rf_pj_per_2bytes"] / 2 * 1e-12
        cycles = 0
        e_mac = e_reg = e_mem = 0.0
        macs = 0
        for g in gemms:
            kt, nt = math.ceil(g.red / r), math.ceil(g.cols / c)
            cycles += g.count * kt * nt * (g.rows + r + c - 2)
            mm = g.macs
            macs += mm
            e_mac += mm * self.e_mac_pj * 1e-12
            e_reg += mm * self.cfg["pe_register_bytes_per_mac"] * rf
            moved = g.rows * g.red * nt * self.bytes + g.red * g.cols * self.bytes + g.rows * g.cols * (2 * kt - 1) * 4
            e_mem += g.count * moved * sram
        breakdown = {"mac": e_mac, "pe_registers": e_reg, "sram": e_mem}
        return Cost(cycles / f, sum(breakdown.values()), r * c * self.pe_area_um2 * 1e-6, macs, breakdown, r * c)


class MirageCore:
    """Photonic RNS core with ``arrays`` MMVMUs per modulus (configs/photonic/mirage.yaml + memory.yaml)."""

    def __init__(self, cfg: Config | None = None, mem: Config | None = None) -> None:
        self.cfg = cfg or load_config("mirage")
        self.mem = mem or load_config("memory")
        c = self.cfg
        self.moduli = [int(m) for m in c["moduli"]]
        self.n = len(self.moduli)
        self.k = max(math.ceil(math.log2(m)) for m in self.moduli)  # converter bits per channel
        self.h = int(c["h"])
        self.rows = int(c["rows"])
        self.f = c["clock_ghz"] * 1e9
        self.q = int(c["quadratures"])
        b = int(c["mantissa_bits"])
        worst = self.h * (2 ** (b - 1) - 1) ** 2
        if worst > (math.prod(self.moduli) - 1) // 2:
            raise UserError(f"mirage config: h={self.h} with {b}-bit mantissas overflows moduli {self.moduli}")
        self.bfp_bytes = (b + 8 / self.h) / 8  # mantissa + shared 8-bit exponent per block

    # per-event energies (J) and static powers (W), from the cited scaling laws
    def adc_energy(self) -> float:
        c = self.cfg
        p_mw = c["adc_power_mw"] * (self.k / c["adc_bits_ref"]) * (self.f / 1e9 / c["adc_rate_gsps"])  # SAR: P ~ N f
        return p_mw * 1e-3 / self.f

    def dac_energy(self) -> float:
        c = self.cfg
        ref = 2 ** c["dac_bits_ref"] / c["dac_bits_ref"]
        return c["dac_power_mw"] * 1e-3 * (2**self.k / self.k) / ref / (c["dac_rate_gsps"] * 1e9)  # P ~ 2^N/N f

    def insertion_loss_db(self) -> float:
        c = self.cfg
        split = math.log2(max(self.rows * self.q, 1)) * c["y_branch_insertion_loss_db"]
        return c["modulator_insertion_loss_db"] + self.h * c["phase_shifter_insertion_loss_db"] + split

    def laser_power_per_detector(self) -> float:
        c = self.cfg
        dbm = c["photodetector_sensitivity_dbm"] + self.insertion_loss_db()
        return 10 ** (dbm / 10) * 1e-3 / c["laser_wall_plug_efficiency"] * 2**self.k

    def static_power_per_array(self) -> float:
        """CW laser + receivers (two photodiodes and a TIA per quadrature) of one MMVMU."""
        c = self.cfg
        detectors = self.rows * self.q
        receivers = detectors * (2 * c["photodetector_power_mw"] + c["tia_power_mw"]) * 1e-3
        return receivers + detectors * self.laser_power_per_detector()

    def area_mm2(self, arrays: int) -> float:
        c = self.cfg
        per_channel = (self.rows * self.h * c["phase_shifter_area_um2"]
                       + self.rows * self.q * (c["adc_area_um2"] + c["tia_area_um2"] + 2 * c["photodetector_area_um2"])
                       + self.h * self.k * c["dac_area_um2"] + c["laser_area_um2"])
        digital = self.rows * c["digital_area_per_output_um2"]
        return arrays * (self.n * per_channel + digital) * 1e-6

    def cost(self, gemms: tuple[Gemm, ...] | list[Gemm], arrays: int = 1) -> Cost:
        c = self.cfg
        sram = self.mem["sram_pj_per_2bytes"] / 2 * 1e-12
        e_drive_mmu = c["switching_activity"] * c["modulator_energy_fj_per_bit"] * 1e-15
        e_adc, e_dac = self.adc_energy(), self.dac_energy()
        # CRT per tile output: n products r_i * c_i, n adds, n - 1 conditional subtracts (sum < n*M), the
        # sign mapping, and one FP32 accumulate of the rescaled result
        e_crt = (self.n * 1.5 * c["int8_mult_pj"] + (2 * self.n + 1) * c["int32_add_pj"] + c["fp32_add_pj"]) * 1e-12
        load = self.rows * c["weight_load_cycles_per_row"]
        cycles = 0
        parts = dict.fromkeys(("drive", "weight_dac", "adc", "static", "digital", "sram"), 0.0)
        macs = 0
        for g in gemms:
            kt, nt = math.ceil(g.red / self.h), math.ceil(g.cols / self.rows)
            tiles = kt * nt
            cycles += g.count * math.ceil(tiles / arrays) * (g.rows + load)
            macs += g.macs
            padded = g.count * tiles * g.rows * self.h * self.rows
            parts["drive"] += self.n * padded * e_drive_mmu
            parts["weight_dac"] += self.n * g.count * tiles * self.h * self.rows * self.k * e_dac
            parts["adc"] += self.n * g.count * tiles * g.rows * self.rows * self.q * e_adc
            conv = (g.rows * g.red + g.red * g.cols) * self.n * c["int8_add_pj"] * 1e-12
            parts["digital"] += g.count * (conv + g.rows * g.cols * kt * e_crt)
            moved = (g.rows * g.red * nt * self.bfp_bytes + g.red * g.cols * self.bfp_bytes
                     + g.rows * g.cols * (2 * kt - 1) * 4)
            parts["sram"] += g.count * moved * sram
        t = cycles / self.f
        parts["static"] = self.n * arrays * self.static_power_per_array() * t
        return Cost(t, sum(parts.values()), self.area_mm2(arrays), macs, parts, arrays)


# -- the paper's comparisons ---------------------------------------------------------------------------
def _max_tiles(core: MirageCore, gemms: tuple[Gemm, ...]) -> int:
    return max(math.ceil(g.red / core.h) * math.ceil(g.cols / core.rows) for g in gemms)


def iso_area_arrays(core: MirageCore, area_mm2: float) -> int:
    return max(1, int(area_mm2 // core.area_mm2(1)))


def iso_energy_arrays(core: MirageCore, gemms: tuple[Gemm, ...], power_w: float) -> int | None:
    """The fastest array count whose average power over the step stays within ``power_w`` (None if
    even one array exceeds it). Candidates: 1 .. the workload's largest tile count, 25 % apart."""
    top = _max_tiles(core, gemms)
    cands = sorted({1, top, *(round(1.25**i) for i in range(int(math.log(top, 1.25)) + 2))})
    best, best_t = None, math.inf
    for a in (a for a in cands if a <= top):
        cost = core.cost(gemms, a)
        if cost.power_w <= power_w and cost.time_s < best_t:
            best, best_t = a, cost.time_s
    return best


def compare(workloads: list[Workload], sa: SystolicArray | None = None, core: MirageCore | None = None,
            ) -> dict[str, Any]:
    """Per-workload and mean ratios (SA / photonic) under iso-area and iso-energy. Deterministic."""
    sa = sa or SystolicArray()
    core = core or MirageCore()
    rows = []
    for w in workloads:
        base = sa.cost(w.gemms)
        a_area = iso_area_arrays(core, base.area_mm2)
        m_area = core.cost(w.gemms, a_area)
        a_energy = iso_energy_arrays(core, w.gemms, base.power_w)
        m_energy = core.cost(w.gemms, a_energy) if a_energy else None
        rows.append({
            "workload": w.name, "batch": w.batch, "gmacs": w.macs / 1e9,
            "sa": base.summary(),
            "iso_area": {"arrays": a_area, "speedup": base.time_s / m_area.time_s,
                         "power_ratio": base.power_w / m_area.power_w, "edp_ratio": base.edp / m_area.edp,
                         "energy_ratio": base.energy_j / m_area.energy_j, "photonic": m_area.summary()},
            "iso_energy": None if m_energy is None else {
                "arrays": a_energy, "speedup": base.time_s / m_energy.time_s, "edp_ratio": base.edp / m_energy.edp,
                "energy_ratio": base.energy_j / m_energy.energy_j, "power_ratio": base.power_w / m_energy.power_w,
                "area_ratio": m_energy.area_mm2 / base.area_mm2, "photonic": m_energy.summary()},
        })

    def mean(scenario: str, key: str) -> float | None:
        vals = [r[scenario][key] for r in rows if r[scenario] is not None]
        return sum(vals) / len(vals) if vals else None

    return {
        "speedup_iso_energy": mean("iso_energy", "speedup"),
        "edp_ratio_iso_energy": mean("iso_energy", "edp_ratio"),
        "power_ratio_iso_area": mean("iso_area", "power_ratio"),
        "edp_ratio_iso_area": mean("iso_area", "edp_ratio"),
        "speedup_iso_area": mean("iso_area", "speedup"),
        "photonic_pj_per_mac": sum(r["iso_area"]["photonic"]["pj_per_mac"] for r in rows) / len(rows),
        "sa_pj_per_mac": sum(r["sa"]["pj_per_mac"] for r in rows) / len(rows),
        "workloads": [r["workload"] for r in rows],
        "per_workload": rows,
        "design": {"mirage": {k: v.value for k, v in core.cfg.design.items()},
                   "systolic": {k: v.value for k, v in sa.cfg.design.items()}},
    }


#: Single-knob departures from the default constants, to show what drives the ratios (the paper's
#: device table is not public). Each is (label, mirage design overrides, mirage constant overrides,
#: systolic design overrides).
SENSITIVITY: tuple[tuple[str, dict[str, Any], dict[str, float], dict[str, Any]], ...] = (
    ("default", {}, {}, {}),
    ("MRR-class phase segments (42 fJ/bit)", {}, {"modulator_energy_fj_per_bit": 42.0}, {}),
    ("1 quadrature readout", {"quadratures": 1}, {}, {}),
    ("k=6 moduli {63,64,65}, h=32", {"moduli": [63, 64, 65], "h": 32}, {}, {}),
    ("systolic array in bf16", {}, {}, {"precision": "bf16"}),
)


def _with_constants(cfg: Config, **values: float) -> Config:
    consts = dict(cfg.constants)
    for k, v in values.items():
        consts[k] = consts[k].model_copy(update={"value": v, "source": consts[k].source + " (sensitivity)"})
    return cfg.model_copy(update={"constants": consts})


def sensitivity(workloads: list[Workload]) -> list[dict[str, Any]]:
    """The headline ratios under each entry of ``SENSITIVITY`` (same workloads, deterministic)."""
    out = []
    mirage, systolic, memory = (load_config(n) for n in CONFIGS)
    for label, m_design, m_consts, s_design in SENSITIVITY:
        core = MirageCore(_with_constants(mirage.with_design(**m_design), **m_consts), memory)
        sa = SystolicArray(systolic.with_design(**s_design), memory)
        r = compare(workloads, sa, core)
        out.append({"variant": label, **{k: r[k] for k in ("speedup_iso_energy", "edp_ratio_iso_energy",
                                                             "power_ratio_iso_area", "edp_ratio_iso_area",
                                                             "photonic_pj_per_mac", "sa_pj_per_mac")}})
    return out
