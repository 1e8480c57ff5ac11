"""COCO average precision: hand-made curves, a literal oracle, pycocotools when installed.

The oracle follows the COCO evaluation as written in pycocotools' ``COCOeval.evaluateImg``
and ``accumulate`` but computes IoU from pixel masks and reads precision at each recall level
as "the best precision at any rank whose recall reaches the level" — the textbook form of
interpolated AP, structured differently from the implementation under test.
"""

from __future__ import annotations

import contextlib
import io
from types import SimpleNamespace

import numpy as np
import pytest

from fluoseg.errors import FluosegError
from fluoseg.metrics.coco import RECALL_LEVELS, coco_average_precision, coco_detections, pool_coco


def coco_oracle(images: list[tuple[np.ndarray, np.ndarray, dict[int, float]]], thresholds: tuple[float, ...]
                ) -> np.ndarray:
    ranked: list[tuple[float, int, list[bool]]] = []  # (score, global order, matched per threshold)
    n_true = 0
    order = 0
    for truth, pred, scores in images:
        gts = [truth == g for g in np.unique(truth) if g > 0]
        n_true += len(gts)
        dets = sorted((int(p) for p in np.unique(pred) if p > 0), key=lambda p: (-scores[p], p))
        taken = [[False] * len(gts) for _ in thresholds]
        for p in dets:
            pm = pred == p
            ious = [np.count_nonzero(gm & pm) / np.count_nonzero(gm | pm) for gm in gts]
            flags = []
            for k, t in enumerate(thresholds):
                best, best_iou = None, min(t, 1 - 1e-10)
                for j, iou in enumerate(ious):
                    if taken[k][j] or iou < best_iou:
                        continue
                    best, best_iou = j, iou
                if best is not None:
                    taken[k][best] = True
                flags.append(best is not None)
            ranked.append((scores[p], order, flags))
            order += 1
    ranked.sort(key=lambda r: (-r[0], r[1]))
    ap = []
    for k in range(len(thresholds)):
        if n_true == 0:
            ap.append(0.0 if ranked else 1.0)
            continue
        tp = fp = 0
        curve = []
        for _, _, flags in ranked:
            tp, fp = tp + flags[k], fp + (not flags[k])
            curve.append((tp / n_true, tp / (tp + fp)))
        levels = [max((p for r, p in curve if r >= level), default=0.0) for level in RECALL_LEVELS]
        ap.append(float(np.mean(levels)))
    return np.array(ap)


def _row(length: int, **spans: tuple[int, int]) -> np.ndarray:
    out = np.zeros((1, length), int)
    for key, (a, b) in spans.items():
        out[0, a:b] = int(key[1:])
    return out


def test_precision_recall_curve_by_hand() -> None:
    # 2 truths; predictions by score: 0.9 hits G1, 0.8 misses, 0.7 hits G2.
    # Ranks: (recall, precision) = (0.5, 1), (0.5, 0.5), (1, 2/3); envelope 1, 2/3, 2/3.
    # Recall levels 0 ... 0.50 (51 levels) read 1.0, levels 0.51 ... 1.0 (50) read 2/3.
    truth = _row(30, l1=(0, 4), l2=(10, 14))
    pred = _row(30, l3=(0, 4), l4=(20, 24), l5=(10, 14))
    ap = coco_average_precision(truth, pred, {3: 0.9, 4: 0.8, 5: 0.7}, thresholds=(0.5,))
    assert ap[0] == pytest.approx((51 * 1.0 + 50 * 2 / 3) / 101)


def test_greedy_matching_by_score() -> None:
    # G1 = [0,10). P1 = [0,9) fits it with IoU 0.9 but scores 0.1; P2 = [9,11) has IoU 1/11
    # and scores 0.99. At 0.5 only P1 qualifies. At 0.05 both qualify and the greedy COCO
    # matching lets the higher-scoring P2 take G1, so P1 becomes a false positive.
    truth = _row(20, l1=(0, 10))
    pred = _row(20, l1=(0, 9), l2=(9, 11))
    d = coco_detections(truth, pred, {2: 0.99, 1: 0.1}, thresholds=(0.5, 0.05))
    assert d.scores.tolist() == [0.99, 0.1]
    assert d.matched.tolist() == [[False, True], [True, False]]


def test_perfect_and_empty_cases() -> None:
    truth = _row(12, l1=(0, 3), l2=(5, 9))
    assert np.all(coco_average_precision(truth, truth, {1: 0.3, 2: 0.6}) == 1.0)
    empty = np.zeros_like(truth)
    assert np.all(coco_average_precision(truth, empty, {}) == 0.0)
    assert np.all(coco_average_precision(empty, empty, {}) == 1.0)
    assert np.all(coco_average_precision(empty, truth, {1: 0.5, 2: 0.5}) == 0.0)


def test_scores_may_be_a_sequence_in_label_order() -> None:
    truth = _row(12, l1=(0, 3), l2=(5, 9))
    pred = _row(12, l4=(0, 3), l9=(5, 8))
    a = coco_average_precision(truth, pred, {4: 0.2, 9: 0.8})
    b = coco_average_precision(truth, pred, [0.2, 0.8])
    assert np.array_equal(a, b)


@pytest.mark.parametrize("scores", [{4: 0.2}, [0.1], {4: 0.1, 9: float("nan")}])
def test_bad_scores(scores: object) -> None:
    truth = _row(12, l1=(0, 3), l2=(5, 9))
    pred = _row(12, l4=(0, 3), l9=(5, 8))
    with pytest.raises(FluosegError):
        coco_average_precision(truth, pred, scores)  # type: ignore[arg-type]


def _random_images(labelgen: SimpleNamespace, rng: np.random.Generator, n: int) -> list:
    images = []
    for _ in range(n):
        truth, pred = labelgen.random_pair(rng, (20, 20))
        # coarse scores so that ties in score occur
        scores = {int(p): float(rng.integers(0, 5)) / 4 for p in np.unique(pred) if p > 0}
        images.append((truth, pred, scores))
    return images


def test_random_images_against_oracle(labelgen: SimpleNamespace) -> None:
    rng = np.random.default_rng(61)
    thresholds = (0.1, 0.5, 0.75, 0.9)
    nonzero = 0
    for _ in range(80):
        images = _random_images(labelgen, rng, int(rng.integers(1, 4)))
        expected = coco_oracle(images, thresholds)
        got = pool_coco(coco_detections(t, p, s, thresholds=thresholds) for t, p, s in images).average_precision()
        np.testing.assert_allclose(got, expected, atol=1e-9)
        nonzero += int(np.any((expected > 0) & (expected < 1)))
    assert nonzero > 20


def test_max_detections_keeps_the_best_scored() -> None:
    truth = _row(30, l1=(0, 4), l2=(10, 14))
    pred = _row(30, l3=(0, 4), l4=(20, 24), l5=(10, 14))
    d = coco_detections(truth, pred, {3: 0.9, 4: 0.8, 5: 0.7}, thresholds=(0.5,), max_detections=2)
    assert d.scores.tolist() == [0.9, 0.8] and d.matched.tolist() == [[True, False]]


def test_against_pycocotools(labelgen: SimpleNamespace) -> None:
    from pycocotools import mask as mask_util
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    rng = np.random.default_rng(5)
    thresholds = np.linspace(0.5, 0.95, 10)  # pycocotools' own threshold values
    for _ in range(30):
        images = _random_images(labelgen, rng, int(rng.integers(1, 4)))
        if all(t.max() == 0 for t, _, _ in images) or all(not s for _, _, s in images):
            continue
        info, gts, dts = [], [], []
        for k, (truth, pred, scores) in enumerate(images):
            info.append({"id": k + 1, "height": truth.shape[0], "width": truth.shape[1]})
            for label, target, extra in [(g, gts, {}) for g in np.unique(truth)[1:]] + \
                                        [(p, dts, None) for p in np.unique(pred)[1:]]:
                source = truth if extra is not None else pred
                rle = mask_util.encode(np.asfortranarray((source == label).astype(np.uint8)))
                rle["counts"] = rle["counts"].decode()
                entry = {"image_id": k + 1, "category_id": 1, "segmentation": rle}
                if extra is not None:
                    entry.update(id=len(gts) + 1, iscrowd=0, area=float(np.count_nonzero(source == label)),
                                 bbox=[0, 0, 1, 1])
                else:
                    entry["score"] = scores[int(label)]
                target.append(entry)
        with contextlib.redirect_stdout(io.StringIO()):
            gt = COCO()
            gt.dataset = {"images": info, "annotations": gts, "categories": [{"id": 1, "name": "nucleus"}]}
            gt.createIndex()
            ev = COCOeval(gt, gt.loadRes(dts), "segm")
            ev.params.iouThrs = thresholds
            ev.params.maxDets = [1, 10, 100_000]
            ev.params.areaRng, ev.params.areaRngLbl = [[0, 1e10]], ["all"]
            ev.evaluate()
            ev.accumulate()
        expected = ev.eval["precision"][:, :, 0, 0, -1].mean(axis=1)
        got = pool_coco(coco_detections(t, p, s, thresholds=tuple(thresholds)) for t, p, s in images)
        np.testing.assert_allclose(got.average_precision(), expected, atol=1e-6)
