"""Tests of fluoseg.instance.blocks: the block grid, windows and neighbours."""

from __future__ import annotations

import numpy as np
import pytest

from fluoseg.errors import FluosegError
from fluoseg.instance.blocks import intersect, plan_blocks, relative


@pytest.mark.parametrize("shape,block,halo", [((50, 37), 16, 5), ((7, 30, 41), (3, 16, 10), (0, 4, 4)), ((5, 5), 8, 2)])
def test_cores_partition_the_image_and_windows_are_clipped_grown_cores(shape, block, halo):
    plan = plan_blocks(shape, block_shape=block, halo=halo)
    cover = np.zeros(shape, int)
    for i, b in enumerate(plan.blocks):
        assert b.index == i
        cover[b.core] += 1
        for core, window, h, n in zip(b.core, b.window, plan.halo, shape):
            assert window.start == max(core.start - h, 0) and window.stop == min(core.stop + h, n)
        inside = np.zeros(b.window_shape, bool)
        inside[b.core_in_window] = True
        assert inside.sum() == np.prod(b.core_shape)
    assert (cover == 1).all()


def test_grid_shape_and_last_block_clipped():
    plan = plan_blocks((50, 37), block_shape=(16, 20), halo=3)
    assert plan.grid_shape == (4, 2) and len(plan) == 8
    last = plan.block(7)
    assert last.grid == (3, 1)
    assert last.core == (slice(48, 50), slice(20, 37))
    assert last.window == (slice(45, 50), slice(17, 37))


def test_neighbours_are_the_adjacent_blocks_and_symmetric():
    plan = plan_blocks((40, 40, 40), block_shape=10, halo=(2, 3, 3))
    centre = plan.block_at((1, 1, 1))
    assert len(plan.neighbours(centre)) == 26
    corner = plan.block_at((0, 0, 0))
    assert {b.grid for b in plan.neighbours(corner)} == {
        (0, 0, 1), (0, 1, 0), (0, 1, 1), (1, 0, 0), (1, 0, 1), (1, 1, 0), (1, 1, 1)}
    for b in plan.blocks:
        for other in plan.neighbours(b):
            assert b.index in {n.index for n in plan.neighbours(other)}
            assert intersect(b.window, other.core) is not None


def test_zero_halo_axis_is_never_crossed():
    plan = plan_blocks((6, 20, 20), block_shape=(2, 10, 10), halo=(0, 4, 4))
    block = plan.block_at((1, 0, 0))
    assert {b.grid[0] for b in plan.neighbours(block)} == {1}
    assert len(plan.neighbours(block)) == 3


def test_intersect_and_relative():
    assert intersect((slice(0, 5), slice(2, 8)), (slice(3, 9), slice(8, 10))) is None
    assert intersect((slice(0, 5), slice(2, 8)), (slice(3, 9), slice(4, 10))) == (slice(3, 5), slice(4, 8))
    assert relative((slice(3, 5), slice(4, 8)), (slice(1, 9), slice(4, 10))) == (slice(2, 4), slice(0, 4))


@pytest.mark.parametrize("kwargs", [
    {"block_shape": 0, "halo": 1}, {"block_shape": 4, "halo": -1}, {"block_shape": (4, 4, 4), "halo": 1},
    {"block_shape": 2.5, "halo": 1}, {"block_shape": 4, "halo": True},
])
def test_bad_sizes_are_user_errors(kwargs):
    with pytest.raises(FluosegError):
        plan_blocks((10, 10), **kwargs)
    with pytest.raises(FluosegError):
        plan_blocks((10,), block_shape=4, halo=1)
