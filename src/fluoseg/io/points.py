"""Point annotations: one ``(y, x)`` point per object in a CSV file with a ``y,x`` header.

LACSS trains from such points plus a foreground mask (weak supervision). The file holds one
row per object, pixel coordinates of the image (row ``y``, column ``x``, from 0; fractions
allowed)::

    y,x
    12.0,40.5
    31,7

Further columns (e.g. a label) are ignored.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fluoseg.errors import FluosegError
from fluoseg.io._atomic import write_csv_atomically
from fluoseg.io._oserrors import os_errors_as_user_errors

COLUMNS = ("y", "x")


def read_points_csv(path: str | Path, shape: Sequence[int] | None = None) -> np.ndarray:
    """The ``(n, 2)`` float32 ``(y, x)`` points of a CSV file.

    Parameters
    ----------
    path
        CSV file with at least the columns ``y`` and ``x``.
    shape
        ``(Y, X)`` of the image the points belong to: every point must lie inside it
        (``0 <= y < Y``, ``0 <= x < X``).

    Raises
    ------
    FluosegError
        One line naming the file: unreadable, no ``y``/``x`` header, a value that is not a
        finite number, or a point outside the image.
    """
    path = Path(path)
    with os_errors_as_user_errors(path, "read"):
        text = path.read_text(encoding="utf-8-sig")
    reader = csv.reader(text.splitlines())
    header = [h.strip().lower() for h in next(reader, [])]
    if not set(COLUMNS) <= set(header):
        raise FluosegError(f"a points file needs a header with columns y,x; found {header}", path=path)
    iy, ix = header.index("y"), header.index("x")
    points = []
    for line, row in enumerate(reader, start=2):
        if not any(cell.strip() for cell in row):
            continue
        try:
            y, x = float(row[iy]), float(row[ix])
        except (IndexError, ValueError):
            raise FluosegError(f"line {line}: y and x must be numbers, got {row}", path=path) from None
        if not (math.isfinite(y) and math.isfinite(x)):
            raise FluosegError(f"line {line}: y and x must be finite numbers, got {row}", path=path)
        if shape is not None and not (0 <= y < shape[0] and 0 <= x < shape[1]):
            raise FluosegError(f"line {line}: point (y={y:g}, x={x:g}) lies outside the {shape[0]}x{shape[1]} "
                               "image; coordinates are pixel rows and columns from 0", path=path)
        points.append((y, x))
    return np.asarray(points, np.float32).reshape(-1, 2)


def write_points_csv(path: str | Path, points: np.ndarray, *, overwrite: bool = False) -> Path:
    """Write ``(n, 2)`` ``(y, x)`` points as a ``y,x`` CSV file, atomically."""
    rows = [{"y": f"{float(y):g}", "x": f"{float(x):g}"} for y, x in np.asarray(points).reshape(-1, 2)]
    return write_csv_atomically(path, rows, fields=COLUMNS, overwrite=overwrite)
