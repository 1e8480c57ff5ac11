"""Aggregated Jaccard Index (AJI): Kumar et al.'s definition and Cellpose's variant.

Both variants are a ratio ``C / U`` of an aggregated intersection ``C`` and an aggregated
union ``U`` in pixels. Results keep ``C`` and ``U`` so that a dataset-level AJI pools them
(``sum C / sum U`` over images, as Kromp et al.'s evaluation code does) rather than averaging
per-image ratios. ``C / U`` with ``U = 0`` (no objects in truth nor prediction) is 1.0.

Kumar et al. (``aggregated_jaccard_index``)
    N. Kumar et al., "A Dataset and a Technique for Generalized Nuclear Segmentation for
    Computational Pathology", IEEE Trans. Med. Imaging 36(7), 2017, Algorithm 1. For every
    truth object ``G_i``, take the predicted object ``S_j*`` with the highest IoU with it —
    a prediction may be chosen by several truth objects — and add ``|G_i ∩ S_j*|`` to ``C``
    and ``|G_i ∪ S_j*|`` to ``U``. Finally add the area of every prediction never chosen::

        AJI = sum_i |G_i ∩ S_j*(i)| / (sum_i |G_i ∪ S_j*(i)| + sum_{k unused} |S_k|)

    * Ties (several predictions with the same highest IoU) go to the smallest label.
    * A truth object that no prediction overlaps adds ``|G_i|`` to ``U`` and chooses no
      prediction (Kumar's pseudo-code would pick an arbitrary zero-IoU prediction).
    * Kromp et al.'s published AJI came from a different routine
      (``calculateAggregatedJaccardIndex`` in NuclearSegmentationPipeline) that skips already
      used predictions and accumulates at every running-maximum update; it is not reproduced.

Cellpose (``aggregated_jaccard_index_cellpose``)
    ``cellpose.metrics.aggregated_jaccard_index`` (Cellpose 1-4): truth and predicted objects
    are paired one-to-one by the assignment that maximises first the number of pairs with
    ``IoU >= 0.5`` and then the sum of IoU over all assigned pairs (also pairs below 0.5);
    ``C`` is the summed intersection of the assigned pairs and ``U`` is the area of the union
    of *all* foreground, truth or predicted::

        AJI_cellpose = sum_{(i,j) assigned} |G_i ∩ S_j| / |(∪ G) ∪ (∪ S)|

    Cellpose returns NaN when both images are empty; this returns 1.0.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from fluoseg.errors import FluosegError
from fluoseg.metrics.overlap import LabelOverlap, label_overlap

__all__ = ["AJIResult", "aggregated_jaccard_index", "aggregated_jaccard_index_cellpose", "pool_aji"]


@dataclass(frozen=True)
class AJIResult:
    """Aggregated intersection and union of an AJI computation.

    Attributes
    ----------
    variant
        ``"kumar"`` or ``"cellpose"``.
    intersection
        Aggregated intersection ``C`` in pixels.
    union
        Aggregated union ``U`` in pixels.
    """

    variant: str
    intersection: int
    union: int

    @property
    def value(self) -> float:
        """``C / U``; 1.0 when ``U = 0`` (no objects at all)."""
        return 1.0 if self.union == 0 else self.intersection / self.union


def pool_aji(results: Iterable[AJIResult]) -> AJIResult:
    """Dataset-level AJI: intersections and unions summed over images (then ``C / U``).

    Raises
    ------
    FluosegError
        If the results mix variants or none are given.
    """
    items = list(results)
    if not items:
        raise FluosegError("no AJI results to pool")
    variants = {r.variant for r in items}
    if len(variants) != 1:
        raise FluosegError(f"cannot pool different AJI variants {sorted(variants)}")
    return AJIResult(variant=items[0].variant, intersection=sum(r.intersection for r in items),
                     union=sum(r.union for r in items))


def aggregated_jaccard_index(true_labels: Any, pred_labels: Any, *,
                             overlap: LabelOverlap | None = None) -> AJIResult:
    """Aggregated Jaccard Index exactly as Kumar et al. 2017 define it (see the module notes).

    Parameters
    ----------
    true_labels, pred_labels
        Label images of the same shape (ignored when ``overlap`` is given; pass ``None``).
    overlap
        A precomputed :func:`~fluoseg.metrics.overlap.label_overlap`.

    Returns
    -------
    AJIResult
        ``.value`` is the AJI; ``.intersection`` / ``.union`` pool over images.

    Examples
    --------
    One truth object of 4 pixels split into two predictions of 2 pixels:
    ``C = 2``, ``U = 4 + 2`` (the second half is unused), AJI = 1/3.

    >>> truth = np.array([[1, 1, 1, 1]]); pred = np.array([[1, 1, 2, 2]])
    >>> round(aggregated_jaccard_index(truth, pred).value, 4)
    0.3333
    """
    if overlap is None:
        overlap = label_overlap(true_labels, pred_labels)
    rows, cols, inter = overlap.pair_true, overlap.pair_pred, overlap.pair_intersection
    union = overlap.pair_union
    iou = inter / union
    # Best pair per truth object: highest IoU, then smallest prediction label (index).
    order = np.lexsort((cols, -iou, rows))
    first = np.ones(order.size, bool)
    first[1:] = rows[order][1:] != rows[order][:-1]
    best = order[first]
    used = np.zeros(overlap.n_pred, bool)
    used[cols[best]] = True
    unmatched_true = np.ones(overlap.n_true, bool)
    unmatched_true[rows[best]] = False
    c = int(inter[best].sum())
    u = int(union[best].sum()) + int(overlap.true_sizes[unmatched_true].sum()) + int(overlap.pred_sizes[~used].sum())
    return AJIResult(variant="kumar", intersection=c, union=u)


def aggregated_jaccard_index_cellpose(true_labels: Any, pred_labels: Any, *,
                                      overlap: LabelOverlap | None = None) -> AJIResult:
    """Cellpose's AJI variant: one-to-one assignment, union of all foreground (module notes).

    Parameters
    ----------
    true_labels, pred_labels
        Label images of the same shape (ignored when ``overlap`` is given; pass ``None``).
    overlap
        A precomputed :func:`~fluoseg.metrics.overlap.label_overlap`.

    Returns
    -------
    AJIResult
        ``intersection`` = summed overlap of the assigned pairs, ``union`` = foreground union.
    """
    if overlap is None:
        overlap = label_overlap(true_labels, pred_labels)
    rows, cols, inter = overlap.pair_true, overlap.pair_pred, overlap.pair_intersection
    foreground_union = overlap.true_foreground + overlap.pred_foreground - overlap.foreground_intersection
    if rows.size == 0:
        return AJIResult(variant="cellpose", intersection=0, union=foreground_union)
    iou = inter / overlap.pair_union
    # Pairs that share no pixel contribute neither to the objective nor to C, so the
    # assignment separates into the connected groups of touching objects.
    n_t = overlap.n_true
    graph = coo_matrix((np.ones(rows.size), (rows, n_t + cols)), shape=(n_t + overlap.n_pred,) * 2)
    _, component = connected_components(graph, directed=False)
    group = component[rows]
    order = np.argsort(group, kind="stable")
    bounds = np.flatnonzero(np.diff(group[order])) + 1
    total = 0
    for members in np.split(order, bounds):
        if members.size == 1:
            total += int(inter[members[0]])
            continue
        r_ids, r = np.unique(rows[members], return_inverse=True)
        c_ids, c = np.unique(cols[members], return_inverse=True)
        weight = np.zeros((r_ids.size, c_ids.size))
        weight[r, c] = (iou[members] >= 0.5) + iou[members] / (2.0 * min(r_ids.size, c_ids.size))
        row_ind, col_ind = linear_sum_assignment(weight, maximize=True)
        shared = np.zeros((r_ids.size, c_ids.size), np.int64)
        shared[r, c] = inter[members]
        total += int(shared[row_ind, col_ind].sum())
    return AJIResult(variant="cellpose", intersection=total, union=foreground_union)
