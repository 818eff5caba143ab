"""HiDP at fleet scale (issue 22): device types, the multiset chain DP, the bounded spatial search,
the anytime mode, and plan quality against the two references (FLOPs cost model: no timing).

* on clusters of up to 5 nodes the plan equals a brute force over the same design space;
* on clusters of up to 9 nodes it is never worse than HiDP as it was (node subsets enumerated);
* the work done (multisets scored, DP labels) stays bounded as the site grows to 64 nodes.
The full cross product of models, bandwidths and sizes runs in `dnninfer bench hidp-scale`.
"""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from conftest import quick_bench
from dnninfer.cost.profiles import Cluster, LinkProfile, LinkSpec, NodeSpec
from dnninfer.errors import UserError
from dnninfer.partition import chain_dp as cdp
from dnninfer.partition.costmodel import CostModel
from dnninfer.partition.fleet import fleet
from dnninfer.partition.hidp import EFFORT, plan_hidp
from dnninfer.partition.hidp_subsets import plan_hidp_brute_force, plan_hidp_subsets
from dnninfer.partition.layerwise import chain_dp
from dnninfer.partition.multiset_dp import typed_dp
from dnninfer.partition.plan import OBJECTIVES, evaluate
from dnninfer.partition.replan import with_bandwidth
from dnninfer.partition.scale import fleet_cluster, growth_exponent
from dnninfer.partition.spatial import cut_candidates

REL = 1e-9
WIFI = LinkProfile(name="wifi", bandwidth_mbps=50, rtt_ms=5, energy_nj_per_bit=125)


_CMS: dict[tuple[str, str], CostModel] = {}


def cost_model(graph_of, model: str, cluster: Cluster) -> CostModel:
    key = (model, cluster.model_dump_json())
    if key not in _CMS:
        _CMS[key] = CostModel.build(graph_of(model)[2], cluster, host="flops")
    return _CMS[key]


def pairs() -> Cluster:
    """Five nodes, two pairs of identical boards: the types are what the search runs over."""
    nodes = [NodeSpec(name="gw", device="rpi4"), NodeSpec(name="tx2a", device="jetson_tx2"),
             NodeSpec(name="xu4a", device="odroid_xu4"), NodeSpec(name="tx2b", device="jetson_tx2"),
             NodeSpec(name="xu4b", device="odroid_xu4")]
    return Cluster(name="pairs", nodes=nodes, default_link=WIFI)


# -- device types ----------------------------------------------------------------------------------


def test_fleet_groups_identical_boards_and_keeps_the_source_alone(graph_of):
    cm = cost_model(graph_of, "digits_cnn", fleet_cluster(12))
    fl = fleet(cm)
    assert fl.types[0] == ("gw",)  # the source stands alone, although two more rpi4s are in the fleet
    assert sorted(fl.counts) == [1, 2, 2, 2, 2, 3]
    assert all(len({cm.devices[n].name for n in t}) == 1 for t in fl.types)
    assert fl.materialise([0, 2, 0, 0, 0, 0]) == list(fl.types[1][:2])


def test_a_board_with_its_own_link_is_a_type_of_its_own(graph_of):
    slow = LinkProfile(name="slow", bandwidth_mbps=1, rtt_ms=50, energy_nj_per_bit=125)
    cluster = pairs().model_copy(update={"links": [LinkSpec(a="gw", b="tx2b", link=slow)]})
    types = fleet(cost_model(graph_of, "digits_cnn", cluster)).types
    assert ("tx2a",) in types and ("tx2b",) in types  # same board, different link: not interchangeable
    assert ("xu4a", "xu4b") in types  # negative control: the other pair still groups
    assert ("tx2a", "tx2b") in fleet(cost_model(graph_of, "digits_cnn", pairs())).types


# -- the chain DP over types -----------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(60))
@pytest.mark.parametrize("combine", ["sum", "max"])
def test_typed_dp_equals_the_bitmask_dp(seed, combine):
    rng = random.Random(seed)
    counts = [1] + [rng.randint(1, 3) for _ in range(rng.randint(1, 3))]
    n_blk = rng.randint(1, 7)
    type_comp = [[np.inf if rng.random() < 0.05 else rng.uniform(0, 1) for _ in range(n_blk)] for _ in counts]
    dev_type = [t for t, c in enumerate(counts) for _ in range(c)]
    members = [[d for d, t in enumerate(dev_type) if t == u] for u in range(len(counts))]
    lat = [[rng.uniform(0.001, 0.2) for _ in counts] for _ in counts]
    out_bytes = [rng.uniform(0, 5) for _ in range(n_blk)]
    caps = [rng.choice([None, rng.uniform(1, n_blk + 1)]) for _ in counts]
    kw = {"need": lambda i, j: float(j - i + 1), "max_devices": rng.choice([None, rng.randint(1, 4)])}

    def comm_dev(a, b, n):
        return lat[dev_type[a]][dev_type[b]] * n

    solver = cdp.latency_dp if combine == "sum" else cdp.bottleneck_dp
    try:
        ref = solver([type_comp[t] for t in dev_type], out_bytes, 1.0, comm_dev, 0,
                     cap=[caps[t] for t in dev_type], **kw).cost_s
    except UserError:
        ref = None
    try:
        got = typed_dp(np.array(type_comp), members, out_bytes, 1.0, lambda a, b, n: lat[a][b] * n, 0,
                       combine=combine, cap=caps, **kw)
        value = cdp.evaluate(got.stages, [type_comp[t] for t in dev_type], out_bytes, 1.0, comm_dev, 0,
                             combine=combine)
        assert got.exact and got.complete
    except UserError:
        value = None
    assert (ref is None) == (value is None)
    if ref is not None:
        assert value == pytest.approx(ref, rel=REL, abs=1e-12)


def test_a_beam_too_narrow_says_so():
    # the source does block 2 in 3 s, the pair of fast boards 5 s: its cheap early labels are the
    # ones a one-label beam keeps, and the source is then spent when block 2 comes
    comp = np.array([[2.0, 1.0, 3.0, 1.0], [5.0, 5.0, 5.0, 5.0], [2.0, 1.0, 5.0, 1.0]])
    members = [[0], [1], [2, 3]]
    exact = typed_dp(comp, members, [0.0] * 4, 0.0, lambda a, b, n: 0.0, 0, combine="max")
    narrow = typed_dp(comp, members, [0.0] * 4, 0.0, lambda a, b, n: 0.0, 0, combine="max", beam=1)
    assert exact.exact and exact.cost_s == pytest.approx(3.0)
    assert not narrow.exact and narrow.cost_s > exact.cost_s  # negative control: the beam lost, and said so


def test_a_passed_deadline_returns_the_best_plan_seen_and_says_so():
    rng = np.random.default_rng(0)
    comp, out = rng.random((4, 30)), list(rng.random(30))
    members = [[0], [1, 2, 3, 4], [5, 6, 7], [8, 9, 10, 11, 12]]
    full = typed_dp(comp, members, out, 1.0, lambda a, b, n: 0.01 * n, 0, combine="max", beam=None)
    late = typed_dp(comp, members, out, 1.0, lambda a, b, n: 0.01 * n, 0, combine="max", beam=None, deadline=0.0)
    assert full.complete and not late.complete and late.blocks_done == 0
    assert len(late.stages) == 1 and late.cost_s >= full.cost_s  # a one-stage plan: all it had seen


@pytest.mark.parametrize("objective", ["latency", "throughput"])
def test_layerwise_dp_over_a_fleet_matches_the_bitmask_dp(graph_of, objective):
    from dnninfer.partition.hidp_subsets import chain_dp as bitmask_chain_dp

    cm = cost_model(graph_of, "resnet18", fleet_cluster(7, 200.0))

    def cost(b, n):
        return cm.block_s(b, cm.default_target(n))

    typed, bitmask = chain_dp(cm, cm.nodes, cost, objective=objective), bitmask_chain_dp(
        cm, cm.nodes, cost, objective=objective)
    assert typed.exact
    assert typed.cost_s == pytest.approx(bitmask.cost_s, rel=REL)


# -- plan quality against the references ------------------------------------------------------------


SMALL = [fleet_cluster(3), fleet_cluster(4), fleet_cluster(5), pairs()]


@pytest.mark.parametrize("model", ["digits_cnn", "resnet18"])
@pytest.mark.parametrize("bw", [5.0, 100.0])
@pytest.mark.parametrize("cluster", SMALL, ids=lambda c: c.name)
def test_equals_brute_force_on_up_to_five_nodes(graph_of, model, bw, cluster):
    cm = cost_model(graph_of, model, with_bandwidth(cluster, bw))
    for objective in OBJECTIVES:
        got, ref = plan_hidp(cm, objective), plan_hidp_brute_force(cm, objective)
        assert got.search["complete"], got.search
        assert got.score(objective) == pytest.approx(ref.score(objective), rel=REL), (objective, got.reason)


@pytest.mark.parametrize(("model", "n", "bw"), [("digits_cnn", 9, 20.0), ("resnet18", 7, 5.0),
                                                ("resnet18", 9, 100.0)])
def test_never_worse_than_the_subset_search_on_up_to_nine_nodes(graph_of, model, n, bw):
    cm = cost_model(graph_of, model, fleet_cluster(n, bw))
    for objective in OBJECTIVES:
        got, old = plan_hidp(cm, objective).score(objective), plan_hidp_subsets(cm, objective).score(objective)
        assert got <= old + REL * max(1.0, abs(old)), (objective, got, old)


# -- bounded work, anytime --------------------------------------------------------------------------


def test_the_search_does_bounded_work_as_the_fleet_grows(graph_of):
    searched = {}
    for n in (16, 64):
        cm = cost_model(graph_of, "resnet18", fleet_cluster(n))
        p = plan_hidp(cm, "latency")
        searched[n] = p.search
        cuts = len(cut_candidates(cm))
        assert p.search["spatial_multisets_scored"] <= EFFORT * cuts
        assert p.search["types"] == 6
    assert searched[64]["spatial_multisets"] > 100 * searched[64]["spatial_multisets_scored"]  # far from all
    assert searched[64]["candidates"] <= 2 * searched[16]["candidates"]  # not growing with the nodes


def test_a_spent_budget_still_returns_a_plan_and_says_so(graph_of):
    cm = cost_model(graph_of, "resnet18", fleet_cluster(16))
    p = plan_hidp(cm, "latency", time_budget=1e-6)
    assert not p.search["complete"] and p.search["stopped_by"] == "time budget"
    assert "stopped by the time budget" in p.reason
    again = evaluate(cm, p.parts, strategy="x", objective="latency")
    assert again.latency_s == pytest.approx(p.latency_s)


def test_a_budget_never_does_worse_than_the_default_effort(graph_of):
    cm = cost_model(graph_of, "resnet18", fleet_cluster(5))
    default = plan_hidp(cm, "energy")
    budget = plan_hidp(cm, "energy", time_budget=60.0)
    assert default.search["complete"] and budget.search["complete"]  # small: both see everything
    assert budget.energy_j == pytest.approx(default.energy_j, rel=REL)


def test_time_budget_must_be_positive(graph_of):
    cm = cost_model(graph_of, "digits_cnn", fleet_cluster(3))
    with pytest.raises(UserError, match="time budget"):
        plan_hidp(cm, "latency", time_budget=0.0)


def test_growth_exponent_is_the_log_log_slope():
    assert growth_exponent([(n, 0.5 * n**2) for n in (3, 8, 64)]) == pytest.approx(2.0)
    assert growth_exponent([(4, 1.0)]) is None


def test_bench_reports_the_issue_keys():
    code, out = quick_bench("hidp-scale")
    assert code == 0
    ours = json.loads(out)["ours"]
    assert set(ours["plan_s"]) >= {"3", "64"} and ours["plan_s_64_nodes"] == ours["plan_s"]["64"]
    assert ours["quality_gap_vs_exhaustive"] is not None and ours["quality_gap_vs_exhaustive"] <= REL
    assert ours["cases_checked"] > 0 and ours["never_worse_than_subsets"] is True
    assert isinstance(ours["growth_exponent"], float)
