"""graph/ops.py: the op facts every area reads (folding, aliasing, receptive fields, GEMMs) hold on real ops."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import fx, nn

from dnninfer import zoo
from dnninfer.graph import (
    Window,
    capture,
    fold_bn,
    foldable_bn,
    folds_into,
    matmuls,
    may_alias,
    passes_through,
    row_local,
)
from dnninfer.graph.ops import conv_rows


def _bn(n: int, cls: type[nn.Module] = nn.BatchNorm2d, seed: int = 0) -> nn.Module:
    """A BatchNorm with non-trivial statistics and affine terms, in eval mode."""
    g = torch.Generator().manual_seed(seed)
    bn = cls(n, eps=1e-3)
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(n, generator=g))
        bn.running_var.copy_(torch.rand(n, generator=g) + 0.5)
        bn.weight.copy_(torch.randn(n, generator=g))
        bn.bias.copy_(torch.randn(n, generator=g))
    return bn.eval()


# -- BatchNorm folding ----------------------------------------------------------------------------


def _folded_conv_error(conv: nn.Conv2d, bn: nn.Module, x: torch.Tensor, ref_bn: nn.Module | None = None) -> float:
    """max |conv-with-folded-bn(x) - ref_bn(conv(x))|; ref_bn defaults to bn itself."""
    w, b = fold_bn(conv.weight, conv.bias, bn)
    with torch.no_grad():
        folded = F.conv2d(x, w, b, conv.stride, conv.padding)
        ref = (ref_bn or bn)(conv(x))
    return (folded - ref).abs().max().item()


def test_folded_conv_equals_conv_then_eval_batchnorm():
    torch.manual_seed(0)
    conv, bn = nn.Conv2d(3, 6, 3, padding=1), _bn(6)
    x = torch.randn(4, 3, 9, 7)
    assert _folded_conv_error(conv, bn, x) < 1e-5
    conv_nobias = nn.Conv2d(3, 6, 3, bias=False)
    assert _folded_conv_error(conv_nobias, bn, x) < 1e-5


def test_folding_check_catches_batch_statistics_and_a_wrong_eps():
    """Negative controls: the same check fails when the reference uses batch statistics or another eps."""
    torch.manual_seed(0)
    conv, bn = nn.Conv2d(3, 6, 3, padding=1), _bn(6)
    x = torch.randn(4, 3, 9, 7)
    train_bn = _bn(6).train()  # same parameters, normalises with the batch's statistics
    assert _folded_conv_error(conv, bn, x, train_bn) > 1e-2
    wrong_eps = _bn(6)
    wrong_eps.eps = 0.5
    assert _folded_conv_error(conv, bn, x, wrong_eps) > 1e-2


def test_folded_linear_equals_linear_then_batchnorm1d():
    torch.manual_seed(0)
    lin, bn = nn.Linear(5, 4), _bn(4, nn.BatchNorm1d)
    x = torch.randn(8, 5)
    w, b = fold_bn(lin.weight, lin.bias, bn)
    with torch.no_grad():
        torch.testing.assert_close(F.linear(x, w, b), bn(lin(x)), rtol=1e-5, atol=1e-5)
    # output channels on the last axis (an NHWC/IO layout) give the same numbers, transposed
    wt, bt = fold_bn(lin.weight.T.contiguous(), lin.bias, bn, axis=-1)
    torch.testing.assert_close(wt.T, w)
    torch.testing.assert_close(bt, b)


def test_which_batchnorms_fold_into_which_layers():
    assert folds_into(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    assert folds_into(nn.Linear(3, 4), nn.BatchNorm1d(4))
    assert not folds_into(nn.Linear(3, 4), nn.BatchNorm2d(4))  # wrong dimensionality
    assert not folds_into(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(5))  # wrong channel count
    assert not folds_into(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, track_running_stats=False))
    assert not folds_into(nn.ConvTranspose2d(4, 4, 3), nn.BatchNorm2d(4))  # weight is (C_in, C_out, ...)
    with pytest.raises(ValueError, match="running statistics"):
        fold_bn(torch.ones(4, 1), None, nn.BatchNorm1d(4, track_running_stats=False))


class TwoReaders(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1, self.bn1 = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)
        self.c2, self.drop, self.bn2 = nn.Conv2d(4, 4, 1), nn.Dropout(0.1), nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.c1(x)
        y = self.bn1(a) + a  # c1's output has a second reader: folding would change it
        return self.bn2(self.drop(self.c2(y)))  # eval-mode dropout passes c2 through


def test_foldable_bn_on_the_graph_needs_a_sole_reader():
    g = capture(TwoReaders(), (torch.randn(1, 3, 8, 8),))
    assert foldable_bn(g, "bn1") is None
    assert foldable_bn(g, "bn2") == "c2"
    assert foldable_bn(g, "c2") is None  # not a batch norm


# -- writes and aliases ---------------------------------------------------------------------------


class Views(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.ident, self.drop = nn.Identity(), nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.drop(self.ident(x))
        b = F.dropout(a, 0.5, training=False).contiguous()
        c = F.dropout(b, 0.5)  # training=True by default: real dropout
        d = torch.relu_(c.view(-1))
        return d.sin()


def test_aliases_and_pass_throughs():
    gm = fx.symbolic_trace(Views().eval())  # not functionalised: the relu_ is still in place
    nodes = {n.name: n for n in gm.graph.nodes}
    through = {n for n, node in nodes.items() if passes_through(node)}
    assert through == {"ident", "drop", "dropout", "contiguous"}  # not the training-mode dropout_1
    alias = {n for n, node in nodes.items() if may_alias(node)}
    assert alias == {"ident", "drop", "dropout", "dropout_1", "contiguous", "view", "relu_"}
    assert not may_alias(nodes["sin"]) and not passes_through(nodes["sin"])


# -- receptive fields -----------------------------------------------------------------------------


CASES = [  # (kernel, stride, dilation, pad, ceil)
    (k, s, d, p, c) for k, s, d, p, c in itertools.product((1, 2, 3, 5), (1, 2, 3), (1, 2), (0, 1, 2), (False, True))
    if p <= (k // 2)
]


@pytest.mark.parametrize("h", [7, 12])
def test_window_rows_match_torch_and_need_covers_the_receptive_field(h):
    """rows(): PyTorch's output height; need(o, o+1) spans exactly the input rows output row o reads."""
    for k, s, d, p, ceil in CASES:
        w = Window(k, s, d, p, p, ceil, 0.0, None, (), {})
        try:
            got = F.max_pool2d(torch.rand(1, 1, h, 1), (k, 1), (s, 1), (p, 0), (d, 1), ceil_mode=ceil).shape[2]
        except RuntimeError:  # torch refuses a window larger than the padded input
            got = 0
        assert w.rows(h) == got == conv_rows(h, k, s, d, p, p, ceil), (k, s, d, p, ceil)
        if ceil or not got:
            continue
        x = torch.rand(1, 1, h, 1, requires_grad=True)
        out = F.conv2d(x, torch.ones(1, 1, k, 1), stride=(s, 1), padding=(p, 0), dilation=(d, 1))
        for o in range(out.shape[2]):
            (grad,) = torch.autograd.grad(out[0, 0, o].sum(), x, retain_graph=True)
            touched = {r for r in range(h) if grad[0, 0, r, 0] != 0}
            lo, hi = w.need(o, o + 1)
            assert min(touched) >= lo and max(touched) < hi  # the band holds every row read
            assert touched == {r for r in range(max(lo, 0), min(hi, h)) if (r - lo) % d == 0}


def test_window_check_has_teeth():
    """Negative control: the wrong ceil flag predicts a row count torch does not produce."""
    h, k, s = 8, 3, 2
    y = F.max_pool2d(torch.rand(1, 1, h, 1), (k, 1), (s, 1), ceil_mode=True)
    assert Window(k, s, 1, 0, 0, True, 0.0, None, (), {}).rows(h) == y.shape[2]
    assert Window(k, s, 1, 0, 0, False, 0.0, None, (), {}).rows(h) != y.shape[2]


def test_row_local_reasons():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
    g = capture(model, (torch.randn(1, 3, 9, 9),))
    nodes = {n.name: n for n in g.gm.graph.nodes}
    conv = row_local(g, nodes["_0"])
    assert conv.window is not None and conv.window.need(0, 2) == (-1, 3) and conv.inputs == ("input_1",)
    assert row_local(g, nodes["_1"]).window is None and row_local(g, nodes["_2"]).window is None
    assert "not row-local" in row_local(g, nodes["_3"])
    g.gm.get_submodule("1").train()  # batch statistics: rows of one tile would change the others
    assert "batch statistics" in row_local(g, nodes["_1"])


# -- GEMMs ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["bert_encoder", "resnet18", "mobilenet_v2"])
def test_gemms_carry_every_matmul_flop_of_the_graph(name):
    """2 x MACs of a node's GEMMs == its FLOPs for conv/linear/matmul; so no matrix product is missed."""
    model = zoo.build_model(name)
    x = zoo.example_inputs(name, batch=1) if name == "bert_encoder" else (torch.randn(1, 3, 32, 32),)
    g = capture(model, x, name=name)
    heavy = [n for n in g.compute_nodes() if n.kind in ("conv", "linear", "matmul")]
    assert heavy
    for n in heavy:
        assert 2 * sum(m.macs for m in matmuls(g, n.name)) == n.flops, n.name
    if name == "bert_encoder":  # 4 layers x (Q K^T, P V)
        att = [m for n in heavy if n.kind == "matmul" for m in matmuls(g, n.name)]
        assert len(att) == 8 and [(m.m, m.k, m.n, m.count) for m in att[:2]] == [(128, 64, 128, 4), (128, 128, 64, 4)]
        dropped = sum(2 * m.macs for n in heavy if n.kind != "matmul" for m in matmuls(g, n.name))
        assert dropped < sum(n.flops for n in heavy)  # negative control: without them the totals differ


def test_sdpa_and_multihead_attention_gemms():
    b, length, e, h = 2, 6, 8, 2
    q, k, v = (torch.randn(b, h, length, e // h) for _ in range(3))

    class Sdpa(nn.Module):
        def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            return F.scaled_dot_product_attention(q, k, v)

    g = capture(Sdpa(), (q, k, v))
    node = next(n.name for n in g.compute_nodes() if n.kind == "attention")
    got = [(m.m, m.k, m.n, m.count) for m in matmuls(g, node)]
    assert got == [(length, e // h, length, b * h), (length, length, e // h, b * h)]

    mha = nn.MultiheadAttention(e, h, batch_first=True)
    x = torch.randn(b, length, e)

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.mha = mha

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.mha(x, x, x, need_weights=False)[0]

    g = capture(Block(), (x,))
    mms = matmuls(g, "mha")
    tokens = b * length
    assert sum(m.macs for m in mms) == 4 * tokens * e * e + 2 * b * length * length * e
    assert math.prod((mms[3].m, mms[3].n)) == length * length  # Q K^T per head
