"""Random augmentation of training patches.

Geometric transforms (the 8 symmetries of the square: flips and 90-degree rotations) are
applied identically to the image and to every target (masks, class maps, label images,
weight maps), so they stay aligned pixel for pixel; targets may be the smaller, centred
output windows of a valid-convolution network. They only move pixels, so integer
labels and weight maps keep their exact values.

Intensity jitter (a random gain and offset per channel) touches only the image, and never
a channel that is zero throughout the patch: zero is how a missing marker is encoded
(marker panels zero-fill absent markers), and jittering it would show the network a fake
stain. Jitter is meant for normalised images, so offsets are in units of the sample's
standard deviation.

Everything random comes from one :class:`numpy.random.Generator`, so a run is
reproducible from its seed (and from the generator state saved in a checkpoint).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fluoseg.errors import FluosegError

__all__ = ["DEFAULT_JITTER", "Augmentation", "Augmenter", "dihedral", "inverse_dihedral"]

Range = tuple[float, float]
DEFAULT_JITTER = (0.1, 0.1)
"""Default ``intensity_jitter``: gain in ``[0.9, 1.1]``, offset in ``[-0.1, 0.1]``."""


def dihedral(array: np.ndarray, index: int) -> np.ndarray:
    """Apply symmetry ``index`` (0-7) of the square to the last two axes.

    Parameters
    ----------
    array
        Any array with at least two axes; leading axes (channels, z) move along.
    index
        ``index % 4`` quarter turns (counter-clockwise, :func:`numpy.rot90`), followed by a
        left-right flip when ``index >= 4``. 0 is the identity.

    Returns
    -------
    numpy.ndarray
        A C-contiguous copy (torch rejects the negative strides of flipped views).
    """
    if not 0 <= int(index) < 8:
        raise FluosegError(f"a symmetry of the square is numbered 0-7, got {index}")
    out = np.rot90(array, k=int(index) % 4, axes=(-2, -1))
    if index >= 4:
        out = out[..., ::-1]
    return np.ascontiguousarray(out)


def inverse_dihedral(array: np.ndarray, index: int) -> np.ndarray:
    """Undo :func:`dihedral` with the same ``index`` (e.g. for test-time augmentation)."""
    if not 0 <= int(index) < 8:
        raise FluosegError(f"a symmetry of the square is numbered 0-7, got {index}")
    out = array[..., ::-1] if index >= 4 else array
    return np.ascontiguousarray(np.rot90(out, k=-(int(index) % 4), axes=(-2, -1)))


@dataclass(frozen=True)
class Augmentation:
    """One drawn augmentation: a symmetry and a per-channel gain and offset.

    Attributes
    ----------
    symmetry
        Index 0-7 for :func:`dihedral`.
    scale, shift
        Per-channel gain and offset, ``x * scale + shift`` (1 and 0 when there is no jitter).
    """

    symmetry: int
    scale: tuple[float, ...]
    shift: tuple[float, ...]


def _as_range(value: float | Sequence[float], *, centre: float, name: str) -> Range:
    """``s`` -> ``(centre - s, centre + s)``; a pair is taken as ``(low, high)``."""
    if np.isscalar(value):
        s = float(value)  # type: ignore[arg-type]
        if s < 0:
            raise FluosegError(f"{name} must be >= 0, got {s}")
        return (centre - s, centre + s)
    pair = tuple(float(v) for v in value)  # type: ignore[union-attr]
    if len(pair) != 2 or pair[0] > pair[1]:
        raise FluosegError(f"{name} must be a number or a (low, high) pair with low <= high, got {value!r}")
    return (pair[0], pair[1])


class Augmenter:
    """Random flips, 90-degree rotations and per-channel intensity jitter of training patches.

    Parameters
    ----------
    flips
        Allow mirror images (left-right, up-down).
    rot90
        Allow quarter turns. With ``flips`` too, all 8 symmetries of the square are drawn
        with equal probability. Quarter turns of a non-square patch would change its
        shape, so there only the 4 symmetries of the rectangle are used.
    intensity_jitter
        ``(scale_range, shift_range)``: each present channel becomes ``x * a + b`` with
        ``a ~ U(scale_range)`` and ``b ~ U(shift_range)``, drawn per channel. A number
        ``s`` as scale range means ``(1 - s, 1 + s)``, as shift range ``(-s, s)``.
        ``None`` turns jitter off. Default :data:`DEFAULT_JITTER`.
    intensity_scale, intensity_shift
        Alternative to ``intensity_jitter`` (the training config's keys): the half-widths
        ``s`` of the scale and shift ranges. Give either these or ``intensity_jitter``.
    rng
        A :class:`numpy.random.Generator` (shared with the caller, so one seed drives the
        whole run) or an integer seed. ``None``: fresh entropy.
    seed
        Alternative to ``rng``: an integer seed.
    """

    def __init__(
        self,
        *,
        flips: bool = True,
        rot90: bool = True,
        intensity_jitter: tuple[float | Sequence[float], float | Sequence[float]] | None = DEFAULT_JITTER,
        intensity_scale: float | None = None,
        intensity_shift: float | None = None,
        rng: np.random.Generator | int | None = None,
        seed: int | None = None,
    ) -> None:
        if intensity_scale is not None or intensity_shift is not None:
            if intensity_jitter is not DEFAULT_JITTER:
                raise FluosegError("give either intensity_jitter or intensity_scale/intensity_shift, not both")
            intensity_jitter = (intensity_scale or 0.0, intensity_shift or 0.0)
        if intensity_jitter is None:
            self.scale_range: Range = (1.0, 1.0)
            self.shift_range: Range = (0.0, 0.0)
        else:
            if len(intensity_jitter) != 2:
                raise FluosegError(f"intensity_jitter must be (scale_range, shift_range), got {intensity_jitter!r}")
            self.scale_range = _as_range(intensity_jitter[0], centre=1.0, name="the intensity scale range")
            self.shift_range = _as_range(intensity_jitter[1], centre=0.0, name="the intensity shift range")
        if rng is not None and seed is not None:
            raise FluosegError("give either rng or seed to the Augmenter, not both")
        self.flips = bool(flips)
        self.rot90 = bool(rot90)
        self.rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(seed if rng is None else rng)

    @property
    def jitters(self) -> bool:
        """Whether intensity jitter is on."""
        return self.scale_range != (1.0, 1.0) or self.shift_range != (0.0, 0.0)

    def symmetries(self, square: bool = True) -> tuple[int, ...]:
        """Symmetry indices this augmenter draws from, for a square patch or not."""
        if self.rot90 and square:
            return tuple(range(8)) if self.flips else (0, 1, 2, 3)
        # Without quarter turns: identity, half turn (only as flip+flip or as a rotation),
        # and the two mirrors (index 4 = left-right, 6 = up-down).
        if self.flips:
            return (0, 2, 4, 6)
        return (0, 2) if self.rot90 else (0,)

    def draw(self, n_channels: int, *, square: bool = True) -> Augmentation:
        """Draw one augmentation for an image with ``n_channels`` channels."""
        choices = self.symmetries(square)
        symmetry = choices[int(self.rng.integers(len(choices)))] if len(choices) > 1 else 0
        if self.jitters:
            scale = self.rng.uniform(*self.scale_range, n_channels)
            shift = self.rng.uniform(*self.shift_range, n_channels)
        else:
            scale, shift = np.ones(n_channels), np.zeros(n_channels)
        return Augmentation(symmetry=symmetry, scale=tuple(scale.tolist()), shift=tuple(shift.tolist()))

    def apply(self, image: np.ndarray, targets: Sequence[np.ndarray], augmentation: Augmentation
              ) -> tuple[np.ndarray, list[np.ndarray]]:
        """Apply a drawn :class:`Augmentation` to an image and its targets (see :meth:`__call__`)."""
        image = np.asarray(image)
        out = dihedral(image, augmentation.symmetry)
        moved = [dihedral(np.asarray(t), augmentation.symmetry) for t in targets]
        if augmentation.scale != (1.0,) * len(augmentation.scale) or any(augmentation.shift):
            present = np.any(out.reshape(out.shape[0], -1) != 0, axis=1)
            shape = (-1,) + (1,) * (out.ndim - 1)
            scale = np.where(present, augmentation.scale, 1.0).astype(np.float32).reshape(shape)
            shift = np.where(present, augmentation.shift, 0.0).astype(np.float32).reshape(shape)
            dtype = out.dtype if np.issubdtype(out.dtype, np.floating) else np.float32
            out = (out * scale + shift).astype(dtype, copy=False)
        return out, moved

    def __call__(self, image: np.ndarray, targets: Sequence[np.ndarray] = ()) -> tuple[np.ndarray, list[np.ndarray]]:
        """Augment a ``(C, H, W)`` image and its aligned targets together.

        Parameters
        ----------
        image
            ``(C, H, W)`` patch (``(C, Z, H, W)`` works too: z is left alone).
        targets
            ``(n, h, w)`` masks or maps, ``(h, w)`` labels or weight maps. They get exactly
            the image's geometric transform and no intensity change. A target may be
            smaller than the image when it is the centred output window of a
            valid-convolution network (``H - h`` and ``W - w`` even): flips and quarter
            turns act about each array's centre, so centred windows stay aligned.

        Returns
        -------
        tuple
            The augmented image (float32 unless it was another float type) and the list of
            transformed targets, all C-contiguous copies.

        Raises
        ------
        FluosegError
            When a target is not centred on the image (odd size difference, or larger).
        """
        image = np.asarray(image)
        if image.ndim < 3:
            raise FluosegError(f"an image patch must be channel-first (C, H, W), got shape {image.shape}")
        square = image.shape[-1] == image.shape[-2]
        for t in targets:
            size = tuple(np.shape(t)[-2:])
            difference = [a - b for a, b in zip(image.shape[-2:], size)]
            if np.ndim(t) < 2 or any(d < 0 or d % 2 for d in difference):
                raise FluosegError(f"a target of shape {np.shape(t)} is not a centred window of the image patch "
                                   f"{image.shape}: its last two axes must be as large or smaller by an even number")
            square = square and size[0] == size[1]
        # Quarter turns only when every array is square, or shapes would stop matching.
        augmentation = self.draw(image.shape[0], square=square)
        return self.apply(image, targets, augmentation)
