"""Tests of fluoseg.instance.tune: hand-made maps whose best decoding parameters are known."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.segmentation import watershed

from fluoseg.data.resample import resample_to_shape
from fluoseg.errors import FluosegError
from fluoseg.instance.tune import TuningImage, decode_instances, regrid_instances, score_decoding, tune_decoding

SHAPE = (48, 96)


def _bump(centre: tuple[float, float], height: float, sigma: float) -> np.ndarray:
    yy, xx = np.mgrid[0 : SHAPE[0], 0 : SHAPE[1]].astype(np.float64)
    return height * np.exp(-((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2) / (2 * sigma**2))


def _dynamic_of_lower_peak(height: np.ndarray, a: tuple[int, int], b: tuple[int, int]) -> float:
    """Lower pixel peak (3x3 around the bump centres) minus the lowest pixel on the row between them.

    The bumps lie on one image row, so the saddle of the sum is on that row.
    """
    peaks = [height[p[0] - 1 : p[0] + 2, p[1] - 1 : p[1] + 2].max() for p in (a, b)]
    return float(min(peaks) - height[a[0], a[1] : b[1] + 1].min())


@pytest.fixture(scope="module")
def peanut_and_bumpy_blob() -> tuple[TuningImage, dict[str, float]]:
    """Two touching nuclei A (bigger) and B (a 'peanut', a deep saddle), and one nucleus C whose
    height map has a spurious second maximum of small dynamic. Correct: h between the two dynamics."""
    a, b = (24, 16), (24, 28)
    peanut = _bump(a, 6.0, 4.0) + _bump(b, 5.0, 3.5)
    c1, c2 = (24, 64), (24, 75)
    blob = _bump(c1, 5.0, 4.0) + _bump(c2, 3.0, 3.0)
    height = peanut + blob
    mask = height > 1.0
    markers = np.zeros(SHAPE, int)
    markers[a], markers[b], markers[c1] = 1, 2, 3
    truth = watershed(-peanut, markers=markers * (markers < 3), mask=mask & (np.arange(SHAPE[1]) < 48))
    truth[mask & (np.arange(SHAPE[1]) >= 48)] = 3
    dynamics = {"peanut": _dynamic_of_lower_peak(peanut, a, b), "blob": _dynamic_of_lower_peak(height, c1, c2)}
    maps = np.stack([height, mask.astype(np.float64)]).astype(np.float32)
    return TuningImage(maps=maps, truth=truth, name="peanut"), dynamics


def test_the_hand_made_maps_have_the_intended_dynamics(peanut_and_bumpy_blob):
    _, dynamics = peanut_and_bumpy_blob
    assert 0.5 < dynamics["blob"] < 1.0 < dynamics["peanut"] < 6.0


def test_best_h_splits_the_peanut_but_not_the_bumpy_blob(peanut_and_bumpy_blob):
    image, _ = peanut_and_bumpy_blob
    result = tune_decoding([image], method="distance", grid={"h": (0.5, 1.0, 8.0)},
                           fixed={"threshold": 0.5, "min_size": 0}, rounds=0)
    assert result.best == {"threshold": 0.5, "min_size": 0, "h": 1.0}
    assert result.value == pytest.approx(1.0)
    rows = {row["h"]: row for row in result.table}
    # h = 0.5 cuts C in two: 3 true, 4 predicted, C's bigger part still matches at IoU 0.5:
    # TP 3, FP 1, FN 0 -> F1 = 6 / 7.
    assert rows[0.5]["n_pred"] == 4 and rows[0.5]["f1_0.5"] == pytest.approx(6 / 7)
    # h = 8 is above every peak: each component is seeded once at its maximum, A and B merge;
    # the merged object still matches A (the bigger) at IoU > 0.5: TP 2, FP 0, FN 1 -> F1 = 4 / 5.
    assert rows[8.0]["n_pred"] == 2 and rows[8.0]["f1_0.5"] == pytest.approx(4 / 5)


def test_refinement_tries_midpoints_and_keeps_the_earliest_of_equal_scores(peanut_and_bumpy_blob):
    image, _ = peanut_and_bumpy_blob
    result = tune_decoding([image], method="distance", grid={"h": (0.5, 1.0, 8.0)},
                           fixed={"threshold": 0.5, "min_size": 0}, rounds=2)
    fine1 = sorted(row["h"] for row in result.table if row["stage"] == "fine1")
    assert fine1 == [0.75, 4.5]  # the midpoints around the best h = 1; both worse (split C, merge A+B)
    fine2 = sorted(row["h"] for row in result.table if row["stage"] == "fine2")
    assert fine2 == [0.875, 2.75]
    assert result.best["h"] == 1.0  # 0.875 scores the same (above C's dynamic) but was tried later
    assert result.value == max(row["objective"] for row in result.table)


def test_refinement_reaches_an_optimum_below_the_coarse_grid(peanut_and_bumpy_blob):
    image, _ = peanut_and_bumpy_blob
    # the best h (1, between the blob's and the peanut's dynamics) lies below this grid: the edge
    # value 2 gets h = 2 - 2 / 2 = 1 beyond it in the first refinement
    result = tune_decoding([image], method="distance", grid={"h": (2.0, 4.0, 8.0)},
                           fixed={"threshold": 0.5, "min_size": 0}, rounds=2)
    coarse = {row["h"]: row["objective"] for row in result.table if row["stage"] == "coarse"}
    fine1 = sorted(row["h"] for row in result.table if row["stage"] == "fine1")
    assert fine1 == [1.0, 3.0] and result.best["h"] < 2.0
    assert result.value == pytest.approx(1.0) and max(coarse.values()) < 0.9


def test_edge_extension_stays_inside_each_parameters_range():
    from fluoseg.instance.tune import _refined

    assert _refined((0.5, 1.0, 1.5), 0.5, "h") == (0.25, 0.5, 0.75)
    assert _refined((0.1, 0.9), 0.1, "h") == (0.1, 0.5)  # 0.1 - 0.4 would be below 0
    assert _refined((0.6, 0.8), 0.8, "threshold") == (0.7, 0.8, 0.9)
    assert _refined((0.5, 0.9), 0.9, "threshold") == (0.7, 0.9)  # 1.1 is not a probability
    assert _refined((0.0, 5.0), 0.0, "min_size") == (0.0, 2.0)  # round(2.5) = 2 (banker's); no negative size
    assert _refined((20.0, 40.0), 40.0, "min_size") == (30.0, 40.0, 50.0)


def _threshold_image() -> TuningImage:
    """A bright object (0.9), a dim object (0.45, 30 px) and 3-pixel specks of 0.35 on 0.2 background."""
    prob = np.full((40, 40), 0.2, np.float32)
    truth = np.zeros((40, 40), np.int32)
    prob[5:15, 5:15], truth[5:15, 5:15] = 0.9, 1
    prob[25:30, 25:31], truth[25:30, 25:31] = 0.45, 2
    for y, x in ((5, 30), (20, 5), (35, 10)):
        prob[y, x : x + 3] = 0.35
    return TuningImage(maps=prob[None], truth=truth, name="dim")


def test_threshold_and_min_size_are_tuned_together():
    result = tune_decoding([_threshold_image()], method="threshold",
                           grid={"threshold": (0.3, 0.5, 0.7), "min_size": (0, 5, 40)}, rounds=0)
    # 0.3 keeps the dim object but also the specks; min_size 5 removes the specks, 40 the dim object.
    assert result.best == {"threshold": 0.3, "min_size": 5}
    assert result.value == pytest.approx(1.0)
    row = next(r for r in result.table if r["threshold"] == 0.3 and r["min_size"] == 0)
    assert row["n_pred"] == 5 and row["f1_0.5"] == pytest.approx(2 * 2 / (2 * 2 + 3))


def test_maps_at_half_the_truth_resolution_are_resized_to_it():
    truth = np.zeros((40, 40), np.int32)
    truth[4:16, 4:16], truth[20:36, 22:38] = 1, 2
    small = truth[::2, ::2]
    image = TuningImage(maps=(small > 0).astype(np.float32)[None], truth=truth)
    scores = score_decoding([image], "threshold", {"threshold": 0.5, "min_size": 0})
    assert scores["f1_mean"] == pytest.approx(1.0) and scores["aji"] == pytest.approx(1.0)
    assert scores["n_pred"] == 2 and scores["n_true"] == 2


def test_labels_of_maps_at_a_third_of_the_truth_resolution_follow_the_resampled_maps():
    yy, xx = np.mgrid[:60, :60]
    truth = ((yy - 30) ** 2 + (xx - 30) ** 2 <= 17**2).astype(np.int32)
    fine = np.clip(17.5 - np.hypot(yy - 30, xx - 30), 0, 1).astype(np.float32)[None]  # a soft disk
    small = fine[:, 1::3, 1::3]
    image = TuningImage(maps=small, truth=truth)
    decoded = decode_instances(small, "threshold", threshold=0.5, min_size=0)

    def iou(labels):
        return ((labels == 1) & (truth == 1)).sum() / ((labels == 1) | (truth == 1)).sum()

    scores = score_decoding([image], "threshold", {"threshold": 0.5, "min_size": 0})
    regridded = regrid_instances(decoded, resample_to_shape(small, truth.shape, kind="probabilities"), "threshold")
    assert scores["aji"] == pytest.approx(iou(regridded))
    # nearest neighbour would give the coarse grid's staircase
    assert iou(regridded) > iou(resample_to_shape(decoded, truth.shape, kind="labels")) + 0.02


def test_scores_pool_over_images():
    good = TuningImage(maps=np.pad(np.ones((1, 6, 6), np.float32), ((0, 0), (2, 2), (2, 2))),
                       truth=np.pad(np.ones((6, 6), np.int32), 2))
    missed = TuningImage(maps=np.zeros((1, 10, 10), np.float32), truth=np.pad(np.ones((6, 6), np.int32), 2))
    scores = score_decoding([good, missed], "threshold", {"threshold": 0.5, "min_size": 0})
    # pooled: TP 1, FP 0, FN 1 -> F1 2/3 (a mean of per-image F1s would give 1/2)
    assert scores["f1_0.5"] == pytest.approx(2 / 3)


def test_decode_instances_dispatches_to_the_method():
    probs = np.zeros((3, 12, 12), np.float32)
    probs[0] = 1.0
    probs[:, 2:8, 2:8] = 0.0
    probs[1, 2:8, 2:8] = 1.0
    labels = decode_instances(probs, "border", min_size=0)
    assert labels.max() == 1 and (labels > 0).sum() == 36


@pytest.mark.parametrize("kwargs, match", [
    ({"method": "stardist"}, "unknown instance method"),
    ({"objective": "dice"}, "unknown objective"),
    ({"grid": {"sigma": (1.0,)}}, "no parameter"),
    ({"grid": {"h": ()}}, "non-empty"),
    ({"rounds": -1}, "rounds"),
])
def test_bad_arguments_are_one_line_errors(kwargs, match):
    with pytest.raises(FluosegError, match=match):
        tune_decoding([_threshold_image()], **kwargs)


def test_no_images_is_an_error():
    with pytest.raises(FluosegError, match="no validation images"):
        tune_decoding([])
