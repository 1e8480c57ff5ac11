"""Tests of fluoseg.models.deepcell: the dilated network equals DeepCell's sliding-window classifier."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fluoseg.errors import FluosegError
from fluoseg.models import build_model
from fluoseg.models.deepcell import DeepCell


def window_classifier(model: DeepCell, window: torch.Tensor) -> torch.Tensor:
    """DeepCell's original patch network on one window: stride-2 pooling, no dilation, dense head.

    Uses the fully convolutional model's own layers, undilated, so both compute with the
    same weights.
    """
    x = window
    for layer in model.features:
        if isinstance(layer, nn.Sequential):
            conv, norm, _ = layer
            x = F.relu(norm(F.conv2d(x, conv.weight, conv.bias)))
        else:
            x = F.max_pool2d(x, 2, stride=2)
    assert x.shape[-2:] == (1, 1)  # the window shrank to the one classified pixel
    return model.head(x)


@pytest.mark.parametrize("window", [61, 31])
def test_fully_convolutional_equals_sliding_window(window):
    torch.manual_seed(0)
    model = DeepCell(2, window=window, padding="valid").eval()
    for module in model.modules():  # non-trivial normalisation statistics
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    image = torch.randn(1, 2, window + 5, window + 3)
    with torch.no_grad():
        dense = model(image)
        assert dense.shape == (1, 3, 6, 4)
        for y, x in [(0, 0), (5, 3), (2, 1), (4, 0)]:
            expected = window_classifier(model, image[:, :, y : y + window, x : x + window])
            torch.testing.assert_close(dense[:, :, y : y + 1, x : x + 1], expected, atol=1e-4, rtol=1e-4)


def test_same_padding_classifies_every_pixel_from_a_zero_padded_window():
    torch.manual_seed(0)
    same = DeepCell(1, window=31).eval()
    valid = DeepCell(1, window=31, padding="valid").eval()
    valid.load_state_dict(same.state_dict())
    image = torch.randn(1, 1, 20, 27)
    with torch.no_grad():
        out = same(image)
        padded = valid(F.pad(image, (15, 15, 15, 15)))
    assert out.shape == (1, 3, 20, 27)
    torch.testing.assert_close(out, padded)


def test_sizes_and_interface():
    model = build_model("deepcell", in_channels=3, out_channels=3, window=31, padding="valid")
    assert model.output_size(40) == 10 and model.valid_input_size(5) == 31
    with pytest.raises(ValueError, match="not admissible"):
        model.output_size(30)
    same = build_model("deepcell", in_channels=3, out_channels=3)
    assert same.output_size(17) == 17 and same.valid_input_size(17) == 17 and same.padding == "same"
    assert same.output_layers() == [same.head]
    availability = torch.tensor([[1.0, 0.0, 1.0]])
    x = torch.randn(1, 3, 8, 8)
    changed = x.clone()
    changed[:, 1] = 5.0
    with torch.no_grad():  # Marker Zero: a missing marker's slot is ignored
        torch.testing.assert_close(same.eval()(x, availability), same(changed, availability))


@pytest.mark.parametrize("options", [{"window": 45}, {"padding": "reflect"}, {"marker_input": "nope"}])
def test_invalid_options(options):
    with pytest.raises(FluosegError):
        build_model("deepcell", in_channels=1, out_channels=3, **options)
