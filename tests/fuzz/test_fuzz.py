"""The fuzz campaign: the quick run over every surface finds nothing, and the classifier provably
can fail (fake surfaces that crash, accept bad input, hang or print a malformed error), so a
zero count means "nothing found", not "nothing checked"."""

from __future__ import annotations

import json
import shutil
import signal
import sqlite3
import threading
import time

import pytest

from conftest import quick_bench
from dnninfer.fuzz import Case, Result, run_case, run_surface, summarise
from dnninfer.fuzz.classify import one_line_error
from dnninfer.fuzz.drivers import cli_result, run_cli

ZERO = ("crashes", "hangs", "accepted_bad", "bad_errors")


def _case(run, label="bad", kind="fake"):
    return Case("fake", kind, label, f"fake {kind}", run)


def _raise():
    raise RuntimeError("bare exception from a broken surface")


# -- the campaign ---------------------------------------------------------------------------------
def test_quick_campaign_finds_no_crash_hang_accepted_bad_or_bad_error():
    code, out = quick_bench("fuzz")  # the same run as the bench contract test
    obj = json.loads(out)
    assert code == 0 and obj["system"] == "fuzz" and obj["quick"] is True
    ours = obj["ours"]
    setup = [f"setup error {r['surface']}: {r['error']}" for r in obj["rows"] if r.get("row") == "setup_error"]
    assert not setup, setup
    assert set(ours["cases_tried"]) == {"yaml", "model", "jpeg", "ledger", "cli"}
    # the suite runs --smoke (SMOKE_SIZES, ~100 cases; --quick is ~290): every case asked for ran
    assert ours["cases_tried"] == ours["sizes"]
    assert ours["cases_total"] == sum(ours["cases_tried"].values()) >= 100
    for s in ours["by_surface"].values():  # every surface had bad inputs to reject and valid ones to accept
        assert s["labels"]["bad"] > 0 and s["labels"]["valid"] > 0
    failures = [f"{r['failure']} {r['surface']}/{r['kind']}: {r['input'][:120]} -> {r['what'][:160]}"
                for r in obj["rows"] if r.get("row") == "failure" and r["failure"] != "rejected_valid"]
    assert {k: ours[k] for k in ZERO} == dict.fromkeys(ZERO, 0), "\n".join(failures)


def test_cases_are_deterministic_for_a_seed_and_differ_across_seeds(tmp_path):
    from dnninfer.fuzz import cliargs, configs, ledger, models

    def listing(seed, work):
        out = []
        for fn in (configs.cases, models.cases, ledger.cases, cliargs.cases):
            out += [(c.surface, c.kind, c.label, c.describe, c.preview) for c in fn(25, seed, work)]
        return out

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "c").mkdir()
    first = listing(3, tmp_path / "a")
    assert first == listing(3, tmp_path / "b")  # another temp folder: paths are normalised away
    assert first != listing(4, tmp_path / "c")


# -- negative controls: the classifier can fail ----------------------------------------------------------------
def test_fake_surfaces_are_counted_as_crash_accepted_bad_hang_and_bad_error():
    cases = [
        _case(_raise, kind="raises"),
        _case(lambda: Result("accepted", 0), kind="accepts_bad"),
        _case(lambda: time.sleep(5), kind="sleeps"),
        _case(lambda: cli_result(2, "usage: dnninfer run ...\ndnninfer: error: bad"), kind="two_lines"),
        _case(lambda: Result("rejected", 2, "dnninfer: error: fine"), kind="rejects"),  # control: not a failure
        _case(lambda: Result("accepted", 0), label="maybe", kind="mutant"),
    ]
    start = time.monotonic()
    s = summarise(run_surface("fake", cases, limit_s=0.3))
    assert time.monotonic() - start < 3  # the sleeper was cut off at its limit
    assert (s["crashes"], s["accepted_bad"], s["hangs"], s["bad_errors"], s["valid_mutants"]) == (1, 1, 1, 1, 1)
    assert s["by_surface"]["fake"]["ok"] == 1 and s["cases_total"] == 6
    kinds = {r["kind"]: r["failure"] for r in s["failures"]}
    assert kinds == {"raises": "crash", "accepts_bad": "accepted_bad", "sleeps": "hang", "two_lines": "bad_error"}


def test_hang_is_detected_off_the_main_thread_too():
    out = {}
    t = threading.Thread(target=lambda: out.update(v=run_case(_case(lambda: time.sleep(3)), 0.2)))
    t.start()
    t.join(5)
    assert out["v"].outcome == "hang"


def test_case_limit_restores_an_outer_timer():
    old = signal.signal(signal.SIGALRM, lambda *a: None)
    try:
        signal.setitimer(signal.ITIMER_REAL, 30)
        assert run_case(_case(lambda: Result("rejected", 2, "dnninfer: error: x")), 5).outcome == "ok"
        left, _ = signal.getitimer(signal.ITIMER_REAL)
        assert 25 < left <= 30
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def test_real_cli_driver_classifies_crashes_tracebacks_and_bare_argparse(monkeypatch):
    import argparse

    import dnninfer.cli as cli

    assert run_cli(["models", "--no-such-flag"]).status == "rejected"  # one line, exit 2: fine
    assert run_cli(["models", "--no-such-flag"]).error_ok

    def boom(args):
        raise ValueError("a bug")

    monkeypatch.setattr(cli, "cmd_devices", boom)
    r = run_cli(["devices"])
    assert r.status == "crash" and "ValueError: a bug" in r.detail

    def traceback_but_zero(args):
        import sys

        print("Traceback (most recent call last):\n  oops", file=sys.stderr)

    monkeypatch.setattr(cli, "cmd_devices", traceback_but_zero)
    assert run_cli(["devices"]).status == "crash"

    def bare_argparse(args):
        argparse.ArgumentParser(prog="x").parse_args(["--nope"])

    monkeypatch.setattr(cli, "cmd_devices", bare_argparse)
    r = run_cli(["devices"])
    assert r.status == "rejected" and not r.error_ok and "SystemExit" in r.message


def test_one_line_error_rule():
    assert one_line_error("dnninfer: error: model: expected a zoo name, got 'x'\n")
    assert not one_line_error("dnninfer: error: a\nsecond line\n")
    assert not one_line_error("error: a\n")
    assert not one_line_error("dnninfer: error:\n")
    assert not one_line_error("")


def test_http_statuses_are_classified():
    from dnninfer.fuzz.jpeg import http_result

    assert http_result(200, "{}").status == "accepted"
    assert http_result(500, '{"error": "internal error: boom", "status": 500}').status == "crash"
    ok = http_result(415, '{"error": "unsupported content type", "status": 415}')
    assert ok.status == "rejected" and ok.error_ok
    assert not http_result(400, '{"error": "two\\nlines", "status": 400}').error_ok
    assert not http_result(404, '{"error": "unknown model", "status": 404}').error_ok  # not 400/413/415
    assert not http_result(400, "not json").error_ok


# -- the oracles that label cases -----------------------------------------------------------------------------------
def test_yaml_labels_follow_the_schema():
    from dnninfer.cost.profiles import Cluster, DeviceProfile, LinkProfile
    from dnninfer.fuzz.configs import slot_at, value_label

    bw = slot_at(LinkProfile, ("bandwidth_mbps",))
    assert [value_label(bw, v) for v in (5, 0, -1, float("nan"), float("inf"), "abc", None, 1e300)] == \
        ["valid", "bad", "bad", "bad", "bad", "bad", "bad", "maybe"]
    assert value_label(slot_at(Cluster, ("default_link",)), None) == "valid"  # optional
    assert value_label(slot_at(Cluster, ("nodes", 0, "name")), "") == "bad"  # min_length 1
    assert value_label(slot_at(DeviceProfile, ("pus", 0, "kind")), "tpu") == "bad"
    assert value_label(slot_at(DeviceProfile, ("pus", 0, "cores")), 2.5) == "bad"
    assert value_label(slot_at(DeviceProfile, ("pus", 0, "op_speed", "conv")), 2.0) == "valid"
    assert slot_at(DeviceProfile, ("no_such_field",)) is None


def test_cli_value_labels():
    from dnninfer.fuzz.cliargs import Opt, label_value

    stages = Opt("--stages", "int", 1)
    assert [label_value(stages, v) for v in ("3", "0", "-1", "nan", "", "1e3", "1_0", str(10**30))] == \
        ["valid", "bad", "bad", "bad", "bad", "bad", "valid", "maybe"]
    bw = Opt("--bandwidth-mbps", "float", 0, lo_open=True, safe=(1, 1e9))
    assert [label_value(bw, v) for v in ("10", "0", "inf", "1e309", "0.5")] == ["valid", "bad", "bad", "bad", None]
    slots = Opt("--slots", "int", 1, safe=(1, 200), huge_runs=False)
    assert label_value(slots, str(10**30)) is None and label_value(slots, "500") is None  # not run: legitimately long


def test_ledger_oracle_tells_genuine_content_from_damage(tmp_path):
    from dnninfer.fuzz.ledger import _make_base, logical_label, read_rows

    base = _make_base(tmp_path)
    original = read_rows(base)
    assert original is not None
    rows = sorted(original[1], key=lambda r: r[2])
    copy = tmp_path / "copy.db"

    def damaged(sql, params=()):
        shutil.copyfile(base, copy)
        con = sqlite3.connect(copy)
        con.execute(sql, params)
        con.commit()
        con.close()
        return logical_label(original, copy)

    assert damaged("SELECT 1") == "maybe"
    assert damaged("DELETE FROM blocks WHERE hash = ?", (rows[-1][0],)) == "maybe"  # a shorter genuine chain
    assert damaged("DELETE FROM blocks WHERE hash = ?", (rows[2][0],)) == "bad"  # orphans its children
    assert damaged("UPDATE blocks SET body = body || ' ' WHERE hash = ?", (rows[1][0],)) == "bad"
    assert damaged("UPDATE meta SET value = 'x' WHERE key = 'format'") == "bad"
    copy.write_bytes(b"not sqlite at all" * 10)
    assert logical_label(original, copy) == "bad"


def test_unknown_surface_is_a_user_error():
    from dnninfer.errors import UserError
    from dnninfer.fuzz import run_campaign

    with pytest.raises(UserError, match="fuzz surface"):
        run_campaign(surfaces=["nope"])


def test_cli_oracle_knows_stated_upper_bounds_and_huge_ints():
    """The full run once counted '0෭𑁧𑋰𝟲୬' (Unicode digits, 71268 > 4096) as a valid --alignment."""
    from dnninfer.fuzz.cliargs import Opt, label_value
    from dnninfer.fuzz.configs import as_float

    opt = Opt("--alignment", "int", 1, hi=4096)
    assert label_value(opt, "4096") == "valid" and label_value(opt, "1") == "valid"
    assert label_value(opt, "4097") == "bad" and label_value(opt, "0෭𑁧𑋰𝟲୬") == "bad" and label_value(opt, "0") == "bad"
    assert as_float(10**400) == float("inf") and as_float(-(10**400)) == float("-inf") and as_float(1e308) == 1e308
