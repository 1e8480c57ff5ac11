"""npe2 writer: a Labels layer as a TIFF (OME) or Zarr label image, written atomically."""

from __future__ import annotations

from typing import Any

import numpy as np

from fluoseg.io import write_image


def write_labels(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write one Labels layer; returns the paths written (napari's writer contract).

    The layer's scale, when not the default 1, is stored as the pixel size in µm.
    """
    labels = np.asarray(data)
    if labels.dtype.kind not in "iu" or labels.dtype.itemsize > 4:
        labels = labels.astype(np.uint32 if labels.max(initial=0) >= 2**16 else np.uint16)
    axes = "ZYX"[-labels.ndim:]
    scale = meta.get("scale")
    pixel_size = tuple(float(s) for s in scale) if scale is not None and any(s != 1 for s in scale) else None
    return [str(write_image(path, labels, axes=axes, pixel_size=pixel_size, overwrite=True))]
