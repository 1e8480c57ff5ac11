"""Kromp et al. object categories: hand-made cases and a test-only oracle of the reference code.

The oracle below transliterates the decision logic of ``objectBasedMeasures4`` in
``Evaluation/Tools/Helper.py`` of github.com/perlfloccri/NuclearSegmentationPipeline
(F. Kromp et al., IEEE TMI 2021), restructured around boolean masks and sets of object ids
and written for these tests; it is deliberately slow and literal (pixel masks, float
divisions, the background value 0 treated as one more "object" where the reference's
``np.unique`` lets it in). It counts objects directly instead of the reference's
"distinct values of a label mask minus one" (see ``fluoseg.metrics.kromp`` notes).
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from fluoseg.errors import FluosegError
from fluoseg.metrics.kromp import MISSED_AS, KrompCounts, kromp_object_categories, kromp_object_counts, pool_kromp


def _fraction_covered(obj: np.ndarray, area: np.ndarray) -> float:
    """Part of ``obj`` lying on non-zero pixels of ``area`` (reference: ``objectarea_covered``)."""
    obj = obj.astype(bool)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.float64(np.count_nonzero(obj & (area != 0))) / np.float64(np.count_nonzero(obj))


def _jaccard(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    return np.float64(np.count_nonzero(a & b)) / np.float64(np.count_nonzero(a | b))


def kromp_oracle(truth: np.ndarray, pred: np.ndarray, b: float = 0.5, a: float = 0.5) -> dict:
    tp, us, os_, detected = set(), set(), set(), set()
    tp_preds: set[int] = set()
    jis, dices = [], []
    for g in (int(v) for v in np.unique(truth) if v > 0):
        obj = truth == g
        cov = _fraction_covered(obj, pred)
        if cov < a:  # reference: ``if ~(covered_area < threshold)`` on a numpy bool
            continue
        detected.add(g)
        touching = [int(v) for v in np.unique(np.where(obj, pred, 0))]  # includes 0 when any pixel is 0
        for t in (v for v in touching if v > 0):
            p = pred == t
            ji = _jaccard(obj, p)
            covered_by_t = [j for j in (int(v) for v in np.unique(np.where(p, truth, 0)) if v > 0)
                            if _fraction_covered(truth == j, p) > a]
            if len(covered_by_t) == 1 and ji > b:
                tp.add(g)
                tp_preds.add(t)
                jis.append(ji)
                dices.append(2 * np.count_nonzero(obj & p) / (np.count_nonzero(obj) + np.count_nonzero(p)))
            elif len(covered_by_t) > 1:
                merged = np.isin(truth, covered_by_t)
                if _jaccard(merged, p) > b and cov > a and g in covered_by_t:
                    us.add(g)
        # Over-segmentation. The reference guards this block with ``~(x and len(...) == 0)``;
        # ``~`` of the Python bool that ``and`` returns is -1 or -2, always true, so it always runs.
        inside = [t for t in touching if _fraction_covered(pred == t, obj) > a]  # may include 0
        kept = np.where(np.isin(pred, [t for t in inside if t > 0]), pred, 0)
        union_kept = kept != 0
        ji_kept = np.float64(np.count_nonzero(obj & union_kept)) / np.float64(np.count_nonzero(obj | union_kept))
        if ji_kept > b and len(touching) > 2:
            # ``kept == 0`` is the whole image outside the kept predictions
            over = [t for t in touching if _fraction_covered(kept == t, obj) > a]
            if len(over) > 1:
                region = np.isin(kept, over)
                if _jaccard(region, obj) > b:
                    os_.add(g)
    n_true = len(np.unique(truth[truth > 0]))
    n_pred = len(np.unique(pred[pred > 0]))
    return {"tp": len(tp), "fp": n_pred - len(tp_preds), "fn": n_true - len(tp), "us": len(us),
            "os": len(os_), "detected": len(detected), "ji": sum(jis), "dice": sum(dices),
            "ids": {"true_positive": tp, "under_segmented": us, "over_segmented": os_, "detected": detected}}


def _as_dict(k: KrompCounts) -> dict:
    return {"tp": k.tp, "fp": k.fp, "fn": k.fn, "us": k.us, "os": k.os, "detected": k.detected,
            "ji": k.sum_tp_jaccard, "dice": k.sum_tp_dice}


def _assert_same(mine: KrompCounts, oracle: dict) -> None:
    got = _as_dict(mine)
    for key in ("tp", "fp", "fn", "us", "os", "detected"):
        assert got[key] == oracle[key], (key, got, oracle)
    assert got["ji"] == pytest.approx(oracle["ji"], abs=1e-6)
    assert got["dice"] == pytest.approx(oracle["dice"], abs=1e-6)


# ---- hand-made cases (values worked out in the comments) ---------------------------------


def test_perfect_prediction_is_all_tp(labelgen: SimpleNamespace) -> None:
    truth = labelgen.random_labels(np.random.default_rng(1), (20, 20), 5)
    k = kromp_object_counts(truth, labelgen.relabel_randomly(np.random.default_rng(2), truth))
    n = len(np.unique(truth)) - 1
    assert (k.tp, k.fp, k.fn, k.us, k.os, k.detected) == (n, 0, 0, 0, 0, n)
    assert (k.precision, k.recall, k.f1, k.mean_tp_jaccard, k.mean_tp_dice) == (1.0, 1.0, 1.0, 1.0, 1.0)


def test_one_truth_split_in_two_is_over_segmentation() -> None:
    # G (4x4 = 16 px) split into two 4x2 halves: each half lies fully inside G (> 50 %),
    # their union has IoU 1 with G, at least two predictions touch G -> OS.
    # Neither half is TP (IoU 8/16 = 0.5 is not > 0.5) -> FN 1, FP 2.
    truth = np.zeros((8, 8), int)
    truth[2:6, 2:6] = 7
    pred = np.zeros((8, 8), int)
    pred[2:6, 2:4], pred[2:6, 4:6] = 3, 9
    k = kromp_object_counts(truth, pred)
    assert (k.tp, k.fp, k.fn, k.us, k.os, k.detected) == (0, 2, 1, 0, 1, 1)
    assert k.os_rate == 1.0 and k.us_rate == 0.0


def test_one_prediction_merging_two_truths_is_under_segmentation() -> None:
    # Two 3x3 truths with a one-pixel gap; one 3x7 prediction covers both fully:
    # it covers two truth objects -> not TP; IoU(G1 ∪ G2, P) = 18/21 > 0.5 -> both US.
    truth = np.zeros((5, 9), int)
    truth[1:4, 1:4], truth[1:4, 5:8] = 1, 2
    pred = np.zeros((5, 9), int)
    pred[1:4, 1:8] = 4
    k = kromp_object_counts(truth, pred)
    assert (k.tp, k.fp, k.fn, k.us, k.os) == (0, 1, 2, 2, 0)
    assert k.us_rate == 1.0


def test_prediction_swallowing_a_small_neighbour_is_not_tp() -> None:
    # G1 = 10 px, G2 = 2 px; P covers both exactly: IoU(G1, P) = 10/12 > 0.5 but P covers two
    # truth objects, so it is no TP; IoU(G1 ∪ G2, P) = 1 -> G1 and G2 are US.
    truth = np.zeros((1, 14), int)
    truth[0, 0:10], truth[0, 10:12] = 1, 2
    pred = np.zeros((1, 14), int)
    pred[0, 0:12] = 5
    k = kromp_object_counts(truth, pred)
    assert (k.tp, k.fp, k.fn, k.us) == (0, 1, 2, 2)


def test_undetected_and_false_positive_objects() -> None:
    # G1 (10 px) is 40 % covered -> not detected, FN. G2 (4 px) matched exactly -> TP.
    # P3 lies on background -> FP. P1 (4 px inside G1) is FP as well.
    truth = np.zeros((1, 30), int)
    truth[0, 0:10], truth[0, 12:16] = 1, 2
    pred = np.zeros((1, 30), int)
    pred[0, 0:4], pred[0, 12:16], pred[0, 20:25] = 1, 2, 3
    k = kromp_object_counts(truth, pred)
    assert (k.tp, k.fp, k.fn, k.detected, k.us, k.os) == (1, 2, 1, 1, 0, 0)
    assert k.precision == pytest.approx(1 / 3) and k.recall == pytest.approx(1 / 2)
    assert k.f1 == pytest.approx(2 * 1 / (2 * 1 + 2 + 1))


def test_detected_but_too_large_prediction_is_fn_and_fp() -> None:
    # G (6 px) fully covered by a 20 px prediction: detected, IoU 6/20 < 0.5 -> FN and FP.
    truth = np.zeros((1, 30), int)
    truth[0, 5:11] = 1
    pred = np.zeros((1, 30), int)
    pred[0, 0:20] = 1
    k = kromp_object_counts(truth, pred)
    assert (k.detected, k.tp, k.fn, k.fp, k.us, k.os) == (1, 0, 1, 1, 0, 0)


def test_empty_images() -> None:
    empty = np.zeros((6, 6), int)
    some = empty.copy()
    some[1:3, 1:3] = 4
    both = kromp_object_counts(empty, empty)
    assert (both.precision, both.recall, both.f1, both.us_rate, both.os_rate) == (1.0, 1.0, 1.0, 0.0, 0.0)
    no_pred = kromp_object_counts(some, empty)
    assert (no_pred.tp, no_pred.fn, no_pred.fp, no_pred.precision, no_pred.recall) == (0, 1, 0, 0.0, 0.0)
    no_truth = kromp_object_counts(empty, some)
    assert (no_truth.fp, no_truth.us_rate, no_truth.precision, no_truth.recall) == (1, 0.0, 0.0, 0.0)


def test_pooling_sums_counts_before_ratios() -> None:
    a = KrompCounts(n_true=10, n_pred=8, detected=9, tp=6, us=2, os=1, sum_tp_jaccard=4.2, sum_tp_dice=5.0)
    b = KrompCounts(n_true=2, n_pred=4, detected=1, tp=1, us=0, os=0, sum_tp_jaccard=0.6, sum_tp_dice=0.7)
    p = pool_kromp([a, b])
    assert (p.tp, p.fp, p.fn, p.us) == (7, 5, 5, 2)
    assert p.us_rate == pytest.approx(2 / 12) and p.os_rate == pytest.approx(1 / 12)
    assert p.precision == pytest.approx(7 / 12) and p.recall == pytest.approx(7 / 12)
    assert p.mean_tp_jaccard == pytest.approx(4.8 / 7)


def test_thresholds_below_one_half_are_rejected() -> None:
    x = np.ones((3, 3), int)
    with pytest.raises(FluosegError):
        kromp_object_counts(x, x, iou_threshold=0.3)
    with pytest.raises(FluosegError):
        kromp_object_counts(x, x, coverage_threshold=0.4)


# ---- random label images against the oracle ----------------------------------------------


def test_random_images_match_reference_logic(labelgen: SimpleNamespace) -> None:
    rng = np.random.default_rng(20240501)
    seen = np.zeros(5, int)
    for _ in range(250):
        truth, pred = labelgen.random_pair(rng, (20, 20))
        mine = kromp_object_counts(truth, pred)
        _assert_same(mine, kromp_oracle(truth, pred))
        seen += np.array([mine.tp, mine.fp, mine.fn, mine.us, mine.os]) > 0
    assert (seen > 5).all(), seen  # every category occurred in several images


def test_per_object_categories_are_the_objects_the_oracle_counts(labelgen: SimpleNamespace) -> None:
    rng = np.random.default_rng(20240502)
    reasons_seen: set[str] = set()
    for _ in range(150):
        truth, pred = labelgen.random_pair(rng, (20, 20))
        objects = kromp_object_categories(truth, pred)
        expected = kromp_oracle(truth, pred)["ids"]
        for name, ids in expected.items():
            assert set(objects.true_ids[getattr(objects, name)].tolist()) == ids, name
        reasons = objects.missed_as()
        assert ((reasons == "") == objects.true_positive).all()
        reasons_seen |= set(reasons.tolist())
    assert reasons_seen == {"", *MISSED_AS}  # every reason occurred


def test_missed_as_gives_one_reason_per_missed_object() -> None:
    # G1 split in two (OS), G2 and G3 merged (US), G4 not predicted (undetected),
    # G5 inside a prediction three times its size (misshapen), G6 matched (TP)
    truth = np.zeros((1, 40), int)
    truth[0, 0:4], truth[0, 5:7], truth[0, 8:10], truth[0, 11], truth[0, 20:24], truth[0, 30:34] = 1, 2, 3, 4, 5, 6
    pred = np.zeros((1, 40), int)
    pred[0, 0:2], pred[0, 2:4], pred[0, 5:10], pred[0, 16:28], pred[0, 30:34] = 7, 8, 9, 10, 11
    objects = kromp_object_categories(truth, pred)
    assert objects.true_ids.tolist() == [1, 2, 3, 4, 5, 6]
    assert objects.missed_as().tolist() == ["over-segmented", "under-segmented", "under-segmented", "undetected",
                                            "misshapen", ""]
    counts = kromp_object_counts(truth, pred)
    assert (counts.tp, counts.us, counts.os, counts.n_true - counts.detected) == (1, 2, 1, 1)


def test_tiny_images_exercise_background_quirks(labelgen: SimpleNamespace) -> None:
    # Images of a few pixels where objects fill most of the frame, so the reference's
    # treatment of the background value 0 decides the over-segmentation outcome.
    rng = np.random.default_rng(7)

    def labels(shape: tuple[int, ...], p0: float) -> np.ndarray:
        x = rng.integers(1, int(rng.integers(1, 5)) + 1, size=shape)
        x[rng.random(shape) < p0] = 0
        return labelgen.relabel_randomly(rng, x)

    for _ in range(1000):  # about 10 of these hit a background quirk
        shape = tuple(int(s) for s in rng.integers(1, 5, size=2))
        p0 = rng.random()
        truth, pred = labels(shape, p0), labels(shape, p0)
        _assert_same(kromp_object_counts(truth, pred), kromp_oracle(truth, pred))


def test_other_thresholds_match_oracle(labelgen: SimpleNamespace) -> None:
    rng = np.random.default_rng(3)
    for _ in range(60):
        truth, pred = labelgen.random_pair(rng, (16, 16))
        _assert_same(kromp_object_counts(truth, pred, iou_threshold=0.7, coverage_threshold=0.6),
                     kromp_oracle(truth, pred, b=0.7, a=0.6))


def test_three_dimensional_volumes(labelgen: SimpleNamespace) -> None:
    rng = np.random.default_rng(11)
    for _ in range(20):
        truth, pred = labelgen.random_pair(rng, (8, 10, 10), kind=0)
        _assert_same(kromp_object_counts(truth, pred), kromp_oracle(truth, pred))


def test_invariant_to_relabelling(labelgen: SimpleNamespace) -> None:
    rng = np.random.default_rng(5)
    for _ in range(40):
        truth, pred = labelgen.random_pair(rng, (20, 20))
        assert kromp_object_counts(truth, pred) == kromp_object_counts(labelgen.relabel_randomly(rng, truth),
                                                                       labelgen.relabel_randomly(rng, pred))
