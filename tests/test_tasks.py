import numpy as np
import pytest
import torch

from fluoseg.errors import FluosegError
from fluoseg.tasks import IGNORE, InstanceTask, SemanticTask, masks_to_target, task_from_state


def two_touching_disks(shape=(40, 40)):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    labels = np.zeros(shape, np.int64)
    labels[(yy - 20) ** 2 + (xx - 13) ** 2 <= 36] = 1
    labels[((yy - 20) ** 2 + (xx - 24) ** 2 <= 36) & (labels == 0)] = 2
    return labels


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
    counts = np.array([5, 2, 1])
    np.testing.assert_allclose(task.class_weights, np.log(1 + counts.sum() / (3 * counts)), rtol=1e-6)
    activated = np.array([[[0.6, 0.2]], [[0.3, 0.3]]], np.float32)
    assert task.decode(activated).tolist() == [[[1, 0]], [[0, 0]]]
    scores = task.score(np.array([[1, 1, 0], [0, 0, 0]]))
    assert scores["f1_a"] == pytest.approx(2 / 3) and scores["f1_b"] == 1.0
    assert scores["score"] == pytest.approx((2 / 3 + 1) / 2)


@pytest.mark.parametrize("method", InstanceTask.METHODS)
def test_instance_targets_decode_back_to_objects(method):
    task = InstanceTask(method=method, min_size=5)
    labels = two_touching_disks()
    targets = task.make_targets(labels)
    task.fit([targets])
    # ideal activated outputs from the targets
    if method == "border":
        ideal = np.eye(3, dtype=np.float32)[targets["classes"]].transpose(2, 0, 1)
    elif method == "distance":
        ideal = np.stack([targets["distance"], targets["foreground"].astype(np.float32)])
    else:
        ideal = targets["classes"][None].astype(np.float32)
    decoded = task.decode(ideal)
    expected_objects = 1 if method == "threshold" else 2  # thresholding cannot split touching nuclei
    assert len(np.unique(decoded[decoded > 0])) == expected_objects
    counts = task.score_counts(decoded, targets)
    if method == "threshold":  # the merged object still overlaps one disk with IoU > 0.5
        assert counts.tolist() == [1, 0, 1] and task.score(counts)["score"] == pytest.approx(2 / 3)
    else:
        assert counts.tolist() == [2, 0, 0] and task.score(counts)["score"] == 1.0


@pytest.mark.parametrize("method", InstanceTask.METHODS)
def test_instance_loss_is_finite_ignores_outside_and_round_trips(method):
    task = InstanceTask(method=method)
    targets = task.make_targets(two_touching_disks())
    task.fit([targets])
    batch = {k: torch.as_tensor(v[None]) for k, v in targets.items()}
    for key, value in task.fill.items():
        if key in batch:
            batch[key][0, :5] = value  # outside the image
    logits = torch.randn(1, task.output_channels(), 40, 40, requires_grad=True)
    loss = task.loss(logits, batch)
    loss.backward()
    assert torch.isfinite(loss) and torch.all(logits.grad[0, :, :5] == 0)
    assert task.activate(logits).shape[1] == task.activated_channels()
    rebuilt = task_from_state(task.state())
    assert rebuilt.state() == task.state()


def test_border_loss_is_weighted_by_the_weight_map():
    task = InstanceTask(method="border")
    targets = task.make_targets(two_touching_disks())
    logits = torch.zeros(1, 3, 40, 40)
    batch = {k: torch.as_tensor(v[None]) for k, v in targets.items()}
    expected = float(np.log(3)) * targets["weights"].mean()
    assert task.loss(logits, batch).item() == pytest.approx(expected, rel=1e-5)
    assert IGNORE == -1


def test_regression_task_scores_pearson_and_mae():
    from fluoseg.tasks import RegressionTask, pearson_correlation

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
    assert pooled == pytest.approx(pearson_correlation(noisy, truth), rel=1e-9)


def test_regression_loss_l1_and_l2():
    from fluoseg.tasks import RegressionTask

    truth = np.zeros((1, 4, 4), np.float32)
    targets = {k: torch.as_tensor(v[None]) for k, v in RegressionTask(["a"]).make_targets(truth).items()}
    logits = torch.full((1, 1, 4, 4), 2.0)
    assert RegressionTask(["a"]).loss(logits, targets).item() == pytest.approx(2.0)
    assert RegressionTask(["a"], loss="l2").loss(logits, targets).item() == pytest.approx(4.0)
    targets["valid"][:] = 0
    assert RegressionTask(["a"]).loss(logits, targets).item() == 0.0
    with pytest.raises(FluosegError):
        RegressionTask([])
