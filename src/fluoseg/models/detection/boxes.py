"""Axis-aligned boxes: areas, IoU, clipping, the box coder and non-maximum suppression.

Boxes are ``(n, 4)`` float tensors ``(x1, y1, x2, y2)`` in pixel coordinates, as in
torchvision. The functions follow ``torchvision.ops`` and
``torchvision.models.detection._utils`` (same formulas, same order of floating-point
operations where it matters), which cannot be used here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

DEFAULT_BBOX_XFORM_CLIP = math.log(1000.0 / 16)
"""Largest log scale the box coder decodes (torchvision's), so ``exp`` cannot overflow."""


def box_area(boxes: Tensor) -> Tensor:
    """Areas ``(x2 - x1) * (y2 - y1)`` of ``(n, 4)`` boxes."""
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Intersection over union of every pair, ``(n, m)``.

    Pairs of degenerate boxes (both of zero area, not intersecting) give NaN, as in
    torchvision; NaN compares false with any threshold.
    """
    area1 = box_area(boxes1)
    area2 = box_area(boxes2)
    top_left = torch.max(boxes1[:, None, :2], boxes2[:, :2])
    bottom_right = torch.min(boxes1[:, None, 2:], boxes2[:, 2:])
    wh = (bottom_right - top_left).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    return inter / (area1[:, None] + area2 - inter)


def clip_boxes_to_image(boxes: Tensor, size: Sequence[int]) -> Tensor:
    """Boxes clamped to ``x`` in ``[0, width]`` and ``y`` in ``[0, height]``; ``size`` is (H, W)."""
    height, width = size
    x = boxes[..., 0::2].clamp(min=0, max=width)
    y = boxes[..., 1::2].clamp(min=0, max=height)
    return torch.stack((x, y), dim=-1).reshape(boxes.shape)


def remove_small_boxes(boxes: Tensor, min_size: float) -> Tensor:
    """Indices of the boxes whose width and height are both at least ``min_size``."""
    widths = boxes[:, 2] - boxes[:, 0]
    heights = boxes[:, 3] - boxes[:, 1]
    return torch.where((widths >= min_size) & (heights >= min_size))[0]


def greedy_suppression(items: Tensor, scores: Tensor,
                       suppresses: Callable[[np.ndarray, int, np.ndarray], np.ndarray]) -> Tensor:
    """Greedy non-maximum suppression, for any notion of "too close".

    Items are visited by descending score (ties: lower index first); the first one not
    yet suppressed is kept and suppresses the later ones for which
    ``suppresses(values, kept, later)`` is true, then the next one not suppressed, and so
    on. Memory is linear in the number of items (no pairwise matrix), which matters for
    the thousands of RPN proposals of a large image.

    Parameters
    ----------
    items
        ``(n, d)`` item coordinates (boxes, points).
    scores
        ``(n,)`` scores.
    suppresses
        ``(values, kept_index, later_indices) -> bool array`` over ``later_indices``, with
        ``values`` the items as a numpy array.

    Returns
    -------
    Tensor
        int64 indices of the kept items, by descending score.
    """
    if items.shape[0] == 0:
        return torch.empty(0, dtype=torch.int64, device=items.device)
    order = torch.argsort(scores.detach(), descending=True, stable=True).cpu().numpy()
    values = items.detach().cpu().numpy()
    alive = np.ones(len(order), dtype=bool)
    keep = []
    for position in range(len(order)):
        if not alive[position]:
            continue
        keep.append(int(order[position]))
        if position + 1 < len(order):
            alive[position + 1 :] &= ~suppresses(values, int(order[position]), order[position + 1 :])
    return torch.as_tensor(keep, dtype=torch.int64, device=items.device)


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy non-maximum suppression (torchvision's ``nms``).

    Boxes are visited by descending score (ties: lower index first); a kept box suppresses
    every later box with ``IoU > iou_threshold``.

    Returns
    -------
    Tensor
        int64 indices of the kept boxes, by descending score.
    """

    def overlaps(corners: np.ndarray, kept: int, later: np.ndarray) -> np.ndarray:
        x1, y1, x2, y2 = corners[:, 0], corners[:, 1], corners[:, 2], corners[:, 3]
        width = np.maximum(np.minimum(x2[kept], x2[later]) - np.maximum(x1[kept], x1[later]), 0)
        height = np.maximum(np.minimum(y2[kept], y2[later]) - np.maximum(y1[kept], y1[later]), 0)
        inter = width * height
        area_kept = (x2[kept] - x1[kept]) * (y2[kept] - y1[kept])
        areas = (x2[later] - x1[later]) * (y2[later] - y1[later])
        with np.errstate(invalid="ignore", divide="ignore"):
            return inter / (area_kept + areas - inter) > iou_threshold

    return greedy_suppression(boxes, scores, overlaps)


def batched_nms(boxes: Tensor, scores: Tensor, groups: Tensor, iou_threshold: float) -> Tensor:
    """Non-maximum suppression within each group (class or pyramid level) separately.

    The coordinate-offset trick of torchvision: every group's boxes are shifted by
    ``group * (max coordinate + 1)`` so that boxes of different groups never overlap, and
    one suppression pass handles all groups.

    Returns
    -------
    Tensor
        int64 indices of the kept boxes, by descending score.
    """
    if boxes.shape[0] == 0:
        return nms(boxes, scores, iou_threshold)
    max_coordinate = boxes.max()
    offsets = groups.to(boxes) * (max_coordinate + torch.tensor(1).to(boxes))
    return nms(boxes + offsets[:, None], scores, iou_threshold)


class BoxCoder:
    """Encodes boxes as offsets from reference boxes and back (Faster R-CNN parametrisation).

    ``dx = wx (x_gt - x_ref) / w_ref``, ``dy`` likewise, ``dw = ww log(w_gt / w_ref)``,
    ``dh`` likewise, with box centres ``x`` and sizes ``w``.

    Parameters
    ----------
    weights
        ``(wx, wy, ww, wh)``: ``(1, 1, 1, 1)`` for the RPN, ``(10, 10, 5, 5)`` for the box head.
    bbox_xform_clip
        Upper clamp of ``dw``, ``dh`` when decoding.
    """

    def __init__(self, weights: Sequence[float], bbox_xform_clip: float = DEFAULT_BBOX_XFORM_CLIP) -> None:
        if len(weights) != 4:
            raise ValueError(f"box coder weights must be 4 numbers (wx, wy, ww, wh), got {weights!r}")
        self.weights = tuple(float(w) for w in weights)
        self.bbox_xform_clip = bbox_xform_clip

    def encode(self, boxes: Tensor, reference: Tensor) -> Tensor:
        """``(n, 4)`` regression targets of ``boxes`` relative to ``reference`` boxes."""
        wx, wy, ww, wh = self.weights
        ref_widths = reference[:, 2] - reference[:, 0]
        ref_heights = reference[:, 3] - reference[:, 1]
        ref_x = reference[:, 0] + 0.5 * ref_widths
        ref_y = reference[:, 1] + 0.5 * ref_heights
        widths = boxes[:, 2] - boxes[:, 0]
        heights = boxes[:, 3] - boxes[:, 1]
        x = boxes[:, 0] + 0.5 * widths
        y = boxes[:, 1] + 0.5 * heights
        return torch.stack(
            (
                wx * (x - ref_x) / ref_widths,
                wy * (y - ref_y) / ref_heights,
                ww * torch.log(widths / ref_widths),
                wh * torch.log(heights / ref_heights),
            ),
            dim=1,
        )

    def decode(self, codes: Tensor, reference: Tensor) -> Tensor:
        """Boxes ``(n, k, 4)`` from codes ``(n, 4 k)`` (k boxes per reference, e.g. one per class)."""
        reference = reference.to(codes.dtype)
        wx, wy, ww, wh = self.weights
        widths = reference[:, 2] - reference[:, 0]
        heights = reference[:, 3] - reference[:, 1]
        ctr_x = reference[:, 0] + 0.5 * widths
        ctr_y = reference[:, 1] + 0.5 * heights
        dx = codes[:, 0::4] / wx
        dy = codes[:, 1::4] / wy
        dw = (codes[:, 2::4] / ww).clamp(max=self.bbox_xform_clip)
        dh = (codes[:, 3::4] / wh).clamp(max=self.bbox_xform_clip)
        pred_x = dx * widths[:, None] + ctr_x[:, None]
        pred_y = dy * heights[:, None] + ctr_y[:, None]
        half_w = 0.5 * torch.exp(dw) * widths[:, None]
        half_h = 0.5 * torch.exp(dh) * heights[:, None]
        return torch.stack((pred_x - half_w, pred_y - half_h, pred_x + half_w, pred_y + half_h), dim=2)
