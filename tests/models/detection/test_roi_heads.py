"""Tests of fluoseg.models.detection.roi_heads: losses, mask targets, post-processing."""

from __future__ import annotations

import math

import numpy as np
import torch

from fluoseg.models.detection.roi_heads import RoIHeads, fastrcnn_loss, maskrcnn_loss, project_masks_on_boxes


def small_heads(**options) -> RoIHeads:
    return RoIHeads((4, 8), 3, 2, representation_size=16, mask_layers=(4, 4), **options)


def test_fastrcnn_loss_by_hand():
    logits = torch.tensor([[0.0, 2.0], [1.0, -1.0]])
    labels = torch.tensor([1, 0])
    regression = torch.tensor([[9.0, 9.0, 9.0, 9.0, 0.5, 0.0, 0.0, 0.0], [7.0] * 8])
    targets = torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    classification, box = fastrcnn_loss(logits, regression, labels, targets)
    expected_ce = (math.log1p(math.exp(-2.0)) + math.log1p(math.exp(-2.0))) / 2
    torch.testing.assert_close(classification, torch.tensor(expected_ce))
    # Only the positive's class-1 deltas count: |0.5| > 1/9 -> 0.5 - 1/18; divided by the 2 samples.
    torch.testing.assert_close(box, torch.tensor((0.5 - 1 / 18) / 2))


def test_project_masks_on_boxes_by_hand():
    masks = torch.zeros(2, 8, 8)
    masks[1, 2:6, 2:6] = 1.0
    boxes = torch.tensor([[2.0, 2.0, 6.0, 6.0]])
    projected = project_masks_on_boxes(masks, boxes, torch.tensor([1]), 4)
    # One sample per bin (ceil(4 / 4)) at x = 2.5, 3.5, 4.5, 5.5: the last is halfway to the zero at 6.
    profile = torch.tensor([1.0, 1.0, 1.0, 0.5])
    torch.testing.assert_close(projected[0], profile[:, None] * profile[None, :])


def test_maskrcnn_loss_without_positives_is_zero_with_gradient():
    logits = torch.zeros(0, 2, 28, 28, requires_grad=True)
    loss = maskrcnn_loss(logits, [torch.zeros(0, 4)], [torch.zeros(1, 8, 8)], [torch.ones(1, dtype=torch.int64)],
                         [torch.zeros(0, dtype=torch.int64)])
    assert loss.item() == 0.0 and loss.requires_grad


def test_maskrcnn_loss_uses_the_true_class_channel():
    logits = torch.zeros(1, 3, 4, 4)
    logits[0, 2] = 10.0
    masks = torch.ones(1, 8, 8)
    loss = maskrcnn_loss(logits, [torch.tensor([[0.0, 0.0, 8.0, 8.0]])], [masks], [torch.tensor([2])],
                         [torch.tensor([0])])
    np.testing.assert_allclose(loss.item(), math.log1p(math.exp(-10.0)), rtol=1e-5)


def test_postprocess_filters_scores_and_limits_detections():
    heads = small_heads(score_thresh=0.05, nms_thresh=0.5, detections_per_image=2).eval()
    proposals = [torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 0.0, 11.0, 10.0], [20.0, 20.0, 30.0, 30.0],
                               [40.0, 40.0, 50.0, 50.0]])]
    logits = torch.tensor([[0.0, 3.0], [0.0, 2.0], [0.0, 1.0], [5.0, 0.0]])
    detections = heads.postprocess_detections(logits, torch.zeros(4, 8), proposals, (64, 64))[0]
    # Box 1 overlaps box 0 (IoU 0.82) and is suppressed; box 3 scores 0.0067 < 0.05.
    assert detections["boxes"].tolist() == [[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]]
    torch.testing.assert_close(detections["scores"], torch.sigmoid(torch.tensor([3.0, 1.0])))
    assert detections["labels"].tolist() == [1, 1]


def test_training_and_eval_forward():
    torch.manual_seed(0)
    heads = small_heads()
    features = [torch.randn(2, 3, 16, 16), torch.randn(2, 3, 8, 8)]
    masks = torch.zeros(1, 64, 64, dtype=torch.uint8)
    masks[0, 10:30, 12:40] = 1
    targets = [{"boxes": torch.tensor([[12.0, 10.0, 40.0, 30.0]]), "labels": torch.tensor([1]), "masks": masks},
               {"boxes": torch.zeros((0, 4)), "labels": torch.zeros(0, dtype=torch.int64),
                "masks": torch.zeros((0, 64, 64), dtype=torch.uint8)}]
    proposals = [torch.tensor([[10.0, 10.0, 38.0, 31.0], [0.0, 0.0, 5.0, 5.0]]), torch.tensor([[3.0, 3.0, 9.0, 9.0]])]
    _, losses = heads(features, proposals, (64, 64), targets)
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_mask"}
    assert all(torch.isfinite(v) and v.item() > 0 for v in losses.values())
    detections, _ = heads.eval()(features, proposals, (64, 64))
    for detection in detections:
        assert detection["masks"].shape == (len(detection["boxes"]), 1, 28, 28)
