"""Axis resolution and channel-first reordering (fluoseg.io._axes)."""

from __future__ import annotations

import numpy as np
import pytest

from fluoseg.errors import FluosegError
from fluoseg.io._axes import (
    LABEL_DEFAULTS,
    parse_axes,
    resolve_axes,
    select_channels,
    to_channel_first,
)
from fluoseg.io._lazy import LazyView


@pytest.mark.parametrize(
    ("shape", "native", "expected"),
    [
        ((8, 9), None, "YX"),
        ((3, 8, 9), None, "CYX"),
        ((2, 3, 8, 9), None, "CZYX"),
        ((5, 8, 9), "?YX", "CYX"),  # tifffile's Q
        ((4, 8, 9, 3), "?YXC", "ZYXC"),  # multi-page RGB: the pages are Z
        ((3, 2, 8, 9), "ZCYX", "ZCYX"),
        ((1, 2, 8, 9), "ZCYX", "1CYX"),  # a single plane reads as 2D
        ((1, 3, 8, 9), "1CYX", "1CYX"),
    ],
)
def test_resolve_axes(shape, native, expected):
    assert resolve_axes(shape, native, None) == expected


def test_resolve_axes_label_defaults_treat_3d_as_volume():
    assert resolve_axes((4, 8, 9), None, None, defaults=LABEL_DEFAULTS) == "ZYX"


def test_override_wins_and_keeps_size1_z():
    assert resolve_axes((1, 2, 8, 9), "CZYX", "ZCYX") == "ZCYX"


@pytest.mark.parametrize("bad", ["CYQ", "CCX", "CZ", "", "cyx!"])
def test_parse_axes_rejects(bad):
    with pytest.raises(FluosegError, match="axes"):
        parse_axes(bad, "img.tif")


def test_parse_axes_is_case_insensitive():
    assert parse_axes("zcyx") == "ZCYX"


def test_override_length_mismatch_names_file():
    with pytest.raises(FluosegError, match=r"img\.tif.*3 letters.*4 dimensions"):
        resolve_axes((2, 3, 8, 9), None, "CYX", path="img.tif")


def test_unresolvable_axes_ask_for_override():
    with pytest.raises(FluosegError, match="pass axes"):
        resolve_axes((2, 3, 4, 8, 9), None, None, path="img.tif")


def test_to_channel_first_numpy_is_a_view():
    data = np.arange(3 * 2 * 4 * 5).reshape(3, 2, 4, 5)  # ZCYX
    out, axes = to_channel_first(data, "ZCYX")
    assert axes == "CZYX" and out.shape == (2, 3, 4, 5)
    assert np.shares_memory(out, data)
    np.testing.assert_array_equal(out, data.transpose(1, 0, 2, 3))


def test_to_channel_first_adds_channel_and_drops_size1():
    data = np.zeros((1, 4, 5))
    out, axes = to_channel_first(data, "1YX")
    assert axes == "CYX" and out.shape == (1, 4, 5)
    out, axes = to_channel_first(np.zeros((6, 4, 5)), "ZYX")
    assert axes == "CZYX" and out.shape == (1, 6, 4, 5)


class _Disk:
    """Stands in for an on-disk array: basic slicing only, counts reads."""

    def __init__(self, data):
        self.data, self.shape, self.dtype, self.reads = data, data.shape, data.dtype, 0

    def __getitem__(self, key):
        self.reads += 1
        return self.data[key]


def test_to_channel_first_wraps_non_numpy_arrays():
    disk = _Disk(np.arange(4 * 5 * 3).reshape(4, 5, 3))  # YXC
    out, axes = to_channel_first(disk, "YXC")
    assert isinstance(out, LazyView) and axes == "CYX" and out.shape == (3, 4, 5)
    assert disk.reads == 0
    np.testing.assert_array_equal(out[1, 1:3, 2:], disk.data[1:3, 2:, 1])


def test_select_channels_keeps_memmap_lazy(tmp_path):
    data = np.arange(4 * 3 * 3, dtype=np.int16).reshape(4, 3, 3)
    np.save(tmp_path / "a.npy", data)
    mm = np.load(tmp_path / "a.npy", mmap_mode="r")
    assert isinstance(select_channels(mm, [1, 2]), np.memmap)
    picked = select_channels(mm, [3, 0])
    assert isinstance(picked, LazyView)
    np.testing.assert_array_equal(np.asarray(picked), data[[3, 0]])
