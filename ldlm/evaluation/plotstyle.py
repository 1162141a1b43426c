"""One look for every figure: a colour per model and recipe variant, labels, panel size, saving.

Figures are `matplotlib.figure.Figure` objects made without pyplot, so drawing and saving them
never needs (or changes) a display backend; a notebook shows one inline (`display(fig)`) as a PNG.
"""
from __future__ import annotations

import contextlib
import io
from pathlib import Path

import matplotlib.figure
import seaborn as sns
from matplotlib import rc_context
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from ..config import VARIANTS
from ..io import atomic_path
from ..kinds.registry import KINDS
from .results import DEGENERATE_ENTROPY_GAP, DEGENERATE_REP_4

PANEL_WIDTH, PANEL_HEIGHT = 3.5, 2.8  # inches: one single-column figure per panel

# A colour, marker and label per model kind (ldlm.kinds.registry) and recipe variant (config.VARIANTS): the full
# recipe is LDLM (same colour); each ablation variant has its own colour in every figure.
_CB = sns.color_palette("colorblind").as_hex()
# "reference": held-out text; "uniform": the uniform time distribution (diagnostic figures)
PALETTE = {**{k.name: k.colour for k in KINDS.values()}, "reference": "#000000",
           **{name: v.colour for name, v in VARIANTS.items()}, "uniform": _CB[7]}
MARKERS = {**{k.name: k.marker for k in KINDS.values()}, "reference": "*"}
LABELS = {**{k.name: k.label for k in KINDS.values()}, "reference": "held-out text",
          **{name: v.label for name, v in VARIANTS.items()}}
DATASET_LINES = ["-", "--", ":", "-."]  # one line style per dataset, in order of appearance
# Degenerate samples (results.degenerate, in at least one seed): their low Gen PPL rewards repetition, so
# the figures mark them as the tables do (†): hatched bars, hollow markers.
DEGENERATE_LABEL = (f"degenerate (rep-4 > {DEGENERATE_REP_4:g} or entropy\n"
                    f"> {DEGENERATE_ENTROPY_GAP:g} nat below held-out text)")
DEGENERATE_HATCH = "////"

_RC = {**sns.axes_style("whitegrid"), **sns.plotting_context("paper"), "legend.fontsize": 7.5,
       "legend.title_fontsize": 7.5, "axes.titlesize": 9, "figure.dpi": 100}


class Figure(matplotlib.figure.Figure):
    """A Figure that shows itself as a PNG in Jupyter (made without pyplot, no inline backend draws it)."""

    def _repr_png_(self) -> bytes:
        buffer = io.BytesIO()
        self.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
        return buffer.getvalue()


def label(key: str) -> str:
    return LABELS.get(key, str(key))


@contextlib.contextmanager
def style():
    """The figures' rc settings for the block only: importing or drawing never changes the caller's."""
    with rc_context(_RC):
        yield


def new_figure(rows: int = 1, cols: int = 1, height: float = PANEL_HEIGHT, **kw) -> tuple[Figure, list]:
    """A figure of rows x cols single-column panels (constrained layout: labels never overlap)."""
    fig = Figure(figsize=(PANEL_WIDTH * cols, height * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False, **kw)
    return fig, [ax for row in axes for ax in row]


def legend_below(fig: Figure, axes, ncol: int = 4) -> None:
    """One legend for all panels, under them (each label once)."""
    handles = {}
    for ax in axes:
        for handle, text in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(text, handle)
        if ax.get_legend() is not None:
            ax.get_legend().remove()
    if handles:
        fig.legend(handles.values(), handles.keys(), loc="outside lower center", ncol=min(ncol, len(handles)),
                   frameon=False)


def key_legend(ax, models=(), lines: dict | None = None, extra=(), **kw) -> None:
    """A compact legend of what colour (models or variants) and line style (e.g. dataset, batch) mean;
    `extra`: more handles (e.g. degenerate_handle())."""
    handles = [Line2D([], [], color=PALETTE.get(m, "0.5"), marker=MARKERS.get(m), ms=4, label=label(m)) for m in models]
    handles += [Line2D([], [], color="0.4", ls=ls, label=text) for text, ls in (lines or {}).items()]
    handles += list(extra)
    ax.legend(handles=handles, **kw)


def degenerate_handle(bar: bool = False):
    """The legend entry of the degenerate mark: a hatched patch (bars) or a hollow marker."""
    if bar:
        return Patch(facecolor="white", edgecolor="0.2", hatch=DEGENERATE_HATCH, label=DEGENERATE_LABEL)
    return Line2D([], [], ls="", marker="o", ms=4, mfc="white", mec="0.2", label=DEGENERATE_LABEL)


def hollow(ax, x, y, colour, marker: str = "o", ms: float = 4) -> None:
    """Draw the points (x, y) as hollow markers over the filled ones there: the degenerate mark."""
    ax.scatter(x, y, marker=marker, s=ms ** 2, facecolors="white", edgecolors=colour, linewidths=1, zorder=4)


def compact(value: float, _=None) -> str:
    """1500 -> '1.5k', 20 -> '20', 0.5 -> '0.5': tick labels that fit a narrow panel."""
    return f"{value / 1000:g}k" if abs(value) >= 1000 else f"{value:g}"


def log_axis(ax, which: str = "y") -> None:
    """Log scale with ticks at 1, 2 and 5 per decade, labelled compactly (no 4x10^3 crowding)."""
    axis = ax.yaxis if which == "y" else ax.xaxis
    (ax.set_yscale if which == "y" else ax.set_xscale)("log")
    axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(compact))
    axis.set_minor_formatter(NullFormatter())


def save(fig: Figure, figures_dir: Path, name: str) -> list[Path]:
    paths = []
    for ext in ("png", "pdf"):
        path = Path(figures_dir) / f"{name}.{ext}"
        with atomic_path(path, suffix=f".{ext}") as tmp:
            fig.savefig(tmp, format=ext, dpi=200, bbox_inches="tight")
        paths.append(path)
    return paths
