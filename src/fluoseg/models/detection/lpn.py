"""LACSS location proposal network (LPN): where the cells are, as points.

LACSS supplement, "LPN": on one pyramid level of stride ``s`` (a hyper-parameter: level
2, 3 or 4), a small convolutional network outputs a score logit ``S`` (sigmoid) and an
offset ``R`` (two channels, no activation) for every grid location. Targets: ``S_T = 1``
where the grid location is within ``1.5 s`` of a ground-truth location of interest (LOI),
and ``R_T`` is the offset to the nearest LOI. Loss: focal cross-entropy
``-alpha (1 - p_t)^gamma log p_t`` (alpha 0.25, gamma 2) averaged over all positions, plus
the Huber loss (delta 1) of the offsets, masked where ``S_T = 0`` and averaged over all
positions. Proposals are the grid locations plus their offsets, ranked by score, with
proposals closer than a distance to a better one removed (NMS by distance). In
training, each ground-truth LOI is replaced by the best-scoring proposal that lies
within a threshold distance of it (and nearer to it than to any other LOI): the
"mixture" locations that the segmentation head trains on.

Where the paper and LACSS's public code differ, this follows the paper:

- focal ``alpha`` multiplies positives and negatives alike, as the paper's formula reads
  (the code has no alpha; RetinaNet weights negatives by ``1 - alpha``);
- the target radius is ``1.5 s`` (the code: a fixed 8 px);
- the offset loss is averaged over all positions (the code: over target positions only).

Not specified by the paper, chosen here: grid location ``(i, j)`` is the centre of its
``s x s`` pixel cell, ``(s i + (s - 1) / 2, s j + (s - 1) / 2)`` in pixel-index
coordinates; offsets are predicted and regressed in units of ``s`` (as in the code); the
head is ``len(channels)`` 3x3 convolutions with group normalisation and ReLU (the code:
four of 192), and the score bias starts at ``-log(99)`` (prior 0.01, RetinaNet) so the
focal loss starts stable.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fluoseg.models.detection.boxes import greedy_suppression
from fluoseg.models.detection.lacss_head import conv_stack

SCORE_PRIOR = 0.01
"""Initial score of every location (bias of the score logit)."""


def focal_loss(logits: Tensor, targets: Tensor, *, alpha: float = 0.25, gamma: float = 2.0) -> Tensor:
    """Elementwise ``-alpha (1 - p_t)^gamma log p_t`` with ``p_t = p`` where target 1, else ``1 - p``."""
    log_p = F.logsigmoid(logits)
    log_not_p = F.logsigmoid(-logits)
    log_p_t = torch.where(targets > 0.5, log_p, log_not_p)
    return -alpha * (1 - log_p_t.exp()) ** gamma * log_p_t


def distance_nms(points: Tensor, scores: Tensor, distance: float) -> Tensor:
    """Greedy NMS of points: by descending score, drop points closer than ``distance`` to a kept one.

    Returns
    -------
    Tensor
        int64 indices of the kept points, by descending score.
    """

    def close(coordinates: np.ndarray, kept: int, later: np.ndarray) -> np.ndarray:
        return ((coordinates[later] - coordinates[kept]) ** 2).sum(axis=1) < distance**2

    return greedy_suppression(points, scores, close)


def mix_locations(truth: Tensor, proposals: Tensor, threshold: float) -> Tensor:
    """Ground-truth locations, each replaced by its best matching proposal if one is close enough.

    A proposal matches the ground-truth location nearest to it, if nearer than
    ``threshold``; each ground-truth location takes its first (best-scoring) matching
    proposal, or stays as it is.

    Parameters
    ----------
    truth
        ``(n, 2)`` ground-truth locations.
    proposals
        ``(m, 2)`` proposals ordered by descending score.
    threshold
        Largest distance (pixels) at which a proposal replaces a ground-truth location.
    """
    if truth.shape[0] == 0 or proposals.shape[0] == 0:
        return truth.clone()
    distances = torch.cdist(proposals.to(truth), truth)  # (m, n)
    nearest_distance, nearest = distances.min(dim=1)
    matched = (nearest[None, :] == torch.arange(truth.shape[0], device=truth.device)[:, None]) & (
        nearest_distance[None, :] < threshold
    )  # (n, m)
    has_match = matched.any(dim=1)
    first = matched.to(torch.int8).argmax(dim=1)
    return torch.where(has_match[:, None], proposals.to(truth)[first], truth)


class LocationProposalNetwork(nn.Module):
    """Score and offset maps on one pyramid level, their targets, losses and proposals.

    Parameters
    ----------
    in_channels
        Channels of the pyramid level.
    stride
        Its stride ``s`` (4, 8 or 16).
    channels
        Widths of the 3x3 convolutions (with ReLU) before the two 1x1 output convolutions.
    target_radius
        ``S_T = 1`` within ``target_radius * s`` pixels of a LOI (1.5).
    focal_alpha, focal_gamma, huber_delta
        Loss constants (0.25, 2.0, 1.0).
    """

    def __init__(self, in_channels: int, stride: int, *, channels: Sequence[int] = (192, 192, 192, 192),
                 target_radius: float = 1.5, focal_alpha: float = 0.25, focal_gamma: float = 2.0,
                 huber_delta: float = 1.0) -> None:
        super().__init__()
        self.convs = conv_stack(in_channels, channels)
        hidden = channels[-1] if channels else in_channels
        self.score = nn.Conv2d(hidden, 1, 1)
        self.offset = nn.Conv2d(hidden, 2, 1)
        nn.init.constant_(self.score.bias, -math.log((1 - SCORE_PRIOR) / SCORE_PRIOR))
        self.stride = stride
        self.target_radius = target_radius
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
        self.huber_delta = huber_delta

    def forward(self, feature: Tensor) -> tuple[Tensor, Tensor]:
        """Score logits ``(N, h, w)`` and offsets ``(N, h, w, 2)`` in units of the stride."""
        hidden = self.convs(feature)
        return self.score(hidden)[:, 0], self.offset(hidden).permute(0, 2, 3, 1)

    def grid(self, height: int, width: int, *, device: torch.device | str | None = None) -> Tensor:
        """``(h, w, 2)`` pixel coordinates ``(y, x)`` of the grid locations (cell centres)."""
        centre = (self.stride - 1) / 2
        ys = torch.arange(height, device=device, dtype=torch.float32) * self.stride + centre
        xs = torch.arange(width, device=device, dtype=torch.float32) * self.stride + centre
        return torch.stack(torch.meshgrid(ys, xs, indexing="ij"), dim=-1)

    def targets(self, points: Tensor, height: int, width: int) -> tuple[Tensor, Tensor]:
        """``S_T`` ``(h, w)`` 0/1 and ``R_T`` ``(h, w, 2)`` (stride units) for LOIs ``(n, 2)``."""
        grid = self.grid(height, width, device=points.device)
        if points.shape[0] == 0:
            return grid.new_zeros((height, width)), grid.new_zeros((height, width, 2))
        differences = points.to(grid)[:, None, None, :] - grid[None]  # (n, h, w, 2)
        squared = (differences**2).sum(dim=-1)
        nearest = squared.argmin(dim=0)  # (h, w)
        best = squared.gather(0, nearest[None])[0]
        score_target = (best < (self.target_radius * self.stride) ** 2).to(grid.dtype)
        index = nearest[None, :, :, None].expand(1, height, width, 2)
        offset_target = differences.gather(0, index)[0] / self.stride
        return score_target, offset_target

    def loss(self, score_logits: Tensor, offsets: Tensor, points: Sequence[Tensor]) -> dict[str, Tensor]:
        """``loss_lpn_score`` (focal) and ``loss_lpn_offset`` (masked Huber), averaged over positions."""
        height, width = score_logits.shape[-2:]
        score_targets, offset_targets = zip(*(self.targets(p, height, width) for p in points))
        score_target = torch.stack(score_targets)
        offset_target = torch.stack(offset_targets)
        score_loss = focal_loss(score_logits, score_target, alpha=self.focal_alpha, gamma=self.focal_gamma).mean()
        huber = F.huber_loss(offsets, offset_target, reduction="none", delta=self.huber_delta).mean(dim=-1)
        return {"loss_lpn_score": score_loss, "loss_lpn_offset": (huber * score_target).mean()}

    def proposals(self, score_logits: Tensor, offsets: Tensor, image_size: Sequence[int], *, min_score: float,
                  nms_distance: float, max_proposals: int) -> list[tuple[Tensor, Tensor]]:
        """Per image: proposed locations ``(k, 2)`` and scores ``(k,)``, best first.

        Locations outside the image are dropped, then those scoring below ``min_score``;
        distance NMS keeps at most ``max_proposals``.
        """
        height, width = score_logits.shape[-2:]
        grid = self.grid(height, width, device=score_logits.device)
        result = []
        for logits, offset in zip(score_logits.detach(), offsets.detach()):
            locations = (grid + offset * self.stride).reshape(-1, 2)
            scores = torch.sigmoid(logits).reshape(-1)
            inside = ((locations >= 0) & (locations <= torch.tensor(image_size, device=locations.device) - 1)).all(1)
            keep = torch.where(inside & (scores >= min_score))[0]
            locations, scores = locations[keep], scores[keep]
            keep = distance_nms(locations, scores, nms_distance)[:max_proposals]
            result.append((locations[keep], scores[keep]))
        return result
