"""Objects of a label or mask image as polygons along pixel edges (for QuPath and ImageJ).

Each object is traced along the edges of its pixels, in the coordinates QuPath and ImageJ
use: pixel ``(row, col)`` covers ``x in [col, col + 1]``, ``y in [row, row + 1]``. Filling
the polygons (exterior minus holes) gives back exactly the object's pixels, so areas
measured in QuPath or Fiji equal pixel counts, which marching-squares contours (cutting
corners) would underestimate for small nuclei.

Every 4-connected part of an object is one :class:`Polygon`: an exterior ring (counter-
clockwise in the usual y-up sense, as GeoJSON's right-hand rule asks) and its holes
(clockwise). Pixels touching only at a corner are separate parts, as in a 4-connected
labelling. Torch-free; numpy and scikit-image only.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from fluoseg.errors import FluosegError

# Edge directions as (dy, dx); the boundary is walked with the object on the right (y down).
_RIGHT, _DOWN, _LEFT, _UP = (0, 1), (1, 0), (0, -1), (-1, 0)
_TURN_RIGHT = {_RIGHT: _DOWN, _DOWN: _LEFT, _LEFT: _UP, _UP: _RIGHT}


@dataclass(frozen=True)
class Polygon:
    """One 4-connected part of an object.

    Attributes
    ----------
    exterior
        ``(n, 2)`` integer ``x, y`` vertices, not repeated at the end.
    holes
        Rings of the same form around pixels inside the exterior that are not the object's.
    """

    exterior: np.ndarray
    holes: tuple[np.ndarray, ...] = ()


def label_polygons(labels: np.ndarray) -> Iterator[tuple[int, list[Polygon]]]:
    """``(label, polygons)`` for every object of a 2D label image, in label order.

    Raises
    ------
    FluosegError
        If the image is not 2D.
    """
    from scipy import ndimage

    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise FluosegError(f"polygons are traced on 2D images; this one has shape {labels.shape} (export stacks "
                           "as TIFF instead)")
    for index, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        offset = np.array([box[1].start, box[0].start])  # x, y of the crop's corner
        yield index, [Polygon(ring + offset, tuple(h + offset for h in holes))
                      for ring, holes in _component_rings(labels[box] == index)]


def mask_polygons(mask: np.ndarray) -> list[Polygon]:
    """The polygons of every 4-connected component of a 2D binary mask."""
    from skimage.measure import label

    return [polygon for _, polygons in label_polygons(label(np.asarray(mask) > 0, connectivity=1))
            for polygon in polygons]


def polygon_area(ring: np.ndarray) -> float:
    """Signed area (shoelace) of a ring in ``x, y`` pixel coordinates: positive for exteriors."""
    x, y = ring[:, 0].astype(np.float64), ring[:, 1].astype(np.float64)
    return float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y) / 2)


def _component_rings(mask: np.ndarray) -> Iterator[tuple[np.ndarray, list[np.ndarray]]]:
    """Exterior and holes of each 4-connected component of a small mask."""
    from skimage.measure import label

    components = label(mask, connectivity=1)
    for index in range(1, int(components.max()) + 1):
        rings = _trace(components == index)
        rings.sort(key=polygon_area, reverse=True)
        yield rings[0], rings[1:]


def _trace(mask: np.ndarray) -> list[np.ndarray]:
    """All boundary rings of a 4-connected mask, each with collinear vertices removed."""
    padded = np.pad(mask, 1)
    inside = padded[1:-1, 1:-1]
    edges: dict[tuple[int, int], list[tuple[int, int]]] = {}

    def add(rows: np.ndarray, cols: np.ndarray, direction: tuple[int, int]) -> None:
        for start in zip(rows.tolist(), cols.tolist()):
            edges.setdefault(start, []).append(direction)

    # A pixel's edge is on the boundary where its neighbour across that edge is outside;
    # vertices are (row, col) pixel corners, walked clockwise on screen around each pixel.
    rows, cols = np.nonzero(inside & ~padded[:-2, 1:-1])
    add(rows, cols, _RIGHT)
    rows, cols = np.nonzero(inside & ~padded[1:-1, 2:])
    add(rows, cols + 1, _DOWN)
    rows, cols = np.nonzero(inside & ~padded[2:, 1:-1])
    add(rows + 1, cols + 1, _LEFT)
    rows, cols = np.nonzero(inside & ~padded[1:-1, :-2])
    add(rows + 1, cols, _UP)
    rings = []
    while edges:
        # Start where only one boundary passes, so a ring never runs on through a pinch corner.
        vertex = next(v for v, options in edges.items() if len(options) == 1)
        direction: tuple[int, int] | None = None
        vertices = []
        while vertex in edges:
            options = edges[vertex]
            # Where two boundaries meet at a corner, turn right: stay on the same pixels.
            turn = _TURN_RIGHT[direction] if direction is not None else None
            chosen = turn if len(options) > 1 and turn in options else options[0]
            options.remove(chosen)
            if not options:
                del edges[vertex]
            vertices.append(vertex)
            direction = chosen
            vertex = (vertex[0] + chosen[0], vertex[1] + chosen[1])
        rings.append(_corners(np.array(vertices, dtype=np.int64)))
    return rings


def _corners(vertices: np.ndarray) -> np.ndarray:
    """The ring's vertices where its direction changes, as ``x, y``."""
    before = vertices - np.roll(vertices, 1, axis=0)
    after = np.roll(vertices, -1, axis=0) - vertices
    turning = np.any(before != after, axis=1)
    return vertices[turning][:, ::-1].copy()
