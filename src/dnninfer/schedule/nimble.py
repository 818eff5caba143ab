"""Nimble-style stream assignment (Kwon et al., NeurIPS 2020): a minimum decomposition of the DAG
into chains via maximum bipartite matching, one stream per chain.

Build the bipartite graph with a left copy u' and a right copy v'' of every operator and an edge
u' - v'' whenever u reaches v (``cover="chain"``, the transitive closure: Dilworth's minimum chain
cover, as many streams as the widest antichain) or whenever u -> v is an edge of the transitive
reduction (``cover="path"``, the minimum path cover of Nimble's minimum equivalent graph, which
Nimble's AutoStream pass and Opara's dead code use). A maximum matching (networkx Hopcroft-Karp)
links u to its successor in the same chain; n - |M| chains remain, the minimum.

With a cap, chains are merged onto streams in order of their first operator: onto a stream whose
last chain's end reaches this chain's start (no concurrency lost, Nimble's stream reuse), else
onto the least-loaded stream.
"""

from __future__ import annotations

import networkx as nx

from dnninfer.schedule.dag import OpDAG

__all__ = ["min_chain_decomposition", "nimble_streams"]


def min_chain_decomposition(dag: OpDAG, *, cover: str = "chain") -> list[list[str]]:
    """Chains (each in topological order) covering every operator once, minimum in number."""
    if cover not in ("chain", "path"):
        raise ValueError(f"cover: expected 'chain' or 'path', got {cover!r}")
    key = ("min_chain_decomposition", cover)
    if key not in dag.memo:
        dag.memo[key] = _decompose(dag, cover)
    return [list(c) for c in dag.memo[key]]


def _decompose(dag: OpDAG, cover: str) -> list[list[str]]:
    rel = dag.closure_edges() if cover == "chain" else list(nx.transitive_reduction(dag.nx).edges())
    # integer labels (left i, right n + i): networkx iterates sets of nodes, and str hashes are
    # salted per process, so string labels would give a different (equally minimal) cover per run
    n = len(dag.names)
    idx = dag.index
    bip = nx.Graph()
    bip.add_nodes_from(range(n), bipartite=0)
    bip.add_nodes_from(range(n, 2 * n), bipartite=1)
    bip.add_edges_from(sorted((idx[u], n + idx[v]) for u, v in rel))
    matching = nx.bipartite.hopcroft_karp_matching(bip, top_nodes=range(n))
    nxt = {dag.names[u]: dag.names[v - n] for u, v in matching.items() if u < n}
    has_prev = set(nxt.values())
    chains = []
    for name in dag.names:  # program order, so chains come out sorted by their first operator
        if name in has_prev:
            continue
        chain = [name]
        while chain[-1] in nxt:
            chain.append(nxt[chain[-1]])
        chains.append(chain)
    return chains


def nimble_streams(dag: OpDAG, *, max_streams: int | None = None, cover: str = "chain") -> dict[str, int]:
    """One stream per chain of the minimum decomposition, merged down to ``max_streams``."""
    chains = min_chain_decomposition(dag, cover=cover)
    if max_streams is None or len(chains) <= max_streams:
        return {n: i for i, chain in enumerate(chains) for n in chain}
    streams: list[list[list[str]]] = []
    load: list[float] = []
    for chain in sorted(chains, key=lambda c: dag.index[c[0]]):
        cost = sum(dag.cost_s[n] for n in chain)
        if len(streams) < max_streams:
            streams.append([chain])
            load.append(cost)
            continue
        follows = [s for s, cs in enumerate(streams) if dag.reaches(cs[-1][-1], chain[0])]
        s = min(follows or range(len(streams)), key=lambda k: (load[k], k))
        streams[s].append(chain)
        load[s] += cost
    return {n: s for s, cs in enumerate(streams) for chain in cs for n in chain}
