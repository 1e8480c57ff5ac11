"""Pyramidal OME-TIFF outputs."""

from __future__ import annotations

import numpy as np
import tifffile

from fluoseg.io import read_image
from fluoseg.io.pyramid import pyramid_levels, write_pyramidal_ome_tiff


def test_levels_halve_until_the_image_fits():
    assert pyramid_levels((1024, 800)) == 0
    assert pyramid_levels((5000, 3000)) == 3  # 5000 -> 2500 -> 1250 -> 625


def test_levels_are_subsampled_and_metadata_kept(tmp_path):
    labels = np.arange(3 * 300 * 200, dtype=np.uint16).reshape(3, 300, 200)
    path = write_pyramidal_ome_tiff(tmp_path / "a.ome.tif", labels, axes="CYX", channel_names=["a", "b", "c"],
                                    pixel_size=(0.5, 0.5), smallest=64)
    with tifffile.TiffFile(path) as tif:
        levels = tif.series[0].levels
        assert [level.shape for level in levels] == [(3, 300, 200), (3, 150, 100), (3, 75, 50), (3, 38, 25)]
        assert np.array_equal(levels[2].asarray(), labels[:, ::4, ::4])
        assert tif.pages[0].is_tiled
    image = read_image(path)
    assert image.channel_names == ("a", "b", "c") and image.pixel_size == (0.5, 0.5)
    assert np.array_equal(image.array, labels)
