"""Instance labels of images of any size, decoded block by block and stitched.

Decoding a whole slide at once holds several full-size arrays (maps, markers, watershed
queues: 60-80 bytes per pixel). Here the image is cut into blocks
(:mod:`fluoseg.instance.blocks`), each decoded with a halo of context, and the pieces are
stitched into one label image in three phases that can run as independent tasks:

A. :func:`decode_block` — decode one block's window; keep only its core, with local ids
   ``1..n``, and the *strips* it shares with each neighbour: its own labels on the
   neighbour's core (its halo predictions) and its core labels on the neighbour's window.
B. :func:`resolve` (or :func:`link_blocks` per neighbour pair, then :func:`resolve_links`)
   — an object of block ``a`` is the same as an object of block ``b`` when, on their
   strip, ``a``'s halo prediction and ``b``'s core label have IoU > ``min_iou`` (0.5 makes
   the match unique), in either direction. Matched objects are merged with a union-find
   (connected components of the match graph); each merged object is owned by its member
   in the lowest block and gets a global id ``offset[block] + rank``, where ``offset``
   counts the objects owned by earlier blocks. The result is one lookup table (local ->
   global id) per block, never one vector over all global ids.
C. :func:`write_block` — write a block's core through its lookup table.

:func:`decode_blockwise` runs the three phases sequentially in bounded memory.

Guarantee (tested with hypothesis): when the halo along every linked axis is at least the
extent of the largest object plus the context the decoder looks at, the labels form the
same partition of the pixels as decoding the whole image at once (equal up to renumbering;
ids are consecutive from 1 in raster order of the blocks). Objects of a block's core that
reach the outer edge of its window may have been cut by it, which breaks the guarantee:
they are counted and reported with :func:`warnings.warn`.

Halo per decoder of :mod:`fluoseg.instance.postprocess` (all are slice-wise on stacks, so
the halo along Z is 0; when their slices are stitched into 3D objects by
:class:`~fluoseg.instance.stitch3d.StitchedSlices`, Z is a stitched axis with a halo of one
slice, and Y/X need the largest 3D object's extent, since a chain of slices may drift):

* ``labels_from_threshold``: the largest object's extent is a safe bound (connected
  components see nothing beyond the object; merging across blocks also repairs most
  components longer than the halo).
* ``labels_from_border_classes``: the largest object's extent plus the border band.
* ``labels_from_distance``: h-maxima markers depend on the whole clump of touching
  objects; the largest clump extent is the guarantee, plus ``3 * smooth_sigma``.

Measured on every third DSB 2018 image (121 images, ideal maps made continuous, blocks of
96 px; largest nucleus per image: median 24 px, at most 117 px): blockwise equalled
whole-image decoding on all 121 images with halo 32 for all three decoders and with halo
8 for the border decoder; halo 16 failed on 2 images (threshold) and 1 image (distance).

This module is torch-free; maps are read window by window from any array with basic
slicing (numpy, zarr, :class:`fluoseg.io.LazyView`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from fluoseg.errors import FluosegError
from fluoseg.instance.blocklinks import BlockResult, Relabelling, Strip, link_blocks, resolve, resolve_links
from fluoseg.instance.blocks import Block, BlockPlan, intersect, plan_blocks, relative

__all__ = [
    "BlockResult",
    "Decoder",
    "Relabelling",
    "Strip",
    "decode_block",
    "decode_blockwise",
    "link_blocks",
    "resolve",
    "resolve_links",
    "write_block",
]

Decoder = Callable[[np.ndarray], np.ndarray]
"""``(C, [z], y, x)`` maps window -> ``([z], y, x)`` integer labels, 0 = background."""

_LOCAL_DTYPE = np.uint32


def _local_lookup(core_labels: np.ndarray, largest: int) -> Callable[[np.ndarray], np.ndarray]:
    """A function mapping window labels to local core ids ``1..n`` (0: not in the core)."""
    flat = core_labels.ravel()
    if largest <= 4 * flat.size + 1024:
        present = np.bincount(flat, minlength=largest + 1) > 0
        present[0] = False
        table = np.zeros(largest + 1, _LOCAL_DTYPE)
        table[present] = np.arange(1, int(present.sum()) + 1, dtype=_LOCAL_DTYPE)
        return lambda labels: table[labels]
    # Sparse, large ids (a decoder that does not renumber): search instead of a table.
    ids = np.unique(flat)
    ids = ids[ids > 0]
    if ids.size == 0:
        return lambda labels: np.zeros(labels.shape, _LOCAL_DTYPE)

    def lookup(labels: np.ndarray) -> np.ndarray:
        position = np.minimum(np.searchsorted(ids, labels), ids.size - 1)
        return np.where(ids[position] == labels, position + 1, 0).astype(_LOCAL_DTYPE)

    return lookup


def _decoded_window(maps: Any, block: Block, decoder: Decoder) -> np.ndarray:
    window = np.asarray(maps[(slice(None), *block.window)])
    labels = np.asarray(decoder(window))
    if labels.shape != block.window_shape:
        raise ValueError(f"the decoder returned labels of shape {labels.shape} for a window of {block.window_shape}")
    if labels.dtype.kind not in "ui" or (labels.size and labels.min() < 0):
        raise ValueError(f"the decoder must return non-negative integer labels, got dtype {labels.dtype}")
    return labels.astype(np.int64, copy=False) if labels.dtype.kind == "i" else labels


def _outer_faces(plan: BlockPlan, block: Block) -> list[tuple[slice, ...]]:
    """Window faces (window coordinates) that lie inside the image on axes with a halo, not stitched."""
    faces = []
    for axis, (edge, halo, size) in enumerate(zip(block.window, plan.halo, plan.shape)):
        if halo == 0 or axis in plan.stitched_axes:
            continue
        length = edge.stop - edge.start
        full = [slice(None)] * len(block.window)
        if edge.start > 0:
            faces.append(tuple(full[:axis] + [slice(0, 1)] + full[axis + 1:]))
        if edge.stop < size:
            faces.append(tuple(full[:axis] + [slice(length - 1, length)] + full[axis + 1:]))
    return faces


def decode_block(maps: Any, plan: BlockPlan, block: Block, decoder: Decoder, *, warn: bool = True) -> BlockResult:
    """Phase A: decode one block's window and keep its core and its strips.

    Parameters
    ----------
    maps
        ``(C, [Z], Y, X)`` activated network outputs (numpy, zarr or lazy array).
    plan
        The plan ``block`` belongs to.
    block
        The block to decode.
    decoder
        ``(C, [z], y, x)`` window -> ``([z], y, x)`` labels, e.g.
        ``lambda w: labels_from_threshold(w[0])``.
    warn
        Warn when objects of the core touch the window's outer edge (the halo is too small).

    Returns
    -------
    BlockResult
    """
    labels = _decoded_window(maps, block, decoder)
    core_window = labels[block.core_in_window]
    lookup = _local_lookup(core_window, int(labels.max()) if labels.size else 0)
    core = lookup(core_window)
    strips = {}
    for other in plan.neighbours(block):
        on_other = intersect(block.window, other.core)
        under_other = intersect(block.core, other.window)
        if on_other is None or under_other is None:
            continue
        strips[other.index] = Strip(
            halo=lookup(labels[relative(on_other, block.window)]),
            core=lookup(labels[relative(under_other, block.window)]),
        )
    cut: set[int] = set()
    for face in _outer_faces(plan, block):
        ids = lookup(labels[face])
        cut.update(np.unique(ids[ids > 0]).tolist())
    if cut and warn:
        warnings.warn(_truncation_message(len(cut), plan), stacklevel=2)
    return BlockResult(index=block.index, n_labels=int(core.max()) if core.size else 0, core=core,
                       strips=strips, truncated=len(cut))


def _truncation_message(count: int, plan: BlockPlan) -> str:
    return (f"{count} object(s) reach the outer edge of their block's halo {plan.halo} and may be cut; "
            "use a halo of at least the largest object's extent plus the decoder's context")

def write_block(block: Block, lut: np.ndarray, out: Any, core: np.ndarray | None = None) -> None:
    """Phase C: write a block's core into ``out`` with global ids.

    Parameters
    ----------
    block
        The block.
    lut
        Its lookup table from :class:`Relabelling`.
    out
        Writable ``([Z], Y, X)`` integer array (numpy or zarr).
    core
        The block's local core labels; None reads them from ``out[block.core]``, where a
        first pass stored them (as :func:`decode_blockwise` does).
    """
    local = np.asarray(out[block.core]) if core is None else core
    out[block.core] = lut[local].astype(out.dtype, copy=False)


def _check_fits(count: int, out: Any, what: str) -> None:
    if count > np.iinfo(out.dtype).max:
        raise FluosegError(f"{count} {what} do not fit in a {out.dtype} label output; use uint32 or uint64")


def decode_blockwise(maps: Any, decoder: Decoder, *, block_shape: int | Sequence[int], halo: int | Sequence[int],
                     out: Any = None, min_iou: float = 0.5, stitched_axes: Sequence[int] = ()) -> Any:
    """Decode instance labels block by block and stitch them into ``out``.

    Memory beyond ``out`` is one block window of maps and labels plus the strips of the
    blocks whose neighbours are not decoded yet (one band of blocks). Local core ids are
    first staged in ``out`` itself, then rewritten with global ids, so nothing is decoded
    twice and no block is held in memory after its turn.

    Parameters
    ----------
    maps
        ``(C, [Z], Y, X)`` activated network outputs (numpy, zarr or lazy array).
    decoder
        Window maps -> labels, see :data:`Decoder`.
    block_shape, halo
        Core size and context per side, see :func:`~fluoseg.instance.blocks.plan_blocks`.
    out
        Writable ``([Z], Y, X)`` unsigned or signed integer array (numpy or zarr);
        a new ``uint32`` numpy array when omitted.
    min_iou
        Strip IoU above which two blocks' objects are merged (see :func:`link_blocks`).
    stitched_axes
        Axes along which the decoder links slices (``(0,)`` for
        :class:`~fluoseg.instance.stitch3d.StitchedSlices` on stacks), see
        :func:`~fluoseg.instance.blocks.plan_blocks`.

    Returns
    -------
    numpy.ndarray or array-like
        ``out``, holding ids ``1..N`` (0 = background).

    Raises
    ------
    FluosegError
        For maps that are not ``(C, [Z], Y, X)``, a bad block size or halo, or an output
        whose shape or integer type cannot hold the labels.
    """
    shape = tuple(int(n) for n in maps.shape)
    if len(shape) not in (3, 4):
        raise FluosegError(f"maps must be (channels, [Z,] Y, X), got shape {shape}")
    plan = plan_blocks(shape[1:], block_shape=block_shape, halo=halo, stitched_axes=stitched_axes)
    if out is None:
        out = np.zeros(plan.shape, _LOCAL_DTYPE)
    if tuple(out.shape) != plan.shape or np.dtype(out.dtype).kind not in "ui":
        raise FluosegError(f"the label output must be an integer array of shape {plan.shape}, "
                           f"got {out.dtype} of shape {tuple(out.shape)}")
    pending: dict[int, BlockResult] = {}
    links: dict[tuple[int, int], np.ndarray] = {}
    n_labels = []
    truncated = 0
    for block in plan:
        result = decode_block(maps, plan, block, decoder, warn=False)
        _check_fits(result.n_labels, out, "objects in one block")
        out[block.core] = result.core
        truncated += result.truncated
        n_labels.append(result.n_labels)
        for earlier in [i for i in result.strips if i < block.index]:
            links[(earlier, block.index)] = link_blocks(pending[earlier], result, min_iou=min_iou)
            del pending[earlier].strips[block.index], result.strips[earlier]
            if not pending[earlier].strips:
                del pending[earlier]
        if result.strips:
            pending[block.index] = result.without_core()
    if truncated:
        warnings.warn(_truncation_message(truncated, plan), stacklevel=2)
    relabelling = resolve_links(n_labels, links)
    _check_fits(relabelling.n_objects, out, "objects")
    for block, lut in zip(plan, relabelling.luts):
        write_block(block, lut, out)
    return out
