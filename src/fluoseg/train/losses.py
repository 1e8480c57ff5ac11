"""Loss functions.

The MS-ME paper trains with a class-weighted cross-entropy whose weights grow with the
*logarithm* of class rarity, because linear inverse-frequency weights made training unstable
under strong imbalance (arteries cover ~1% of pixels).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fluoseg.data.dataset import IGNORE_INDEX


def log_class_weights(counts: np.ndarray, *, eps: float = 1.0) -> np.ndarray:
    """MS-ME class weights ``W_c = log(eps + sum_i |Y_i| / (C |Y_c|))``.

    Parameters
    ----------
    counts
        Pixel count ``|Y_c|`` of each of the ``C`` classes (background included).
    eps
        Offset inside the logarithm; with ``eps >= 1`` every weight is positive.

    Returns
    -------
    numpy.ndarray
        One float32 weight per class. A class absent from the training data is counted as
        one pixel, so its weight is large but finite.
    """
    counts = np.maximum(np.asarray(counts, dtype=np.float64), 1.0)
    return np.log(eps + counts.sum() / (len(counts) * counts)).astype(np.float32)


class WeightedCrossEntropy(nn.Module):
    """Softmax cross-entropy with fixed per-class weights, averaged over annotated pixels.

    Pixels whose target is ``IGNORE_INDEX`` (outside the image) do not contribute.
    """

    def __init__(self, weights: np.ndarray | torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("weights", torch.as_tensor(np.asarray(weights), dtype=torch.float32))

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Loss of ``(N, C, H, W)`` logits against an ``(N, H, W)`` class-index target."""
        per_pixel = F.cross_entropy(logits, target, weight=self.weights, ignore_index=IGNORE_INDEX, reduction="sum")
        annotated = (target != IGNORE_INDEX).sum().clamp_min(1)
        return per_pixel / annotated
