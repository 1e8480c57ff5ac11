"""LACSS: location-assisted cell segmentation, as its supplement ("LACSS model architecture") describes.

Three fully convolutional parts: the backbone (:mod:`~fluoseg.models.detection.lacss_backbone`,
a ResNet without stem downsampling, with channel attention, and an FPN giving levels 1-4 at
strides 2-16), the location proposal network on one level (:mod:`~fluoseg.models.detection.lpn`)
and the location-conditioned segmentation head on level 1
(:mod:`~fluoseg.models.detection.lacss_head`). It trains

- fully supervised, from instance masks (the LOIs are the masks' centroids unless
  ``points`` are given): LPN loss + segmentation cross-entropy;
- weakly supervised, from one point per cell plus an image-level foreground mask:
  LPN loss + the weakly supervised segmentation loss + (with ``auxnet``) the cell
  boundary loss, all weighted 1 as in the paper (:mod:`~fluoseg.models.detection.lacss_losses`).

In training, the segmentation head runs on the ground-truth locations, each replaced by
a nearby proposal when there is one ("mixing"), so that it learns from the locations it
will see at inference. At inference the proposals above ``min_score`` (after distance NMS)
are segmented; a cell's score is its LPN score.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from fluoseg.errors import FluosegError
from fluoseg.models.decoders import positive_int, positive_ints
from fluoseg.models.detection.common import DetectorGeometry, check_targets, prepare_images
from fluoseg.models.detection.lacss_backbone import DEPTHS, LacssBackbone
from fluoseg.models.detection.lacss_head import AuxNet, LocationConditionedSegmentation, paste_patches
from fluoseg.models.detection.lacss_losses import segmentation_losses
from fluoseg.models.detection.lpn import LocationProposalNetwork, mix_locations
from fluoseg.models.detection.options import choice, flag, fraction, positive_number
from fluoseg.models.detection.registry import register_detector

NAME = "lacss"
LPN_LEVELS = (2, 3, 4)
"""Pyramid levels the LPN may run on (strides 4, 8, 16)."""


def masks_to_boxes(masks: Tensor, threshold: float = 0.5) -> Tensor:
    """``(n, 4)`` boxes ``x1, y1, x2, y2`` (far corner exclusive) of ``masks >= threshold``; zeros if empty."""
    boxes = masks.new_zeros((masks.shape[0], 4))
    for index, mask in enumerate(masks >= threshold):
        ys, xs = torch.where(mask)
        if ys.numel():
            boxes[index] = torch.stack([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]).to(boxes)
    return boxes


def mask_centroids(masks: Tensor) -> Tensor:
    """``(n, 2)`` mean pixel coordinates ``(y, x)`` of 0/1 masks ``(n, H, W)``."""
    weights = masks.to(torch.float32)
    area = weights.sum(dim=(1, 2)).clamp(min=1)
    ys = torch.arange(masks.shape[1], device=masks.device, dtype=torch.float32)
    xs = torch.arange(masks.shape[2], device=masks.device, dtype=torch.float32)
    return torch.stack([(weights.sum(dim=2) * ys).sum(dim=1) / area, (weights.sum(dim=1) * xs).sum(dim=1) / area], 1)


@register_detector(NAME)
class LACSS(DetectorGeometry, nn.Module):
    """LACSS model: backbone, location proposal network, segmentation head (and auxnet).

    Parameters
    ----------
    in_channels
        Image channels.
    depth
        Backbone ResNet: ``"resnet50"`` (the paper's), ``"resnet34"``, ``"resnet18"``.
    fpn_channels
        Channels of the pyramid levels (256).
    lpn_level
        Pyramid level of the LPN: 2, 3 (default, the paper's usual choice) or 4 (strides 4, 8, 16).
    lpn_channels
        Widths of the LPN's convolutions.
    crop_size
        Segmentation crop around each location, image pixels (even; 96 for LIVECell, 128
        for the Cell Image Library in the paper); cells must fit in it.
    shared_channels, patch_channels
        Widths of the segmentation head's shared convolutions and of its patch layers.
    auxnet
        Train the boundary auxnet with weakly supervised images (the paper's best setting;
        not used for its Cell Image Library models).
    min_score
        Lowest LPN score of a detection (0.2).
    nms_distance
        Proposals nearer than this (pixels) to a better one are dropped.
    mix_distance
        In training, a ground-truth location is replaced by a proposal within this distance.
    max_detections
        Most cells per image.
    """

    supervisions = ("full", "points")
    """What it trains from: instance masks, or one point per object plus the foreground."""

    def __init__(
        self,
        in_channels: int,
        *,
        depth: str = "resnet50",
        fpn_channels: int = 256,
        lpn_level: int = 3,
        lpn_channels: Sequence[int] = (192, 192, 192, 192),
        crop_size: int = 96,
        shared_channels: Sequence[int] = (192, 192, 192),
        patch_channels: int = 48,
        auxnet: bool = True,
        min_score: float = 0.2,
        nms_distance: float = 8.0,
        mix_distance: float = 12.0,
        max_detections: int = 512,
    ) -> None:
        super().__init__()
        self.in_channels = positive_int(NAME, "in_channels", in_channels)
        choice(NAME, "depth", depth, sorted(DEPTHS))
        choice(NAME, "lpn_level", lpn_level, LPN_LEVELS)
        if positive_int(NAME, "crop_size", crop_size) % 2:
            raise FluosegError(f"{NAME} option 'crop_size' must be even (the head upsamples by 2), got {crop_size}")
        flag(NAME, "auxnet", auxnet)
        self.min_score = fraction(NAME, "min_score", min_score)
        self.nms_distance = positive_number(NAME, "nms_distance", nms_distance)
        self.mix_distance = positive_number(NAME, "mix_distance", mix_distance)
        self.max_detections = positive_int(NAME, "max_detections", max_detections)
        self.lpn_index = lpn_level - 1
        self.backbone = LacssBackbone(in_channels, depth=depth,
                                      fpn_channels=positive_int(NAME, "fpn_channels", fpn_channels))
        self.lpn = LocationProposalNetwork(fpn_channels, self.backbone.strides[self.lpn_index],
                                           channels=positive_ints(NAME, "lpn_channels", lpn_channels,
                                                                  len(lpn_channels)))
        self.segmentation = LocationConditionedSegmentation(
            fpn_channels, crop_size=crop_size,
            shared_channels=positive_ints(NAME, "shared_channels", shared_channels, len(shared_channels)),
            patch_channels=positive_int(NAME, "patch_channels", patch_channels),
        )
        self.auxnet = AuxNet(in_channels) if auxnet else None

    def forward(self, images: Tensor, targets: Sequence[dict[str, Tensor]] | None = None
                ) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        """Training losses, or the cells found in eval mode.

        Parameters
        ----------
        images
            ``(N, C, H, W)`` normalised images of any size.
        targets
            Training only, per image either ``masks`` ``(n, H, W)`` 0/1 (full supervision;
            ``points`` ``(n, 2)`` ``(y, x)`` in the masks' order optional, default the
            masks' centroids) or ``points`` and ``foreground`` ``(H, W)`` 0/1 (weak
            supervision).

        Returns
        -------
        dict or list of dict
            Training: ``loss_lpn_score``, ``loss_lpn_offset``, ``loss_segmentation`` and,
            with the auxnet, ``loss_boundary`` (their sum is the training loss).
            Eval: per image ``points`` ``(n, 2)``, ``scores`` ``(n,)``, ``masks``
            ``(n, H, W)`` probabilities and ``boxes`` ``(n, 4)`` of the masks at 0.5.
        """
        padded, image_size = prepare_images(images, self.in_channels, self.backbone.size_divisible)
        features = self.backbone(padded)
        score_logits, offsets = self.lpn(features[self.lpn_index])
        proposals = self.lpn.proposals(score_logits, offsets, image_size, min_score=self.min_score,
                                       nms_distance=self.nms_distance, max_proposals=self.max_detections)
        if not self.training:
            return self._detections(features[0], proposals, image_size)
        check_targets(targets, images.shape[0], ())
        points = [self._points(target) for target in targets]
        losses = self.lpn.loss(score_logits, offsets, points)
        locations = [mix_locations(p, found, self.mix_distance) for p, (found, _) in zip(points, proposals)]
        cells = self.segmentation(features[0], locations)
        boundaries = self.auxnet(images) if self.auxnet is not None else None
        losses.update(segmentation_losses(cells, targets, boundaries))
        return losses

    @staticmethod
    def _points(target: dict[str, Tensor]) -> Tensor:
        if "masks" not in target and not ("points" in target and "foreground" in target):
            raise ValueError(f"a LACSS target needs 'masks', or 'points' and 'foreground'; it has {sorted(target)}")
        if "points" in target:
            return target["points"].to(torch.float32)
        return mask_centroids(target["masks"])

    def _detections(self, level1: Tensor, proposals: list[tuple[Tensor, Tensor]],
                    image_size: tuple[int, int]) -> list[dict[str, Tensor]]:
        cells = self.segmentation(level1, [locations for locations, _ in proposals])
        detections = []
        for (logits, origins), (locations, scores) in zip(cells, proposals):
            masks = paste_patches(torch.sigmoid(logits), origins, image_size, accumulate=False)
            detections.append({"points": locations, "scores": scores, "masks": masks, "boxes": masks_to_boxes(masks)})
        return detections
