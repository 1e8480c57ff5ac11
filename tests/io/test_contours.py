"""Pixel-edge polygons: filling them gives back exactly the object's pixels."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.path import Path as MPath

from fluoseg.errors import FluosegError
from fluoseg.io.contours import label_polygons, mask_polygons, polygon_area


def _fill(polygons, shape) -> np.ndarray:
    """Pixels whose centre lies inside an exterior and outside its holes (an independent rasteriser)."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    centres = np.stack([xx.ravel() + 0.5, yy.ravel() + 0.5], axis=1)
    out = np.zeros(shape[0] * shape[1], bool)
    for polygon in polygons:
        inside = MPath(polygon.exterior).contains_points(centres)
        for hole in polygon.holes:
            inside &= ~MPath(hole).contains_points(centres)
        out |= inside
    return out.reshape(shape)


def test_single_pixel_is_its_square():
    labels = np.zeros((3, 4), int)
    labels[1, 2] = 5
    ((label, (polygon,)),) = list(label_polygons(labels))
    assert label == 5 and polygon.holes == ()
    assert sorted(map(tuple, polygon.exterior)) == [(2, 1), (2, 2), (3, 1), (3, 2)]
    assert polygon_area(polygon.exterior) == 1


def test_ring_object_has_a_hole_and_diagonal_pixels_are_separate_parts():
    ring = np.ones((5, 5), int)
    ring[2, 2] = 0
    ((_, (polygon,)),) = list(label_polygons(ring))
    assert polygon_area(polygon.exterior) == 25 and [polygon_area(h) for h in polygon.holes] == [-1]
    diagonal = np.array([[1, 0], [0, 1]])
    assert len(list(label_polygons(diagonal))[0][1]) == 2


def test_random_labels_are_reproduced_exactly():
    rng = np.random.default_rng(0)
    for _ in range(50):
        labels = (rng.random((14, 11)) < 0.55) * rng.integers(1, 4, (14, 11))
        for label, polygons in label_polygons(labels):
            assert np.array_equal(_fill(polygons, labels.shape), labels == label)
            assert all(polygon_area(p.exterior) > 0 and all(polygon_area(h) < 0 for h in p.holes) for p in polygons)


def test_mask_components_and_3d_refusal():
    mask = np.zeros((6, 6), bool)
    mask[0:2, 0:2] = mask[4:6, 3:6] = True
    assert sorted(polygon_area(p.exterior) for p in mask_polygons(mask)) == [4, 6]
    with pytest.raises(FluosegError, match="2D"):
        list(label_polygons(np.zeros((2, 3, 3), int)))
