"""Tests of fluoseg.models.detection.rpn."""

from __future__ import annotations

import math

import torch

from fluoseg.models.detection.anchors import AnchorGenerator
from fluoseg.models.detection.rpn import RegionProposalNetwork, RPNHead, flatten_level


def make_rpn(**options) -> RegionProposalNetwork:
    anchors = AnchorGenerator(((8.0,), (16.0,)), ((0.5, 1.0, 2.0),) * 2)
    return RegionProposalNetwork(anchors, RPNHead(4, 3), **options)


def test_flatten_level_matches_anchor_order():
    # value = 100 * anchor + 10 * row + column, laid out as the head emits it: (N, A, h, w).
    a, h, w = 3, 2, 4
    grid = torch.arange(a)[:, None, None] * 100 + torch.arange(h)[None, :, None] * 10 + torch.arange(w)[None, None, :]
    flat = flatten_level(grid[None].float(), 1)[0, :, 0]
    expected = [100 * k + 10 * r + c for r in range(h) for c in range(w) for k in range(a)]
    assert flat.tolist() == expected


def test_assign_targets_labels_by_hand():
    rpn = make_rpn()
    anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 5.0], [50.0, 50.0, 60.0, 60.0],
                            [4.0, 0.0, 14.0, 10.0]])
    truth = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    labels, matched = rpn.assign_targets(anchors, [{"boxes": truth}])
    # IoU 1 -> positive; 0.5 -> ignored; 0 -> negative; 6/14 = 0.43 -> ignored.
    assert labels[0].tolist() == [1.0, -1.0, 0.0, -1.0]
    assert matched[0][0].tolist() == truth[0].tolist()
    empty_labels, _ = rpn.assign_targets(anchors, [{"boxes": torch.zeros((0, 4))}])
    assert empty_labels[0].tolist() == [0.0] * 4


def test_compute_loss_by_hand():
    rpn = make_rpn(batch_size_per_image=10)
    objectness = torch.tensor([[2.0, -1.0, 0.5]])
    deltas = torch.tensor([[[0.0, 0.0, 0.0, 0.0], [5.0, 5.0, 5.0, 5.0], [0.0, 0.0, 0.0, 0.0]]])
    labels = [torch.tensor([1.0, 0.0, -1.0])]
    targets = [torch.tensor([[0.05, -0.05, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])]
    losses = rpn.compute_loss(objectness, deltas, labels, targets)
    bce = (math.log1p(math.exp(-2.0)) + math.log1p(math.exp(-1.0))) / 2
    # Smooth L1 (beta 1/9) of the one positive: 0.5 d^2 / beta for |d| < beta, else |d| - beta / 2.
    smooth = 2 * 0.5 * 0.05**2 * 9 + (1.0 - 1 / 18) + 0.0
    torch.testing.assert_close(losses["loss_objectness"], torch.tensor(bce))
    torch.testing.assert_close(losses["loss_rpn_box_reg"], torch.tensor(smooth / 2))


def test_proposals_come_from_the_best_anchor_and_are_clipped():
    rpn = make_rpn(post_nms_top_n={"training": 5, "testing": 1}).eval()
    for layer in (rpn.head.conv, rpn.head.cls_logits, rpn.head.bbox_pred):
        torch.nn.init.zeros_(layer.weight)
    with torch.no_grad():
        rpn.head.conv.weight[:, 0, 1, 1] = 1.0  # hidden = relu(input channel 0)
        rpn.head.cls_logits.weight[1, :, 0, 0] = 1.0  # anchor 1 (ratio 1) scores the hidden sum
    features = [torch.zeros(1, 4, 4, 4), torch.zeros(1, 4, 2, 2)]
    features[0][0, 0, 1, 2] = 1.0  # level 0, row 1, column 2
    proposals, losses = rpn((16, 16), (13, 16), features)
    assert losses == {}
    # Zero deltas: the anchor itself, centred at (x, y) = (2 * 4, 1 * 4), half size 4,
    # clipped to the unpadded height 13 (no effect here) and to y >= 0.
    assert proposals[0].tolist() == [[4.0, 0.0, 12.0, 8.0]]


def test_training_forward_gives_finite_losses():
    torch.manual_seed(0)
    rpn = make_rpn().train()
    features = [torch.randn(2, 4, 8, 8), torch.randn(2, 4, 4, 4)]
    targets = [{"boxes": torch.tensor([[3.0, 4.0, 17.0, 15.0]])}, {"boxes": torch.zeros((0, 4))}]
    proposals, losses = rpn((32, 32), (32, 32), features, targets)
    assert set(losses) == {"loss_objectness", "loss_rpn_box_reg"}
    assert all(torch.isfinite(v) for v in losses.values())
    assert len(proposals) == 2 and proposals[0].shape[1] == 4
