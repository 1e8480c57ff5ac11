"""Tests of fluoseg.models.detection.paste against a numpy version of torchvision's pasting."""

from __future__ import annotations

import numpy as np
import torch

from fluoseg.models.detection.paste import paste_masks_in_image


def resize_bilinear(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize with half-pixel centres (align_corners=False), edges clamped."""
    def axis(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        source = np.maximum((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0)
        low = np.minimum(np.floor(source).astype(int), n_in - 1)
        high = np.minimum(low + 1, n_in - 1)
        return low, high, source - low

    y0, y1, fy = axis(image.shape[0], height)
    x0, x1, fx = axis(image.shape[1], width)
    rows = image[y0] * (1 - fy)[:, None] + image[y1] * fy[:, None]
    return rows[:, x0] * (1 - fx) + rows[:, x1] * fx


def reference_paste(mask: np.ndarray, box: np.ndarray, height: int, width: int) -> np.ndarray:
    size = mask.shape[0]
    scale = (size + 2) / size
    padded = np.pad(mask, 1)
    centre, half = (box[:2] + box[2:]) / 2, (box[2:] - box[:2]) / 2 * scale
    x1, y1 = (centre - half).astype(np.int64)  # truncation toward zero, as tensor.to(int64)
    x2, y2 = (centre + half).astype(np.int64)
    resized = resize_bilinear(padded, max(y2 - y1 + 1, 1), max(x2 - x1 + 1, 1))
    out = np.zeros((height, width))
    for y in range(max(y1, 0), min(y2 + 1, height)):
        for x in range(max(x1, 0), min(x2 + 1, width)):
            out[y, x] = resized[y - y1, x - x1]
    return out


def test_paste_equals_reference():
    rng = np.random.default_rng(0)
    masks = rng.random((4, 1, 6, 6)).astype(np.float32)
    boxes = np.array([[2.0, 3.0, 6.0, 8.0], [-3.0, 5.5, 4.2, 20.0], [10.0, 1.0, 19.9, 4.0], [0.0, 0.0, 0.5, 0.5]],
                     np.float32)
    got = paste_masks_in_image(torch.from_numpy(masks), torch.from_numpy(boxes), (12, 18))
    for index in range(4):
        expected = reference_paste(masks[index, 0].astype(np.float64), boxes[index].astype(np.float64), 12, 18)
        np.testing.assert_allclose(got[index].numpy(), expected, atol=1e-5)


def test_paste_full_mask_covers_its_box():
    masks = torch.ones(1, 1, 28, 28)
    pasted = paste_masks_in_image(masks, torch.tensor([[10.0, 20.0, 30.0, 36.0]]), (50, 50))[0] >= 0.5
    rows, cols = torch.where(pasted)
    # Pixels x1..x2-1 and y1..y2-1: the far corner is exclusive, as targets_from_labels makes boxes.
    assert (rows.min().item(), rows.max().item(), cols.min().item(), cols.max().item()) == (20, 35, 10, 29)


def test_paste_nothing():
    assert paste_masks_in_image(torch.zeros(0, 1, 28, 28), torch.zeros(0, 4), (5, 7)).shape == (0, 5, 7)
