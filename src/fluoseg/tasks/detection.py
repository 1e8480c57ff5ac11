"""Detection models (Mask R-CNN, LACSS) as an instance method: objects found, not maps decoded.

A config with ``task: instance`` and a detector as ``model.name`` trains and predicts
through the same trainer, run directory and :class:`~fluoseg.infer.Segmenter` as the
U-Nets; what differs is in this task (:class:`DetectionTask`, instance method
``"detection"``, chosen by :func:`fluoseg.tasks.make_task` for every registered detector):

- training: the label patches become per-object targets
  (:func:`~fluoseg.models.detection.targets_from_labels`), or, with ``supervision:
  points``, a point per object plus the foreground; the detector computes its own losses
  and their sum is the training loss (:meth:`DetectionTask.batch_loss`);
- prediction: an image larger than the tile is cut into overlapping tiles; the
  detections of each tile are moved to image coordinates and a tile keeps only those
  whose box centre lies in its *core* (the tile minus half the overlap on each side
  shared with a neighbour), so a nucleus crossing a tile border is found once. The kept
  objects are pasted into one label image by descending score, as
  :func:`~fluoseg.models.detection.labels_from_detections` does
  (:meth:`DetectionTask.predict_objects`).

Detectors are 2D and have no marker input layer: missing markers are zero slots, and the
availability vector is not used.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from torch import nn

from fluoseg.data.sample import Sample
from fluoseg.errors import FluosegError
from fluoseg.models.detection import targets_from_labels
from fluoseg.tasks.instance import InstanceTask, register_instance_method
from fluoseg.tiling import TileGeometry

METHOD = "detection"
SUPERVISIONS = ("full", "points")
"""What a detector learns from: instance labels, or one point per object plus the foreground."""
SCORE_GRID = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
"""Detection score thresholds that validation and ``fluoseg tune`` try."""


@dataclass(frozen=True)
class DetectionTile:
    """One tile of an image: the window the detector sees and the core whose objects it keeps.

    All bounds are ``[start, stop)`` pixel rows (``y``) and columns (``x``) of the image.
    """

    window: tuple[int, int, int, int]
    """``y0, y1, x0, x1`` of the tile."""
    core: tuple[int, int, int, int]
    """``y0, y1, x0, x1`` of the region this tile is responsible for (the cores partition the image)."""


def _axis_tiles(length: int, size: int, overlap: int, alignment: int) -> list[tuple[int, int, int, int]]:
    """``(start, stop, core_start, core_stop)`` along one axis."""
    if length <= size:
        return [(0, length, 0, length)]
    step = max(alignment, (size - overlap) // alignment * alignment)
    last = (length - size) // alignment * alignment  # aligned, so the last tile may be up to alignment-1 larger
    starts = list(range(0, last, step)) + [last]
    stops = [start + size for start in starts[:-1]] + [length]
    # Neighbouring tiles share [start_next, stop_prev); each keeps the objects centred on its half of that.
    bounds = [0] + [(starts[i + 1] + stops[i]) // 2 for i in range(len(starts) - 1)] + [length]
    return [(starts[i], stops[i], bounds[i], bounds[i + 1]) for i in range(len(starts))]


def detection_tiles(shape: Sequence[int], *, size: int, overlap: int, alignment: int = 1) -> list[DetectionTile]:
    """Overlapping tiles covering a ``(Y, X)`` image, with cores that partition it.

    Parameters
    ----------
    shape
        Image height and width.
    size
        Tile height and width; an image no larger than that is one tile.
    overlap
        Overlap of neighbouring tiles, pixels: an object narrower than half of it lies whole
        in the tile whose core holds its centre.
    alignment
        Tile starts are multiples of it (the detector's stride), so a tile's anchors and
        pooling windows coincide with the whole image's; the last tile of a row is then up
        to ``alignment - 1`` pixels larger.
    """
    if size < 1 or overlap < 0 or alignment < 1:
        raise ValueError(f"invalid tiling: size {size}, overlap {overlap}, alignment {alignment}")
    rows = _axis_tiles(int(shape[0]), size, overlap, alignment)
    cols = _axis_tiles(int(shape[1]), size, overlap, alignment)
    return [DetectionTile(window=(y0, y1, x0, x1), core=(cy0, cy1, cx0, cx1))
            for y0, y1, cy0, cy1 in rows for x0, x1, cx0, cx1 in cols]


@dataclass
class DetectedObjects:
    """The objects found in one image.

    Attributes
    ----------
    labels
        ``(Y, X)`` int32 label image, objects numbered 1..m by descending score.
    scores
        ``(m,)`` float64 score of each label (what COCO AP ranks by).
    score_map
        ``(1, Y, X)`` float32: each object's pixels hold its score (0 elsewhere); the
        "activated map" a detection run writes with ``--probabilities``.
    """

    labels: np.ndarray
    scores: np.ndarray
    score_map: np.ndarray


def labels_at_score(found: DetectedObjects, min_score: float) -> np.ndarray:
    """The labels of ``found`` keeping only objects scoring at least ``min_score``.

    Objects are numbered by descending score and pasted best first, so this equals the
    labels of a prediction made with that threshold: no second prediction is needed.
    """
    return np.where(found.labels <= np.count_nonzero(found.scores >= min_score), found.labels, 0)


@dataclass(frozen=True)
class _Object:
    score: float
    y: int
    x: int
    mask: np.ndarray  # bool crop at (y, x)


def paste_objects(shape: Sequence[int], objects: Sequence[_Object], *, min_area: int) -> DetectedObjects:
    """Objects pasted by descending score, each taking the pixels no better object took.

    The rule of :func:`~fluoseg.models.detection.labels_from_detections`, on cropped masks
    so that a large image does not need one full-size mask per object.
    """
    labels = np.zeros(tuple(shape), np.int32)
    score_map = np.zeros((1, *shape), np.float32)
    kept: list[float] = []
    for index in np.argsort([-o.score for o in objects], kind="stable"):
        obj = objects[int(index)]
        h, w = obj.mask.shape
        window = (slice(obj.y, obj.y + h), slice(obj.x, obj.x + w))
        free = obj.mask & (labels[window] == 0)
        if free.sum() < max(min_area, 1):
            continue
        kept.append(obj.score)
        labels[window][free] = len(kept)
        score_map[(0, *window)][free] = obj.score
    return DetectedObjects(labels=labels, scores=np.asarray(kept, np.float64), score_map=score_map)


@register_instance_method(METHOD)
class DetectionTask(InstanceTask):
    """Instance segmentation by a detection model (``model.name: maskrcnn`` or ``lacss``).

    Parameters
    ----------
    supervision
        ``"full"`` (instance labels) or ``"points"`` (LACSS: one point per object and the
        foreground mask; see :mod:`fluoseg.data.manifest` for ``points:``).
    min_score
        Lowest score of a detection that becomes an object.
    threshold
        Mask probability from which a pixel belongs to an object.
    tile_overlap
        Overlap of prediction tiles, pixels; more than the largest object's diameter.
    min_size
        Fewest pixels of an object.
    target_diameter
        Not supported by detectors (their anchors or crops set the object sizes); must be ``None``.
    """

    fill = {"labels": 0, "points": 0, "foreground": 0}

    def __init__(self, *, supervision: str = "full", min_score: float = 0.5, threshold: float = 0.5,
                 tile_overlap: int = 64, min_size: int = 10, target_diameter: float | None = None) -> None:
        if supervision not in SUPERVISIONS:
            raise FluosegError(f"instance.supervision must be one of {list(SUPERVISIONS)}, got {supervision!r}")
        if target_diameter is not None:
            raise FluosegError("instance.target_diameter does not apply to detection models; leave it out and "
                               "set the detector's sizes (anchor_sizes, crop_size) instead")
        super().__init__(min_size=min_size, target_diameter=None)
        self.supervision, self.min_score, self.threshold = supervision, float(min_score), float(threshold)
        self.tile_overlap = int(tile_overlap)

    def output_channels(self) -> int:
        return 0  # a detector has no logit maps

    def activated_channels(self) -> int:
        return 1  # the score map of DetectedObjects

    def read_annotation(self, sample: Sample, spatial_shape: tuple[int, ...]) -> np.ndarray:
        """Instance labels, or (``supervision: points``) the points and foreground in one label-like image.

        The points image is 0 for background, 1 for foreground and ``k + 2`` at the pixel of
        point ``k`` (rounded), so that it is cut into patches, flipped, rotated and resampled
        (nearest neighbour) exactly like labels. A point's pixel counts as foreground even
        where the mask says background (a click on a cell's edge).
        """
        if len(spatial_shape) != 2:
            raise FluosegError(f"detection models are 2D, but sample {sample.id!r} has {len(spatial_shape)} "
                               "spatial axes", path=sample.image_path)
        if self.supervision == "full":
            return super().read_annotation(sample, spatial_shape)
        points = sample.read_points(spatial_shape)
        encoded = sample.read_foreground(spatial_shape).astype(np.int32)
        pixels = np.clip(np.round(points).astype(np.int64), 0, np.asarray(spatial_shape) - 1)
        encoded[pixels[:, 0], pixels[:, 1]] = np.arange(len(points), dtype=np.int32) + 2
        return encoded

    def make_targets(self, annotation: np.ndarray, *, source: Any = None) -> dict[str, np.ndarray]:
        annotation = np.asarray(annotation).astype(np.int32)
        if self.supervision == "full":
            return {"labels": annotation}
        return {"points": np.where(annotation >= 2, annotation - 1, 0).astype(np.int32),
                "foreground": (annotation > 0).astype(np.uint8)}

    def sampling_map(self, targets: dict[str, np.ndarray]) -> np.ndarray:
        if self.supervision == "full":
            return (targets["labels"] > 0).astype(np.int64)
        return targets["foreground"].astype(np.int64)

    def score_counts(self, decoded: np.ndarray, targets: dict[str, np.ndarray]) -> np.ndarray:
        """TP, FP, FN at IoU 0.5 against labels; with point supervision, of objects against points.

        Points: an object holding at least one point is a true positive (its other points are
        missed objects, false negatives), an object holding none a false positive, and a point
        in no object a false negative.
        """
        if self.supervision == "full":
            return super().score_counts(decoded, targets)
        hit = decoded[targets["points"] > 0]
        n_objects = len(np.unique(decoded[decoded > 0]))
        tp = len(np.unique(hit[hit > 0]))
        return np.array([tp, n_objects - tp, hit.size - tp], dtype=np.int64)

    def score(self, counts: np.ndarray) -> dict[str, float]:
        scores = super().score(counts)
        if self.supervision == "full":
            return scores
        return {"f1_points": scores["f1_at_0.5"], "score": scores["score"]}

    def batch_loss(self, model: nn.Module, images: torch.Tensor, availability: torch.Tensor,
                   targets: dict[str, torch.Tensor]) -> torch.Tensor:
        """The detector's losses on a batch of patches, summed (each weighted 1, as both papers do)."""
        device = images.device
        per_image = []
        if self.supervision == "full":
            for labels in targets["labels"].cpu().numpy():
                objects = targets_from_labels(labels)
                per_image.append({k: torch.as_tensor(objects[k], device=device) for k in ("boxes", "labels", "masks")})
        else:
            for points, foreground in zip(targets["points"].cpu().numpy(), targets["foreground"]):
                per_image.append({"points": torch.as_tensor(_point_list(points), device=device),
                                  "foreground": foreground.to(torch.uint8)})
        losses = model(images, per_image)
        return torch.stack(list(losses.values())).sum()

    def loss(self, logits: torch.Tensor, targets: dict[str, torch.Tensor]) -> torch.Tensor:
        raise TypeError("a detector computes its own losses; use DetectionTask.batch_loss")

    def activate(self, logits: torch.Tensor) -> torch.Tensor:
        raise TypeError("a detector has no logit maps; use DetectionTask.predict_objects")

    def decode(self, activated: np.ndarray) -> np.ndarray:
        raise TypeError("a detector has no maps to decode; use DetectionTask.predict_objects")

    def validate(self, model: nn.Module, images: Sequence[tuple[np.ndarray, dict[str, np.ndarray]]], *,
                 geometry: TileGeometry) -> dict[str, float]:
        """Validation scores of whole images at the best detection score threshold of :data:`SCORE_GRID`.

        A detector's scores are not calibrated while it trains (LACSS's location scores start
        near 0.01 and stay under 0.5 for many steps), so scoring at the fixed ``min_score``
        would give 0 for those epochs and keep ``best.pt`` at the first. Each image is
        predicted once keeping every detection; the returned scores are those of the best
        threshold, which is returned too (``min_score``; ``fluoseg tune`` chooses the one
        prediction uses).

        Parameters
        ----------
        images
            ``(K, Y, X)`` normalised images with their targets (:meth:`make_targets`).
        geometry
            Tiling, as for :meth:`predict_objects`.
        """
        found = [(self.predict_objects(model, image, geometry=geometry, min_score=0.0), targets)
                 for image, targets in images]
        best: dict[str, float] = {}
        for min_score in SCORE_GRID:
            counts = sum(self.score_counts(labels_at_score(objects, min_score), targets) for objects, targets in found)
            scores = self.score(np.asarray(counts))
            if not best or scores["score"] > best["score"]:
                best = {**scores, "min_score": min_score}
        return best

    @torch.no_grad()
    def predict_objects(self, model: nn.Module, image: np.ndarray, *, geometry: TileGeometry, batch_size: int = 1,
                        progress: bool = False, min_score: float | None = None) -> DetectedObjects:
        """Detect the objects of a whole normalised ``(K, Y, X)`` image, tile by tile.

        Parameters
        ----------
        model
            A detector (evaluation mode is set here).
        image
            Marker slots, normalised like the training samples.
        geometry
            Tile size (``input_size``) and stride alignment (:func:`fluoseg.tiling.geometry_for`).
        batch_size
            Tiles of equal size per forward pass.
        progress
            Unused (tiles are few); accepted for symmetry with map tiling.
        min_score
            Lowest score kept, instead of the task's ``min_score``.
        """
        if image.ndim != 3:
            raise FluosegError(f"detection models are 2D; got an image of {image.ndim - 1} spatial axes")
        model.eval()
        device = next(model.parameters()).device
        tiles = detection_tiles(image.shape[1:], size=geometry.input_size, overlap=self.tile_overlap,
                                alignment=geometry.alignment)
        objects: list[_Object] = []
        for start in range(0, len(tiles), max(int(batch_size), 1)):
            group = tiles[start : start + max(int(batch_size), 1)]
            for same_shape in _by_shape(group):
                windows = np.stack([image[:, t.window[0] : t.window[1], t.window[2] : t.window[3]] for t in same_shape])
                detections = model(torch.as_tensor(np.ascontiguousarray(windows, np.float32), device=device))
                for tile, detected in zip(same_shape, detections):
                    objects.extend(self._kept(tile, detected, image.shape[1:],
                                              self.min_score if min_score is None else min_score))
        return paste_objects(image.shape[1:], objects, min_area=self.min_size)

    def _kept(self, tile: DetectionTile, detected: dict[str, torch.Tensor], shape: Sequence[int],
              min_score: float) -> list[_Object]:
        """The tile's detections centred in its core, as cropped masks in image coordinates.

        A core on the image border extends beyond it, so that a box clipped to the border
        (centre on the border line) still belongs to a tile.
        """
        y0, _, x0, _ = tile.window
        cy0, cy1, cx0, cx1 = tile.core
        cy0, cx0 = (-np.inf if cy0 == 0 else cy0), (-np.inf if cx0 == 0 else cx0)
        cy1, cx1 = (np.inf if cy1 == shape[0] else cy1), (np.inf if cx1 == shape[1] else cx1)
        scores = detected["scores"].float().cpu().numpy()
        boxes = detected["boxes"].float().cpu().numpy()
        kept = []
        for index in np.flatnonzero(scores >= min_score):
            x1, y1, x2, y2 = boxes[index]
            cy, cx = y0 + (y1 + y2) / 2, x0 + (x1 + x2) / 2
            if not (cy0 <= cy < cy1 and cx0 <= cx < cx1):
                continue
            mask = (detected["masks"][index] >= self.threshold).cpu().numpy()
            found = ndimage.find_objects(mask.astype(np.uint8))
            if not found or found[0] is None:
                continue
            rows, cols = found[0]
            kept.append(_Object(score=float(scores[index]), y=y0 + rows.start, x=x0 + cols.start,
                                mask=mask[rows, cols]))
        return kept

    def options(self) -> dict[str, Any]:
        return {"supervision": self.supervision, "min_score": self.min_score, "threshold": self.threshold,
                "tile_overlap": self.tile_overlap}


def _point_list(points: np.ndarray) -> np.ndarray:
    """``(n, 2)`` float32 ``(y, x)`` of a point image (value k at point k's pixels; the mean of
    several pixels, as resampling to a finer grid leaves)."""
    ids = np.unique(points[points > 0])
    if not len(ids):
        return np.zeros((0, 2), np.float32)
    return np.asarray(ndimage.center_of_mass(np.ones(points.shape), points, ids), np.float32).reshape(-1, 2)


def _by_shape(tiles: Sequence[DetectionTile]) -> list[list[DetectionTile]]:
    groups: dict[tuple[int, int], list[DetectionTile]] = {}
    for tile in tiles:
        groups.setdefault((tile.window[1] - tile.window[0], tile.window[3] - tile.window[2]), []).append(tile)
    return list(groups.values())
