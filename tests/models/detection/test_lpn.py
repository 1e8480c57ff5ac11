"""Tests of fluoseg.models.detection.lpn: targets, losses, distance NMS, location mixing."""

from __future__ import annotations

import math

import numpy as np
import torch

from fluoseg.models.detection.lpn import LocationProposalNetwork, distance_nms, focal_loss, mix_locations


def test_focal_loss_by_hand():
    logits = torch.tensor([0.0, 2.0, -3.0])
    targets = torch.tensor([1.0, 0.0, 1.0])
    p = 1 / (1 + math.exp(-2.0))
    q = 1 / (1 + math.exp(3.0))
    expected = [0.25 * 0.5**2 * math.log(2), -0.25 * p**2 * math.log(1 - p), -0.25 * (1 - q) ** 2 * math.log(q)]
    np.testing.assert_allclose(focal_loss(logits, targets).numpy(), expected, rtol=1e-5)


def test_targets_by_hand():
    lpn = LocationProposalNetwork(4, 8, channels=(4,))
    assert lpn.grid(1, 2)[0].tolist() == [[3.5, 3.5], [3.5, 11.5]]
    # Two LOIs; radius 1.5 * 8 = 12 px.
    points = torch.tensor([[3.5, 5.5], [30.0, 40.0]])
    score, offset = lpn.targets(points, 3, 4)
    # Grid centres y in (3.5, 11.5, 19.5), x in (3.5, 11.5, 19.5, 27.5); distances to the first LOI
    # are below 12 for (0,0) 2, (0,1) 6, (1,0) 8.2, (1,1) 10; the second LOI is too far from all.
    expected = np.zeros((3, 4))
    expected[0, 0] = expected[0, 1] = expected[1, 0] = expected[1, 1] = 1
    np.testing.assert_array_equal(score.numpy(), expected)
    # Offsets to the nearest LOI in strides: cell (0, 0) -> first LOI; cell (2, 3) -> second.
    np.testing.assert_allclose(offset[0, 0].numpy(), [0.0, 2.0 / 8])
    np.testing.assert_allclose(offset[2, 3].numpy(), [(30 - 19.5) / 8, (40 - 27.5) / 8])


def test_loss_counts_offsets_only_near_locations():
    lpn = LocationProposalNetwork(4, 8, channels=(4,))
    points = [torch.tensor([[3.5, 3.5]])]
    score_target, offset_target = lpn.targets(points[0], 2, 2)
    logits = torch.where(score_target > 0, 20.0, -20.0)[None]
    offsets = offset_target[None].clone()
    offsets[0, 1, 1, 0] += 100.0
    losses = lpn.loss(logits, offsets, points)
    assert losses["loss_lpn_score"].item() < 1e-6
    # (1, 1) is 11.3 px from the LOI, within 12: a target, so its error counts, averaged over
    # all 4 positions. Huber (delta 1) of 100 is 99.5 for the y coordinate, 0 for x.
    np.testing.assert_allclose(losses["loss_lpn_offset"].item(), 99.5 / 2 / 4, rtol=1e-6)
    far = [torch.tensor([[100.0, 100.0]])]
    assert lpn.loss(logits, offsets, far)["loss_lpn_offset"].item() == 0.0


def reference_distance_nms(points: np.ndarray, scores: np.ndarray, distance: float) -> list[int]:
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    kept: list[int] = []
    for i in order:
        if all(np.hypot(*(points[i] - points[k])) >= distance for k in kept):
            kept.append(i)
    return kept


def test_distance_nms_equals_greedy_loop():
    rng = np.random.default_rng(1)
    points = rng.uniform(0, 50, (120, 2))
    scores = rng.random(120)
    got = distance_nms(torch.from_numpy(points), torch.from_numpy(scores), 6.0)
    assert got.tolist() == reference_distance_nms(points, scores, 6.0)


def test_mix_locations_by_hand():
    truth = torch.tensor([[0.0, 0.0], [20.0, 20.0], [40.0, 0.0]])
    # Ordered by score. (2, 0) also matches truth 0 but comes after (1, 1).
    proposals = torch.tensor([[1.0, 1.0], [19.0, 18.0], [2.0, 0.0], [50.0, 50.0], [40.0, 9.0]])
    mixed = mix_locations(truth, proposals, 3.0)
    assert mixed.tolist() == [[1.0, 1.0], [19.0, 18.0], [40.0, 0.0]]
    assert mix_locations(truth, torch.zeros((0, 2)), 3.0).tolist() == truth.tolist()


def test_proposals_decode_filter_and_suppress():
    lpn = LocationProposalNetwork(4, 4, channels=(4,))
    logits = torch.full((1, 2, 3), -10.0)
    logits[0, 0, 0] = 3.0
    logits[0, 0, 1] = 2.0
    logits[0, 1, 2] = 1.0
    offsets = torch.zeros(1, 2, 3, 2)
    offsets[0, 0, 1] = torch.tensor([0.0, -0.5])  # moves next to the best proposal: suppressed
    offsets[0, 1, 2] = torch.tensor([0.0, 2.0])  # moves outside the 12-pixel-wide image: dropped
    (locations, scores), = lpn.proposals(logits, offsets, (8, 12), min_score=0.1, nms_distance=3.0,
                                         max_proposals=10)
    assert locations.tolist() == [[1.5, 1.5]]
    torch.testing.assert_close(scores, torch.sigmoid(torch.tensor([3.0])))
