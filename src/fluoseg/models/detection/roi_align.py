"""RoIAlign and multi-scale RoI pooling in plain torch, equal to torchvision's.

torchvision's ``roi_align`` (Mask R-CNN's default ``aligned=False``) averages, in each of
the ``ph x pw`` bins of a box, a ``gh x gw`` grid of bilinear samples of the feature map;
a sample outside ``-1 <= y <= H``, ``-1 <= x <= W`` counts as 0, and samples between the
border and the last pixel centre read the border value. Here the samples are taken with
``grid_sample`` (bilinear, ``align_corners=True``, so that pixel ``i`` sits at normalised
``2 i / (W - 1) - 1``; ``padding_mode="border"`` reproduces the clamping), multiplied by
the validity mask, and average-pooled over each bin's ``gh x gw`` samples.

:class:`MultiScaleRoIAlign` assigns each box to a pyramid level with the FPN rule
``k = floor(k0 + log2(sqrt(area) / 224) + 1e-6)``, ``k0 = 4``, clamped to the levels
present, as torchvision's ``LevelMapper``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fluoseg.models.detection.boxes import box_area


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    height, width = size
    return int(height), int(width)


def rois_from_boxes(boxes: Sequence[Tensor]) -> Tensor:
    """``(K, 5)`` rows ``(image index, x1, y1, x2, y2)`` from per-image ``(k_i, 4)`` boxes."""
    indices = [torch.full((len(b), 1), i, dtype=b.dtype, device=b.device) for i, b in enumerate(boxes)]
    return torch.cat([torch.cat(indices), torch.cat(list(boxes))], dim=1)


def roi_align(features: Tensor, rois: Tensor, output_size: int | Sequence[int], spatial_scale: float = 1.0,
              sampling_ratio: int = 2, aligned: bool = False) -> Tensor:
    """Pool ``(K, C, ph, pw)`` features of boxes from ``features`` ``(N, C, H, W)``.

    Parameters
    ----------
    features
        Feature maps of N images.
    rois
        ``(K, 5)``: image index, then the box ``x1, y1, x2, y2`` in image coordinates.
    output_size
        ``ph`` and ``pw`` (an int for both).
    spatial_scale
        Factor from image to feature coordinates (``1 / stride``).
    sampling_ratio
        Samples per bin along each axis; ``<= 0`` takes ``ceil(box size / bins)`` per box
        (torchvision's adaptive choice, used to project ground-truth masks).
    aligned
        Shift boxes by half a pixel (``True``) or not (``False``, Mask R-CNN's default,
        where boxes are also at least one feature pixel wide).

    Returns
    -------
    Tensor
        ``(K, C, ph, pw)``.
    """
    pooled_h, pooled_w = _pair(output_size)
    n_rois = rois.shape[0]
    output = features.new_zeros((n_rois, features.shape[1], pooled_h, pooled_w))
    if n_rois == 0:
        return output
    offset = 0.5 if aligned else 0.0
    boxes = rois[:, 1:].to(features.dtype) * spatial_scale - offset
    sizes = boxes[:, 2:] - boxes[:, :2]  # (K, 2) widths, heights
    if not aligned:
        sizes = sizes.clamp(min=1.0)
    if sampling_ratio > 0:
        grids = torch.full((n_rois, 2), sampling_ratio, dtype=torch.int64, device=rois.device)
    else:
        bins = torch.tensor([pooled_w, pooled_h], dtype=sizes.dtype, device=sizes.device)
        # An empty box (possible with aligned=True) has no samples and pools to zeros.
        grids = torch.ceil(sizes.detach() / bins).to(torch.int64).clamp(min=0)
    batch_index = rois[:, 0].to(torch.int64)
    # One grid_sample per image and grid size; boxes of the same kind are sampled together.
    keys = torch.stack([batch_index, grids[:, 0], grids[:, 1]], dim=1)
    for key in torch.unique(keys, dim=0).tolist():
        image, grid_w, grid_h = key
        if grid_w == 0 or grid_h == 0:
            continue
        members = torch.where((keys == torch.tensor(key, device=keys.device)).all(dim=1))[0]
        output[members] = _align_one_image(
            features[image], boxes[members], sizes[members], (pooled_h, pooled_w), (grid_h, grid_w)
        )
    return output


def _align_one_image(feature: Tensor, boxes: Tensor, sizes: Tensor, pooled: tuple[int, int],
                     grid: tuple[int, int]) -> Tensor:
    """RoIAlign of ``k`` boxes on one ``(C, H, W)`` map with a fixed sampling grid."""
    (pooled_h, pooled_w), (grid_h, grid_w) = pooled, grid
    channels, height, width = feature.shape
    k = boxes.shape[0]
    # Fractional position of every sample within the box, in bins: bin p, sample i of g.
    steps_y = _sample_positions(pooled_h, grid_h, feature)
    steps_x = _sample_positions(pooled_w, grid_w, feature)
    y = boxes[:, 1:2] + steps_y[None, :] * (sizes[:, 1:2] / pooled_h)  # (k, ph * gh)
    x = boxes[:, 0:1] + steps_x[None, :] * (sizes[:, 0:1] / pooled_w)  # (k, pw * gw)
    y_grid = y[:, :, None].expand(k, y.shape[1], x.shape[1])
    x_grid = x[:, None, :].expand(k, y.shape[1], x.shape[1])
    normalised = torch.stack((2 * x_grid / max(width - 1, 1) - 1, 2 * y_grid / max(height - 1, 1) - 1), dim=-1)
    samples = F.grid_sample(
        feature[None], normalised.reshape(1, k * y.shape[1], x.shape[1], 2),
        mode="bilinear", padding_mode="border", align_corners=True,
    ).reshape(channels, k, y.shape[1], x.shape[1]).transpose(0, 1)
    valid = (y_grid >= -1.0) & (y_grid <= height) & (x_grid >= -1.0) & (x_grid <= width)
    samples = samples * valid[:, None].to(samples.dtype)
    return F.avg_pool2d(samples, kernel_size=(grid_h, grid_w), stride=(grid_h, grid_w))


def _sample_positions(bins: int, grid: int, like: Tensor) -> Tensor:
    """``p + (i + 0.5) / grid`` for bin ``p`` and sample ``i``, bin-major: ``(bins * grid,)``."""
    index = torch.arange(bins * grid, device=like.device)
    return (index // grid).to(like.dtype) + ((index % grid).to(like.dtype) + 0.5) / grid


class LevelMapper:
    """FPN level of each box: ``floor(k0 + log2(sqrt(area) / s0) + eps)`` clamped to the pyramid.

    Parameters
    ----------
    k_min, k_max
        Lowest and highest pyramid level present (level ``k`` has stride ``2**k``).
    canonical_scale, canonical_level
        ``s0 = 224`` and ``k0 = 4`` (Lin et al. 2017).
    eps
        Added before flooring, so that exact powers of two land on their level.
    """

    def __init__(self, k_min: int, k_max: int, *, canonical_scale: float = 224.0, canonical_level: int = 4,
                 eps: float = 1e-6) -> None:
        self.k_min = k_min
        self.k_max = k_max
        self.canonical_scale = canonical_scale
        self.canonical_level = canonical_level
        self.eps = eps

    def __call__(self, boxes: Sequence[Tensor]) -> Tensor:
        """Index into the levels present (0 for ``k_min``) of every box, boxes of all images concatenated."""
        scale = torch.sqrt(torch.cat([box_area(b) for b in boxes]))
        levels = torch.floor(self.canonical_level + torch.log2(scale / self.canonical_scale) + self.eps)
        levels = torch.clamp(levels, min=self.k_min, max=self.k_max)
        return (levels - self.k_min).to(torch.int64)


class MultiScaleRoIAlign(nn.Module):
    """RoIAlign from the pyramid level that suits each box's size.

    Parameters
    ----------
    strides
        Stride of each feature map passed to :meth:`forward`, powers of two, e.g.
        ``(4, 8, 16, 32)`` for P2-P5.
    output_size
        Pooled size (7 for the box head, 14 for the mask head).
    sampling_ratio
        Samples per bin along each axis (2 in Mask R-CNN).
    """

    def __init__(self, strides: Sequence[int], output_size: int | Sequence[int], sampling_ratio: int = 2) -> None:
        super().__init__()
        levels = [math.log2(s) for s in strides]
        if any(level != int(level) for level in levels):
            raise ValueError(f"pyramid strides must be powers of two, got {tuple(strides)}")
        self.strides = tuple(int(s) for s in strides)
        self.output_size = _pair(output_size)
        self.sampling_ratio = sampling_ratio
        self.mapper = LevelMapper(int(levels[0]), int(levels[-1]))

    def forward(self, features: Sequence[Tensor], boxes: Sequence[Tensor]) -> Tensor:
        """``(K, C, ph, pw)`` pooled features of the boxes of all images, in image order."""
        if len(features) != len(self.strides):
            raise ValueError(f"expected {len(self.strides)} feature maps, got {len(features)}")
        rois = rois_from_boxes(boxes)
        if len(self.strides) == 1:
            return roi_align(features[0], rois, self.output_size, 1.0 / self.strides[0], self.sampling_ratio)
        levels = self.mapper(boxes)
        first = features[0]
        result = first.new_zeros((rois.shape[0], first.shape[1], *self.output_size))
        for level, (feature, stride) in enumerate(zip(features, self.strides)):
            members = torch.where(levels == level)[0]
            if members.numel():
                result[members] = roi_align(feature, rois[members], self.output_size, 1.0 / stride,
                                            self.sampling_ratio)
        return result

    def extra_repr(self) -> str:
        return f"strides={self.strides}, output_size={self.output_size}, sampling_ratio={self.sampling_ratio}"
