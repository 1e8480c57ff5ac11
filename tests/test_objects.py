"""Per-object tables checked against scikit-image's regionprops (an independent implementation)."""

import numpy as np
import pytest
from skimage.measure import regionprops

from fluoseg.errors import FluosegError
from fluoseg.objects import object_table


def random_labels(seed: int, shape=(40, 50)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, np.int32)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    for k in range(1, 7):
        cy, cx, ry, rx = rng.integers(5, shape[0] - 5), rng.integers(5, shape[1] - 5), *rng.integers(2, 7, size=2)
        labels[((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1] = k
    return labels


@pytest.mark.parametrize("seed", range(4))
def test_2d_measurements_equal_regionprops(seed):
    labels = random_labels(seed)
    image = np.random.default_rng(seed).random((2, *labels.shape))
    rows = object_table(labels, image, ["DAPI", "CD3"], pixel_size=(0.5, 0.25))
    props = {p.label: p for p in regionprops(labels)}
    assert [r["label"] for r in rows] == sorted(props)
    for row in rows:
        p = props[row["label"]]
        assert row["area_px"] == p.area and row["area_um2"] == pytest.approx(p.area * 0.125)
        assert (row["centroid_y"], row["centroid_x"]) == pytest.approx(p.centroid, abs=1e-3)
        assert (row["bbox_y0"], row["bbox_x0"], row["bbox_y1"], row["bbox_x1"]) == p.bbox
        assert row["eccentricity"] == pytest.approx(p.eccentricity, abs=1e-5)
        for c, name in enumerate(["DAPI", "CD3"]):
            inside = image[c][labels == row["label"]]
            assert row[f"mean_{name}"] == pytest.approx(inside.mean(), abs=1e-6)
            assert row[f"sum_{name}"] == pytest.approx(inside.sum(), abs=1e-5)


def test_3d_stacks_and_edge_cases():
    labels = np.zeros((3, 6, 6), np.uint16)
    labels[0:2, 1:3, 1:4] = 5
    rows = object_table(labels, pixel_size=(2.0, 0.5, 0.5))
    assert rows == [{"label": 5, "area_px": 12, "centroid_z": 0.5, "centroid_y": 1.5, "centroid_x": 2.0,
                     "bbox_z0": 0, "bbox_z1": 2, "bbox_y0": 1, "bbox_y1": 3, "bbox_x0": 1, "bbox_x1": 4,
                     "volume_um3": 6.0}]
    assert object_table(np.zeros((4, 4), np.int32)) == []
    with pytest.raises(FluosegError):
        object_table(np.zeros((4, 4), np.float32))
    with pytest.raises(FluosegError, match="does not fit"):
        object_table(labels, np.zeros((1, 3, 6, 5)), ["a"])
