"""Per-request stage clock and the ``X-Stage-Timings`` / ``Server-Timing`` headers.

The paper's central measurement is where end-to-end latency goes (decode, resize, normalise, data
movement, queueing, the DNN itself). A request carries a ``StageClock``; every stage ends with
``mark(stage)``, which charges the time since the previous mark, so the stages tile the request
without gaps and add up to ``total`` by construction (research notes §2.3 item 1).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

__all__ = [
    "DNN_STAGES",
    "STAGES",
    "StageClock",
    "format_server_timing",
    "format_stage_header",
    "parse_stage_header",
]

#: Stages of a classification request, in order. ``queue`` is the wait for the batcher (zero in
#: the naive pipeline), ``post`` is post-processing plus the hand-back to the request.
STAGES: tuple[str, ...] = ("receive", "decode", "resize", "normalise", "queue", "infer", "post", "serialise")
#: Stages of the two-DNN request: the detector's stages, then crop extraction, the broker hops
#: (there and back) and the second DNN (its own queueing and inference).
TWO_STAGE_STAGES: tuple[str, ...] = ("receive", "decode", "resize", "normalise", "queue", "infer", "crop",
                                     "broker", "classify", "post", "serialise")
#: Stages that are the DNN itself; everything else is the "beyond inference" overhead.
DNN_STAGES: frozenset[str] = frozenset({"infer", "classify"})

HEADER = "X-Stage-Timings"


@dataclass
class StageClock:
    """Contiguous stage durations of one request, in seconds."""

    start: float = field(default_factory=time.perf_counter)
    stages: dict[str, float] = field(default_factory=dict)
    _last: float = 0.0

    def __post_init__(self) -> None:
        self._last = self.start

    def mark(self, stage: str, now: float | None = None) -> float:
        """End ``stage`` at ``now`` (default: this instant); charge it the time since the last mark."""
        now = time.perf_counter() if now is None else now
        dt = max(0.0, now - self._last)
        self.stages[stage] = self.stages.get(stage, 0.0) + dt
        self._last = max(self._last, now)
        return dt

    def split(self, parts: dict[str, float], now: float | None = None) -> None:
        """End several stages at once: the interval since the last mark is divided among ``parts``
        (seconds each, measured elsewhere, e.g. in the batcher thread); the last part absorbs the
        rounding so the tiling stays exact."""
        now = time.perf_counter() if now is None else now
        span = max(0.0, now - self._last)
        names = list(parts)
        used = 0.0
        for name in names[:-1]:
            dt = min(max(0.0, parts[name]), span - used)
            self.stages[name] = self.stages.get(name, 0.0) + dt
            used += dt
        self.stages[names[-1]] = self.stages.get(names[-1], 0.0) + (span - used)
        self._last = max(self._last, now)

    @property
    def total(self) -> float:
        return self._last - self.start

    def ms(self) -> dict[str, float]:
        return {k: v * 1e3 for k, v in self.stages.items()}


def format_stage_header(stages_s: dict[str, float], total_s: float) -> str:
    """``receive=0.210;decode=1.204;...;total=25.118`` (milliseconds, 3 decimals)."""
    parts = [f"{k}={v * 1e3:.3f}" for k, v in stages_s.items()]
    parts.append(f"total={total_s * 1e3:.3f}")
    return ";".join(parts)


def format_server_timing(stages_s: dict[str, float], total_s: float) -> str:
    """The same figures as a W3C ``Server-Timing`` header (browser dev tools show it)."""
    parts = [f"{k};dur={v * 1e3:.3f}" for k, v in stages_s.items()]
    parts.append(f"total;dur={total_s * 1e3:.3f}")
    return ", ".join(parts)


def parse_stage_header(value: str | None) -> dict[str, float]:
    """Inverse of ``format_stage_header``: stage -> milliseconds (``total`` included)."""
    out: dict[str, float] = {}
    if not value:
        return out
    for part in value.split(";"):
        name, sep, num = part.partition("=")
        if sep:
            try:
                out[name.strip()] = float(num)
            except ValueError:
                continue
    return out
