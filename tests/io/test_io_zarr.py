"""Zarr and OME-Zarr (fluoseg.io.zarrstore)."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from fluoseg.errors import FluosegError
from fluoseg.io import read_image, read_labels, write_image

RNG = np.random.default_rng(1)


@pytest.mark.parametrize(
    ("shape", "axes", "names", "pixel_size"),
    [
        ((12, 10), "YX", None, None),
        ((3, 12, 10), "CYX", ("DAPI", "CD31", "Emcn"), (0.5, 0.25)),
        ((2, 4, 12, 10), "CZYX", ("DAPI", "CD31"), (2.0, 0.5, 0.5)),
    ],
)
@pytest.mark.parametrize("suffix", [".zarr", ".ome.zarr"])
def test_round_trip(tmp_path, shape, axes, names, pixel_size, suffix):
    data = RNG.random(shape).astype(np.float32)
    path = write_image(tmp_path / f"img{suffix}", data, axes=axes, channel_names=names,
                       pixel_size=pixel_size)
    image = read_image(path)
    assert not isinstance(image.array, np.ndarray) and image.is_lazy  # lazy by default
    expected = data if "C" in axes else data[np.newaxis]
    np.testing.assert_array_equal(np.asarray(image.array), expected)
    assert image.channel_names == names
    assert image.pixel_size == (pytest.approx(pixel_size) if pixel_size else None)
    eager = read_image(path, lazy=False)
    assert isinstance(eager.array, np.ndarray)


def test_ngff_v05_attributes_are_written(tmp_path):
    path = write_image(tmp_path / "a.ome.zarr", np.zeros((2, 8, 8), np.uint8), axes="CYX",
                       channel_names=["a", "b"], pixel_size=(0.3, 0.3))
    ome = zarr.open_group(str(path), mode="r").attrs["ome"]
    assert ome["version"] == "0.5"
    assert [a["name"] for a in ome["multiscales"][0]["axes"]] == ["c", "y", "x"]
    assert ome["omero"]["channels"][1]["label"] == "b"


def _ngff_v04(path, data, *, labels, scale, units="micrometer"):
    """An OME-Zarr 0.4 image (zarr v2) as bioformats2raw/ome-zarr-py write them."""
    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    for level, factor in (("0", 1), ("1", 2)):
        arr = root.create_array(level, shape=data[..., ::factor, ::factor].shape,
                                chunks=(1, 1, 1, 8, 8), dtype=data.dtype)
        arr[...] = data[..., ::factor, ::factor]
    axes = [{"name": "t", "type": "time"}, {"name": "c", "type": "channel"}]
    axes += [{"name": n, "type": "space", "unit": units} for n in "zyx"]
    root.attrs["multiscales"] = [{
        "version": "0.4",
        "axes": axes,
        "datasets": [
            {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": scale}]},
            {"path": "1", "coordinateTransformations": [
                {"type": "scale", "scale": scale[:3] + [s * 2 for s in scale[3:]]}]},
        ],
    }]
    root.attrs["omero"] = {"channels": [{"label": n, "color": "FF0000"} for n in labels]}


def test_ome_zarr_v04_with_omero_labels(tmp_path):
    data = RNG.integers(0, 255, (1, 2, 3, 16, 16)).astype(np.uint8)  # tczyx
    path = tmp_path / "ext.ome.zarr"
    _ngff_v04(path, data, labels=["Hoechst", "Emcn"], scale=[1.0, 1.0, 2.0, 0.5, 0.5])
    image = read_image(path)
    assert image.axes == "CZYX" and image.array.shape == (2, 3, 16, 16)
    assert image.channel_names == ("Hoechst", "Emcn")
    assert image.pixel_size == pytest.approx((2.0, 0.5, 0.5))
    np.testing.assert_array_equal(image.array[1, 2, 4:9], data[0, 1, 2, 4:9])
    only = read_image(path, channels=["Emcn"])
    assert only.channel_names == ("Emcn",)
    np.testing.assert_array_equal(only.array[0, 1], data[0, 1, 1])


def test_ome_zarr_units_and_missing_unit(tmp_path):
    data = np.zeros((1, 1, 1, 8, 8), np.uint8)
    _ngff_v04(tmp_path / "nm.ome.zarr", data, labels=["a"], scale=[1, 1, 1, 400, 400],
              units="nanometer")
    assert read_image(tmp_path / "nm.ome.zarr").pixel_size == pytest.approx((0.4, 0.4))
    _ngff_v04(tmp_path / "nounit.ome.zarr", data, labels=["a"], scale=[1, 1, 1, 3, 3],
              units=None)
    assert read_image(tmp_path / "nounit.ome.zarr").pixel_size is None


def test_plain_zarr_arrays(tmp_path):
    data = RNG.integers(0, 9, (6, 8, 3)).astype(np.uint16)
    arr = zarr.create_array(str(tmp_path / "v3.zarr"), shape=data.shape, dtype=data.dtype,
                            dimension_names=["y", "x", "c"])
    arr[...] = data
    image = read_image(tmp_path / "v3.zarr")
    assert image.array.shape == (3, 6, 8) and not isinstance(image.array, np.ndarray)
    np.testing.assert_array_equal(image.array[2, 1:4], data[1:4, :, 2])

    v2 = zarr.create_array(str(tmp_path / "v2.zarr"), shape=(4, 6, 8), dtype="f4",
                           zarr_format=2)
    v2[...] = 1.5
    image = read_image(tmp_path / "v2.zarr", axes="ZYX")
    assert image.axes == "CZYX" and float(image.array[0, 3, 5, 7]) == 1.5


def test_key_selects_member_and_unknown_key_lists_members(tmp_path):
    root = zarr.open_group(str(tmp_path / "multi.zarr"), mode="w")
    root.create_array("raw", shape=(2, 8, 8), dtype="u1")[...] = 3
    labels = np.arange(64, dtype=np.uint32).reshape(8, 8)
    root.create_array("cells", shape=(8, 8), dtype="u4")[...] = labels
    np.testing.assert_array_equal(read_labels(tmp_path / "multi.zarr", key="cells"), labels)
    assert read_image(tmp_path / "multi.zarr", key="raw").n_channels == 2
    with pytest.raises(FluosegError, match=r"multi\.zarr.*several.*'cells', 'raw'"):
        read_image(tmp_path / "multi.zarr")
    with pytest.raises(FluosegError, match=r"multi\.zarr.*'nope'.*'cells'"):
        read_image(tmp_path / "multi.zarr", key="nope")


def test_ome_zarr_label_image_under_labels_group(tmp_path):
    path = write_image(tmp_path / "img.ome.zarr", np.zeros((1, 8, 8), np.uint8), axes="CYX")
    labels = np.zeros((8, 8), np.uint16)
    labels[2:5, 2:5] = 7
    zarr.open_group(str(path), mode="a").create_group("labels")
    # write an OME-Zarr image beside, then move it to where NGFF puts label images
    write_image(tmp_path / "cells.ome.zarr", labels, axes="YX").rename(path / "labels" / "cells")
    np.testing.assert_array_equal(read_labels(path, key="labels/cells"), labels)
