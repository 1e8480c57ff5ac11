"""Pixel metrics of binary masks: counts, ratios, empty-mask convention, pooling, tidy rows."""

from __future__ import annotations

import numpy as np
import pytest

from fluoseg.errors import FluosegError
from fluoseg.metrics.semantic import (
    ConfusionCounts,
    confusion_counts,
    f1_score,
    iou_score,
    mean_over_images,
    per_class_confusion,
    pool_confusion,
    precision_score,
    recall_score,
    semantic_rows,
)


def test_counts_and_ratios_by_hand() -> None:
    # pred 1 1 0 0 / truth 1 0 1 0 -> TP 1, FP 1, FN 1, TN 1.
    c = confusion_counts(np.array([[1, 1, 0, 0]]), np.array([[1, 0, 1, 0]]))
    assert c == ConfusionCounts(tp=1, fp=1, fn=1, tn=1)
    assert (c.precision, c.recall, c.f1) == (0.5, 0.5, 0.5)  # F1 = 2/(2+1+1)
    assert c.iou == pytest.approx(1 / 3)


def test_count_functions_accept_numpy_integers() -> None:
    tp, fp, fn = np.int64(6), np.int64(2), np.int64(4)
    assert f1_score(tp, fp, fn) == pytest.approx(12 / 18)
    assert iou_score(tp, fp, fn) == pytest.approx(6 / 12)
    assert precision_score(tp, fp, fn) == pytest.approx(6 / 8)
    assert recall_score(tp, fp, fn) == pytest.approx(6 / 10)
    assert isinstance(f1_score(tp, fp, fn), float)


def test_empty_mask_convention() -> None:
    empty = np.zeros((3, 3), bool)
    some = empty.copy()
    some[0, 0] = True
    both = confusion_counts(empty, empty)
    assert (both.precision, both.recall, both.f1, both.iou, both.tn) == (1.0, 1.0, 1.0, 1.0, 9)
    missed = confusion_counts(empty, some)  # nothing predicted, something true
    assert (missed.precision, missed.recall, missed.f1, missed.iou) == (0.0, 0.0, 0.0, 0.0)
    false_alarm = confusion_counts(some, empty)  # something predicted, nothing true
    assert (false_alarm.precision, false_alarm.recall, false_alarm.f1) == (0.0, 0.0, 0.0)
    assert f1_score(0, 0, 0) == 1.0


def test_random_masks_against_pixel_loop() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        shape = tuple(int(s) for s in rng.integers(1, 12, size=int(rng.integers(1, 4))))
        pred, truth = rng.random(shape) < rng.random(), rng.random(shape) < rng.random()
        tp = fp = fn = tn = 0
        for p, t in zip(pred.ravel().tolist(), truth.ravel().tolist()):
            tp, fp, fn, tn = tp + (p and t), fp + (p and not t), fn + (t and not p), tn + (not p and not t)
        c = confusion_counts(pred.astype(np.uint8), truth)
        assert (c.tp, c.fp, c.fn, c.tn) == (tp, fp, fn, tn)
        if tp + fp and tp + fn and tp:
            assert c.f1 == pytest.approx(2 * c.precision * c.recall / (c.precision + c.recall), abs=1e-12)


def test_pooled_versus_mean_per_image() -> None:
    a = ConfusionCounts(tp=9, fp=1, fn=0, tn=0)  # F1 18/19
    b = ConfusionCounts(tp=0, fp=0, fn=1, tn=9)  # F1 0
    assert pool_confusion([a, b]) == ConfusionCounts(9, 1, 1, 9)
    assert pool_confusion([a, b]).f1 == pytest.approx(18 / 20)
    assert mean_over_images([a, b], "f1") == pytest.approx((18 / 19 + 0) / 2)
    with pytest.raises(FluosegError):
        mean_over_images([a], "dice")


def test_per_class_channels() -> None:
    pred = np.zeros((2, 4, 4), np.uint8)
    truth = np.zeros((2, 4, 4), np.uint8)
    pred[0, :2], truth[0, :1] = 1, 1
    pred[1, 3, 3] = 1
    c0, c1 = per_class_confusion(pred, truth)
    assert c0 == ConfusionCounts(tp=4, fp=4, fn=0, tn=8)
    assert c1 == ConfusionCounts(tp=0, fp=1, fn=0, tn=15)


def test_semantic_rows_per_image_and_pooled() -> None:
    p1 = np.array([[[1, 1, 0, 0]], [[0, 0, 0, 0]]], bool)
    t1 = np.array([[[1, 0, 1, 0]], [[0, 0, 0, 0]]], bool)
    p2 = np.array([[[1, 1, 1, 1]], [[0, 0, 0, 1]]], bool)
    t2 = np.array([[[1, 1, 1, 1]], [[0, 0, 1, 1]]], bool)
    rows = semantic_rows([("a", p1, t1), ("b", p2, t2)], class_names=["nuclei", "vessels"])
    assert set(rows[0]) == {"image", "class", "metric", "value"}
    value = {(r["image"], r["class"], r["metric"]): r["value"] for r in rows}
    assert len(value) == len(rows) == 3 * 2 * 8
    assert value[("a", "nuclei", "f1")] == 0.5
    assert value[("a", "vessels", "f1")] == 1.0  # both empty
    assert value[("b", "vessels", "recall")] == 0.5
    # pooled nuclei: TP 1+4, FP 1, FN 1 -> F1 10/12; vessels: TP 1, FN 1 -> F1 2/3
    assert value[("ALL", "nuclei", "tp")] == 5 and value[("ALL", "nuclei", "tn")] == 1
    assert value[("ALL", "nuclei", "f1")] == pytest.approx(10 / 12)
    assert value[("ALL", "vessels", "f1")] == pytest.approx(2 / 3)
    assert [r["image"] for r in rows][-16:] == ["ALL"] * 16


def test_semantic_rows_optional_image_mean() -> None:
    p = np.ones((1, 2, 2), bool)
    rows = semantic_rows([("a", p, p), ("b", p, ~p)], class_names=["x"], include_image_mean=True)
    mean = {r["metric"]: r["value"] for r in rows if r["image"] == "MEAN"}
    assert mean == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "iou": 0.5}


@pytest.mark.parametrize("pred, truth", [
    (np.zeros((1, 4, 4)), np.zeros((1, 4, 5))),          # shape mismatch
    (np.zeros((2, 4, 4)), np.zeros((1, 4, 4))),          # class count mismatch
    (np.full((1, 4, 4), 0.7), np.zeros((1, 4, 4))),      # probabilities, not masks
    (np.full((1, 4, 4), 2), np.zeros((1, 4, 4))),        # labels, not masks
])
def test_user_mistakes_raise(pred: np.ndarray, truth: np.ndarray) -> None:
    with pytest.raises(FluosegError):
        semantic_rows([("a", pred, truth)], class_names=["x"])


def test_rows_reject_bad_names() -> None:
    m = np.zeros((1, 2, 2), bool)
    with pytest.raises(FluosegError):
        semantic_rows([("ALL", m, m)], class_names=["x"])
    with pytest.raises(FluosegError):
        semantic_rows([("a", m, m), ("a", m, m)], class_names=["x"])
    with pytest.raises(FluosegError):
        semantic_rows([("a", m, m)], class_names=["x", "y"])
    with pytest.raises(FluosegError):
        confusion_counts(np.zeros(3), np.zeros(4))
