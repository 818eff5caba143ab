"""Cost model: device, link and cluster profiles, measured per-node latency, latency prediction
and the energy model every planner scores its plans with (research/partitioning.md §5.5, §6.1).

    profiles  DeviceProfile / LinkProfile / Cluster from configs/*.yaml (validated, cited)
    measure   profile(graph) -> LatencyProfile: per-node medians on this host, cached
    predict   fit(samples) -> LatencyModel; predict(graph, device, pu) -> seconds per node
    energy    energy(device, busy_s, wall_s), link_energy(link, nbytes), cluster_energy(...)
"""

from dnninfer.cost.energy import EnergyBreakdown, cluster_energy, energy, energy_breakdown, link_energy
from dnninfer.cost.measure import LatencyProfile, graph_key, profile
from dnninfer.cost.predict import (
    Coeffs,
    LatencyModel,
    Sample,
    fit,
    fit_from_graphs,
    input_bytes,
    predict,
    predict_host,
    samples_from_profile,
)
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

__all__ = [
    "Cluster", "Coeffs", "DeviceProfile", "EnergyBreakdown", "LatencyModel", "LatencyProfile",
    "LinkProfile", "LinkSpec", "NodeSpec", "ProcessingUnit", "Sample", "cluster_energy", "configs_dir",
    "energy", "energy_breakdown", "fit", "fit_from_graphs", "graph_key", "input_bytes", "link_energy",
    "list_clusters", "list_devices", "load_cluster", "load_device", "predict", "predict_host", "profile",
    "samples_from_profile",
]
