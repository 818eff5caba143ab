"""Inverse calibration of the Mirage cost model: the fast model equals the forward one, the search recovers
a known constant set from the ratios it produced, and reports non-existence for impossible ratios."""

import math

import pytest

from dnninfer.rns.inverse import RANGES, TARGETS, FastModel, calibrate
from dnninfer.rns.photonic import Gemm, Workload, compare, load_config

TOY = Workload("toy", 4, (Gemm(4096, 576, 128, "fwd"), Gemm(4096, 128, 576, "dx"), Gemm(128, 4096, 576, "dw"),
                          Gemm(256, 1024, 1024, "fwd")))
SMALL = Workload("small", 2, (Gemm(1024, 256, 64, "fwd"), Gemm(64, 1024, 256, "dw")))
KEYS = ("speedup_iso_energy", "edp_ratio_iso_energy", "power_ratio_iso_area")


@pytest.fixture(scope="module")
def model():
    return FastModel([TOY, SMALL])


def _forward(model, values):
    sa, core = model.cores(values)
    r = compare([TOY, SMALL], sa, core)
    return {k: r[k] for k in KEYS}


def test_every_searched_constant_has_a_range_around_its_cited_value():
    for r in RANGES:
        cited = load_config(r.config).constants[r.key].value
        assert r.lo <= cited <= r.hi, r.name
        assert len(r.source) > 10 and ("one source" in r.source or ".." in r.source), r.name


@pytest.mark.parametrize("corner", ["cited", "lo_hi"])
def test_fast_model_equals_the_forward_model(model, corner):
    values = {} if corner == "cited" else {r.name: (r.hi if i % 2 else r.lo) for i, r in enumerate(RANGES)}
    fast, slow = model.ratios(values), _forward(model, values)
    for k in KEYS:
        assert math.isclose(fast[k], slow[k], rel_tol=1e-9), k


def test_search_recovers_a_known_constant_set(model):
    """Positive control: ratios the forward model gives for a known set of two constants (the rest
    cited; three ratios pin two constants) are reproduced by the search over those two, and the set it
    finds is the known one."""
    free = [r for r in RANGES if r.name in ("mirage.modulator_energy_fj_per_bit", "systolic.fp32_mult_pj")]
    known = {"mirage.modulator_energy_fj_per_bit": 120.0, "systolic.fp32_mult_pj": 6.0}
    targets = _forward(model, known)
    res = calibrate(model, targets, ranges=free, rtol=1e-4, seed=1, maxiter=40, popsize=10)
    assert res.exists
    for k in KEYS:
        assert math.isclose(res.reached[k], targets[k], rel_tol=1e-3)
    for name, v in known.items():
        assert math.isclose(res.values[name], v, rel_tol=0.01), (name, res.values[name])
    consts = res.constants()
    assert math.isclose(consts["systolic.fp32_mult_pj"]["factor_from_cited"], 6.0 / 3.7, rel_tol=0.05)


def test_search_reports_no_set_for_impossible_ratios(model):
    """Negative control: at iso-energy EDP ratio >= speedup^2 for every constant set, so speedup 10 with
    EDP 50 (< 100) cannot be met, whatever the ranges; nor can the paper's triple (EDP 32.1 < 23.8^2)."""
    res = calibrate(model, {"speedup_iso_energy": 10.0, "edp_ratio_iso_energy": 50.0}, seed=0, maxiter=15,
                    popsize=6)
    assert not res.exists
    assert res.reached["edp_ratio_iso_energy"] >= res.reached["speedup_iso_energy"] ** 2 * 0.999
    paper = calibrate(model, TARGETS, seed=0, maxiter=15, popsize=6)
    assert not paper.exists and paper.max_log_error > math.log(1.5)
