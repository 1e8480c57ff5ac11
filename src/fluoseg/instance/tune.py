"""Choose decoding parameters (h, foreground threshold, min_size) on validation images.

A trained instance network outputs maps; how they become labels depends on a few numbers
that the training never sees: the h of the h-maxima, the foreground threshold, the smallest
object kept. StarDist tunes its probability and NMS thresholds on the validation images
after training; this module does the same for fluoseg's decoders of
:mod:`fluoseg.instance.postprocess`, given the activated maps of validation images and
their true labels.

Search: a coarse grid over every parameter, then ``rounds`` refinements around the best
combination (the midpoints between the best value and its neighbours in the current grid,
per parameter, crossed). ``min_size`` is a pure post-filter of the decoded labels, so each
image is decoded once per (h, threshold) and filtered for every ``min_size`` candidate.

Scores are pooled over images (counts summed, then ratios), with the matching of
:mod:`fluoseg.metrics.matching`. Objectives (:data:`OBJECTIVES`):

* ``f1_mean`` (default) — pooled F1 averaged over IoU 0.50, 0.55, ..., 0.95;
* ``f1_0.5`` — pooled F1 at IoU 0.5;
* ``accuracy_mean`` — pooled accuracy TP/(TP+FP+FN) averaged over IoU 0.50:0.95;
* ``aji`` — Kumar et al.'s aggregated Jaccard index, pooled as sum C / sum U.

Maps may be at another scale than the truth (scale-normalised models predict on a rescaled
image): after the size filter, decoded labels are then carried to the truth's grid along the
maps resampled there (:func:`regrid_instances`), exactly as inference restores them. Ties keep
the combination tried first. numpy/scipy only (no torch).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fluoseg.errors import FluosegError
from fluoseg.instance.postprocess import (
    labels_from_border_classes,
    labels_from_distance,
    labels_from_threshold,
    regrid_labels,
)
from fluoseg.instance.targets import BORDER
from fluoseg.data.resample import resample_to_shape
from fluoseg.metrics.aji import aggregated_jaccard_index, pool_aji
from fluoseg.metrics.matching import DEFAULT_IOU_THRESHOLDS, matching_at_thresholds, pool_matching
from fluoseg.metrics.overlap import label_overlap

__all__ = ["DEFAULT_GRIDS", "OBJECTIVES", "TuningImage", "TuningResult", "decode_instances", "regrid_instances",
           "score_decoding", "tune_decoding"]

OBJECTIVES = ("f1_mean", "f1_0.5", "accuracy_mean", "aji")

DEFAULT_GRIDS: dict[str, dict[str, tuple[float, ...]]] = {
    "distance": {"h": (0.5, 1.0, 1.5, 2.0, 3.0, 4.0), "threshold": (0.3, 0.4, 0.5, 0.6, 0.7),
                 "min_size": (0, 5, 10, 20, 40)},
    "threshold": {"threshold": (0.3, 0.4, 0.5, 0.6, 0.7), "min_size": (0, 5, 10, 20, 40)},
    "border": {"min_size": (0, 5, 10, 20, 40)},
}
"""Coarse grids per method; ``h`` is in the units of the distance map (pixels at the model's scale)."""

_INTEGER_PARAMETERS = ("min_size",)


@dataclass(frozen=True)
class TuningImage:
    """One validation image: the network's activated maps and the true labels.

    Attributes
    ----------
    maps
        What the method's decoder takes: ``(2, Y, X)`` distance and foreground probability
        (``distance``), ``(1, Y, X)`` or ``(Y, X)`` probability (``threshold``), ``(3, Y, X)``
        class probabilities (``border``).
    truth
        True instance labels ``(Y', X')``; when the shape differs from the maps', decoded labels
        are resized to it.
    name
        Image name (for messages).
    """

    maps: np.ndarray
    truth: np.ndarray
    name: str = ""


@dataclass(frozen=True)
class TuningResult:
    """The chosen decoding parameters and every combination tried.

    Attributes
    ----------
    method
        Decoder (``distance``, ``threshold`` or ``border``).
    objective
        Name of the maximised objective.
    best
        Chosen parameter values, e.g. ``{"h": 1.5, "threshold": 0.5, "min_size": 10}``.
    value
        Objective value of ``best``.
    table
        One row per combination, in the order tried: ``stage`` (``coarse`` / ``fine1``, ...),
        the parameters, ``objective``, ``f1_0.5``, ``f1_mean``, ``n_pred`` and ``n_true``.
    """

    method: str
    objective: str
    best: dict[str, float]
    value: float
    table: list[dict[str, Any]] = field(default_factory=list)


def decode_instances(maps: Any, method: str, *, h: float = 1.0, threshold: float = 0.5,
                     min_size: int = 10) -> np.ndarray:
    """Labels from activated maps with the decoder of ``method`` (as an instance task decodes).

    Raises
    ------
    FluosegError
        For an unknown method or maps of the wrong shape.
    """
    array = np.asarray(maps)
    if method == "distance":
        if array.ndim != 3 or array.shape[0] != 2:
            raise FluosegError(f"distance maps have shape {array.shape}; expected (2, Y, X): distance, foreground")
        return labels_from_distance(array[0], array[1], h=h, threshold=threshold, min_size=int(min_size))
    if method == "threshold":
        plane = array[0] if array.ndim == 3 else array
        return labels_from_threshold(plane, threshold=threshold, min_size=int(min_size))
    if method == "border":
        return labels_from_border_classes(array, min_size=int(min_size))
    raise FluosegError(f"unknown instance method {method!r}; use one of {sorted(DEFAULT_GRIDS)}")


def regrid_instances(labels: np.ndarray, maps: Any, method: str, *, threshold: float = 0.5) -> np.ndarray:
    """Labels decoded by ``method`` at the network's scale, on the grid of ``maps`` resampled to the image
    (as an instance task's ``regrid_labels`` carries them back; :func:`~fluoseg.instance.postprocess.regrid_labels`).

    The object region is the decoder's (foreground above ``threshold``; any class but background
    for ``border``) and the elevation rises where objects meet (the negated distance or
    probability; the border probability). An unknown method, or maps whose grid does not match
    the labels' dimensions, raise :class:`~fluoseg.errors.FluosegError`.
    """
    array = np.asarray(maps)
    if method == "distance":
        region, elevation = array[1] > threshold, -array[0]
    elif method == "threshold":
        plane = array[0] if array.ndim == 3 else array
        region, elevation = plane > threshold, -plane
    elif method == "border":
        region, elevation = np.argmax(array, axis=0) != 0, array[BORDER]
    else:
        raise FluosegError(f"unknown instance method {method!r}; use one of {sorted(DEFAULT_GRIDS)}")
    return regrid_labels(labels, region, elevation)


def _without_small(labels: np.ndarray, min_size: int) -> np.ndarray:
    if min_size <= 1 or not labels.any():
        return labels
    sizes = np.bincount(labels.ravel())
    small = sizes < min_size
    small[0] = False
    return np.where(small[labels], 0, labels) if small.any() else labels


class _TruthGrid:
    """Carries an image's decoded labels to its truth's grid; the maps are resampled there once."""

    def __init__(self, image: TuningImage, method: str) -> None:
        self.image, self.method = image, method
        self._maps: np.ndarray | None = None

    def labels(self, labels: np.ndarray, threshold: float) -> np.ndarray:
        truth = self.image.truth
        if labels.shape == truth.shape:
            return labels
        if self._maps is None:
            maps = np.asarray(self.image.maps)
            maps = maps[None] if maps.ndim == 2 else maps
            self._maps = resample_to_shape(maps, truth.shape, kind="probabilities")
        return regrid_instances(labels, self._maps, self.method, threshold=threshold)


def _pooled_scores(pairs: Sequence[tuple[np.ndarray, np.ndarray]], *, with_aji: bool) -> dict[str, float]:
    """Pooled scores of (truth, prediction) pairs: every objective (AJI only when asked), n_pred, n_true."""
    per_threshold: list[list[Any]] = [[] for _ in DEFAULT_IOU_THRESHOLDS]
    aji = []
    for truth, pred in pairs:
        overlap = label_overlap(truth, pred)
        for k, result in enumerate(matching_at_thresholds(None, None, overlap=overlap)):
            per_threshold[k].append(result)
        if with_aji:
            aji.append(aggregated_jaccard_index(None, None, overlap=overlap))
    pooled = [pool_matching(results) for results in per_threshold]
    return {"f1_mean": float(np.mean([m.f1 for m in pooled])), "f1_0.5": float(pooled[0].f1),
            "accuracy_mean": float(np.mean([m.accuracy for m in pooled])),
            "aji": float(pool_aji(aji).value) if aji else float("nan"),
            "n_pred": int(pooled[0].n_pred), "n_true": int(pooled[0].n_true)}


def score_labels(pairs: Sequence[tuple[np.ndarray, np.ndarray]], *, with_aji: bool = True) -> dict[str, float]:
    """Pooled ``f1_mean``, ``f1_0.5``, ``accuracy_mean``, ``aji``, ``n_pred``, ``n_true`` of
    ``(truth, predicted labels)`` pairs: the objectives :func:`tune_decoding` maximises, for
    predictions that are labels already (detection models)."""
    return _pooled_scores(pairs, with_aji=with_aji)


def score_decoding(images: Sequence[TuningImage], method: str, params: Mapping[str, float]) -> dict[str, float]:
    """Pooled ``f1_mean``, ``f1_0.5``, ``accuracy_mean``, ``aji``, ``n_pred``, ``n_true`` of one setting.

    Parameters
    ----------
    images
        Validation images (maps and truth).
    method
        Decoder name.
    params
        Decoder parameters (``h``, ``threshold``, ``min_size`` as the method takes).

    Returns
    -------
    dict
        The scores, pooled over the images.
    """
    threshold = float(params.get("threshold", 0.5))
    pairs = [(image.truth, _TruthGrid(image, method).labels(decode_instances(image.maps, method, **params), threshold))
             for image in _checked(images)]
    return _pooled_scores(pairs, with_aji=True)


def _checked(images: Sequence[TuningImage]) -> list[TuningImage]:
    items = list(images)
    if not items:
        raise FluosegError("no validation images to tune on; give at least one (maps, truth) pair")
    for image in items:
        if not isinstance(image, TuningImage):
            raise FluosegError("pass the validation images as TuningImage(maps, truth)")
        if np.asarray(image.truth).ndim != 2:
            raise FluosegError(f"truth of image {image.name!r} has shape {np.shape(image.truth)}; expected (Y, X)")
    return items


def _check_grid(method: str, grid: Mapping[str, Sequence[float]] | None) -> dict[str, tuple[float, ...]]:
    if method not in DEFAULT_GRIDS:
        raise FluosegError(f"unknown instance method {method!r}; use one of {sorted(DEFAULT_GRIDS)}")
    allowed = DEFAULT_GRIDS[method]
    chosen = dict(allowed) if grid is None else {name: tuple(values) for name, values in grid.items()}
    unknown = set(chosen) - set(allowed)
    if unknown:
        raise FluosegError(f"method {method!r} has no parameter(s) {sorted(unknown)}; tune {sorted(allowed)}")
    for name, values in chosen.items():
        if not values or not all(np.isfinite(float(v)) for v in values):
            raise FluosegError(f"grid for {name!r} must be a non-empty list of finite numbers, got {list(values)}")
    return {name: tuple(sorted({float(v) for v in values})) for name, values in chosen.items()}


_OPEN_RANGES = {"h": (0.0, math.inf), "threshold": (0.0, 1.0), "min_size": (-1.0, math.inf)}
"""Values each parameter may take, bounds excluded (``min_size`` 0 is allowed)."""


def _refined(values: tuple[float, ...], best: float, name: str) -> tuple[float, ...]:
    """The best value and the midpoints towards its neighbours in ``values``.

    A best value at an edge of ``values`` gets, on its open side, the point half a step
    beyond it (inside the parameter's range): an optimum outside the coarse grid is then
    approached round by round instead of being clipped to the grid's edge.
    """
    ordered = sorted(values)
    index = ordered.index(best)
    low, high = _OPEN_RANGES.get(name, (-math.inf, math.inf))
    candidates = [(ordered[neighbour] + best) / 2 for neighbour in (index - 1, index + 1) if 0 <= neighbour < len(ordered)]
    if len(ordered) > 1 and index in (0, len(ordered) - 1):
        step = ordered[1] - ordered[0] if index == 0 else ordered[-1] - ordered[-2]
        candidates.append(best - step / 2 if index == 0 else best + step / 2)
    out = {best}
    for value in candidates:
        value = float(round(value)) if name in _INTEGER_PARAMETERS else round(value, 6)
        if low < value < high:
            out.add(value)
    return tuple(sorted(out))


def tune_decoding(images: Sequence[TuningImage], *, method: str = "distance", objective: str = "f1_mean",
                  grid: Mapping[str, Sequence[float]] | None = None, fixed: Mapping[str, float] | None = None,
                  rounds: int = 1, progress: Callable[[str], None] | None = None) -> TuningResult:
    """Find the decoding parameters that maximise a pooled objective on validation images.

    Parameters
    ----------
    images
        Validation images with their activated maps and true labels.
    method
        ``distance`` (tunes ``h``, ``threshold``, ``min_size``), ``threshold`` (``threshold``,
        ``min_size``) or ``border`` (``min_size``).
    objective
        One of :data:`OBJECTIVES` (default pooled F1 averaged over IoU 0.5:0.95).
    grid
        Coarse values per parameter (default :data:`DEFAULT_GRIDS`); parameters left out are
        held at ``fixed`` (or the decoder's default).
    fixed
        Values of parameters that are not searched.
    rounds
        Refinements around the best combination after the coarse grid (0: grid only).
    progress
        Called with a one-line message after each stage.

    Returns
    -------
    TuningResult
        The best parameters (searched and fixed), their objective value and the table of
        every combination tried.

    Raises
    ------
    FluosegError
        For no images, an unknown method/objective/parameter, or an empty grid.
    """
    items = _checked(images)
    if objective not in OBJECTIVES:
        raise FluosegError(f"unknown objective {objective!r}; use one of {list(OBJECTIVES)}")
    if int(rounds) != rounds or rounds < 0:
        raise FluosegError(f"rounds must be a whole number >= 0, got {rounds!r}")
    space = _check_grid(method, grid)
    constants = {k: float(v) for k, v in (fixed or {}).items() if k not in space}
    names = list(space)
    table: list[dict[str, Any]] = []
    tried: dict[tuple[float, ...], float] = {}
    decoded_cache: dict[tuple[float, ...], list[np.ndarray]] = {}
    grids = [_TruthGrid(image, method) for image in items]

    def decoded(params: dict[str, float]) -> list[np.ndarray]:
        # Decode without the size filter once per setting of the other parameters.
        key = tuple(v for k, v in sorted(params.items()) if k != "min_size")
        if key not in decoded_cache:
            options = {k: v for k, v in params.items() if k != "min_size"}
            decoded_cache.clear()  # combinations are visited min_size-innermost: keep one entry
            decoded_cache[key] = [decode_instances(image.maps, method, min_size=0, **options) for image in items]
        return decoded_cache[key]

    def run(stage: str, values: dict[str, tuple[float, ...]]) -> None:
        order = [n for n in names if n != "min_size"] + [n for n in names if n == "min_size"]
        for combination in itertools.product(*(values[n] for n in order)):
            params = dict(zip(order, combination))
            key = tuple(params[n] for n in names)
            if key in tried:
                continue
            full = {**constants, **params}
            min_size = int(full.get("min_size", 0))
            threshold = float(full.get("threshold", 0.5))
            pairs = [(image.truth, grid.labels(_without_small(labels, min_size), threshold))
                     for image, grid, labels in zip(items, grids, decoded(full))]
            scores = _pooled_scores(pairs, with_aji=objective == "aji")
            tried[key] = scores[objective]
            table.append({"stage": stage, **{n: params[n] for n in names}, "objective": scores[objective],
                          **{k: scores[k] for k in ("f1_0.5", "f1_mean", "n_pred", "n_true")}})
        if progress is not None:
            best_key = max(tried, key=tried.get)
            progress(f"{stage}: {len(tried)} combinations, best {dict(zip(names, best_key))} "
                     f"{objective} {tried[best_key]:.4f}")

    run("coarse", space)
    current = dict(space)
    for index in range(int(rounds)):
        best_key = max(tried, key=tried.get)
        current = {n: _refined(tuple(sorted(set(current[n]) | {best_key[i]})), best_key[i], n)
                   for i, n in enumerate(names)}
        run(f"fine{index + 1}", current)
    best_key = max(tried, key=tried.get)  # max() keeps the first of equal values: the earliest tried
    best = {**constants, **dict(zip(names, best_key))}
    if "min_size" in best:
        best["min_size"] = int(best["min_size"])
    return TuningResult(method=method, objective=objective, best=best, value=tried[best_key], table=table)
