"""Phase B of blockwise decoding: which objects of neighbouring blocks are the same.

Each block's phase-A result (:class:`BlockResult`) carries, for each neighbour, the
*strip* they share: the block's halo prediction on the neighbour's core and its own core
labels under the neighbour's window. :func:`link_blocks` matches objects of two
neighbours by IoU on their strip (> ``min_iou``, in either direction);
:func:`resolve_links` merges matched objects with a union-find (connected components of
the match graph) and numbers them: each merged object is owned by its member in the
lowest block, and gets the global id ``offset[block] + rank``, where ``offset`` counts the
objects owned by earlier blocks. The output is one lookup table per block (local ->
global id), never a vector over all global ids. See :mod:`fluoseg.instance.blockwise`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from fluoseg.metrics.overlap import label_overlap

__all__ = ["BlockResult", "Relabelling", "Strip", "link_blocks", "resolve", "resolve_links"]


@dataclass
class Strip:
    """What one block knows about the region it shares with one neighbour.

    Attributes
    ----------
    halo
        The block's own labels on ``block.window ∩ neighbour.core`` (its halo prediction),
        as the block's local core ids; objects absent from the block's core are 0.
    core
        The block's local core labels on ``block.core ∩ neighbour.window``.
    """

    halo: np.ndarray
    core: np.ndarray


@dataclass
class BlockResult:
    """Phase A's output for one block.

    Attributes
    ----------
    index
        The block's :attr:`~fluoseg.instance.blocks.Block.index`.
    n_labels
        Number of objects in the core; their local ids are ``1..n_labels``.
    core
        ``uint32`` local labels of the core, or None once they were stored elsewhere.
    strips
        Per neighbour index, the :class:`Strip` shared with it.
    truncated
        Objects of the core that touch the window's outer edge inside the image.
    """

    index: int
    n_labels: int
    core: np.ndarray | None
    strips: dict[int, Strip] = field(default_factory=dict)
    truncated: int = 0

    def without_core(self) -> BlockResult:
        """A copy without the core labels (what phase B needs: counts and strips)."""
        return replace(self, core=None, strips=dict(self.strips))

@dataclass(frozen=True)
class Relabelling:
    """Phase B's output.

    Attributes
    ----------
    luts
        Per block, ``uint64`` lookup table local id -> global id (``lut[0] == 0``).
    n_objects
        Number of objects in the whole image; global ids are ``1..n_objects``.
    """

    luts: list[np.ndarray]
    n_objects: int

def _iou_pairs(first: np.ndarray, second: np.ndarray, min_iou: float) -> np.ndarray:
    """``(k, 2)`` label pairs of two same-shape label arrays with IoU > ``min_iou``."""
    overlap = label_overlap(first, second)
    keep = overlap.pair_iou > min_iou
    return np.stack([overlap.true_ids[overlap.pair_true[keep]], overlap.pred_ids[overlap.pair_pred[keep]]], axis=1)


def link_blocks(first: BlockResult, second: BlockResult, *, min_iou: float = 0.5) -> np.ndarray:
    """Phase B, one pair: objects of two neighbouring blocks that are the same object.

    Parameters
    ----------
    first, second
        Results of two neighbouring blocks (with their strips).
    min_iou
        An object's halo prediction and the neighbour's core object match when their IoU
        on the strip is above it; values >= 0.5 make every match one-to-one.

    Returns
    -------
    numpy.ndarray
        ``(k, 2)`` int64: local id in ``first``, local id in ``second``.
    """
    ours, theirs = first.strips[second.index], second.strips[first.index]
    if ours.halo.shape != theirs.core.shape or ours.core.shape != theirs.halo.shape:
        raise ValueError(f"blocks {first.index} and {second.index} come from different block plans")
    found = np.concatenate([
        _iou_pairs(ours.halo, theirs.core, min_iou),
        _iou_pairs(theirs.halo, ours.core, min_iou)[:, ::-1],
    ]).astype(np.int64)
    return np.unique(found, axis=0) if found.size else found.reshape(0, 2)


def resolve_links(n_labels: Sequence[int], links: Mapping[tuple[int, int], np.ndarray]) -> Relabelling:
    """Phase B, global step: merge linked objects and number them per block.

    Parameters
    ----------
    n_labels
        Objects per block, in block index order.
    links
        ``{(i, j): pairs}`` from :func:`link_blocks` of blocks ``i`` and ``j``.

    Returns
    -------
    Relabelling
        Global ids are consecutive, given in order of the owning block then local id.
    """
    counts = np.asarray(n_labels, dtype=np.int64)
    base = np.concatenate([[0], np.cumsum(counts)])  # object (block b, local l) has key base[b] + l - 1
    ends = [(base[i] + pairs[:, 0] - 1, base[j] + pairs[:, 1] - 1) for (i, j), pairs in links.items() if len(pairs)]
    merged_keys = owner_keys = np.zeros(0, np.int64)
    if ends:
        left = np.concatenate([a for a, _ in ends])
        right = np.concatenate([b for _, b in ends])
        nodes, inverse = np.unique(np.concatenate([left, right]), return_inverse=True)
        graph = coo_matrix((np.ones(left.size), (inverse[: left.size], inverse[left.size:])),
                           shape=(nodes.size, nodes.size))
        _, component = connected_components(graph, directed=False)
        owner = np.full(component.max() + 1, np.iinfo(np.int64).max)
        np.minimum.at(owner, component, nodes)  # the member in the lowest block, lowest id
        merged = nodes != owner[component]
        merged_keys, owner_keys = nodes[merged], owner[component[merged]]
    merged_block = np.searchsorted(base, merged_keys, side="right") - 1
    owner_block = np.searchsorted(base, owner_keys, side="right") - 1
    # Keys are sorted, so each block's merged objects are one run of merged_keys.
    runs = np.searchsorted(merged_block, np.arange(counts.size + 1))
    luts = []
    offset = 0
    for b, n in enumerate(counts):
        owned = np.ones(int(n) + 1, bool)
        owned[0] = False
        owned[merged_keys[runs[b]:runs[b + 1]] - base[b] + 1] = False
        lut = np.zeros(owned.size, np.uint64)
        lut[owned] = offset + np.arange(1, int(owned.sum()) + 1, dtype=np.uint64)
        offset += int(owned.sum())
        luts.append(lut)
    # Owners are numbered now; merged objects take their owner's id.
    for b, key, ob, okey in zip(merged_block, merged_keys, owner_block, owner_keys):
        luts[b][key - base[b] + 1] = luts[ob][okey - base[ob] + 1]
    return Relabelling(luts=luts, n_objects=offset)


def resolve(results: Sequence[BlockResult], *, min_iou: float = 0.5) -> Relabelling:
    """Phase B: link every pair of neighbouring blocks and merge, from all blocks' results.

    Parameters
    ----------
    results
        One :class:`BlockResult` per block of the plan (any order; cores not needed).
    min_iou
        See :func:`link_blocks`.

    Returns
    -------
    Relabelling
    """
    by_index = {r.index: r for r in results}
    if sorted(by_index) != list(range(len(results))):
        raise ValueError("resolve needs exactly one result for every block of the plan")
    links = {
        (i, j): link_blocks(by_index[i], by_index[j], min_iou=min_iou)
        for i in range(len(results)) for j in by_index[i].strips if j > i
    }
    return resolve_links([by_index[i].n_labels for i in range(len(results))], links)
