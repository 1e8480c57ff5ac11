"""The project's shared data sets read as documented in ../shared/data/README.md."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fluoseg.io import read_image, read_labels, read_mask
from support import SHARED_DATA

DATA = SHARED_DATA
pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason=f"shared data not found at {DATA}")


def test_vessels5_image_and_mask():
    image = read_image(DATA / "vessels5" / "images" / "s001_00.tif")
    assert image.axes == "CYX" and image.array.shape == (5, 768, 768)
    assert image.dtype == np.uint8 and isinstance(image.array, np.ndarray)
    mask = read_mask(DATA / "vessels5" / "masks" / "s001_00.tif")
    assert mask.shape == (2, 768, 768) and mask.dtype == np.uint8
    assert set(np.unique(mask).tolist()) <= {0, 1}
    assert 0.05 < mask[0].mean() < 0.15  # sinusoids cover 9.3 % (samples.json)


def test_vessels5_lazy_window():
    path = DATA / "vessels5" / "images" / "s001_00.tif"
    lazy = read_image(path, lazy=True)
    assert not isinstance(lazy.array, np.ndarray)
    window = lazy.array[2, 100:164, 200:264]
    np.testing.assert_array_equal(window, read_image(path).array[2, 100:164, 200:264])


def test_dsb2018_labels():
    paths = sorted((DATA / "dsb2018_fluo" / "labels").glob("*.tif"))[:20]
    assert paths
    for path in paths:
        labels = read_labels(path)
        image = read_image(DATA / "dsb2018_fluo" / "images" / path.name)
        assert labels.ndim == 2 and labels.dtype.kind in "iu"
        assert labels.shape == image.spatial_shape and image.n_channels == 1
        assert labels.max() > 0
