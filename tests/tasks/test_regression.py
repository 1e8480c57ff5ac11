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


def test_regression_scores_a_hand_worked_case_pooled_over_images():
    # prediction 1, 2, 3, 4 against truth 1, 3, 2, 4: both centred to -1.5, -0.5 (resp. 0.5), 0.5 (-0.5), 1.5;
    # covariance sum 2.25 - 0.25 - 0.25 + 2.25 = 4, sums of squares 5 and 5: r = 4 / 5; MAE (0 + 1 + 1 + 0) / 4
    task = RegressionTask(["DAPI"])
    truth = np.array([[[1.0, 3.0], [2.0, 4.0]]], np.float32)
    prediction = np.array([[[1.0, 2.0], [3.0, 4.0]]], np.float32)
    scores = task.score(task.score_counts(prediction, task.make_targets(truth)))
    assert scores["pearson_DAPI"] == pytest.approx(0.8) and scores["mae_DAPI"] == pytest.approx(0.5)
    # the same pixels as two one-row images (r = 1 in each): the counts add up to the pooled r = 0.8, not 1
    halves = [task.score_counts(prediction[:, i:i + 1], task.make_targets(truth[:, i:i + 1])) for i in range(2)]
    pooled = task.score(halves[0] + halves[1])
    assert pooled["pearson_DAPI"] == pytest.approx(0.8) and pooled["mae_DAPI"] == pytest.approx(0.5)


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
