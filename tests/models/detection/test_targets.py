"""Tests of fluoseg.models.detection.targets (numpy only)."""

from __future__ import annotations

import numpy as np
import pytest

from fluoseg.errors import FluosegError
from fluoseg.models.detection.targets import labels_from_detections, points_from_labels, targets_from_labels


def label_image() -> np.ndarray:
    labels = np.zeros((6, 8), np.int32)
    labels[1:3, 1:4] = 5  # 2 x 3 rectangle
    labels[4, 6] = 2  # one pixel
    labels[3:6, 0] = 9  # vertical bar
    return labels


def test_targets_by_hand():
    targets = targets_from_labels(label_image())
    assert targets["ids"].tolist() == [2, 5, 9]
    assert targets["boxes"].tolist() == [[6, 4, 7, 5], [1, 1, 4, 3], [0, 3, 1, 6]]
    assert targets["labels"].tolist() == [1, 1, 1]
    assert targets["masks"].shape == (3, 6, 8) and targets["masks"].dtype == np.uint8
    assert targets["masks"][1].sum() == 6 and targets["masks"][1, 2, 3] == 1
    assert targets["points"].tolist() == [[4.0, 6.0], [1.5, 2.0], [4.0, 0.0]]
    assert targets["foreground"].sum() == 6 + 1 + 3


def test_targets_of_empty_image():
    targets = targets_from_labels(np.zeros((4, 4), np.uint16))
    assert targets["boxes"].shape == (0, 4) and targets["masks"].shape == (0, 4, 4)
    assert targets["points"].shape == (0, 2)


def test_random_points_lie_inside_their_objects():
    labels = label_image()
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(30):
        points = points_from_labels(labels, method="random", rng=rng).astype(int)
        assert [labels[y, x] for y, x in points] == [2, 5, 9]
        seen.add(tuple(points[1]))
    assert len(seen) > 3  # the rectangle's six pixels are all candidates


def test_centroid_may_fall_outside_a_ring():
    labels = np.zeros((7, 7), np.int32)
    labels[1:6, 1:6] = 1
    labels[2:5, 2:5] = 0
    assert points_from_labels(labels).tolist() == [[3.0, 3.0]]


def test_inside_points_snap_a_ring_centroid_to_its_nearest_pixel_and_keep_others():
    labels = np.zeros((9, 9), np.int32)
    labels[1:6, 1:6] = 1
    labels[2:5, 2:5] = 0  # ring around (3, 3): its nearest pixels are 2 away, (1, 3) first in row order
    labels[7, 6:9] = 2  # a bar whose centroid (7, 7) is its own pixel
    points = points_from_labels(labels, method="inside")
    assert points.tolist() == [[1.0, 3.0], [7.0, 7.0]]
    assert [labels[int(y), int(x)] for y, x in points] == [1, 2]


@pytest.mark.parametrize("bad", [np.zeros((2, 3, 3), np.int32), np.zeros((3, 3), np.float32), -np.ones((3, 3), int)])
def test_invalid_labels(bad):
    with pytest.raises(FluosegError):
        targets_from_labels(bad)


def test_points_unknown_method():
    with pytest.raises(FluosegError, match="point method"):
        points_from_labels(label_image(), method="center")


def test_labels_from_detections_best_score_wins_overlaps():
    masks = np.zeros((3, 4, 6), np.float32)
    masks[0, :, 0:4] = 0.9  # score 0.3
    masks[1, :, 2:6] = 0.8  # score 0.7: takes the overlap columns 2-3
    masks[2, 0, 3] = 0.6  # score 0.5, entirely inside object 1: left with nothing, dropped
    labels, scores = labels_from_detections(masks, np.array([0.3, 0.7, 0.5]))
    assert scores.tolist() == [0.7, 0.3]
    expected = np.array([[2, 2, 1, 1, 1, 1]] * 4)
    np.testing.assert_array_equal(labels, expected)


def test_labels_from_detections_threshold_and_min_area():
    masks = np.zeros((2, 3, 3))
    masks[0, 0, :] = 0.5  # exactly at the threshold: kept
    masks[1, 2, 2] = 0.49
    labels, scores = labels_from_detections(masks, np.array([0.9, 0.8]))
    assert labels[0].tolist() == [1, 1, 1] and labels[1:].sum() == 0 and scores.tolist() == [0.9]
    labels, scores = labels_from_detections(masks, np.array([0.9, 0.8]), min_area=4)
    assert labels.sum() == 0 and scores.size == 0


def test_labels_from_detections_min_score():
    masks = np.ones((3, 2, 2))
    masks[1, 0] = 0  # the second-best detection only covers the bottom row
    labels, scores = labels_from_detections(masks, np.array([0.9, 0.95, 0.2]), min_score=0.5)
    assert scores.tolist() == [0.95, 0.9]
    np.testing.assert_array_equal(labels, [[2, 2], [1, 1]])
