"""A small, fast simulator of multi-marker bone-marrow-like tissue with two vessel classes.

It mimics the marker semantics of the MS-ME paper's bone-marrow dataset (and of the
project's ``vessels5`` data), so the demo and the tests can train marker-aware models
anywhere, in minutes on a CPU, without downloading anything. Pixels are 1 µm.

Structures (the masks):

- **sinusoids**: a network of tortuous, anastomosing thin tubes of varying width (5-15 %
  of the pixels by default). They are the band around the zero level set of a smooth
  random field, broken into fragments by a second, coarser field;
- **arteries**: zero to two thicker (9-14 px), straight-ish vessels (0-2 % of the pixels).

Classes are exclusive (sinusoids keep a gap of 2 px from arteries). Markers (channels):

- ``DAPI``: nuclei everywhere in the parenchyma, clustered, rare in vessel lumens (weak cue);
- ``endomucin``: sinusoid endothelium (bright walls, faint lumen); almost absent on arteries;
- ``endoglin``: like endomucin but weaker, plus a faint inner line on arteries;
- ``collagen``: thick bright walls around arteries, thin faint walls on sinusoids, and
  straight fibres everywhere;
- ``CXCL12-GFP``: perisinusoidal stromal cells (spots just outside sinusoid walls) and a
  faint reticular outline (weak cue).

Per sample the stain strengths, background levels, illumination and noise vary, and a
stain can fail (its signal then shows at ~5 % of its normal brightness over an ordinary
background), as in the real data. The same seed always gives the same sample, and a
subset of ``markers`` gives exactly those channels of the full sample.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from fluoseg.data.synth.fields import point_spots, smooth_field
from fluoseg.errors import FluosegError

__all__ = ["DEFAULT_MARKERS", "VESSEL_CLASSES", "SimulatedSample", "simulate_tissue"]

DEFAULT_MARKERS = ("DAPI", "endomucin", "endoglin", "collagen", "CXCL12-GFP")
VESSEL_CLASSES = ("sinusoids", "arteries")
FAILED_STAIN_BRIGHTNESS = 0.05
"""Fraction of its usual signal that a failed stain still shows."""


@dataclass(frozen=True)
class SimulatedSample:
    """One simulated tissue sample.

    Attributes
    ----------
    image
        ``(K, Y, X)`` uint8, one channel per marker in ``markers`` order.
    masks
        ``(2, Y, X)`` uint8 0/1 masks for ``classes`` (sinusoids, arteries); exclusive.
    markers
        Channel names.
    classes
        Class names of ``masks``: ``("sinusoids", "arteries")``.
    failed
        Markers whose stain failed in this sample (``()`` normally).
    pixel_size
        ``(y, x)`` pixel size in µm (always 1).
    """

    image: np.ndarray
    masks: np.ndarray
    markers: tuple[str, ...]
    classes: tuple[str, ...]
    failed: tuple[str, ...] = ()
    pixel_size: tuple[float, float] = (1.0, 1.0)

    @property
    def fractions(self) -> dict[str, float]:
        """Fraction of pixels of each class."""
        return {c: float(m.mean()) for c, m in zip(self.classes, self.masks)}


def _sinusoids(rng: np.random.Generator, shape: tuple[int, int], fraction: float) -> np.ndarray:
    """Tortuous tube network: band around the zero level set of a smooth field, in fragments."""
    field = np.abs(smooth_field(rng, shape, rng.uniform(10.0, 13.0)))
    gate_field = smooth_field(rng, shape, rng.uniform(14.0, 20.0))
    # The band's share of the image sets the tube width (kept in a narrow range, like real
    # sinusoids); the gate then keeps as many fragments as the wanted fraction needs.
    band = field < np.quantile(field, rng.uniform(0.18, 0.23))
    gate_values = gate_field[band]
    wanted = fraction
    tubes = band
    for _ in range(6):
        keep = min(wanted / max(band.mean(), 1e-9), 1.0)
        tubes = band & (gate_field >= np.quantile(gate_values, 1.0 - keep))
        tubes = ndi.binary_opening(tubes, structure=np.ones((2, 2), bool))  # no 1-px slivers
        labels, n = ndi.label(tubes)
        if n:
            sizes = np.bincount(labels.ravel())
            tubes = (sizes >= 20)[labels] & tubes
        # Cleaning (opening, dropping specks) removes some pixels, so the target is corrected.
        got = tubes.mean()
        if got <= 0 or abs(got - fraction) < 0.1 * fraction or keep >= 1.0:
            break
        wanted *= fraction / got
    return tubes


def _arteries(rng: np.random.Generator, shape: tuple[int, int], fraction: float
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Straight-ish thick tubes; returns mask, distance to the axis, and radius per pixel."""
    height, width = shape
    count = 1 if fraction < 0.008 or rng.random() < 0.6 else 2
    axis_distance = np.full(shape, np.inf, np.float32)
    radius_map = np.zeros(shape, np.float32)
    for _ in range(count):
        radius = rng.uniform(4.5, 7.0)
        length = fraction / count * height * width / (2 * radius)
        length = min(length, 1.5 * max(height, width))
        centre = rng.uniform(0.15, 0.85, 2) * np.array(shape)
        angle = rng.uniform(0, np.pi)
        direction = np.array([np.sin(angle), np.cos(angle)])
        normal = np.array([direction[1], -direction[0]])
        t = np.linspace(-0.5, 0.5, max(int(length), 2))
        # A gentle bend: a quarter to half a sine wave of small amplitude across the vessel.
        amplitude, waves, phase = rng.uniform(0.02, 0.08) * length, rng.uniform(0.5, 1.0), rng.uniform(0, np.pi)
        bend = amplitude * np.sin(np.pi * waves * (t + 0.5) + phase)
        points = centre + np.outer(t * length, direction) + np.outer(bend, normal)
        points = np.round(points).astype(int)
        keep = (points[:, 0] >= 0) & (points[:, 0] < height) & (points[:, 1] >= 0) & (points[:, 1] < width)
        if not keep.any():
            continue
        axis = np.ones(shape, bool)
        axis[points[keep, 0], points[keep, 1]] = False
        distance = ndi.distance_transform_edt(axis).astype(np.float32)
        closer = distance < axis_distance
        axis_distance[closer] = distance[closer]
        radius_map[closer] = radius
    mask = axis_distance <= radius_map
    return mask, axis_distance, radius_map


def _fibres(rng: np.random.Generator, shape: tuple[int, int], density: float) -> np.ndarray:
    """Straight collagen fibres of random length, orientation and brightness (1 px, anti-aliased by a blur)."""
    height, width = shape
    count = rng.poisson(density * height * width)
    canvas = np.zeros(shape, np.float32)
    if count == 0:
        return canvas
    starts = rng.uniform(0, 1, (count, 2)) * np.array(shape)
    angles = rng.uniform(0, np.pi, count)
    lengths = rng.uniform(15, 90, count)
    brightness = rng.uniform(0.3, 1.0, count).astype(np.float32)
    steps = [np.arange(0, ln, 0.7) for ln in lengths]
    index = np.repeat(np.arange(count), [s.size for s in steps])
    along = np.concatenate(steps)
    ys = np.round(starts[index, 0] + along * np.sin(angles[index])).astype(int)
    xs = np.round(starts[index, 1] + along * np.cos(angles[index])).astype(int)
    keep = (ys >= 0) & (ys < height) & (xs >= 0) & (xs < width)
    np.maximum.at(canvas, (ys[keep], xs[keep]), brightness[index[keep]])
    return ndi.gaussian_filter(canvas, 0.7) * 2.0


def _check_range(value: float | tuple[float, float], name: str, upper: float) -> tuple[float, float]:
    """A fraction or a (low, high) range of fractions, validated against ``[0, upper]``."""
    try:
        pair = (value, value) if np.isscalar(value) else tuple(value)  # type: ignore[arg-type]
        low, high = (float(v) for v in pair)
    except (TypeError, ValueError):
        low, high = -1.0, -1.0
    if not 0.0 <= low <= high <= upper:
        raise FluosegError(f"{name} must be a fraction or a (low, high) range within [0, {upper}], got {value!r}")
    return low, high


def simulate_tissue(
    shape: tuple[int, int] = (256, 256),
    *,
    markers: Sequence[str] = DEFAULT_MARKERS,
    seed: int = 0,
    sinusoid_fraction: float | tuple[float, float] = (0.05, 0.15),
    artery_fraction: float | tuple[float, float] = (0.004, 0.02),
    artery_probability: float = 0.8,
    failed_stain_probability: float = 0.0,
    failed_markers: Sequence[str] = (),
) -> SimulatedSample:
    """Simulate one sample of bone-marrow-like tissue with sinusoids and arteries.

    Parameters
    ----------
    shape
        ``(Y, X)`` in pixels of 1 µm. A 256x256 sample takes ~60 ms, 768x768 ~0.6 s.
    markers
        Channels to produce: any subset of :data:`DEFAULT_MARKERS`, in any order. The
        sample itself does not depend on them.
    seed
        The same seed gives the same sample.
    sinusoid_fraction
        Target fraction of sinusoid pixels (at most 0.15; met to about 10 %), or a range
        to draw it from per sample.
    artery_fraction
        Target fraction of artery pixels when the sample has arteries (or a range). It is
        approximate: arteries reaching past the border are cut.
    artery_probability
        Chance that the sample has arteries at all (some real samples have none).
    failed_stain_probability
        Chance, per marker, that its stain failed in this sample.
    failed_markers
        Markers whose stain fails for sure.

    Returns
    -------
    SimulatedSample
        uint8 image ``(len(markers), Y, X)``, uint8 masks ``(2, Y, X)``, names, failed stains.

    Raises
    ------
    FluosegError
        For an unknown marker, a bad shape, or a fraction/probability out of range.

    Examples
    --------
    >>> sample = simulate_tissue((128, 128), seed=3)
    >>> sample.image.shape, sample.masks.shape, sample.classes
    ((5, 128, 128), (2, 128, 128), ('sinusoids', 'arteries'))
    """
    unknown = [m for m in list(markers) + list(failed_markers) if m not in DEFAULT_MARKERS]
    if unknown:
        raise FluosegError(f"the tissue simulator knows markers {list(DEFAULT_MARKERS)}, not {unknown}")
    if len(set(markers)) != len(tuple(markers)) or not tuple(markers):
        raise FluosegError(f"markers must be distinct and at least one, got {list(markers)}")
    try:
        height, width = (int(s) for s in shape)
    except (TypeError, ValueError):
        raise FluosegError(f"shape must be (Y, X), got {shape!r}") from None
    if height < 16 or width < 16:
        raise FluosegError(f"shape must be at least 16x16 pixels, got {shape!r}")
    if not (0.0 <= artery_probability <= 1.0 and 0.0 <= failed_stain_probability <= 1.0):
        raise FluosegError("artery_probability and failed_stain_probability must lie in [0, 1]")
    sinusoid_range = _check_range(sinusoid_fraction, "sinusoid_fraction", 0.15)
    artery_range = _check_range(artery_fraction, "artery_fraction", 0.2)
    shape = (height, width)
    # Independent streams per component: e.g. switching arteries off leaves the sinusoids,
    # cells and stains of a seed unchanged.
    artery_rng, sinusoid_rng, cell_rng, stain_rng = (np.random.default_rng(s)
                                                     for s in np.random.SeedSequence(seed).spawn(4))

    # --- structures -------------------------------------------------------------------
    arteries = np.zeros(shape, bool)
    artery_axis = np.full(shape, np.inf, np.float32)
    artery_radius = np.zeros(shape, np.float32)
    has_arteries = artery_rng.random() < artery_probability
    artery_target = artery_rng.uniform(*artery_range)
    if has_arteries and artery_target > 0:
        arteries, artery_axis, artery_radius = _arteries(artery_rng, shape, artery_target)
    sinusoids = _sinusoids(sinusoid_rng, shape, sinusoid_rng.uniform(*sinusoid_range))
    sinusoids &= ~ndi.binary_dilation(arteries, iterations=2)
    lumen = sinusoids | arteries

    # Sinusoid walls: the outermost ~1.5 px inside the mask; stroma just outside it.
    inner = ndi.distance_transform_edt(sinusoids)
    outer = ndi.distance_transform_edt(~sinusoids)
    sinusoid_wall = (sinusoids & (inner <= 1.5)).astype(np.float32)
    sinusoid_lumen = (sinusoids & (inner > 1.5)).astype(np.float32)
    perisinusoidal = (outer >= 0.5) & (outer <= 3.5) & ~arteries
    # Artery walls: a thick collagen-rich media/adventitia along the rim of the tube,
    # lined inside by a thin endothelium.
    rim = artery_radius - artery_axis  # depth below the artery surface (negative outside)
    artery_wall = (arteries & (rim <= 3.0)).astype(np.float32) + 0.4 * ((rim > -1.5) & (rim < 0)).astype(np.float32)
    artery_endothelium = (arteries & (rim > 1.0) & (rim <= 2.5)).astype(np.float32)

    rng = cell_rng
    density = 0.5 + 0.5 * (smooth_field(rng, shape, 25.0) > 0)  # haematopoietic clusters
    nuclei = point_spots(rng, ~lumen & (rng.random(shape) < density), 0.008, 1.8)
    nuclei += point_spots(rng, sinusoids & (inner <= 2.0), 0.01, 1.8, (0.4, 0.8))  # endothelial nuclei
    stromal = point_spots(rng, perisinusoidal, 0.05, 1.4)
    stromal += point_spots(rng, ~lumen, 0.0008, 1.4)  # a few stromal cells away from sinusoids
    fibres = _fibres(rng, shape, rng.uniform(1e-4, 4e-4)) * ~lumen

    signals = {
        "DAPI": nuclei,
        "endomucin": sinusoid_wall + 0.1 * sinusoid_lumen + 0.12 * artery_endothelium,
        "endoglin": sinusoid_wall + 0.12 * sinusoid_lumen + 0.4 * artery_endothelium,
        "collagen": 0.45 * artery_wall + 0.3 * sinusoid_wall + 0.45 * fibres,
        "CXCL12-GFP": stromal + 0.15 * ndi.binary_dilation(sinusoids, iterations=2) * ~sinusoids,
    }

    # --- staining and imaging, drawn for every marker so subsets match the full sample --
    base_strength = {"DAPI": 150.0, "endomucin": 110.0, "endoglin": 80.0, "collagen": 140.0, "CXCL12-GFP": 110.0}
    rng = stain_rng
    illumination = 1.0 + 0.15 * smooth_field(rng, shape, 60.0)
    channels: dict[str, np.ndarray] = {}
    failed = []
    for name in DEFAULT_MARKERS:
        strength = base_strength[name] * rng.lognormal(0.0, 0.25)
        background = rng.uniform(5.0, 40.0)
        read_noise = rng.uniform(4.0, 11.0)
        fails = rng.random() < failed_stain_probability or name in failed_markers
        if fails:
            failed.append(name)
            strength *= FAILED_STAIN_BRIGHTNESS
        blur = rng.uniform(0.6, 1.0)
        signal = ndi.gaussian_filter(np.asarray(signals[name], np.float32), blur)
        clean = (background + strength * signal) * illumination
        # Shot noise grows with the signal; read noise does not.
        noise = rng.standard_normal(shape).astype(np.float32) * np.sqrt(read_noise**2 + clean)
        channels[name] = np.clip(np.rint(clean + noise), 0, 255).astype(np.uint8)

    image = np.stack([channels[m] for m in markers])
    masks = np.stack([sinusoids, arteries]).astype(np.uint8)
    return SimulatedSample(image=image, masks=masks, markers=tuple(markers), classes=VESSEL_CLASSES,
                           failed=tuple(m for m in markers if m in failed))
