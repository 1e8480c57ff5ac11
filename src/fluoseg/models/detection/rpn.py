"""Region proposal network (Ren et al. 2015) as in torchvision's Mask R-CNN.

The head (a shared 3x3 convolution and ReLU, then 1x1 convolutions for one objectness
logit and four box deltas per anchor) runs on every pyramid level. Proposals are the
decoded anchors: per level the ``pre_nms_top_n`` best, clipped to the image, boxes
smaller than 1e-3 removed, then non-maximum suppression within each level at
``nms_thresh`` and the ``post_nms_top_n`` best over all levels. Training matches anchors
to ground truth at IoU 0.7/0.3 (with low-quality matches), samples 256 anchors per
image half positive, and returns the binary cross-entropy of the objectness and the
smooth-L1 loss (beta 1/9) of the positive anchors' deltas, summed and divided by the
number of sampled anchors.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fluoseg.models.detection.anchors import AnchorGenerator
from fluoseg.models.detection.boxes import BoxCoder, batched_nms, box_iou, clip_boxes_to_image, remove_small_boxes
from fluoseg.models.detection.sampling import (
    BELOW_LOW_THRESHOLD,
    BETWEEN_THRESHOLDS,
    BalancedPositiveNegativeSampler,
    Matcher,
)

SMOOTH_L1_BETA = 1.0 / 9
"""Transition point of the smooth-L1 box losses (torchvision's RPN and box head)."""

MIN_PROPOSAL_SIZE = 1e-3
"""Proposals narrower or lower than this (pixels) are dropped."""


class RPNHead(nn.Module):
    """3x3 convolution and ReLU shared by all levels, then objectness and box-delta 1x1 convolutions."""

    def __init__(self, in_channels: int, num_anchors: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, in_channels, 3, padding=1)
        self.cls_logits = nn.Conv2d(in_channels, num_anchors, 1)
        self.bbox_pred = nn.Conv2d(in_channels, num_anchors * 4, 1)
        for layer in (self.conv, self.cls_logits, self.bbox_pred):
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.zeros_(layer.bias)

    def forward(self, features: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """Per level: objectness ``(N, A, h, w)`` and deltas ``(N, 4 A, h, w)``."""
        logits, deltas = [], []
        for feature in features:
            hidden = F.relu(self.conv(feature))
            logits.append(self.cls_logits(hidden))
            deltas.append(self.bbox_pred(hidden))
        return logits, deltas


def flatten_level(values: Tensor, per_anchor: int) -> Tensor:
    """``(N, A * c, h, w)`` -> ``(N, h * w * A, c)``, the anchors' order (row, column, anchor)."""
    n, _, height, width = values.shape
    values = values.view(n, -1, per_anchor, height, width).permute(0, 3, 4, 1, 2)
    return values.reshape(n, -1, per_anchor)


class RegionProposalNetwork(nn.Module):
    """Anchors, RPN head, proposal filtering and the RPN losses.

    Parameters
    ----------
    anchor_generator
        Anchors of every pyramid level.
    head
        The :class:`RPNHead`.
    fg_iou_thresh, bg_iou_thresh
        Matching thresholds (0.7, 0.3).
    batch_size_per_image, positive_fraction
        Anchor sampling (256, 0.5).
    pre_nms_top_n, post_nms_top_n
        ``{"training": n, "testing": n}``: best proposals kept per level before NMS, and
        per image after it (2000/2000 training, 1000/1000 testing).
    nms_thresh
        IoU threshold of the per-level NMS (0.7).
    score_thresh
        Lowest objectness probability kept (0.0).
    """

    def __init__(self, anchor_generator: AnchorGenerator, head: RPNHead, *, fg_iou_thresh: float = 0.7,
                 bg_iou_thresh: float = 0.3, batch_size_per_image: int = 256, positive_fraction: float = 0.5,
                 pre_nms_top_n: dict[str, int] | None = None, post_nms_top_n: dict[str, int] | None = None,
                 nms_thresh: float = 0.7, score_thresh: float = 0.0) -> None:
        super().__init__()
        self.anchor_generator = anchor_generator
        self.head = head
        self.box_coder = BoxCoder((1.0, 1.0, 1.0, 1.0))
        self.matcher = Matcher(fg_iou_thresh, bg_iou_thresh, allow_low_quality_matches=True)
        self.sampler = BalancedPositiveNegativeSampler(batch_size_per_image, positive_fraction)
        self.pre_nms_top_n = pre_nms_top_n or {"training": 2000, "testing": 1000}
        self.post_nms_top_n = post_nms_top_n or {"training": 2000, "testing": 1000}
        self.nms_thresh = nms_thresh
        self.score_thresh = score_thresh

    def _mode(self) -> str:
        return "training" if self.training else "testing"

    def forward(self, padded_size: Sequence[int], image_size: Sequence[int], features: Sequence[Tensor],
                targets: Sequence[dict[str, Tensor]] | None = None) -> tuple[list[Tensor], dict[str, Tensor]]:
        """Proposals per image, and the losses in training mode.

        Parameters
        ----------
        padded_size
            ``(H, W)`` of the padded batch the features come from (anchor strides).
        image_size
            ``(H, W)`` of the images before padding (proposals are clipped to it).
        features
            Pyramid maps, finest first.
        targets
            Per image a dict with ``boxes`` ``(n, 4)``; required in training mode.
        """
        logits, deltas = self.head(features)
        anchors = self.anchor_generator(padded_size, [f.shape[-2:] for f in features],
                                        dtype=features[0].dtype, device=features[0].device)
        per_level = [level[0].numel() for level in logits]
        objectness = torch.cat([flatten_level(level, 1) for level in logits], dim=1).squeeze(-1)  # (N, total)
        box_deltas = torch.cat([flatten_level(level, 4) for level in deltas], dim=1)  # (N, total, 4)
        n_images = objectness.shape[0]
        proposals = self.box_coder.decode(box_deltas.detach().reshape(-1, 4), anchors.repeat(n_images, 1))
        proposals = proposals.view(n_images, -1, 4)
        boxes = self.filter_proposals(proposals, objectness.detach(), image_size, per_level)
        losses: dict[str, Tensor] = {}
        if self.training:
            if targets is None:
                raise ValueError("the RPN needs targets in training mode")
            labels, matched_boxes = self.assign_targets(anchors, targets)
            regression_targets = [self.box_coder.encode(m, anchors) for m in matched_boxes]
            losses = self.compute_loss(objectness, box_deltas, labels, regression_targets)
        return boxes, losses

    def filter_proposals(self, proposals: Tensor, objectness: Tensor, image_size: Sequence[int],
                         per_level: Sequence[int]) -> list[Tensor]:
        """Best proposals per level, clipped, small ones removed, NMS per level, best overall."""
        device = proposals.device
        levels = torch.cat([torch.full((n,), i, dtype=torch.int64, device=device) for i, n in enumerate(per_level)])
        top_indices = []
        offset = 0
        for count, level_scores in zip(per_level, objectness.split(list(per_level), dim=1)):
            k = min(self.pre_nms_top_n[self._mode()], count)
            top_indices.append(level_scores.topk(k, dim=1).indices + offset)
            offset += count
        chosen = torch.cat(top_indices, dim=1)
        batch = torch.arange(proposals.shape[0], device=device)[:, None]
        scores = torch.sigmoid(objectness[batch, chosen])
        candidates = proposals[batch, chosen]
        candidate_levels = levels[chosen]
        result = []
        for boxes, image_scores, image_levels in zip(candidates, scores, candidate_levels):
            boxes = clip_boxes_to_image(boxes, image_size)
            keep = remove_small_boxes(boxes, MIN_PROPOSAL_SIZE)
            keep = keep[image_scores[keep] >= self.score_thresh]
            boxes, image_scores, image_levels = boxes[keep], image_scores[keep], image_levels[keep]
            keep = batched_nms(boxes, image_scores, image_levels, self.nms_thresh)
            result.append(boxes[keep[: self.post_nms_top_n[self._mode()]]])
        return result

    def assign_targets(self, anchors: Tensor, targets: Sequence[dict[str, Tensor]]
                       ) -> tuple[list[Tensor], list[Tensor]]:
        """Per image: anchor labels (1 object, 0 background, -1 ignored) and matched boxes."""
        labels, matched_boxes = [], []
        for target in targets:
            truth = target["boxes"]
            if truth.numel() == 0:
                labels.append(torch.zeros(anchors.shape[0], dtype=anchors.dtype, device=anchors.device))
                matched_boxes.append(torch.zeros_like(anchors))
                continue
            matches = self.matcher(box_iou(truth, anchors))
            matched_boxes.append(truth[matches.clamp(min=0)])
            image_labels = (matches >= 0).to(anchors.dtype)
            image_labels[matches == BELOW_LOW_THRESHOLD] = 0.0
            image_labels[matches == BETWEEN_THRESHOLDS] = -1.0
            labels.append(image_labels)
        return labels, matched_boxes

    def compute_loss(self, objectness: Tensor, box_deltas: Tensor, labels: list[Tensor],
                     regression_targets: list[Tensor]) -> dict[str, Tensor]:
        """``loss_objectness`` (BCE) and ``loss_rpn_box_reg`` (smooth L1) over sampled anchors."""
        positives, negatives = self.sampler(labels)
        positive = torch.where(torch.cat(positives))[0]
        sampled = torch.where(torch.cat(positives) | torch.cat(negatives))[0]
        objectness = objectness.reshape(-1)
        box_deltas = box_deltas.reshape(-1, 4)
        all_labels = torch.cat(labels)
        all_targets = torch.cat(regression_targets)
        box_loss = F.smooth_l1_loss(box_deltas[positive], all_targets[positive], beta=SMOOTH_L1_BETA,
                                    reduction="sum") / max(sampled.numel(), 1)
        objectness_loss = F.binary_cross_entropy_with_logits(objectness[sampled], all_labels[sampled])
        return {"loss_objectness": objectness_loss, "loss_rpn_box_reg": box_loss}
