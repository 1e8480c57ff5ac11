"""IoU matching per threshold: hand-made cases, an exhaustive-search oracle, StarDist when installed."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from fluoseg.errors import FluosegError
from fluoseg.metrics.matching import (
    DEFAULT_IOU_THRESHOLDS,
    MatchingResult,
    match_objects,
    matching_at_thresholds,
    mean_over_thresholds,
    pool_matching,
)


def brute_force_matching(truth: np.ndarray, pred: np.ndarray, threshold: float) -> tuple[int, float]:
    """(tp, sum of matched IoU) by exhaustive search over one-to-one matchings.

    Maximises the number of pairs with IoU >= threshold, then their IoU sum. IoUs come
    from pixel masks, independently of ``fluoseg.metrics.overlap``.
    """
    t_ids = [int(v) for v in np.unique(truth) if v > 0]
    p_ids = [int(v) for v in np.unique(pred) if v > 0]
    options: list[list[tuple[int, float]]] = []
    for g in t_ids:
        gm = truth == g
        row = []
        for p in p_ids:
            pm = pred == p
            inter = np.count_nonzero(gm & pm)
            if inter:
                iou = inter / np.count_nonzero(gm | pm)
                if iou >= threshold:
                    row.append((p, iou))
        options.append(row)

    best = (0, 0.0)

    def search(i: int, used: frozenset, count: int, total: float) -> None:
        nonlocal best
        if i == len(options):
            if count > best[0] or (count == best[0] and total > best[1] + 1e-12):
                best = (count, total)
            return
        search(i + 1, used, count, total)
        for p, iou in options[i]:
            if p not in used:
                search(i + 1, used | {p}, count + 1, total + iou)

    search(0, frozenset(), 0, 0.0)
    return best


def _row(length: int, **spans: tuple[int, int]) -> np.ndarray:
    """A 1 x length label image; ``spans`` maps ``l<label>`` to [start, stop)."""
    out = np.zeros((1, length), int)
    for key, (a, b) in spans.items():
        out[0, a:b] = int(key[1:])
    return out


def test_default_thresholds_are_exact_decimals() -> None:
    assert DEFAULT_IOU_THRESHOLDS == (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)


def test_single_pair_across_thresholds() -> None:
    # 4x4 truth, 4x3 prediction inside it: IoU = 12/16 = 0.75.
    truth = np.zeros((6, 6), int)
    truth[:4, :4] = 3
    pred = np.zeros((6, 6), int)
    pred[:4, :3] = 8
    results = matching_at_thresholds(truth, pred)
    for r in results:
        expected_tp = 1 if r.threshold <= 0.75 else 0
        assert (r.tp, r.fp, r.fn) == (expected_tp, 1 - expected_tp, 1 - expected_tp)
        assert r.mean_matched_iou == pytest.approx(0.75 if expected_tp else 0.0)
    # 6 of the 10 default thresholds accept the pair (0.50 ... 0.75)
    assert mean_over_thresholds(results)["accuracy"] == pytest.approx(0.6)
    assert mean_over_thresholds(results)["pq"] == pytest.approx(0.6 * 0.75)


def test_optimal_assignment_beats_greedy() -> None:
    # G1 = [0,10), G2 = [10,20); P1 = [3,15), P2 = [0,3).
    # IoU(G1,P1) = 7/15, IoU(G2,P1) = 5/17, IoU(G1,P2) = 3/10.
    # At 0.25 greedy-by-IoU pairs G1-P1 and leaves G2 unmatched; the optimum pairs
    # G1-P2 and G2-P1 (2 matches). At 0.3 only G1-P1 and G1-P2 qualify: 1 match, the
    # higher IoU (7/15) wins the tie-break.
    truth = _row(20, l1=(0, 10), l2=(10, 20))
    pred = _row(20, l1=(3, 15), l2=(0, 3))
    low, mid, high = matching_at_thresholds(truth, pred, thresholds=(0.25, 0.3, 0.5))
    assert (low.tp, low.fp, low.fn) == (2, 0, 0)
    assert low.sum_matched_iou == pytest.approx(3 / 10 + 5 / 17)
    assert low.accuracy == 1.0 and low.pq == pytest.approx((3 / 10 + 5 / 17) / 2)
    assert (mid.tp, mid.sum_matched_iou) == (1, pytest.approx(7 / 15))
    assert high.tp == 0
    pairs = match_objects(truth, pred, threshold=0.25)
    assert list(zip(pairs.true_labels, pairs.pred_labels)) == [(1, 2), (2, 1)]


def test_panoptic_quality_by_hand() -> None:
    # Truth: A (4 px), B (4 px). Prediction: A' = 3 px inside A (IoU 0.75), C on background.
    # At 0.5: tp 1, fp 1, fn 1 -> SQ 0.75, RQ = 2/(2+1+1) = 0.5, PQ = 0.75/(1+0.5+0.5) = 0.375.
    truth = _row(20, l1=(0, 4), l2=(6, 10))
    pred = _row(20, l5=(0, 3), l9=(14, 18))
    (r,) = matching_at_thresholds(truth, pred, thresholds=0.5)
    assert (r.tp, r.fp, r.fn) == (1, 1, 1)
    assert (r.precision, r.recall, r.f1, r.accuracy) == (0.5, 0.5, 0.5, pytest.approx(1 / 3))
    assert r.mean_matched_iou == pytest.approx(0.75)
    assert r.pq == pytest.approx(0.375) == pytest.approx(r.mean_matched_iou * r.f1)


def test_iou_exactly_at_threshold_matches() -> None:
    # 2 px truth, 1 px prediction inside: IoU = 0.5 -> matched at 0.5, not at 0.55.
    truth = _row(4, l1=(0, 2))
    pred = _row(4, l1=(0, 1))
    a, b = matching_at_thresholds(truth, pred, thresholds=(0.5, 0.55))
    assert (a.tp, b.tp) == (1, 0)


def test_empty_images_follow_the_convention() -> None:
    empty = np.zeros((5, 5), int)
    some = empty.copy()
    some[1:3, 1:3] = 2
    (both,) = matching_at_thresholds(empty, empty, thresholds=0.5)
    assert (both.tp, both.fp, both.fn) == (0, 0, 0)
    assert (both.precision, both.recall, both.f1, both.accuracy, both.mean_matched_iou, both.pq) == (1.0,) * 6
    (no_pred,) = matching_at_thresholds(some, empty, thresholds=0.5)
    assert (no_pred.fn, no_pred.precision, no_pred.recall, no_pred.accuracy, no_pred.pq) == (1, 0.0, 0.0, 0.0, 0.0)
    (no_truth,) = matching_at_thresholds(empty, some, thresholds=0.5)
    assert (no_truth.fp, no_truth.precision, no_truth.recall, no_truth.f1) == (1, 0.0, 0.0, 0.0)


def test_pooling_sums_counts() -> None:
    a = MatchingResult(threshold=0.5, n_true=4, n_pred=3, tp=2, sum_matched_iou=1.5)
    b = MatchingResult(threshold=0.5, n_true=1, n_pred=3, tp=1, sum_matched_iou=0.9)
    p = pool_matching([a, b])
    assert (p.tp, p.fp, p.fn) == (3, 3, 2)
    assert p.precision == 0.5 and p.recall == pytest.approx(0.6)
    assert p.mean_matched_iou == pytest.approx(0.8)
    assert p.pq == pytest.approx(2.4 / (3 + 1.5 + 1))
    with pytest.raises(FluosegError):
        pool_matching([a, MatchingResult(threshold=0.7, n_true=1, n_pred=1, tp=1, sum_matched_iou=1.0)])


def test_random_images_against_exhaustive_search(labelgen: SimpleNamespace) -> None:
    rng = np.random.default_rng(123)
    thresholds = (0.1, 0.3, 0.5, 0.75, 0.9)
    matched = 0
    for _ in range(150):
        truth, pred = labelgen.random_pair(rng, (20, 20))
        for r in matching_at_thresholds(truth, pred, thresholds=thresholds):
            tp, total = brute_force_matching(truth, pred, r.threshold)
            assert r.tp == tp
            assert r.sum_matched_iou == pytest.approx(total, abs=1e-6)
            matched += tp
    assert matched > 200


def test_match_objects_returns_label_values(labelgen: SimpleNamespace) -> None:
    rng = np.random.default_rng(9)
    truth = labelgen.random_labels(rng, (20, 20), 6)
    pred = labelgen.relabel_randomly(rng, truth)
    m = match_objects(truth, pred, threshold=0.5)
    for t, p, iou in zip(m.true_labels, m.pred_labels, m.iou):
        assert np.array_equal(truth == t, pred == p) and iou == 1.0
    assert m.true_labels.size == len(np.unique(truth)) - 1


def test_invariant_to_relabelling(labelgen: SimpleNamespace) -> None:
    rng = np.random.default_rng(77)
    for _ in range(40):
        truth, pred = labelgen.random_pair(rng, (20, 20))
        a = matching_at_thresholds(truth, pred, thresholds=(0.2, 0.5, 0.8))
        b = matching_at_thresholds(labelgen.relabel_randomly(rng, truth), labelgen.relabel_randomly(rng, pred),
                                   thresholds=(0.2, 0.5, 0.8))
        for x, y in zip(a, b):
            assert x.tp == y.tp and x.sum_matched_iou == pytest.approx(y.sum_matched_iou, abs=1e-9)


def test_three_dimensional(labelgen: SimpleNamespace) -> None:
    rng = np.random.default_rng(4)
    for _ in range(10):
        truth, pred = labelgen.random_pair(rng, (6, 12, 12), kind=0)
        for r in matching_at_thresholds(truth, pred, thresholds=(0.3, 0.6)):
            tp, total = brute_force_matching(truth, pred, r.threshold)
            assert (r.tp, r.sum_matched_iou) == (tp, pytest.approx(total, abs=1e-6))


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.5, (), ("a",)])
def test_invalid_thresholds(bad: object) -> None:
    x = np.ones((2, 2), int)
    with pytest.raises(FluosegError):
        matching_at_thresholds(x, x, thresholds=bad)  # type: ignore[arg-type]


def test_against_stardist(labelgen: SimpleNamespace) -> None:
    from stardist import matching as sd
    rng = np.random.default_rng(31)
    for _ in range(100):
        truth, pred = labelgen.random_pair(rng, (24, 24))
        thresholds = (0.3,) + DEFAULT_IOU_THRESHOLDS
        for mine, ref in zip(matching_at_thresholds(truth, pred, thresholds=thresholds),
                             sd.matching(truth, pred, thresh=list(thresholds))):
            assert (mine.tp, mine.fp, mine.fn) == (ref.tp, ref.fp, ref.fn)
            if mine.threshold >= 0.5 and mine.tp:
                # StarDist computes IoU in single precision here, hence 1e-6
                assert mine.pq == pytest.approx(ref.panoptic_quality, abs=1e-6)
                assert mine.mean_matched_iou == pytest.approx(ref.mean_matched_score, abs=1e-6)
