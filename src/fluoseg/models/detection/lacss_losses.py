"""LACSS segmentation losses: fully supervised, weakly supervised and cell boundary.

For one image with ``k`` cell predictions ``G[i]`` (sigmoid of the logits, each a
``crop x crop`` patch at its own origin in the image):

- fully supervised (:func:`supervised_segmentation_loss`): binary cross-entropy against
  each cell's ground-truth mask cropped alike, averaged over pixels and cells;
- weakly supervised (:func:`weak_segmentation_loss`), from the image-level foreground
  ``C`` only: ``<(1 - C) G[i] + C (1 - G[i]) - G[i] sum_{k != i} log(1 - G[k])>``, the
  supplement's ``L_WS-SEG`` plus the constant 1 (its ``-C G - (1 - C)(1 - G)`` is
  ``(1 - C) G + C (1 - G) - 1``), so the loss is non-negative; the first part asks each
  cell to agree with the foreground (with a linear, forgiving penalty), the second
  penalises cells overlapping each other;
- cell boundary (:func:`boundary_loss`): the boundaries implied by the cells,
  ``B_H = tanh(sum_i |sobel(G[i])|)``, against the auxnet's prediction ``B_P`` from the
  image, Huber loss with delta 0.5 (the supplement's ``L_cb``), averaged over pixels;
  gradients reach both the auxnet and the segmentation.

The Sobel filter is scikit-image's normalisation (``[1, 2, 1] / 4`` smoothing across, a
``[1, 0, -1]`` difference along) and ``|.|`` the gradient magnitude with 1e-6 under the
root (finite gradient where the mask is flat); the supplement does not specify either.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from fluoseg.models.detection.lacss_head import crop_patches, paste_patches

BOUNDARY_HUBER_DELTA = 0.5
"""The supplement's ``L_cb``: quadratic below 0.5, then ``|d| / 2 - 1 / 8``."""

_SOBEL_Y = torch.tensor([[1.0, 2.0, 1.0], [0.0, 0.0, 0.0], [-1.0, -2.0, -1.0]]) / 4


def supervised_segmentation_loss(logits: Tensor, origins: Tensor, masks: Tensor) -> Tensor:
    """Mean BCE of cell logits ``(k, s, s)`` against their masks ``(k, H, W)`` cropped at ``origins``."""
    if logits.shape[0] == 0:
        return logits.sum() * 0
    targets = crop_patches(masks.to(logits.dtype), origins, logits.shape[-1])
    return F.binary_cross_entropy_with_logits(logits, targets)


def weak_segmentation_loss(logits: Tensor, origins: Tensor, foreground: Tensor) -> Tensor:
    """Weakly supervised loss of cell logits ``(k, s, s)`` given the image's foreground ``(H, W)``."""
    if logits.shape[0] == 0:
        return logits.sum() * 0
    size = logits.shape[-1]
    # Work on the image padded by a crop on each side, so that no patch is cut: the
    # overlap sums must cover the parts of the patches outside the image too.
    padded = F.pad(foreground.to(logits.dtype), (size, size, size, size))
    origins = origins + size
    probabilities = torch.sigmoid(logits)
    fg = crop_patches(padded, origins, size, shared=True)
    consistency = (1 - fg) * probabilities + fg * (1 - probabilities)
    log_background = F.logsigmoid(-logits)  # log(1 - G), stable
    total = paste_patches(log_background, origins, padded.shape)
    others = crop_patches(total, origins, size, shared=True) - log_background
    return (consistency - probabilities * others).mean()


def sobel_magnitude(images: Tensor) -> Tensor:
    """Gradient magnitude ``(k, s, s)`` of ``(k, s, s)`` images (zero padding)."""
    kernel_y = _SOBEL_Y.to(images)
    kernels = torch.stack([kernel_y, kernel_y.T])[:, None]  # (2, 1, 3, 3)
    gradients = F.conv2d(images[:, None], kernels, padding=1)
    return torch.sqrt((gradients**2).sum(dim=1) + 1e-6)


def boundary_loss(logits: Tensor, origins: Tensor, predicted_boundary: Tensor) -> Tensor:
    """Huber (delta 0.5) between the auxnet's ``(H, W)`` boundaries and those of the cells."""
    if logits.shape[0] == 0:
        implied = torch.zeros_like(predicted_boundary)
    else:
        edges = sobel_magnitude(torch.sigmoid(logits))
        implied = torch.tanh(paste_patches(edges, origins, predicted_boundary.shape))
    return F.huber_loss(predicted_boundary, implied, delta=BOUNDARY_HUBER_DELTA)


def segmentation_losses(cells: Sequence[tuple[Tensor, Tensor]], targets: Sequence[dict[str, Tensor]],
                        boundaries: Tensor | None) -> dict[str, Tensor]:
    """Per-image LACSS segmentation losses averaged over the batch.

    Images whose target has ``masks`` are fully supervised; the others need
    ``foreground`` and are weakly supervised, with the boundary loss when ``boundaries``
    (the auxnet's ``(N, H, W)`` output) is given.

    Returns
    -------
    dict
        ``loss_segmentation``, and ``loss_boundary`` when ``boundaries`` is given (0 for
        a batch without weakly supervised images).
    """
    segmentation, boundary = [], []
    for index, ((logits, origins), target) in enumerate(zip(cells, targets)):
        if "masks" in target:
            segmentation.append(supervised_segmentation_loss(logits, origins, target["masks"]))
            continue
        segmentation.append(weak_segmentation_loss(logits, origins, target["foreground"]))
        if boundaries is not None:
            boundary.append(boundary_loss(logits, origins, boundaries[index]))
    losses = {"loss_segmentation": torch.stack(segmentation).mean()}
    if boundaries is not None:
        losses["loss_boundary"] = torch.stack(boundary).mean() if boundary else boundaries.sum() * 0
    return losses
