"""Surface ``cli``: values of the numeric options of the main commands (nan, inf, -1, 0, huge, empty,
non-numeric, Unicode digits, hypothesis-drawn number-like strings).

Each option states its domain (integer or float, lower bound, open or closed) and a safe window:
in-domain values that would legitimately run for long or allocate gigabytes on this shared box
(``--slots 10**9``, ``--batch 10**8``) are not generated; absurd values past ``HUGE`` are, where
the work they ask for fails fast (an overflow, an allocation refused) instead of running. Labels come
from the domain alone: unparsable or out-of-domain -> ``bad``, in-domain -> ``valid``, in-domain but
absurd (>= ``HUGE``) or ambiguous (e.g. a negative seed) -> ``maybe``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from dnninfer.fuzz.classify import Case
from dnninfer.fuzz.drivers import run_cli

__all__ = ["COMMANDS", "Command", "Opt", "cases", "label_value"]

from dnninfer.argtypes import MAX_BATCH, MAX_SEED
from dnninfer.fuzz.configs import as_float
from dnninfer.ledger.cli import MAX_DEMO_BLOCKS, MAX_EXPECTED_HASHES

SURFACE = "cli"
HUGE = 1e15

#: Values every numeric option is tried with.
GENERIC = ("nan", "NaN", "inf", "-inf", "Infinity", "1e309", "-1e309", "-1", "-2", "-1e-9", "-0.0", "-0",
           "0", "0.0", "1", "2", "3", "0.5", "1e-300", "1e30", str(10**30), str(2**63), str(2**64), "1e308",
           "", " ", "abc", "1,5", "0x10", "1e3", "1_0", " 7 ", "+3", "١٢", "½", "None", "true", "--", "5.5",
           "9" * 400)


@dataclass(frozen=True)
class Opt:
    """A numeric option: its domain and the window of in-domain values that are safe to run here."""

    flag: str
    kind: str  # "int" | "float"
    lo: float | None = None
    lo_open: bool = False
    hi: float | None = None  # stated upper bound (argtypes.bounded_int/float): above it is bad
    safe: tuple[float, float] = (-math.inf, math.inf)
    huge_runs: bool = True  # values >= HUGE fail fast (overflow/allocation) rather than run for long
    maybe_below: float | None = None  # in-domain values below this are ambiguous (seeds < 0, ...)
    maybe_above: float | None = None  # in-domain values above this are ambiguous (batch > 1 for an MCU)


@dataclass(frozen=True)
class Command:
    name: str
    base: tuple[str, ...]
    opts: tuple[Opt, ...]
    fresh_path: bool = False  # base ends with a path that must not exist yet (ledger demo)


def _batch() -> Opt:
    return Opt("--batch", "int", 1, hi=MAX_BATCH, safe=(1, 4096))


def _seed(flag: str = "--seed") -> Opt:
    return Opt(flag, "int", 0, hi=MAX_SEED)


COMMANDS: tuple[Command, ...] = (
    Command("run", ("run", "digits_mlp", "--json"), (
        Opt("--stages", "int", 1), _batch(), _seed(),
        Opt("--bandwidth-mbps", "float", 0, lo_open=True, safe=(1.0, math.inf)))),
    Command("run-rtt", ("run", "digits_mlp", "--json", "--bandwidth-mbps", "1000"), (
        Opt("--rtt-ms", "float", 0, safe=(0, 50), huge_runs=False),)),
    Command("inspect", ("inspect", "digits_mlp", "--json"), (_batch(), _seed())),
    Command("partition", ("partition", "digits_mlp", "--cluster", "edge3", "--host-estimate", "flops", "--json"), (
        Opt("--bandwidth-mbps", "float", 0, lo_open=True), _batch(), _seed())),
    Command("mcu-plan", ("mcu", "plan", "digits-cnn", "--json"), (
        Opt("--alignment", "int", 1, hi=4096), Opt("--segment-bytes", "int", 1, hi=1 << 30))),
    Command("mcu-plan-zoo", ("mcu", "plan", "digits_mlp", "--json"),
            (Opt("--batch", "int", 1, hi=MAX_BATCH, safe=(1, 4096), maybe_above=1),)),
    Command("quant-train", ("quant", "train", "--method", "signed", "--epochs", "1", "--json"), (
        Opt("--epochs", "int", 1, safe=(1, 2), huge_runs=False), Opt("--width", "float", 0, lo_open=True,
                                                                     safe=(0.05, 4)),
        Opt("--batch-size", "int", 1), Opt("--lr", "float", 0, lo_open=True), _seed())),
    Command("dpra-simulate", ("dpra", "simulate", "--model", "digits_mlp", "--host-estimate", "flops", "--slots",
                              "5", "--json"), (
        Opt("--slots", "int", 1, safe=(1, 200), huge_runs=False), Opt("--V", "float", 0, lo_open=True),
        Opt("--segments", "int", 1), _seed())),
    Command("schedule", ("schedule", "digits_mlp", "--repeats", "0", "--no-profile", "--json"), (
        Opt("--max-streams", "int", 1), _batch(),
        Opt("--repeats", "int", 0, safe=(0, 3), huge_runs=False), Opt("--threads", "int", 1, safe=(1, 2),
                                                                         huge_runs=False), _seed())),
    Command("ledger-show", ("ledger", "show", "{ledger}", "--json"), (Opt("--last", "int", 0),)),
    Command("ledger-demo", ("ledger", "demo", "{fresh}", "--blocks", "2", "--expected-hashes", "64", "--json"), (
        Opt("--blocks", "int", 0, hi=MAX_DEMO_BLOCKS, safe=(0, 5), huge_runs=False),
        Opt("--expected-hashes", "float", 1, hi=MAX_EXPECTED_HASHES, safe=(1, 4096), huge_runs=False), _seed()),
            fresh_path=True),
)


def _parse(opt: Opt, text: str) -> float | int | None:
    """The value argparse's ``type=`` would give, or None when it rejects the text."""
    try:
        return int(text) if opt.kind == "int" else float(text)
    except (ValueError, OverflowError):
        return None


def label_value(opt: Opt, text: str) -> str | None:
    """``bad`` / ``valid`` / ``maybe`` for one value, or None when it is unsafe to run here."""
    v = _parse(opt, text)
    if v is None:
        return "bad"
    fv = as_float(v)
    if math.isnan(fv) or (math.isinf(fv) and opt.kind == "float"):
        return "bad"
    if opt.lo is not None and (fv < opt.lo or (opt.lo_open and fv <= opt.lo)):
        return "bad"
    if opt.hi is not None and (fv > opt.hi or (isinstance(v, int) and v > opt.hi)):
        return "bad"
    lo, hi = opt.safe
    if abs(fv) >= HUGE:
        return "maybe" if opt.huge_runs else None
    if not lo <= fv <= hi:
        return None
    if (opt.maybe_below is not None and fv < opt.maybe_below) or (opt.maybe_above is not None and fv > opt.maybe_above):
        return "maybe"
    return "valid"


def _values(rng: random.Random, seed: int, n: int) -> list[str]:
    from hypothesis import strategies as st

    from dnninfer.fuzz.mutate import draw

    numberish = st.from_regex(r"\A[+-]?(\d{1,24}|\d{0,6}\.\d{1,6}([eE][+-]?\d{1,3})?|nan|inf|)\Z", fullmatch=True)
    junk = st.text(max_size=6)
    drawn = draw(st.one_of(numberish, numberish, junk), max(8, n // 4), seed)
    pool = list(GENERIC) + [v for v in drawn if "\x00" not in v]
    rng.shuffle(pool)
    return pool


def cases(n: int, seed: int, work: Path) -> Iterator[Case]:
    """``n`` cases over every (command, option), values cycling through the pool."""
    import itertools

    from dnninfer.fuzz.mutate import rng_for

    rng = rng_for(seed, SURFACE)
    try:
        ledger: Path | None = _base_ledger(work / "cli")
    except Exception:  # the ledger surface reports a broken ledger package as its setup error
        ledger = None
    pool = _values(rng, seed, n)
    slots = [(c, o) for c in COMMANDS for o in c.opts if ledger is not None or "{ledger}" not in c.base]
    values = itertools.cycle(pool)
    made, tries = 0, 0
    while made < n and tries < 50 * n:
        tries += 1
        cmd, opt = slots[tries % len(slots)]
        text = next(values)
        label = label_value(opt, text)
        if label is None:
            continue
        argv = [a.replace("{ledger}", str(ledger)) for a in cmd.base]
        if cmd.fresh_path:
            argv = [a.replace("{fresh}", str(work / "cli" / f"demo_{made}.db")) for a in argv]
        extra = [f"{opt.flag}={text}"] if rng.random() < 0.5 or text.startswith("-") else [opt.flag, text]
        argv = _drop_flag(argv, opt.flag) + extra
        shown = " ".join(a if a and " " not in a else repr(a) for a in argv)
        made += 1
        yield Case(SURFACE, f"{cmd.name} {opt.flag}", label, f"{opt.flag} {text!r} ({opt.kind})",
                   lambda argv=argv: run_cli(argv, work),
                   preview=f"dnninfer {shown}".replace(str(work), "<tmp>")[:300])


def _drop_flag(argv: list[str], flag: str) -> list[str]:
    """argv without ``flag VALUE`` (the base sets some options the case overrides)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == flag:
            skip = True
            continue
        out.append(a)
    return out


def _base_ledger(folder: Path) -> Path:
    """A small valid ledger for ``ledger show`` (made once per campaign)."""
    import random as _random

    from dnninfer.ledger.demo import demo_params, extend_demo
    from dnninfer.ledger.receipt import Keyring
    from dnninfer.ledger.store import create_ledger

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "base.db"
    if not path.exists():
        params = demo_params(expected_hashes=64)
        with create_ledger(path, params, Keyring.derive(params.gateways, "fuzz-cli")) as lg:
            extend_demo(lg, 3, _random.Random(0))
    return path
