"""RNSLinear / RNSConv2d: all three GEMMs under the numerics, gradients against the BFP-exact path and
against torch's own autograd, rnsify."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dnninfer.bench.harness import pinned_threads
from dnninfer.rns.layers import (
    RNSConv2d,
    RNSConv2dFunction,
    RNSLinear,
    RNSLinearFunction,
    numerics_of,
    rnsify,
    set_numerics,
)
from dnninfer.rns.numerics import Numerics


def _linear_grads(mode, x, w, b, gy, **kw):
    xs, ws, bs = (t.clone().requires_grad_() for t in (x, w, b))
    y = RNSLinearFunction.apply(xs, ws, bs, Numerics(mode=mode, **kw))
    y.backward(gy)
    return y.detach(), xs.grad, ws.grad, bs.grad


CONV_CASES = [
    dict(stride=(1, 1), padding=(1, 1), dilation=(1, 1), groups=1),
    dict(stride=(2, 2), padding=(1, 1), dilation=(1, 1), groups=1),
    dict(stride=(1, 2), padding=(0, 2), dilation=(2, 1), groups=2),
]


def _conv_grads(mode, x, w, b, case, gy=None, **kw):
    xs, ws, bs = (t.clone().requires_grad_() for t in (x, w, b))
    y = RNSConv2dFunction.apply(xs, ws, bs, Numerics(mode=mode, **kw), case["stride"], case["padding"],
                                case["dilation"], case["groups"])
    y.backward(gy if gy is not None else torch.ones_like(y))
    return y.detach(), xs.grad, ws.grad, bs.grad


def _data(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(19, 70, generator=g) * torch.logspace(-2, 2, 70)
    w = torch.randn(24, 70, generator=g)
    b = torch.randn(24, generator=g)
    gy = torch.randn(19, 24, generator=g) * 1e-2
    return x, w, b, gy


def test_linear_noiseless_rns_equals_bfp_exact_in_all_three_gemms():
    x, w, b, gy = _data()
    ref = _linear_grads("bfp", x, w, b, gy)
    got = _linear_grads("rns", x, w, b, gy)
    for name, r, q in zip(("forward", "grad_input", "grad_weight", "grad_bias"), ref, got, strict=True):
        assert torch.equal(r, q), name
    # negative control: fp32 differs from BFP in every GEMM
    fp = _linear_grads("fp32", x, w, b, gy)
    assert not any(torch.equal(r, q) for r, q in zip(ref[:3], fp[:3], strict=True))


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv_noiseless_rns_equals_bfp_exact_in_all_three_gemms(case):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 4, 9, 11, generator=g)
    w = torch.randn(6, 4 // case["groups"], 3, 3, generator=g)
    b = torch.randn(6, generator=g)
    ref_y = F.conv2d(x, w, b, **case)
    gy = torch.randn(ref_y.shape, generator=g)
    ref = _conv_grads("bfp", x, w, b, case, gy)
    got = _conv_grads("rns", x, w, b, case, gy)
    for name, r, q in zip(("forward", "grad_input", "grad_weight", "grad_bias"), ref, got, strict=True):
        assert torch.equal(r, q), name


def test_linear_fp32_mode_matches_torch_autograd():
    x, w, b, gy = _data(2)
    y, gx, gw, gb = _linear_grads("fp32", x, w, b, gy)
    xs, ws, bs = (t.clone().requires_grad_() for t in (x, w, b))
    ref = F.linear(xs, ws, bs)
    ref.backward(gy)
    for a, r in ((y, ref.detach()), (gx, xs.grad), (gw, ws.grad), (gb, bs.grad)):
        torch.testing.assert_close(a, r, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv_fp32_mode_matches_torch_autograd(case):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 4, 10, 9, generator=g)
    w = torch.randn(6, 4 // case["groups"], 3, 2, generator=g)
    b = torch.randn(6, generator=g)
    xs, ws, bs = (t.clone().requires_grad_() for t in (x, w, b))
    ref = F.conv2d(xs, ws, bs, **case)
    gy = torch.randn(ref.shape, generator=g)
    ref.backward(gy)
    y, gx, gw, gb = _conv_grads("fp32", x, w, b, case, gy)
    for a, r in ((y, ref.detach()), (gx, xs.grad), (gw, ws.grad), (gb, bs.grad)):
        torch.testing.assert_close(a, r, rtol=1e-4, atol=1e-4)


def _ref_bfp(a: torch.Tensor, b: torch.Tensor, bits=6, block=16) -> torch.Tensor:
    """Independent float64 BFP tile product along a's columns / b's rows."""
    a, b = a.double().numpy(), b.double().numpy()
    qm = 2 ** (bits - 1) - 1
    out = np.zeros((a.shape[0], b.shape[1]))
    for t0 in range(0, a.shape[1], block):
        ab, bb = a[:, t0:t0 + block], b[t0:t0 + block]
        sa = np.ldexp(1.0, np.frexp(np.abs(ab).max(1, keepdims=True))[1]) / qm
        sb = np.ldexp(1.0, np.frexp(np.abs(bb).max(0, keepdims=True))[1]) / qm
        out += (np.clip(np.round(ab / sa), -qm, qm) @ np.clip(np.round(bb / sb), -qm, qm)) * sa * sb
    return torch.from_numpy(out)


def test_rns_linear_gradients_match_bfp_reference_gemms():
    """grad_input = BFP(dY @ W) blocked over P, grad_weight = BFP(dY^T @ X) blocked over the batch."""
    x, w, b, gy = _data(4)
    y, gx, gw, gb = _linear_grads("rns", x, w, b, gy)
    torch.testing.assert_close(y.double(), _ref_bfp(x, w.t()) + b.double(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gx.double(), _ref_bfp(gy, w), rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(gw.double(), _ref_bfp(gy.t(), x), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gb, gy.sum(0))


def test_rns_conv_gradients_match_bfp_reference_gemms():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 3, 6, 6, generator=g)
    w = torch.randn(5, 3, 3, 3, generator=g)
    b = torch.zeros(5)
    case = CONV_CASES[1]
    gy = torch.randn(F.conv2d(x, w, **case).shape, generator=g)
    _, gx, gw, _ = _conv_grads("rns", x, w, b, case, gy)
    cols = F.unfold(x, 3, padding=1, stride=2).transpose(1, 2).reshape(-1, 27)  # (B*L, CK)
    g2 = gy.reshape(2, 5, -1).transpose(1, 2).reshape(-1, 5)  # (B*L, O)
    ref_gw = _ref_bfp(g2.t(), cols).reshape(w.shape)
    ref_gcols = _ref_bfp(g2, w.reshape(5, -1)).float().reshape(2, -1, 27).transpose(1, 2)
    ref_gx = F.fold(ref_gcols, (6, 6), 3, padding=1, stride=2)
    torch.testing.assert_close(gw.double(), ref_gw, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gx, ref_gx, rtol=1e-5, atol=1e-5)


def test_rnsify_swaps_layers_and_shares_parameters():
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(),
                          nn.Sequential(nn.Flatten(), nn.Linear(4 * 8 * 8, 10)))
    x = torch.rand(5, 1, 8, 8)
    ref = model(x)
    conv = rnsify(model, mode="fp32")
    assert conv is not model and isinstance(model[0], nn.Conv2d) and not isinstance(model[0], RNSConv2d)
    assert isinstance(conv[0], RNSConv2d) and isinstance(conv[2][1], RNSLinear)
    torch.testing.assert_close(conv(x), ref, rtol=1e-5, atol=1e-5)
    inplace = rnsify(model, mode="rns", inplace=True)
    assert inplace is model and inplace[0].weight is model[0].weight
    num = numerics_of(inplace)
    assert num is inplace[2][1].numerics and num.mode == "rns"  # one Numerics shared by every layer
    set_numerics(inplace, Numerics(mode="bfp"))
    assert numerics_of(inplace).mode == "bfp"
    assert isinstance(rnsify(nn.Linear(3, 2), mode="bfp"), RNSLinear)  # a bare layer converts too


def test_rnsify_trains_end_to_end():
    with pinned_threads(1):
        _train_toy()


def _train_toy():
    torch.manual_seed(0)
    model = rnsify(nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2)), mode="rns")
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(64, 8)
    y = (x[:, 0] > 0).long()
    first = None
    for _ in range(100):
        loss = F.cross_entropy(model(x), y)
        first = first if first is not None else float(loss.detach())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.5 * first
