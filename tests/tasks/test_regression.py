"""Tests of fluoseg.tasks.regression."""

import numpy as np
import pytest
import torch

from fluoseg.errors import FluosegError

from fluoseg.tasks import RegressionTask


def test_regression_task_scores_pearson_and_mae():
    task = RegressionTask(["DAPI"])
    rng = np.random.default_rng(0)
    truth = rng.normal(size=(1, 20, 20)).astype(np.float32)
    targets = task.make_targets(truth)
    prediction = 2 * truth + 1
    scores = task.score(task.score_counts(prediction, targets))
    assert scores["pearson_DAPI"] == pytest.approx(1.0) and scores["score"] == pytest.approx(1.0)
    assert scores["mae_DAPI"] == pytest.approx(np.abs(prediction - truth).mean(), rel=1e-6)
    noisy = truth + rng.normal(size=truth.shape)
    pooled = task.score(task.score_counts(noisy, targets))["pearson_DAPI"]
    assert pooled == pytest.approx(np.corrcoef(noisy.ravel(), truth.ravel())[0, 1], rel=1e-9)  # numpy as the oracle


def test_regression_loss_l1_and_l2():
    truth = np.zeros((1, 4, 4), np.float32)
    targets = {k: torch.as_tensor(v[None]) for k, v in RegressionTask(["a"]).make_targets(truth).items()}
    logits = torch.full((1, 1, 4, 4), 2.0)
    assert RegressionTask(["a"]).loss(logits, targets).item() == pytest.approx(2.0)
    assert RegressionTask(["a"], loss="l2").loss(logits, targets).item() == pytest.approx(4.0)
    targets["valid"][:] = 0
    assert RegressionTask(["a"]).loss(logits, targets).item() == 0.0
    with pytest.raises(FluosegError):
        RegressionTask([])
