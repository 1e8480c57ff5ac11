"""Semantic segmentation: exclusive classes from per-class masks.

One softmax over background + classes with the MS-ME log-weighted cross-entropy (the
default), or per-class sigmoids / a softmax with a loss of the transfer-learning study
(``train.loss``: BCE, Dice, BCE + Dice, Jaccard, focal).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from fluoseg.data.sample import Sample
from fluoseg.errors import FluosegError
from fluoseg.metrics.semantic import f1_score
from fluoseg.tasks.base import IGNORE_INDEX, Task, pooled_class_counts
from fluoseg.tasks.losses import MS_ME_LOSS, WeightedCrossEntropy, build_semantic_loss, log_class_weights


def masks_to_target(masks: np.ndarray, classes: Sequence[str], *, source: Any = None) -> np.ndarray:
    """Turn ``(n_classes, ...)`` 0/1 masks into one class-index map (0 = background).

    Raises
    ------
    FluosegError
        If two classes claim the same pixel: a joint (softmax) model needs exclusive classes.
    """
    overlap = masks.sum(axis=0) > 1
    if overlap.any():
        raise FluosegError(
            f"classes {list(classes)} overlap in {int(overlap.sum())} pixels; a joint model needs "
            "exclusive classes: use 'train.class_mode: separate' to train one model per class",
            path=source,
        )
    target = np.zeros(masks.shape[1:], dtype=np.int64)
    for index in range(masks.shape[0]):
        target[masks[index] > 0] = index + 1
    return target


class SemanticTask(Task):
    """Exclusive classes; the MS-ME log-weighted cross-entropy or a loss chosen by name.

    Parameters
    ----------
    classes
        Class names (background is implicit).
    weight_eps, class_weights
        MS-ME class weights (``ce-log`` only; fitted on the training targets).
    loss
        ``"ce-log"`` (default, MS-ME) or a name of :func:`fluoseg.tasks.losses.build_loss`:
        ``"bce"``, ``"dice"``, ``"bce-dice"``, ``"jaccard"``, ``"focal"``.
    loss_options
        Options of that loss (``pos_weight``, ``eps``, ``gamma``, ``alpha``, ``mode``...).

    Notes
    -----
    The loss decides the network's output layout:

    - **softmax** (``ce-log``, or ``mode: softmax``): ``n_classes + 1`` logits, background
      first; targets are class indices; the activated maps are the class probabilities and a
      pixel goes to the most probable of background and classes.
    - **sigmoid** (``bce`` always, and ``dice``/``bce-dice``/``jaccard``/``focal`` by default,
      the study's binary set-up): ``n_classes`` logits, one independent binary problem per
      class with 0/1 targets; a pixel goes to the most probable class if that probability
      exceeds 0.5 (classes stay exclusive), else to background. With one class this is the
      usual ``p > 0.5``.
    """

    name = "semantic"
    fill = {"classes": IGNORE_INDEX}
    annotation_kind = "mask"

    def __init__(self, classes: Sequence[str], *, weight_eps: float = 1.0, class_weights: Sequence[float] | None = None,
                 loss: str = "ce-log", loss_options: dict[str, Any] | None = None) -> None:
        self.classes = tuple(classes)
        self.weight_eps = weight_eps
        self.class_weights = None if class_weights is None else np.asarray(class_weights, np.float32)
        self.loss_name = loss
        self.loss_options = dict(loss_options or {})
        self.criterion = build_semantic_loss(loss, self.loss_options)
        self.mode = "softmax" if loss == MS_ME_LOSS else self.loss_options.get("mode", "sigmoid")

    def output_channels(self) -> int:
        return len(self.classes) + (1 if self.mode == "softmax" else 0)

    def activated_channels(self) -> int:
        return len(self.classes)

    def sigmoid_channels(self) -> tuple[int, ...]:
        return tuple(range(len(self.classes))) if self.mode == "sigmoid" else ()

    def read_annotation(self, sample: Sample, spatial_shape: tuple[int, ...]) -> np.ndarray:
        return sample.read_masks(list(self.classes), spatial_shape)

    def make_targets(self, annotation: np.ndarray, *, source: Any = None) -> dict[str, np.ndarray]:
        return {"classes": masks_to_target(annotation, self.classes, source=source)}

    def fit(self, targets: Sequence[dict[str, np.ndarray]]) -> None:
        self.class_weights = log_class_weights(pooled_class_counts(targets, len(self.classes) + 1), eps=self.weight_eps)

    def loss(self, logits: torch.Tensor, targets: dict[str, torch.Tensor]) -> torch.Tensor:
        classes = targets["classes"]
        if self.criterion is not None:
            criterion = self.criterion.to(logits.device)
            if self.mode == "softmax":
                return criterion(logits, classes)
            return criterion(logits, self._binary_targets(classes))
        if self.class_weights is None:
            raise RuntimeError("fit() the task on the training targets before computing losses")
        weights = torch.as_tensor(self.class_weights, device=logits.device)
        return WeightedCrossEntropy(weights).to(logits.device)(logits, classes)

    def _binary_targets(self, classes: torch.Tensor) -> torch.Tensor:
        """Class-index map ``(N, H, W)`` -> per-class 0/1 ``(N, C, H, W)``, ignored pixels kept ignored."""
        index = torch.arange(1, len(self.classes) + 1, device=classes.device).view(1, -1, 1, 1)
        binary = (classes.unsqueeze(1) == index).long()
        return torch.where(classes.unsqueeze(1) == IGNORE_INDEX, torch.full_like(binary, IGNORE_INDEX), binary)

    def activate(self, logits: torch.Tensor) -> torch.Tensor:
        if self.mode == "sigmoid":
            return torch.sigmoid(logits)
        return torch.softmax(logits, dim=1)[:, 1:]

    def decode(self, activated: np.ndarray) -> np.ndarray:
        if self.mode == "sigmoid":
            # Independent class probabilities: background competes as a constant 0.5.
            background = np.full((1, *activated.shape[1:]), 0.5, dtype=activated.dtype)
        else:
            background = 1.0 - activated.sum(axis=0, keepdims=True)
        winner = np.argmax(np.concatenate([background, activated]), axis=0)
        return np.stack([winner == c + 1 for c in range(len(self.classes))]).astype(np.uint8)

    def score_counts(self, decoded: np.ndarray, targets: dict[str, np.ndarray]) -> np.ndarray:
        truth = targets["classes"]
        counts = np.zeros((len(self.classes), 3), dtype=np.int64)
        for c in range(len(self.classes)):
            pred, gt = decoded[c].astype(bool), truth == c + 1
            counts[c] = [np.sum(pred & gt), np.sum(pred & ~gt), np.sum(~pred & gt)]
        return counts

    def score(self, counts: np.ndarray) -> dict[str, float]:
        scores = {f"f1_{c}": f1_score(*counts[i]) for i, c in enumerate(self.classes)}
        scores["mean_f1"] = scores["score"] = float(np.mean(list(scores.values())))
        return scores

    def state(self) -> dict[str, Any]:
        weights = None if self.class_weights is None else [float(w) for w in self.class_weights]
        state = {"name": self.name, "classes": list(self.classes), "weight_eps": self.weight_eps,
                 "class_weights": weights}
        if self.loss_name != MS_ME_LOSS:  # older checkpoints have no loss entry: they are all ce-log
            state.update(loss=self.loss_name, loss_options=dict(self.loss_options))
        return state
