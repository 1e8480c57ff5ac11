"""Pyramidal OME-TIFF: large outputs that QuPath, Fiji (Bio-Formats) and napari open fast.

Level 0 is the full image in 256 x 256 tiles; each further level halves Y and X (as
SubIFDs, the layout of OME-TIFF 6 pyramids) until the image fits ``smallest`` pixels. A
viewer shows a whole slide from the small levels and reads full-resolution tiles only
where it zooms in. Levels are subsampled (every second pixel), which keeps label ids and
mask values intact; fluoseg's readers read level 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fluoseg.io._atomic import atomic_path

TILE = (256, 256)
SMALLEST_LEVEL = 1024
"""Levels are added until the larger side is at most this many pixels."""
_BIGTIFF_ABOVE_BYTES = 2**32 - 2**25


def pyramid_levels(shape_yx: tuple[int, int], smallest: int = SMALLEST_LEVEL) -> int:
    """How many half-size levels follow level 0 for an image of ``shape_yx``."""
    levels, side = 0, max(shape_yx)
    while side > smallest:
        side = (side + 1) // 2
        levels += 1
    return levels


def write_pyramidal_ome_tiff(path: str | Path, array: Any, *, axes: str, channel_names: Sequence[str] | None = None,
                             pixel_size: Sequence[float] | None = None, overwrite: bool = False,
                             smallest: int = SMALLEST_LEVEL) -> Path:
    """Write ``array`` (axes such as ``CYX``, ``YX``, ``CZYX``) as a tiled OME-TIFF with pyramid levels.

    Parameters
    ----------
    axes
        One letter per dimension, ``Y`` and ``X`` last.
    channel_names, pixel_size
        OME channel names and physical sizes (µm per spatial axis, in ``axes`` order).
    smallest
        Levels halve the image until its larger side is at most this.
    """
    import tifffile

    path = Path(path)
    array = np.asarray(array)
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    metadata: dict[str, Any] = {"axes": axes}
    if channel_names is not None:
        metadata["Channel"] = {"Name": list(channel_names)}
    if pixel_size is not None:
        for letter, size in zip([a for a in axes if a in "ZYX"], pixel_size):
            metadata[f"PhysicalSize{letter}"] = float(size)
            metadata[f"PhysicalSize{letter}Unit"] = "µm"
    levels = pyramid_levels(array.shape[-2:], smallest)
    options = dict(tile=TILE, compression="zlib", photometric="minisblack")
    with atomic_path(path, overwrite=overwrite) as temporary:
        with tifffile.TiffWriter(temporary, ome=True, bigtiff=array.nbytes > _BIGTIFF_ABOVE_BYTES) as tif:
            tif.write(array, subifds=levels, metadata=metadata, **options)
            level = array
            for _ in range(levels):
                level = level[..., ::2, ::2]
                tif.write(np.ascontiguousarray(level), subfiletype=1, **options)
    return path
