"""Fixtures for the metric tests: random label images whose objects overlap, split, merge, shift.

Tests ask for the ``labelgen`` fixture, a namespace of the generator functions below
(the test suite runs with ``--import-mode=importlib``, so test modules cannot import
helper modules by name).
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest


def random_labels(rng: np.random.Generator, shape: tuple[int, ...] = (24, 24), n_objects: int = 6,
                  max_size: int = 10) -> np.ndarray:
    """Rectangles (boxes in 3D) painted in turn with distinct, non-consecutive labels."""
    labels = np.zeros(shape, np.int64)
    ids = rng.choice(np.arange(1, 5000), size=n_objects, replace=False)
    for value in ids:
        lo = [int(rng.integers(0, s - 1)) for s in shape]
        hi = [min(s, a + int(rng.integers(1, max_size + 1))) for a, s in zip(lo, shape)]
        labels[tuple(slice(a, b) for a, b in zip(lo, hi))] = value
    return labels


def perturb(rng: np.random.Generator, truth: np.ndarray) -> np.ndarray:
    """A plausible prediction of ``truth``: shifted, split, merged, grown, dropped and extra objects."""
    pred = truth.copy()
    if rng.random() < 0.6:
        shift = tuple(int(s) for s in rng.integers(-2, 3, size=truth.ndim))
        pred = np.roll(pred, shift, axis=tuple(range(truth.ndim)))
    ids = [int(v) for v in np.unique(pred) if v > 0]
    next_id = 6000
    for value in ids:
        r = rng.random()
        mask = pred == value
        if r < 0.15:  # split along the first axis
            coords = np.nonzero(mask)
            cut = np.median(coords[0])
            half = mask & (np.indices(mask.shape)[0] > cut)
            pred[half] = next_id
            next_id += 1
        elif r < 0.25 and len(ids) > 1:  # merge into another object
            pred[mask] = ids[int(rng.integers(len(ids)))]
        elif r < 0.33:  # drop
            pred[mask] = 0
        elif r < 0.45:  # grow by one pixel where background
            grown = np.zeros_like(mask)
            for axis in range(mask.ndim):
                grown |= np.roll(mask, 1, axis) | np.roll(mask, -1, axis)
            pred[grown & (pred == 0)] = value
    for _ in range(int(rng.integers(0, 3))):  # false objects
        lo = [int(rng.integers(0, s - 1)) for s in truth.shape]
        hi = [min(s, a + int(rng.integers(1, 6))) for a, s in zip(lo, truth.shape)]
        pred[tuple(slice(a, b) for a, b in zip(lo, hi))] = next_id
        next_id += 1
    return relabel_randomly(rng, pred)


def relabel_randomly(rng: np.random.Generator, labels: np.ndarray) -> np.ndarray:
    """The same objects under new, random, non-consecutive label values."""
    ids = np.unique(labels)
    ids = ids[ids > 0]
    new = rng.choice(np.arange(1, 100_000), size=ids.size, replace=False)
    lookup = np.zeros(int(labels.max()) + 1 if labels.size else 1, np.int64)
    lookup[ids] = new
    return lookup[labels]


def random_pair(rng: np.random.Generator, shape: tuple[int, ...] = (24, 24), kind: int | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
    """A (truth, prediction) pair of one of three kinds: perturbed, independent, or pixel noise."""
    kind = int(rng.integers(3)) if kind is None else kind
    if kind == 0:
        truth = random_labels(rng, shape, int(rng.integers(0, 9)))
        return truth, perturb(rng, truth)
    if kind == 1:
        return (random_labels(rng, shape, int(rng.integers(0, 8))),
                random_labels(rng, shape, int(rng.integers(0, 8))))
    small = tuple(max(2, s // 4) for s in shape)
    truth = rng.integers(0, int(rng.integers(2, 6)), size=small)
    pred = rng.integers(0, int(rng.integers(2, 6)), size=small)
    return relabel_randomly(rng, truth), relabel_randomly(rng, pred)


@pytest.fixture(scope="session")
def labelgen() -> SimpleNamespace:
    """``random_labels``, ``perturb``, ``relabel_randomly`` and ``random_pair`` as attributes."""
    return SimpleNamespace(random_labels=random_labels, perturb=perturb, relabel_randomly=relabel_randomly,
                           random_pair=random_pair)
