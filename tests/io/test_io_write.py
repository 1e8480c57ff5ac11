"""Atomic writes, overwrite refusal and streamed outputs (fluoseg.io._write, _atomic)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import zarr

from fluoseg.errors import FluosegError
from fluoseg.io import OutputArray, create_output, read_image, write_image


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if ".partial-" in p.name or ".old-" in p.name)


@pytest.mark.parametrize("suffix", [".tif", ".npy", ".png", ".zarr"])
def test_crash_mid_write_leaves_nothing(tmp_path, monkeypatch, suffix):
    import fluoseg.io._write as write_module

    fmt = write_module.format_for(tmp_path / f"x{suffix}")
    real = fmt.writer

    def crashing(path, array, meta):
        real(path, array, meta)  # the temporary output is complete...
        raise KeyboardInterrupt  # ...but the process dies before the rename

    monkeypatch.setattr(write_module, "format_for", lambda p: replace(fmt, writer=crashing))
    target = tmp_path / f"x{suffix}"
    with pytest.raises(KeyboardInterrupt):
        write_image(target, np.zeros((8, 8), np.uint8), axes="YX")
    assert not target.exists()
    assert _leftovers(tmp_path) == []


def test_failure_inside_tifffile_leaves_no_partial_file(tmp_path, monkeypatch):
    import tifffile

    real = tifffile.imwrite

    def half_written(path, *args, **kwargs):
        with open(path, "wb") as handle:
            handle.write(b"II*\x00partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tifffile, "imwrite", half_written)
    with pytest.raises(FluosegError, match=r"out\.tif: cannot write: the disk is full"):
        write_image(tmp_path / "out.tif", np.zeros((8, 8), np.uint8), axes="YX")
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(tifffile, "imwrite", real)


@pytest.mark.parametrize("suffix", [".tif", ".zarr"])
def test_overwrite_refused_then_allowed(tmp_path, suffix):
    path = write_image(tmp_path / f"o{suffix}", np.zeros((8, 8), np.uint8), axes="YX")
    with pytest.raises(FluosegError, match=rf"o{suffix}: output already exists; pass --overwrite"):
        write_image(path, np.ones((8, 8), np.uint8), axes="YX")
    assert int(np.asarray(read_image(path).array).max()) == 0
    write_image(path, np.ones((8, 8), np.uint8), axes="YX", overwrite=True)
    assert int(np.asarray(read_image(path).array).min()) == 1
    assert _leftovers(tmp_path) == []


def test_metadata_must_fit_the_array(tmp_path):
    data = np.zeros((2, 8, 8), np.uint8)
    with pytest.raises(FluosegError, match=r"a\.tif: 1 channel names .* 2 channels"):
        write_image(tmp_path / "a.tif", data, axes="CYX", channel_names=["DAPI"])
    with pytest.raises(FluosegError, match="repeat"):
        write_image(tmp_path / "a.tif", data, axes="CYX", channel_names=["a", "a"])
    with pytest.raises(FluosegError, match=r"pixel_size.*\(y, x\)"):
        write_image(tmp_path / "a.tif", data, axes="CYX", pixel_size=(1.0, 1.0, 1.0))
    with pytest.raises(FluosegError, match=r"pixel_size"):
        write_image(tmp_path / "a.tif", data, axes="CYX", pixel_size=(0.0, 1.0))
    with pytest.raises(FluosegError, match=r"a\.tif: axes 'YX' has 2 letters"):
        write_image(tmp_path / "a.tif", data, axes="YX")
    with pytest.raises(FluosegError, match=r"a\.h5: fluoseg does not write HDF5"):
        write_image(tmp_path / "a.h5", data, axes="CYX")
    assert list(tmp_path.iterdir()) == []


def test_output_folder_is_created(tmp_path):
    path = write_image(tmp_path / "deep" / "er" / "a.tif", np.zeros((4, 4), np.uint8), axes="YX")
    assert path.is_file()


def test_zarr_output_commit(tmp_path):
    path = tmp_path / "pred.ome.zarr"
    out = create_output(path, shape=(2, 3, 40, 30), dtype=np.float32, axes="CZYX",
                        channel_names=["bg", "vessel"], pixel_size=(2.0, 0.5, 0.5),
                        chunks=(2, 1, 16, 16))
    assert isinstance(out, OutputArray) and isinstance(out.array, zarr.Array)
    assert out.array.chunks == (2, 1, 16, 16)
    out.array[1, :, 10:20, 5:9] = 0.75
    assert not path.exists()  # nothing at the final path until committed
    assert out.commit() == path and out.committed
    assert out.array.read_only  # reopened read-only at its final place
    image = read_image(path)
    assert image.channel_names == ("bg", "vessel") and image.pixel_size == (2.0, 0.5, 0.5)
    assert float(image.array[1, 2, 15, 6]) == 0.75 and float(image.array[0, 2, 15, 6]) == 0.0
    assert _leftovers(tmp_path) == []


def test_in_memory_output_commit(tmp_path):
    path = tmp_path / "pred.tif"
    with create_output(path, shape=(2, 20, 30), dtype=np.uint8, axes="CYX",
                       channel_names=["a", "b"]) as out:
        assert isinstance(out.array, np.ndarray)
        out.array[0, 5:10] = 1
        assert not path.exists()
    image = read_image(path)
    assert image.channel_names == ("a", "b") and image.array[0, 5:10].all()


@pytest.mark.parametrize("suffix", [".zarr", ".tif"])
def test_output_discarded_on_exception(tmp_path, suffix):
    path = tmp_path / f"pred{suffix}"
    with pytest.raises(RuntimeError, match="model exploded"):
        with create_output(path, shape=(1, 20, 30), dtype=np.float32, axes="CYX") as out:
            out.array[0, :5] = 1.0
            raise RuntimeError("model exploded")
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(FluosegError, match="discarded"):
        out.commit()


def test_explicit_discard_inside_block_is_kept(tmp_path):
    with create_output(tmp_path / "tmp.zarr", shape=(1, 4, 4), dtype="f4", axes="CYX") as out:
        out.array[...] = 1.0
        out.discard()
    assert list(tmp_path.iterdir()) == []


def test_create_output_refuses_existing_and_bad_axes(tmp_path):
    path = write_image(tmp_path / "p.zarr", np.zeros((4, 4), np.uint8), axes="YX")
    with pytest.raises(FluosegError, match=r"p\.zarr: output already exists"):
        create_output(path, shape=(1, 4, 4), dtype="f4", axes="CYX")
    out = create_output(path, shape=(1, 4, 4), dtype="f4", axes="CYX", overwrite=True)
    out.array[...] = 2.0
    out.commit()
    assert float(read_image(path).array[0, 0, 0]) == 2.0
    with pytest.raises(FluosegError, match=r"C, Z, Y, X order"):
        create_output(tmp_path / "q.zarr", shape=(4, 4, 2), dtype="f4", axes="YXC")
    with pytest.raises(FluosegError, match="chunks"):
        create_output(tmp_path / "q.zarr", shape=(2, 4, 4), dtype="f4", axes="CYX", chunks=(1, 4))
    assert _leftovers(tmp_path) == []


def test_commit_refuses_output_that_appeared_meanwhile(tmp_path):
    path = tmp_path / "race.zarr"
    out = create_output(path, shape=(1, 4, 4), dtype="u1", axes="CYX")
    write_image(path, np.zeros((4, 4), np.uint8), axes="YX")  # another run finished first
    with pytest.raises(FluosegError, match="already exists"):
        out.commit()
    assert _leftovers(tmp_path) == []
