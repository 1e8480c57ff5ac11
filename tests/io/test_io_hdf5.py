"""HDF5 samples in the MiNTiF layout (fluoseg.io.hdf5)."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from fluoseg.errors import FluosegError
from fluoseg.io import read_image, read_labels, read_mask, write_hdf5_sample

RNG = np.random.default_rng(2)


@pytest.fixture
def sample():
    dapi = RNG.integers(0, 255, (12, 10)).astype(np.uint8)
    emcn = RNG.integers(0, 255, (12, 10)).astype(np.uint8)
    sinus = (RNG.random((12, 10)) > 0.7).astype(np.uint8)
    arteries = (RNG.random((12, 10)) > 0.9).astype(np.uint8)
    return {"DAPI": dapi, "endomucin": emcn, "sinusoids": sinus, "arteries": arteries}


def _write(path, sample, group="Sample_1"):
    return write_hdf5_sample(path, group, sample, labels=["sinusoids", "arteries"],
                             pixel_size=(0.5, 0.5), attrs={"name": "bm_01.tif"})


def test_markers_and_masks(tmp_path, sample):
    path = _write(tmp_path / "bm.h5", sample)
    image = read_image(path)  # the only sample group is used
    assert image.channel_names == ("DAPI", "endomucin")  # labels are not channels
    np.testing.assert_array_equal(image.array, np.stack([sample["DAPI"], sample["endomucin"]]))
    assert image.pixel_size == (0.5, 0.5)
    masks = read_mask(path, key="Sample_1")
    np.testing.assert_array_equal(masks, np.stack([sample["sinusoids"], sample["arteries"]]))
    one = read_mask(path, key="Sample_1/sinusoids")
    assert one.shape == (1, 12, 10)


def test_channels_by_name_and_lazy(tmp_path, sample):
    path = _write(tmp_path / "bm.h5", sample)
    image = read_image(path, key="Sample_1", channels=["endomucin", "DAPI"], lazy=True)
    assert not isinstance(image.array, np.ndarray)
    assert image.channel_names == ("endomucin", "DAPI")
    np.testing.assert_array_equal(image.array[0, 2:5, 1:4], sample["endomucin"][2:5, 1:4])
    single = read_image(path, key="Sample_1/DAPI", lazy=True)
    assert single.array.shape == (1, 12, 10) and single.channel_names == ("DAPI",)
    np.testing.assert_array_equal(single.array[0], sample["DAPI"])


def test_unknown_channel_lists_available(tmp_path, sample):
    path = _write(tmp_path / "bm.h5", sample)
    with pytest.raises(FluosegError, match=r"bm\.h5.*\['CD31'\].*DAPI"):
        read_image(path, channels=["CD31"])


def test_several_samples_need_a_key(tmp_path, sample):
    path = _write(tmp_path / "bm.h5", sample)
    _write(path, sample, group="Sample_2")
    with pytest.raises(FluosegError, match=r"bm\.h5.*2 sample groups.*'Sample_1', 'Sample_2'"):
        read_image(path)
    assert read_image(path, key="Sample_2").n_channels == 2
    with pytest.raises(FluosegError, match=r"'Sample_9'.*'Sample_1'"):
        read_image(path, key="Sample_9")
    with pytest.raises(FluosegError, match="already exists"):
        _write(path, sample, group="Sample_2")


def test_3d_sample_and_instance_labels(tmp_path):
    stack = RNG.integers(0, 255, (4, 8, 9)).astype(np.uint16)
    cells = np.zeros((4, 8, 9), np.int32)
    cells[1:3, 2:5, 2:5] = 3
    path = write_hdf5_sample(tmp_path / "vol.hdf5", "Sample_0", {"nuclei": stack, "cells": cells},
                             labels=["cells"], pixel_size=(2.0, 0.4, 0.4))
    image = read_image(path)
    assert image.axes == "CZYX" and image.array.shape == (1, 4, 8, 9)
    assert image.pixel_size == (2.0, 0.4, 0.4)
    np.testing.assert_array_equal(read_labels(path), cells)
    np.testing.assert_array_equal(read_labels(path, key="Sample_0/cells"), cells)


def test_mintif_naming_without_kind_attributes(tmp_path):
    """Files written by MiNTiF mark markers "in_channel_N" and labels "label_channel_N"."""
    path = tmp_path / "mintif.h5"
    with h5py.File(path, "w") as handle:
        group = handle.create_group("Sample_0")
        group.attrs["voxel_size"] = [1.0, 0.3, 0.3]  # MiNTiF pads 2D sizes with z = 1
        group.create_dataset("in_channel_0", data=np.full((6, 7), 10, np.float32))
        group.create_dataset("in_channel_1", data=np.full((6, 7), 20, np.float32))
        group.create_dataset("label_channel_0", data=np.eye(6, 7, dtype=np.uint8))
        group.create_dataset("label_coordinates_1", data=np.zeros((5, 3)))
    image = read_image(path)
    assert image.channel_names == ("in_channel_0", "in_channel_1")
    assert image.pixel_size == (0.3, 0.3)
    assert read_mask(path).shape == (1, 6, 7)


def test_mintif_patch_files_are_refused(tmp_path):
    path = tmp_path / "patches.h5"
    with h5py.File(path, "w") as handle:
        patch = handle.create_group("Sample_0/Patch_0")
        patch.create_dataset("in_channel_0", data=np.zeros((4, 4)))
    with pytest.raises(FluosegError, match=r"patches\.h5.*Patch_N"):
        read_image(path)


def test_mismatched_shapes_rejected(tmp_path):
    with pytest.raises(FluosegError, match="one shape"):
        write_hdf5_sample(tmp_path / "x.h5", "Sample_1",
                          {"a": np.zeros((4, 4)), "b": np.zeros((4, 5))})
    assert not (tmp_path / "x.h5").exists()
