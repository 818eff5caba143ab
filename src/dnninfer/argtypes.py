"""argparse ``type=`` helpers for numeric options, shared by every CLI.

Checking a value where it is parsed gives one line naming the flag (``dnninfer run: argument
--bandwidth-mbps: expected a finite number > 0, got 'nan'``) instead of a nan travelling into a
planner, or a 0 quietly turning a feature off. Each helper raises `argparse.ArgumentTypeError`,
which argparse reports with the flag's name; the `dnninfer` parser turns that into a UserError.

API (stable; other areas use it): `finite_float`, `positive_float`, `nonneg_float`,
`bounded_float(lo, hi)`, `positive_int`, `nonneg_int`, `bounded_int(lo, hi)`, `seed`, `batch`,
`input_shape`, `threads`, and the limits `MAX_SEED`, `MAX_BATCH`, `MAX_INPUT_ELEMENTS`, `MAX_THREADS`.
"""

from __future__ import annotations

import math
from argparse import ArgumentTypeError
from collections.abc import Callable
from typing import TypeVar

__all__ = [
    "MAX_BATCH",
    "MAX_INPUT_ELEMENTS",
    "MAX_SEED",
    "MAX_THREADS",
    "batch",
    "bounded_float",
    "bounded_int",
    "finite_float",
    "input_shape",
    "nonneg_float",
    "nonneg_int",
    "positive_float",
    "positive_int",
    "seed",
    "threads",
]

_T = TypeVar("_T")

#: Seeds are unsigned 64-bit at most in torch; 2**63 - 1 also fits numpy and int64 tensors.
MAX_SEED = 2**63 - 1
#: Largest example input `input_shape` accepts: 2**31 elements (8 GiB of float32) is already
#: more than any model here should be probed with; beyond it the allocation alone fails or thrashes.
MAX_INPUT_ELEMENTS = 2**31
#: Largest example batch: past it even the digits models' activations outgrow a small box.
MAX_BATCH = 4096
#: Most intra-op threads an option accepts; more only oversubscribes the host.
MAX_THREADS = 256


def _shown(text: str) -> str:
    """The value as typed, quoted and cut short (a 400-digit number stays readable)."""
    return repr(text) if len(text) <= 40 else repr(text[:37] + "...")


def _float(text: str, what: str) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise ArgumentTypeError(f"expected {what}, got {_shown(text)}") from None
    if not math.isfinite(value):
        raise ArgumentTypeError(f"expected {what}, got {_shown(text)}")
    return value


def _int(text: str, what: str) -> int:
    try:
        return int(text)
    except (TypeError, ValueError):
        raise ArgumentTypeError(f"expected {what}, got {_shown(text)}") from None


def _require(value: _T, ok: bool, what: str, text: str) -> _T:
    if not ok:
        raise ArgumentTypeError(f"expected {what}, got {_shown(text)}")
    return value


def finite_float(text: str) -> float:
    """Any finite number (no nan, no inf)."""
    return _float(text, "a finite number")


def positive_float(text: str) -> float:
    """A finite number > 0: a bandwidth, a rate, a weight that must not vanish."""
    value = _float(text, "a finite number > 0")
    return _require(value, value > 0, "a finite number > 0", text)


def nonneg_float(text: str) -> float:
    """A finite number >= 0: a delay, a noise level."""
    value = _float(text, "a finite number >= 0")
    return _require(value, value >= 0, "a finite number >= 0", text)


def bounded_float(lo: float, hi: float) -> Callable[[str], float]:
    """A finite number in ``[lo, hi]``: for options whose extremes would hang or overflow."""
    what = f"a number in [{lo:g}, {hi:g}]"

    def parse(text: str) -> float:
        value = _float(text, what)
        return _require(value, lo <= value <= hi, what, text)

    parse.__name__ = f"float in [{lo:g}, {hi:g}]"
    return parse


def bounded_int(lo: int, hi: int, *, shown: str | None = None) -> Callable[[str], int]:
    """An integer in ``lo..hi`` (inclusive): counts whose extremes would run for hours or allocate
    without bound are refused before any work starts. `shown` words the range (``0..2**63-1``)."""
    what = f"an integer in {shown or f'{lo}..{hi}'}"

    def parse(text: str) -> int:
        value = _int(text, what)
        return _require(value, lo <= value <= hi, what, text)

    parse.__name__ = what.removeprefix("an ")
    return parse


def positive_int(text: str) -> int:
    """An integer >= 1."""
    value = _int(text, "an integer >= 1")
    return _require(value, value >= 1, "an integer >= 1", text)


def nonneg_int(text: str) -> int:
    """An integer >= 0."""
    value = _int(text, "an integer >= 0")
    return _require(value, value >= 0, "an integer >= 0", text)


seed = bounded_int(0, MAX_SEED, shown="0..2**63-1")
seed.__doc__ = "A random seed: an integer in 0..2**63-1 (what every RNG used here accepts)."
seed.__name__ = "seed"

batch = bounded_int(1, MAX_BATCH)
batch.__doc__ = "A batch size: an integer in 1..MAX_BATCH."
batch.__name__ = "batch"

threads = bounded_int(1, MAX_THREADS)
threads.__doc__ = "An intra-op thread count: an integer in 1..MAX_THREADS."
threads.__name__ = "threads"


def input_shape(text: str) -> tuple[int, ...]:
    """``"1,3,224,224"`` (or ``1x3x224x224``) -> (1, 3, 224, 224): positive integers whose product
    is at most `MAX_INPUT_ELEMENTS`, so a typo cannot ask for terabytes."""
    what = "positive integers like 1,3,224,224"
    parts = str(text).replace("x", ",").split(",")
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        raise ArgumentTypeError(f"expected {what}, got {_shown(str(text))}") from None
    if not shape or any(d <= 0 for d in shape):
        raise ArgumentTypeError(f"expected {what}, got {_shown(str(text))}")
    total = math.prod(shape)
    if total > MAX_INPUT_ELEMENTS:
        size = str(total) if total < 10**15 else f"about 10^{int(math.log10(total))}"
        raise ArgumentTypeError(f"expected at most 2**31 elements in all, got {size} from {_shown(str(text))}")
    return shape
