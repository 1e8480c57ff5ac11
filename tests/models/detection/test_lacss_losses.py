"""Tests of fluoseg.models.detection.lacss_losses against direct per-pixel numpy computations."""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from fluoseg.models.detection.lacss_losses import (
    boundary_loss,
    segmentation_losses,
    supervised_segmentation_loss,
    weak_segmentation_loss,
)

SIZE = 6
IMAGE = (10, 12)
ORIGINS = np.array([[-2, -3], [1, 2], [5, 8]])  # the first and last stick out of the image


def cells(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.normal(0, 2, (len(ORIGINS), SIZE, SIZE))), torch.from_numpy(ORIGINS)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def on_canvas(values: np.ndarray, origin: np.ndarray, margin: int) -> np.ndarray:
    """One patch on a zero canvas of the image plus ``margin`` on each side."""
    canvas = np.zeros((IMAGE[0] + 2 * margin, IMAGE[1] + 2 * margin))
    y, x = origin + margin
    canvas[y : y + SIZE, x : x + SIZE] = values
    return canvas


def test_supervised_loss_is_bce_on_cropped_masks():
    logits, origins = cells()
    masks = np.random.default_rng(1).integers(0, 2, (3, *IMAGE))
    got = supervised_segmentation_loss(logits, origins, torch.from_numpy(masks))
    total = 0.0
    for index, (y, x) in enumerate(ORIGINS):
        padded = np.pad(masks[index], SIZE)
        target = padded[y + SIZE : y + 2 * SIZE, x + SIZE : x + 2 * SIZE]
        p = sigmoid(logits[index].numpy())
        total += -(target * np.log(p) + (1 - target) * np.log(1 - p)).mean()
    np.testing.assert_allclose(got.item(), total / 3, rtol=1e-6)


def test_weak_loss_equals_per_pixel_formula():
    logits, origins = cells()
    foreground = np.random.default_rng(2).integers(0, 2, IMAGE)
    got = weak_segmentation_loss(logits, origins, torch.from_numpy(foreground))
    margin = SIZE
    g = [on_canvas(sigmoid(logits[i].numpy()), ORIGINS[i], margin) for i in range(3)]
    inside = [on_canvas(np.ones((SIZE, SIZE)), ORIGINS[i], margin) > 0 for i in range(3)]
    c = np.pad(foreground, margin).astype(float)
    total = 0.0
    for i in range(3):
        others = sum(np.log(1 - g[k]) for k in range(3) if k != i)
        term = (1 - c) * g[i] + c * (1 - g[i]) - g[i] * others
        total += term[inside[i]].mean()
    np.testing.assert_allclose(got.item(), total / 3, rtol=1e-6)


def test_weak_loss_prefers_disjoint_cells_on_the_foreground():
    foreground = torch.zeros(IMAGE)
    foreground[2:6, 3:9] = 1
    origins = torch.tensor([[1, 2], [1, 5]])

    def cell(columns: slice) -> torch.Tensor:
        logits = torch.full((SIZE, SIZE), -8.0)
        logits[1:5, columns] = 8.0
        return logits

    split = weak_segmentation_loss(torch.stack([cell(slice(1, 4)), cell(slice(1, 4))]), origins, foreground)
    both = weak_segmentation_loss(torch.stack([cell(slice(1, 6)), cell(slice(0, 4))]), origins, foreground)
    assert split.item() < both.item()


def sobel_magnitude(image: np.ndarray) -> np.ndarray:
    dy = ndimage.correlate(image, np.array([[1, 2, 1], [0, 0, 0], [-1, -2, -1]]) / 4, mode="constant")
    dx = ndimage.correlate(image, np.array([[1, 0, -1], [2, 0, -2], [1, 0, -1]]) / 4, mode="constant")
    return np.sqrt(dy**2 + dx**2 + 1e-6)


def test_boundary_loss_equals_huber_of_tanh_edge_sum():
    logits, origins = cells()
    predicted = np.random.default_rng(3).random(IMAGE)
    got = boundary_loss(logits, origins, torch.from_numpy(predicted))
    edges = sum(on_canvas(sobel_magnitude(sigmoid(logits[i].numpy())), ORIGINS[i], SIZE) for i in range(3))
    implied = np.tanh(edges[SIZE:-SIZE, SIZE:-SIZE])
    d = np.abs(predicted - implied)
    huber = np.where(d < 0.5, 0.5 * d**2, 0.5 * d - 0.125)
    np.testing.assert_allclose(got.item(), huber.mean(), rtol=1e-6)


def test_segmentation_losses_per_image_supervision():
    logits, origins = cells()
    masks = torch.zeros(3, *IMAGE, dtype=torch.uint8)
    foreground = torch.ones(IMAGE, dtype=torch.uint8)
    full = {"masks": masks}
    weak = {"points": torch.zeros(3, 2), "foreground": foreground}
    boundaries = torch.rand(2, *IMAGE)
    losses = segmentation_losses([(logits, origins), (logits, origins)], [full, weak], boundaries)
    expected = (supervised_segmentation_loss(logits, origins, masks)
                + weak_segmentation_loss(logits, origins, foreground)) / 2
    torch.testing.assert_close(losses["loss_segmentation"], expected)
    torch.testing.assert_close(losses["loss_boundary"], boundary_loss(logits, origins, boundaries[1]))
    only_full = segmentation_losses([(logits, origins)], [full], boundaries[:1])
    assert only_full["loss_boundary"].item() == 0.0
    assert set(segmentation_losses([(logits, origins)], [full], None)) == {"loss_segmentation"}
