"""DPRA (Lyapunov partitioning + reputation-weighted PoW): solver optimality, equivalences, long-run behaviour."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest
from scipy.optimize import LinearConstraint, minimize

from dnninfer.bdt.dpra import (
    METHODS,
    Channel,
    DPRAConfig,
    Workload,
    allocate,
    simulate,
    solve_slot,
    v_sweep,
    vgg16_workload,
    workload_from_blocks,
)
from dnninfer.errors import UserError
from dnninfer.ledger.consensus import HASH_SPACE, stake_target, update_reputation

SLOTS = 300
GHZ = 1e9


# ---------------------------------------------------------------------------- an independent f solver


def scipy_allocate(c: np.ndarray, a: np.ndarray, F: np.ndarray, f_min: float, ap_of: np.ndarray) -> float:
    """min sum c_g/f_g + 1/sum a_m f_blk_m s.t. AP budgets and f >= f_min, by SLSQP in GHz (trust-constr when
    SLSQP stops at an infeasible point); returns the value, NaN if neither finds a feasible point."""
    idx = np.flatnonzero(~np.isnan(c))
    n, m_count = len(idx), len(F)

    def obj(x: np.ndarray) -> float:
        return float(np.sum(c[idx] / GHZ / x[:n]) + 1.0 / np.dot(a * GHZ, x[n:]))

    rows = np.zeros((m_count, n + m_count))  # budget rows: sum_g f_inf + f_blk <= F
    for m in range(m_count):
        rows[m, :n] = ap_of[idx] == m
        rows[m, n + m] = 1.0
    share = [F[m] / GHZ / (1 + np.sum(ap_of[idx] == m)) for m in range(m_count)]
    x0 = np.array([share[ap_of[g]] for g in idx] + share)
    bounds = [(f_min / GHZ, F[ap_of[g]] / GHZ) for g in idx] + [(f_min / GHZ, F[m] / GHZ) for m in range(m_count)]
    cons = [{"type": "ineq", "fun": lambda x: F / GHZ - rows @ x}]
    best = float("nan")
    for method, kw in (("SLSQP", {"ftol": 1e-15, "maxiter": 1000}), ("trust-constr", {"gtol": 1e-12, "xtol": 1e-14})):
        constraints = cons if method == "SLSQP" else [LinearConstraint(rows, -np.inf, F / GHZ)]
        res = minimize(obj, x0, method=method, bounds=bounds, constraints=constraints, options=kw)
        if np.all(rows @ res.x <= F / GHZ + 1e-9) and np.all(res.x >= f_min / GHZ - 1e-12):  # 1 Hz of slack
            best = float(res.fun) if np.isnan(best) else min(best, float(res.fun))
            break
    return best


def f_part(c: np.ndarray, f_inf: np.ndarray, big_s: float) -> float:
    off = ~np.isnan(c)
    return float(np.sum(c[off] / f_inf[off]) + 1.0 / big_s)


def test_allocate_matches_scipy_on_random_instances():
    rng = np.random.default_rng(7)
    hit_blk_floor = hit_inf_floor = done = 0
    while done < 30:
        g, m_count = int(rng.integers(1, 5)), int(rng.integers(1, 3))
        ap_of = rng.integers(0, m_count, g)
        F = rng.uniform(1 * GHZ, 5 * GHZ, m_count)
        f_min = float(rng.choice([1e7, 1e8, 3e8]))
        if any((np.sum(ap_of == m) + 1) * f_min > F[m] for m in range(m_count)):
            continue
        c = np.exp(rng.uniform(np.log(1e3), np.log(1e10), g))
        c[rng.random(g) < 0.25] = np.nan  # gateways that keep everything local
        a = np.exp(rng.uniform(np.log(1e-11), np.log(1e-8), m_count))
        f_inf, f_blk, big_s = allocate(c[None], a, F, f_min, ap_of)
        f_inf, f_blk = f_inf[0], f_blk[0]
        ours, ref = f_part(c, f_inf, big_s[0]), scipy_allocate(c, a, F, f_min, ap_of)
        if np.isnan(ref):
            continue
        assert ours == pytest.approx(ref, rel=1e-5)
        assert ours <= ref * (1 + 1e-9)  # never worse than the generic solver
        used = np.array([f_inf[ap_of == m].sum() + f_blk[m] for m in range(m_count)])
        assert np.all(used <= F * (1 + 1e-12))
        assert np.all(f_blk >= f_min) and np.all(f_inf[~np.isnan(c)] >= f_min) and np.all(f_inf[np.isnan(c)] == 0)
        assert big_s[0] == pytest.approx(float(f_blk @ a), rel=1e-12)
        hit_blk_floor += int(np.any(np.isclose(f_blk, f_min)))
        hit_inf_floor += int(np.any(np.isclose(f_inf[~np.isnan(c)], f_min)))
        done += 1
    assert hit_blk_floor and hit_inf_floor  # the instances exercise both lower bounds, not only interiors


# ---------------------------------------------------------------------------- split search vs brute force


def brute_force(wl: Workload, cfg: DPRAConfig, rates, q, rho, v) -> list[tuple[float, tuple[int, ...]]]:
    """Objective of every split vector, f solved by SLSQP; sorted best first."""
    a = np.array([stake_target(cfg.t0, cfg.kappa, r) / HASH_SPACE for r in rho]) / cfg.C_h
    out = []
    for s in itertools.product(range(wl.L + 1), repeat=cfg.gateways):
        s = np.array(s)
        off = s < wl.L
        c = np.where(off, wl.w_top[s], np.nan)
        tx = np.where(off, wl.d[s] / rates, 0.0)
        fixed = float(np.sum(wl.w_low[s] / cfg.f_gw + tx))
        u = np.array([np.sum(np.where(off & (cfg.ap_of == m), wl.w_top[s], 0.0)) for m in range(cfg.aps)])
        u = u / (cfg.F * cfg.tau)
        f_cost = scipy_allocate(c, a, cfg.F, cfg.f_min, cfg.ap_of)
        assert not np.isnan(f_cost)
        obj = v * (fixed + f_cost) - float(q @ u)
        out.append((obj, tuple(int(x) for x in s)))
    return sorted(out)


def small_instance(rng: np.random.Generator, big_l: int, g: int):
    m_count = int(rng.integers(1, 3))
    cfg = DPRAConfig(
        gateways=g,
        aps=m_count,
        attach=tuple(int(x) for x in rng.integers(0, m_count, g)),
        f_gateway=tuple(rng.uniform(0.5, 2.0, g) * GHZ),
        F_ap=tuple(rng.uniform(2.0, 5.0, m_count) * GHZ),
        kappa=float(rng.uniform(0, 4)),
        u_th=0.1,
        snr_db=10.0,
        seed=int(rng.integers(1000)),
    )
    wl = Workload(w=rng.uniform(0.05, 0.5, big_l) * GHZ, d=rng.uniform(0.2, 8.0, big_l + 1) * 1e6, name="rand")
    rates = rng.uniform(5e6, 80e6, g)
    return wl, cfg, rates, rng.uniform(0, 3, m_count), rng.uniform(0, 0.6, m_count), float(rng.uniform(0.2, 5))


@pytest.mark.parametrize(("big_l", "g", "seed"), [(4, 2, 0), (3, 3, 1), (2, 3, 2), (4, 3, 3), (1, 3, 4), (4, 1, 5)])
def test_solve_slot_equals_brute_force(big_l, g, seed):
    wl, cfg, rates, q, rho, v = small_instance(np.random.default_rng(seed), big_l, g)
    table = brute_force(wl, cfg, rates, q, rho, v)
    got = solve_slot(wl, cfg, rates, q, rho, V=v)
    best, best_s = table[0]
    assert got.objective == pytest.approx(best, rel=1e-5)
    if len(table) == 1 or table[1][0] - best > 1e-4 * abs(best):
        assert tuple(got.s) == best_s
    bcd = solve_slot(wl, cfg, rates, q, rho, V=v, mode="bcd")
    assert bcd.objective >= got.objective - 1e-9 * abs(got.objective)  # exact is never beaten


def test_decision_is_consistent():
    wl, cfg = vgg16_workload(), DPRAConfig()
    rates = Channel(cfg).rates(3)
    q, rho = np.array([2.0, 0.1]), np.array([0.2, 0.1])
    dec = solve_slot(wl, cfg, rates, q, rho)
    off = dec.s < wl.L
    assert np.all(dec.f_inf[~off] == 0) and np.all(dec.f_inf[off] >= cfg.f_min) and np.all(dec.f_blk >= cfg.f_min)
    used = np.bincount(cfg.ap_of, weights=dec.f_inf, minlength=cfg.aps) + dec.f_blk
    assert np.all(used <= cfg.F * (1 + 1e-12))
    top = wl.d[dec.s] / rates + wl.w_top[dec.s] / np.maximum(dec.f_inf, 1)
    lat = wl.w_low[dec.s] / cfg.f_gw + np.where(off, top, 0)
    np.testing.assert_allclose(dec.latency, lat, rtol=1e-12)
    a = np.array([stake_target(cfg.t0, cfg.kappa, r) for r in rho]) / HASH_SPACE / cfg.C_h
    assert dec.consensus_latency == pytest.approx(1.0 / float(dec.f_blk @ a), rel=1e-12)
    u = np.bincount(cfg.ap_of, weights=np.where(off, wl.w_top[dec.s], 0), minlength=cfg.aps) / (cfg.F * cfg.tau)
    np.testing.assert_allclose(dec.u, u, rtol=1e-12)
    assert dec.objective == pytest.approx(cfg.V * dec.total_latency - float(q @ u), rel=1e-12)


def test_auto_switches_to_bcd_beyond_the_exact_limit():
    wl = vgg16_workload()
    cfg = DPRAConfig(gateways=5, attach=(0, 1, 0, 1, 0), snr_db=15.0)  # 7^5 = 16807 > EXACT_LIMIT
    rates, q, rho = Channel(cfg).rates(0), np.array([1.0, 0.5]), np.array([0.1, 0.2])
    auto = solve_slot(wl, cfg, rates, q, rho)
    bcd = solve_slot(wl, cfg, rates, q, rho, mode="bcd")
    assert np.array_equal(auto.s, bcd.s) and auto.objective == bcd.objective
    with pytest.raises(UserError, match="bcd"):
        solve_slot(
            wl,
            dataclasses.replace(cfg, gateways=7, attach=(0,) * 7),
            np.full(7, 1e7),
            np.zeros(2),
            np.zeros(2),
            mode="exact",
        )


# ---------------------------------------------------------------------------- equivalences


def assert_same_run(x, y):
    for name in ("s", "f_inf", "f_blk", "u", "Q", "rho", "latency", "consensus_latency"):
        np.testing.assert_array_equal(getattr(x, name), getattr(y, name), err_msg=name)


def test_u_th_zero_reproduces_myopic():
    wl, cfg = vgg16_workload(), DPRAConfig(u_th=0.0)
    dpra, myopic = simulate(wl, cfg, 80, "dpra"), simulate(wl, cfg, 80, "myopic")
    assert np.all(dpra.Q == 0)
    assert_same_run(dpra, myopic)
    assert np.any(dpra.s < wl.L)  # not trivially equal: both offload in some slots


def test_kappa_zero_reproduces_pure_pow(default_runs):
    wl, cfg = vgg16_workload(), DPRAConfig()
    assert_same_run(simulate(wl, dataclasses.replace(cfg, kappa=0.0), SLOTS, "dpra"), default_runs["pure_pow"])
    # negative control: with kappa > 0 reputation makes blocks faster than pure PoW does
    assert default_runs["dpra"].consensus_latency.mean() < default_runs["pure_pow"].consensus_latency.mean()


# ---------------------------------------------------------------------------- long-run behaviour


@pytest.fixture(scope="module")
def default_runs():
    wl, cfg = vgg16_workload(), DPRAConfig()
    return {m: simulate(wl, cfg, SLOTS, m) for m in METHODS}


def test_dpra_meets_the_reputation_constraint_and_myopic_does_not(default_runs):
    dpra, myopic = default_runs["dpra"], default_runs["myopic"]
    assert dpra.constraint_met() and not myopic.constraint_met()
    assert np.all(myopic.avg_u < dpra.u_th - 0.02)
    assert dpra.avg_latency <= 1.05 * myopic.avg_latency  # the price of trust is small
    # myopic offloads only when the channel is good; DPRA also offloads through worse channels
    rates = dpra.rates
    np.testing.assert_array_equal(rates, myopic.rates)  # the same channel realisations
    assert rates[myopic.s < 6].mean() > rates[dpra.s < 6].mean()
    # among the methods that keep the system trustworthy, DPRA has the lowest latency
    for name, res in default_runs.items():
        if name != "dpra" and res.constraint_met():
            assert dpra.avg_latency < res.avg_latency, name


def test_equal_freq_keeps_dpra_splits_but_is_slower(default_runs):
    dpra, eq = default_runs["dpra"], default_runs["equal_freq"]
    np.testing.assert_array_equal(dpra.s, eq.s)
    assert eq.avg_latency > dpra.avg_latency


def test_baselines_do_what_they_say(default_runs):
    wl = vgg16_workload()
    assert np.all(default_runs["all_local"].s == wl.L) and np.all(default_runs["all_local"].f_blk == DPRAConfig().F)
    assert np.all(default_runs["all_offload"].s == 0)
    assert np.all(default_runs["fixed"].s == wl.L // 2)


def test_v_sweep_trades_latency_for_backlog():
    rows = v_sweep(vgg16_workload(), DPRAConfig(), SLOTS, [0.05, 0.5, 5.0, 50.0])
    lat = [r["avg_latency"] for r in rows]
    backlog = [r["avg_backlog"] for r in rows]
    assert all(b <= a * (1 + 1e-3) for a, b in itertools.pairwise(lat)), lat
    assert all(b >= a * (1 - 1e-3) for a, b in itertools.pairwise(backlog)), backlog
    assert lat[0] > lat[-1] * 1.02 and backlog[-1] > 10 * backlog[0]  # the trade-off is real, not flat


def test_on_slot_sees_the_state_and_the_updates_follow_the_ledger():
    wl, cfg = vgg16_workload(), DPRAConfig()
    seen = []
    res = simulate(wl, cfg, 20, "dpra", on_slot=lambda t, dec, st: seen.append((t, dec, st)))
    assert [t for t, _, _ in seen] == list(range(20))
    for t, dec, st in seen:
        np.testing.assert_array_equal(st.Q, res.Q[t])
        np.testing.assert_array_equal(st.rates, Channel(cfg).rates(t))
        assert st.targets == tuple(stake_target(cfg.t0, cfg.kappa, r) for r in res.rho[t])
        np.testing.assert_array_equal(res.Q[t + 1], np.maximum(res.Q[t] + cfg.u_th - dec.u, 0))
        expect = [update_reputation(r, x, cfg.beta) for r, x in zip(res.rho[t], dec.u, strict=True)]
        assert list(res.rho[t + 1]) == expect


# ---------------------------------------------------------------------------- channel, workload, config


def test_channel_is_reproducible_and_unit_mean():
    cfg = DPRAConfig(seed=11)
    a, b = Channel(cfg), Channel(cfg)
    later = [a.rates(t) for t in (5, 2, 9)]
    np.testing.assert_array_equal(later[0], b.rates(5))
    np.testing.assert_array_equal(later[2], b.rates(9))
    assert not np.array_equal(Channel(DPRAConfig(seed=12)).rates(5), later[0])
    gains = np.stack([a.gains(t) for t in range(3000)])
    assert gains.mean() == pytest.approx(1.0, abs=0.03) and gains.var() == pytest.approx(1.0, abs=0.1)
    snr = 10 ** (np.asarray(cfg.snr_db) / 10)
    np.testing.assert_allclose(a.rates(4), cfg.bandwidth_hz * np.log2(1 + snr * a.gains(4)))


def test_workload_from_blocks():
    wl = workload_from_blocks([0.1, 0.2, 0.3], [1000, 500], in_bytes=2000, out_bytes=40, hz=1e9)
    np.testing.assert_allclose(wl.w, [1e8, 2e8, 3e8])
    np.testing.assert_allclose(wl.d, [16000, 8000, 4000, 320])
    same = workload_from_blocks([0.1, 0.2, 0.3], [1000, 500, 99], in_bytes=2000, out_bytes=40, hz=1e9)
    np.testing.assert_array_equal(same.d, wl.d)  # Graph.chain() out_bytes: the last is the output
    np.testing.assert_allclose(wl.w_top, [6e8, 5e8, 3e8, 0])
    assert vgg16_workload().L == 6
    with pytest.raises(UserError, match="cut_bytes"):
        workload_from_blocks([0.1, 0.2, 0.3], [1], in_bytes=1, out_bytes=1)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"f_gateway": -1.0e9}, "f_gateway"),
        ({"F_ap": (4e9, -1.0)}, "F_ap"),
        ({"attach": (0, 1, 2, 0)}, "attach"),
        ({"attach": (0, 1)}, "attach"),
        ({"u_th": 1.5}, "u_th"),
        ({"beta": 0.0}, "beta"),
        ({"f_min": 3e9}, r"F_ap\[0\]"),
        ({"snr_db": (10.0, 20.0)}, "snr_db"),
    ],
)
def test_bad_config_is_a_one_line_user_error(kwargs, match):
    with pytest.raises(UserError, match=match) as err:
        DPRAConfig(**kwargs)
    assert "\n" not in str(err.value)


def test_bad_calls_are_user_errors():
    wl, cfg = vgg16_workload(), DPRAConfig()
    with pytest.raises(UserError, match="method"):
        simulate(wl, cfg, 10, "greedy")
    with pytest.raises(UserError, match="infeasible"):
        simulate(wl, DPRAConfig(u_th=0.9), 10)
    with pytest.raises(UserError, match="rates"):
        solve_slot(wl, cfg, np.ones(3), np.zeros(2), np.zeros(2))
    with pytest.raises(UserError, match="d of length"):
        Workload(w=np.ones(3), d=np.ones(3))
