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
