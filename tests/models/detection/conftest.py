"""Shared fixtures of the detection tests: a tiny image of four discs and a train loop."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
import torch

DISCS = ((16, 16, 7), (40, 20, 6), (30, 45, 8), (52, 50, 5))
"""(y, x, radius) of the four non-touching discs of the scene, labels 1..4."""

SETTLED_STEPS = 5
"""Steps at the end of a training run whose mean loss stands for where training ended."""


@dataclass
class DiscScene:
    """Instance labels ``(64, 64)`` and a normalised image ``(1, 1, 64, 64)`` (discs +1, background -1)."""

    labels: np.ndarray
    image: torch.Tensor

    def best_iou(self, index: int, masks: np.ndarray) -> float:
        """Best IoU of object ``index`` with any of the boolean ``masks`` ``(n, H, W)``."""
        truth = self.labels == index
        return max((float((truth & m).sum() / (truth | m).sum()) for m in masks), default=0.0)


@pytest.fixture()
def discs() -> DiscScene:
    yy, xx = np.mgrid[:64, :64]
    labels = np.zeros((64, 64), np.int32)
    for index, (y, x, r) in enumerate(DISCS):
        labels[(yy - y) ** 2 + (xx - x) ** 2 <= r * r] = index + 1
    noise = np.random.default_rng(0).normal(0, 0.1, labels.shape)
    image = torch.from_numpy(np.where(labels > 0, 1.0, -1.0) + noise).float()[None, None]
    return DiscScene(labels, image)


def _train(model: torch.nn.Module, image: torch.Tensor, targets: list[dict], steps: int, lr: float = 1e-3
           ) -> tuple[float, float]:
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    losses = []
    for _ in range(steps):
        loss = sum(model(image, targets).values())
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    # One step's loss swings with the sampled anchors and proposals (and with the thread count's
    # summation order), so the end of training is read as the mean of the last steps.
    return losses[0], float(np.mean(losses[-SETTLED_STEPS:]))


@pytest.fixture()
def train() -> Callable[..., tuple[float, float]]:
    """``train(model, image, targets, steps, lr=1e-3)``: Adam on one batch; summed loss at the first step
    and its mean over the last ``SETTLED_STEPS`` steps."""
    return _train
