"""The bench skeleton: figures keep their captions, claims give verdicts, pick follows the level."""

from __future__ import annotations

import pytest

from dnninfer.bench import BenchArgs, Claim, Figures, claim_rows
from dnninfer.bench.claims import lookup

RESULT = {"ours": {"speedup": 1.5, "exact": True, "nested": {"err": 2e-6}, "gone": None}}


def test_a_skipped_plot_does_not_shift_later_captions(tmp_path):
    figs = Figures(tmp_path)
    with figs.plot("a.png", "first") as (_, ax):
        ax.plot([0, 1], [0, 1])
    with pytest.raises(RuntimeError), figs.plot("b.png", "skipped") as (_, ax):
        raise RuntimeError("no data for this plot")
    with figs.plot("c.png", "third", ncols=2) as (_, axes):
        axes[1].bar([0], [1])
    assert [(f.path.name, f.caption) for f in figs] == [("a.png", "first"), ("c.png", "third")]
    assert all(f.path.stat().st_size > 1000 for f in figs)
    assert not (tmp_path / "b.png").exists()


def test_claim_verdicts_and_their_negative_controls():
    higher = Claim("speedup", "1.4x", "speedup", target=1.4, fmt="x")
    assert higher.status(RESULT) == "met" and higher.text(RESULT) == "1.50x"
    assert Claim("speedup", "2x", "speedup", target=2.0).status(RESULT) == "short"
    assert Claim("speedup", "1.6x", "speedup", target=1.6, tolerance=0.1).status(RESULT) == "met"
    lower = Claim("error", "", "nested.err", target=1e-5, better="lower")
    assert lower.status(RESULT) == "met"
    assert Claim("error", "", "nested.err", target=1e-7, better="lower").status(RESULT) == "short"
    assert Claim("exact", ours="exact", target=True).status(RESULT) == "met"
    assert Claim("exact", ours="exact", target=False).status(RESULT) == "short"
    assert Claim("energy", "20%", "gone", target=0.2).status(RESULT) == "not measured"
    assert Claim("energy", "20%", "missing.key", target=0.2).status(RESULT) == "not measured"
    assert Claim("info", ours="speedup").status(RESULT) == "no target"
    assert Claim("broken fn", ours=lambda r: r["ours"]["absent"]).status(RESULT) == "not measured"
    row = claim_rows([Claim("energy", "20%", "gone", basis="predicted")], RESULT)[0]
    assert row["ours"] == "not measured" and row["basis"] == ""  # no basis for a figure we do not have
    assert lookup(RESULT, "nested.err") == 2e-6 and lookup(RESULT, "speedup.x") is None


def test_pick_follows_the_level():
    full, quick, smoke = BenchArgs(), BenchArgs(quick=True), BenchArgs(smoke=True)
    assert [a.level for a in (full, quick, smoke)] == ["full", "quick", "smoke"]
    assert [a.pick("F", "Q", "S") for a in (full, quick, smoke)] == ["F", "Q", "S"]
    assert smoke.pick("F", "Q") == "Q"  # a smoke run without its own setting runs the quick one
