"""Interchangeable nodes: a cluster seen as device *types* with a count each.

A site with 64 boards has a handful of board models, and two boards of the same model with the
same links to everyone else are interchangeable: swapping them maps every plan to a plan with the
same latency, energy and throughput. PipeEdge plans 16 devices by treating identical devices as
one type (Hu et al., DSD'22, §IV); so does every planner here that would otherwise enumerate node
subsets: it searches multisets of types (how many of each), and a multiset becomes concrete nodes
by taking each type's first members in cluster order.

Two nodes are interchangeable when neither is the source, they run the same device profile (and,
with a measured profile, were measured the same), and each has the same link to every third node
(which makes the link between them the one every pair of the type has). The transpositions that
pass this test are automorphisms of the cluster, so the relation is an equivalence.
"""

from __future__ import annotations

from dataclasses import dataclass

from dnninfer.partition.costmodel import CostModel

__all__ = ["Fleet", "fleet"]


@dataclass(frozen=True)
class Fleet:
    """The cluster's nodes grouped into types; types in order of their first member."""

    nodes: tuple[str, ...]
    types: tuple[tuple[str, ...], ...]  # members of each type, in cluster order
    type_of: dict[str, int]

    @property
    def counts(self) -> tuple[int, ...]:
        return tuple(len(t) for t in self.types)

    def rep(self, t: int) -> str:
        """The first member of type `t`, the one a plan over types uses first."""
        return self.types[t][0]

    @property
    def reps(self) -> list[str]:
        return [t[0] for t in self.types]

    def materialise(self, counts: tuple[int, ...] | list[int]) -> list[str]:
        """Concrete nodes for a multiset of types: each type's first members, in cluster order."""
        chosen = {n for t, k in enumerate(counts) for n in self.types[t][:k]}
        return [n for n in self.nodes if n in chosen]

    def __len__(self) -> int:
        return len(self.types)


def fleet(cm: CostModel) -> Fleet:
    """The types of `cm`'s cluster (memoised on the cost model)."""
    return cm.memo(("fleet",), lambda: _fleet(cm))


def _fleet(cm: CostModel) -> Fleet:
    nodes = list(cm.nodes)
    listed = {end for spec in cm.cluster.links for end in (spec.a, spec.b)}
    measured = cm.measured.targets if cm.measured is not None else {}

    def key(n: str) -> tuple[object, ...]:
        dev = cm.devices[n]
        runs = tuple(sorted((t.split("/", 1)[1], tuple(sorted(per.items())))
                            for t, per in measured.items() if t.split("/", 1)[0] == n))
        return dev.model_dump_json(), runs

    keys = {n: key(n) for n in nodes if n != cm.source}
    types: list[list[str]] = []
    for n in nodes:
        home = None
        if n != cm.source:
            for members in types:
                m = members[0]
                if m != cm.source and keys[m] == keys[n] and _same_links(cm, m, n, listed):
                    home = members
                    break
        if home is None:
            types.append([n])
        else:
            home.append(n)
    type_of = {n: i for i, members in enumerate(types) for n in members}
    return Fleet(tuple(nodes), tuple(tuple(t) for t in types), type_of)


def _same_links(cm: CostModel, a: str, b: str, listed: set[str]) -> bool:
    """Each third node reaches `a` and `b` over the same link (nodes in no explicit link spec only
    ever use the default link, so they need no check)."""
    if a not in listed and b not in listed:
        return True
    for w in cm.nodes:
        if w in (a, b):
            continue
        if _link(cm, a, w) != _link(cm, b, w):
            return False
    return True


def _link(cm: CostModel, a: str, b: str) -> object:
    from dnninfer.errors import UserError

    try:
        return cm.cluster.link(a, b)
    except UserError:  # no listed link and no default: unreachable, which must match too
        return None
