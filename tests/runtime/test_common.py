"""What the runtimes share (runtime/common.py)."""

from __future__ import annotations

import torch


def test_compact_sends_a_row_slice_without_its_base():
    """Pickling a view sends its whole storage: a tile's rows of a 224x224 input would cross a link
    as the full 602 KB. `compact` copies views out; whole tensors pass through untouched."""
    import pickle

    from dnninfer.runtime.common import compact

    x = torch.randn(1, 3, 224, 224)
    rows = x[:, :, :5, :]
    assert len(pickle.dumps(rows)) > x.numel() * 4  # the bug it guards against (negative control)
    small = compact({"a": rows, "b": [x]})
    assert len(pickle.dumps(small["a"])) < 2 * rows.numel() * 4 and torch.equal(small["a"], rows)
    assert small["b"][0] is x
