
"""Spatial tiling: stripes with halos must reproduce the untiled model exactly, on chains and DAGs."""

from __future__ import annotations

import functools
import itertools

import networkx as nx
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from torch import nn

from dnninfer import zoo
from dnninfer.errors import UserError
from dnninfer.graph import capture, shared_writes
from dnninfer.partition.tiles import (
    is_row_local,
    region_of_blocks,
    row_local_blocks,
    tile,
    tile_cost,
)

SHARES = [(1.0,), (1.0, 1.0), (1.0, 2.0, 3.0), (3.0, 1.0, 1.0, 1.0, 2.0)]


def close(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def run(graph, *inputs):
    with torch.no_grad():
        return graph(*inputs)


def check_tiling(graph, region, shares, inputs, ref):
    """Tile, compare with the reference, and check the structure every planner relies on."""
    tl = tile(graph, region, shares)
    out = run(tl.graph, *inputs)
    if isinstance(ref, tuple):
        for a, b in zip(out, ref, strict=True):
            close(a, b)
    else:
        close(out, ref)
    k = len(shares)
    assert len(tl.scatter) == len(tl.tiles) == k
    region_set = set(tl.region)
    assert region_set == set(region)
    kept = [n.name for n in graph.compute_nodes() if n.name not in region_set]
    new = {n.name for n in tl.graph.compute_nodes()}
    made = [*(n for s in tl.scatter for n in s), *(n for t in tl.tiles for n in t), *tl.gather]
    assert len(made) == len(set(made))
    assert new == set(kept) | set(made)
    assert set(tl.origin) == {n for t in tl.tiles for n in t}
    for name in kept:  # untouched nodes keep name and op
        assert tl.graph.nodes[name].target == graph.nodes[name].target
    return tl


# -- hand-built stacks ---------------------------------------------------------------------------


class Branchy(nn.Module):
    """A small DAG: residual add, channel cat, functional pools, in-place relu, mul, ReLU6, BN, dropout."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.a = nn.Conv2d(4, 4, 3, padding=2, dilation=2)
        self.b = nn.Conv2d(4, 4, 1)
        self.c = nn.Conv2d(4, 2, 5, padding=2, groups=2)
        self.drop = nn.Dropout(0.5)
        self.act = nn.ReLU6()
        with torch.no_grad():
            self.bn.running_mean.uniform_(-0.5, 0.5)
            self.bn.running_var.uniform_(0.5, 1.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.relu(self.bn(self.stem(x)), inplace=True)
        r = self.a(s) + self.b(s)
        p = F.max_pool2d(r, 3, stride=1, padding=1, ceil_mode=True)
        q = F.avg_pool2d(r, 3, stride=1, padding=1)
        m = torch.cat([p, q * r, self.act(self.c(s))], 1)
        return self.drop(m)


def _stacks() -> dict[str, nn.Module]:
    return {
        "conv_pool": nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, ceil_mode=True),
            nn.Conv2d(4, 4, 5, stride=2, padding=2, dilation=2), nn.AvgPool2d(3, 1, 1),
            nn.Conv2d(4, 4, 3, groups=4, padding=1), nn.Conv2d(4, 3, 1)),
        "stride_pad0": nn.Sequential(
            nn.Conv2d(3, 4, 7, stride=2), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 2, 3, padding=2),
            nn.AvgPool2d(3, stride=1, ceil_mode=True), nn.Conv2d(2, 2, 1, stride=2)),
        "same_even_kernel": nn.Sequential(
            nn.Conv2d(3, 3, 4, padding="same"), nn.Hardswish(), nn.Conv2d(3, 3, (3, 2), padding="valid"),
            nn.MaxPool2d(3, stride=2, padding=1, dilation=2), nn.Conv2d(3, 2, 3, padding=(2, 1))),
        "pad_only_rows": nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), nn.Conv2d(3, 2, 1, padding=1)),
        "branchy": Branchy(),
    }


@functools.cache
def stack(name: str, h: int, w: int):
    torch.manual_seed(0)
    model = _stacks()[name].eval()
    x = torch.randn(1, 3, h, w)
    g = capture(model, (x,), name=name)
    return g, x, run(model, x)


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("size", [(31, 29), (17, 23)])
@pytest.mark.parametrize("name", ["conv_pool", "stride_pad0", "same_even_kernel", "pad_only_rows", "branchy"])
@pytest.mark.parametrize("shares", SHARES)
def test_stacks_tile_exactly(name, size, shares):
    g, x, ref = stack(name, *size)
    region = [n.name for n in g.compute_nodes()]
    assert all(is_row_local(g, n) for n in region)
    rows = g.nodes[region[-1]].shape[2]
    if len(shares) > rows:
        with pytest.raises(UserError, match="rows"):
            tile(g, region, shares)
        return
    check_tiling(g, region, shares, (x,), ref)


@st.composite
def layer(draw: st.DrawFn) -> nn.Module:
    kind = draw(st.sampled_from(["conv", "conv", "max", "avg"]))
    if kind == "conv":
        k = draw(st.sampled_from([1, 3, 5, 7]))
        return nn.Conv2d(3, 3, k, stride=draw(st.sampled_from([1, 2])), padding=draw(st.integers(0, k // 2 + 1)),
                         dilation=draw(st.sampled_from([1, 2])), groups=draw(st.sampled_from([1, 3])))
    k = draw(st.sampled_from([2, 3]))
    s, p = draw(st.sampled_from([1, 2])), draw(st.integers(0, k // 2))
    if kind == "max":
        return nn.MaxPool2d(k, s, p, dilation=draw(st.sampled_from([1, 2])), ceil_mode=draw(st.booleans()))
    return nn.AvgPool2d(k, s, p)


@settings(max_examples=30, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(layers=st.lists(layer(), min_size=1, max_size=4), h=st.integers(9, 33), w=st.integers(5, 12),
       shares=st.lists(st.floats(0.1, 3.0), min_size=1, max_size=5))
def test_random_conv_pool_chains_tile_exactly(layers, h, w, shares):
    torch.manual_seed(0)
    model = nn.Sequential(*layers).eval()
    x = torch.randn(1, 3, h, w)
    try:
        ref = run(model, x)
    except RuntimeError:  # the stack shrank the image to nothing
        assume(False)
    assume(ref.shape[2] >= len(shares) and ref.shape[3] >= 1)
    g = capture(model, (x,))
    check_tiling(g, [n.name for n in g.compute_nodes()], shares, (x,), ref)


class InplaceOnInput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c(x.add_(1.0))


def test_in_place_ops_never_write_into_shared_rows():
    """Halo rows are read by two tiles: an in-place op on a scatter view would apply twice."""
    torch.manual_seed(0)
    model = InplaceOnInput().eval()
    x = torch.randn(1, 3, 12, 7)
    g = capture(model, (x.clone(),))
    ref = run(model, x.clone())
    tl = tile(g, ["add_", "c"], (1.0, 1.0, 1.0))
    assert shared_writes(tl.graph.gm) == []  # capture functionalised the add_: nothing to clone
    close(run(tl.graph, x.clone()), ref)


@pytest.mark.parametrize("shares", [(1.0, 1.0, 1.0), (0.2, 5.0), (1e-6, 1.0, 1e-6)])
def test_stripes_follow_shares_and_cover_the_rows(shares):
    g, _, _ = stack("conv_pool", 31, 29)
    region = [n.name for n in g.compute_nodes()]
    rows = tile_cost(g, region, shares).rows
    h = g.nodes[region[-1]].shape[2]
    assert rows[0][0] == 0 and rows[-1][1] == h
    assert all(a[1] == b[0] for a, b in itertools.pairwise(rows))
    assert all(hi - lo >= 1 for lo, hi in rows)
    if shares == (0.2, 5.0):
        assert rows[1][1] - rows[1][0] > rows[0][1] - rows[0][0]


def test_pool_variants_that_cannot_be_exact_are_not_row_local():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.AvgPool2d(3, 2, padding=1, count_include_pad=False),  # border divisors depend on the tile
        nn.AvgPool2d(2, 2, ceil_mode=True),  # partial last window: 9 rows -> 4.5
        nn.MaxPool2d(2, return_indices=False), nn.Conv2d(3, 3, 3, padding=1, padding_mode="reflect"))
    g = capture(model, (torch.randn(1, 3, 17, 17),))
    assert [is_row_local(g, n.name) for n in g.compute_nodes()] == [False, False, True, False]


# -- cost model ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["conv_pool", "branchy"])
@pytest.mark.parametrize("shares", SHARES[1:])
def test_tile_cost_matches_the_built_graph(name, shares):
    g, x, ref = stack(name, 31, 29)
    region = [n.name for n in g.compute_nodes()]
    tl = check_tiling(g, region, shares, (x,), ref)
    tc = tile_cost(g, region, shares)
    assert tc == tl.cost
    tg = tl.graph
    for t in range(len(shares)):
        for v in region:
            assert tc.node_fraction[t][v] == tg.nodes[f"{v}__t{t}"].shape[2] / g.nodes[v].shape[2]
            assert tl.origin[f"{v}__t{t}"] == (v, tc.node_fraction[t][v])
        assert tc.in_bytes[t] == sum(tg.nodes[s].out_bytes for s in tl.scatter[t])
        assert tc.out_bytes[t] == sum(tg.nodes[tg.nodes[gt].inputs[t]].out_bytes for gt in tl.gather)
        assert tg.nodes[tl.gather[0]].inputs[t] in tl.tiles[t]
    assert sum(hi - lo for lo, hi in tc.rows) == g.nodes[tl.gather[0].removesuffix("__gather")].shape[2]


def test_fractions_count_halos_and_halo_free_layers_sum_to_one():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU(), nn.Conv2d(4, 4, 1), nn.Conv2d(4, 4, 3, padding=1),
                          nn.Conv2d(4, 4, 3, padding=1)).eval()
    x = torch.randn(1, 3, 21, 13)
    g = capture(model, (x,))
    names = [n.name for n in g.compute_nodes()]
    tc = tile_cost(g, names, (1.0, 2.0, 1.0))
    total = {v: sum(f[v] for f in tc.node_fraction) for v in names}
    assert total[names[-1]] == 1.0  # the exit: stripes exactly partition its rows
    assert all(total[v] > 1.0 for v in names[:-1])  # everything upstream of a 3x3 recomputes halo rows
    assert tc.rows[0] == (0, 5)  # 21 rows as 5.25 : 10.5 : 5.25, the odd row to the largest remainder
    assert tc.in_bytes[0] == (5 + 2) * 3 * 13 * 4  # 5 rows + 2 halo rows (two 3x3 convs) of the fp32 input
    pointwise = names[:3]
    tc1 = tile_cost(g, pointwise, (1.0, 2.0, 1.0))
    assert all(sum(f[v] for f in tc1.node_fraction) == 1.0 for v in pointwise)
    assert sum(tc1.in_bytes) == g.nodes[g.input_names[0]].out_bytes
    assert sum(tc1.out_bytes) == g.nodes[pointwise[-1]].out_bytes


# -- zoo models ---------------------------------------------------------------------------------


@functools.cache
def zoo_small(name: str, size: int = 64):
    model = zoo.build_model(name, seed=0).eval()
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    g = capture(model, (x,), name=name)
    return g, x, run(model, x)


def prefix_region(g):
    ok = row_local_blocks(g)
    n = ok.index(False) if False in ok else len(ok)
    assert n > 0
    return region_of_blocks(g, 0, n - 1)


@pytest.mark.parametrize("name,size,shares", [
    ("resnet18", 64, (1.0, 2.0)),  # residual adds, downsample branches
    ("googlenet", 96, (2.0, 1.0, 1.0)),  # inception modules: 4 branches cat on channels, ceil-mode pools
    ("mobilenet_v2", 64, (1.0, 1.0)),  # depthwise convs, ReLU6, inverted residuals
])
def test_zoo_row_local_prefix_tiles_exactly(name, size, shares):
    g, x, ref = zoo_small(name, size)
    region = prefix_region(g)
    assert not is_row_local(g, next(n.name for n in g.compute_nodes() if n.name not in set(region)))
    tl = check_tiling(g, region, shares, (x,), ref)
    assert len(tl.gather) == 1


def blocks_of(g, prefix: str) -> tuple[int, int]:
    idx = [b.index for b in g.chain() if any(n.startswith(prefix) for n in b.nodes)]
    return idx[0], idx[-1]


def test_region_in_the_middle_and_tiling_twice():
    g, x, ref = zoo_small("resnet18", 64)
    layer1 = region_of_blocks(g, *blocks_of(g, "layer1"))  # entry: the max-pool output, an inner activation
    assert layer1[0] == "layer1_0_conv1" and "maxpool" not in layer1
    tl = check_tiling(g, layer1, (1.0, 3.0, 2.0), (x,), ref)
    assert [s.removesuffix("__slice_t0") for s in tl.scatter[0]] == ["maxpool"]
    assert tl.graph.nodes["layer2_0_conv1"].inputs == (tl.gather[0],)
    stem = region_of_blocks(g, 0, blocks_of(g, "layer1")[0] - 1)  # original names, outside the first region
    assert stem[-1] == "maxpool"
    tl2 = check_tiling(tl.graph, stem, (1.0, 1.0), (x,), ref)
    assert set(tl.gather) <= {n.name for n in tl2.graph.compute_nodes()}
    layer2 = region_of_blocks(g, *blocks_of(g, "layer2"))
    check_tiling(tl2.graph, layer2, (2.0, 1.0), (x,), ref)


class ExitReadEarly(nn.Module):
    """A non-region node reads a region value before the region ends (it must move after the gather)."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 4, 3, padding=1)
        self.c2 = nn.Conv2d(4, 4, 3, padding=1)
        self.c3 = nn.Conv2d(4, 4, 3, stride=2)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a = self.c1(x)
        b = self.c2(a)
        side = self.fc(a.mean((2, 3)))
        return self.c3(b) + 1.0, side


def test_non_region_readers_of_inner_exits_and_multiple_outputs():
    torch.manual_seed(0)
    model = ExitReadEarly().eval()
    x = torch.randn(1, 3, 19, 11)
    g = capture(model, (x,))
    region = ["c1", "c2", "c3"]
    tl = check_tiling(g, region, (1.0, 1.0, 1.0), (x,), run(model, x))
    assert set(tl.gather) == {"c1__gather", "c3__gather"}
    assert tl.cost.rows == ((0, 7), (7, 13), (13, 19))  # rows of the first exit in graph order: c1's 19
    assert [tl.graph.nodes[n].shape[2] for n in ("c1__gather", "c3__gather")] == [19, 9]
    assert tl.graph.nodes["fc"].inputs == ("mean",) and tl.graph.nodes["mean"].inputs == ("c1__gather",)


# -- split into stages --------------------------------------------------------------------------


@pytest.mark.parametrize("shares", [(1.0, 1.0), (1.0, 2.0, 1.0)])
def test_split_scatter_tiles_gather_into_stages(shares):
    g, x, ref = zoo_small("resnet18", 64)
    region = region_of_blocks(g, 2, 5)  # middle of the network: upstream and downstream stages too
    tl = tile(g, region, shares)
    tg = tl.graph
    k = len(shares)
    downstream = set()
    for gname in tl.gather:
        downstream |= nx.descendants(tg.nx, gname) | {gname}
    assignment = {}
    for n in tg.compute_nodes():
        assignment[n.name] = k + 1 if n.name in downstream else 0
    for t, names in enumerate(tl.tiles):
        for n in names:
            assignment[n] = t + 1
    for names in tl.scatter:
        for n in names:
            assignment[n] = 0
    stages = tg.split(assignment)
    assert [s.index for s in stages] == list(range(k + 2))
    for t in range(k):  # a tile needs only its own scatter slices
        assert set(stages[t + 1].inputs) == set(tl.scatter[t])
    out = tg.run_stages(stages, x)
    close(out, ref)


# -- errors -------------------------------------------------------------------------------------


def test_regions_with_non_row_local_nodes_are_rejected_by_name():
    g, _, _ = zoo_small("mobilenet_v2", 64)
    names = [n.name for n in g.compute_nodes()]
    last_conv = names[names.index("adaptive_avg_pool2d") - 1]
    assert is_row_local(g, last_conv)
    for bad in ("adaptive_avg_pool2d", "flatten", "classifier_1"):
        assert bad in names and not is_row_local(g, bad)
        with pytest.raises(UserError, match=rf"node '{bad}' .*not row-local"):
            tile(g, [last_conv, bad], (1.0, 1.0))


def test_broadcasting_mul_and_row_cat_are_not_row_local():
    class M(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            s = torch.sigmoid(x.mean((2, 3), keepdim=True))  # squeeze-excite scale
            return torch.cat([x * s, x], 2)

    g = capture(M(), (torch.randn(1, 2, 5, 5),))
    kinds = {n.name: is_row_local(g, n.name) for n in g.compute_nodes()}
    assert kinds == {"mean": False, "sigmoid": True, "mul": False, "cat": False}  # sigmoid: 1 row, element-wise


def test_bad_regions_and_shares():
    g, _, _ = stack("conv_pool", 17, 23)
    names = [n.name for n in g.compute_nodes()]
    with pytest.raises(UserError, match="not convex"):
        tile_cost(g, [names[0], names[2]], (1.0,))
    with pytest.raises(UserError, match="only 2 rows"):
        tile(g, names, (1.0, 1.0, 1.0))
    with pytest.raises(UserError, match="at least one node"):
        tile_cost(g, [], (1.0,))
    with pytest.raises(UserError, match="not in graph"):
        tile_cost(g, ["nope"], (1.0,))
    with pytest.raises(UserError, match="not a compute node"):
        tile_cost(g, [g.input_names[0]], (1.0,))
    for shares in [(), (1.0, 0.0), (1.0, -1.0), (float("nan"),)]:
        with pytest.raises(UserError, match="shares"):
            tile_cost(g, names, shares)
    with pytest.raises(UserError, match="blocks"):
        region_of_blocks(g, 2, 1)
