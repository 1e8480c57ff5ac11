"""Fuzzing the image readers (fluoseg.io): random, truncated and bit-flipped files of every
supported format, and arrays of every dtype and shape, read as images, masks and labels.

The property (see conftest): a valid result or a one-line FluosegError naming the file.
"""

from __future__ import annotations

import json
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fluoseg.io import read_image, read_labels, read_mask, write_hdf5_sample, write_image

FUZZ = settings.get_profile("fluoseg-fuzz")
FILE_SUFFIXES = [".tif", ".tiff", ".ome.tif", ".ome.tiff", ".png", ".npy", ".h5", ".hdf5"]
# The first bytes of each format, so that random content gets past the format sniffing.
MAGIC = [b"II*\x00", b"MM\x00*", b"II+\x00\x08\x00\x00\x00", b"\x89PNG\r\n\x1a\n",
         b"\x93NUMPY\x01\x00v\x00", b"\x89HDF\r\n\x1a\n", b""]
DTYPES = ["bool", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64",
          "float16", "float32", "float64", "complex64", "<U2", "datetime64[s]",
          [("a", "u1"), ("b", "<f4")]]
AXES = st.one_of(st.none(), st.text(alphabet="CZYXTczyx?1 ", max_size=6))


def _read_all(path: Path, fuzz: Any, *, axes: str | None = None, key: str | None = None) -> None:
    """Apply every reader to ``path``; lazy reads are also sliced, where errors may hide."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # libraries warn about damaged files; errors count
        for lazy in (False, True):
            image = fuzz.outcome(lambda: read_image(path, axes=axes, key=key, lazy=lazy), path=path)
            if lazy and not isinstance(image, Exception):
                fuzz.outcome(lambda: np.asarray(image.array[(slice(0, 3),) * image.array.ndim]),
                             path=path)
        fuzz.outcome(lambda: read_mask(path, axes=axes, key=key), path=path)
        fuzz.outcome(lambda: read_labels(path, axes=axes, key=key), path=path)


@pytest.fixture(scope="module")
def valid(tmp_path_factory: pytest.TempPathFactory) -> _Contents:
    """Valid small files of every format, as {suffix: {relative file: content}}."""
    folder = tmp_path_factory.mktemp("valid")
    data = (np.arange(3 * 12 * 10).reshape(3, 12, 10) % 200).astype(np.uint8)
    names = {"channel_names": ["DAPI", "CD31", "GFP"], "pixel_size": (0.5, 0.5)}
    write_image(folder / "a.tif", data, axes="CYX", **names)
    write_image(folder / "a.zarr", data, axes="CYX", **names)
    write_image(folder / "a.npy", data, axes="CYX")
    write_image(folder / "a.png", data[0], axes="YX")
    write_hdf5_sample(folder / "a.h5", "Sample_1", {"DAPI": data[0], "CD31": data[1],
                                                    "nuclei_label": data[2] % 3})
    out = _Contents()
    for suffix in (".tif", ".zarr", ".npy", ".png", ".h5"):
        root = folder / f"a{suffix}"
        files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
        out[suffix] = {str(p.relative_to(root)) if root.is_dir() else "": p.read_bytes() for p in files}
    return out


class _Contents(dict):
    """File contents by suffix, with a short repr for hypothesis' failure reports."""

    def __repr__(self) -> str:
        return "<valid files: " + ", ".join(self) + ">"


def _damage(content: bytes, cut: int, flips: list[tuple[int, int]]) -> bytes:
    """``content`` cut at ``cut`` bytes (from its size) with bits flipped at ``flips``."""
    data = bytearray(content[: cut % (len(content) + 1)])
    for position, bit in flips:
        if data:
            data[position % len(data)] ^= 1 << bit
    return bytes(data)


FLIPS = st.lists(st.tuples(st.integers(0, 2**20), st.integers(0, 7)), max_size=8)


@FUZZ
@given(suffix=st.sampled_from(FILE_SUFFIXES), magic=st.sampled_from(MAGIC),
       content=st.binary(max_size=512))
def test_random_bytes(fuzz, suffix, magic, content):
    fuzz.example()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"x{suffix}"
        path.write_bytes(magic + content)
        _read_all(path, fuzz)


@FUZZ
@given(suffix=st.sampled_from([".tif", ".npy", ".png", ".h5"]), cut=st.integers(0, 2**20),
       flips=FLIPS)
def test_truncated_and_bit_flipped_files(fuzz, valid, suffix, cut, flips):
    fuzz.example()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"x{suffix}"
        path.write_bytes(_damage(valid[suffix][""], cut, flips))
        _read_all(path, fuzz)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 2**40) | st.floats(allow_nan=False)
    | st.text(max_size=8) | st.sampled_from(["0", "c", "uint8", "zarr", "array", "group"]),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.sampled_from(["zarr_format", "node_type", "shape", "data_type",
                                       "chunk_grid", "codecs", "attributes", "ome",
                                       "multiscales", "axes", "datasets", "path", "omero",
                                       "channels", "label", "name", "type"]) | st.text(max_size=5),
                      inner, max_size=5),
    max_leaves=20,
)


@FUZZ
@given(which=st.integers(0, 10), mutation=st.sampled_from(["cut", "delete", "json"]),
       cut=st.integers(0, 2**16), flips=FLIPS, document=JSON)
def test_damaged_zarr_stores(fuzz, valid, which, mutation, cut, flips, document):
    fuzz.example()
    store = valid[".zarr"]
    names = sorted(store)
    victim = names[which % len(names)]
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "x.zarr"
        for name, content in store.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(content)
        if mutation == "delete":
            (root / victim).unlink()
        elif mutation == "json" and victim.endswith("zarr.json"):
            (root / victim).write_text(json.dumps(document))
        else:
            (root / victim).write_bytes(_damage(store[victim], cut, flips))
        _read_all(root, fuzz)


def _store_raw(path: Path, array: np.ndarray) -> None:
    """Write ``array`` untouched in the format of ``path``; unsupported arrays are skipped."""
    try:
        if path.suffix == ".npy":
            np.save(path, array, allow_pickle=False)
        elif path.suffix == ".tif":
            import tifffile

            tifffile.imwrite(path, array)
        elif path.suffix == ".zarr":
            import zarr

            zarr.create_array(str(path), data=array)
        else:
            import h5py

            with h5py.File(path, "w") as handle:
                handle.create_group("Sample_1").create_dataset("DAPI", data=array)
    except Exception:  # noqa: BLE001 - the library cannot store this array: not our case
        assume(False)


@FUZZ
@given(
    suffix=st.sampled_from([".npy", ".tif", ".zarr", ".h5"]),
    array=st.sampled_from(DTYPES).flatmap(
        lambda dtype: hnp.arrays(np.dtype(dtype), hnp.array_shapes(min_dims=0, max_dims=5,
                                                                   min_side=0, max_side=3))
    ),
    axes=AXES,
    key=st.one_of(st.none(), st.sampled_from(["Sample_1", "Sample_1/DAPI", "missing", "/", ""])),
)
def test_arrays_of_any_dtype_and_shape(fuzz, suffix, array, axes, key):
    fuzz.example()
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = Path(folder) / f"x{suffix}"
        _store_raw(path, array)
        _read_all(path, fuzz, axes=axes, key=key)
