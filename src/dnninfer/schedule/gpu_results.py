"""GPU figures the GPU check recorded (``docs/results/gpu/*.json``, copies of a run's
``gpu_check.json``), for benches run where there is no GPU.

A bench on a machine without CUDA never measures a GPU figure and never passes one off as its own:
it shows the latest recorded run's figures with the machine, date and file they come from
(``gpu_source``, and a note), or null with the reason when none is recorded. Dry runs (fake
backend) are never read as figures.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["RESULTS_ENV", "SCHEMA", "Recorded", "latest_recorded", "no_record_note", "recorded_part", "results_dir"]

RESULTS_ENV = "DNNINFER_GPU_RESULTS"
SCHEMA = "dnninfer.gpu_check/1"  #: what gpu_check.py writes, and the only files read here


def results_dir() -> Path:
    """``$DNNINFER_GPU_RESULTS`` or the checkout's ``docs/results/gpu``."""
    env = os.environ.get(RESULTS_ENV)
    return Path(env) if env else Path(__file__).resolve().parents[3] / "docs" / "results" / "gpu"


@dataclass(frozen=True)
class Recorded:
    """One recorded GPU check: where it came from and its ``ours`` figures per part."""

    path: Path
    date: str
    machine: str
    torch: str
    ours: Mapping[str, Any]

    def source(self) -> dict[str, Any]:
        return {"measured_here": False, "file": _shown(self.path), "date": self.date, "machine": self.machine,
                "torch": self.torch}

    def note(self) -> str:
        return (f"recorded by the GPU check on {self.machine} (torch {self.torch}) on {self.date}, "
                f"{_shown(self.path)}; not measured in this run")


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path(__file__).resolve().parents[3]))
    except ValueError:
        return str(path)


def _load(path: Path) -> Recorded | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA or data.get("dry_run") or not data.get("date"):
        return None
    machine = (data.get("machine") or {}).get("name") if isinstance(data.get("machine"), dict) else data.get("machine")
    return Recorded(path, str(data["date"]), str(machine or "unknown GPU"), str(data.get("torch") or "?"),
                    data.get("ours") or {})


def latest_recorded(root: Path | None = None) -> Recorded | None:
    """The most recent recorded (non-dry) GPU check under ``root``, or None."""
    folder = root if root is not None else results_dir()
    found = [r for p in sorted(folder.glob("*.json")) if (r := _load(p)) is not None] if folder.is_dir() else []
    return max(found, key=lambda r: r.date) if found else None


def no_record_note(root: Path | None = None) -> str:
    return f"no GPU check recorded in {_shown(root if root is not None else results_dir())}/"


def recorded_part(part: str, keys: Iterable[str], root: Path | None = None) -> dict[str, Any]:
    """``keys`` of the latest recorded run's ``ours[part]`` (null where absent), with ``gpu_source``
    and ``gpu_note``; all null with a note when nothing is recorded."""
    rec = latest_recorded(root)
    if rec is None:
        return {**dict.fromkeys(keys), "gpu_source": None,
                "gpu_note": f"no GPU figure: none measured in this run and {no_record_note(root)}"}
    figures = rec.ours.get(part) or {}
    return {**{k: figures.get(k) for k in keys}, "gpu_source": rec.source(), "gpu_note": rec.note()}
