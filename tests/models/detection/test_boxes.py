"""Tests of fluoseg.models.detection.boxes: IoU, clipping, the box coder and NMS."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fluoseg.models.detection.boxes import (
    BoxCoder,
    batched_nms,
    box_area,
    box_iou,
    clip_boxes_to_image,
    nms,
    remove_small_boxes,
)


def reference_nms(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> list[int]:
    """Greedy NMS as a direct double loop over boxes sorted by score (torchvision's CPU kernel)."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    suppressed = [False] * len(scores)
    keep = []
    for a, i in enumerate(order):
        if suppressed[i]:
            continue
        keep.append(i)
        for j in order[a + 1 :]:
            w = max(0.0, min(boxes[i, 2], boxes[j, 2]) - max(boxes[i, 0], boxes[j, 0]))
            h = max(0.0, min(boxes[i, 3], boxes[j, 3]) - max(boxes[i, 1], boxes[j, 1]))
            inter = w * h
            area_i = (boxes[i, 2] - boxes[i, 0]) * (boxes[i, 3] - boxes[i, 1])
            area_j = (boxes[j, 2] - boxes[j, 0]) * (boxes[j, 3] - boxes[j, 1])
            if inter / (area_i + area_j - inter) > threshold:
                suppressed[j] = True
    return keep


def random_boxes(rng: np.random.Generator, n: int) -> np.ndarray:
    corner = rng.uniform(0, 60, (n, 2))
    size = rng.uniform(2, 25, (n, 2))
    return np.concatenate([corner, corner + size], axis=1)


def test_area_and_iou_by_hand():
    a = torch.tensor([[0.0, 0.0, 4.0, 2.0]])
    b = torch.tensor([[2.0, 0.0, 6.0, 2.0], [10.0, 10.0, 11.0, 11.0], [0.0, 0.0, 4.0, 2.0]])
    assert box_area(b).tolist() == [8.0, 1.0, 8.0]
    # Overlap 2x2 = 4, union 8 + 8 - 4 = 12.
    torch.testing.assert_close(box_iou(a, b), torch.tensor([[4 / 12, 0.0, 1.0]]))


def test_clip_and_remove_small():
    boxes = torch.tensor([[-3.0, 2.0, 50.0, 9.0], [1.0, 1.0, 1.5, 8.0]])
    assert clip_boxes_to_image(boxes, (8, 40)).tolist() == [[0.0, 2.0, 40.0, 8.0], [1.0, 1.0, 1.5, 8.0]]
    assert remove_small_boxes(boxes, 1.0).tolist() == [0]


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.7])
def test_nms_equals_greedy_loop(threshold):
    rng = np.random.default_rng(int(threshold * 10))
    boxes = random_boxes(rng, 150)
    scores = rng.random(150)
    scores[10:20] = scores[0]  # ties are broken by index
    got = nms(torch.from_numpy(boxes), torch.from_numpy(scores), threshold)
    assert got.tolist() == reference_nms(boxes, scores, threshold)


def test_nms_empty():
    assert nms(torch.zeros((0, 4)), torch.zeros(0), 0.5).numel() == 0


def test_batched_nms_equals_nms_per_class():
    rng = np.random.default_rng(3)
    boxes = random_boxes(rng, 200)
    scores = rng.random(200)
    classes = rng.integers(0, 4, 200)
    expected = []
    for c in range(4):
        members = np.where(classes == c)[0]
        expected += [int(members[i]) for i in reference_nms(boxes[members], scores[members], 0.5)]
    expected.sort(key=lambda i: -scores[i])
    got = batched_nms(torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(classes), 0.5)
    assert got.tolist() == expected


def test_box_coder_by_hand_and_round_trip():
    coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
    reference = torch.tensor([[0.0, 0.0, 10.0, 20.0]])
    box = torch.tensor([[5.0, 0.0, 25.0, 20.0]])
    # Centres 5 -> 15 (dx = 10 * 10 / 10), width 10 -> 20 (dw = 5 * log 2); y unchanged.
    torch.testing.assert_close(coder.encode(box, reference), torch.tensor([[10.0, 0.0, 5 * math.log(2), 0.0]]))
    rng = np.random.default_rng(0)
    boxes = torch.from_numpy(random_boxes(rng, 30)).float()
    refs = torch.from_numpy(random_boxes(rng, 30)).float()
    torch.testing.assert_close(coder.decode(coder.encode(boxes, refs), refs)[:, 0], boxes, atol=1e-4, rtol=1e-5)


def test_box_coder_decodes_several_boxes_per_reference_and_clamps_scale():
    coder = BoxCoder((1.0, 1.0, 1.0, 1.0))
    reference = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    codes = torch.tensor([[0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 100.0, 0.0]])
    decoded = coder.decode(codes, reference)
    assert decoded.shape == (1, 2, 4)
    assert decoded[0, 0].tolist() == [0.0, 0.0, 2.0, 2.0]
    # dw is clamped at log(1000 / 16): width 2 * 62.5.
    torch.testing.assert_close(decoded[0, 1, 2] - decoded[0, 1, 0], torch.tensor(125.0))
