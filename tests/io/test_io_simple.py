"""PNG and NPY (fluoseg.io.simple)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from fluoseg.errors import FluosegError
from fluoseg.io import read_image, read_labels, read_mask, write_image

RNG = np.random.default_rng(3)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_png_grey_round_trip(tmp_path, dtype):
    data = RNG.integers(0, np.iinfo(dtype).max, (12, 10)).astype(dtype)
    image = read_image(write_image(tmp_path / "g.png", data, axes="YX"))
    assert image.axes == "CYX" and image.dtype == dtype
    np.testing.assert_array_equal(image.array[0], data)


def test_png_rgb_is_three_channels(tmp_path):
    rgb = RNG.integers(0, 255, (12, 10, 3)).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    image = read_image(tmp_path / "rgb.png")
    assert image.array.shape == (3, 12, 10)
    np.testing.assert_array_equal(image.array, np.moveaxis(rgb, -1, 0))
    round_trip = read_image(write_image(tmp_path / "rgb2.png", image.array, axes="CYX"))
    np.testing.assert_array_equal(round_trip.array, image.array)


def test_png_palette_and_mask(tmp_path):
    mask = np.zeros((8, 8), np.uint8)
    mask[2:5] = 255
    Image.fromarray(mask).convert("1").save(tmp_path / "m.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "m.png")[0], mask // 255)


def test_png_refuses_3d_and_float(tmp_path):
    with pytest.raises(FluosegError, match=r"x\.png.*2D"):
        write_image(tmp_path / "x.png", np.zeros((2, 4, 4), np.uint8), axes="ZYX")
    with pytest.raises(FluosegError, match=r"x\.png.*float32"):
        write_image(tmp_path / "x.png", np.zeros((4, 4), np.float32), axes="YX")
    assert not list(tmp_path.iterdir())  # no partial file left behind


@pytest.mark.parametrize(
    ("shape", "axes", "read_shape"),
    [((12, 10), "YX", (1, 12, 10)), ((3, 12, 10), "CYX", (3, 12, 10)),
     ((4, 12, 10), "ZYX", (1, 4, 12, 10)), ((2, 4, 12, 10), "CZYX", (2, 4, 12, 10))],
)
def test_npy_round_trip(tmp_path, shape, axes, read_shape):
    data = RNG.random(shape).astype(np.float32)
    path = write_image(tmp_path / "a.npy", data, axes=axes)
    image = read_image(path)
    assert image.array.shape == read_shape and image.channel_names is None
    np.testing.assert_array_equal(image.array.reshape(data.shape), data)


def test_npy_lazy_is_memory_mapped(tmp_path):
    data = RNG.random((3, 12, 10)).astype(np.float32)
    np.save(tmp_path / "a.npy", data)
    image = read_image(tmp_path / "a.npy", lazy=True, axes="ZYX")
    assert isinstance(image.array, np.memmap) and image.is_lazy
    np.testing.assert_array_equal(image.array[0, 1, 2:4], data[1, 2:4])


def test_npy_volume_labels_round_trip(tmp_path):
    labels = np.zeros((3, 6, 7), np.uint16)
    labels[1, 2:4, 2:4] = 5
    path = write_image(tmp_path / "lab.npy", labels, axes="ZYX")
    np.testing.assert_array_equal(read_labels(path), labels)
    flat = write_image(tmp_path / "l2.npy", labels[0], axes="YX")
    np.testing.assert_array_equal(read_labels(flat), labels[0])


def test_npy_streams_lazy_input(tmp_path):
    data = RNG.random((2, 3, 12, 10)).astype(np.float32)
    source = read_image(write_image(tmp_path / "s.zarr", data, axes="CZYX"))
    copy = write_image(tmp_path / "copy.npy", source.array, axes="CZYX")
    np.testing.assert_array_equal(np.load(copy), data)
