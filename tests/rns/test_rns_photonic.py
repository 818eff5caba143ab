"""Analytical photonic RNS core vs systolic array: cited constants, deterministic ratios, sanity."""

import math

import pytest

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
    import torch
    from torch import nn

    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Flatten(), nn.Linear(8 * 4 * 4, 10))
    gemms = training_gemms(model, (torch.zeros(2, 3, 4, 4),))
    kinds = [g.kind for g in gemms]
    assert kinds == ["fwd", "dw", "fwd", "dx", "dw"]  # no grad-input for the first layer
    conv_fwd, conv_dw = gemms[0], gemms[1]
    assert (conv_fwd.rows, conv_fwd.red, conv_fwd.cols) == (2 * 16, 27, 8)
    assert (conv_dw.rows, conv_dw.red, conv_dw.cols) == (8, 2 * 16, 27)
    assert conv_fwd.macs == conv_dw.macs
