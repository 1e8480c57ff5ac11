"""fluoseg.network_pass: the prepared pass of a Segmenter, whole or band by band, picklable."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from fluoseg.errors import FluosegError
from fluoseg.infer import Member, PredictOptions, Segmenter
from fluoseg.markers import MarkerPanel
from fluoseg.models import build_model
from fluoseg.run import Preprocessing
from fluoseg.tasks.semantic import SemanticTask

RNG = np.random.default_rng(3)


def two_member_segmenter(padding: str = "valid") -> Segmenter:
    """Two untrained networks of one class each (the MS-ME paper's one network per class)."""
    members = []
    for seed, name in ((1, "sinusoids"), (2, "arteries")):
        torch.manual_seed(seed)
        model = build_model("unet", in_channels=2, out_channels=1, depth=2, base_filters=4, padding=padding).eval()
        members.append(Member(model=model, panel=MarkerPanel(["DAPI", "CD31"]), classes=(name,),
                              preprocess=Preprocessing(), task=SemanticTask([name], loss="bce")))
    return Segmenter(members)


def test_pass_equals_member_by_member_prediction():
    segmenter = two_member_segmenter()
    image = RNG.normal(100, 20, size=(2, 90, 70)).astype(np.float32)
    options = PredictOptions(tile_size=60)
    both = segmenter.predict_probabilities(image, ["DAPI", "CD31"], options)
    assert both.shape == (2, 90, 70)
    for channel, member in enumerate(segmenter.members):
        alone = Segmenter([member]).predict_probabilities(image, ["DAPI", "CD31"], options)
        np.testing.assert_array_equal(both[channel : channel + 1], alone)


def test_bands_of_a_pickled_pass_equal_the_whole_pass_bit_for_bit():
    segmenter = two_member_segmenter(padding="same")
    image = RNG.normal(100, 20, size=(2, 2, 81, 64)).astype(np.float32)  # a stack: bands per plane
    network = segmenter.network_pass(image, ["DAPI", "CD31"], PredictOptions(tile_size=32, tta=True, batch_size=2))
    whole = network.run(image)
    copy = pickle.loads(pickle.dumps(network))  # what a worker receives
    banded = np.full(network.out_shape, np.nan, np.float32)
    for plane in (0, 1):
        for start in range(0, 81, 20):
            copy.run(image, banded, rows=(start, min(start + 20, 81)), planes=[plane])
    np.testing.assert_array_equal(banded, whole)
    np.testing.assert_array_equal(network.decode(whole), segmenter.decode(whole))


def test_pass_checks_the_image_it_runs_on():
    segmenter = two_member_segmenter()
    image = RNG.normal(size=(2, 40, 40)).astype(np.float32)
    network = segmenter.network_pass(image, ["DAPI", "CD31"])
    with pytest.raises(ValueError, match="prepared for an image of shape"):
        network.run(image[:, :30])
    bad = image.copy()
    bad[0, 3, 3] = np.nan
    with pytest.raises(FluosegError, match="NaN"):
        segmenter.network_pass(bad, ["DAPI", "CD31"])
