"""In-silico labelling: predict fluorescence channels from the other channels (ISL pretraining)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from fluoseg.data.normalize import DEFAULT_PERCENTILES, compute_stats, normalize
from fluoseg.data.sample import Sample
from fluoseg.errors import FluosegError
from fluoseg.tasks.base import Task


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
                 percentiles: Sequence[float] = DEFAULT_PERCENTILES) -> None:
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
