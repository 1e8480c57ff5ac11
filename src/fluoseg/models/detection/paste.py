"""Pasting box-relative mask probabilities into the image (torchvision's ``paste_masks_in_image``).

The ``M x M`` mask of a detection is padded by one zero pixel on each side, its box
enlarged by the same factor ``(M + 2) / M`` about its centre and rounded down to integer
corners, and the padded mask resized bilinearly (``align_corners=False``) to the box's
``x2 - x1 + 1`` by ``y2 - y1 + 1`` pixels; the part inside the image is written into an
otherwise zero image.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

MASK_PADDING = 1
"""Zero pixels added around each box mask before resizing, so its edges fade inside the box."""


def expand_boxes(boxes: Tensor, scale: float) -> Tensor:
    """Boxes scaled by ``scale`` about their centres."""
    half_w = (boxes[:, 2] - boxes[:, 0]) * 0.5 * scale
    half_h = (boxes[:, 3] - boxes[:, 1]) * 0.5 * scale
    centre_x = (boxes[:, 2] + boxes[:, 0]) * 0.5
    centre_y = (boxes[:, 3] + boxes[:, 1]) * 0.5
    return torch.stack([centre_x - half_w, centre_y - half_h, centre_x + half_w, centre_y + half_h], dim=1)


def paste_masks_in_image(masks: Tensor, boxes: Tensor, image_size: Sequence[int]) -> Tensor:
    """Image-sized mask probabilities ``(n, H, W)`` from box masks ``(n, 1, M, M)`` and boxes ``(n, 4)``."""
    height, width = int(image_size[0]), int(image_size[1])
    pasted = masks.new_zeros((masks.shape[0], height, width))
    if masks.shape[0] == 0:
        return pasted
    size = masks.shape[-1]
    scale = (size + 2 * MASK_PADDING) / size
    padded = F.pad(masks, (MASK_PADDING,) * 4)
    corners = expand_boxes(boxes, scale).to(torch.int64).tolist()
    for index, (x1, y1, x2, y2) in enumerate(corners):
        box_w = max(x2 - x1 + 1, 1)
        box_h = max(y2 - y1 + 1, 1)
        resized = F.interpolate(padded[index : index + 1], size=(box_h, box_w), mode="bilinear",
                                align_corners=False)[0, 0]
        top, bottom = max(y1, 0), min(y2 + 1, height)
        left, right = max(x1, 0), min(x2 + 1, width)
        if top < bottom and left < right:
            pasted[index, top:bottom, left:right] = resized[top - y1 : bottom - y1, left - x1 : right - x1]
    return pasted
