"""Anchor boxes on the feature pyramid (torchvision's ``AnchorGenerator``).

Each pyramid level has a set of cell anchors centred on the origin, one per (aspect ratio,
size) pair with the ratios varying slowest; they are repeated at every feature-map
position, shifted by the level's stride. Anchors of one level are ordered by row, then
column, then cell anchor, the order in which the RPN head's outputs are flattened.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def cell_anchors(sizes: Sequence[float], aspect_ratios: Sequence[float], *, dtype: torch.dtype = torch.float32,
                 device: torch.device | str | None = None) -> Tensor:
    """Zero-centred anchors ``(len(aspect_ratios) * len(sizes), 4)`` of one level.

    An anchor of size ``s`` and ratio ``r = h / w`` has ``w = s / sqrt(r)`` and
    ``h = s sqrt(r)`` (area ``s**2``); corners are rounded to integers (half to even, as
    ``torch.round``), like torchvision's.
    """
    scales = torch.as_tensor(sizes, dtype=dtype, device=device)
    ratios = torch.as_tensor(aspect_ratios, dtype=dtype, device=device)
    h_ratios = torch.sqrt(ratios)
    w_ratios = 1 / h_ratios
    widths = (w_ratios[:, None] * scales[None, :]).reshape(-1)
    heights = (h_ratios[:, None] * scales[None, :]).reshape(-1)
    return (torch.stack([-widths, -heights, widths, heights], dim=1) / 2).round()


class AnchorGenerator:
    """Anchors for every level of a feature pyramid.

    Parameters
    ----------
    sizes
        Anchor sizes (square roots of the areas, pixels) per level, e.g.
        ``((32,), (64,), (128,), (256,), (512,))``.
    aspect_ratios
        Height / width ratios per level, e.g. ``((0.5, 1.0, 2.0),) * 5``.
    """

    def __init__(self, sizes: Sequence[Sequence[float]], aspect_ratios: Sequence[Sequence[float]]) -> None:
        if len(sizes) != len(aspect_ratios):
            raise ValueError(f"need aspect ratios for each of the {len(sizes)} levels, got {len(aspect_ratios)}")
        self.sizes = tuple(tuple(float(s) for s in level) for level in sizes)
        self.aspect_ratios = tuple(tuple(float(r) for r in level) for level in aspect_ratios)

    def num_anchors_per_location(self) -> list[int]:
        """Cell anchors per feature-map position, per level."""
        return [len(s) * len(r) for s, r in zip(self.sizes, self.aspect_ratios)]

    def __call__(self, image_size: Sequence[int], feature_sizes: Sequence[Sequence[int]], *,
                 dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> Tensor:
        """All anchors of one image, ``(sum over levels of h * w * A, 4)``.

        Parameters
        ----------
        image_size
            ``(H, W)`` of the (padded) image the features were computed from.
        feature_sizes
            ``(h, w)`` of each level's feature map; the level's stride is
            ``H // h`` by ``W // w`` (integer division, as torchvision).
        """
        if len(feature_sizes) != len(self.sizes):
            raise ValueError(f"anchors are defined for {len(self.sizes)} levels, got {len(feature_sizes)} feature maps")
        levels = []
        for (height, width), sizes, ratios in zip(feature_sizes, self.sizes, self.aspect_ratios):
            stride_y = image_size[0] // height
            stride_x = image_size[1] // width
            shifts_x = torch.arange(width, dtype=torch.int32, device=device).to(dtype) * stride_x
            shifts_y = torch.arange(height, dtype=torch.int32, device=device).to(dtype) * stride_y
            shift_y, shift_x = torch.meshgrid(shifts_y, shifts_x, indexing="ij")
            shift_x = shift_x.reshape(-1)
            shift_y = shift_y.reshape(-1)
            shifts = torch.stack((shift_x, shift_y, shift_x, shift_y), dim=1)
            base = cell_anchors(sizes, ratios, dtype=dtype, device=device)
            levels.append((shifts[:, None, :] + base[None, :, :]).reshape(-1, 4))
        return torch.cat(levels)
