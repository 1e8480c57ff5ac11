"""The losses of the semantic task, by name.

``ce-log`` is the MS-ME paper's class-weighted cross-entropy whose weights grow with the
*logarithm* of class rarity, because linear inverse-frequency weights made training unstable
under strong imbalance (arteries cover ~1% of pixels). The transfer-learning study's losses
(BCE, Dice, BCE + Dice, Jaccard, focal) come from the registry of
:mod:`fluoseg.tasks.segmentation_losses`; :func:`build_semantic_loss` is the one place that
checks a loss name and its options.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fluoseg.errors import FluosegError
from fluoseg.tasks.base import IGNORE_INDEX
from fluoseg.tasks.segmentation_losses import build_loss, loss_names

MS_ME_LOSS = "ce-log"
SEMANTIC_LOSSES: tuple[str, ...] = (MS_ME_LOSS, *loss_names())
"""Names ``train.loss`` accepts: the MS-ME loss, then the registered segmentation losses."""

RESERVED_LOSS_OPTIONS = ("from_logits", "ignore_index")
"""Loss options the semantic task sets itself (logits in, outside-the-image pixels ignored)."""


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


def build_semantic_loss(name: str, options: dict[str, Any] | None = None) -> nn.Module | None:
    """The criterion of a semantic loss by name; ``None`` for ``ce-log`` (its weights are fitted later).

    Raises
    ------
    FluosegError
        For an unknown name, options given to ``ce-log``, options fluoseg sets itself, or an
        invalid option of a registered loss.
    """
    options = dict(options or {})
    if name not in SEMANTIC_LOSSES:
        raise FluosegError(f"unknown loss {name!r}; available: {list(SEMANTIC_LOSSES)}")
    if name == MS_ME_LOSS:
        if options:
            raise FluosegError(f"loss_options apply to the losses {list(SEMANTIC_LOSSES[1:])}, not {MS_ME_LOSS}; "
                               "the MS-ME loss is tuned with train.weight_eps")
        return None
    reserved = sorted(set(options) & set(RESERVED_LOSS_OPTIONS))
    if reserved:
        raise FluosegError(f"loss_options {reserved} are set by fluoseg itself; remove them")
    return build_loss(name, **options)
