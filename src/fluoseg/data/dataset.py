"""Training data: samples prepared for the network and random patches drawn from them.

Each sample is read once, normalised with statistics of the *whole sample* (MS-ME Methods,
step 4), resampled to the working pixel size, and its channels are placed into the model's
marker slots by name. Patches are then cut on the fly: the input window is larger than the
output window by the network's margin, and the image is conceptually zero-padded by that
margin so border pixels are trained exactly as they are predicted (overlap-tile scheme).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fluoseg.data.augment import Augmenter
from fluoseg.data.normalize import compute_stats, normalize
from fluoseg.data.resample import resample_image, resample_mask, scale_factors
from fluoseg.data.sample import Sample
from fluoseg.errors import FluosegError
from fluoseg.markers import MarkerPanel

IGNORE_INDEX = -1
"""Target value of pixels that carry no annotation (outside the image); excluded from the loss."""


@dataclass
class PreparedSample:
    """A sample ready for patch sampling.

    Attributes
    ----------
    id
        Sample id.
    image
        ``(K, [Z], Y, X)`` float32, normalised, in marker-slot order, zeros in missing slots.
    availability
        ``(K,)`` float32 0/1: which slots carry a marker.
    target
        ``([Z], Y, X)`` int64 class index: 0 background, ``c + 1`` for class ``c``.
    """

    id: str
    image: np.ndarray
    availability: np.ndarray
    target: np.ndarray


def masks_to_target(masks: np.ndarray, classes: Sequence[str], *, source: object = None) -> np.ndarray:
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
            path=source if isinstance(source, str) else None,
        )
    target = np.zeros(masks.shape[1:], dtype=np.int64)
    for index in range(masks.shape[0]):
        target[masks[index] > 0] = index + 1
    return target


def prepare_sample(
    sample: Sample,
    *,
    panel: MarkerPanel,
    classes: Sequence[str],
    normalization: str = "gaussian",
    percentiles: tuple[float, float] = (1.0, 99.8),
    pixel_size_um: float | None = None,
) -> PreparedSample:
    """Read, normalise, resample and slot-arrange one annotated sample."""
    image = sample.read_image()
    raw = np.asarray(image.array)
    masks = sample.read_masks(list(classes), image.spatial_shape)
    stats = compute_stats(raw, method=normalization, percentiles=percentiles)
    normalised = normalize(raw, stats, method=normalization)
    pixel_size = sample.pixel_size or image.pixel_size
    if pixel_size_um is not None and pixel_size is not None:
        factors = scale_factors(_per_axis(pixel_size, len(image.spatial_shape)), pixel_size_um)
        if any(abs(f - 1.0) > 1e-6 for f in factors):
            normalised = resample_image(normalised, factors)
            masks = resample_mask(masks, factors)
    slots, availability = panel.arrange(
        normalised, sample.channel_names, use=sample.usable_markers, source=str(sample.image_path)
    )
    target = masks_to_target(masks, classes, source=str(sample.image_path))
    return PreparedSample(id=sample.id, image=slots, availability=availability, target=target)


def _per_axis(pixel_size: tuple[float, ...], n_axes: int) -> tuple[float, ...]:
    """Expand an isotropic pixel size to one value per spatial axis (z keeps its own if given)."""
    if len(pixel_size) == n_axes:
        return tuple(pixel_size)
    if len(pixel_size) == 1:
        return tuple(pixel_size) * n_axes
    if len(pixel_size) == 2 and n_axes == 3:
        return (1.0,) + tuple(pixel_size)  # 2D slices are processed independently: z untouched
    raise FluosegError(f"pixel size {pixel_size} does not fit {n_axes} spatial axes")


def class_pixel_counts(samples: Sequence[PreparedSample], n_classes: int) -> np.ndarray:
    """Pixels per class index (background first) over all training samples."""
    counts = np.zeros(n_classes + 1, dtype=np.int64)
    for sample in samples:
        counts += np.bincount(sample.target.ravel(), minlength=n_classes + 1)[: n_classes + 1]
    return counts


class PatchSampler:
    """Draws random training patches (input window, availability, output target window).

    Parameters
    ----------
    samples
        Prepared training samples.
    input_size, output_size
        Network input and output window sizes; their difference is twice the margin by
        which images are zero-padded.
    foreground_fraction
        Probability that a patch is centred on a random pixel of a randomly chosen class
        present in the sample (rare classes such as arteries are otherwise seldom seen).
    augmenter
        Random flips, rotations and intensity jitter; ``None`` for none.
    rng
        Source of randomness; the sampler is deterministic given it.
    """

    def __init__(
        self,
        samples: Sequence[PreparedSample],
        *,
        input_size: int,
        output_size: int,
        foreground_fraction: float,
        augmenter: Augmenter | None,
        rng: np.random.Generator,
    ) -> None:
        if not samples:
            raise FluosegError("no training samples; check the manifest and the split")
        self.samples = list(samples)
        self.input_size = input_size
        self.output_size = output_size
        self.margin = (input_size - output_size) // 2
        self.foreground_fraction = foreground_fraction
        self.augmenter = augmenter
        self.rng = rng
        self._foreground = [self._class_pixels(s.target) for s in self.samples]

    @staticmethod
    def _class_pixels(target: np.ndarray) -> list[np.ndarray]:
        flat = target.ravel()
        return [np.flatnonzero(flat == c) for c in range(1, int(flat.max(initial=0)) + 1) if (flat == c).any()]

    def _window_origin(self, index: int) -> tuple[int, ...]:
        """Top-left (and z) of the output window in target coordinates."""
        target = self.samples[index].target
        spatial = target.shape
        size = self.output_size
        classes = self._foreground[index]
        if classes and self.rng.random() < self.foreground_fraction:
            pixels = classes[self.rng.integers(len(classes))]
            centre = np.unravel_index(pixels[self.rng.integers(len(pixels))], spatial)
            origin = [int(c) for c in centre[:-2]] + [int(c) - size // 2 for c in centre[-2:]]
        else:
            origin = [int(self.rng.integers(n)) for n in spatial[:-2]]
            origin += [int(self.rng.integers(max(n - size, 0) + 1)) for n in spatial[-2:]]
        for axis in (-2, -1):
            origin[axis] = int(np.clip(origin[axis], 0, max(spatial[axis] - size, 0)))
        return tuple(origin)

    def draw(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One patch: image ``(K, P, P)``, availability ``(K,)``, target ``(O, O)`` int64."""
        index = int(self.rng.integers(len(self.samples)))
        sample = self.samples[index]
        origin = self._window_origin(index)
        z, (y, x) = origin[:-2], origin[-2:]
        image = sample.image[(slice(None), *z)] if z else sample.image
        target = sample.target[z] if z else sample.target
        window = cut_window(image, y - self.margin, x - self.margin, self.input_size, fill=0.0)
        labels = cut_window(target[None], y, x, self.output_size, fill=IGNORE_INDEX)[0]
        if self.augmenter is not None:
            window, (labels,) = self.augmenter(window, [labels])
        return np.ascontiguousarray(window, np.float32), sample.availability, np.ascontiguousarray(labels)

    def batch(self, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Stack ``size`` patches into batch arrays."""
        patches = [self.draw() for _ in range(size)]
        return tuple(np.stack(parts) for parts in zip(*patches))  # type: ignore[return-value]


def cut_window(array: np.ndarray, y: int, x: int, size: int, *, fill: float) -> np.ndarray:
    """A ``(C, size, size)`` window at ``(y, x)``, filled with ``fill`` where it leaves the array."""
    channels, height, width = array.shape
    out = np.full((channels, size, size), fill, dtype=array.dtype)
    y0, x0 = max(y, 0), max(x, 0)
    y1, x1 = min(y + size, height), min(x + size, width)
    if y1 > y0 and x1 > x0:
        out[:, y0 - y : y1 - y, x0 - x : x1 - x] = array[:, y0:y1, x0:x1]
    return out
