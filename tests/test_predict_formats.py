"""``fluoseg predict --format``: OME-TIFF pyramids, GeoJSON and ImageJ ROI outputs of the same prediction."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fluoseg.config import load_config
from fluoseg.errors import FluosegError
from fluoseg.infer import PredictOptions, Segmenter
from fluoseg.io import read_image, read_mask
from fluoseg.predict import OUTPUT_FORMATS, output_paths, predict_file, write_segmentation
from fluoseg.train.trainer import train


@pytest.fixture()
def segmenter(tiny_config, tmp_path):
    return Segmenter.load(train(load_config(tiny_config), tmp_path / "run", progress=False), device="cpu")


def test_cli_offers_every_output_format():
    from fluoseg.cli.predict import FORMATS

    assert FORMATS == tuple(OUTPUT_FORMATS)


def test_every_format_holds_the_same_masks(segmenter, tiny_dataset, tmp_path):
    image = tiny_dataset.parent / "images" / "s4.tif"
    written = {}
    for fmt in ("tif", "ome-tiff", "geojson", "roi"):
        paths = output_paths([image], tmp_path / fmt, fmt=fmt, probabilities=False)[0]
        written[fmt] = predict_file(segmenter, image, paths, PredictOptions(), channel_names=["m1", "m2", "m3"])
    assert [p.name for p in written.values()] == ["s4.tif", "s4.ome.tif", "s4.geojson", "s4_rois.zip"]
    masks = read_mask(written["tif"])
    assert np.array_equal(read_image(written["ome-tiff"]).array, masks)
    features = json.loads(written["geojson"].read_text())["features"]
    classes = {f["properties"]["classification"]["name"] for f in features}
    assert classes == {c for c, m in zip(("blob", "bar"), masks) if m.any()}


def test_objects_need_masks_or_labels_not_stacks(tmp_path):
    with pytest.raises(FluosegError, match="2D"):
        write_segmentation(tmp_path / "a.geojson", np.ones((2, 3, 4, 4), np.uint8), axes="CZYX",
                           channel_names=["a", "b"])
    with pytest.raises(FluosegError, match="unknown output format"):
        output_paths([tmp_path / "a.tif"], tmp_path, fmt="png", probabilities=False)
