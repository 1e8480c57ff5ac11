"""The :class:`Task` interface: what a network learns and how its outputs become results.

A task turns a sample's annotation into per-pixel training targets, computes the training
loss, activates logits into the maps that tiling averages, decodes those maps into the final
result (masks, labels, intensities) and scores validation predictions. The trainer, the
tiling and the predictor are the same for every task; only a task knows its targets.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from fluoseg.data.resample import resample_to_shape
from fluoseg.data.sample import Sample

IGNORE_INDEX = -1
"""Target value of pixels that carry no annotation (outside the image); excluded from every loss."""


class Task(ABC):
    """Interface of a learning task.

    Class attributes
    ----------------
    name
        Registry name stored in checkpoints (``semantic``, ``instance``, ``regression``).
    annotation_kind
        ``"mask"``, ``"labels"`` or ``"image"``: what :meth:`read_annotation` returns, and so
        how an annotation is resampled.
    fill
        Value of each target outside the image (ignored by the loss).
    """

    name: str
    annotation_kind: str
    fill: dict[str, float]

    @property
    def target_diameter(self) -> float | None:
        """Object diameter (pixels) every image is rescaled to, or ``None`` for no scale normalisation."""
        return None

    @property
    def ignored_channels(self) -> tuple[str, ...]:
        """Image channels that are never network inputs (e.g. in-silico-labelling targets)."""
        return ()

    @abstractmethod
    def output_channels(self) -> int:
        """Number of logit channels the network needs."""

    @abstractmethod
    def activated_channels(self) -> int:
        """Channels of :meth:`activate`'s output (what tiling averages)."""

    @abstractmethod
    def read_annotation(self, sample: Sample, spatial_shape: tuple[int, ...]) -> np.ndarray:
        """The sample's raw annotation: class masks ``(n, ...)``, instance labels ``(...)`` or target channels."""

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
        """Averaged activated maps of one image -> masks ``(n, ...)``, labels ``(...)`` or values."""

    def object_fit(self, activated: np.ndarray, labels: np.ndarray) -> float | None:
        """How well decoded objects match the sizes the network itself measured; None if it measures none.

        ``--diameter auto`` tells objects cut into pieces by it (:meth:`fluoseg.Segmenter.estimate_diameter`).
        """
        return None

    def regrid_labels(self, labels: np.ndarray, activated: np.ndarray) -> np.ndarray:
        """Labels decoded at the network's scale, on the grid of ``activated`` (the maps resampled to the image).

        Nearest neighbour here; instance methods follow the resampled maps (:meth:`InstanceTask.regrid_labels`).
        """
        return resample_to_shape(labels, activated.shape[1:], kind="labels")

    @abstractmethod
    def score_counts(self, decoded: np.ndarray, targets: dict[str, np.ndarray]) -> np.ndarray:
        """Counts for validation (summed over images), e.g. TP/FP/FN per class."""

    @abstractmethod
    def score(self, counts: np.ndarray) -> dict[str, float]:
        """Validation scores from pooled counts; the key ``"score"`` selects the best epoch."""

    def batch_loss(self, model: torch.nn.Module, images: torch.Tensor, availability: torch.Tensor,
                   targets: dict[str, torch.Tensor]) -> torch.Tensor:
        """Training loss of a batch of patches: the network's logits against the targets.

        A network with deep supervision returns one logit map per head; their losses are averaged.
        Tasks whose network computes its own losses (detectors) override this.
        """
        logits = model(images, availability)
        heads = logits if isinstance(logits, (list, tuple)) else [logits]
        return torch.stack([self.loss(head, targets) for head in heads]).mean()

    def sigmoid_channels(self) -> tuple[int, ...]:
        """Output channels that are independent sigmoid logits (probability = sigmoid(logit))."""
        return ()

    def sampling_map(self, targets: dict[str, np.ndarray]) -> np.ndarray:
        """Class-index map whose non-zero classes foreground patch sampling aims at."""
        return targets["classes"]

    def state(self) -> dict[str, Any]:
        """Constants to store in checkpoints (rebuilt with :func:`fluoseg.tasks.task_from_state`)."""
        return {"name": self.name}


@runtime_checkable
class ObjectPredictor(Protocol):
    """A task whose network finds the objects of an image itself (a detector) instead of giving
    maps that tiling averages and :meth:`Task.decode` turns into labels.

    The trainer's validation and :class:`fluoseg.infer.Segmenter` call :meth:`predict_objects`
    on a whole normalised image for such a task (:class:`fluoseg.tasks.detection.DetectionTask`).
    """

    def predict_objects(self, model: torch.nn.Module, image: np.ndarray, *, geometry: Any, batch_size: int = 1,
                        progress: bool = False) -> Any:
        """Objects of a ``(K, Y, X)`` normalised image: ``.labels``, ``.scores``, ``.score_map``."""

    def validate(self, model: torch.nn.Module, images: Sequence[tuple[np.ndarray, dict[str, np.ndarray]]], *,
                 geometry: Any) -> dict[str, float]:
        """Validation scores (with ``"score"``) of whole ``(K, Y, X)`` images and their targets."""


def pooled_class_counts(targets: Sequence[dict[str, np.ndarray]], n_classes: int) -> np.ndarray:
    """Pixel count of each class index ``0..n_classes-1`` in the ``classes`` targets (ignored pixels left out)."""
    counts = np.zeros(n_classes, dtype=np.int64)
    for t in targets:
        classes = t["classes"].ravel()
        counts += np.bincount(classes[classes >= 0], minlength=n_classes)[:n_classes]
    return counts
