"""Validation of reads: bad files, masks, labels, NaN (fluoseg.io._read)."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from fluoseg.errors import FluosegError
from fluoseg.io import (
    check_finite,
    read_image,
    read_labels,
    read_mask,
    write_hdf5_sample,
    write_image,
)

SUFFIXES = [".tif", ".ome.tif", ".png", ".npy", ".h5"]


def _valid(path):
    data = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) % 251
    if path.suffix == ".h5":
        return write_hdf5_sample(path, "Sample_1", {"DAPI": data})
    return write_image(path, data.astype(np.uint8), axes="YX")


@pytest.mark.parametrize("suffix", SUFFIXES + [".zarr"])
def test_missing_file(tmp_path, suffix):
    with pytest.raises(FluosegError, match=rf"nothere{suffix}: file not found"):
        read_image(tmp_path / f"nothere{suffix}")


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_empty_file(tmp_path, suffix):
    path = tmp_path / f"empty{suffix}"
    path.touch()
    with pytest.raises(FluosegError, match=rf"empty{suffix}: file is empty"):
        read_image(path)


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_corrupt_file(tmp_path, suffix):
    path = tmp_path / f"junk{suffix}"
    path.write_bytes(np.random.default_rng(0).bytes(300))
    with pytest.raises(FluosegError, match=rf"junk{suffix}: not a readable"):
        read_image(path)


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_truncated_file(tmp_path, suffix):
    path = _valid(tmp_path / f"cut{suffix}")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(FluosegError, match=rf"cut{suffix}: not a readable .*truncated"):
        read_image(path)


def test_bad_zarr_folders(tmp_path):
    (tmp_path / "empty.zarr").mkdir()
    with pytest.raises(FluosegError, match=r"empty\.zarr: the Zarr folder is empty"):
        read_image(tmp_path / "empty.zarr")
    (tmp_path / "junk.zarr").mkdir()
    (tmp_path / "junk.zarr" / "zarr.json").write_text("{not json")
    with pytest.raises(FluosegError, match=r"junk\.zarr: not a readable Zarr store"):
        read_image(tmp_path / "junk.zarr")
    (tmp_path / "file.zarr").write_text("x")
    with pytest.raises(FluosegError, match=r"file\.zarr: .*must be a folder"):
        read_image(tmp_path / "file.zarr")


def test_folder_given_for_a_file_format(tmp_path):
    (tmp_path / "dir.tif").mkdir()
    with pytest.raises(FluosegError, match=r"dir\.tif: is a folder"):
        read_image(tmp_path / "dir.tif")


def test_unknown_suffix_lists_supported(tmp_path):
    path = tmp_path / "photo.jpg"
    path.write_bytes(b"x")
    with pytest.raises(FluosegError,
                       match=r"photo\.jpg: unknown image file type.*\.ome\.tif.*\.zarr"):
        read_image(path)
    with pytest.raises(FluosegError, match=r"photo\.czi: unknown"):
        write_image(tmp_path / "photo.czi", np.zeros((4, 4)), axes="YX")


def test_key_on_a_single_image_format(tmp_path):
    path = _valid(tmp_path / "a.tif")
    with pytest.raises(FluosegError, match=r"a\.tif: key='x' only applies"):
        read_image(path, key="x")


@pytest.mark.parametrize("axes", ["CYX", "QYX", "CCYX", "ZYXX"])
def test_wrong_axes(tmp_path, axes):
    path = _valid(tmp_path / "a.tif")
    with pytest.raises(FluosegError, match=r"a\.tif: axes"):
        read_image(path, axes=axes)


def test_non_numeric_npy(tmp_path):
    np.save(tmp_path / "c.npy", np.zeros((4, 4), np.complex64))
    with pytest.raises(FluosegError, match=r"c\.npy: holds complex64"):
        read_image(tmp_path / "c.npy")


def _write_raw(path, array):
    """Store ``array`` as it is, bypassing write_image (which would check it)."""
    if path.suffix == ".npy":
        np.save(path, array)
    elif path.suffix == ".tif":
        with pytest.warns(UserWarning, match="zero-size"):
            tifffile.imwrite(path, array)
    elif path.suffix == ".zarr":
        import zarr

        zarr.create_array(str(path), shape=array.shape, dtype=array.dtype)
    else:
        import h5py

        with h5py.File(path, "w") as handle:
            handle.create_group("Sample_1").create_dataset("DAPI", data=array)


@pytest.mark.parametrize("suffix", [".npy", ".tif", ".zarr", ".h5"])
@pytest.mark.parametrize("shape", [(0, 5), (3, 0, 4), (2, 4, 0)])
@pytest.mark.parametrize("reader", [read_image, read_mask, read_labels])
def test_zero_size_image_is_refused_naming_the_file(tmp_path, suffix, shape, reader):
    path = tmp_path / f"empty{suffix}"
    _write_raw(path, np.zeros(shape, np.uint8))
    member = {"key": "Sample_1/DAPI"} if suffix == ".h5" else {}
    with pytest.raises(FluosegError, match=rf"empty{suffix}: holds an empty image \(shape .*0"):
        reader(path, **member)


@pytest.mark.parametrize("suffix", [".tif", ".png", ".npy", ".zarr", ".h5"])
@pytest.mark.parametrize("shape", [(5, 1), (1, 5), (1, 1)])
def test_one_pixel_wide_images_read_with_their_shape(tmp_path, suffix, shape):
    data = (np.arange(np.prod(shape)).reshape(shape) % 2).astype(np.uint8)
    path = tmp_path / f"thin{suffix}"
    if suffix == ".h5":
        write_hdf5_sample(path, "Sample_1", {"DAPI": data, "nuclei_label": data})
    else:
        write_image(path, data, axes="YX")
    assert np.array_equal(read_image(path).array, data[np.newaxis])
    assert np.array_equal(read_mask(path), data[np.newaxis])
    assert np.array_equal(read_labels(path), data)


def test_empty_channel_selection_is_refused(tmp_path):
    path = _valid(tmp_path / "a.tif")
    with pytest.raises(FluosegError, match=r"a\.tif: channels=\[\] selects no channel"):
        read_image(path, channels=[])


def test_channels_without_names(tmp_path):
    path = _valid(tmp_path / "a.tif")
    with pytest.raises(FluosegError, match=r"a\.tif: the file does not name its channels"):
        read_image(path, channels=["DAPI"])


def test_mask_accepts_0_1_and_0_255(tmp_path):
    mask = np.zeros((2, 6, 7), np.uint8)
    mask[0, 1:3] = 1
    written = write_image(tmp_path / "a.tif", mask, axes="CYX")
    np.testing.assert_array_equal(read_mask(written), mask)
    np.testing.assert_array_equal(
        read_mask(write_image(tmp_path / "b.tif", mask * 255, axes="CYX")), mask)
    as_float = read_mask(write_image(tmp_path / "c.npy", mask.astype(np.float32), axes="CYX"))
    assert as_float.dtype == np.uint8
    assert read_mask(write_image(tmp_path / "d.tif", mask[0], axes="YX")).shape == (1, 6, 7)


def test_mask_with_other_values_is_refused(tmp_path):
    path = write_image(tmp_path / "m.tif", np.array([[0, 1], [2, 3]], np.uint8), axes="YX")
    with pytest.raises(FluosegError, match=r"m\.tif: a mask must hold only 0/1.*\[2, 3\]"):
        read_mask(path)


def test_labels_from_float_and_bad_labels(tmp_path):
    labels = np.array([[0, 1], [2, 3]], np.float32)
    out = read_labels(write_image(tmp_path / "f.tif", labels, axes="YX"))
    assert out.dtype == np.int32
    np.testing.assert_array_equal(out, labels)
    path = write_image(tmp_path / "frac.tif", labels + 0.5, axes="YX")
    with pytest.raises(FluosegError, match=r"frac\.tif: instance labels must be whole numbers"):
        read_labels(path)
    path = write_image(tmp_path / "neg.tif", np.array([[0, -1]], np.int16), axes="YX")
    with pytest.raises(FluosegError, match=r"neg\.tif: instance labels must be >= 0"):
        read_labels(path)
    path = write_image(tmp_path / "two.tif", np.zeros((2, 4, 4), np.uint16), axes="CYX")
    with pytest.raises(FluosegError, match=r"two\.tif: expected one label image"):
        read_labels(path)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # tifffile's planar-RGB guess
@pytest.mark.parametrize("photometric", [None, "minisblack"])
def test_labels_volume_without_metadata(tmp_path, photometric):
    labels = np.zeros((3, 5, 6), np.uint16)
    labels[1, 1:3, 1:3] = 4
    tifffile.imwrite(tmp_path / "vol.tif", labels, photometric=photometric)
    np.testing.assert_array_equal(read_labels(tmp_path / "vol.tif"), labels)
    assert read_image(tmp_path / "vol.tif").array.shape == (3, 5, 6)


def test_nan_in_eager_read_is_refused_but_lazy_defers(tmp_path):
    data = np.zeros((2, 6, 7), np.float32)
    data[1, 3, 3] = np.nan
    path = write_image(tmp_path / "nan.tif", data, axes="CYX")
    with pytest.raises(FluosegError, match=r"nan\.tif: the image contains NaN or infinite"):
        read_image(path)
    lazy = read_image(path, lazy=True)
    check_finite(lazy.array[0, :, :], path)  # the clean window passes
    with pytest.raises(FluosegError, match=r"nan\.tif: .*NaN"):
        check_finite(lazy.array[1, 2:5, 2:5], path)
    with pytest.raises(FluosegError, match="NaN"):
        check_finite(lazy.array, path)  # a whole lazy array is checked window by window


def test_check_finite_ignores_integers_and_finds_inf():
    check_finite(np.zeros((3, 3), np.int64))
    with pytest.raises(FluosegError, match=r"x\.npy: .*infinite"):
        check_finite(np.array([[1.0, np.inf]]), "x.npy")


def test_damaged_chunk_of_a_lazy_read_names_the_file_when_sliced(tmp_path):
    path = write_image(tmp_path / "a.zarr", np.ones((2, 8, 8), np.uint8), axes="CYX")
    chunk = next(p for p in (path / "0").rglob("*") if p.is_file() and p.name != "zarr.json")
    chunk.write_bytes(b"not zstd data")
    image = read_image(path)  # lazy: only the metadata is read here
    with pytest.raises(FluosegError, match=r"a\.zarr: not a readable image \(corrupt"):
        np.asarray(image.array[0, :4, :4])


def test_name_too_long_and_unreadable_files_are_machine_errors(tmp_path, monkeypatch):
    with pytest.raises(FluosegError, match="cannot read: the name is too long"):
        read_image(tmp_path / ("a" * 300 + ".tif"))
    path = _valid(tmp_path / "a.npy")

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(np, "load", denied)
    with pytest.raises(FluosegError, match=r"a\.npy: cannot read: permission denied; check the perm"):
        read_image(path)
