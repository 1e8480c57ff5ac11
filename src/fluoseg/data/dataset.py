"""Training data: samples prepared for the network and random patches drawn from them.

Each sample is read once, normalised with statistics of the *whole sample* (MS-ME Methods,
step 4), resampled to the working pixel size, and its channels are placed into the model's
marker slots by name. Patches are then cut on the fly: the input window is larger than the
output window by the network's margin, and the image is conceptually zero-padded by that
margin so border pixels are trained exactly as they are predicted (overlap-tile scheme).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from fluoseg.data.augment import Augmenter
from fluoseg.data.normalize import DEFAULT_PERCENTILES, compute_stats, normalize
from fluoseg.data.resample import resample_image, resample_labels, resample_mask, scale_factors
from fluoseg.data.sample import Sample
from fluoseg.errors import FluosegError
from fluoseg.instance.scale import estimate_diameter_from_labels, scale_factor
from fluoseg.markers import MarkerPanel, MarkerSelection



class TargetMaker(Protocol):
    """What sample preparation needs of a task (:class:`fluoseg.tasks.Task` provides it).

    Declared here so that data preparation does not depend on the task layer above it.
    """

    annotation_kind: str

    @property
    def target_diameter(self) -> float | None: ...

    @property
    def ignored_channels(self) -> tuple[str, ...]: ...

    def read_annotation(self, sample: Sample, spatial_shape: tuple[int, ...]) -> np.ndarray: ...

    def make_targets(self, annotation: np.ndarray, *, source: Any = None) -> dict[str, np.ndarray]: ...

    def sampling_map(self, targets: dict[str, np.ndarray]) -> np.ndarray: ...


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
    targets
        Spatial ``([Z], Y, X)`` target arrays by name, as the task defines them
        (e.g. ``classes`` for a class-index map, ``weights`` for a loss weight map).
    sampling_map
        ``([Z], Y, X)`` class-index map that foreground patch sampling aims at.
    scale
        Factor by which the sample was resampled in Y/X (pixel and object size), 1.0 if not.
    """

    id: str
    image: np.ndarray
    availability: np.ndarray
    targets: dict[str, np.ndarray]
    sampling_map: np.ndarray
    scale: float = 1.0


def prepare_sample(
    sample: Sample,
    *,
    panel: MarkerPanel,
    task: TargetMaker,
    normalization: str = "gaussian",
    percentiles: tuple[float, float] = DEFAULT_PERCENTILES,
    pixel_size_um: float | None = None,
) -> PreparedSample:
    """Read, normalise, resample and slot-arrange one annotated sample and build its targets.

    Resampling brings the sample to ``pixel_size_um`` when both are known, and, for an
    instance task with a target object diameter, further so that its objects have that mean
    diameter (Kromp et al.'s scale normalisation).
    """
    image = sample.read_image()
    raw = np.asarray(image.array)
    annotation = task.read_annotation(sample, image.spatial_shape)
    stats = compute_stats(raw, method=normalization, percentiles=percentiles)
    normalised = normalize(raw, stats, method=normalization)
    factors = [1.0] * len(image.spatial_shape)
    pixel_size = sample.pixel_size or image.pixel_size
    if pixel_size_um is not None and pixel_size is not None:
        factors = list(scale_factors(_per_axis(pixel_size, len(image.spatial_shape)), pixel_size_um))
    target_diameter = task.target_diameter
    if target_diameter and task.annotation_kind == "labels" and annotation.max() > 0:
        diameter = estimate_diameter_from_labels(annotation) * factors[-1]
        factors[-2:] = [f * scale_factor(diameter, target_diameter) for f in factors[-2:]]
    if any(abs(f - 1.0) > 1e-6 for f in factors):
        normalised = resample_image(normalised, factors)
        resample = {"labels": resample_labels, "mask": resample_mask, "image": resample_image}[task.annotation_kind]
        annotation = resample(annotation, factors)
    # Channels a task predicts (in-silico labelling targets) are never network inputs, and
    # markers left out of the model's panel (data.markers) are dropped.
    ignored = set(task.ignored_channels) | {n for n in sample.channel_names if n not in panel.names}
    selection = MarkerSelection.resolve(panel, sample.channel_names, ignore=ignored,
                                        use=[m for m in sample.usable_markers if m not in ignored],
                                        source=str(sample.image_path))
    slots, availability = selection.arrange(normalised, source=str(sample.image_path)), selection.availability
    targets = task.make_targets(annotation, source=str(sample.image_path))
    return PreparedSample(id=sample.id, image=slots, availability=availability, targets=targets,
                          sampling_map=task.sampling_map(targets), scale=float(factors[-1]))


def _per_axis(pixel_size: tuple[float, ...], n_axes: int) -> tuple[float, ...]:
    """Expand an isotropic pixel size to one value per spatial axis (z keeps its own if given)."""
    if len(pixel_size) == n_axes:
        return tuple(pixel_size)
    if len(pixel_size) == 1:
        return tuple(pixel_size) * n_axes
    if len(pixel_size) == 2 and n_axes == 3:
        return (1.0,) + tuple(pixel_size)  # 2D slices are processed independently: z untouched
    raise FluosegError(f"pixel size {pixel_size} does not fit {n_axes} spatial axes")


class PatchSampler:
    """Draws random training patches (input window, availability, output target windows).

    Parameters
    ----------
    samples
        Prepared training samples.
    input_size, output_size
        Network input and output window sizes; their difference is twice the margin by
        which images are zero-padded.
    fill
        Value of each target outside the image (the loss ignores such pixels).
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
        fill: dict[str, float],
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
        self.fill = fill
        self.foreground_fraction = foreground_fraction
        self.augmenter = augmenter
        self.rng = rng
        self._foreground = [self._class_pixels(s.sampling_map) for s in self.samples]

    @staticmethod
    def _class_pixels(classes: np.ndarray) -> list[np.ndarray]:
        flat = classes.ravel()
        found = [np.flatnonzero(flat == c) for c in range(1, int(flat.max(initial=0)) + 1)]
        return [pixels for pixels in found if pixels.size]

    def _window_origin(self, index: int) -> tuple[int, ...]:
        """Top-left (and z) of the output window in target coordinates."""
        spatial = self.samples[index].sampling_map.shape
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

    def draw(self) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """One patch: image ``(K, P, P)``, availability ``(K,)``, targets ``{name: (O, O)}``."""
        index = int(self.rng.integers(len(self.samples)))
        sample = self.samples[index]
        origin = self._window_origin(index)
        z, (y, x) = origin[:-2], origin[-2:]
        image = sample.image[(slice(None), *z)] if z else sample.image
        window = cut_window(image, y - self.margin, x - self.margin, self.input_size, fill=0.0)
        names = list(sample.targets)
        cut = [cut_window((sample.targets[n][z] if z else sample.targets[n])[None], y, x, self.output_size,
                          fill=self.fill.get(n, 0))[0] for n in names]
        if self.augmenter is not None:
            window, cut = self.augmenter(window, cut)
        targets = {n: np.ascontiguousarray(t) for n, t in zip(names, cut)}
        return np.ascontiguousarray(window, np.float32), sample.availability, targets

    def reseeded(self, rng: np.random.Generator) -> PatchSampler:
        """A sampler of the same patches drawn from ``rng`` (its augmenter too); ``self`` is left as it is."""
        twin = copy.copy(self)
        twin.rng = rng
        if self.augmenter is not None:
            twin.augmenter = copy.copy(self.augmenter)
            twin.augmenter.rng = rng
        return twin

    def batch(self, size: int) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """Stack ``size`` patches into batch arrays."""
        patches = [self.draw() for _ in range(size)]
        images = np.stack([p[0] for p in patches])
        availability = np.stack([p[1] for p in patches])
        targets = {n: np.stack([p[2][n] for p in patches]) for n in patches[0][2]}
        return images, availability, targets


def cut_window(array: np.ndarray, y: int, x: int, size: int, *, fill: float) -> np.ndarray:
    """A ``(C, size, size)`` window at ``(y, x)``, filled with ``fill`` where it leaves the array."""
    channels, height, width = array.shape
    out = np.full((channels, size, size), fill, dtype=array.dtype)
    y0, x0 = max(y, 0), max(x, 0)
    y1, x1 = min(y + size, height), min(x + size, width)
    if y1 > y0 and x1 > x0:
        out[:, y0 - y : y1 - y, x0 - x : x1 - x] = array[:, y0:y1, x0:x1]
    return out
