"""Tests of fluoseg.models.detection.registry: build by name, options, specs."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from fluoseg.errors import FluosegError
from fluoseg.models import model_names
from fluoseg.models.detection import LACSS, MaskRCNN, build_detector, detector_names, detector_spec


def test_names_and_separation_from_segmentation_models():
    assert detector_names() == ["lacss", "maskrcnn"]
    assert not set(detector_names()) & set(model_names())


def test_build_with_options_as_mapping_and_keywords():
    with torch.device("meta"):
        model = build_detector("maskrcnn", in_channels=2, options={"encoder": "resnet18"}, detections_per_image=500)
    assert isinstance(model, MaskRCNN)
    assert model.roi_heads.detections_per_image == 500


def test_spec_round_trip_rebuilds_the_same_network():
    torch.manual_seed(0)
    model = build_detector("lacss", in_channels=3, depth="resnet18", fpn_channels=16, lpn_channels=[8],
                           shared_channels=[8], patch_channels=8, crop_size=16)
    spec = detector_spec(model)
    assert spec["name"] == "lacss" and spec["in_channels"] == 3 and spec["options"]["crop_size"] == 16
    assert json.loads(json.dumps(spec)) == spec
    rebuilt = build_detector(**spec)
    assert isinstance(rebuilt, LACSS)
    rebuilt.load_state_dict(model.state_dict())  # same architecture: every key and shape fits


@pytest.mark.parametrize(("call", "message"), [
    (lambda: build_detector("yolo", in_channels=1), "unknown detector 'yolo'"),
    (lambda: build_detector("lacss", in_channels=1, crop=8), "accepted options: .*crop_size"),
    (lambda: build_detector("lacss", in_channels=0), "in_channels must be a positive integer"),
    (lambda: build_detector("lacss", in_channels=1, options={"depth": "resnet18"}, depth="resnet34"), "given twice"),
])
def test_errors_name_the_problem(call, message):
    with pytest.raises(FluosegError, match=message):
        call()


def test_spec_of_a_foreign_module():
    with pytest.raises(ValueError, match="not a registered fluoseg detector"):
        detector_spec(nn.Linear(1, 1))
