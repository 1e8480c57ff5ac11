"""Tests of fluoseg.uncertainty: per-pixel uncertainty maps from TTA or MC-dropout passes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from fluoseg.errors import FluosegError
from fluoseg.infer import Member, PredictOptions, Segmenter
from fluoseg.markers import MarkerPanel
from fluoseg.run import Preprocessing
from fluoseg.tasks import task_from_state
from fluoseg.tasks.semantic import SemanticTask
from fluoseg.uncertainty import (UncertaintyOptions, count_passes, pixel_uncertainty, probability_groups,
                                 summarize_samples)

LN2 = math.log(2.0)


class _Valid3x3(nn.Module):
    """One 3x3 valid convolution, a network the tiling accepts (one marker in, one logit out)."""

    padding = "valid"

    def __init__(self, kernel: np.ndarray, bias: float = 0.0, dropout: float = 0.0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3)
        self.drop = nn.Dropout(dropout)
        with torch.no_grad():
            self.conv.weight.copy_(torch.as_tensor(kernel, dtype=torch.float32)[None, None])
            self.conv.bias.fill_(bias)

    def forward(self, x, availability=None):
        return self.conv(self.drop(x))

    def output_size(self, n):
        return n - 2

    def valid_input_size(self, at_least):
        return at_least


HORIZONTAL_EDGES = np.array([[0, 0, 0], [-10, 0, 10], [0, 0, 0]], np.float32)
"""Logit 10 (I[x+1] - I[x-1]): positive on a rising edge along x, negative once mirrored, 0 when turned."""


def segmenter_of(model: nn.Module, task=None) -> Segmenter:
    task = task or SemanticTask(["cells"], loss="bce")
    return Segmenter([Member(model=model, panel=MarkerPanel(["DNA"]), classes=("cells",), preprocess=Preprocessing(),
                             task=task)])


def step_image() -> np.ndarray:
    """A vertical edge at x = 32: dark left half, bright right half."""
    image = np.zeros((1, 64, 64), np.float32)
    image[:, :, 32:] = 100.0
    return image


# ---- summaries of hand-made passes ---------------------------------------------------------


def test_agreeing_passes_have_no_variance_or_mutual_information_but_entropy():
    samples = np.full((8, 1, 4, 5), 0.5, np.float32)  # every pass says 0.5
    tasks = [SemanticTask(["c"], loss="bce")]
    assert np.all(summarize_samples(samples, tasks, "variance") == 0)
    assert np.allclose(summarize_samples(samples, tasks, "mutual-information"), 0, atol=1e-12)
    assert np.allclose(summarize_samples(samples, tasks, "entropy"), LN2)


def test_disagreeing_binary_passes_reach_the_maximum():
    samples = np.zeros((4, 1, 2, 2), np.float32)
    samples[:2, 0, 0, 0] = 1.0  # pixel (0, 0): two passes certain of 1, two certain of 0
    tasks = [SemanticTask(["c"], loss="bce")]
    variance = summarize_samples(samples, tasks, "variance")
    information = summarize_samples(samples, tasks, "mutual-information")
    assert variance.dtype == np.float32 and variance.shape == (2, 2)
    assert variance[0, 0] == pytest.approx(0.25) and np.all(variance.flat[1:] == 0)
    assert information[0, 0] == pytest.approx(LN2) and np.allclose(information.flat[1:], 0)


def test_softmax_classes_form_one_categorical_variable_with_their_background():
    # ce-log drops the background channel: two classes at 1/3 each leave 1/3 to the background.
    samples = np.full((3, 2, 1, 1), 1 / 3, np.float32)
    task = SemanticTask(["a", "b"])
    assert probability_groups(task) == [("categorical", (0, 1))]
    assert summarize_samples(samples, [task], "entropy")[0, 0] == pytest.approx(math.log(3), rel=1e-6)
    # passes certain of a, of b and of the background: mean (1/3, 1/3, 1/3), each pass 0 entropy
    certain = np.zeros((3, 2, 1, 1), np.float32)
    certain[0, 0], certain[1, 1] = 1.0, 1.0
    assert summarize_samples(certain, [task], "mutual-information")[0, 0] == pytest.approx(math.log(3), rel=1e-6)
    assert summarize_samples(certain, [task], "variance")[0, 0] == pytest.approx(2 / 9, rel=1e-6)


def test_distance_method_uses_its_foreground_only_and_regression_is_refused():
    distance = task_from_state({"name": "instance", "method": "distance", "alpha": 1.0, "h": 1.0, "threshold": 0.5,
                                "min_size": 0})
    assert probability_groups(distance) == [("binary", (1,))]
    samples = np.zeros((2, 2, 1, 1), np.float32)
    samples[:, 0] = [[[7.0]], [[-3.0]]]  # distances far outside [0, 1] are ignored
    assert summarize_samples(samples, [distance], "variance")[0, 0] == 0
    regression = task_from_state({"name": "regression", "targets": ["DNA"], "loss": "l1", "normalization": "gaussian",
                                  "percentiles": [1, 99]})
    with pytest.raises(FluosegError, match="regression"):
        probability_groups(regression)


def test_separate_members_add_up():
    tasks = [SemanticTask(["a"], loss="bce"), SemanticTask(["b"], loss="bce")]
    samples = np.zeros((2, 2, 1, 1), np.float32)
    samples[0, 1] = 1.0  # member b disagrees with itself, member a does not
    assert summarize_samples(samples, tasks, "mutual-information")[0, 0] == pytest.approx(LN2)
    assert summarize_samples(samples, tasks, "variance")[0, 0] == pytest.approx(0.25 / 2)
    with pytest.raises(FluosegError, match="activated channels"):
        summarize_samples(samples, tasks[:1])


# ---- maps of whole images ------------------------------------------------------------------


def test_a_constant_network_gives_a_zero_map():
    segmenter = segmenter_of(_Valid3x3(np.zeros((3, 3)), bias=0.7))
    for measure in ("variance", "mutual-information"):
        uncertainty = pixel_uncertainty(segmenter, step_image(), ["DNA"], PredictOptions(tile_size=24),
                                        UncertaintyOptions(measure=measure))
        assert uncertainty.shape == (64, 64) and uncertainty.dtype == np.float32
        assert np.abs(uncertainty).max() < 1e-7


def test_tta_map_is_high_where_the_flips_disagree_and_zero_where_they_agree():
    segmenter = segmenter_of(_Valid3x3(HORIZONTAL_EDGES))
    uncertainty = pixel_uncertainty(segmenter, step_image(), ["DNA"], PredictOptions(tile_size=24))
    # On the edge: 2 of the 8 symmetries see a rising edge (p ~ 1), 2 a falling one (p ~ 0),
    # 4 turn it vertical (p = 0.5): variance (2 * 0.25 + 2 * 0.25) / 8 = 0.125.
    assert np.allclose(uncertainty[4:-4, 31:33], 0.125, atol=1e-3)
    flat = np.concatenate([uncertainty[4:-4, 4:29], uncertainty[4:-4, 36:-4]], axis=1)
    assert np.abs(flat).max() < 1e-6
    # The listed symmetries are used when --tta gives at least two: identity and mirror disagree fully.
    pair = pixel_uncertainty(segmenter, step_image(), ["DNA"], PredictOptions(tile_size=24, tta=[0, 4]))
    assert np.allclose(pair[4:-4, 31:33], 0.25, atol=1e-3)
    assert count_passes(PredictOptions(tta=[0, 4]), UncertaintyOptions()) == 2
    assert count_passes(PredictOptions(), UncertaintyOptions()) == 8


def test_mc_dropout_passes_disagree_reproducibly_and_need_dropout():
    model = _Valid3x3(HORIZONTAL_EDGES, dropout=0.5).eval()  # as a loaded checkpoint is
    segmenter = segmenter_of(model)
    options = UncertaintyOptions(method="dropout", samples=6, seed=3)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    first = pixel_uncertainty(segmenter, step_image(), ["DNA"], PredictOptions(tile_size=24), options)
    assert torch.equal(torch.rand(1), before)  # torch's global random state is left as it was
    again = pixel_uncertainty(segmenter, step_image(), ["DNA"], PredictOptions(tile_size=24), options)
    assert np.array_equal(first, again)
    assert first[4:-4, 31:33].mean() > 0.02  # dropped inputs move the edge's logit
    assert not model.drop.training  # dropout is off again afterwards
    with pytest.raises(FluosegError, match="needs a model trained with dropout"):
        pixel_uncertainty(segmenter_of(_Valid3x3(HORIZONTAL_EDGES)), step_image(), ["DNA"], None, options)


def test_only_fluoseg_models_can_be_sampled():
    from fluoseg.uncertainty import check_uncertainty

    class Foreign:  # what fluoseg.bioimage.foreign.load_model gives for other bioimage.io packages
        task_name = "semantic"

    with pytest.raises(FluosegError, match="leave --uncertainty out"):
        check_uncertainty(Foreign(), UncertaintyOptions())


def test_options_are_checked():
    with pytest.raises(FluosegError, match="unknown uncertainty method"):
        UncertaintyOptions(method="ensemble")
    with pytest.raises(FluosegError, match="unknown uncertainty measure"):
        UncertaintyOptions(measure="std")
    with pytest.raises(FluosegError, match="at least 2"):
        UncertaintyOptions(samples=1)


def test_the_cli_offers_the_modules_methods_and_measures():
    from fluoseg.cli import predict as cli_predict
    from fluoseg.uncertainty import MEASURES, METHODS

    assert cli_predict.UNCERTAINTY_METHODS == METHODS and cli_predict.UNCERTAINTY_MEASURES == MEASURES
