"""Figures of an evaluation: mIoU after k clicks, per-class NoC as a radar chart (the SkipClick
paper's Figure 1 for WSESeg) and the RClicks protocol's NoC per clicking group. matplotlib is
imported here only, on first use. Each PNG replaces the previous one atomically."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..utils.files import atomic_write


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")   # files only; no display on servers
    import matplotlib.pyplot as plt
    return plt


def _save(fig: Any, path: Path) -> None:
    """The figure as PNG at ``path``, written atomically, then closed."""
    png = io.BytesIO()
    fig.savefig(png, format="png")
    _pyplot().close(fig)
    atomic_write(path, png.getvalue())


def plot_miou_curves(curves: Mapping[str, Sequence[float]], path: Path, title: str = "") -> None:
    """One line per dataset (or model): mean IoU after k = 1, 2, ... clicks, saved as PNG."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for name, values in curves.items():
        ax.plot(np.arange(1, len(values) + 1), np.asarray(values) * 100, marker="o", markersize=3, label=name)
    ax.set_xlabel("number of clicks")
    ax.set_ylabel("mIoU (%)")
    ax.set_xticks(np.arange(0, max(len(v) for v in curves.values()) + 1, 2))
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    _save(fig, path)


def plot_radar(series: Mapping[str, Mapping[str, float]], path: Path, title: str = "") -> None:
    """Radar chart: one axis per class, one closed polygon per series (e.g. NoC@85 and NoC@90,
    or one per model), saved as PNG. Classes are those of the first series, in its order."""
    plt = _pyplot()
    classes = list(next(iter(series.values())))
    angles = np.linspace(0, 2 * np.pi, len(classes), endpoint=False)
    fig, ax = plt.subplots(figsize=(6.4, 6.4), dpi=120, subplot_kw={"projection": "polar"})
    for name, values in series.items():
        radii = [values[c] for c in classes]
        ax.plot(np.append(angles, angles[0]), radii + radii[:1], marker="o", markersize=3, label=name)
        ax.fill(np.append(angles, angles[0]), radii + radii[:1], alpha=0.1)
    ax.set_xticks(angles)
    ax.set_xticklabels([c.replace("flickr_", "").replace("_", " ") for c in classes], fontsize=8)
    ax.legend(loc="upper right", bbox_to_anchor=(1.25, 1.1), fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    _save(fig, path)


def plot_noc_per_group(curves: Mapping[str, Sequence[float]], baselines: Mapping[str, float], path: Path,
                       title: str = "", threshold: str = "NoC@90") -> None:
    """The RClicks protocol's NoC per clicking group (G1 = least likely click locations), one line
    per dataset (or model), with the baseline clicker's NoC of each as a dashed line of its colour."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2 + 0.2 * len(curves)), dpi=120)
    for name, values in curves.items():
        x = np.arange(1, len(values) + 1)
        (line,) = ax.plot(x, values, marker="o", markersize=3, label=name)
        if name in baselines:
            ax.axhline(baselines[name], color=line.get_color(), linestyle="--", linewidth=1,
                       label=f"{name}: baseline clicker")
    n = max(len(v) for v in curves.values())
    ax.set_xticks(np.arange(1, n + 1))
    ax.set_xticklabels([f"G{g}" for g in range(1, n + 1)])
    ax.set_xlabel("clicking group (G1: least likely locations)")
    ax.set_ylabel(f"mean {threshold}")
    ax.grid(alpha=0.3)
    # Below the axes: the curves fill the plot from G1 to G10.
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    _save(fig, path)
