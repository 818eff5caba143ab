"""Nimble-style decomposition: a minimum chain (path) cover, checked against brute force, and the
stream counts the Opara paper reports for GoogLeNet."""

from __future__ import annotations

import itertools
import random

import networkx as nx
import pytest

from dnninfer.schedule import OpDAG, make_plan
from dnninfer.schedule.nimble import min_chain_decomposition, nimble_streams


def random_dag(n: int, p: float, seed: int) -> OpDAG:
    rng = random.Random(seed)
    names = [f"v{i}" for i in range(n)]
    return OpDAG.from_edges([(names[i], names[j]) for i in range(n) for j in range(i + 1, n) if rng.random() < p],
                            names)


def _partitions(items: list[str], k: int):
    """Every assignment of items to k labelled groups (k**n, fine for n <= 7)."""
    for labels in itertools.product(range(k), repeat=len(items)):
        groups = [[x for x, lab in zip(items, labels, strict=True) if lab == g] for g in range(k)]
        yield groups


def brute_min_cover(dag: OpDAG, ok) -> int:
    for k in range(1, len(dag) + 1):
        if any(all(ok(g) for g in groups if g) for groups in _partitions(list(dag.names), k)):
            return k
    raise AssertionError("unreachable")


def is_chain(dag: OpDAG, group: list[str]) -> bool:
    g = sorted(group, key=dag.index.__getitem__)
    return all(dag.reaches(a, b) for a, b in itertools.pairwise(g))


def is_path(reduction: nx.DiGraph, dag: OpDAG, group: list[str]) -> bool:
    g = sorted(group, key=dag.index.__getitem__)
    return all(reduction.has_edge(a, b) for a, b in itertools.pairwise(g))


@pytest.mark.parametrize("seed", range(15))
def test_chain_decomposition_is_minimum_by_brute_force(seed):
    dag = random_dag(7, 0.3, seed)
    chains = min_chain_decomposition(dag)
    assert sorted(n for c in chains for n in c) == sorted(dag.names)  # a partition
    assert all(is_chain(dag, c) for c in chains)
    assert len(chains) == brute_min_cover(dag, lambda g: is_chain(dag, g))


@pytest.mark.parametrize("seed", range(8))
def test_path_cover_of_the_reduction_is_minimum_by_brute_force(seed):
    dag = random_dag(6, 0.4, seed)
    red = nx.transitive_reduction(dag.nx)
    paths = min_chain_decomposition(dag, cover="path")
    assert all(is_path(red, dag, p) for p in paths)
    assert len(paths) == brute_min_cover(dag, lambda g: is_path(red, dag, g))


def test_chain_count_equals_the_widest_antichain():
    """Dilworth: the minimum chain cover has as many chains as the largest antichain."""
    dag = random_dag(9, 0.25, 1)
    widest = max(len(s) for r in range(1, 10) for s in itertools.combinations(dag.names, r)
                 if not any(dag.reaches(a, b) or dag.reaches(b, a) for a, b in itertools.combinations(s, 2)))
    assert len(min_chain_decomposition(dag)) == widest


def test_capped_nimble_keeps_every_chain_whole():
    dag = random_dag(12, 0.2, 4)
    chains = min_chain_decomposition(dag)
    streams = nimble_streams(dag, max_streams=2)
    assert set(streams.values()) <= {0, 1}
    for c in chains:
        assert len({streams[n] for n in c}) == 1


def test_googlenet_stream_counts_match_the_paper(graph_of):
    """Opara's paper: 28 streams with Opara's Alg. 1 vs 4 with Nimble on GoogLeNet."""
    _, _, graph, _ = graph_of("googlenet")
    dag = OpDAG.from_graph(graph)
    assert make_plan(dag, "opara", "topo").num_streams == 28
    assert make_plan(dag, "nimble", "topo").num_streams == 4
