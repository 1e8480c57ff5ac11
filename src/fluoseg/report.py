"""Figures for people: markers, ground truth, prediction and errors side by side."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # figures are written to files; never open a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from fluoseg.io import atomic_path  # noqa: E402

ERROR_COLOURS = {"true positive": (1.0, 1.0, 1.0), "false positive": (1.0, 0.2, 0.2), "false negative": (0.2, 0.6, 1.0)}


def error_map(prediction: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """RGB image: true positives white, false positives red, false negatives blue."""
    rgb = np.zeros(prediction.shape + (3,), dtype=np.float32)
    pred, gt = prediction.astype(bool), truth.astype(bool)
    for (name, colour), where in zip(ERROR_COLOURS.items(), (pred & gt, pred & ~gt, ~pred & gt)):
        rgb[where] = colour
    return rgb


def _contrast(channel: np.ndarray) -> np.ndarray:
    low, high = np.percentile(channel, (1, 99.5))
    return np.clip((channel - low) / max(high - low, 1e-6), 0, 1)


def segmentation_figure(
    path: str | Path,
    image: np.ndarray,
    channel_names: Sequence[str],
    truth: np.ndarray,
    prediction: np.ndarray,
    class_names: Sequence[str],
    *,
    used_markers: Sequence[str] | None = None,
    scores: dict[str, float] | None = None,
    title: str = "",
) -> Path:
    """Write a PNG with one row of marker channels and, per class, truth / prediction / errors.

    Parameters
    ----------
    image
        ``(C, Y, X)`` raw image.
    truth, prediction
        ``(n_classes, Y, X)`` 0/1 masks.
    used_markers
        Markers the model was given; the others are shown greyed out as "not used".
    scores
        F1 per class, shown in the panel titles.
    """
    n_markers, n_classes = image.shape[0], len(class_names)
    columns = max(n_markers, 3)
    fig, axes = plt.subplots(1 + n_classes, columns, figsize=(2.6 * columns, 2.7 * (1 + n_classes)), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    used = set(used_markers or channel_names)
    for i, name in enumerate(channel_names):
        shown = name in used
        axes[0, i].imshow(_contrast(image[i]), cmap="gray", alpha=1.0 if shown else 0.25)
        axes[0, i].set_title(name if shown else f"{name} (not used)", fontsize=9)
    for c, name in enumerate(class_names):
        row = axes[1 + c]
        score = f" F1={scores[name]:.3f}" if scores and name in scores else ""
        row[0].imshow(truth[c], cmap="gray")
        row[0].set_title(f"{name}: truth", fontsize=9)
        row[1].imshow(prediction[c], cmap="gray")
        row[1].set_title(f"{name}: prediction{score}", fontsize=9)
        row[2].imshow(error_map(prediction[c], truth[c]))
        row[2].set_title("errors: FP red, FN blue", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return _save(fig, path)


def _save(fig: plt.Figure, path: str | Path, dpi: int = 90) -> Path:
    """Render to PNG atomically, then free the figure."""
    path = Path(path)
    with atomic_path(path, overwrite=True) as temporary:
        fig.savefig(temporary, format="png", dpi=dpi)
    plt.close(fig)
    return path


def _outlines(labels: np.ndarray) -> np.ndarray:
    """Pixels on an object's edge (a 4-neighbour has another label)."""
    edge = np.zeros(labels.shape, bool)
    edge[:-1] |= labels[:-1] != labels[1:]
    edge[1:] |= labels[1:] != labels[:-1]
    edge[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    edge[:, 1:] |= labels[:, 1:] != labels[:, :-1]
    return edge & (labels > 0)


def instance_overlay_figure(path: str | Path, panels: Sequence[tuple[str, np.ndarray, np.ndarray, np.ndarray | None]],
                            *, title: str = "") -> Path:
    """One panel per image: the image in grey, predicted outlines magenta, true outlines green.

    Parameters
    ----------
    panels
        ``(caption, image (Y, X), predicted labels, true labels or None)`` per panel.
    """
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.4), squeeze=False)
    for ax, (caption, image, predicted, truth) in zip(axes[0], panels):
        rgb = np.repeat(_contrast(np.asarray(image, np.float32))[..., None], 3, axis=2)
        if truth is not None:
            rgb[_outlines(np.asarray(truth))] = (0.2, 1.0, 0.2)
        rgb[_outlines(np.asarray(predicted))] = (1.0, 0.2, 1.0)
        ax.imshow(rgb)
        ax.set_title(caption, fontsize=9)
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return _save(fig, path, dpi=100)
