"""Tests of fluoseg.tasks.semantic."""

import numpy as np
import pytest
import torch

from fluoseg.errors import FluosegError

from fluoseg.tasks import SemanticTask, masks_to_target


def test_masks_to_target_and_overlap_error():
    masks = np.zeros((2, 3, 3), np.uint8)
    masks[0, 0, 0] = 1
    masks[1, 2, 2] = 1
    target = masks_to_target(masks, ["a", "b"])
    assert target[0, 0] == 1 and target[2, 2] == 2 and target.sum() == 3
    masks[1, 0, 0] = 1
    with pytest.raises(FluosegError, match="separate"):
        masks_to_target(masks, ["a", "b"])


def test_semantic_fit_uses_log_weights_and_decode_is_argmax():
    task = SemanticTask(["a", "b"])
    targets = {"classes": np.array([[0, 0, 0, 1], [0, 0, 2, 1]])}
    task.fit([targets])
    # counts 5, 2, 1 of 8 pixels: W_c = log(1 + 8 / (3 |Y_c|)), computed by hand
    np.testing.assert_allclose(task.class_weights, [0.42744, 0.84730, 1.29928], atol=1e-5)
    activated = np.array([[[0.6, 0.2]], [[0.3, 0.3]]], np.float32)
    assert task.decode(activated).tolist() == [[[1, 0]], [[0, 0]]]
    scores = task.score(np.array([[1, 1, 0], [0, 0, 0]]))
    assert scores["f1_a"] == pytest.approx(2 / 3) and scores["f1_b"] == 1.0
    assert scores["score"] == pytest.approx((2 / 3 + 1) / 2)


def test_unknown_loss_and_options_of_ce_log_are_refused():
    with pytest.raises(FluosegError, match="unknown loss .focus.; available"):
        SemanticTask(["a"], loss="focus")
    with pytest.raises(FluosegError, match="not ce-log"):
        SemanticTask(["a"], loss_options={"eps": 1})
    with pytest.raises(FluosegError, match="set by fluoseg itself"):
        SemanticTask(["a"], loss="dice", loss_options={"ignore_index": 3})
