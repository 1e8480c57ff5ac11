"""Tasks: what a network learns, its targets, loss, output activation and decoding.

A task turns a sample's annotations into per-pixel training targets, scores network
outputs against them, and turns the (tiled, averaged) activated outputs into the final
result. The trainer, the tiling and the predictor are the same for every task.

- ``semantic``: one softmax over background + classes with the log-weighted cross-entropy
  (MS-ME), or per-class sigmoids / softmax with a loss of the transfer-learning study
  (``train.loss``: BCE, Dice, BCE + Dice, Jaccard, focal).
- ``instance`` with ``method``:
    * ``border``: 3 classes background / interior / touching border with the U-Net border
      weight map (Kromp et al.'s U-Net); decoded by seeded growth of interiors;
    * ``distance``: a distance-map head (MSE) and a foreground head (BCE), weighted
      ``MSE + alpha * BCE`` (in-silico-labelling paper); decoded by h-maxima watershed;
    * ``threshold``: foreground vs background; decoded by connected components.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from fluoseg.data.dataset import IGNORE_INDEX as IGNORE
from fluoseg.data.sample import Sample
from fluoseg.errors import FluosegError
from fluoseg.instance import (
    border_targets,
    distance_targets,
    labels_from_border_classes,
    labels_from_distance,
    labels_from_threshold,
    unet_weight_map,
)
from fluoseg.metrics.matching import match_objects
from fluoseg.metrics.semantic import f1_score
from fluoseg.train.losses import WeightedCrossEntropy, log_class_weights

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


class Task(ABC):
    """Interface of a learning task (see the module docstring)."""

    name: str
    fill: dict[str, float]
    """Value of each target outside the image (ignored by the loss)."""

    @abstractmethod
    def output_channels(self) -> int:
        """Number of logit channels the network needs."""

    @abstractmethod
    def activated_channels(self) -> int:
        """Channels of :meth:`activate`'s output (what tiling averages)."""

    @abstractmethod
    def read_annotation(self, sample: Sample, spatial_shape: tuple[int, ...]) -> np.ndarray:
        """The sample's raw annotation: class masks ``(n, ...)`` or instance labels ``(...)``."""

    @property
    @abstractmethod
    def annotation_kind(self) -> str:
        """``"mask"`` or ``"labels"``: how an annotation is resampled."""

    @abstractmethod
    def make_targets(self, annotation: np.ndarray, *, source: Any = None) -> dict[str, np.ndarray]:
        """Per-pixel training targets (spatial arrays) from an annotation."""

    def fit(self, targets: Sequence[dict[str, np.ndarray]]) -> None:
        """Learn dataset-level constants (class weights) from the training targets."""

    @abstractmethod
    def loss(self, logits: torch.Tensor, targets: dict[str, torch.Tensor]) -> torch.Tensor:
        """Scalar training loss of a batch."""

    @abstractmethod
    def activate(self, logits: torch.Tensor) -> torch.Tensor:
        """Network logits -> the maps that are tiled, averaged and decoded (probabilities...)."""

    @abstractmethod
    def decode(self, activated: np.ndarray) -> np.ndarray:
        """Averaged activated maps of one image -> masks ``(n, ...)`` or labels ``(...)``."""

    @abstractmethod
    def score_counts(self, decoded: np.ndarray, targets: dict[str, np.ndarray]) -> np.ndarray:
        """Counts for validation (summed over images), e.g. TP/FP/FN per class."""

    @abstractmethod
    def score(self, counts: np.ndarray) -> dict[str, float]:
        """Validation scores from pooled counts; the key ``"score"`` selects the best epoch."""

    def sigmoid_channels(self) -> tuple[int, ...]:
        """Output channels that are independent sigmoid logits (probability = sigmoid(logit))."""
        return ()

    def sampling_map(self, targets: dict[str, np.ndarray]) -> np.ndarray:
        """Class-index map whose non-zero classes foreground patch sampling aims at."""
        return targets["classes"]

    def state(self) -> dict[str, Any]:
        """Constants to store in checkpoints (rebuilt with :func:`task_from_state`)."""
        return {"name": self.name}


class SemanticTask(Task):
    """Exclusive classes; the MS-ME log-weighted cross-entropy or a loss chosen by name.

    Parameters
    ----------
    classes
        Class names (background is implicit).
    weight_eps, class_weights
        MS-ME class weights (``ce-log`` only; fitted on the training targets).
    loss
        ``"ce-log"`` (default, MS-ME) or a name of :func:`fluoseg.train.segmentation_losses.build_loss`:
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
    fill = {"classes": IGNORE}
    annotation_kind = "mask"
    LOSSES = ("ce-log", "bce", "dice", "bce-dice", "jaccard", "focal")

    def __init__(self, classes: Sequence[str], *, weight_eps: float = 1.0, class_weights: Sequence[float] | None = None,
                 loss: str = "ce-log", loss_options: dict[str, Any] | None = None) -> None:
        if loss not in self.LOSSES:
            raise FluosegError(f"unknown semantic loss {loss!r}; use one of {list(self.LOSSES)}")
        self.classes = tuple(classes)
        self.weight_eps = weight_eps
        self.class_weights = None if class_weights is None else np.asarray(class_weights, np.float32)
        self.loss_name = loss
        self.loss_options = dict(loss_options or {})
        if loss == "ce-log" and self.loss_options:
            raise FluosegError("loss options apply to the losses bce, dice, bce-dice, jaccard and focal, not ce-log")
        self.criterion = None
        if loss != "ce-log":
            from fluoseg.train.segmentation_losses import build_loss

            self.criterion = build_loss(loss, **self.loss_options)
        self.mode = "softmax" if loss == "ce-log" else self.loss_options.get("mode", "sigmoid")

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
        counts = np.zeros(len(self.classes) + 1, dtype=np.int64)
        for t in targets:
            counts += np.bincount(t["classes"].ravel(), minlength=counts.size)[: counts.size]
        self.class_weights = log_class_weights(counts, eps=self.weight_eps)

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
        return torch.where(classes.unsqueeze(1) == IGNORE, torch.full_like(binary, IGNORE), binary)

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
        if self.loss_name != "ce-log":  # older checkpoints have no loss entry: they are all ce-log
            state.update(loss=self.loss_name, loss_options=dict(self.loss_options))
        return state


class InstanceTask(Task):
    """Instance segmentation from label images (see the module docstring for the methods)."""

    name = "instance"
    annotation_kind = "labels"
    METHODS = ("border", "distance", "threshold")

    def __init__(self, *, method: str = "border", w0: float = 10.0, sigma: float = 5.0, erosion: int = 1,
                 alpha: float = 1.0, h: float = 1.0, threshold: float = 0.5, min_size: int = 10,
                 target_diameter: float | None = None, weight_eps: float = 1.0,
                 class_weights: Sequence[float] | None = None) -> None:
        if method not in self.METHODS:
            raise FluosegError(f"unknown instance method {method!r}; use one of {list(self.METHODS)}")
        self.method = method
        self.w0, self.sigma, self.erosion, self.alpha = w0, sigma, erosion, alpha
        self.h, self.threshold, self.min_size = h, threshold, min_size
        self.target_diameter = target_diameter
        self.weight_eps = weight_eps
        self.class_weights = None if class_weights is None else np.asarray(class_weights, np.float32)
        self.fill = {"border": {"classes": IGNORE, "weights": 0.0, "labels": 0},
                     "distance": {"distance": 0.0, "foreground": IGNORE, "classes": 0, "labels": 0},
                     "threshold": {"classes": IGNORE, "labels": 0}}[method]

    def output_channels(self) -> int:
        return {"border": 3, "distance": 2, "threshold": 2}[self.method]

    def activated_channels(self) -> int:
        return {"border": 3, "distance": 2, "threshold": 1}[self.method]

    def sigmoid_channels(self) -> tuple[int, ...]:
        return (1,) if self.method == "distance" else ()

    def read_annotation(self, sample: Sample, spatial_shape: tuple[int, ...]) -> np.ndarray:
        return sample.read_labels(spatial_shape)

    def make_targets(self, annotation: np.ndarray, *, source: Any = None) -> dict[str, np.ndarray]:
        labels = annotation.astype(np.int64)  # kept for validation matching; not used by the loss
        if self.method == "border":
            return {"classes": border_targets(labels, erosion=self.erosion).astype(np.int64),
                    "weights": unet_weight_map(labels, w0=self.w0, sigma=self.sigma).astype(np.float32),
                    "labels": labels}
        foreground = (labels > 0).astype(np.int64)
        if self.method == "distance":
            distance, _ = distance_targets(labels)
            return {"distance": distance.astype(np.float32), "foreground": foreground, "classes": foreground.copy(),
                    "labels": labels}
        return {"classes": foreground, "labels": labels}

    def fit(self, targets: Sequence[dict[str, np.ndarray]]) -> None:
        if self.method == "threshold":
            counts = np.zeros(2, dtype=np.int64)
            for t in targets:
                counts += np.bincount(t["classes"].ravel(), minlength=2)[:2]
            self.class_weights = log_class_weights(counts, eps=self.weight_eps)

    def loss(self, logits: torch.Tensor, targets: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.method == "border":
            per_pixel = F.cross_entropy(logits, targets["classes"], ignore_index=IGNORE, reduction="none")
            valid = (targets["classes"] != IGNORE).sum().clamp_min(1)
            return (per_pixel * targets["weights"]).sum() / valid
        if self.method == "distance":
            valid = targets["foreground"] != IGNORE
            count = valid.sum().clamp_min(1)
            mse = ((logits[:, 0] - targets["distance"]) ** 2 * valid).sum() / count
            bce = F.binary_cross_entropy_with_logits(logits[:, 1], targets["foreground"].clamp_min(0).float(),
                                                     reduction="none")
            return mse + self.alpha * (bce * valid).sum() / count
        weights = torch.as_tensor(self.class_weights, device=logits.device)
        return WeightedCrossEntropy(weights).to(logits.device)(logits, targets["classes"])

    def activate(self, logits: torch.Tensor) -> torch.Tensor:
        if self.method == "border":
            return torch.softmax(logits, dim=1)
        if self.method == "distance":
            return torch.cat([logits[:, :1], torch.sigmoid(logits[:, 1:2])], dim=1)
        return torch.softmax(logits, dim=1)[:, 1:]

    def decode(self, activated: np.ndarray) -> np.ndarray:
        if self.method == "border":
            return labels_from_border_classes(activated, min_size=self.min_size)
        if self.method == "distance":
            return labels_from_distance(activated[0], activated[1], h=self.h, threshold=self.threshold,
                                        min_size=self.min_size)
        return labels_from_threshold(activated[0], threshold=self.threshold, min_size=self.min_size)

    def score_counts(self, decoded: np.ndarray, targets: dict[str, np.ndarray]) -> np.ndarray:
        truth = targets["labels"]
        match = match_objects(truth, decoded, threshold=0.5)
        tp = int(match.true_labels.size)
        n_true = len(np.unique(truth[truth > 0]))
        n_pred = len(np.unique(decoded[decoded > 0]))
        return np.array([tp, n_pred - tp, n_true - tp], dtype=np.int64)

    def score(self, counts: np.ndarray) -> dict[str, float]:
        tp, fp, fn = (int(v) for v in counts)
        f1 = f1_score(tp, fp, fn)
        accuracy = tp / (tp + fp + fn) if tp + fp + fn else 1.0
        return {"f1_at_0.5": f1, "accuracy_at_0.5": accuracy, "score": f1}

    def sampling_map(self, targets: dict[str, np.ndarray]) -> np.ndarray:
        return (targets["classes"] > 0).astype(np.int64)

    def state(self) -> dict[str, Any]:
        weights = None if self.class_weights is None else [float(w) for w in self.class_weights]
        return {"name": self.name, "method": self.method, "w0": self.w0, "sigma": self.sigma, "erosion": self.erosion,
                "alpha": self.alpha, "h": self.h, "threshold": self.threshold, "min_size": self.min_size,
                "target_diameter": self.target_diameter, "weight_eps": self.weight_eps, "class_weights": weights}


class RegressionTask(Task):
    """Predict fluorescence channels from other channels (in-silico labelling pretraining).

    The target markers are read from the sample itself and normalised like the inputs
    (whole-sample statistics); they are never fed to the network. L1 loss by default (the
    ISL paper), L2 as option; validation reports Pearson correlation and mean absolute error
    per target, and selects by mean Pearson correlation.
    """

    name = "regression"
    annotation_kind = "image"
    fill = {"values": 0.0, "valid": 0.0}

    def __init__(self, targets: Sequence[str], *, loss: str = "l1", normalization: str = "gaussian",
                 percentiles: Sequence[float] = (1.0, 99.8)) -> None:
        if not targets:
            raise FluosegError("a regression task needs 'regression.targets': the markers to predict")
        if loss not in ("l1", "l2"):
            raise FluosegError(f"unknown regression loss {loss!r}; use l1 or l2")
        self.targets = tuple(targets)
        self.loss_name = loss
        self.normalization = normalization
        self.percentiles = tuple(percentiles)

    @property
    def ignored_channels(self) -> tuple[str, ...]:
        """Image channels that are targets, never inputs."""
        return self.targets

    def output_channels(self) -> int:
        return len(self.targets)

    def activated_channels(self) -> int:
        return len(self.targets)

    def read_annotation(self, sample: Sample, spatial_shape: tuple[int, ...]) -> np.ndarray:
        from fluoseg.data.normalize import compute_stats, normalize

        missing = [t for t in self.targets if t not in sample.channel_names]
        if missing:
            raise FluosegError(f"sample {sample.id!r} lacks target marker(s) {missing}; it has {list(sample.channel_names)}",
                               path=sample.image_path)
        image = np.asarray(sample.read_image().array)
        channels = image[[sample.channel_names.index(t) for t in self.targets]]
        stats = compute_stats(channels, method=self.normalization, percentiles=tuple(self.percentiles))
        return normalize(channels, stats, method=self.normalization)

    def make_targets(self, annotation: np.ndarray, *, source: Any = None) -> dict[str, np.ndarray]:
        # Channel targets become one spatial array per target so the patch sampler cuts them alike.
        targets = {f"values_{i}": annotation[i].astype(np.float32) for i in range(annotation.shape[0])}
        targets["valid"] = np.ones(annotation.shape[1:], np.float32)
        return targets

    def _values(self, targets: dict[str, Any]) -> Any:
        parts = [targets[f"values_{i}"] for i in range(len(self.targets))]
        return torch.stack(parts, dim=1) if isinstance(parts[0], torch.Tensor) else np.stack(parts)

    def loss(self, logits: torch.Tensor, targets: dict[str, torch.Tensor]) -> torch.Tensor:
        valid = targets["valid"][:, None]
        error = logits - self._values(targets)
        per_pixel = error.abs() if self.loss_name == "l1" else error**2
        return (per_pixel * valid).sum() / (valid.sum() * logits.shape[1]).clamp_min(1)

    def activate(self, logits: torch.Tensor) -> torch.Tensor:
        return logits

    def decode(self, activated: np.ndarray) -> np.ndarray:
        return np.asarray(activated, dtype=np.float32)

    def score_counts(self, decoded: np.ndarray, targets: dict[str, np.ndarray]) -> np.ndarray:
        truth = self._values(targets).astype(np.float64)
        pred = decoded.astype(np.float64)
        valid = targets["valid"] > 0
        counts = np.zeros((len(self.targets), 7))
        for i in range(len(self.targets)):
            x, y = pred[i][valid], truth[i][valid]
            counts[i] = [x.size, x.sum(), y.sum(), (x * x).sum(), (y * y).sum(), (x * y).sum(), np.abs(x - y).sum()]
        return counts

    def score(self, counts: np.ndarray) -> dict[str, float]:
        scores: dict[str, float] = {}
        for i, name in enumerate(self.targets):
            n, sx, sy, sxx, syy, sxy, sae = counts[i]
            covariance = sxy - sx * sy / n
            denominator = np.sqrt(max(sxx - sx * sx / n, 0.0) * max(syy - sy * sy / n, 0.0))
            scores[f"pearson_{name}"] = float(covariance / denominator) if denominator > 0 else 0.0
            scores[f"mae_{name}"] = float(sae / n) if n else float("nan")
        scores["score"] = float(np.mean([scores[f"pearson_{t}"] for t in self.targets]))
        return scores

    def sampling_map(self, targets: dict[str, np.ndarray]) -> np.ndarray:
        return np.zeros(targets["valid"].shape, np.int64)

    def state(self) -> dict[str, Any]:
        return {"name": self.name, "targets": list(self.targets), "loss": self.loss_name,
                "normalization": self.normalization, "percentiles": list(self.percentiles)}


def pearson_correlation(prediction: np.ndarray, truth: np.ndarray) -> float:
    """Pearson correlation coefficient of two arrays (0.0 when either is constant)."""
    x, y = np.asarray(prediction, np.float64).ravel(), np.asarray(truth, np.float64).ravel()
    x, y = x - x.mean(), y - y.mean()
    denominator = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / denominator) if denominator > 0 else 0.0


def task_from_state(state: dict[str, Any]) -> Task:
    """Rebuild a task from :meth:`Task.state` (as stored in a checkpoint)."""
    options = dict(state)
    name = options.pop("name")
    if name == "semantic":
        return SemanticTask(options.pop("classes"), **options)
    if name == "instance":
        return InstanceTask(**options)
    if name == "regression":
        return RegressionTask(options.pop("targets"), **options)
    raise FluosegError(f"unknown task {name!r} in checkpoint; upgrade fluoseg")
