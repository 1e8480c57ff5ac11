"""TIFF, OME-TIFF and ImageJ hyperstacks (fluoseg.io.tiff)."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from fluoseg.errors import FluosegError
from fluoseg.io import read_image, read_labels, read_mask, write_image

RNG = np.random.default_rng(0)


def _image(shape, dtype=np.uint16):
    return RNG.integers(0, 1000, size=shape).astype(dtype)


@pytest.mark.parametrize(
    ("shape", "axes", "names", "pixel_size"),
    [
        ((12, 10), "YX", None, None),
        ((3, 12, 10), "CYX", ("DAPI", "CD31", "Emcn"), (0.5, 0.25)),
        ((4, 12, 10), "ZYX", None, (2.0, 0.5, 0.5)),
        ((2, 4, 12, 10), "CZYX", ("DAPI", "CD31"), (2.0, 0.5, 0.5)),
    ],
)
@pytest.mark.parametrize("suffix", [".tif", ".ome.tiff"])
def test_round_trip(tmp_path, shape, axes, names, pixel_size, suffix):
    data = _image(shape)
    path = write_image(tmp_path / f"img{suffix}", data, axes=axes, channel_names=names,
                       pixel_size=pixel_size)
    image = read_image(path)
    expected_axes = "CZYX" if "Z" in axes else "CYX"
    assert image.axes == expected_axes
    assert isinstance(image.array, np.ndarray)
    expected = data if "C" in axes else data[np.newaxis]
    np.testing.assert_array_equal(image.array, expected)
    assert image.channel_names == names
    assert image.pixel_size == (pytest.approx(pixel_size) if pixel_size else None)
    assert image.n_channels == expected.shape[0]
    assert image.spatial_shape == expected.shape[1:]
    assert image.is_3d == ("Z" in axes)
    assert image.dtype == np.uint16


def test_write_reorders_axes(tmp_path):
    data = _image((12, 10, 3), np.uint8)  # YXC
    path = write_image(tmp_path / "a.tif", data, axes="YXC", channel_names=["r", "g", "b"])
    image = read_image(path)
    np.testing.assert_array_equal(image.array, np.moveaxis(data, -1, 0))
    assert image.channel_names == ("r", "g", "b")


def test_ome_tiff_written_by_tifffile_units_converted(tmp_path):
    data = _image((3, 2, 8, 9))  # ZCYX as OME DimensionOrder XYCZT
    path = tmp_path / "ext.ome.tif"
    tifffile.imwrite(
        path, data, ome=True, photometric="minisblack",
        metadata={
            "axes": "ZCYX",
            "Channel": {"Name": ["Hoechst", "CD45"]},
            "PhysicalSizeX": 650, "PhysicalSizeXUnit": "nm",
            "PhysicalSizeY": 650, "PhysicalSizeYUnit": "nm",
            "PhysicalSizeZ": 0.002, "PhysicalSizeZUnit": "mm",
        },
    )
    image = read_image(path)
    assert image.axes == "CZYX"
    np.testing.assert_array_equal(image.array, data.transpose(1, 0, 2, 3))
    assert image.channel_names == ("Hoechst", "CD45")
    assert image.pixel_size == pytest.approx((2.0, 0.65, 0.65))


def test_imagej_hyperstack(tmp_path):
    data = _image((4, 3, 8, 9), np.uint8)  # ZCYX, ImageJ's order
    path = tmp_path / "hyper.tif"
    tifffile.imwrite(path, data, imagej=True, resolution=(1 / 0.4, 1 / 0.4),
                     metadata={"axes": "ZCYX", "spacing": 1.5, "unit": "micron"})
    image = read_image(path)
    assert image.axes == "CZYX"
    np.testing.assert_array_equal(image.array, data.transpose(1, 0, 2, 3))
    assert image.pixel_size == pytest.approx((1.5, 0.4, 0.4))


def test_imagej_channel_labels_become_names(tmp_path):
    data = _image((2, 8, 9), np.uint8)
    path = tmp_path / "ij.tif"
    tifffile.imwrite(path, data, imagej=True,
                     metadata={"axes": "CYX", "Labels": ["DAPI", "GFP"]})
    assert read_image(path).channel_names == ("DAPI", "GFP")


def test_plain_stack_defaults_and_override(tmp_path):
    data = _image((5, 8, 9), np.uint8)
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, data)
    assert read_image(path).array.shape == (5, 8, 9)  # 3D without metadata: CYX
    image = read_image(path, axes="ZYX")
    assert image.axes == "CZYX" and image.array.shape == (1, 5, 8, 9)
    assert image.pixel_size is None


def test_rgb_tiff_samples_become_channels(tmp_path):
    data = _image((8, 9, 3), np.uint8)
    path = tmp_path / "rgb.tif"
    tifffile.imwrite(path, data, photometric="rgb")
    np.testing.assert_array_equal(read_image(path).array, np.moveaxis(data, -1, 0))


def test_lazy_read_is_lazy_and_windows_match(tmp_path):
    data = _image((2, 3, 16, 20))
    path = write_image(tmp_path / "big.ome.tif", data, axes="CZYX", channel_names=["a", "b"])
    image = read_image(path, lazy=True)
    assert not isinstance(image.array, np.ndarray)
    assert image.array.shape == data.shape and image.array.dtype == data.dtype
    np.testing.assert_array_equal(image.array[1, 2, 3:9, 4:11], data[1, 2, 3:9, 4:11])
    assert image.channel_names == ("a", "b") and image.is_lazy


def test_lazy_read_with_transposition(tmp_path):
    data = _image((3, 2, 16, 20))  # ZCYX
    path = tmp_path / "zc.ome.tif"
    tifffile.imwrite(path, data, ome=True, photometric="minisblack",
                     metadata={"axes": "ZCYX", "Channel": {"Name": ["a", "b"]}})
    image = read_image(path, lazy=True, channels=["b"])
    assert not isinstance(image.array, np.ndarray) and image.array.shape == (1, 3, 16, 20)
    np.testing.assert_array_equal(image.array[0, 1:, 5:7], data[1:, 1, 5:7])


def test_large_planes_are_tiled_and_read_lazily(tmp_path, monkeypatch):
    monkeypatch.setattr("fluoseg.io.tiff._TILE_ABOVE_PIXELS", 100)
    data = _image((2, 300, 270), np.uint8)
    path = write_image(tmp_path / "tiled.tif", data, axes="CYX")
    with tifffile.TiffFile(path) as tif:
        assert tif.pages.first.is_tiled
    image = read_image(path, lazy=True)
    np.testing.assert_array_equal(image.array[1, 250:300, 0:270], data[1, 250:300])


def test_write_streams_lazy_input(tmp_path):
    data = _image((2, 3, 16, 20))
    source = read_image(write_image(tmp_path / "s.zarr", data, axes="CZYX"), lazy=True)
    path = write_image(tmp_path / "copy.tif", source.array, axes="CZYX")
    np.testing.assert_array_equal(read_image(path).array, data)


def test_int64_labels_are_stored_as_32_bit(tmp_path):
    labels = np.zeros((8, 9), dtype=np.int64)
    labels[2:4, 2:4] = 70000
    path = write_image(tmp_path / "lab.tif", labels, axes="YX")
    out = read_labels(path)
    assert out.dtype == np.uint32 and out.shape == (8, 9)
    np.testing.assert_array_equal(out, labels)


def test_bool_mask_written_and_read(tmp_path):
    mask = np.zeros((2, 8, 9), dtype=bool)
    mask[1, 3:5] = True
    path = write_image(tmp_path / "m.tif", mask, axes="CYX")
    np.testing.assert_array_equal(read_mask(path), mask.astype(np.uint8))


def test_time_series_is_refused(tmp_path):
    path = tmp_path / "movie.ome.tif"
    tifffile.imwrite(path, _image((3, 8, 9)), ome=True, metadata={"axes": "TYX"})
    with pytest.raises(FluosegError, match="movie.ome.tif.*time"):
        read_image(path)
    assert read_image(path, axes="ZYX").is_3d
