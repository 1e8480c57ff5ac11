"""Artificial training images built from real nuclei, after Kromp et al. (2021).

Kromp et al., "Evaluation of deep learning architectures for complex immunofluorescence
nuclear image segmentation", Methods, *Artificial image generation*: instead of synthetic
nuclei on nucleus-free patches, they model "a realistic background" and place "cropped and
augmented nuclei" of a real annotated image on it, densely enough that nuclei aggregate and
overlap, "forcing the deep learning architectures ... to learn how to split aggregated
nuclei". This module implements that generator without the final pix2pix refinement:

1. **Source.** One annotated natural image (``(Y, X)`` or ``(C, Y, X)``) with its instance
   labels; with several sources each artificial image draws one at random, and all its
   background and nuclei come from that source.
2. **Background.** The binarised annotation is dilated with a disk of radius
   ``background_radius`` (paper: "circle-shaped structuring element of size 15") so the
   blurred halo of nuclei brighter than the mean background is excluded; the complement is
   the *background region*. Every pixel of the new patch gets the value (all channels) of a
   pixel drawn uniformly, with replacement, from that region, so the background intensity
   distribution matches the source's.
3. **Nuclei.** Every annotated nucleus is cropped (its pixels and mask, bounding box);
   nuclei touching the source image edge are skipped when others exist (their straight cut
   would look unnatural in the middle of a patch). Each placement draws a random nucleus and
   augments it (:class:`NucleusAugmentation`): flips, a rotation by an arbitrary angle, an
   elastic deformation and an intensity change; the mask undergoes the same geometry.
4. **Placement.** A ``gy x gx`` grid is laid over the patch; nodes sit at the centres of the
   grid cells, ``((i + 1/2) H / gy, (j + 1/2) W / gx)``. Nodes are visited in random order;
   at each one a nucleus is placed with probability ``place_probability``, centred on the
   node plus a uniform random integer offset in ``[-max_offset, max_offset]`` along Y and X.
   "The larger the offset, the higher the probability to overlap with a neighbor nucleus."
   Nuclei running over the patch edge are clipped.
5. **Overlap.** Where a new nucleus overlaps nuclei already placed, its pixels either
   *replace* the old ones, or are *added*: ``old + add_factor * new`` (the paper: "added to
   the part of the formerly present nucleus multiplied with a constant value between 0 and
   1"), clipped to the dtype's range. The paper decides at random per nucleus
   (``overlap_mode="random"``, the default); ``"replace"``/``"add"`` force one behaviour.
   Outside overlaps nucleus pixels always replace the background.
6. **Labels.** The label patch gets the same placements, always replacing (the later nucleus
   wins; the paper does not model fuzzy masks). Nuclei completely covered by later ones are
   dropped and ids are renumbered ``1..N`` in placement order. A nucleus partly covered may
   be left in several pieces; they keep one id, like an occluded nucleus in an annotation.

Everything is drawn from one ``numpy.random.Generator`` seeded by ``seed``, so a call is
deterministic; the overlap coin is drawn for every placement whatever ``overlap_mode`` is,
so ``"replace"`` and ``"add"`` with the same seed give the same layout and labels and differ
only where nuclei overlap.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from scipy import ndimage as ndi

from fluoseg.errors import FluosegError

__all__ = [
    "NucleusAugmentation",
    "background_region",
    "generate_artificial_images",
    "write_artificial_images",
]

OverlapMode = Literal["random", "replace", "add"]


@dataclass(frozen=True)
class NucleusAugmentation:
    """Random transformations applied to every placed nucleus (image and mask alike).

    Attributes
    ----------
    flip
        Mirror along Y and along X, each with probability 1/2.
    rotate
        Rotate by an angle drawn uniformly from [0°, 360°) (bilinear; the mask is rotated
        bilinearly and thresholded at 1/2, which keeps its outline smooth).
    elastic_probability
        Probability of an elastic deformation (Simard et al. 2003): a random displacement
        field of white noise smoothed by a Gaussian of ``elastic_sigma`` pixels and scaled
        so that its largest displacement is ``elastic_magnitude`` pixels.
    elastic_magnitude, elastic_sigma
        Largest displacement and smoothness of the elastic field, in pixels.
    intensity_range
        The nucleus's intensities are multiplied by a factor drawn uniformly from this range
        (Kromp et al. model the varying nuclear intensity within a field of view).
    """

    flip: bool = True
    rotate: bool = True
    elastic_probability: float = 0.5
    elastic_magnitude: float = 2.0
    elastic_sigma: float = 3.0
    intensity_range: tuple[float, float] = (0.7, 1.3)

    def validate(self) -> None:
        """Raise :class:`FluosegError` for out-of-range settings."""
        if not 0.0 <= self.elastic_probability <= 1.0:
            raise FluosegError(f"elastic_probability must lie in [0, 1], got {self.elastic_probability!r}")
        if not (self.elastic_magnitude >= 0 and self.elastic_sigma > 0):
            raise FluosegError("elastic_magnitude must be >= 0 and elastic_sigma > 0 (pixels), got "
                               f"{self.elastic_magnitude!r} and {self.elastic_sigma!r}")
        low, high = self.intensity_range
        if not (0 <= low <= high and np.isfinite(high)):
            raise FluosegError(f"intensity_range must be (low, high) with 0 <= low <= high, got {self.intensity_range!r}")


@dataclass(frozen=True)
class _Nucleus:
    image: np.ndarray  # (C, h, w) float64; values outside the mask copy the nearest nucleus pixel
    mask: np.ndarray  # (h, w) bool


@dataclass(frozen=True)
class _Source:
    background: np.ndarray  # (C, n) values of the allowed background pixels
    nuclei: tuple[_Nucleus, ...]


def background_region(labels: Any, *, radius: float = 15.0) -> np.ndarray:
    """Pixels farther than ``radius`` from every annotated object: the background to sample.

    Equals the complement of the foreground (label > 0) dilated by a disk of radius
    ``radius`` (``skimage.morphology.disk``: offsets with ``dy² + dx² <= radius²``), computed
    with a Euclidean distance transform.

    Parameters
    ----------
    labels
        Label image or binary mask ``(Y, X)``.
    radius
        Disk radius in pixels (Kromp et al.: 15); 0 keeps every non-object pixel.

    Returns
    -------
    numpy.ndarray
        Boolean mask of the allowed background.
    """
    foreground = np.asarray(labels) > 0
    if not foreground.any():
        return np.ones(foreground.shape, bool)
    return ndi.distance_transform_edt(~foreground) > radius


def _as_list(values: Any, name: str) -> list[np.ndarray]:
    if isinstance(values, np.ndarray):
        return [values]
    if isinstance(values, Sequence) and not isinstance(values, (str, bytes)):
        return [np.asarray(v) for v in values]
    raise FluosegError(f"{name} must be an array or a list of arrays, got {type(values).__name__}")


def _fill_outside(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Copy the nearest mask pixel's values outside the mask (so interpolation keeps the rim bright)."""
    if mask.all():
        return image
    _, (iy, ix) = ndi.distance_transform_edt(~mask, return_indices=True)
    return image[:, iy, ix]


def _prepare_source(image: np.ndarray, labels: np.ndarray, index: int, radius: float) -> _Source:
    where = f"source image {index}"
    if image.ndim == 2:
        image = image[None]
    if image.ndim != 3:
        raise FluosegError(f"{where} has shape {image.shape}; expected (Y, X) or (C, Y, X)")
    if not np.issubdtype(image.dtype, np.number) or image.dtype == bool:
        raise FluosegError(f"{where} has dtype {image.dtype}; expected numbers")
    if labels.ndim != 2 or labels.shape != image.shape[1:]:
        raise FluosegError(f"labels {index} have shape {labels.shape} but image {index} has spatial shape "
                           f"{image.shape[1:]}; pass (Y, X) labels of the image's size")
    if labels.dtype == bool or not np.issubdtype(labels.dtype, np.integer) or (labels < 0).any():
        raise FluosegError(f"labels {index} must hold non-negative integers (0 = background)")
    allowed = background_region(labels, radius=radius)
    if not allowed.any():
        raise FluosegError(f"{where} has no pixel farther than {radius} px from every nucleus; "
                           "lower background_radius or use a sparser image")
    data = image.astype(np.float64)
    ids, compact = np.unique(labels, return_inverse=True)
    compact = compact.reshape(labels.shape) + (1 if ids[0] > 0 else 0)
    nuclei, edge_nuclei = [], []
    height, width = labels.shape
    for k, box in enumerate(ndi.find_objects(compact), start=1):
        if box is None:
            continue
        mask = compact[box] == k
        nucleus = _Nucleus(image=_fill_outside(data[(slice(None),) + box], mask), mask=mask)
        touches_edge = box[0].start == 0 or box[1].start == 0 or box[0].stop == height or box[1].stop == width
        (edge_nuclei if touches_edge else nuclei).append(nucleus)
    nuclei = nuclei or edge_nuclei
    if not nuclei:
        raise FluosegError(f"labels {index} hold no nucleus; every source needs annotated nuclei")
    return _Source(background=data[:, allowed], nuclei=tuple(nuclei))


def _bounding_crop(image: np.ndarray, mask: np.ndarray) -> _Nucleus | None:
    rows, cols = np.any(mask, axis=1), np.any(mask, axis=0)
    if not rows.any():
        return None
    y0, y1 = np.flatnonzero(rows)[[0, -1]]
    x0, x1 = np.flatnonzero(cols)[[0, -1]]
    return _Nucleus(image=image[:, y0 : y1 + 1, x0 : x1 + 1], mask=mask[y0 : y1 + 1, x0 : x1 + 1])


def _augment(nucleus: _Nucleus, aug: NucleusAugmentation, rng: np.random.Generator) -> _Nucleus | None:
    """A randomly transformed copy of the nucleus (None if its mask vanished)."""
    image, mask = nucleus.image, nucleus.mask.astype(np.float64)
    # Drawn whatever the flip/rotate settings, so switching one off leaves the rest unchanged.
    flip_y, flip_x, angle = rng.random() < 0.5, rng.random() < 0.5, rng.uniform(0.0, 360.0)
    elastic = rng.random() < aug.elastic_probability
    gain = rng.uniform(*aug.intensity_range)
    if aug.flip and flip_y:
        image, mask = image[:, ::-1], mask[::-1]
    if aug.flip and flip_x:
        image, mask = image[:, :, ::-1], mask[:, ::-1]
    if aug.rotate:
        image = ndi.rotate(image, angle, axes=(2, 1), reshape=True, order=1, mode="nearest")
        mask = ndi.rotate(mask, angle, axes=(1, 0), reshape=True, order=1, mode="constant", cval=0.0)
    if elastic and aug.elastic_magnitude > 0:
        pad = int(np.ceil(aug.elastic_magnitude)) + 1
        image = np.pad(image, ((0, 0), (pad, pad), (pad, pad)), mode="edge")
        mask = np.pad(mask, pad)
        shape = mask.shape
        fields = []
        for _ in range(2):
            field = ndi.gaussian_filter(rng.standard_normal(shape), aug.elastic_sigma)
            fields.append(field * (aug.elastic_magnitude / max(np.abs(field).max(), 1e-12)))
        grid = np.mgrid[: shape[0], : shape[1]].astype(np.float64)
        coords = grid + np.stack(fields)
        image = np.stack([ndi.map_coordinates(channel, coords, order=1, mode="nearest") for channel in image])
        mask = ndi.map_coordinates(mask, coords, order=1, mode="constant", cval=0.0)
    return _bounding_crop(np.asarray(image) * gain, np.asarray(mask) > 0.5)


def _compose(source: _Source, rng: np.random.Generator, *, output_shape: tuple[int, int],
             grid: tuple[int, int], max_offset: int, place_probability: float,
             overlap_mode: OverlapMode, add_factor: float,
             aug: NucleusAugmentation) -> tuple[np.ndarray, np.ndarray]:
    height, width = output_shape
    n_channels = source.background.shape[0]
    picks = rng.integers(source.background.shape[1], size=height * width)
    image = source.background[:, picks].reshape(n_channels, height, width)
    labels = np.zeros(output_shape, np.int64)
    nodes = [((i + 0.5) * height / grid[0], (j + 0.5) * width / grid[1])
             for i in range(grid[0]) for j in range(grid[1])]
    next_id = 1
    for node in rng.permutation(len(nodes)):
        place = rng.random() < place_probability
        choice = int(rng.integers(len(source.nuclei)))
        dy, dx = (int(v) for v in rng.integers(-max_offset, max_offset + 1, size=2))
        add = rng.random() < 0.5 if overlap_mode == "random" else overlap_mode == "add"
        # All draws above happen in every mode, so "replace" and "add" share one layout.
        if not place:
            continue
        nucleus = _augment(source.nuclei[choice], aug, rng)
        if nucleus is None:
            continue
        h, w = nucleus.mask.shape
        top = int(round(nodes[node][0] + dy - h / 2))
        left = int(round(nodes[node][1] + dx - w / 2))
        oy0, ox0 = max(top, 0), max(left, 0)
        oy1, ox1 = min(top + h, height), min(left + w, width)
        if oy0 >= oy1 or ox0 >= ox1:
            continue
        crop = (slice(oy0 - top, oy1 - top), slice(ox0 - left, ox1 - left))
        mask = nucleus.mask[crop]
        if not mask.any():
            continue
        values = nucleus.image[(slice(None),) + crop]
        target = image[:, oy0:oy1, ox0:ox1]
        region_labels = labels[oy0:oy1, ox0:ox1]
        if add:
            overlap = mask & (region_labels > 0)
            target[:, mask & ~overlap] = values[:, mask & ~overlap]
            target[:, overlap] += add_factor * values[:, overlap]
        else:
            target[:, mask] = values[:, mask]
        region_labels[mask] = next_id
        next_id += 1
    # Renumber in placement order, dropping nuclei that later ones covered completely.
    present = np.unique(labels)
    lookup = np.zeros(next_id, np.int64)
    lookup[present] = np.arange(present.size) - (0 if present[0] == 0 else -1)
    return image, lookup[labels]


def _to_dtype(image: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.rint(image), info.min, info.max).astype(dtype)
    return image.astype(dtype)


def _check_pair(value: Any, name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, (int, np.integer)) else tuple(value)
    if len(pair) != 2 or any(int(v) != v or v < 1 for v in pair):
        raise FluosegError(f"{name} must be two whole numbers >= 1 (Y, X), got {value!r}")
    return int(pair[0]), int(pair[1])


def generate_artificial_images(images: Any, labels: Any, *, n_images: int, grid: int | Sequence[int] = (5, 5),
                               max_offset: int | None = None, overlap_mode: OverlapMode = "random",
                               add_factor: float = 0.5, output_shape: Sequence[int] = (256, 256),
                               place_probability: float = 0.75, background_radius: float = 15.0,
                               augmentation: NucleusAugmentation | None = None,
                               seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Generate Kromp et al.'s artificial training images from annotated natural images.

    See the module notes for the exact procedure.

    Parameters
    ----------
    images
        One image ``(Y, X)`` or ``(C, Y, X)``, or a list of them (the sources).
    labels
        The matching instance label image(s) ``(Y, X)``.
    n_images
        Number of artificial images to generate.
    grid
        Grid nodes ``(gy, gx)`` (or one int for a square grid); Kromp et al. use 3x3, 5x5, ...
        At most ``gy * gx`` nuclei are placed per image.
    max_offset
        Largest random shift of a nucleus from its node along Y and X, in pixels; it
        controls how often neighbours overlap. None: a quarter of the smaller grid spacing.
    overlap_mode
        ``"random"`` (paper: replace or add, decided per nucleus with probability 1/2),
        ``"replace"`` or ``"add"``.
    add_factor
        Factor in (0, 1] applied to a nucleus's pixels added over an existing nucleus.
    output_shape
        ``(H, W)`` of the artificial images (paper: 256 x 256).
    place_probability
        Probability that a nucleus is placed at a grid node.
    background_radius
        Radius in pixels of the disk by which the annotation is dilated before sampling
        background (paper: 15).
    augmentation
        Per-nucleus augmentation settings; None for the defaults of :class:`NucleusAugmentation`.
    seed
        Seed of the random generator; equal arguments and seed give equal images.

    Returns
    -------
    list of (numpy.ndarray, numpy.ndarray)
        ``(image, labels)`` pairs: the image with the source's layout (``(H, W)`` or
        ``(C, H, W)``) and dtype (integers clipped to their range), and ``uint16`` labels
        (``uint32`` beyond 65,535 nuclei) with ids ``1..N``.

    Raises
    ------
    FluosegError
        For mismatched or invalid sources, a source without nuclei or without background
        outside the dilated annotation, or parameters out of range.
    """
    image_list, label_list = _as_list(images, "images"), _as_list(labels, "labels")
    if len(image_list) != len(label_list) or not image_list:
        raise FluosegError(f"got {len(image_list)} image(s) and {len(label_list)} label image(s); "
                           "pass at least one image with one label image each")
    if int(n_images) != n_images or n_images < 0:
        raise FluosegError(f"n_images must be a whole number >= 0, got {n_images!r}")
    grid_yx = _check_pair(grid, "grid")
    out_shape = _check_pair(output_shape, "output_shape")
    if max_offset is None:
        max_offset = int(0.25 * min(out_shape[0] / grid_yx[0], out_shape[1] / grid_yx[1]))
    if int(max_offset) != max_offset or max_offset < 0:
        raise FluosegError(f"max_offset must be a whole number >= 0 (pixels), got {max_offset!r}")
    if overlap_mode not in ("random", "replace", "add"):
        raise FluosegError(f"overlap_mode must be 'random', 'replace' or 'add', got {overlap_mode!r}")
    if not 0.0 < add_factor <= 1.0:
        raise FluosegError(f"add_factor must lie in (0, 1], got {add_factor!r}")
    if not 0.0 <= place_probability <= 1.0:
        raise FluosegError(f"place_probability must lie in [0, 1], got {place_probability!r}")
    if not (np.isfinite(background_radius) and background_radius >= 0):
        raise FluosegError(f"background_radius must be a number >= 0 (pixels), got {background_radius!r}")
    aug = augmentation if augmentation is not None else NucleusAugmentation()
    aug.validate()

    sources = [_prepare_source(img, lab, i, background_radius)
               for i, (img, lab) in enumerate(zip(image_list, label_list))]
    rng = np.random.default_rng(seed)
    results = []
    for _ in range(int(n_images)):
        which = int(rng.integers(len(sources)))
        image, lab = _compose(sources[which], rng, output_shape=out_shape, grid=grid_yx,
                              max_offset=int(max_offset), place_probability=place_probability,
                              overlap_mode=overlap_mode, add_factor=float(add_factor), aug=aug)
        image = _to_dtype(image, image_list[which].dtype)
        if image_list[which].ndim == 2:
            image = image[0]
        results.append((image, lab.astype(np.uint16 if lab.max() <= np.iinfo(np.uint16).max else np.uint32)))
    return results


def write_artificial_images(folder: str | Path, pairs: Sequence[tuple[np.ndarray, np.ndarray]], *,
                            prefix: str = "kromp", overwrite: bool = False) -> list[tuple[Path, Path]]:
    """Write generated pairs as TIFFs: ``folder/images/<prefix>_NNNN.tif`` and ``folder/labels/...``.

    The layout matches the annotated data sets fluoseg reads (``images/<id>.tif`` with
    ``labels/<id>.tif``), so artificial images can be listed next to natural ones.

    Parameters
    ----------
    folder
        Output folder (created if needed).
    pairs
        ``(image, labels)`` pairs from :func:`generate_artificial_images`.
    prefix
        File name stem before the four-digit index.
    overwrite
        Replace existing files; otherwise an existing file is an error.

    Returns
    -------
    list of (Path, Path)
        The image and label path of every pair.

    Raises
    ------
    FluosegError
        If a file exists and ``overwrite`` is False, or a pair is malformed.
    """
    from fluoseg.io import write_image

    folder = Path(folder)
    if not prefix or any(c in prefix for c in "/\\"):
        raise FluosegError(f"prefix must be a plain file name stem, got {prefix!r}")
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "labels").mkdir(parents=True, exist_ok=True)
    written = []
    for index, pair in enumerate(pairs):
        if len(pair) != 2:
            raise FluosegError(f"pair {index} must be (image, labels)")
        image, lab = np.asarray(pair[0]), np.asarray(pair[1])
        if image.ndim not in (2, 3) or lab.ndim != 2 or image.shape[-2:] != lab.shape:
            raise FluosegError(f"pair {index} has image shape {image.shape} and label shape {lab.shape}; "
                               "expected (Y, X) or (C, Y, X) with (Y, X) labels")
        name = f"{prefix}_{index:04d}.tif"
        image_path = write_image(folder / "images" / name, image, axes="YX" if image.ndim == 2 else "CYX",
                                 overwrite=overwrite)
        label_path = write_image(folder / "labels" / name, lab, axes="YX", overwrite=overwrite)
        written.append((Path(image_path), Path(label_path)))
    return written
