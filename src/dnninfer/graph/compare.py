"""How far two model outputs are apart: the one check every equivalence test and bench makes.

A split, scheduled, imported or quantised model is right only if its output equals the whole
model's. Outputs are pytrees (a tensor, a tuple of them, a dict of logits and features), so the
difference is taken leaf by leaf, in float64 (a half-precision leaf compares exactly what it
holds), and a different tree or shape is an error, never a silently small number.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["max_abs_diff"]


def max_abs_diff(a: Any, b: Any) -> float:
    """Largest ``|a - b|`` over every tensor leaf of two outputs; 0.0 for empty tensors.

    NaN anywhere gives NaN (which fails every ``<= tol``). Raises ``ValueError`` when the two
    outputs differ in number of leaves or a leaf's shape: those are wrong results, not small errors.
    """
    import torch
    from torch.utils import _pytree as pytree

    la, lb = pytree.tree_leaves(a), pytree.tree_leaves(b)
    if len(la) != len(lb):
        raise ValueError(f"outputs differ in structure: {len(la)} leaves vs {len(lb)}")
    worst = 0.0
    for i, (x, y) in enumerate(zip(la, lb, strict=True)):
        x, y = torch.as_tensor(x), torch.as_tensor(y)
        if x.shape != y.shape:
            raise ValueError(f"output leaf {i} differs in shape: {tuple(x.shape)} vs {tuple(y.shape)}")
        if x.numel():
            d = float((x.double() - y.double()).abs().max())
            if math.isnan(d):  # max() would drop a NaN and let a broken output pass a tolerance
                return math.nan
            worst = max(worst, d)
    return worst
