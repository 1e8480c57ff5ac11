import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fluoseg.tasks import IGNORE_INDEX
from fluoseg.tasks.losses import WeightedCrossEntropy, log_class_weights


def test_log_class_weights_formula():
    counts = np.array([900, 90, 10])
    # W_c = log(1 + 1000 / (3 |Y_c|)), by hand: log(1.3704), log(4.7037), log(34.333)
    np.testing.assert_allclose(log_class_weights(counts, eps=1.0), [0.31508, 1.54835, 3.53612], atol=1e-5)
    np.testing.assert_allclose(log_class_weights(counts, eps=2.0)[0], np.log(2.37037), atol=1e-5)
    weights = log_class_weights(counts)
    assert weights[0] < weights[1] < weights[2]


def test_log_class_weights_absent_class_is_finite():
    weights = log_class_weights(np.array([100, 0]))
    assert np.all(np.isfinite(weights)) and weights[1] > weights[0]


def test_weighted_cross_entropy_matches_manual_and_ignores_pixels():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 4, 4)
    target = torch.randint(0, 3, (2, 4, 4))
    target[0, 0, 0] = IGNORE_INDEX
    weights = np.array([0.5, 1.0, 2.0], np.float32)
    loss = WeightedCrossEntropy(weights)(logits, target)
    valid = target != IGNORE_INDEX
    log_probabilities = F.log_softmax(logits, 1)
    picked = log_probabilities.permute(0, 2, 3, 1)[valid].gather(1, target[valid][:, None])[:, 0]
    manual = -(torch.as_tensor(weights)[target[valid]] * picked).sum() / valid.sum()
    assert loss.item() == pytest.approx(manual.item(), rel=1e-5)


def test_weighted_cross_entropy_hand_case_divides_by_annotated_pixels():
    # Three pixels of two classes, weights (1, 2). Pixel 1: logits (0, 0), class 0: 1 * -log(1/2) = ln 2.
    # Pixel 2: logits (ln 3, 0), class 1: p = 1 / (3 + 1), 2 * -log(1/4) = 4 ln 2. Pixel 3 is ignored.
    # Sum 5 ln 2 over the 2 annotated pixels = 2.5 ln 2 = 1.7329 (a weight-normalised mean would give 5/3 ln 2).
    logits = torch.tensor([[0.0, math.log(3.0), 5.0], [0.0, 0.0, -5.0]])[None, :, None, :]
    target = torch.tensor([[[0, 1, IGNORE_INDEX]]])
    loss = WeightedCrossEntropy(np.array([1.0, 2.0]))(logits, target)
    assert loss.item() == pytest.approx(2.5 * math.log(2.0), rel=1e-6)
