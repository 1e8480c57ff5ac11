"""All instance metrics of an image at once: consistency, pooling, tidy rows, edge cases, errors."""

from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np
import pytest

from fluoseg.errors import FluosegError
from fluoseg.metrics import (
    INSTANCE_METRICS,
    aggregated_jaccard_index,
    aggregated_jaccard_index_cellpose,
    evaluate_instances,
    instance_rows,
    kromp_object_counts,
    matching_at_thresholds,
    pool_instance_evaluations,
)

REQUIRED = {"tp", "fp", "fn", "precision", "recall", "f1", "accuracy", "mean_matched_iou", "pq", "aji",
            "aji_cellpose", "us_rate", "os_rate"}
PER_THRESHOLD = {"tp", "fp", "fn", "precision", "recall", "f1", "accuracy", "mean_matched_iou", "pq", "coco_ap"}


def _pair(labelgen: SimpleNamespace, seed: int) -> tuple[np.ndarray, np.ndarray]:
    return labelgen.random_pair(np.random.default_rng(seed), (24, 24), kind=0)


def test_evaluation_agrees_with_the_single_metric_functions(labelgen: SimpleNamespace) -> None:
    for seed in range(10):
        truth, pred = _pair(labelgen, seed)
        e = evaluate_instances(truth, pred)
        assert e.matching == matching_at_thresholds(truth, pred)
        assert e.aji == aggregated_jaccard_index(truth, pred)
        assert e.aji_cellpose == aggregated_jaccard_index_cellpose(truth, pred)
        assert e.kromp == kromp_object_counts(truth, pred)
        fg_t, fg_p = truth > 0, pred > 0
        assert e.foreground.tp == np.count_nonzero(fg_t & fg_p)
        assert e.foreground.f1 == pytest.approx(
            2 * np.count_nonzero(fg_t & fg_p) / max(1, np.count_nonzero(fg_t) + np.count_nonzero(fg_p)))
        assert e.at(0.75) is e.matching[5]


def test_rows_have_the_documented_names_and_thresholds(labelgen: SimpleNamespace) -> None:
    truth, pred = _pair(labelgen, 1)
    scores = {int(p): 0.5 for p in np.unique(pred) if p > 0}
    rows = instance_rows([("img1", pred, truth, scores), ("img2", truth, truth)])
    assert all(set(r) == {"image", "metric", "threshold", "value"} for r in rows)
    names = {r["metric"] for r in rows}
    assert REQUIRED <= names and names <= set(INSTANCE_METRICS)
    for r in rows:
        if r["metric"] in PER_THRESHOLD:
            assert r["threshold"] in (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
        else:
            assert r["threshold"] is None
    by_image = {img: {r["metric"] for r in rows if r["image"] == img} for img in ("img1", "img2", "ALL")}
    assert "coco_ap" in by_image["img1"] and "coco_ap" not in by_image["img2"]
    assert "coco_ap" not in by_image["ALL"]  # pooled COCO needs scores for every image
    img2 = {(r["metric"], r["threshold"]): r["value"] for r in rows if r["image"] == "img2"}
    assert img2[("accuracy", 0.95)] == 1.0 and img2[("aji", None)] == 1.0 and img2[("us_rate", None)] == 0.0


def test_pooled_rows_sum_counts_before_ratios(labelgen: SimpleNamespace) -> None:
    pairs = [_pair(labelgen, s) for s in (3, 4, 5)]
    rows = instance_rows([(f"i{k}", p, t) for k, (t, p) in enumerate(pairs)], thresholds=(0.5, 0.7))
    value = {(r["image"], r["metric"], r["threshold"]): r["value"] for r in rows}
    evaluations = [evaluate_instances(t, p, thresholds=(0.5, 0.7)) for t, p in pairs]
    for thr in (0.5, 0.7):
        tp = sum(value[(f"i{k}", "tp", thr)] for k in range(3))
        fp = sum(value[(f"i{k}", "fp", thr)] for k in range(3))
        fn = sum(value[(f"i{k}", "fn", thr)] for k in range(3))
        assert value[("ALL", "tp", thr)] == tp
        assert value[("ALL", "f1", thr)] == pytest.approx(2 * tp / (2 * tp + fp + fn))
        assert value[("ALL", "accuracy", thr)] == pytest.approx(tp / (tp + fp + fn))
    c = sum(e.aji.intersection for e in evaluations)
    u = sum(e.aji.union for e in evaluations)
    assert value[("ALL", "aji", None)] == pytest.approx(c / u)
    us = sum(e.kromp.us for e in evaluations)
    n_true = sum(e.kromp.n_true for e in evaluations)
    assert value[("ALL", "us_rate", None)] == pytest.approx(us / n_true)
    mean_acc = np.mean([value[("ALL", "accuracy", t)] for t in (0.5, 0.7)])
    assert value[("ALL", "accuracy_mean_over_thresholds", None)] == pytest.approx(mean_acc)
    assert pool_instance_evaluations(evaluations).kromp.tp == value[("ALL", "kromp_tp", None)]


def test_invariant_to_label_permutation(labelgen: SimpleNamespace) -> None:
    rng = np.random.default_rng(3)
    truth, pred = _pair(labelgen, 8)
    a = evaluate_instances(truth, pred)
    b = evaluate_instances(labelgen.relabel_randomly(rng, truth), labelgen.relabel_randomly(rng, pred))
    assert a.kromp == b.kromp and a.foreground == b.foreground
    for x, y in zip(a.matching, b.matching):
        assert (x.tp, x.fp, x.fn) == (y.tp, y.fp, y.fn)
        assert x.sum_matched_iou == pytest.approx(y.sum_matched_iou, abs=1e-12)


def test_empty_prediction_and_empty_truth() -> None:
    empty = np.zeros((10, 10), int)
    some = empty.copy()
    some[2:5, 2:5], some[6:9, 6:9] = 3, 8
    rows = instance_rows([("none", empty, empty), ("missed", empty, some), ("spurious", some, empty)],
                         thresholds=(0.5,))
    v = {(r["image"], r["metric"]): r["value"] for r in rows if r["threshold"] in (0.5, None)}
    assert v[("none", "f1")] == v[("none", "pq")] == v[("none", "aji")] == v[("none", "kromp_f1")] == 1.0
    assert v[("none", "us_rate")] == 0.0 and v[("none", "pixel_dice")] == 1.0
    assert (v[("missed", "fn")], v[("missed", "recall")], v[("missed", "precision")]) == (2, 0.0, 0.0)
    assert v[("missed", "aji")] == 0.0 and v[("missed", "aji_cellpose")] == 0.0
    assert (v[("spurious", "fp")], v[("spurious", "precision")], v[("spurious", "us_rate")]) == (2, 0.0, 0.0)
    assert (v[("ALL", "tp")], v[("ALL", "fp")], v[("ALL", "fn")]) == (0, 2, 2)


def test_errors_for_user_mistakes() -> None:
    a = np.zeros((4, 4), int)
    with pytest.raises(FluosegError, match="shape"):
        evaluate_instances(a, np.zeros((4, 5), int))
    with pytest.raises(FluosegError):
        evaluate_instances(a, np.full((4, 4), 0.5))
    with pytest.raises(FluosegError, match="'x'"):
        instance_rows([("x", np.zeros((3, 3), int), a)])
    with pytest.raises(FluosegError):
        instance_rows([("ALL", a, a)])
    with pytest.raises(FluosegError):
        instance_rows([("x", a, a), ("x", a, a)])
    with pytest.raises(FluosegError):
        instance_rows([("x", a, a)], thresholds=(0.0,))


def test_large_image_is_fast() -> None:
    # 1000 x 1000 pixels, 1000 objects on each side (40 x 25 grid of 25 x 40 boxes), shifted.
    truth = np.zeros((1000, 1000), np.int32)
    ids = np.random.default_rng(0).permutation(1000) * 3 + 1
    for k in range(1000):
        r, c = divmod(k, 25)
        truth[r * 25 + 2: r * 25 + 23, c * 40 + 2: c * 40 + 38] = ids[k]
    pred = np.roll(truth, (3, 2), axis=(0, 1))
    scores = {int(p): float(p % 7) for p in np.unique(pred) if p > 0}
    start = time.perf_counter()
    e = evaluate_instances(truth, pred, scores=scores)
    elapsed = time.perf_counter() - start
    assert e.matching[0].tp == 1000 and e.kromp.tp == 1000
    assert elapsed < 2.0, elapsed  # about 0.1 s on one core
