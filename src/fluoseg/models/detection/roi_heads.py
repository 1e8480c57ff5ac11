"""Box and mask heads of Mask R-CNN (He et al. 2017) as in torchvision's ``RoIHeads``.

Training: the ground-truth boxes join the RPN proposals, proposals are matched at IoU 0.5
(no ignored band, no low-quality matches), 512 per image are sampled with at most a
quarter positive, and the box head (7x7 RoIAlign, two 1024-unit fully connected layers)
predicts class scores and per-class box deltas (box coder weights 10, 10, 5, 5). Losses:
cross-entropy of the classes over the sampled proposals, and smooth-L1 (beta 1/9) of the
positives' deltas for their true class, summed and divided by the number of sampled
proposals. The mask head (14x14 RoIAlign, four 3x3 convolutions with ReLU, a 2x2
transposed convolution, a 1x1 convolution per class) predicts 28x28 mask logits for the
positive proposals; its loss is the binary cross-entropy against the ground-truth mask
RoIAligned into each proposal (adaptive sampling, soft targets), for the true class.

Inference: boxes are decoded per class, clipped, those scoring at most ``score_thresh``
(0.05) or smaller than 0.01 px dropped, NMS per class at 0.5, the best
``detections_per_image`` kept; their masks are the sigmoid of the mask logits of the
predicted class.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fluoseg.models.detection.boxes import BoxCoder, batched_nms, box_iou, clip_boxes_to_image, remove_small_boxes
from fluoseg.models.detection.roi_align import MultiScaleRoIAlign, roi_align
from fluoseg.models.detection.rpn import SMOOTH_L1_BETA
from fluoseg.models.detection.sampling import (
    BELOW_LOW_THRESHOLD,
    BETWEEN_THRESHOLDS,
    BalancedPositiveNegativeSampler,
    Matcher,
)

MIN_DETECTION_SIZE = 1e-2
"""Detections narrower or lower than this (pixels) are dropped."""


class TwoMLPHead(nn.Module):
    """Flatten the pooled features, then two fully connected layers with ReLU."""

    def __init__(self, in_features: int, representation_size: int) -> None:
        super().__init__()
        self.fc6 = nn.Linear(in_features, representation_size)
        self.fc7 = nn.Linear(representation_size, representation_size)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.fc7(F.relu(self.fc6(x.flatten(start_dim=1)))))


class FastRCNNPredictor(nn.Module):
    """Class logits and per-class box deltas from the box head's representation."""

    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__()
        self.cls_score = nn.Linear(in_features, num_classes)
        self.bbox_pred = nn.Linear(in_features, num_classes * 4)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.cls_score(x), self.bbox_pred(x)


class MaskHead(nn.Module):
    """3x3 convolutions with ReLU (four of 256 in Mask R-CNN), He-initialised."""

    def __init__(self, in_channels: int, layers: Sequence[int]) -> None:
        super().__init__()
        convs: list[nn.Module] = []
        for channels in layers:
            convs += [nn.Conv2d(in_channels, channels, 3, padding=1), nn.ReLU(inplace=True)]
            in_channels = channels
        self.convs = nn.Sequential(*convs)
        for module in self.convs:
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.convs(x)


class MaskPredictor(nn.Module):
    """2x2 stride-2 transposed convolution, ReLU, 1x1 convolution to one logit map per class."""

    def __init__(self, in_channels: int, hidden_channels: int, num_classes: int) -> None:
        super().__init__()
        self.conv5_mask = nn.ConvTranspose2d(in_channels, hidden_channels, 2, stride=2)
        self.mask_fcn_logits = nn.Conv2d(hidden_channels, num_classes, 1)
        for layer in (self.conv5_mask, self.mask_fcn_logits):
            nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(layer.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.mask_fcn_logits(F.relu(self.conv5_mask(x)))


def fastrcnn_loss(class_logits: Tensor, box_regression: Tensor, labels: Tensor,
                  regression_targets: Tensor) -> tuple[Tensor, Tensor]:
    """Cross-entropy of the classes and smooth-L1 of the positives' deltas for their class."""
    classification_loss = F.cross_entropy(class_logits, labels)
    positive = torch.where(labels > 0)[0]
    per_class = box_regression.reshape(box_regression.shape[0], -1, 4)
    box_loss = F.smooth_l1_loss(per_class[positive, labels[positive]], regression_targets[positive],
                                beta=SMOOTH_L1_BETA, reduction="sum") / max(labels.numel(), 1)
    return classification_loss, box_loss


def project_masks_on_boxes(masks: Tensor, boxes: Tensor, matched: Tensor, size: int) -> Tensor:
    """Ground-truth masks ``(n, H, W)`` RoIAligned into their matched boxes: ``(k, size, size)`` in [0, 1]."""
    rois = torch.cat([matched.to(boxes)[:, None], boxes], dim=1)
    return roi_align(masks[:, None].to(rois), rois, (size, size), 1.0, sampling_ratio=0)[:, 0]


def maskrcnn_loss(mask_logits: Tensor, proposals: Sequence[Tensor], masks: Sequence[Tensor],
                  labels: Sequence[Tensor], matched: Sequence[Tensor]) -> Tensor:
    """Mean binary cross-entropy of the true class's mask logits against the projected masks."""
    size = mask_logits.shape[-1]
    classes = torch.cat([image_labels[idx] for image_labels, idx in zip(labels, matched)])
    targets = torch.cat([project_masks_on_boxes(m, p, i, size) for m, p, i in zip(masks, proposals, matched)])
    if targets.numel() == 0:
        return mask_logits.sum() * 0
    rows = torch.arange(classes.shape[0], device=classes.device)
    return F.binary_cross_entropy_with_logits(mask_logits[rows, classes], targets)


class RoIHeads(nn.Module):
    """Box head, mask head, their training targets and losses, and detection post-processing.

    Parameters
    ----------
    strides
        Strides of the pyramid maps pooled from (P2-P5: 4, 8, 16, 32).
    channels
        Channels of the pyramid maps.
    num_classes
        Classes including background (2 for one object class).
    representation_size
        Units of the box head's fully connected layers (1024).
    mask_layers
        Channels of the mask head's convolutions (four of 256).
    fg_iou_thresh, bg_iou_thresh, batch_size_per_image, positive_fraction
        Proposal matching and sampling (0.5, 0.5, 512, 0.25).
    bbox_reg_weights
        Box coder weights (10, 10, 5, 5).
    score_thresh, nms_thresh, detections_per_image
        Inference filtering (0.05, 0.5, 100).
    """

    def __init__(self, strides: Sequence[int], channels: int, num_classes: int, *, representation_size: int = 1024,
                 mask_layers: Sequence[int] = (256, 256, 256, 256), fg_iou_thresh: float = 0.5,
                 bg_iou_thresh: float = 0.5, batch_size_per_image: int = 512, positive_fraction: float = 0.25,
                 bbox_reg_weights: Sequence[float] = (10.0, 10.0, 5.0, 5.0), score_thresh: float = 0.05,
                 nms_thresh: float = 0.5, detections_per_image: int = 100) -> None:
        super().__init__()
        self.box_roi_pool = MultiScaleRoIAlign(strides, 7, sampling_ratio=2)
        self.box_head = TwoMLPHead(channels * 7 * 7, representation_size)
        self.box_predictor = FastRCNNPredictor(representation_size, num_classes)
        self.mask_roi_pool = MultiScaleRoIAlign(strides, 14, sampling_ratio=2)
        self.mask_head = MaskHead(channels, mask_layers)
        self.mask_predictor = MaskPredictor(mask_layers[-1], mask_layers[-1], num_classes)
        self.box_coder = BoxCoder(bbox_reg_weights)
        self.matcher = Matcher(fg_iou_thresh, bg_iou_thresh, allow_low_quality_matches=False)
        self.sampler = BalancedPositiveNegativeSampler(batch_size_per_image, positive_fraction)
        self.score_thresh = score_thresh
        self.nms_thresh = nms_thresh
        self.detections_per_image = detections_per_image

    def forward(self, features: Sequence[Tensor], proposals: list[Tensor], image_size: Sequence[int],
                targets: Sequence[dict[str, Tensor]] | None = None
                ) -> tuple[list[dict[str, Tensor]], dict[str, Tensor]]:
        """Detections ``{"boxes", "labels", "scores", "masks"}`` per image (eval), or losses (training).

        ``masks`` are ``(n, 1, 28, 28)`` probabilities inside each box; paste them into the
        image with :func:`fluoseg.models.detection.paste.paste_masks_in_image`.
        """
        if self.training:
            if targets is None:
                raise ValueError("the RoI heads need targets in training mode")
            return [], self._losses(features, proposals, targets)
        class_logits, box_regression = self.box_predictor(self.box_head(self.box_roi_pool(features, proposals)))
        detections = self.postprocess_detections(class_logits, box_regression, proposals, image_size)
        mask_boxes = [d["boxes"] for d in detections]
        if sum(len(b) for b in mask_boxes):
            mask_logits = self.mask_predictor(self.mask_head(self.mask_roi_pool(features, mask_boxes)))
            labels = torch.cat([d["labels"] for d in detections])
            rows = torch.arange(labels.shape[0], device=labels.device)
            probabilities = torch.sigmoid(mask_logits[rows, labels])[:, None]
        else:
            size = 2 * self.mask_roi_pool.output_size[0]
            probabilities = features[0].new_zeros((0, 1, size, size))
        for detection, masks in zip(detections, probabilities.split([len(b) for b in mask_boxes])):
            detection["masks"] = masks
        return detections, {}

    def _losses(self, features: Sequence[Tensor], proposals: list[Tensor],
                targets: Sequence[dict[str, Tensor]]) -> dict[str, Tensor]:
        proposals, matched, labels, regression_targets = self.select_training_samples(proposals, targets)
        class_logits, box_regression = self.box_predictor(self.box_head(self.box_roi_pool(features, proposals)))
        loss_classifier, loss_box_reg = fastrcnn_loss(class_logits, box_regression, torch.cat(labels),
                                                      torch.cat(regression_targets))
        positive = [torch.where(image_labels > 0)[0] for image_labels in labels]
        mask_proposals = [p[i] for p, i in zip(proposals, positive)]
        mask_matched = [m[i] for m, i in zip(matched, positive)]
        mask_logits = self.mask_predictor(self.mask_head(self.mask_roi_pool(features, mask_proposals)))
        loss_mask = maskrcnn_loss(mask_logits, mask_proposals, [t["masks"] for t in targets],
                                  [t["labels"] for t in targets], mask_matched)
        return {"loss_classifier": loss_classifier, "loss_box_reg": loss_box_reg, "loss_mask": loss_mask}

    def select_training_samples(self, proposals: list[Tensor], targets: Sequence[dict[str, Tensor]]
                                ) -> tuple[list[Tensor], list[Tensor], list[Tensor], list[Tensor]]:
        """Sampled proposals (ground truth added), their matched object, class label and box target."""
        proposals = [torch.cat([p, t["boxes"].to(p)]) for p, t in zip(proposals, targets)]
        matched, labels = [], []
        for image_proposals, target in zip(proposals, targets):
            truth = target["boxes"]
            if truth.numel() == 0:
                matched.append(torch.zeros(len(image_proposals), dtype=torch.int64, device=image_proposals.device))
                labels.append(torch.zeros(len(image_proposals), dtype=torch.int64, device=image_proposals.device))
                continue
            matches = self.matcher(box_iou(truth, image_proposals))
            clamped = matches.clamp(min=0)
            image_labels = target["labels"][clamped].to(torch.int64)
            image_labels[matches == BELOW_LOW_THRESHOLD] = 0
            image_labels[matches == BETWEEN_THRESHOLDS] = -1
            matched.append(clamped)
            labels.append(image_labels)
        positives, negatives = self.sampler(labels)
        regression_targets = []
        for i, target in enumerate(targets):
            sampled = torch.where(positives[i] | negatives[i])[0]
            proposals[i], matched[i], labels[i] = proposals[i][sampled], matched[i][sampled], labels[i][sampled]
            truth = target["boxes"].to(proposals[i])
            if truth.numel() == 0:
                truth = proposals[i].new_zeros((1, 4))
            regression_targets.append(self.box_coder.encode(truth[matched[i]], proposals[i]))
        return proposals, matched, labels, regression_targets

    def postprocess_detections(self, class_logits: Tensor, box_regression: Tensor, proposals: list[Tensor],
                               image_size: Sequence[int]) -> list[dict[str, Tensor]]:
        """Per image: class-wise decoded boxes, thresholded, NMS per class, best ``detections_per_image``."""
        num_classes = class_logits.shape[-1]
        counts = [len(p) for p in proposals]
        boxes_all = self.box_coder.decode(box_regression, torch.cat(proposals)).split(counts)
        scores_all = F.softmax(class_logits, -1).split(counts)
        detections = []
        for boxes, scores in zip(boxes_all, scores_all):
            boxes = clip_boxes_to_image(boxes, image_size)
            classes = torch.arange(num_classes, device=boxes.device).view(1, -1).expand_as(scores)
            # Background (class 0) is not a detection.
            boxes, scores, classes = boxes[:, 1:].reshape(-1, 4), scores[:, 1:].reshape(-1), classes[:, 1:].reshape(-1)
            keep = torch.where(scores > self.score_thresh)[0]
            boxes, scores, classes = boxes[keep], scores[keep], classes[keep]
            keep = remove_small_boxes(boxes, MIN_DETECTION_SIZE)
            boxes, scores, classes = boxes[keep], scores[keep], classes[keep]
            keep = batched_nms(boxes, scores, classes, self.nms_thresh)[: self.detections_per_image]
            detections.append({"boxes": boxes[keep], "scores": scores[keep], "labels": classes[keep]})
        return detections
