"""Segmentations as objects for QuPath (GeoJSON) and Fiji/ImageJ (ROI sets).

- :func:`write_geojson`: a GeoJSON ``FeatureCollection`` QuPath imports by drag and drop
  (*File > Import objects from file*). Instance labels become ``detection`` objects named
  by their label id; semantic masks become ``annotation`` objects classified by class
  name, one per connected part. Coordinates are pixels (QuPath's image space).
- :func:`write_imagej_rois`: a ``.zip`` ROI set for Fiji's ROI Manager (*File > Open*),
  one traced polygon per object named ``label-<id>`` or ``<class>-<n>``. ImageJ polygons
  cannot have holes: an object's holes are left out of its ROI.

Both trace pixel edges (:mod:`fluoseg.io.contours`), so the objects' areas equal their
pixel counts, and both write atomically.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from fluoseg.errors import FluosegError
from fluoseg.io._atomic import atomic_path, write_text_atomically
from fluoseg.io.contours import Polygon, label_polygons, mask_polygons

_COLOURS = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240))


def geojson_features(segmentation: np.ndarray, *, classes: Sequence[str] | None = None) -> list[dict]:
    """GeoJSON features of instance labels ``(Y, X)`` or of masks ``(n_classes, Y, X)`` with ``classes``.

    Raises
    ------
    FluosegError
        For masks without one class name per channel, or images that are not 2D.
    """
    features = []
    for name, polygons, classification in _objects(segmentation, classes):
        rings = [[_closed(p.exterior), *(_closed(h) for h in p.holes)] for p in polygons]
        geometry = ({"type": "Polygon", "coordinates": rings[0]} if len(rings) == 1
                    else {"type": "MultiPolygon", "coordinates": rings})
        properties: dict = {"objectType": "annotation" if classification else "detection", "name": name}
        if classification:
            colour = _COLOURS[list(classes or ()).index(classification) % len(_COLOURS)]
            properties["classification"] = {"name": classification, "color": list(colour)}
        features.append({"type": "Feature", "geometry": geometry, "properties": properties})
    return features


def write_geojson(path: str | Path, segmentation: np.ndarray, *, classes: Sequence[str] | None = None,
                  overwrite: bool = False) -> Path:
    """Write :func:`geojson_features` as a ``FeatureCollection`` (atomically)."""
    path = Path(path)
    collection = {"type": "FeatureCollection", "features": geojson_features(segmentation, classes=classes)}
    if path.exists() and not overwrite:
        raise FluosegError("output exists; pass --overwrite to replace it", path=path)
    return write_text_atomically(path, json.dumps(collection, separators=(",", ":")))


def write_imagej_rois(path: str | Path, segmentation: np.ndarray, *, classes: Sequence[str] | None = None,
                      overwrite: bool = False) -> Path:
    """Write one traced polygon ROI per object part into an ImageJ ROI set ``.zip``.

    Raises
    ------
    FluosegError
        As :func:`geojson_features`, or when no object was found (an empty ROI set would
        not open in Fiji).
    """
    import roifile

    path = Path(path)
    rois = []
    for name, polygons, _ in _objects(segmentation, classes):
        for part, polygon in enumerate(polygons):
            roi = roifile.ImagejRoi.frompoints(polygon.exterior, name=name if part == 0 else f"{name}.{part}")
            roi.roitype = roifile.ROI_TYPE.TRACED  # what Fiji's wand makes: a polygon on pixel edges
            rois.append(roi)
    if not rois:
        raise FluosegError("no objects were found, so there is no ROI to write; use --format tif", path=path)
    with atomic_path(path, overwrite=overwrite) as temporary:
        roifile.roiwrite(temporary, rois, mode="w")
    return path


def _objects(segmentation: np.ndarray, classes: Sequence[str] | None
             ) -> Iterator[tuple[str, list[Polygon], str | None]]:
    """``(name, polygons, class or None)`` per object: labels by id, masks by class and part."""
    array = np.asarray(segmentation)
    if array.ndim == 2:
        for label, polygons in label_polygons(array):
            yield f"label-{label}", polygons, None
        return
    if array.ndim != 3 or classes is None or len(classes) != array.shape[0]:
        raise FluosegError(f"objects come from 2D labels or per-class 2D masks with their class names; got shape "
                           f"{array.shape} and classes {list(classes or [])} (3D stacks: use --format tif)")
    for name, mask in zip(classes, array):
        for part, polygon in enumerate(mask_polygons(mask), start=1):
            yield f"{name}-{part}", [polygon], name


def _closed(ring: np.ndarray) -> list[list[int]]:
    points = ring.tolist()
    return points + points[:1]
