"""A fast simulator of multiplexed fluorescence images of epithelial tissue with cell labels.

Tissue islands are tessellated into touching cells (a Voronoi tessellation of jittered
hexagonal seeds, warped by a smooth random displacement so outlines are curved); each cell
holds one nucleus. Markers (channels) stain different compartments of the same cells, so a
model can segment the cells from different marker subsets with different difficulty:

- ``DAPI``: nuclei, with chromatin texture (nuclear marker);
- ``ECAD``: the cell outline, on both sides of every shared border (membrane marker);
- ``CK``: the cytoplasm, dark in the nucleus (cytoplasm marker);
- ``CD45``: bright blobs placed independently of the cells, a distractor that carries no
  information about the outlines;
- ``KI67``: speckles in the nuclei of a share of the cells (optional second nuclear marker).

Expression varies per cell (log-normal levels), and the imaging adds background, uneven
illumination, blur, shot and read noise. All of it is set by a
:class:`~fluoseg.data.synth.cell_domain.CellDomain`. Labels are exact: ``cells`` and
``nuclei`` are instance label images in which a nucleus carries the id of its cell.
Every marker is drawn whatever ``markers`` asks for, so a subset of markers gives exactly
those channels of the full sample.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from fluoseg.data.synth.cell_domain import CELL_MARKERS, DEFAULT_CELL_MARKERS, CellDomain, cell_domain
from fluoseg.data.synth.fields import point_spots, smooth_field
from fluoseg.errors import FluosegError

__all__ = ["SimulatedCells", "label_borders", "simulate_cells"]

_MAX_REACH = 0.7
"""Largest distance of a cell pixel from its seed, in cell diameters (rounds cells at tissue edges)."""
_MIN_CELL_SHARE = 0.12
"""Cells (or fragments at the image border) smaller than this share of a mean cell are dropped."""


@dataclass(frozen=True)
class SimulatedCells:
    """One simulated multiplexed image.

    Attributes
    ----------
    image
        ``(K, Y, X)`` uint8 or float32, one channel per marker in ``markers`` order.
    cells
        ``(Y, X)`` int32 cell instance labels, 0 background, ids ``1..N`` without gaps.
    nuclei
        ``(Y, X)`` int32 nucleus labels; a nucleus has the id of the cell holding it.
    markers
        Channel names.
    domain
        The settings the image was drawn from.
    """

    image: np.ndarray
    cells: np.ndarray
    nuclei: np.ndarray
    markers: tuple[str, ...]
    domain: CellDomain

    @property
    def pixel_size(self) -> tuple[float, float]:
        """``(y, x)`` pixel size in µm."""
        return (self.domain.pixel_size_um, self.domain.pixel_size_um)


def label_borders(labels: np.ndarray) -> np.ndarray:
    """Pixels of an object that have a 4-neighbour with another label (background included).

    Both sides of a border between two touching objects are border pixels; background
    pixels never are.
    """
    differs = np.zeros(labels.shape, bool)
    differs[1:, :] |= labels[1:, :] != labels[:-1, :]
    differs[:-1, :] |= labels[:-1, :] != labels[1:, :]
    differs[:, 1:] |= labels[:, 1:] != labels[:, :-1]
    differs[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    return differs & (labels != 0)


def _seeds(rng: np.random.Generator, shape: tuple[int, int], spacing: float) -> np.ndarray:
    """Cell centres ``(M, 2)``: a randomly rotated, shifted and jittered hexagonal lattice."""
    reach = float(np.hypot(*shape)) / 2 + spacing
    rows = np.arange(-reach, reach, spacing * np.sqrt(3) / 2)
    cols = np.arange(-reach, reach, spacing)
    grid_y, grid_x = np.meshgrid(rows, cols, indexing="ij")
    grid_x = grid_x + (np.arange(rows.size)[:, None] % 2) * spacing / 2  # every other row shifted: hexagons
    angle = rng.uniform(0, np.pi)
    points = np.stack([grid_y.ravel(), grid_x.ravel()], axis=1)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    points = points @ rotation.T + np.array(shape) / 2 + rng.uniform(0, spacing, 2)
    points += rng.uniform(-0.25, 0.25, points.shape) * spacing
    inside = np.all((points >= 0) & (points < np.array(shape) - 0.5), axis=1)
    return np.round(points[inside]).astype(int)


def _tessellate(rng: np.random.Generator, shape: tuple[int, int], domain: CellDomain) -> np.ndarray:
    """Touching cells with curved outlines inside tissue islands, on a canvas of ``shape``."""
    diameter = domain.cell_diameter
    if domain.tissue_fraction >= 1.0:
        tissue = np.ones(shape, bool)
    else:
        field = smooth_field(rng, shape, 2.5 * diameter, centred=True)
        tissue = field > np.quantile(field, 1.0 - domain.tissue_fraction)
    seeds = _seeds(rng, shape, diameter)
    marks = np.zeros(shape, np.int32)
    marks[seeds[:, 0], seeds[:, 1]] = np.arange(1, len(seeds) + 1)
    distance, (near_y, near_x) = ndi.distance_transform_edt(marks == 0, return_indices=True)
    # Looking the nearest seed up at smoothly displaced positions bends the straight
    # Voronoi edges into curved outlines, as in real epithelia.
    amplitude = 0.12 * diameter
    warp_y, warp_x = (
        np.clip(np.rint(grid + amplitude * smooth_field(rng, shape, 0.5 * diameter, centred=True)), 0, size - 1)
        .astype(int)
        for grid, size in zip(np.indices(shape), shape)
    )
    cells = marks[near_y[warp_y, warp_x], near_x[warp_y, warp_x]]
    cells[~tissue | (distance[warp_y, warp_x] > _MAX_REACH * diameter)] = 0
    return cells


def _largest_pieces(labels: np.ndarray) -> np.ndarray:
    """The labels with every object reduced to its largest 8-connected piece (ids kept)."""
    out = np.zeros_like(labels)
    for index, box in enumerate(ndi.find_objects(labels)):
        if box is None:
            continue
        mask = labels[box] == index + 1
        pieces, count = ndi.label(mask, structure=np.ones((3, 3), bool))
        if count > 1:
            mask = pieces == 1 + int(np.argmax(np.bincount(pieces.ravel())[1:]))
        out[box][mask] = index + 1
    return out


def _clean(cells: np.ndarray, min_area: float) -> np.ndarray:
    """Keep each cell's largest connected piece, drop small cells, renumber ``1..N``."""
    cells = _largest_pieces(cells)
    sizes = np.bincount(cells.ravel())
    keep = sizes >= min_area
    keep[0] = False
    lookup = np.zeros(sizes.size, cells.dtype)
    lookup[keep] = np.arange(1, int(keep.sum()) + 1)
    return lookup[cells]


def _nuclei(rng: np.random.Generator, cells: np.ndarray, ratio: float) -> np.ndarray:
    """One elliptic nucleus per cell, centred where the cell is thickest, 2 px inside its outline."""
    nuclei = np.zeros_like(cells)
    for index, box in enumerate(ndi.find_objects(cells)):
        if box is None:
            continue
        cell = np.pad(cells[box] == index + 1, 1)
        depth = ndi.distance_transform_edt(cell)
        centre = np.unravel_index(int(np.argmax(depth)), depth.shape)
        radius = ratio * np.sqrt(cell.sum() / np.pi) * rng.uniform(0.85, 1.15)
        aspect, angle = rng.uniform(0.7, 1.0), rng.uniform(0, np.pi)
        yy, xx = np.indices(cell.shape, dtype=np.float32)
        u = (yy - centre[0]) * np.cos(angle) + (xx - centre[1]) * np.sin(angle)
        v = -(yy - centre[0]) * np.sin(angle) + (xx - centre[1]) * np.cos(angle)
        inside = (u / radius) ** 2 + (v / (aspect * radius)) ** 2 <= 1.0
        # Keep a rim of cytoplasm and membrane: the nucleus stays 2 px inside the cell.
        nucleus = inside & (depth > 2.0)
        if not nucleus.any():
            nucleus[centre] = True
        nuclei[box][nucleus[1:-1, 1:-1]] = index + 1
    # Clipping the ellipse to the cell's inside can cut it in two in a concave cell.
    return _largest_pieces(nuclei)


def _texture(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Zero-mean, unit-variance fine texture (chromatin, keratin filaments)."""
    texture = ndi.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma)
    return texture / max(float(texture.std()), 1e-6)


def _signals(rng: np.random.Generator, cells: np.ndarray, nuclei: np.ndarray, domain: CellDomain
             ) -> dict[str, np.ndarray]:
    """Noise-free stain patterns of unit peak level, one per marker of :data:`CELL_MARKERS`."""
    shape = cells.shape
    count = int(cells.max())
    # Per-cell expression of each marker; index 0 (background) expresses nothing.
    levels = {m: np.concatenate([[0.0], rng.lognormal(0.0, domain.expression_spread, count)]).astype(np.float32)
              for m in ("DAPI", "ECAD", "CK", "KI67")}
    levels["KI67"] *= np.concatenate([[0.0], rng.random(count) < domain.proliferating_fraction])
    in_nucleus = nuclei > 0
    to_border = ndi.distance_transform_edt(~label_borders(cells)).astype(np.float32)
    membrane = np.exp(-0.5 * (to_border / domain.membrane_width) ** 2) * (cells > 0)
    depth = ndi.distance_transform_edt(~label_borders(nuclei) & in_nucleus).astype(np.float32)
    chromatin = 1.0 + 0.2 * _texture(rng, shape, 1.0)
    filaments = np.clip(1.0 + 0.3 * _texture(rng, shape, 1.5), 0.0, None)
    speckles = np.clip(_texture(rng, shape, 0.8) - 0.5, 0.0, None)
    cytoplasm = (cells > 0) & ~in_nucleus
    blobs = point_spots(rng, np.ones(shape, bool), domain.distractor_density, rng.uniform(2.5, 4.0), (0.5, 1.0))
    haze = 0.08 * np.clip(smooth_field(rng, shape, 4.0 * domain.cell_diameter, centred=True) + 1.0, 0.0, None)
    return {
        # Nuclei are a little dimmer at the rim, where they are thinner.
        "DAPI": levels["DAPI"][nuclei] * (0.75 + 0.25 * np.clip(depth / 3.0, 0, 1)) * chromatin * in_nucleus,
        "ECAD": levels["ECAD"][cells] * (membrane + 0.08 * cytoplasm),
        "CK": levels["CK"][cells] * filaments * cytoplasm * (1.0 - 0.3 * membrane),
        "CD45": np.minimum(blobs, 1.2) + haze,
        "KI67": levels["KI67"][nuclei] * (0.15 + 1.5 * speckles) * in_nucleus,
    }


def _image(rng: np.random.Generator, signals: Mapping[str, np.ndarray], markers: Sequence[str],
           domain: CellDomain, dtype: np.dtype) -> np.ndarray:
    """Blur, background, illumination and noise applied to every marker; ``markers`` kept."""
    shape = next(iter(signals.values())).shape
    illumination = np.clip(1.0 + 0.1 * smooth_field(rng, shape, 80.0, centred=True), 0.5, None)
    channels = {}
    for name in CELL_MARKERS:  # all drawn, so the random stream does not depend on ``markers``
        strength = domain.strength[name] * rng.lognormal(0.0, 0.15)
        background = domain.background * rng.uniform(0.6, 1.4)
        blur = domain.blur * rng.uniform(0.85, 1.15)
        signal = ndi.gaussian_filter(signals[name], blur) if blur > 0 else signals[name]
        clean = (background + strength * signal) * illumination
        # Shot noise grows with the signal; read noise does not.
        noise = rng.standard_normal(shape).astype(np.float32) * np.sqrt(
            domain.read_noise**2 + domain.gain * np.maximum(clean, 0.0))
        channels[name] = np.clip(clean + noise, 0.0, None).astype(np.float32)
    image = np.stack([channels[m] for m in markers])
    if dtype == np.uint8:
        return np.clip(np.rint(image), 0, 255).astype(np.uint8)
    return image


def simulate_cells(
    shape: tuple[int, int] = (256, 256),
    *,
    domain: str | Mapping[str, Any] | CellDomain = "default",
    markers: Sequence[str] = DEFAULT_CELL_MARKERS,
    seed: int = 0,
    dtype: str | type | np.dtype = np.uint8,
) -> SimulatedCells:
    """Simulate one multiplexed image of touching epithelial cells with exact labels.

    Parameters
    ----------
    shape
        ``(Y, X)`` in pixels, at least two cell diameters each. 256x256 takes ~0.1 s.
    domain
        Imaging and tissue settings: a preset name (``"default"``, ``"shifted"``), a
        mapping of settings or a :class:`~fluoseg.data.synth.cell_domain.CellDomain`
        (see :func:`~fluoseg.data.synth.cell_domain.cell_domain`).
    markers
        Channels to produce, any distinct subset of
        :data:`~fluoseg.data.synth.cell_domain.CELL_MARKERS` in any order.
    seed
        The same seed (and domain) gives the same image.
    dtype
        ``uint8`` (camera counts, clipped at 255) or ``float32`` (counts before
        rounding and clipping).

    Returns
    -------
    SimulatedCells
        The image, cell and nucleus labels, marker names and domain.

    Raises
    ------
    FluosegError
        For an unknown or repeated marker, a shape too small for the cells, a bad dtype,
        or invalid domain settings.

    Examples
    --------
    >>> sample = simulate_cells((96, 96), seed=1)
    >>> sample.image.shape, sample.markers
    ((4, 96, 96), ('DAPI', 'ECAD', 'CK', 'CD45'))
    """
    settings = cell_domain(domain)
    markers = tuple(markers)
    unknown = [m for m in markers if m not in CELL_MARKERS]
    if unknown or not markers or len(set(markers)) != len(markers):
        raise FluosegError(f"markers must be distinct names from {list(CELL_MARKERS)}, got {list(markers)}")
    try:
        height, width = (int(s) for s in shape)
    except (TypeError, ValueError):
        raise FluosegError(f"shape must be (Y, X), got {shape!r}") from None
    if min(height, width) < 2 * settings.cell_diameter:
        raise FluosegError(f"shape {shape!r} is too small for cells of {settings.cell_diameter} px; "
                           f"use at least {int(np.ceil(2 * settings.cell_diameter))} px per side")
    out_dtype = np.dtype(dtype)
    if out_dtype not in (np.dtype(np.uint8), np.dtype(np.float32)):
        raise FluosegError(f"dtype must be uint8 or float32, got {out_dtype}")
    # Independent streams per stage: e.g. changing the noise keeps the cells of a seed.
    layout_rng, nucleus_rng, stain_rng, camera_rng = (np.random.default_rng(s)
                                                      for s in np.random.SeedSequence(seed).spawn(4))
    # Cells are laid out on a canvas one diameter larger on every side and then cropped,
    # so the image border cuts cells (and nuclei) the way a field of view does.
    pad = int(np.ceil(settings.cell_diameter))
    canvas = (height + 2 * pad, width + 2 * pad)
    min_area = _MIN_CELL_SHARE * np.pi * (settings.cell_diameter / 2) ** 2
    cells = _clean(_tessellate(layout_rng, canvas, settings), min_area)
    nuclei = _nuclei(nucleus_rng, cells, settings.nucleus_ratio)
    crop = (slice(pad, pad + height), slice(pad, pad + width))
    cells = _clean(cells[crop], min_area)
    # Renumbering moved the cell ids; nuclei follow their cell, and lose what lies in a dropped one.
    nuclei = np.where(cells > 0, nuclei[crop], 0)
    nuclei = _largest_pieces(np.where(nuclei > 0, cells, 0).astype(np.int32))
    signals = _signals(stain_rng, cells, nuclei, settings)
    image = _image(camera_rng, signals, markers, settings, out_dtype)
    return SimulatedCells(image=image, cells=cells.astype(np.int32), nuclei=nuclei, markers=markers, domain=settings)
