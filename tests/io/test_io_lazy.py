"""Window-reading wrappers (fluoseg.io._lazy)."""

from __future__ import annotations

import numpy as np
import pytest

from fluoseg.io._lazy import LazyView, StackedChannels, iter_windows

KEYS = [
    (...,),
    (1,),
    (slice(None), 2),
    (0, slice(1, 3), slice(2, 5)),
    (slice(None, None, 2), ..., slice(1, 4)),
    (-1, ..., -1),
    (slice(1, 1),),
]


@pytest.mark.parametrize("key", KEYS)
def test_lazy_view_matches_numpy_transpose(key):
    source = np.arange(3 * 4 * 5 * 6).reshape(3, 4, 5, 6)  # stored as ZCYX
    view = LazyView(source, "ZCYX", "CZYX")
    expected = source.transpose(1, 0, 2, 3)
    assert view.shape == expected.shape and view.ndim == 4 and len(view) == 4
    np.testing.assert_array_equal(view[key], expected[key])


# keys valid on a leading size-1 channel axis
INSERT_KEYS = [k for k in KEYS if k[0] is Ellipsis or k[0] in (0, -1) or isinstance(k[0], slice)]


@pytest.mark.parametrize("key", INSERT_KEYS)
def test_lazy_view_inserts_channel_and_drops_size1(key):
    source = np.arange(1 * 4 * 5 * 6).reshape(1, 4, 5, 6)  # T=1, Z, Y, X
    view = LazyView(source, "1ZYX", "CZYX")
    expected = source[0][np.newaxis]
    np.testing.assert_array_equal(view[key], expected[key])


def test_lazy_view_channel_selection():
    source = np.arange(4 * 5 * 6).reshape(4, 5, 6)
    view = LazyView(source, "CYX", "CYX", channel_index=[3, 1])
    assert view.shape == (2, 5, 6)
    np.testing.assert_array_equal(np.asarray(view), source[[3, 1]])
    np.testing.assert_array_equal(view[1, 2:4], source[1, 2:4])
    np.testing.assert_array_equal(view[::-1, 0], source[[1, 3], 0])


def test_lazy_view_rejects_fancy_index():
    view = LazyView(np.zeros((2, 3, 3)), "CYX", "CYX")
    with pytest.raises(TypeError):
        view[[0, 1]]
    with pytest.raises(IndexError):
        view[5]


def test_stacked_channels():
    parts = [np.full((4, 5), i, dtype=np.uint8) for i in range(3)]
    stack = StackedChannels(parts)
    assert stack.shape == (3, 4, 5) and stack.dtype == np.uint8
    np.testing.assert_array_equal(stack[1:, 2, 1:3], np.stack(parts)[1:, 2, 1:3])
    np.testing.assert_array_equal(stack[2], parts[2])
    assert stack[3:].shape == (0, 4, 5)


def test_iter_windows_cover_every_pixel_once():
    counts = np.zeros((2, 7, 9), dtype=int)
    for window in iter_windows(counts.shape, block=4):
        counts[window] += 1
    assert (counts == 1).all()
