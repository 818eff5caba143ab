"""`dnninfer rns train|model`: train under emulated RNS / baseline numerics; the photonic cost model."""

from __future__ import annotations

import argparse
from typing import Any

from dnninfer import argtypes as at
from dnninfer.cliutil import emit
from dnninfer.errors import UserError


def _moduli(text: str) -> tuple[int, ...]:
    """Comma-separated moduli >= 2 (ArgumentTypeError, so argparse names the flag)."""
    try:
        vals = tuple(int(v) for v in text.split(","))
    except ValueError:
        vals = ()
    if not vals or any(v < 2 or v > 2**24 for v in vals):
        shown = text if len(text) <= 40 else text[:37] + "..."
        raise argparse.ArgumentTypeError(f"expected comma-separated integers in 2..2**24 such as 31,32,33, "
                                         f"got {shown!r}")
    return vals


def add_commands(sub: Any) -> None:
    from dnninfer.rns.numerics import MODES
    from dnninfer.rns.train import DATASETS

    p = sub.add_parser("rns", help="Mirage: RNS arithmetic for analog DNN training (train, cost model)")
    rsub = p.add_subparsers(dest="rns_command", required=True, parser_class=type(p))

    t = rsub.add_parser("train", help="train on offline data with every GEMM under the chosen numerics")
    t.add_argument("--dataset", default="digits", help=f"one of {', '.join(DATASETS)}")
    t.add_argument("--mode", default="rns", help=f"one of {', '.join(MODES)}")
    t.add_argument("--arch", default=None, help="mlp or cnn (default: the dataset's recipe)")
    t.add_argument("--epochs", type=at.bounded_int(1, 10_000), default=None)
    t.add_argument("--seed", type=at.seed, default=0)
    t.add_argument("--sigma", type=at.nonneg_float, default=0.0,
                   help="analog readout noise, in residue steps (ADC steps "
                   "for fixed_analog)")
    t.add_argument("--redundant", type=at.bounded_int(0, 16), default=0, help="number of redundant moduli (RRNS)")
    t.add_argument("--moduli", type=_moduli, default=(31, 32, 33), help="information moduli, e.g. 63,64,65")
    t.add_argument("--bits", type=at.bounded_int(2, 12), default=6, help="BFP mantissa bits")
    t.add_argument("--block", type=at.bounded_int(1, 1 << 16), default=16,
                   help="BFP block size h (= dot-product length)")
    t.add_argument("--adc-bits", type=at.bounded_int(2, 24), default=6,
                   help="ADC bits of the fixed-point analog baseline")
    t.add_argument("--adc-range", default="worst", choices=["worst", "calibrated"])
    t.add_argument("--quick", action="store_true", help="the quick recipe (fewer epochs)")
    t.add_argument("--threads", type=at.threads, default=1,
                   help="torch intra-op threads (pinned; 1 is fastest for "
                   "these small GEMMs)")
    t.add_argument("--json", action="store_true")
    t.set_defaults(func=cmd_train)

    m = rsub.add_parser("model", help="analytical photonic RNS core vs systolic array (iso-energy, iso-area)")
    m.add_argument("--workloads", nargs="*", default=None,
                   help="zoo models (default: resnet18 resnet50 vgg16 bert_encoder)")
    m.add_argument("--json", action="store_true")
    m.set_defaults(func=cmd_model)


def cmd_train(args: argparse.Namespace) -> None:
    from dnninfer.rns.numerics import MODES
    from dnninfer.rns.train import DATASETS, train

    if args.mode not in MODES:
        raise UserError(f"--mode: expected one of {', '.join(MODES)}, got {args.mode!r}")
    if args.dataset not in DATASETS:
        raise UserError(f"--dataset: expected one of {', '.join(DATASETS)}, got {args.dataset!r}")
    from dnninfer.bench.harness import pinned_threads

    with pinned_threads(args.threads):
        r = train(args.dataset, args.mode, epochs=args.epochs, seed=args.seed, arch=args.arch, sigma=args.sigma,
                  redundant=args.redundant, quick=args.quick, moduli=args.moduli, bits=args.bits,
                  block=args.block, adc_bits=args.adc_bits, adc_range=args.adc_range)
    obj = {**r.summary(), "numerics": r.numerics, "curve": r.curve, "stats": r.stats, "digest": r.digest}
    if args.json:
        emit(args, obj, "")
        return
    emit(args, obj, f"{r.dataset}/{r.arch} trained under {r.mode}", r.curve, ["epoch", "loss", "test_acc"])
    emit(args, r.summary(), "result")


def cmd_model(args: argparse.Namespace) -> None:
    from dnninfer.rns.photonic import PAPER, WORKLOADS, compare, workload

    names = args.workloads or list(WORKLOADS)
    from dnninfer import zoo

    for n in names:
        if n not in zoo.names():
            raise UserError(f"--workloads: expected zoo model names ({', '.join(zoo.names())}), got {n!r}")
    res = compare([workload(n) for n in names])
    obj = {"paper": PAPER, **res}
    if args.json:
        emit(args, obj, "")
        return
    rows = [{"workload": r["workload"], "gmacs": r["gmacs"], "sa_pj_per_mac": r["sa"]["pj_per_mac"],
             "photonic_pj_per_mac": r["iso_area"]["photonic"]["pj_per_mac"],
             "iso_energy_speedup": (r["iso_energy"] or {}).get("speedup"),
             "iso_energy_edp_ratio": (r["iso_energy"] or {}).get("edp_ratio"),
             "iso_area_power_ratio": r["iso_area"]["power_ratio"], "iso_area_edp_ratio": r["iso_area"]["edp_ratio"]}
            for r in res["per_workload"]]
    emit(args, obj, "photonic RNS core vs systolic array (ratios: systolic / photonic)", rows)
    summary = [{"figure": "speedup, iso-energy", "paper": PAPER["speedup_iso_energy"],
                "ours": res["speedup_iso_energy"]},
               {"figure": "EDP ratio, iso-energy", "paper": PAPER["edp_ratio_iso_energy"],
                "ours": res["edp_ratio_iso_energy"]},
               {"figure": "power ratio, iso-area", "paper": PAPER["power_ratio_iso_area"],
                "ours": res["power_ratio_iso_area"]},
               {"figure": "EDP ratio, iso-area", "paper": PAPER["edp_iso_area"], "ours": res["edp_ratio_iso_area"]}]
    emit(args, obj, "mean over workloads vs the paper", summary)
