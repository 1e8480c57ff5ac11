"""Block plans for decoding instance labels of large images piece by piece.

Geometry
--------
The spatial extent ``([Z,] Y, X)`` is cut into a grid of *cores*: boxes of
``block_shape`` laid side by side from the origin (the last along each axis is clipped
at the image border), so every pixel lies in exactly one core. Each core grown by
``halo`` pixels on every side and clipped to the image is the block's *window*: the
region whose maps are decoded. Neighbouring blocks are those whose grid positions differ
by at most one along every axis (4/8 neighbours in 2D, 26 in 3D); the *strip* shared by
two neighbours ``a`` and ``b`` is ``a.window ∩ b.core``, where ``a``'s decoding of its
halo can be compared with ``b``'s decoding of its own core.

A halo of 0 along an axis declares that decoding is independent along it (the slice-wise
decoders of :mod:`fluoseg.instance.postprocess` along Z): no strip crosses that axis and
objects are never linked across it. A *stitched* axis (Z, for slice-wise decoders whose
objects are then linked slice to slice, :class:`fluoseg.instance.stitch3d.StitchedSlices`)
needs a halo of one slice: each link depends on two consecutive slices only, so the strips
relink an object cut by a window's face there exactly, and reaching that face is no cut.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from fluoseg.errors import FluosegError

__all__ = ["Block", "BlockPlan", "plan_blocks"]

Box = tuple[slice, ...]
"""One slice per spatial axis, in image coordinates."""


@dataclass(frozen=True)
class Block:
    """One block of a :class:`BlockPlan`.

    Attributes
    ----------
    index
        Position in :attr:`BlockPlan.blocks` (raster order over the grid, last axis fastest).
    grid
        Position in the block grid, one integer per spatial axis.
    core
        The pixels this block labels, in image coordinates.
    window
        The core grown by the halo and clipped to the image: the pixels decoded.
    """

    index: int
    grid: tuple[int, ...]
    core: Box
    window: Box

    @property
    def core_in_window(self) -> Box:
        """The core in the window's own coordinates."""
        return relative(self.core, self.window)

    @property
    def core_shape(self) -> tuple[int, ...]:
        """Shape of the core."""
        return tuple(s.stop - s.start for s in self.core)

    @property
    def window_shape(self) -> tuple[int, ...]:
        """Shape of the window."""
        return tuple(s.stop - s.start for s in self.window)


def intersect(first: Box, second: Box) -> Box | None:
    """The common part of two boxes, or None when they do not overlap."""
    out = tuple(slice(max(a.start, b.start), min(a.stop, b.stop)) for a, b in zip(first, second))
    return out if all(s.start < s.stop for s in out) else None


def relative(box: Box, frame: Box) -> Box:
    """``box`` expressed in the coordinates of ``frame`` (which must contain it)."""
    return tuple(slice(b.start - f.start, b.stop - f.start) for b, f in zip(box, frame))


def _as_axes(value: int | Sequence[int], ndim: int, name: str, minimum: int) -> tuple[int, ...]:
    if isinstance(value, (int, np.integer)):
        values: tuple = (value,) * ndim
    else:
        try:
            values = tuple(value)
        except TypeError:
            values = ()
    if len(values) != ndim or not all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= minimum for v in values
    ):
        raise FluosegError(
            f"{name} must be an integer >= {minimum} or one per spatial axis ({ndim}), got {value!r}"
        )
    return tuple(int(v) for v in values)


@dataclass(frozen=True)
class BlockPlan:
    """A grid of blocks over an image; build it with :func:`plan_blocks`.

    Attributes
    ----------
    shape
        Spatial shape ``([Z,] Y, X)`` of the image.
    block_shape
        Core size per axis (the last core along an axis may be smaller).
    halo
        Pixels added on each side of a core to form its window, per axis.
    stitched_axes
        Axes along which objects are chains of slices relinked by the strips (see above).
    """

    shape: tuple[int, ...]
    block_shape: tuple[int, ...]
    halo: tuple[int, ...]
    stitched_axes: tuple[int, ...] = ()

    @property
    def chunks(self) -> tuple[int, ...]:
        """Chunk shape of block-aligned arrays: each chunk lies in one core, so it has one writer."""
        return tuple(min(b, n) for b, n in zip(self.block_shape, self.shape))

    @property
    def grid_shape(self) -> tuple[int, ...]:
        """Number of blocks along each axis."""
        return tuple(-(-n // b) for n, b in zip(self.shape, self.block_shape))

    def __len__(self) -> int:
        return int(np.prod(self.grid_shape))

    def __iter__(self) -> Iterator[Block]:
        return (self.block(i) for i in range(len(self)))

    @property
    def blocks(self) -> list[Block]:
        """All blocks in raster order (``blocks[i].index == i``)."""
        return list(self)

    def block(self, index: int) -> Block:
        """The block at raster position ``index``."""
        grid = tuple(int(g) for g in np.unravel_index(index, self.grid_shape))
        return self.block_at(grid)

    def block_at(self, grid: Sequence[int]) -> Block:
        """The block at grid position ``grid``."""
        core = tuple(
            slice(g * b, min((g + 1) * b, n)) for g, b, n in zip(grid, self.block_shape, self.shape)
        )
        window = tuple(
            slice(max(c.start - h, 0), min(c.stop + h, n)) for c, h, n in zip(core, self.halo, self.shape)
        )
        index = int(np.ravel_multi_index(tuple(grid), self.grid_shape))
        return Block(index=index, grid=tuple(int(g) for g in grid), core=core, window=window)

    def neighbours(self, block: Block) -> list[Block]:
        """Blocks whose strip with ``block`` is not empty, in raster order.

        Only axes with a halo can be crossed: along an axis of halo 0 the windows end at
        the cores, so blocks there share no pixels.
        """
        steps = [(-1, 0, 1) if h > 0 else (0,) for h in self.halo]
        found = []
        for step in itertools.product(*steps):
            if not any(step):
                continue
            grid = tuple(g + s for g, s in zip(block.grid, step))
            if all(0 <= g < n for g, n in zip(grid, self.grid_shape)):
                found.append(self.block_at(grid))
        return found


def plan_blocks(shape: Sequence[int], *, block_shape: int | Sequence[int], halo: int | Sequence[int],
                stitched_axes: Sequence[int] = ()) -> BlockPlan:
    """Cut a 2D or 3D image into cores of ``block_shape`` with windows grown by ``halo``.

    Parameters
    ----------
    shape
        Spatial shape ``(Y, X)`` or ``(Z, Y, X)``.
    block_shape
        Core size, one integer for every axis or one per axis. For Zarr outputs written by
        parallel tasks, use multiples of the output's chunk shape so that no two blocks
        write the same chunk.
    halo
        Context added on each side, one integer or one per axis. It must be at least the
        largest object's extent plus the context the decoder looks at (see
        :mod:`fluoseg.instance.blockwise`); 0 along an axis the decoder treats
        independently (Z for the slice-wise decoders).
    stitched_axes
        Axes (0 for Z) along which the decoder links slices (see the module docstring);
        they need a halo of at least 1.

    Returns
    -------
    BlockPlan

    Raises
    ------
    FluosegError
        For an empty or non-2D/3D shape, or sizes that are not integers (``block_shape``
        >= 1, ``halo`` >= 0).
    """
    spatial = tuple(int(n) for n in shape)
    if len(spatial) not in (2, 3) or min(spatial) < 1:
        raise FluosegError(f"blockwise decoding needs a non-empty 2D or 3D image, got spatial shape {spatial}")
    blocks = _as_axes(block_shape, len(spatial), "block_shape", 1)
    halos = _as_axes(halo, len(spatial), "halo", 0)
    stitched = tuple(sorted({int(a) for a in stitched_axes}))
    if any(not 0 <= a < len(spatial) or halos[a] < 1 for a in stitched):
        raise FluosegError(f"stitched axes {stitched} must be axes of the {len(spatial)}D image with a halo of at "
                           f"least 1, got halo {halos}")
    return BlockPlan(shape=spatial, block_shape=blocks, halo=halos, stitched_axes=stitched)
