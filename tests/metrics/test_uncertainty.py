"""Tests of fluoseg.metrics.uncertainty: entropy, mutual information and variance of samples."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fluoseg.errors import FluosegError
from fluoseg.metrics.uncertainty import mutual_information, predictive_entropy, uncertainty_maps


def test_binary_entropy_by_hand():
    h = predictive_entropy([0.0, 0.25, 0.5, 1.0])
    assert h == pytest.approx([0.0, -(0.25 * math.log(0.25) + 0.75 * math.log(0.75)), math.log(2), 0.0])


def test_categorical_entropy_along_a_class_axis():
    uniform = np.full((4, 2, 3), 0.25)  # 4 classes first
    assert predictive_entropy(uniform, class_axis=0) == pytest.approx(np.full((2, 3), math.log(4)))
    certain = np.moveaxis(np.eye(3)[[0, 2]], -1, -1)  # (2 pixels, 3 classes), one-hot
    assert predictive_entropy(certain, class_axis=-1) == pytest.approx([0.0, 0.0])


def test_samples_that_disagree_completely_have_all_their_entropy_as_mutual_information():
    samples = np.array([[0.0, 0.5, 1.0], [1.0, 0.5, 1.0]])  # 2 samples of 3 pixels
    maps = uncertainty_maps(samples)
    assert maps.mean == pytest.approx([0.5, 0.5, 1.0])
    assert maps.variance == pytest.approx([0.25, 0.0, 0.0])
    assert maps.entropy == pytest.approx([math.log(2), math.log(2), 0.0])
    # Pixel 0: the samples disagree (model uncertainty); pixel 1: both say 50 % (no MI).
    assert maps.mutual_information == pytest.approx([math.log(2), 0.0, 0.0])


def test_mutual_information_is_between_zero_and_the_entropy():
    rng = np.random.default_rng(0)
    samples = rng.beta(0.7, 0.7, (8, 20, 20))
    maps = uncertainty_maps(samples)
    assert np.all(maps.mutual_information >= 0) and np.all(maps.mutual_information <= maps.entropy + 1e-12)
    assert maps.variance == pytest.approx(samples.var(axis=0))
    assert uncertainty_maps(np.repeat(samples[:1], 4, axis=0)).mutual_information == pytest.approx(0.0, abs=1e-12)


def test_categorical_samples_with_a_class_axis():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(5, 3, 6, 7))  # 5 samples, 3 classes, 6x7 pixels
    samples = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    maps = uncertainty_maps(samples, class_axis=0)
    assert maps.mean.shape == (3, 6, 7) and maps.variance.shape == (3, 6, 7)
    assert maps.entropy.shape == (6, 7) and maps.mutual_information.shape == (6, 7)
    by_hand = -(maps.mean * np.log(maps.mean)).sum(axis=0)
    assert maps.entropy == pytest.approx(by_hand)
    assert mutual_information(samples, class_axis=-3) == pytest.approx(maps.mutual_information)


@pytest.mark.parametrize("call, match", [
    (lambda: predictive_entropy([1.5]), "finite numbers in \\[0, 1\\]"),
    (lambda: predictive_entropy(np.zeros((2, 2)), class_axis=2), "class_axis 2"),
    (lambda: uncertainty_maps(np.zeros(3)), "stacked on a first axis"),
    (lambda: uncertainty_maps(np.zeros((2, 3, 4)), class_axis=2), "class_axis 2"),
])
def test_mistakes_are_fluoseg_errors(call, match):
    with pytest.raises(FluosegError, match=match):
        call()
