"""Layers <-> fluoseg arrays, without Qt."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fluoseg.errors import FluosegError
from fluoseg.io import write_image
from fluoseg.napari.layers import match_layers, prediction_layers, read_layers, stack_markers


def test_layers_map_to_markers_by_name_ignoring_case():
    assert match_layers(["DAPI", "CD31", "KI67"], ["dapi", "CD31", "other"]) == {
        "DAPI": "dapi", "CD31": "CD31", "KI67": None}


def test_prediction_layers_per_kind():
    labels = np.zeros((4, 4), np.uint16)
    ((data, meta, kind),) = prediction_layers(labels, kind="instance", classes=(), name="run", scale=(0.5, 0.5))
    assert kind == "labels" and meta == {"name": "run labels", "scale": (0.5, 0.5)}
    masks = np.zeros((2, 4, 4), np.uint8)
    layers = prediction_layers(masks, kind="semantic", classes=("a", "b"), name="run", probabilities=masks * 0.5)
    assert [(m["name"], k) for _, m, k in layers] == [("run a", "labels"), ("run b", "labels"),
                                                      ("run a probability", "image"), ("run b probability", "image")]


def test_reading_labels_masks_and_probabilities(tmp_path):
    labels = np.arange(16, dtype=np.uint16).reshape(4, 4)
    masks = np.stack([labels > 5, labels <= 5]).astype(np.uint8)
    (_, meta, kind), = read_layers(write_image(tmp_path / "s1.tif", labels, axes="YX", pixel_size=(2.0, 2.0)))
    assert kind == "labels" and meta == {"name": "s1", "scale": (2.0, 2.0)}
    read = read_layers(write_image(tmp_path / "s2.tif", masks, axes="CYX", channel_names=["fg", "bg"]))
    assert [(m["name"], k) for _, m, k in read] == [("fg", "labels"), ("bg", "labels")]
    read = read_layers(write_image(tmp_path / "p.tif", masks * 0.25, axes="CYX", channel_names=["fg", "bg"]))
    assert [k for _, _, k in read] == ["image", "image"]


def test_reading_an_ome_zarr_image_with_its_labels(tmp_path):
    image = np.random.default_rng(0).integers(0, 255, (2, 8, 8), dtype=np.uint8)
    nuclei = np.zeros((8, 8), np.uint16)
    nuclei[2:5, 2:5] = 3
    store = write_image(tmp_path / "plate.zarr", image, axes="CYX", channel_names=["DAPI", "CD31"])
    write_image(store / "labels" / "nuclei.zarr", nuclei, axes="YX")
    (store / "labels" / "zarr.json").write_text(json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {
        "ome": {"version": "0.5", "labels": ["nuclei.zarr"]}}}))
    layers = read_layers(store)
    assert [(m["name"], k) for _, m, k in layers] == [("DAPI", "image"), ("CD31", "image"), ("nuclei", "labels")]
    assert np.array_equal(layers[-1][0], nuclei)


def test_marker_layers_must_share_a_shape():
    stack, names = stack_markers({"a": np.zeros((3, 4)), "b": np.ones((3, 4))})
    assert stack.shape == (2, 3, 4) and stack.dtype == np.float32 and names == ["a", "b"]
    with pytest.raises(FluosegError, match="differ in shape"):
        stack_markers({"a": np.zeros((3, 4)), "b": np.zeros((4, 4))})
