"""Input handling shared by the detectors: image checks, padding, target checks."""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor


def prepare_images(images: Tensor, in_channels: int, multiple: int) -> tuple[Tensor, tuple[int, int]]:
    """``images`` zero-padded at the bottom and right to sizes divisible by ``multiple``, and their size.

    Raises
    ------
    ValueError
        If ``images`` is not ``(N, in_channels, H, W)``.
    """
    if images.ndim != 4 or images.shape[1] != in_channels:
        raise ValueError(f"expected images (N, {in_channels}, H, W), got {tuple(images.shape)}")
    height, width = images.shape[-2:]
    return F.pad(images, (0, -width % multiple, 0, -height % multiple)), (int(height), int(width))


def check_targets(targets: Sequence[dict[str, Tensor]] | None, n_images: int, keys: Sequence[str]) -> None:
    """Raise ``ValueError`` unless there is one target dict per image holding ``keys``."""
    if targets is None or len(targets) != n_images:
        raise ValueError(f"training needs one target dict per image ({n_images}), got {targets!r:.80}")
    for target in targets:
        missing = [k for k in keys if k not in target]
        if missing:
            raise ValueError(f"a target lacks {missing}; it has {sorted(target)}")
