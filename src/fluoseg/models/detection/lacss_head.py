"""LACSS location-conditioned segmentation head and boundary auxnet.

LACSS supplement, "Segmentation FCN": from the level-1 features (stride 2), the first
convolutions ignore the locations (their result is shared by all cells); the result is
then cropped to a patch around each location, "concatenated with the location tensors",
``L = (i - ii, j - jj)`` (each patch pixel's position relative to the location), and
only the last two convolutional layers see the location: a 3x3 convolution with ReLU
and a 2x2 stride-2 transposed convolution back to the image resolution, whose sigmoid is
the cell's mask inside the ``crop_size`` x ``crop_size`` pixel crop. Concatenating
``L`` before a convolution is the same as adding a learned projection of it to the
features, which is how it is computed.

"Auxnet": four convolutions without downsampling (a small field of view) predicting the
cell boundaries from the image, used only by the weakly supervised boundary loss.

Choices the supplement leaves open: ``L`` is divided by half the crop size (values in
[-1, 1]; a rescaling the next convolution's weights absorb, but kinder to its
initialisation than offsets of up to 64 px); the shared part is ``shared_channels`` 3x3
convolutions with group normalisation and ReLU, then a 3x3 convolution to
``patch_channels`` maps (LACSS's code: three of 192 with group normalisation, then 48);
the auxnet has 32-map hidden layers. The normalisation matters for weak supervision:
without it, the first optimiser steps drove every mask of our test images to 0 (most
patch pixels are background, and the linear consistency loss has no gradient left once
the sigmoid saturates), and the masks never recovered.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

FEATURE_STRIDE = 2
"""Stride of the level-1 features the head segments from."""

GROUPS = 32
"""Group normalisation groups (fewer when the channels are not a multiple)."""


def conv_stack(in_channels: int, widths: Sequence[int]) -> nn.Sequential:
    """3x3 convolutions, each followed by group normalisation (``gcd(32, width)`` groups) and ReLU."""
    layers: list[nn.Module] = []
    for width in widths:
        layers += [nn.Conv2d(in_channels, width, 3, padding=1), nn.GroupNorm(math.gcd(GROUPS, width), width),
                   nn.ReLU(inplace=True)]
        in_channels = width
    return nn.Sequential(*layers)


def crop_patches(images: Tensor, origins: Tensor, size: int, *, shared: bool = False) -> Tensor:
    """``(k, size, size)`` windows with top-left corners ``origins`` ``(k, 2)``, zero outside.

    Parameters
    ----------
    images
        ``(k, H, W)`` one image per window, or with ``shared`` one ``(H, W)`` image (or
        ``(C, H, W)`` maps, giving ``(k, C, size, size)``) for all windows.
    origins
        Integer ``(y, x)`` corners, possibly outside the image.
    size
        Window side.
    shared
        Whether all windows read the same image.
    """
    pad = size
    padded = torch.nn.functional.pad(images, (pad, pad, pad, pad))
    offsets = torch.arange(size, device=origins.device)
    rows = (origins[:, 0:1] + pad + offsets)[:, :, None]  # (k, size, 1)
    cols = (origins[:, 1:2] + pad + offsets)[:, None, :]  # (k, 1, size)
    if not shared:
        return padded[torch.arange(len(origins), device=origins.device)[:, None, None], rows, cols]
    if padded.ndim == 2:
        return padded[rows, cols]
    return padded[:, rows, cols].transpose(0, 1)


def paste_patches(patches: Tensor, origins: Tensor, image_size: Sequence[int], *, accumulate: bool = True) -> Tensor:
    """Patches ``(k, s, s)`` placed at ``origins`` in an image: their sum ``(H, W)``, or one image each.

    With ``accumulate`` the patches are added into one ``(H, W)`` image (differentiably);
    otherwise each goes into its own zero image, ``(k, H, W)``. Parts outside the image
    are dropped.
    """
    size = patches.shape[-1]
    height, width = int(image_size[0]), int(image_size[1])
    padded_h, padded_w = height + 2 * size, width + 2 * size
    offsets = torch.arange(size, device=origins.device)
    rows = (origins[:, 0:1] + size + offsets)[:, :, None]
    cols = (origins[:, 1:2] + size + offsets)[:, None, :]
    flat = (rows * padded_w + cols).reshape(-1)
    if accumulate:
        canvas = patches.new_zeros(padded_h * padded_w).index_add(0, flat, patches.reshape(-1))
        return canvas.view(padded_h, padded_w)[size : size + height, size : size + width]
    count = patches.shape[0]
    canvas = patches.new_zeros((count, padded_h * padded_w))
    if count == 0:
        return canvas.view(0, padded_h, padded_w)[:, size : size + height, size : size + width]
    canvas.scatter_(1, flat.view(count, -1), patches.reshape(count, -1))
    return canvas.view(count, padded_h, padded_w)[:, size : size + height, size : size + width]


class LocationConditionedSegmentation(nn.Module):
    """Per-location mask logits from level-1 features.

    Parameters
    ----------
    in_channels
        Channels of the level-1 features.
    crop_size
        Side of the crop around each location, in image pixels (even; 96-128 in the paper).
    shared_channels
        Widths of the shared 3x3 convolutions with ReLU.
    patch_channels
        Maps entering the location-dependent layers.
    """

    def __init__(self, in_channels: int, *, crop_size: int = 96, shared_channels: Sequence[int] = (192, 192, 192),
                 patch_channels: int = 48) -> None:
        super().__init__()
        last = shared_channels[-1] if shared_channels else in_channels
        self.shared = nn.Sequential(*conv_stack(in_channels, shared_channels),
                                    nn.Conv2d(last, patch_channels, 3, padding=1))
        self.patch_conv = nn.Conv2d(patch_channels + 2, patch_channels, 3, padding=1)
        self.output = nn.ConvTranspose2d(patch_channels + 2, 1, 2, stride=FEATURE_STRIDE)
        self.crop_size = crop_size
        self.patch_size = crop_size // FEATURE_STRIDE

    def patch_origins(self, locations: Tensor) -> Tensor:
        """Top-left corners (image pixels, int64) of the crops around ``locations`` ``(k, 2)``."""
        cells = torch.floor(locations / FEATURE_STRIDE).to(torch.int64)
        return (cells - self.patch_size // 2) * FEATURE_STRIDE

    def location_encoding(self, locations: Tensor, origins: Tensor) -> Tensor:
        """``(k, 2, p, p)`` offsets of each patch cell's centre from its location, over half the crop."""
        steps = torch.arange(self.patch_size, device=locations.device, dtype=locations.dtype)
        centres = steps * FEATURE_STRIDE + (FEATURE_STRIDE - 1) / 2
        dy = origins[:, 0:1].to(locations) + centres - locations[:, 0:1]  # (k, p)
        dx = origins[:, 1:2].to(locations) + centres - locations[:, 1:2]
        p = self.patch_size
        encoding = torch.stack([dy[:, :, None].expand(-1, p, p), dx[:, None, :].expand(-1, p, p)], dim=1)
        return encoding / (self.crop_size / 2)

    def forward(self, features: Tensor, locations: Sequence[Tensor]) -> list[tuple[Tensor, Tensor]]:
        """Per image: mask logits ``(k, crop, crop)`` and crop origins ``(k, 2)`` (image pixels).

        Parameters
        ----------
        features
            Level-1 features ``(N, C, H/2, W/2)``.
        locations
            Per image, ``(k, 2)`` locations ``(y, x)`` in image pixels.
        """
        shared = torch.relu(self.shared(features))
        result = []
        for image_features, image_locations in zip(shared, locations):
            origins = self.patch_origins(image_locations)
            if image_locations.shape[0] == 0:
                empty = image_features.new_zeros((0, self.crop_size, self.crop_size))
                result.append((empty, origins))
                continue
            patches = crop_patches(image_features, origins // FEATURE_STRIDE, self.patch_size, shared=True)
            encoding = self.location_encoding(image_locations.to(patches), origins).to(patches)
            hidden = torch.relu(self.patch_conv(torch.cat([patches, encoding], dim=1)))
            logits = self.output(torch.cat([hidden, encoding], dim=1))[:, 0]
            result.append((logits, origins))
        return result


class AuxNet(nn.Module):
    """Four 3x3 convolutions without downsampling: boundary probability ``(N, H, W)`` of the image."""

    def __init__(self, in_channels: int, *, hidden_channels: int = 32) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for _ in range(3):
            layers += [nn.Conv2d(in_channels, hidden_channels, 3, padding=1), nn.ReLU(inplace=True)]
            in_channels = hidden_channels
        layers.append(nn.Conv2d(in_channels, 1, 3, padding=1))
        self.layers = nn.Sequential(*layers)

    def forward(self, images: Tensor) -> Tensor:
        return torch.sigmoid(self.layers(images))[:, 0]
