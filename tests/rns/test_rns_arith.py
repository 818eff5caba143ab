"""RNS arithmetic: moduli checks, forward/reverse conversion, signed CRT, RRNS detect/correct."""

import itertools
import math

import pytest
import torch

from dnninfer.errors import UserError
from dnninfer.rns.arith import ModuliSet, crt, from_residues, rrns_decode, special_moduli, to_residues
from dnninfer.rns.kernels import CandidateTable, decode_tiles


def _rand_signed(ms: ModuliSet, n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    lim = ms.max_signed
    vals = torch.randint(-lim, lim + 1, (n,), generator=g, dtype=torch.int64)
    return torch.cat([vals, torch.tensor([0, 1, -1, lim, -lim])])


@pytest.mark.parametrize("moduli", [(31, 32, 33), (63, 64, 65), (127, 128, 129), (7, 11, 13, 17, 19, 23, 29, 31)])
def test_crt_round_trip_signed(moduli):
    ms = ModuliSet(moduli)
    x = _rand_signed(ms, 5000)
    res = to_residues(x, ms)
    assert res.shape == (len(moduli), len(x))
    assert bool((res >= 0).all()) and all(bool((res[i] < m).all()) for i, m in enumerate(moduli))
    assert torch.equal(from_residues(res, ms), x)


def test_crt_large_dynamic_range():
    """~2^45 range: past float64's exact-sum limit, so the int64 CRT path runs; also CRT = x mod M."""
    ms = ModuliSet((8191, 8192, 8193, 65))  # 2^13 - 1 (prime), 2^13, 3 * 2731, 5 * 13: co-prime
    assert ms.bits > 45
    x = _rand_signed(ms, 2000, seed=1)
    assert torch.equal(from_residues(to_residues(x, ms), ms), x)
    assert torch.equal(crt(to_residues(x, ms), ms), torch.remainder(x, ms.M))


def test_special_moduli_family_and_range():
    assert special_moduli(5) == (31, 32, 33)
    assert ModuliSet(special_moduli(6)).M == 63 * 64 * 65
    with pytest.raises(UserError):
        special_moduli(1)


@pytest.mark.parametrize("moduli, pair", [((31, 32, 34), "32 and 34"), ((15, 16, 21), "15 and 21")])
def test_non_coprime_moduli_are_a_user_error(moduli, pair):
    with pytest.raises(UserError, match=f"co-prime.*{pair}"):
        ModuliSet(moduli)


def test_redundant_moduli_must_exceed_information_moduli():
    with pytest.raises(UserError, match="exceed"):
        ModuliSet((31, 32, 33), (29, 37))
    with pytest.raises(UserError, match="co-prime"):
        ModuliSet((31, 32, 33), (37, 62))
    with pytest.raises(UserError):
        ModuliSet((1, 2))
    with pytest.raises(UserError, match="int64"):
        ModuliSet((2**31 - 1, 2**31, 2**31 + 1))


def _inject_single_errors(ms: ModuliSet, x: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Residues of x with exactly one residue per element replaced by a different value."""
    g = torch.Generator().manual_seed(seed)
    res = to_residues(x, ms)
    which = torch.randint(0, len(ms.all_moduli), (len(x),), generator=g)
    mods = ms.moduli_tensor[which]
    shift = 1 + (torch.rand(len(x), generator=g) * (mods - 1).double()).long()  # 1 .. m-1: always a change
    res[which, torch.arange(len(x))] = torch.remainder(res[which, torch.arange(len(x))] + shift, mods)
    return res, which


def test_rrns_detects_and_corrects_every_single_residue_error():
    ms = ModuliSet((31, 32, 33), (37, 41))
    x = _rand_signed(ms, 4000, seed=2)
    clean = rrns_decode(to_residues(x, ms), ms)
    assert torch.equal(clean.values.long(), x) and clean.detected == 0
    res, _ = _inject_single_errors(ms, x, seed=3)
    # negative control: plain CRT over the information moduli gets the corrupted ones wrong
    wrong = from_residues(res[: ms.n], ms) != x
    assert int(wrong.sum()) > 0.5 * len(x)
    dec = rrns_decode(res, ms)
    assert dec.detected == len(x) and dec.corrected == len(x) and dec.uncorrectable == 0
    assert torch.equal(dec.values.long(), x)


def test_rrns_detection_only_policy_erases():
    ms = ModuliSet((31, 32, 33), (37, 41))
    x = _rand_signed(ms, 500, seed=4)
    res, _ = _inject_single_errors(ms, x, seed=5)
    dec = rrns_decode(res, ms, correct=False)
    assert dec.detected == len(x) and dec.corrected == 0
    assert bool((dec.values == 0).all())


def test_one_redundant_modulus_detects_single_errors():
    ms = ModuliSet((31, 32, 33), (37,))
    x = _rand_signed(ms, 1000, seed=6)
    res, _ = _inject_single_errors(ms, x, seed=7)
    dec = rrns_decode(res, ms)
    assert dec.detected == len(x) and dec.corrected == 0 and dec.uncorrectable == len(x)


def test_three_redundant_moduli_detect_double_errors():
    """k = 3 (distance 4): single errors corrected, every double error detected (never mis-corrected)."""
    ms = ModuliSet((31, 32, 33), (37, 41, 43))
    x = _rand_signed(ms, 600, seed=8)
    res = to_residues(x, ms)
    g = torch.Generator().manual_seed(9)
    for e, (i, j) in enumerate(itertools.cycle(itertools.combinations(range(6), 2))):
        if e == len(x):
            break
        for idx in (i, j):
            m = ms.all_moduli[idx]
            res[idx, e] = (res[idx, e] + 1 + int(torch.randint(0, m - 1, (1,), generator=g))) % m
    dec = rrns_decode(res, ms)
    assert dec.detected == len(x) and dec.corrected == 0 and dec.uncorrectable == len(x)


def test_fused_kernel_matches_reference_decoder():
    """decode_tiles (numba) == rrns_decode (torch) on raw dot-product sums with injected errors."""
    for moduli, red in (((31, 32, 33), ()), ((31, 32, 33), (37, 41)), ((63, 64, 65), (67, 71, 73))):
        ms = ModuliSet(moduli, red)
        x = _rand_signed(ms, 3 * 4 * 50 - 5, seed=10)
        res, _ = _inject_single_errors(ms, x, seed=11) if red else (to_residues(x, ms), None)
        g = torch.Generator().manual_seed(12)
        mods = ms.moduli_tensor.view(-1, 1)
        raw = (res + mods * torch.randint(0, 40, res.shape, generator=g)).float()  # un-reduced sums
        ref = rrns_decode(res, ms)
        got, counters = decode_tiles(raw.view(len(ms.all_moduli), 3, 4, 50), CandidateTable(ms))
        assert torch.equal(got.flatten().long(), ref.values.long())
        assert list(counters[1:]) == [ref.detected, ref.corrected, ref.uncorrectable]


def test_noise_model_error_rate_matches_gaussian_rounding():
    """P(residue changes) = erfc(0.5 / (sigma sqrt 2)) for readout noise sigma (in residue steps)."""
    ms = ModuliSet((31, 32, 33))
    raw = torch.zeros(3, 1, 400, 500)
    table = CandidateTable(ms)
    for sigma in (0.2, 0.3):
        u = torch.rand(raw.shape, generator=torch.Generator().manual_seed(13))
        _, counters = decode_tiles(raw, table, sigma, u)
        rate = counters[0] / raw.numel()
        expect = math.erfc(0.5 / (sigma * math.sqrt(2)))
        assert abs(rate - expect) < 5 * math.sqrt(expect / raw.numel()) + 1e-4
