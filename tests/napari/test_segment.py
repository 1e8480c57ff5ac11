"""The widget's prediction without Qt: layers out, one progress tick per network tile."""

from __future__ import annotations

import numpy as np

from fluoseg.infer import Segmenter
from fluoseg.napari.segment import LayerSegmentation
from tests.conftest import make_tiny_sample


def test_semantic_run_gives_one_labels_layer_per_class_and_counts_its_tiles(semantic_run):
    segmentation = LayerSegmentation.load(semantic_run, device="cpu")
    image, _ = make_tiny_sample(31, shape=(90, 70))
    ticks = []
    layers = segmentation.predict({"m1": image[0], "m3": image[2]}, tile_size=64, on_tile=lambda: ticks.append(1))
    assert [(m["name"], k) for _, m, k in layers] == [("run blob", "labels"), ("run bar", "labels")]
    assert len(ticks) == segmentation.tile_count((90, 70), 64) > 1
    expected, _ = Segmenter.load(semantic_run, device="cpu").predict_masks(image[[0, 2]], ["m1", "m3"], tile_size=64)
    assert np.array_equal(np.stack([layers[0][0], layers[1][0]]), expected)


def test_instance_run_gives_a_labels_layer(instance_run):
    segmentation = LayerSegmentation.load(instance_run, device="cpu")
    image, _ = make_tiny_sample(32, shape=(64, 64))
    ((labels, meta, kind),) = segmentation.predict(dict(zip(("m1", "m2", "m3"), image)), scale=(0.5, 0.5))
    assert kind == "labels" and meta["scale"] == (0.5, 0.5) and labels.shape == (64, 64) and labels.max() > 0
    assert segmentation.kind == "instance" and segmentation.markers == ("m1", "m2", "m3")
