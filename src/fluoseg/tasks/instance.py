"""Instance segmentation from label images: one task class per method, registered by name.

- ``border``: 3 classes background / interior / touching border with the U-Net border
  weight map (Kromp et al.'s U-Net); decoded by seeded growth of interiors.
- ``distance``: a distance-map head (MSE) and a foreground head (BCE), weighted
  ``MSE + alpha * BCE`` (in-silico-labelling paper); decoded by h-maxima watershed.
- ``threshold``: foreground vs background with the MS-ME loss; decoded by connected components.

Every method shares the label reading, the object-level validation score (F1 at IoU 0.5)
and Kromp et al.'s scale normalisation (``target_diameter``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np
import torch
import torch.nn.functional as F

from fluoseg.data.sample import Sample
from fluoseg.instance import (
    border_targets,
    distance_targets,
    labels_from_border_classes,
    labels_from_distance,
    labels_from_threshold,
    peak_to_radius,
    unet_weight_map,
)
from fluoseg.instance.tune import regrid_instances
from fluoseg.metrics.matching import match_objects
from fluoseg.metrics.semantic import f1_score
from fluoseg.models.registry import Registry
from fluoseg.tasks.base import IGNORE_INDEX, Task, pooled_class_counts
from fluoseg.tasks.losses import WeightedCrossEntropy, log_class_weights

T = TypeVar("T", bound=type)

INSTANCE_METHODS: Registry[type[InstanceTask]] = Registry("instance method")


def register_instance_method(name: str) -> Callable[[T], T]:
    """Class decorator making an instance method available as ``instance.method: name``."""

    def decorator(cls: T) -> T:
        cls.method = name
        return INSTANCE_METHODS.register(name)(cls)

    return decorator


def instance_method_names() -> list[str]:
    """Names of the registered instance methods that decode a segmentation network's maps, sorted.

    The ``detection`` method of detectors (:mod:`fluoseg.tasks.detection`) is left out: it is
    chosen by ``model.name``, not by ``instance.method``.
    """
    return [n for n in INSTANCE_METHODS.names() if not hasattr(INSTANCE_METHODS.get(n), "predict_objects")]


def build_instance_task(method: str, **options: Any) -> InstanceTask:
    """The instance task of ``method`` with those of ``options`` that the method takes.

    ``options`` may hold every key of the ``instance`` config section (and of checkpoints
    written before methods were separate classes); keys of other methods are left out.

    Raises
    ------
    FluosegError
        For an unknown method (the message lists the registered ones).
    """
    cls = INSTANCE_METHODS.get(method)
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    task = cls(**{k: v for k, v in options.items() if k in accepted})
    task.diameter_bias = float(options.get("diameter_bias", 1.0))  # set by tuning, not by training
    return task


class InstanceTask(Task):
    """What every instance method shares: labels in, object-level scores out.

    Parameters
    ----------
    min_size
        Objects smaller than this (pixels) are removed when decoding.
    target_diameter
        Kromp et al.'s scale normalisation: every image is rescaled so its objects have
        this mean diameter in pixels; ``None`` for none.

    Attributes
    ----------
    diameter_bias
        With scale normalisation: how much larger the model's own estimate of an image's
        diameter (``--diameter auto``, from the objects it decodes) comes out than the
        annotated diameter; the estimate is divided by it. 1 until ``fluoseg tune``
        calibrates it on annotated images (:func:`fluoseg.tuning.tune_segmenter`).
    """

    name = "instance"
    annotation_kind = "labels"
    method: str

    def __init__(self, *, min_size: int = 10, target_diameter: float | None = None) -> None:
        self.min_size = min_size
        self._target_diameter = target_diameter
        self.diameter_bias = 1.0

    @property
    def target_diameter(self) -> float | None:
        return self._target_diameter

    def read_annotation(self, sample: Sample, spatial_shape: tuple[int, ...]) -> np.ndarray:
        return sample.read_labels(spatial_shape)

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

    def foreground_probability(self, activated: np.ndarray) -> np.ndarray:
        """Per pixel, the predicted probability of belonging to some object, ``([Z], Y, X)``.

        What label-free quality estimates (expected F1, calibration) of an instance model are
        computed on; every method says which of its activated channels that is.
        """
        raise NotImplementedError(f"instance method {self.method!r} has no foreground probability")

    def regrid_labels(self, labels: np.ndarray, activated: np.ndarray) -> np.ndarray:
        """Labels decoded at the network's scale, grown over the object region of the resampled maps
        (:func:`fluoseg.instance.tune.regrid_instances`, as tuning scores them): outlines of the image's
        own resolution."""
        return regrid_instances(labels, activated, self.method, threshold=getattr(self, "threshold", 0.5))

    def options(self) -> dict[str, Any]:
        """The method's own constructor options (stored in checkpoints)."""
        return {}

    def state(self) -> dict[str, Any]:
        state = {"name": self.name, "method": self.method, **self.options(), "min_size": self.min_size,
                 "target_diameter": self.target_diameter}
        if self.target_diameter:  # only a scale-normalised model estimates diameters
            state["diameter_bias"] = self.diameter_bias
        return state


@register_instance_method("border")
class BorderTask(InstanceTask):
    """Kromp et al.'s U-Net: background / interior / touching-border classes with the U-Net weight map.

    Parameters
    ----------
    w0, sigma
        Border weight map of Ronneberger et al.: ``w0 * exp(-(d1 + d2)^2 / (2 sigma^2))``.
    erosion
        Width in pixels of the border class around each object.
    """

    fill = {"classes": IGNORE_INDEX, "weights": 0.0, "labels": 0}

    def __init__(self, *, w0: float = 10.0, sigma: float = 5.0, erosion: int = 1, min_size: int = 10,
                 target_diameter: float | None = None) -> None:
        super().__init__(min_size=min_size, target_diameter=target_diameter)
        self.w0, self.sigma, self.erosion = w0, sigma, erosion

    def output_channels(self) -> int:
        return 3

    def activated_channels(self) -> int:
        return 3

    def make_targets(self, annotation: np.ndarray, *, source: Any = None) -> dict[str, np.ndarray]:
        labels = annotation.astype(np.int64)  # kept for validation matching; not used by the loss
        return {"classes": border_targets(labels, erosion=self.erosion).astype(np.int64),
                "weights": unet_weight_map(labels, w0=self.w0, sigma=self.sigma).astype(np.float32),
                "labels": labels}

    def loss(self, logits: torch.Tensor, targets: dict[str, torch.Tensor]) -> torch.Tensor:
        per_pixel = F.cross_entropy(logits, targets["classes"], ignore_index=IGNORE_INDEX, reduction="none")
        valid = (targets["classes"] != IGNORE_INDEX).sum().clamp_min(1)
        return (per_pixel * targets["weights"]).sum() / valid

    def activate(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.softmax(logits, dim=1)

    def decode(self, activated: np.ndarray) -> np.ndarray:
        return labels_from_border_classes(activated, min_size=self.min_size)

    def foreground_probability(self, activated: np.ndarray) -> np.ndarray:
        # interior and border pixels both belong to objects
        return 1.0 - activated[0]

    def options(self) -> dict[str, Any]:
        return {"w0": self.w0, "sigma": self.sigma, "erosion": self.erosion}


@register_instance_method("distance")
class DistanceTask(InstanceTask):
    """The in-silico-labelling paper's distance map + foreground heads, decoded by h-maxima watershed.

    Parameters
    ----------
    alpha
        Weight of the foreground BCE against the distance MSE.
    gap_weight, sigma
        With ``gap_weight > 0`` both losses are weighted per pixel by ``1 + gap_weight *
        exp(-(d1 + d2)^2 / (2 sigma^2))``, Ronneberger et al.'s separation term
        (:func:`~fluoseg.instance.targets.unet_weight_map`): errors where nuclei touch, which
        fuse them at decoding, cost more. 0: unweighted, as in the in-silico-labelling paper.
    h
        Height of the h-maxima that seed objects (pixels of distance).
    threshold
        Foreground probability above which a pixel belongs to an object.
    """

    fill = {"distance": 0.0, "foreground": IGNORE_INDEX, "classes": 0, "labels": 0, "weights": 0.0}

    def __init__(self, *, alpha: float = 1.0, gap_weight: float = 0.0, sigma: float = 5.0, h: float = 1.0,
                 threshold: float = 0.5, min_size: int = 10, target_diameter: float | None = None) -> None:
        super().__init__(min_size=min_size, target_diameter=target_diameter)
        self.alpha, self.h, self.threshold = alpha, h, threshold
        self.gap_weight, self.sigma = gap_weight, sigma

    def output_channels(self) -> int:
        return 2

    def activated_channels(self) -> int:
        return 2

    def sigmoid_channels(self) -> tuple[int, ...]:
        return (1,)

    def make_targets(self, annotation: np.ndarray, *, source: Any = None) -> dict[str, np.ndarray]:
        labels = annotation.astype(np.int64)
        foreground = (labels > 0).astype(np.int64)
        distance, _ = distance_targets(labels)
        targets = {"distance": distance.astype(np.float32), "foreground": foreground, "classes": foreground.copy(),
                   "labels": labels}
        if self.gap_weight > 0:
            targets["weights"] = unet_weight_map(labels, w0=self.gap_weight, sigma=self.sigma, class_weights=(1.0, 1.0))
        return targets

    def loss(self, logits: torch.Tensor, targets: dict[str, torch.Tensor]) -> torch.Tensor:
        valid = targets["foreground"] != IGNORE_INDEX
        count = valid.sum().clamp_min(1)
        weights = valid * targets["weights"] if "weights" in targets else valid
        mse = ((logits[:, 0] - targets["distance"]) ** 2 * weights).sum() / count
        bce = F.binary_cross_entropy_with_logits(logits[:, 1], targets["foreground"].clamp_min(0).float(),
                                                 reduction="none")
        return mse + self.alpha * (bce * weights).sum() / count

    def activate(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.cat([logits[:, :1], torch.sigmoid(logits[:, 1:2])], dim=1)

    def decode(self, activated: np.ndarray) -> np.ndarray:
        return labels_from_distance(activated[0], activated[1], h=self.h, threshold=self.threshold,
                                    min_size=self.min_size)

    def foreground_probability(self, activated: np.ndarray) -> np.ndarray:
        return activated[1]

    def object_fit(self, activated: np.ndarray, labels: np.ndarray) -> float | None:
        return peak_to_radius(activated[0], labels)

    def options(self) -> dict[str, Any]:
        gap = {"gap_weight": self.gap_weight, "sigma": self.sigma} if self.gap_weight > 0 else {}
        return {"alpha": self.alpha, **gap, "h": self.h, "threshold": self.threshold}


@register_instance_method("threshold")
class ThresholdTask(InstanceTask):
    """Foreground vs background (MS-ME loss), objects as connected components.

    Parameters
    ----------
    threshold
        Foreground probability above which a pixel belongs to an object.
    weight_eps, class_weights
        MS-ME log class weights (fitted on the training targets).
    """

    fill = {"classes": IGNORE_INDEX, "labels": 0}

    def __init__(self, *, threshold: float = 0.5, weight_eps: float = 1.0, class_weights: Sequence[float] | None = None,
                 min_size: int = 10, target_diameter: float | None = None) -> None:
        super().__init__(min_size=min_size, target_diameter=target_diameter)
        self.threshold, self.weight_eps = threshold, weight_eps
        self.class_weights = None if class_weights is None else np.asarray(class_weights, np.float32)

    def output_channels(self) -> int:
        return 2

    def activated_channels(self) -> int:
        return 1

    def make_targets(self, annotation: np.ndarray, *, source: Any = None) -> dict[str, np.ndarray]:
        labels = annotation.astype(np.int64)
        return {"classes": (labels > 0).astype(np.int64), "labels": labels}

    def fit(self, targets: Sequence[dict[str, np.ndarray]]) -> None:
        self.class_weights = log_class_weights(pooled_class_counts(targets, 2), eps=self.weight_eps)

    def loss(self, logits: torch.Tensor, targets: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.class_weights is None:
            raise RuntimeError("fit() the task on the training targets before computing losses")
        weights = torch.as_tensor(self.class_weights, device=logits.device)
        return WeightedCrossEntropy(weights).to(logits.device)(logits, targets["classes"])

    def activate(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.softmax(logits, dim=1)[:, 1:]

    def decode(self, activated: np.ndarray) -> np.ndarray:
        return labels_from_threshold(activated[0], threshold=self.threshold, min_size=self.min_size)

    def foreground_probability(self, activated: np.ndarray) -> np.ndarray:
        return activated[0]

    def options(self) -> dict[str, Any]:
        weights = None if self.class_weights is None else [float(w) for w in self.class_weights]
        return {"threshold": self.threshold, "weight_eps": self.weight_eps, "class_weights": weights}
