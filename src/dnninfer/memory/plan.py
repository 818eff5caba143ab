"""`MemoryPlan`: what every planner returns and the executor runs (research report §4 "Planners").

Two addressing modes:

* ``linear`` (naive, tflm, tinyengine): each tensor is the byte range
  ``[offsets[t], offsets[t] + size)`` of the pool; in-place steps share their input's offset.
* ``circular`` (vmcu, vmcu_fused): the pool of ``peak_bytes = P`` bytes is a circle (§1.2 item 1).
  Tensor ``t`` starts at virtual address ``offsets[t]`` inside an *arc* ``arcs[t] = (base, length)``;
  byte ``i`` of it lives at physical ``(base + (offsets[t] + i) mod length) mod P``. The outer arc is
  ``(0, P)``; a pinned residual input splits off a nested arc of length ``P - |skip|`` (§1.2 item 5).

* ``patch`` (patch): the circular pool of ``P`` bytes again, and a `PatchSpec`: the first steps run
  patch by patch (MCUNetV2), their per-patch buffers in a nested arc and every kernel's scratch
  inside the pool too, so ``scratch_bytes`` is 0 and ``peak_bytes`` is everything.

Activation bytes (``peak_bytes``) and kernel scratch (``scratch_bytes``: depthwise plane, output-row
tile, line buffer) are separate columns, and ``accounting`` says what is counted (§1.4: state the
convention next to every number).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

KIB = 1024
PLAN_VERSION = 1
STEP_KINDS = ("layer", "inplace_dw", "fused_ib", "patched")
MODES = ("linear", "circular", "patch")


@dataclass(frozen=True)
class Step:
    """One kernel call of the plan: a single layer, an in-place depthwise, or a fused IB block.

    vMCU fields: ``shift`` = d (input VA minus output VA, bytes), ``footprint`` = F (live window,
    including a pinned skip of ``pinned`` bytes), ``scratch`` = bytes of tile/line buffer/plane.
    """

    layers: tuple[int, ...]
    kind: str = "layer"
    shift: int = 0
    footprint: int = 0
    scratch: int = 0
    pinned: int = 0

    def __post_init__(self) -> None:
        if self.kind not in STEP_KINDS:
            raise ValueError(f"Step: kind {self.kind!r} not in {STEP_KINDS}")

    def to_dict(self) -> dict[str, Any]:
        return {"layers": list(self.layers), "kind": self.kind, "shift": self.shift,
                "footprint": self.footprint, "scratch": self.scratch, "pinned": self.pinned}


@dataclass(frozen=True)
class PatchSpec:
    """The patched prefix of a ``patch`` plan (`dnninfer.memory.patch`; MCUNetV2, Lin et al. 2021).

    The first ``len(units)`` steps (a fused inverted-bottleneck block is one step) run once per
    patch of the ``exit`` tensor, patch rows ``rows`` x patch columns ``cols`` in row-major order;
    each patch recomputes its halo. Per patch ``k``: ``local_va[k][u]`` is where step ``u``'s output
    (all but the last, which writes ``exit`` itself) starts in the patch-buffer arc ``local_arc``
    (base, length), and ``scratch_at[k][u]`` is the pool offset of step ``u``'s scratch;
    ``tail_scratch_at[j]`` that of tail step ``j``. ``shift`` is the band-level overlap of the
    input and the exit tensor (the exit starts ``shift`` bytes below the input). ``macs`` counts
    multiply-accumulates with the halos recomputed, ``base_macs`` layer by layer.
    """

    units: tuple[tuple[int, ...], ...]
    exit: int
    rows: tuple[tuple[int, int], ...]
    cols: tuple[tuple[int, int], ...]
    shift: int
    local_arc: tuple[int, int]
    local_va: tuple[tuple[int, ...], ...]
    scratch_at: tuple[tuple[int, ...], ...]
    tail_scratch_at: tuple[int, ...]
    macs: int
    base_macs: int

    @property
    def n(self) -> int:
        return len(self.units)

    @property
    def p(self) -> int:
        return len(self.rows)

    @property
    def q(self) -> int:
        return len(self.cols)

    @property
    def mac_overhead(self) -> float:
        """MACs executed over MACs layer by layer (MCUNetV2's cost of recomputing halos)."""
        return self.macs / self.base_macs if self.base_macs else 1.0

    def to_dict(self) -> dict[str, Any]:
        return {k: (v if isinstance(v, int) else _lists(v)) for k, v in self.__dict__.items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PatchSpec:
        return cls(**{k: (v if isinstance(v, int) else _tuples(v)) for k, v in d.items()})


def _lists(v: Any) -> Any:
    return [_lists(x) for x in v] if isinstance(v, tuple) else v


def _tuples(v: Any) -> Any:
    return tuple(_tuples(x) for x in v) if isinstance(v, list) else v


@dataclass(frozen=True)
class MemoryPlan:
    """A static activation-memory plan for one IR (bytes throughout; KiB = 1024 B in `*_kib`)."""

    planner: str
    peak_bytes: int
    scratch_bytes: int
    mode: str  # "linear" | "circular"
    offsets: Mapping[int, int]
    sizes: Mapping[int, int]  # tensor -> bytes as planned (aligned); only tensors that live in the pool
    steps: tuple[Step, ...]
    # bytes held while each layer runs: planned sizes of the live tensors (linear plans; naive and tflm
    # therefore share a curve and differ in peak), or the footprint F of the kernel running it (circular)
    live_per_layer: tuple[int, ...]
    accounting: Mapping[str, Any] = field(default_factory=dict)
    arcs: Mapping[int, tuple[int, int]] = field(default_factory=dict)
    patch: PatchSpec | None = None  # mode "patch" only

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"MemoryPlan: mode {self.mode!r} not in {MODES}")
        if (self.mode == "patch") != (self.patch is not None):
            raise ValueError("MemoryPlan: a PatchSpec goes with mode 'patch' and only with it")
        if self.peak_bytes < 0 or self.scratch_bytes < 0:
            raise ValueError("MemoryPlan: negative byte counts")
        if self.mode == "linear":
            for t, off in self.offsets.items():
                if off < 0 or off + self.sizes[t] > self.peak_bytes:
                    raise ValueError(f"MemoryPlan: tensor {t} [{off}, {off + self.sizes[t]}) outside the "
                                     f"{self.peak_bytes}-byte pool")
        else:
            for t, (base, length) in self.arcs.items():
                if not (0 <= base < max(self.peak_bytes, 1) and 0 < length <= self.peak_bytes):
                    raise ValueError(f"MemoryPlan: tensor {t} arc {(base, length)} outside the pool")

    @property
    def peak_kib(self) -> float:
        return self.peak_bytes / KIB

    @property
    def scratch_kib(self) -> float:
        return self.scratch_bytes / KIB

    @property
    def total_bytes(self) -> int:
        """Activation pool plus scratch: the bytes the executor allocates (once)."""
        return self.peak_bytes + self.scratch_bytes

    def summary(self) -> str:
        return f"{self.planner}: {self.peak_kib:.1f} KiB activations (+{self.scratch_kib:.1f} KiB scratch)"

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": PLAN_VERSION,
            "planner": self.planner,
            "peak_bytes": self.peak_bytes,
            "scratch_bytes": self.scratch_bytes,
            "mode": self.mode,
            "offsets": {str(k): v for k, v in self.offsets.items()},
            "sizes": {str(k): v for k, v in self.sizes.items()},
            "arcs": {str(k): list(v) for k, v in self.arcs.items()},
            "steps": [s.to_dict() for s in self.steps],
            "live_per_layer": list(self.live_per_layer),
            "accounting": dict(self.accounting),
            **({"patch": self.patch.to_dict()} if self.patch is not None else {}),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MemoryPlan:
        if d.get("version") != PLAN_VERSION:
            raise ValueError(f"MemoryPlan.from_dict: expected version {PLAN_VERSION}, got {d.get('version')!r}")
        return cls(
            planner=d["planner"],
            peak_bytes=int(d["peak_bytes"]),
            scratch_bytes=int(d["scratch_bytes"]),
            mode=d["mode"],
            offsets={int(k): int(v) for k, v in d["offsets"].items()},
            sizes={int(k): int(v) for k, v in d["sizes"].items()},
            steps=tuple(Step(tuple(s["layers"]), s["kind"], s["shift"], s["footprint"], s["scratch"], s["pinned"])
                        for s in d["steps"]),
            live_per_layer=tuple(d["live_per_layer"]),
            accounting=dict(d["accounting"]),
            arcs={int(k): (int(v[0]), int(v[1])) for k, v in d["arcs"].items()},
            patch=PatchSpec.from_dict(d["patch"]) if d.get("patch") is not None else None,
        )


def align_up(n: int, alignment: int) -> int:
    """``n`` rounded up to a multiple of ``alignment`` (TFLM's AlignSizeUp)."""
    return -(-n // alignment) * alignment


def accounting(*, alignment: int = 1, scratch: str, **extra: Any) -> dict[str, Any]:
    """The accounting convention printed next to every peak (§1.4)."""
    return {
        "unit": "bytes",
        "input_included": True,
        "output_included": True,
        "weights": "excluded (flash)",
        "scratch": f"separate column: {scratch}",
        "alignment": alignment,
        "im2col": "not counted",
        **extra,
    }


def live_bytes(segments: list[tuple[int, int, int]], n_layers: int) -> tuple[int, ...]:
    """Bytes held at each layer, from ``(first, last, size)`` segments with inclusive lifetimes."""
    live = [0] * n_layers
    for first, last, size in segments:
        for t in range(first, last + 1):
            live[t] += size
    return tuple(live)
