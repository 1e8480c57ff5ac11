"""Tests of fluoseg.tasks.segmentation_losses against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from fluoseg.errors import FluosegError
from fluoseg.tasks.segmentation_losses import (
    BCEDiceLoss,
    BCEWithLogits,
    DeepSupervisionLoss,
    DiceLoss,
    FocalLoss,
    JaccardLoss,
    build_loss,
    loss_names,
)


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


# One image, one channel, four pixels: logits and 0/1 targets.
LOGITS = torch.tensor([0.0, 2.0, -1.0, 3.0]).reshape(1, 1, 2, 2)
TARGET = torch.tensor([1.0, 0.0, 0.0, 1.0]).reshape(1, 1, 2, 2)


def hand_bce(pos_weight: float = 1.0, pixels=range(4)) -> float:
    terms = []
    for i in pixels:
        x, t = float(LOGITS.flatten()[i]), float(TARGET.flatten()[i])
        p = sigmoid(x)
        terms.append(-(pos_weight * t * math.log(p) + (1 - t) * math.log(1 - p)))
    return sum(terms) / len(terms)


def test_names():
    assert loss_names() == ["bce", "bce-dice", "dice", "focal", "jaccard"]


def test_bce_matches_the_study_formula_and_torch():
    assert float(BCEWithLogits()(LOGITS, TARGET)) == pytest.approx(hand_bce())
    assert float(build_loss("bce", pos_weight=9)(LOGITS, TARGET)) == pytest.approx(hand_bce(9.0))
    logits, target = torch.randn(2, 3, 8, 8), (torch.rand(2, 3, 8, 8) > 0.5).float()
    weight = torch.tensor([1.0, 2.0, 5.0]).reshape(3, 1, 1)
    torch.testing.assert_close(
        BCEWithLogits(pos_weight=[1.0, 2.0, 5.0])(logits, target),
        F.binary_cross_entropy_with_logits(logits, target, pos_weight=weight),
    )


def test_bce_ignores_target_minus_one_and_invalid_pixels():
    ignored = TARGET.clone()
    ignored.view(-1)[1] = -1
    assert float(BCEWithLogits()(LOGITS, ignored)) == pytest.approx(hand_bce(pixels=[0, 2, 3]))
    valid = torch.tensor([1, 0, 1, 1]).reshape(1, 2, 2)  # (N, H, W) mask
    assert float(BCEWithLogits()(LOGITS, TARGET, valid)) == pytest.approx(hand_bce(pixels=[0, 2, 3]))
    assert float(BCEWithLogits(ignore_index=None)(LOGITS, TARGET)) == pytest.approx(hand_bce())


def test_dice_by_hand():
    probabilities = torch.tensor([0.5, 0.5, 0.0, 1.0]).reshape(1, 1, 2, 2)
    # intersection 1.5, |P| = 2, |T| = 2: 1 - (3 + 1) / (4 + 1)
    assert float(DiceLoss(from_logits=False)(probabilities, TARGET)) == pytest.approx(0.2)
    # Jaccard: 1 - (1.5 + 1) / (2 + 2 - 1.5 + 1)
    assert float(JaccardLoss(from_logits=False)(probabilities, TARGET)) == pytest.approx(1 - 2.5 / 3.5)
    p = [sigmoid(float(v)) for v in LOGITS.flatten()]
    t = TARGET.flatten().tolist()
    intersection = sum(a * b for a, b in zip(p, t))
    expected = 1 - (2 * intersection + 1) / (sum(p) + sum(t) + 1)
    assert float(build_loss("dice")(LOGITS, TARGET)) == pytest.approx(expected)


def test_dice_per_image_or_over_the_batch():
    probabilities = torch.tensor([[1.0, 0.0], [0.0, 0.0]]).reshape(2, 1, 1, 2)
    target = torch.tensor([[1.0, 0.0], [1.0, 1.0]]).reshape(2, 1, 1, 2)
    # per image: image 1 perfect (0), image 2: 1 - 1 / (2 + 1)
    assert float(DiceLoss(from_logits=False)(probabilities, target)) == pytest.approx((0 + 2 / 3) / 2)
    # batch: intersection 1, |P| 1, |T| 3: 1 - 3 / 5
    assert float(DiceLoss(from_logits=False, batch_dice=True)(probabilities, target)) == pytest.approx(0.4)


def test_perfect_prediction_scores_zero():
    target = (torch.rand(2, 3, 16, 16) > 0.5).float()
    target[1] = 0.0  # an empty image predicted empty is perfect too
    logits = 40.0 * (2 * target - 1)
    for name in ("dice", "jaccard", "bce-dice", "focal", "bce"):
        assert float(build_loss(name)(logits, target)) == pytest.approx(0.0, abs=1e-6), name
    classes = torch.randint(0, 3, (2, 16, 16))
    one_hot = 40.0 * (2 * F.one_hot(classes, 3).movedim(-1, 1).float() - 1)
    for name in ("dice", "jaccard", "bce-dice", "focal"):
        assert float(build_loss(name, mode="softmax")(one_hot, classes)) == pytest.approx(0.0, abs=1e-6), name


def test_softmax_dice_by_hand_with_ignored_pixels():
    probabilities = torch.tensor([[0.8, 0.2], [0.4, 0.6], [0.5, 0.5]]).T.reshape(1, 2, 1, 3)
    target = torch.tensor([0, 1, -1]).reshape(1, 1, 3)
    # class 0: I = 0.8, |P| = 1.2, |T| = 1; class 1: I = 0.6, |P| = 0.8, |T| = 1
    expected = ((1 - 2.6 / 3.2) + (1 - 2.2 / 2.8)) / 2
    loss = DiceLoss(from_logits=False, mode="softmax")(probabilities, target)
    assert float(loss) == pytest.approx(expected)
    without_background = DiceLoss(from_logits=False, mode="softmax", include_background=False)
    assert float(without_background(probabilities, target)) == pytest.approx(1 - 2.2 / 2.8)


def test_focal_by_hand():
    logit, target = torch.zeros(1, 1, 1, 1), torch.ones(1, 1, 1, 1)
    # p_t = 0.5: ln 2 * (1 - 0.5)^2, times alpha for a positive
    assert float(FocalLoss()(logit, target)) == pytest.approx(math.log(2) / 4)
    assert float(FocalLoss(alpha=0.25)(logit, target)) == pytest.approx(0.25 * math.log(2) / 4)
    assert float(FocalLoss(alpha=0.25)(logit, 1 - target)) == pytest.approx(0.75 * math.log(2) / 4)
    assert float(FocalLoss(gamma=0)(LOGITS, TARGET)) == pytest.approx(hand_bce())
    logits, classes = torch.randn(2, 4, 5, 5), torch.randint(0, 4, (2, 5, 5))
    torch.testing.assert_close(FocalLoss(gamma=0, mode="softmax")(logits, classes), F.cross_entropy(logits, classes))
    weights = [1.0, 2.0, 0.5, 1.0]
    weighted = FocalLoss(gamma=0, mode="softmax", alpha=weights)(logits, classes)
    per_pixel = F.cross_entropy(logits, classes, reduction="none") * torch.tensor(weights)[classes]
    torch.testing.assert_close(weighted, per_pixel.mean())


def test_bce_dice_is_the_weighted_sum():
    logits, target = torch.randn(2, 2, 8, 8), (torch.rand(2, 2, 8, 8) > 0.5).float()
    combined = BCEDiceLoss(bce_weight=0.3, dice_weight=2.0, pos_weight=9)(logits, target)
    expected = 0.3 * BCEWithLogits(pos_weight=9)(logits, target) + 2.0 * DiceLoss()(logits, target)
    torch.testing.assert_close(combined, expected)
    classes = torch.randint(0, 2, (2, 8, 8))
    softmax = BCEDiceLoss(mode="softmax")(logits, classes)
    torch.testing.assert_close(softmax, F.cross_entropy(logits, classes) + DiceLoss(mode="softmax")(logits, classes))


@pytest.mark.parametrize(
    ("name", "mode"),
    [(name, "sigmoid") for name in ("bce", "dice", "bce-dice", "jaccard", "focal")]
    + [(name, "softmax") for name in ("dice", "bce-dice", "jaccard", "focal")],  # BCE is per channel only
)
def test_gradients_are_finite_and_ignored_pixels_get_none(name, mode):
    torch.manual_seed(0)
    logits = (50 * torch.randn(2, 3, 8, 8)).requires_grad_()
    if mode == "sigmoid":
        target = (torch.rand(2, 3, 8, 8) > 0.5).float()
        target[:, :, :2] = -1
    else:
        target = torch.randint(0, 3, (2, 8, 8))
        target[:, :2] = -1
    options = {} if name == "bce" else {"mode": mode}
    loss = build_loss(name, **options)(logits, target)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
    assert torch.count_nonzero(logits.grad[:, :, :2]) == 0


def test_all_ignored_batch_is_zero_not_nan():
    logits = torch.randn(1, 1, 4, 4, requires_grad=True)
    target = torch.full((1, 1, 4, 4), -1.0)
    for name in ("bce", "focal"):
        loss = build_loss(name)(logits, target)
        loss.backward()
        assert float(loss.detach()) == 0.0 and torch.isfinite(logits.grad).all()
    assert float(build_loss("dice")(logits, target).detach()) == pytest.approx(0.0)  # 1 - eps / eps


def test_lists_of_logits_average_per_output_losses():
    logits = [torch.randn(2, 1, 8, 8) for _ in range(3)]
    target = (torch.rand(2, 1, 8, 8) > 0.5).float()
    loss = build_loss("bce-dice")
    torch.testing.assert_close(loss(logits, target), torch.stack([loss(x, target) for x in logits]).mean())

    def mse(x, y):
        return ((x - y) ** 2).mean()

    wrapped = DeepSupervisionLoss(mse)
    torch.testing.assert_close(wrapped(logits, target), torch.stack([mse(x, target) for x in logits]).mean())
    torch.testing.assert_close(wrapped(logits[0], target), mse(logits[0], target))
    weighted = DeepSupervisionLoss(mse, weights=[0, 0, 1])
    torch.testing.assert_close(weighted(logits, target), mse(logits[2], target))


def test_target_shape_errors_are_bugs_not_user_errors():
    with pytest.raises(ValueError, match="logits' shape"):
        build_loss("bce")(torch.randn(1, 2, 4, 4), torch.zeros(1, 4, 4))
    with pytest.raises(ValueError, match="class indices"):
        build_loss("dice", mode="softmax")(torch.randn(1, 2, 4, 4), torch.full((1, 4, 4), 2))


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("cross-entropy", {}, "unknown loss 'cross-entropy'"),
        ("dice", {"epsilon": 1}, "unknown option 'epsilon'"),
        ("bce", {"pos_weight": -1}, "pos_weight"),
        ("bce", {"pos_weight": []}, "pos_weight"),
        ("dice", {"eps": 0}, "eps"),
        ("dice", {"mode": "multiclass"}, "mode"),
        ("dice", {"include_background": False}, "softmax"),
        ("jaccard", {"from_logits": "yes"}, "from_logits"),
        ("bce-dice", {"mode": "softmax", "pos_weight": 9}, "pos_weight"),
        ("bce-dice", {"dice_weight": -1}, "dice_weight"),
        ("focal", {"gamma": -1}, "gamma"),
        ("focal", {"alpha": 1.5}, "alpha"),
        ("focal", {"alpha": 0.25, "mode": "softmax"}, "alpha"),
    ],
)
def test_invalid_options_are_user_errors(name, options, message):
    with pytest.raises(FluosegError, match=message):
        build_loss(name, **options)
