"""Analytical photonic RNS core vs systolic array: cited constants, deterministic ratios, sanity."""

import math

import pytest
import torch
from torch import nn

from dnninfer.errors import UserError
from dnninfer.rns.photonic import (
    CONFIGS,
    Gemm,
    MirageCore,
    SystolicArray,
    Workload,
    compare,
    load_config,
    training_gemms,
    workload,
)

TOY = Workload("toy", 4, (Gemm(4096, 576, 128, "fwd"), Gemm(4096, 128, 576, "dx"), Gemm(128, 4096, 576, "dw"),
                          Gemm(256, 1024, 1024, "fwd")))


@pytest.mark.parametrize("name", CONFIGS)
def test_every_constant_cites_a_source(name):
    cfg = load_config(name)
    assert cfg.entries()
    for key, c in cfg.entries().items():
        assert len(c.source) >= 8, key
        if not c.source.startswith("[R]"):  # a cited number names a paper, repository or URL
            assert any(tag in c.source for tag in ("http", "Horowitz", "Lightening-Transformer", "Jouppi")), key


def test_config_errors_are_user_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ndescription: y\ndesign: {}\nconstants:\n  a: {value: 1, source: ''}\n")
    with pytest.raises(UserError, match=r"constants\.a\.source"):
        load_config(bad)
    with pytest.raises(UserError, match="no such file"):
        load_config("nonexistent")


def test_systolic_cycles_match_the_weight_stationary_formula():
    sa = SystolicArray()
    g = Gemm(1000, 300, 200)
    cost = sa.cost([g], rows=128, cols=128)
    cycles = math.ceil(300 / 128) * math.ceil(200 / 128) * (1000 + 128 + 128 - 2)
    assert cost.time_s == pytest.approx(cycles / 1e9)
    assert cost.breakdown_j["mac"] == pytest.approx(g.macs * 4.6e-12)


def test_photonic_core_scales_with_arrays():
    core = MirageCore()
    one, many = core.cost(TOY.gemms, 1), core.cost(TOY.gemms, 8)
    assert many.time_s < one.time_s / 4
    assert many.area_mm2 == pytest.approx(8 * one.area_mm2)
    # dynamic energy does not depend on the array count; only static (laser, receivers) can change
    for part in ("drive", "adc", "digital", "sram"):
        assert many.breakdown_j[part] == pytest.approx(one.breakdown_j[part])
    assert 0.1 < one.pj_per_mac < 10


def test_overflowing_design_is_rejected():
    with pytest.raises(UserError, match="overflows"):
        MirageCore(load_config("mirage").with_design(h=64))


def test_compare_is_deterministic_and_complete():
    a, b = compare([TOY]), compare([TOY])
    keys = ("speedup_iso_energy", "edp_ratio_iso_energy", "power_ratio_iso_area", "edp_ratio_iso_area")
    for k in keys:
        assert a[k] == b[k] and a[k] > 0
    row = a["per_workload"][0]
    # iso-area: the photonic core is no larger than the SA; iso-energy: its power is within the SA's
    assert row["iso_area"]["photonic"]["area_mm2"] <= row["sa"]["area_mm2"]
    assert row["iso_energy"]["photonic"]["power_w"] <= row["sa"]["power_w"] * (1 + 1e-9)
    # at equal power the EDP ratio is speedup x energy ratio
    ie = row["iso_energy"]
    assert ie["edp_ratio"] == pytest.approx(ie["speedup"] * ie["energy_ratio"])


def test_training_gemms_cover_forward_and_both_backward():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Flatten(), nn.Linear(8 * 4 * 4, 10))
    gemms = training_gemms(model, (torch.zeros(2, 3, 4, 4),))
    kinds = [g.kind for g in gemms]
    assert kinds == ["fwd", "dw", "fwd", "dx", "dw"]  # no grad-input for the first layer
    conv_fwd, conv_dw = gemms[0], gemms[1]
    assert (conv_fwd.rows, conv_fwd.red, conv_fwd.cols) == (2 * 16, 27, 8)
    assert (conv_dw.rows, conv_dw.red, conv_dw.cols) == (8, 2 * 16, 27)
    assert conv_fwd.macs == conv_dw.macs



B, L, E, HEADS = 2, 8, 16, 2


class TinyAttention(nn.Module):
    """One self-attention block written with ``@`` and ``torch.matmul`` (like zoo's bert_encoder)."""

    def __init__(self) -> None:
        super().__init__()
        self.q, self.k, self.v, self.out = (nn.Linear(E, E) for _ in range(4))

    def heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (HEADS, E // HEADS)).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.heads(self.q(x)), self.heads(self.k(x)), self.heads(self.v(x))
        probs = (q @ k.transpose(-2, -1)).softmax(-1)
        return self.out(torch.matmul(probs, v).transpose(1, 2).flatten(2))


def _hook_macs(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> int:
    """The former workload: forward hooks on Linear layers only (the negative control)."""
    rows: list[int] = []
    handles = [m.register_forward_hook(lambda m, a, o: rows.append(math.prod(a[0].shape[:-1])))
               for m in model.modules() if isinstance(m, nn.Linear)]
    with torch.no_grad():
        model(*inputs)
    for h in handles:
        h.remove()
    per = [r * E * E for r in rows]
    return 3 * sum(per) - per[0]  # fwd + dx + dw each, no dx for the first layer


def test_training_gemms_count_the_attention_matmuls():
    model = TinyAttention()
    x = torch.randn(B, L, E)
    gemms = training_gemms(model, (x,))
    d = E // HEADS
    shapes = {(g.rows, g.red, g.cols, g.count, g.kind) for g in gemms}
    assert (L, d, L, B * HEADS, "fwd") in shapes  # Q @ K^T per (batch, head)
    assert (L, L, d, B * HEADS, "fwd") in shapes  # attn @ V
    proj = B * L * E * E  # MACs of one projection
    att = B * HEADS * L * L * d  # MACs of one attention matmul
    # q/k/v read the input (no grad-input), out gets one; all four get a grad-weight; both attention
    # matmuls get a forward and a gradient for each operand (both depend on parameters)
    hand = 4 * proj + 1 * proj + 4 * proj + 2 * 3 * att
    assert sum(g.macs for g in gemms) == hand
    assert [g.kind for g in gemms].count("dw") == 4
    assert _hook_macs(model, (x,)) != hand  # negative control: the hook count misses the attention matmuls
    assert model.training  # capture's eval() is undone


def test_bert_workload_has_attention_gemms_scaled_by_batch():
    w = workload("bert_encoder", batch=8)
    att = [g for g in w.gemms if g.kind == "fwd" and g.count > 1]
    assert len(att) == 8
    assert {(g.rows, g.red, g.cols, g.count) for g in att} == {(128, 64, 128, 32), (128, 128, 64, 32)}
    linear = [g for g in w.gemms if g.kind == "fwd" and g.count == 1]
    assert linear[0].rows == 8 * 128  # the batch multiplies the rows of a linear layer
