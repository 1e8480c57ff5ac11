"""Random augmentation of training patches.

Geometric transforms (the 8 symmetries of the square: flips and 90-degree rotations) are
applied identically to the image and every target (masks, class maps, weight maps), so
they stay aligned. Intensity jitter touches only the image, and never a channel that is
entirely zero: such a channel encodes a missing marker, and jittering it would fake one.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def dihedral(array: np.ndarray, index: int) -> np.ndarray:
    """Apply symmetry ``index`` (0..7) of the square to the last two axes.

    ``index % 4`` quarter turns, then a left-right flip when ``index >= 4``.
    """
    out = np.rot90(array, k=index % 4, axes=(-2, -1))
    if index >= 4:
        out = out[..., ::-1]
    return np.ascontiguousarray(out)


def inverse_dihedral(array: np.ndarray, index: int) -> np.ndarray:
    """Undo :func:`dihedral` with the same ``index``."""
    out = array[..., ::-1] if index >= 4 else array
    return np.ascontiguousarray(np.rot90(out, k=-(index % 4), axes=(-2, -1)))


class Augmenter:
    """Random flips, 90-degree rotations and per-channel intensity jitter.

    Parameters
    ----------
    flips, rot90
        Allow mirror images and quarter turns; both together reach all 8 symmetries.
    intensity_scale
        Each present channel is multiplied by ``1 + u``, ``u ~ U(-s, s)``.
    intensity_shift
        Then shifted by ``v ~ U(-t, t)`` (in units of the normalised intensity).
    rng
        Random generator; the augmentation sequence is deterministic given it.
    """

    def __init__(self, *, flips: bool = True, rot90: bool = True, intensity_scale: float = 0.1,
                 intensity_shift: float = 0.1, rng: np.random.Generator | None = None) -> None:
        self.flips, self.rot90 = flips, rot90
        self.intensity_scale, self.intensity_shift = intensity_scale, intensity_shift
        self.rng = rng if rng is not None else np.random.default_rng()

    def _symmetry(self) -> int:
        turns = int(self.rng.integers(4)) if self.rot90 else 0
        flip = 4 if self.flips and self.rng.random() < 0.5 else 0
        return turns + flip

    def __call__(self, image: np.ndarray, targets: Sequence[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        """Augment a ``(C, H, W)`` image and its ``(..., H, W)`` targets together."""
        index = self._symmetry()
        image = dihedral(image, index)
        targets = [dihedral(t, index) for t in targets]
        if self.intensity_scale or self.intensity_shift:
            present = np.any(image.reshape(image.shape[0], -1) != 0, axis=1)
            scale = 1.0 + self.rng.uniform(-self.intensity_scale, self.intensity_scale, image.shape[0])
            shift = self.rng.uniform(-self.intensity_shift, self.intensity_shift, image.shape[0])
            shape = (-1,) + (1,) * (image.ndim - 1)
            jittered = image * scale.reshape(shape).astype(np.float32) + shift.reshape(shape).astype(np.float32)
            image = np.where(present.reshape(shape), jittered, image).astype(image.dtype)
        return image, targets
