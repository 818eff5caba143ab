"""Figures of a bench: each plot is saved with its caption, so the two can never drift apart.

A bench used to return a list of image paths and its report a parallel list of captions; a plot
skipped for lack of data then shifted every later caption onto the wrong image. Here a caption
is given where the plot is drawn and travels with its path. Plots are drawn on a bare
``matplotlib.figure.Figure`` (no pyplot state, no backend switch, nothing to close), so a bench
can plot in a server or a test process without touching global matplotlib settings.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["DPI", "Figure", "Figures"]

DPI = 110


@dataclass(frozen=True)
class Figure:
    """One saved plot and what it shows."""

    path: Path
    caption: str


class Figures:
    """The plots of one bench result, in the order drawn.

    ``with figs.plot("name.png", "caption", figsize=(8, 4)) as (fig, ax): ...`` saves the figure
    under ``outdir`` when the block ends and records (path, caption); a block that raises saves
    nothing and records nothing.
    """

    def __init__(self, outdir: Path | str) -> None:
        self.outdir = Path(outdir)
        self.items: list[Figure] = []

    @contextmanager
    def plot(
        self,
        name: str,
        caption: str,
        *,
        figsize: tuple[float, float] = (8.0, 4.5),
        nrows: int = 1,
        ncols: int = 1,
        **subplots: Any,
    ) -> Iterator[tuple[Any, Any]]:
        """Yield ``(fig, axes)`` (``axes`` as ``Figure.subplots`` returns them); save on exit."""
        from matplotlib.figure import Figure as MplFigure  # lazy: registering a bench stays cheap

        fig = MplFigure(figsize=figsize, layout="constrained")
        axes = fig.subplots(nrows, ncols, **subplots)
        yield fig, axes
        self.outdir.mkdir(parents=True, exist_ok=True)
        path = self.outdir / name
        fig.savefig(path, dpi=DPI)
        self.items.append(Figure(path, caption))

    @property
    def paths(self) -> list[Path]:
        return [f.path for f in self.items]

    def __iter__(self) -> Iterator[Figure]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)
