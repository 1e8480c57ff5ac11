"""npe2 writer: Labels layers to TIFF with their scale as pixel size."""

from __future__ import annotations

import numpy as np

from fluoseg.io import read_image, read_labels
from fluoseg.napari.writer import write_labels


def test_labels_are_written_with_pixel_size(tmp_path):
    labels = np.zeros((6, 5), np.int64)
    labels[1:3, 1:4] = 70000
    (path,) = write_labels(str(tmp_path / "out.tif"), labels, {"scale": (0.25, 0.25)})
    assert np.array_equal(read_labels(path), labels)
    assert read_image(path).pixel_size == (0.25, 0.25)
