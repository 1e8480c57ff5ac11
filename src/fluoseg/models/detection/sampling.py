"""Matching predictions to ground truth, and balanced sampling of the matches.

:class:`Matcher` follows torchvision's ``Matcher`` (Faster R-CNN / Mask R-CNN): every
prediction (anchor or proposal) takes the ground-truth box it overlaps most; below
``low_threshold`` it is background, between the thresholds it is ignored, and with
``allow_low_quality_matches`` each ground-truth box also keeps the predictions that
overlap it best even when that overlap is low (so that no object is left without a
positive anchor). :class:`BalancedPositiveNegativeSampler` then draws a fixed number of
training examples per image with a bounded fraction of positives.
"""

from __future__ import annotations

import torch
from torch import Tensor

BELOW_LOW_THRESHOLD = -1
"""Match value of a background prediction."""

BETWEEN_THRESHOLDS = -2
"""Match value of an ignored prediction (overlap between the two thresholds)."""


class Matcher:
    """Assign to each prediction the index of its ground-truth box, or a negative code.

    Parameters
    ----------
    high_threshold
        Quality (IoU) at or above which a prediction is matched (positive).
    low_threshold
        Quality below which a prediction is background (:data:`BELOW_LOW_THRESHOLD`);
        in between it is :data:`BETWEEN_THRESHOLDS`.
    allow_low_quality_matches
        Also match, for each ground-truth box, the predictions of highest quality with it
        (ties included), whatever their quality: torchvision's RPN setting.
    """

    def __init__(self, high_threshold: float, low_threshold: float, *, allow_low_quality_matches: bool = False) -> None:
        if low_threshold > high_threshold:
            raise ValueError(f"low threshold {low_threshold} is above high threshold {high_threshold}")
        self.high_threshold = high_threshold
        self.low_threshold = low_threshold
        self.allow_low_quality_matches = allow_low_quality_matches

    def __call__(self, quality: Tensor) -> Tensor:
        """Matches of ``quality`` ``(n_truth, n_predictions)``: an int64 ``(n_predictions,)``.

        Values are ground-truth indices (``>= 0``), :data:`BELOW_LOW_THRESHOLD` or
        :data:`BETWEEN_THRESHOLDS`.

        Raises
        ------
        ValueError
            If there are no ground-truth boxes or no predictions (callers treat images
            without objects separately).
        """
        if quality.numel() == 0:
            what = "ground-truth boxes" if quality.shape[0] == 0 else "predictions"
            raise ValueError(f"cannot match without {what}")
        best_quality, matches = quality.max(dim=0)
        all_matches = matches.clone() if self.allow_low_quality_matches else None
        below_low = best_quality < self.low_threshold
        between = (best_quality >= self.low_threshold) & (best_quality < self.high_threshold)
        matches[below_low] = BELOW_LOW_THRESHOLD
        matches[between] = BETWEEN_THRESHOLDS
        if all_matches is not None:
            best_per_truth = quality.max(dim=1).values
            # Every prediction that reaches some box's best quality (ties included) gets
            # back its original match, which may be another box of equal quality.
            predictions = torch.where(quality == best_per_truth[:, None])[1]
            matches[predictions] = all_matches[predictions]
        return matches


class BalancedPositiveNegativeSampler:
    """Draw at most ``batch_size_per_image`` training examples per image, few of them positive.

    Parameters
    ----------
    batch_size_per_image
        Examples per image (256 for the RPN, 512 for the box head).
    positive_fraction
        Largest fraction of positives (0.5 RPN, 0.25 box head); missing positives are
        made up by negatives.
    """

    def __init__(self, batch_size_per_image: int, positive_fraction: float) -> None:
        self.batch_size_per_image = batch_size_per_image
        self.positive_fraction = positive_fraction

    def __call__(self, labels: list[Tensor], *, generator: torch.Generator | None = None
                 ) -> tuple[list[Tensor], list[Tensor]]:
        """Sampled positives and negatives of each image.

        Parameters
        ----------
        labels
            Per image, one label per example: ``>= 1`` positive, ``0`` negative, ``-1``
            ignored.
        generator
            Random source (default torch's global one).

        Returns
        -------
        tuple of lists of Tensor
            Boolean masks of the sampled positives and of the sampled negatives, per image.
        """
        positives, negatives = [], []
        for image_labels in labels:
            positive = torch.where(image_labels >= 1)[0]
            negative = torch.where(image_labels == 0)[0]
            n_positive = min(positive.numel(), int(self.batch_size_per_image * self.positive_fraction))
            n_negative = min(negative.numel(), self.batch_size_per_image - n_positive)
            chosen_positive = positive[_permutation(positive.numel(), generator, positive.device)[:n_positive]]
            chosen_negative = negative[_permutation(negative.numel(), generator, negative.device)[:n_negative]]
            positive_mask = torch.zeros_like(image_labels, dtype=torch.bool)
            negative_mask = torch.zeros_like(image_labels, dtype=torch.bool)
            positive_mask[chosen_positive] = True
            negative_mask[chosen_negative] = True
            positives.append(positive_mask)
            negatives.append(negative_mask)
        return positives, negatives


def _permutation(n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
    # Drawn on the CPU so that a CPU generator serves models on any device.
    return torch.randperm(n, generator=generator).to(device)
