"""Overlap-tile prediction for images of any size, streamed row band by row band.

The scheme is the "Tiling strategy" of the MS-ME paper (Supplementary Fig. 3):

- **valid** mode, for networks with valid convolutions (the U-Net: input tile 572, output
  tile 388). The image is conceptually zero-padded by the margin ``(input - output) // 2``
  (92); output tiles are laid side by side without overlap, so each input tile overlaps its
  neighbours by twice the margin and padding artefacts only occur at the image border. The
  last tile of each row and column is shifted back to end at the image border, and where it
  overlaps the previous tile the predictions are averaged.
- **same** mode, for networks with same padding (encoders): input tile = output tile;
  neighbouring tiles overlap (by ``overlap`` pixels, default 1/8 of the tile) and are
  cross-faded with cosine ramps normalised by the summed weights, which hides the border
  effects each tile has.

One refinement over the paper: a network with ``2**d`` pooling is translation-equivariant
only for shifts that are multiples of ``2**d``, and the U-Net's output sizes (388 = 24*16
+ 4) are not. Tiles are therefore placed at multiples of the network's *alignment* (the
spacing between admissible input sizes, 16 for the MS-ME U-Net): the step becomes 384
instead of 388 and the last tile ends at the first aligned position at or beyond the image
border. The few extra overlapping pixels hold identical values, so averaging them changes
nothing, and tiled prediction equals whole-image prediction to float precision.
``geometry_for(model, tile, aligned=False)`` gives the paper's literal placement.

Images are read window by window (numpy, zarr or any array-like with ``.shape`` and basic
slicing) and results are written to the output one finished band of rows at a time, so
memory is proportional to the tile size times the image width, whatever the image height.
This module does not import torch: prediction is a ``predict_batch`` callable on numpy
arrays.

A call may also compute just a band of rows (``rows``) of some planes (``planes``), so that
several processes share one image, each writing only its own rows (one writer per Zarr
chunk when the bands follow the chunks). Such a call runs every tile batch of the whole-image
call that holds a tile reaching its rows, the same batches in the same order, so every pixel
it writes gets the same tile outputs summed in the same order: **the rows equal those of the
whole-image call bit for bit**. The price is the tiles that reach into two bands, which both
compute (:func:`band_tiles` counts them).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from fluoseg.errors import FluosegError

MODES = ("valid", "same")

PredictBatch = Callable[[np.ndarray], np.ndarray]
"""``(B, C, h_in, w_in)`` float32 -> ``(B, O, h_out, w_out)`` float32."""

Transform = Callable[[np.ndarray], np.ndarray]
"""``(C, h, w)`` float32 raw window -> ``(C', h, w)`` network input, before zero padding."""


class SizedNetwork(Protocol):
    """What tiling needs to know about a network: its padding and admissible sizes."""

    padding: str

    def output_size(self, input_size: int) -> int: ...

    def valid_input_size(self, at_least: int) -> int: ...


@dataclass(frozen=True)
class TileGeometry:
    """Input and output tile sizes of a network (square tiles).

    Attributes
    ----------
    input_size
        Network input tile size in pixels.
    output_size
        Network output tile size; equals ``input_size`` in ``"same"`` mode.
    mode
        ``"valid"`` (margin-padded, averaged overlaps) or ``"same"`` (blended overlaps).
    alignment
        Tiles start at multiples of this many pixels so that every tile sees the network's
        pooling grid in the same phase; 1 places tiles freely.
    """

    input_size: int
    output_size: int
    mode: str
    alignment: int = 1

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"tile mode must be one of {MODES}, got {self.mode!r}")
        if not 1 <= self.output_size <= self.input_size:
            raise ValueError(f"need 1 <= output_size <= input_size, got {self.output_size} and {self.input_size}")
        if (self.input_size - self.output_size) % 2:
            raise ValueError("input_size - output_size must be even (equal margins on both sides)")
        if self.mode == "same" and self.input_size != self.output_size:
            raise ValueError("same-mode tiles have equal input and output sizes")
        if self.alignment < 1:
            raise ValueError(f"alignment must be >= 1, got {self.alignment}")

    @property
    def margin(self) -> int:
        """Pixels the network trims on each side; the image is zero-padded by this much."""
        return (self.input_size - self.output_size) // 2


@dataclass(frozen=True)
class Tile:
    """One network evaluation of a tiling plan.

    Attributes
    ----------
    input_window
        ``(y, x)`` slices of the network input in image coordinates; they may start below 0
        or end beyond the image, where the input is zero.
    output_window
        ``(y, x)`` slices of the image the tile's prediction is written to (inside the image).
    output_crop
        ``(y, x)`` slices of the predicted output tile that land in ``output_window``.
    ramps
        ``((top, bottom), (left, right))`` widths of the cosine blending ramps (same mode);
        all zero means plain averaging (valid mode).
    """

    input_window: tuple[slice, slice]
    output_window: tuple[slice, slice]
    output_crop: tuple[slice, slice]
    ramps: tuple[tuple[int, int], tuple[int, int]] = ((0, 0), (0, 0))


def geometry_for(model: SizedNetwork, tile_size: int, *, aligned: bool = True) -> TileGeometry:
    """The tile geometry of a network for a desired input tile size.

    Parameters
    ----------
    model
        Any object with ``padding`` (``"valid"``/``"same"``), ``output_size(n)`` and
        ``valid_input_size(n)``, e.g. a :class:`fluoseg.models.UNet`.
    tile_size
        Desired network input size; rounded up to the next admissible size (572 stays 572
        for the MS-ME U-Net, giving output 388 and margin 92).
    aligned
        Place tiles at multiples of the network's translation period, which makes tiled
        prediction equal whole-image prediction for pooling networks. The period is the
        spacing of consecutive admissible input sizes (``2**depth`` for a U-Net). When the
        output tile is smaller than the period, the tile is enlarged until it is not.

    Raises
    ------
    FluosegError
        If ``tile_size`` is not a positive integer.
    """
    if isinstance(tile_size, bool) or not isinstance(tile_size, (int, np.integer)) or tile_size < 1:
        raise FluosegError(f"tile size must be a positive integer, got {tile_size!r}")
    mode = getattr(model, "padding", None)
    if mode not in MODES:
        raise ValueError(f"model padding must be one of {MODES}, got {mode!r}")
    input_size = int(model.valid_input_size(int(tile_size)))
    output_size = int(model.output_size(input_size))
    alignment = 1
    if aligned:
        alignment = int(model.valid_input_size(input_size + 1)) - input_size
        while output_size < alignment:
            input_size = int(model.valid_input_size(input_size + 1))
            output_size = int(model.output_size(input_size))
    return TileGeometry(input_size=input_size, output_size=output_size, mode=mode, alignment=alignment)


def fitted_geometry(model: SizedNetwork, tile_size: int, image_shape: tuple[int, ...], *, aligned: bool = True
                    ) -> TileGeometry:
    """:func:`geometry_for` ``tile_size``, shrunk to the smallest tile that covers a smaller image.

    A 256 × 256 image in the U-Net's 572 tile costs five times its own pixels; the smallest
    admissible tile whose output covers the longest side (444 for 256) costs three. For a
    valid-mode network, whose aligned tiles give whole-image prediction (see the module
    notes), the prediction is the same, to float precision, whichever of the two tiles
    computes it. A same-mode network keeps ``tile_size``: its zero padding up to the tile
    shows in the prediction near the image border, so a smaller tile would change it.

    Parameters
    ----------
    model, aligned
        As in :func:`geometry_for`.
    tile_size
        The largest input tile wanted.
    image_shape
        The image's ``(..., Y, X)`` shape at the network's resolution.
    """
    geometry = geometry_for(model, tile_size, aligned=aligned)
    side = max(int(n) for n in image_shape[-2:])
    if geometry.mode != "valid" or side >= geometry.output_size:
        return geometry
    smallest = int(model.valid_input_size(max(side, 1)))
    while int(model.output_size(smallest)) < side:
        smallest = int(model.valid_input_size(smallest + 1))
    fitted = geometry_for(model, smallest, aligned=aligned)
    return fitted if fitted.input_size < geometry.input_size else geometry


def default_overlap(geometry: TileGeometry) -> int:
    """Overlap between output tiles when none is given: 0 (valid) or 1/8 of the tile (same)."""
    return 0 if geometry.mode == "valid" else geometry.output_size // 8


def _axis_starts(length: int, size: int, step: int, alignment: int, *, extend_last: bool) -> list[int]:
    """Output-tile starts along one axis covering ``[0, length)``."""
    if length <= size:
        return [0]
    last = length - size
    if extend_last:
        # Round the last start up to the grid; it stays < length because size >= alignment.
        last = -(-last // alignment) * alignment
    # Every regular start is followed by another at most `step` later, so there are no gaps.
    return [*range(0, last, step), last]


def _axis_plan(length: int, geometry: TileGeometry, overlap: int) -> list[tuple[int, int, int, int]]:
    """Per tile along one axis: output start, clipped output stop, ramp before, ramp after."""
    size = geometry.output_size
    step = size - overlap
    alignment = geometry.alignment
    if step >= alignment:
        step -= step % alignment
    else:
        alignment = 1  # no aligned step fits; fall back to free placement
    starts = _axis_starts(length, size, step, alignment, extend_last=geometry.mode == "valid")
    stops = [min(start + size, length) for start in starts]
    plan = []
    for i, (start, stop) in enumerate(zip(starts, stops)):
        before = after = 0
        if geometry.mode == "same":
            # Cross-fade over the actual overlap with each neighbour: the two cosine ramps
            # of a pair sum to one, and stay positive so every pixel keeps some weight.
            before = max(stops[i - 1] - start, 0) if i > 0 else 0
            after = max(stop - starts[i + 1], 0) if i + 1 < len(starts) else 0
        plan.append((start, stop, before, after))
    return plan


def plan_tiles(shape_yx: tuple[int, int], geometry: TileGeometry, *, overlap: int | None = None) -> list[Tile]:
    """Tiles covering an image of ``shape_yx``, row by row (y outer, x inner).

    Parameters
    ----------
    shape_yx
        Image height and width in pixels.
    geometry
        Tile sizes and mode, usually from :func:`geometry_for`.
    overlap
        Minimum overlap between neighbouring output tiles in pixels. Default: 0 in valid
        mode (the MS-ME scheme; only the last tile overlaps), 1/8 of the tile in same mode.

    Raises
    ------
    FluosegError
        If the image is empty or the overlap is not in ``[0, output_size)``.
    """
    height, width = (int(s) for s in shape_yx)
    if height < 1 or width < 1:
        raise FluosegError(f"cannot tile an empty image of shape {tuple(shape_yx)}")
    overlap = default_overlap(geometry) if overlap is None else overlap
    if isinstance(overlap, bool) or not isinstance(overlap, (int, np.integer)) or not 0 <= overlap < geometry.output_size:
        raise FluosegError(f"tile overlap must be an integer in [0, {geometry.output_size}), got {overlap!r}")
    margin = geometry.margin
    tiles = []
    for y0, y1, top, bottom in _axis_plan(height, geometry, int(overlap)):
        for x0, x1, left, right in _axis_plan(width, geometry, int(overlap)):
            tiles.append(
                Tile(
                    input_window=(
                        slice(y0 - margin, y0 - margin + geometry.input_size),
                        slice(x0 - margin, x0 - margin + geometry.input_size),
                    ),
                    output_window=(slice(y0, y1), slice(x0, x1)),
                    output_crop=(slice(0, y1 - y0), slice(0, x1 - x0)),
                    ramps=((top, bottom), (left, right)),
                )
            )
    return tiles


@functools.lru_cache(maxsize=64)
def _ramp(length: int, before: int, after: int) -> np.ndarray:
    """1D weights: 1, with sin^2 ramps over the first ``before`` and last ``after`` pixels."""
    weights = np.ones(length, dtype=np.float64)
    position = np.arange(length) + 0.5
    if before:
        rise = np.sin(np.pi * position / (2 * before)) ** 2
        weights = np.where(position < before, np.minimum(weights, rise), weights)
    if after:
        fall = np.sin(np.pi * position[::-1] / (2 * after)) ** 2
        weights = np.where(position[::-1] < after, np.minimum(weights, fall), weights)
    weights.setflags(write=False)
    return weights


def tile_weights(tile: Tile) -> np.ndarray:
    """Blending weights ``(h, w)`` float32 over the tile's ``output_window``, all > 0."""
    (top, bottom), (left, right) = tile.ramps
    ys, xs = tile.output_window
    wy = _ramp(ys.stop - ys.start, top, bottom)
    wx = _ramp(xs.stop - xs.start, left, right)
    return np.outer(wy, wx).astype(np.float32)


class _SliceStitcher:
    """Accumulates weighted tile predictions of one 2D slice and writes finished rows.

    Tiles arrive in row order, so once a tile's output starts at row ``y`` no later tile
    touches rows above ``y``: those are normalised and written out, and the buffer only
    ever spans the current band of tile rows. The buffer is allocated once per band height
    and reused: the rows still open move to its front, so a whole-slide prediction never
    holds two band-sized buffers of the image's full width at once.
    """

    def __init__(self, out: Any, z: int | None, channels: int, width: int, *, top: int = 0,
                 rows: tuple[int, int] | None = None) -> None:
        self.out = out
        self.z = z
        self.top = top  # the first row a tile reaches (0 for whole images)
        self.rows = rows  # the rows written out; None: every row
        self.held = 0  # rows of the buffers in use, starting at image row ``top``
        self._acc = np.zeros((channels, 0, width), dtype=np.float32)
        self._wsum = np.zeros((0, width), dtype=np.float32)

    def add(self, tile: Tile, values: np.ndarray) -> None:
        ys, xs = tile.output_window
        if ys.start > self.top:
            self._flush(ys.start)
        if ys.stop > self.top + self.held:
            self._grow(ys.stop - self.top)
        rows = slice(ys.start - self.top, ys.stop - self.top)
        if tile.ramps == ((0, 0), (0, 0)):
            self._acc[:, rows, xs] += values
            self._wsum[rows, xs] += 1.0
        else:
            weights = tile_weights(tile)
            self._acc[:, rows, xs] += values * weights
            self._wsum[rows, xs] += weights

    def finish(self) -> None:
        self._flush(self.top + self.held)

    def _grow(self, rows: int) -> None:
        if rows > self._wsum.shape[0]:  # a taller band than any before: a larger buffer
            acc = np.zeros((self._acc.shape[0], rows, self._acc.shape[2]), dtype=np.float32)
            wsum = np.zeros((rows, self._wsum.shape[1]), dtype=np.float32)
            acc[:, : self.held] = self._acc[:, : self.held]
            wsum[: self.held] = self._wsum[: self.held]
            self._acc, self._wsum = acc, wsum
        self.held = rows

    def _flush(self, until: int) -> None:
        n = min(until - self.top, self.held)
        if n <= 0:
            return
        first, last = self.top, self.top + n
        if self.rows is not None:  # a band: rows outside it lack the tiles of other bands
            first, last = max(first, self.rows[0]), min(last, self.rows[1])
        if first < last:
            weight = self._wsum[first - self.top : last - self.top]
            if not np.all(weight > 0):
                raise RuntimeError("tiling plan left pixels uncovered; this is a bug in fluoseg.tiling")
            rows = slice(first, last)
            index = (slice(None), rows, slice(None)) if self.z is None else (slice(None), self.z, rows, slice(None))
            finished = self._acc[:, first - self.top : last - self.top]
            np.divide(finished, weight, out=finished)  # in place: these rows are reset below
            self.out[index] = finished
        remaining = self.held - n
        # the open rows move to the front (numpy copies overlapping ranges correctly)
        self._acc[:, :remaining] = self._acc[:, n : self.held]
        self._wsum[:remaining] = self._wsum[n : self.held]
        self._acc[:, remaining : self.held] = 0.0
        self._wsum[remaining : self.held] = 0.0
        self.held = remaining
        self.top += n


def _read_input(image: Any, z: int | None, tile: Tile, geometry: TileGeometry, transform: Transform | None) -> np.ndarray:
    """The network input of a tile: the in-image part read and transformed, zeros around."""
    height, width = (int(s) for s in image.shape[-2:])
    ys, xs = tile.input_window
    y0, y1 = max(ys.start, 0), min(ys.stop, height)
    x0, x1 = max(xs.start, 0), min(xs.stop, width)
    inner = (slice(y0, y1), slice(x0, x1))
    index = (slice(None), *inner) if z is None else (slice(None), z, *inner)
    window = np.asarray(image[index], dtype=np.float32)
    if transform is not None:
        window = np.asarray(transform(window), dtype=np.float32)
        if window.ndim != 3 or window.shape[1:] != (y1 - y0, x1 - x0):
            raise ValueError(f"transform must keep the window's spatial shape {(y1 - y0, x1 - x0)}, got {window.shape}")
    size = geometry.input_size
    if window.shape[1:] == (size, size):
        return window
    padded = np.zeros((window.shape[0], size, size), dtype=np.float32)
    padded[:, y0 - ys.start : y1 - ys.start, x0 - xs.start : x1 - xs.start] = window
    return padded


def _batches(jobs: Iterator[tuple[int | None, Tile]], batch_size: int) -> Iterator[list[tuple[int | None, Tile]]]:
    batch: list[tuple[int | None, Tile]] = []
    for job in jobs:
        batch.append(job)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def _reaches(tile: Tile, rows: tuple[int, int] | None) -> bool:
    """Whether the tile's output reaches the band of rows (every tile reaches None)."""
    ys = tile.output_window[0]
    return rows is None or (ys.start < rows[1] and ys.stop > rows[0])


def band_tiles(shape_yx: tuple[int, int], geometry: TileGeometry, rows: tuple[int, int], *,
               overlap: int | None = None) -> int:
    """How many tiles of one plane a call restricted to ``rows`` computes (batches aside).

    Summed over the bands of an image and compared with ``len(plan_tiles(...))``, it gives
    the extra work of sharing the image out in bands: the tiles that reach two bands.
    """
    return sum(_reaches(tile, rows) for tile in plan_tiles(shape_yx, geometry, overlap=overlap))


def _check_region(shape: tuple[int, ...], rows: tuple[int, int] | None,
                  planes: Any) -> tuple[tuple[int, int] | None, list[int | None]]:
    """The validated band of rows and the planes to compute."""
    if rows is not None:
        rows = (int(rows[0]), int(rows[1]))
        if not 0 <= rows[0] < rows[1] <= shape[-2]:
            raise FluosegError(f"rows must be a band (start, stop) with 0 <= start < stop <= {shape[-2]}, got {rows}")
    if len(shape) == 3:
        if planes is not None:
            raise FluosegError("planes select slices of a stack (C, Z, Y, X); this image has none")
        return rows, [None]
    if planes is None:
        return rows, list(range(shape[1]))
    chosen = sorted({int(z) for z in planes})
    if not chosen or chosen[0] < 0 or chosen[-1] >= shape[1]:
        raise FluosegError(f"planes must be slice indices in [0, {shape[1]}), got {list(planes)}")
    return rows, list(chosen)


def predict_tiled(
    predict_batch: PredictBatch,
    image: Any,
    *,
    geometry: TileGeometry,
    out_channels: int,
    transform: Transform | None = None,
    out: Any = None,
    batch_size: int = 1,
    progress: bool = False,
    overlap: int | None = None,
    rows: tuple[int, int] | None = None,
    planes: Any = None,
) -> Any:
    """Predict a whole image tile by tile and stitch the outputs.

    Parameters
    ----------
    predict_batch
        ``(B, C, h_in, w_in)`` float32 -> ``(B, out_channels, h_out, w_out)`` float32, with
        ``h_in = geometry.input_size`` and ``h_out = geometry.output_size``.
    image
        ``(C, Y, X)`` or ``(C, Z, Y, X)`` array-like (numpy, zarr, ...); only tile windows
        are read. A stack is processed as 2D slices, each written at its z position.
    geometry
        Tile geometry of the network (:func:`geometry_for`).
    out_channels
        Number of output channels O of ``predict_batch``.
    transform
        Applied to each raw float32 window ``(C, h, w)`` before zero padding, e.g. intensity
        normalisation and marker-slot arrangement; it may change the channel count but not
        the window size. Padding stays zero whatever the transform does.
    out
        Writable ``(O, [Z], Y, X)`` array-like (numpy or zarr) to write into; a new float32
        numpy array when omitted. Rows are written in bands as they are finished.
    batch_size
        Tiles per ``predict_batch`` call (tiles of several rows or slices may share one).
    progress
        Show a progress bar over tiles.
    overlap
        Minimum output overlap, see :func:`plan_tiles`.
    rows
        Compute and write only this band ``(start, stop)`` of rows; bit for bit the rows of
        the whole-image call (see the module docstring). None: every row.
    planes
        Slice indices of a stack to compute and write; None: every slice.

    Returns
    -------
    numpy.ndarray or array-like
        ``out`` (or the new array) holding the stitched prediction.

    Raises
    ------
    FluosegError
        If the image is not 3D or 4D, or an option is invalid.
    ValueError
        If ``predict_batch`` or ``transform`` returns arrays of the wrong shape, or
        ``out`` has the wrong shape.
    """
    shape = tuple(int(s) for s in image.shape)
    if len(shape) not in (3, 4):
        raise FluosegError(f"expected an image with axes (C, Y, X) or (C, Z, Y, X), got shape {shape}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise FluosegError(f"batch size must be a positive integer, got {batch_size!r}")
    height, width = shape[-2:]
    out_shape = (out_channels, *shape[1:])
    if out is None:
        out = np.empty(out_shape, dtype=np.float32)  # every pixel is written exactly once
    elif tuple(out.shape) != out_shape:
        raise ValueError(f"out has shape {tuple(out.shape)}, expected {out_shape}")
    rows, chosen = _check_region(shape, rows, planes)
    tiles = plan_tiles((height, width), geometry, overlap=overlap)
    slices: list[int | None] = list(range(shape[1])) if len(shape) == 4 else [None]
    wanted = set(chosen)
    # the whole-image call's batches, kept when they hold a wanted tile: the same batches give
    # the same outputs, whatever the network's kernels do with the batch size
    batches = [batch for batch in _batches(((z, tile) for z in slices for tile in tiles), batch_size)
               if any(z in wanted and _reaches(tile, rows) for z, tile in batch)]
    first_row = min((t.output_window[0].start for t in tiles if _reaches(t, rows)), default=0)
    expected = (out_channels, geometry.output_size, geometry.output_size)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=sum(len(b) for b in batches), unit="tile", desc="predict")
    stitcher: _SliceStitcher | None = None
    try:
        for batch in batches:
            inputs = np.stack([_read_input(image, z, tile, geometry, transform) for z, tile in batch])
            outputs = np.asarray(predict_batch(inputs), dtype=np.float32)
            if outputs.shape != (len(batch), *expected):
                raise ValueError(f"predict_batch returned shape {outputs.shape}, expected {(len(batch), *expected)}")
            for (z, tile), output in zip(batch, outputs):
                if z not in wanted or not _reaches(tile, rows):
                    continue  # computed only because its batch holds a wanted tile
                if stitcher is None or stitcher.z != z:
                    if stitcher is not None:
                        stitcher.finish()
                    stitcher = _SliceStitcher(out, z, out_channels, width, top=first_row, rows=rows)
                stitcher.add(tile, output[(slice(None), *tile.output_crop)])
            if bar is not None:
                bar.update(len(batch))
        if stitcher is not None:
            stitcher.finish()
    finally:
        if bar is not None:
            bar.close()
    return out
