"""Figures of the experiments, drawn with matplotlib's Agg canvas (no display, no global backend).

- :func:`difference_boxplot`: paired F1 differences to a reference per method and class,
  like the MS-ME paper's Figs. 2b-c and 3c-e: boxes are quartiles, whiskers reach the data
  within 1.5 IQR, stars give the Wilcoxon significance, the dashed line is the reference.
- :func:`recalibration_plot`: mean pairwise cosine distance of Marker Excite outputs per
  layer with the standard deviation as error bars (Supplementary Fig. 6).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from fluoseg.io import atomic_path


def _save(figure: Figure, path: str | Path) -> Path:
    """Render to PNG atomically."""
    path = Path(path)
    FigureCanvasAgg(figure)
    with atomic_path(path, overwrite=True) as temporary:
        figure.savefig(temporary, format="png", dpi=120, bbox_inches="tight")
    return path


def difference_boxplot(differences: Sequence[dict[str, Any]], tests: Sequence[dict[str, Any]], path: str | Path, *,
                       reference: str, classes: Sequence[str] | None = None) -> Path:
    """Boxplots of ``F1(method) - F1(reference)``, one panel per class (in ``classes`` order), one box per method."""
    present = list(dict.fromkeys(d["class"] for d in differences))
    classes = [c for c in classes if c in present] if classes else present
    methods = list(dict.fromkeys(d["method"] for d in differences))
    significance = {(t["method"], t["class"]): t["stars"] for t in tests}
    figure = Figure(figsize=(1.2 + 1.1 * len(methods) * len(classes), 4.0))
    axes = figure.subplots(1, len(classes), squeeze=False, sharey=True)[0]
    for ax, class_name in zip(axes, classes):
        shown = [m for m in methods if any(d["method"] == m and d["class"] == class_name for d in differences)]
        data = [[d["difference"] for d in differences if d["method"] == m and d["class"] == class_name] for m in shown]
        ax.axhline(0.0, color="0.4", linestyle="--", linewidth=1)
        if data:
            ax.boxplot(data, whis=1.5, widths=0.6, flierprops={"markersize": 3})
            ax.set_xticks(range(1, len(shown) + 1), shown, rotation=30, ha="right")
            top = max(max(values) for values in data if values)
            for i, m in enumerate(shown, start=1):
                n = len(data[i - 1])
                ax.annotate(f"{significance.get((m, class_name), '')}\nn={n}", (i, top), xytext=(0, 4),
                            textcoords="offset points", ha="center", va="bottom", fontsize=8)
        ax.set_title(class_name)
        ax.margins(y=0.2)
    axes[0].set_ylabel(f"F1 relative to {reference}")
    figure.suptitle(f"Paired F1 differences to {reference} (two-sided Wilcoxon signed-rank)", fontsize=10)
    return _save(figure, path)


def recalibration_plot(rows: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Horizontal bars of mean cosine distance per ME layer (forward order top to bottom), one panel per member."""
    members = list(dict.fromkeys(r["member"] for r in rows))
    figure = Figure(figsize=(4.5 * len(members), 0.4 * max(len(rows) // max(len(members), 1), 3) + 1.2))
    axes = figure.subplots(1, len(members), squeeze=False)[0]
    for ax, member in zip(axes, members):
        mine = [r for r in rows if r["member"] == member]
        labels = [r["label"] for r in mine]
        positions = list(range(len(mine)))[::-1]
        ax.barh(positions, [r["mean_cosine_distance"] for r in mine], xerr=[r["sd_cosine_distance"] for r in mine],
                color="tab:orange", capsize=3)
        ax.set_yticks(positions, labels)
        ax.set_xlabel("mean pairwise cosine distance")
        ax.set_title(member)
    figure.suptitle("Marker Excite recalibration strength per layer", fontsize=10, y=1.02)
    return _save(figure, path)
