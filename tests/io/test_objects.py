"""GeoJSON for QuPath and ImageJ ROI sets for Fiji."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fluoseg.errors import FluosegError
from fluoseg.io.objects import geojson_features, write_geojson, write_imagej_rois


def _labels() -> np.ndarray:
    labels = np.zeros((20, 30), np.uint16)
    labels[2:6, 3:9] = 1  # 24 px
    labels[10:18, 10:20] = 7  # 80 px with a 2x2 hole
    labels[13:15, 14:16] = 0
    return labels


def _shoelace(ring) -> float:
    x, y = np.asarray(ring, float).T
    return float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y) / 2)


def test_labels_become_detections_whose_areas_are_pixel_counts(tmp_path):
    path = write_geojson(tmp_path / "a.geojson", _labels())
    collection = json.loads(path.read_text())
    assert collection["type"] == "FeatureCollection"
    names = [f["properties"]["name"] for f in collection["features"]]
    assert names == ["label-1", "label-7"]
    areas = [sum(_shoelace(ring) for ring in f["geometry"]["coordinates"]) for f in collection["features"]]
    assert areas == [24, 76]
    assert all(f["properties"]["objectType"] == "detection" for f in collection["features"])
    ring = collection["features"][0]["geometry"]["coordinates"][0]
    assert ring[0] == ring[-1] and min(p[0] for p in ring) == 3 and max(p[1] for p in ring) == 6


def test_masks_become_classified_annotations_per_component():
    masks = np.zeros((2, 10, 10), np.uint8)
    masks[0, 0:2, 0:2] = masks[0, 5:7, 5:9] = masks[1, 8:10, 0:3] = 1
    features = geojson_features(masks, classes=["vessel", "artery"])
    assert [(f["properties"]["classification"]["name"], f["properties"]["name"]) for f in features] == [
        ("vessel", "vessel-1"), ("vessel", "vessel-2"), ("artery", "artery-1")]
    with pytest.raises(FluosegError, match="class names"):
        geojson_features(masks, classes=["vessel"])


def test_imagej_roi_set_holds_one_traced_polygon_per_object(tmp_path):
    import roifile

    path = write_imagej_rois(tmp_path / "rois.zip", _labels())
    rois = roifile.roiread(path)
    assert [r.name for r in rois] == ["label-1", "label-7"]
    assert all(r.roitype == roifile.ROI_TYPE.TRACED for r in rois)
    first = rois[0].coordinates()
    assert (first[:, 0].min(), first[:, 0].max(), first[:, 1].min(), first[:, 1].max()) == (3, 9, 2, 6)
    with pytest.raises(FluosegError, match="--overwrite"):
        write_imagej_rois(path, _labels())
    with pytest.raises(FluosegError, match="no objects"):
        write_imagej_rois(tmp_path / "empty.zip", np.zeros((4, 4), np.uint16))
