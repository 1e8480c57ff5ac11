"""Sparse label overlaps: validation of label images and agreement with a dense pixel count."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from fluoseg.errors import FluosegError
from fluoseg.metrics.overlap import as_label_image, label_overlap


def _dense_reference(truth: np.ndarray, pred: np.ndarray) -> dict[tuple[int, int], int]:
    counts: dict[tuple[int, int], int] = {}
    for g, p in zip(truth.ravel().tolist(), pred.ravel().tolist()):
        counts[(g, p)] = counts.get((g, p), 0) + 1
    return counts


@pytest.mark.parametrize("scale", [1, 10**9])  # small labels use a lookup table, huge ones np.unique
def test_overlap_matches_pixel_count(labelgen: SimpleNamespace, scale: int) -> None:
    rng = np.random.default_rng(1)
    for _ in range(30):
        truth, pred = labelgen.random_pair(rng, (16, 16))
        truth, pred = truth * scale, pred * (scale + 7 if scale > 1 else 1)
        ov = label_overlap(truth, pred)
        ref = _dense_reference(truth, pred)
        assert ov.n_pixels == truth.size
        assert list(ov.true_ids) == sorted({g for g, _ in ref if g > 0})
        assert list(ov.pred_ids) == sorted({p for _, p in ref if p > 0})
        pairs = {(int(ov.true_ids[i]), int(ov.pred_ids[j])): int(n)
                 for i, j, n in zip(ov.pair_true, ov.pair_pred, ov.pair_intersection)}
        assert pairs == {k: v for k, v in ref.items() if k[0] > 0 and k[1] > 0}
        for i, g in enumerate(ov.true_ids):
            assert ov.true_sizes[i] == np.count_nonzero(truth == g)
            assert ov.true_on_background[i] == ref.get((int(g), 0), 0)
        for j, p in enumerate(ov.pred_ids):
            assert ov.pred_on_background[j] == ref.get((0, int(p)), 0)
        dense = ov.iou_matrix()
        assert dense.shape == (ov.n_true, ov.n_pred)


def test_sparse_path_for_many_objects() -> None:
    # 300 x 300 objects of one pixel each would need a 90,000-cell dense table on 900 pixels
    truth = np.arange(1, 901).reshape(30, 30)
    pred = truth[::-1].copy()
    ov = label_overlap(truth, pred)
    assert ov.n_true == ov.n_pred == 900 and ov.pair_true.size == 900
    assert np.all(ov.pair_intersection == 1)


def test_float_labels_with_whole_numbers_are_accepted() -> None:
    assert as_label_image(np.array([[0.0, 3.0]])).dtype == np.int64


@pytest.mark.parametrize("bad", [
    np.array([[0.5, 1.0]]),        # fractional
    np.array([[np.nan, 1.0]]),     # NaN
    np.array([[-1, 2]]),           # negative
    np.array([[True, False]]),     # a mask, not labels
    np.array([["a", "b"]]),        # not numbers
    np.array(3),                   # scalar
])
def test_invalid_label_images_raise(bad: np.ndarray) -> None:
    with pytest.raises(FluosegError):
        as_label_image(bad)


def test_shape_mismatch_raises() -> None:
    with pytest.raises(FluosegError, match="shape"):
        label_overlap(np.zeros((4, 4), int), np.zeros((4, 5), int))
