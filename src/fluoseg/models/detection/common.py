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


class DetectorGeometry:
    """The tiling interface of a detector (:class:`fluoseg.tiling.SizedNetwork`): same padding, any size.

    A detector pads its input to a multiple of its stride itself, so its "output" (the image
    its detections live in) is as large as its input. Sizes are rounded up to that stride so
    that tiles start on the stride grid, where the anchors and pooling windows of a tile
    coincide with those of the whole image.
    """

    padding = "same"

    @property
    def size_divisible(self) -> int:
        """The stride the backbone pads images to a multiple of."""
        return int(self.backbone.size_divisible)  # type: ignore[attr-defined]

    def output_size(self, input_size: int) -> int:
        """The detections cover the whole input."""
        return int(input_size)

    def valid_input_size(self, at_least: int) -> int:
        """The smallest multiple of the stride that is at least ``at_least``."""
        multiple = int(self.size_divisible)
        return -(-int(at_least) // multiple) * multiple
