"""Cost model: device, link and cluster profiles, measured per-node latency, latency prediction
and the energy model every planner scores its plans with (research/partitioning.md §5.5, §6.1).

    profiles  DeviceProfile / LinkProfile / Cluster from configs/*.yaml (validated, cited)
    measure   profile(graph) -> LatencyProfile: per-node medians on this host, cached
    predict   fit(samples) -> LatencyModel; predict(graph, device, pu) -> seconds per node
    energy    energy(device, busy_s, wall_s), link_energy(link, nbytes), cluster_energy(...)

Profiles and energy are imported here; measure and predict (torch, scipy) only on first use of
one of their names, so reading a device profile (``dnninfer devices``) never imports torch.
"""

import importlib
import sys
import types
from typing import Any

from dnninfer.cost.energy import EnergyBreakdown, cluster_energy, energy, energy_breakdown, link_energy
from dnninfer.cost.profiles import (
    Cluster,
    DeviceProfile,
    LinkProfile,
    LinkSpec,
    NodeSpec,
    ProcessingUnit,
    configs_dir,
    list_clusters,
    list_devices,
    load_cluster,
    load_device,
)

#: Names served from a submodule on first use (the submodule is imported then).
_LAZY = {
    **dict.fromkeys(("LatencyProfile", "graph_key", "profile"), "measure"),
    **dict.fromkeys(("Coeffs", "LatencyModel", "Sample", "fit", "fit_from_graphs", "input_bytes", "predict",
                     "predict_host", "samples_from_profile"), "predict"),
}

__all__ = [
    "Cluster", "Coeffs", "DeviceProfile", "EnergyBreakdown", "LatencyModel", "LatencyProfile",
    "LinkProfile", "LinkSpec", "NodeSpec", "ProcessingUnit", "Sample", "cluster_energy", "configs_dir",
    "energy", "energy_breakdown", "fit", "fit_from_graphs", "graph_key", "input_bytes", "link_energy",
    "list_clusters", "list_devices", "load_cluster", "load_device", "predict", "predict_host", "profile",
    "samples_from_profile",
]


class _Cost(types.ModuleType):
    """The package module. ``predict`` names both a submodule and a function: importing the
    submodule binds the module on the package, so the lazy names are resolved here first, and
    ``from dnninfer.cost import predict`` is the function whatever was imported before (as it was
    when this package imported everything eagerly)."""

    def __getattribute__(self, name: str) -> Any:
        where = _LAZY.get(name)
        if where is not None:
            return getattr(importlib.import_module(f"dnninfer.cost.{where}"), name)
        return super().__getattribute__(name)

    def __getattr__(self, name: str) -> Any:  # a submodule not imported yet (``dnninfer.cost.measure``)
        try:
            return importlib.import_module(f"dnninfer.cost.{name}")
        except ModuleNotFoundError:
            raise AttributeError(f"module 'dnninfer.cost' has no attribute {name!r}") from None

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(_LAZY))


sys.modules[__name__].__class__ = _Cost
