"""Tests of fluoseg.instance.blockwise: blockwise decoding equals whole-image decoding."""

from __future__ import annotations

import tracemalloc
import warnings

import numpy as np
import pytest
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import ndimage as ndi
from skimage.measure import label as connected_components

from fluoseg.errors import FluosegError
from fluoseg.instance.blocks import plan_blocks
from fluoseg.instance.blockwise import (
    decode_block,
    decode_blockwise,
    resolve,
    write_block,
)
from fluoseg.instance.postprocess import labels_from_distance, labels_from_threshold
from fluoseg.instance.stitch3d import StitchedSlices
from fluoseg.instance.targets import distance_targets

PROPERTY = settings(max_examples=25, deadline=None, derandomize=True,  # a fixed sample: CI is reproducible
                    suppress_health_check=[HealthCheck.too_slow])


def same_partition(first: np.ndarray, second: np.ndarray) -> bool:
    """Whether two label images are equal up to renumbering (independent of both codes)."""
    if not np.array_equal(first > 0, second > 0):
        return False
    pairs = np.unique(np.stack([first[first > 0], second[second > 0]]), axis=1)
    # a bijection between ids: every id of either side appears in exactly one pair
    return len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]


def paint_objects(shape: tuple[int, ...], objects: list[tuple[float, ...]]) -> np.ndarray:
    """Label image of balls (centre..., radius); later balls take the pixels they cover."""
    grid = np.indices(shape, dtype=np.float32)
    labels = np.zeros(shape, np.int32)
    for i, (*centre, radius) in enumerate(objects, start=1):
        inside = sum((g - c) ** 2 for g, c in zip(grid, centre)) <= radius**2
        labels[inside] = i
    return labels


def clump_extent(mask: np.ndarray, *, per_slice: bool) -> int:
    """Largest bounding-box side of any fully connected foreground clump."""
    planes = list(mask) if per_slice else [mask]
    extent = 0
    for plane in planes:
        clumps = connected_components(plane, connectivity=plane.ndim)
        for box in ndi.find_objects(clumps):
            if box is not None:
                extent = max(extent, *(s.stop - s.start for s in box))
    return extent


@st.composite
def scenes(draw, ndim: int):
    if ndim == 2:
        shape = (draw(st.integers(24, 70)), draw(st.integers(24, 70)))
    else:
        shape = (draw(st.integers(3, 9)), draw(st.integers(20, 40)), draw(st.integers(20, 40)))
    n = draw(st.integers(0, 14))
    objects = [
        (*(draw(st.floats(0, s - 1)) for s in shape), draw(st.floats(1.0, 6.0)))
        for _ in range(n)
    ]
    block = tuple(draw(st.integers(5, 24)) if s > 9 else draw(st.integers(1, 4)) for s in shape)
    return paint_objects(shape, objects), block, draw(st.integers(0, 2**16))


def threshold_maps(labels: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = rng.uniform(0, 0.45, labels.shape)
    return np.where(labels > 0, 1 - noise, noise).astype(np.float32)[None]


def distance_maps(labels: np.ndarray, seed: int) -> np.ndarray:
    """Distance and foreground maps like a network's: continuous, so free of exact ties.

    skimage's watershed floods pixels of equal height in the order of its heap, which
    depends on every marker of the image; on integer-valued ideal distance maps two
    clumps far apart can then change each other's tie-breaks. Regressed maps have no ties.
    """
    distance, foreground = distance_targets(labels)
    jitter = np.random.default_rng(seed).uniform(0, 1e-3, labels.shape)
    return np.stack([distance + jitter * (foreground > 0), foreground]).astype(np.float32)


DECODERS = {
    "threshold": (threshold_maps, lambda w: labels_from_threshold(w[0], min_size=4)),
    "distance": (distance_maps, lambda w: labels_from_distance(w[0], w[1], h=1.0, min_size=3)),
}


def assert_blockwise_equals_whole(maps, decoder, halo, block):
    whole = decoder(maps)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the halo covers every clump: no truncation warning
        pieces = decode_blockwise(maps, decoder, block_shape=block, halo=halo)
    assert pieces.max() == len(np.unique(whole[whole > 0]))
    assert same_partition(whole, pieces)


@PROPERTY
@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("kind", sorted(DECODERS))
@given(data=st.data())
def test_decoders_give_the_whole_image_partition(kind, ndim, data):
    labels, block, seed = data.draw(scenes(ndim))
    make_maps, decoder = DECODERS[kind]
    # stacks are decoded slice by slice: no halo (and no linking) along Z
    halo = clump_extent(labels > 0, per_slice=ndim == 3)
    halos = (halo, halo) if ndim == 2 else (0, halo, halo)
    assert_blockwise_equals_whole(make_maps(labels, seed), decoder, halos, block)


def components_3d(window: np.ndarray) -> np.ndarray:
    return connected_components(window[0] > 0.5, connectivity=1).astype(np.uint32)


@settings(PROPERTY, max_examples=12)
@given(scenes(3))
def test_true_3d_decoder_links_objects_across_z_blocks(scene):
    labels, block, seed = scene
    maps = threshold_maps(labels, seed)
    halo = clump_extent(labels > 0, per_slice=False)
    assert_blockwise_equals_whole(maps, components_3d, halo, block)


def test_independent_phases_give_the_sequential_result():
    labels = paint_objects((60, 70), [(10, 15, 6), (30, 31, 7), (31, 43, 6), (50, 9, 5), (12, 64, 4), (45, 60, 8)])
    maps = threshold_maps(labels, 0)
    decoder = lambda w: labels_from_threshold(w[0])  # noqa: E731
    plan = plan_blocks((60, 70), block_shape=(16, 20), halo=20)
    results = [decode_block(maps, plan, b, decoder) for b in reversed(plan.blocks)]  # any order
    relabelling = resolve([r.without_core() for r in results])
    out = zarr.create_array(store={}, shape=(60, 70), chunks=(16, 20), dtype="uint32", fill_value=0)
    cores = {r.index: r.core for r in results}
    for block in plan:
        write_block(block, relabelling.luts[block.index], out, core=cores[block.index])
    sequential = decode_blockwise(maps, decoder, block_shape=(16, 20), halo=20)
    assert np.array_equal(out[...], sequential)
    assert relabelling.n_objects == sequential.max() == 5  # two discs touch and form one component
    assert same_partition(sequential, labels_from_threshold(maps[0]))


def test_a_halo_smaller_than_an_object_is_reported():
    labels = paint_objects((40, 40), [(20, 20, 12)])
    maps = threshold_maps(labels, 1)
    with pytest.warns(UserWarning, match="halo"):
        decode_blockwise(maps, lambda w: labels_from_threshold(w[0]), block_shape=16, halo=4)


def test_zarr_maps_to_zarr_output_with_large_sparse_decoder_ids(tmp_path):
    labels = paint_objects((50, 50), [(10, 10, 5), (25, 26, 8), (40, 12, 6), (44, 44, 4)])
    maps = zarr.create_array(store=str(tmp_path / "maps.zarr"), shape=(1, 50, 50), chunks=(1, 16, 16), dtype="float32")
    maps[...] = threshold_maps(labels, 2)
    out = zarr.create_array(store=str(tmp_path / "labels.zarr"), shape=(50, 50), chunks=(16, 16), dtype="uint16")

    def sparse_ids(window):  # ids far beyond the window size take the search path
        found = labels_from_threshold(window[0]).astype(np.uint64)
        return np.where(found > 0, found * 1_000_003 + 7, 0)

    decode_blockwise(maps, sparse_ids, block_shape=16, halo=18, out=out)
    assert same_partition(out[...], labels) and out[...].max() == 4


def test_bad_inputs_are_user_errors():
    maps = np.zeros((1, 8, 8), np.float32)
    with pytest.raises(FluosegError, match="maps must be"):
        decode_blockwise(maps[0, 0], lambda w: w, block_shape=4, halo=1)
    with pytest.raises(FluosegError, match="label output"):
        decode_blockwise(maps, lambda w: w[0].astype(int), block_shape=4, halo=1, out=np.zeros((8, 8), np.float32))
    many = np.zeros((1, 4, 600), np.float32)
    many[0, :, ::2] = 1
    with pytest.raises(FluosegError, match="uint8"):
        decode_blockwise(many, lambda w: labels_from_threshold(w[0], min_size=0), block_shape=(4, 600), halo=0,
                         out=np.zeros((4, 600), np.uint8))


def test_memory_is_bounded_by_the_block_not_the_image(tmp_path):
    shape = (1024, 1024)
    rng = np.random.default_rng(3)
    centres = rng.uniform(0, 1024, (400, 2))
    mask = np.zeros(shape, bool)
    mask[tuple(np.clip(centres.astype(int), 0, 1023).T)] = True
    mask = ndi.binary_dilation(mask, iterations=5)
    maps = zarr.create_array(store=str(tmp_path / "maps.zarr"), shape=(1, *shape), chunks=(1, 128, 128), dtype="float32")
    maps[0] = mask.astype(np.float32)
    out = zarr.create_array(store=str(tmp_path / "out.zarr"), shape=shape, chunks=(128, 128), dtype="uint32")
    decoder = lambda w: labels_from_threshold(w[0])  # noqa: E731
    tracemalloc.start()
    decode_blockwise(maps, decoder, block_shape=128, halo=32, out=out)
    _, blockwise_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    image_bytes = 1024 * 1024 * 4
    # a 192^2 window in float32 and int64 plus strips is ~1 MB; the whole image is 4 MB per array
    assert blockwise_peak < image_bytes
    assert same_partition(out[...], decoder(maps[...]))


def slice_threshold(window: np.ndarray) -> np.ndarray:
    return labels_from_threshold(window[0], min_size=4)  # slice-wise on stacks, as in prediction


@settings(PROPERTY, max_examples=20)
@given(scenes(3), st.integers(1, 2), st.sampled_from([0.1, 0.25, 0.5]))
def test_stitched_stacks_link_across_z_blocks_as_the_whole_stack(scene, z_halo, threshold):
    labels, block, seed = scene
    maps = threshold_maps(labels, seed)
    decoder = StitchedSlices(slice_threshold, threshold)
    halo = clump_extent(labels > 0, per_slice=False)  # chains of slices drift within their 3D clump
    whole = decoder(maps)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # reaching a Z face of a window is no cut
        pieces = decode_blockwise(maps, decoder, block_shape=block, halo=(z_halo, halo, halo), stitched_axes=(0,))
    assert pieces.max() == len(np.unique(whole[whole > 0]))
    assert same_partition(whole, pieces)


def test_simulated_nuclei_stack_blockwise_equals_the_whole_stack():
    from fluoseg.data.synth.nuclei3d import simulate_nuclei_3d

    stack = simulate_nuclei_3d((12, 64, 64), seed=5)
    maps = threshold_maps(stack.labels, 0)
    decoder = StitchedSlices(slice_threshold, 0.25)
    whole = decoder(maps)
    halo = clump_extent(stack.labels > 0, per_slice=False)
    pieces = decode_blockwise(maps, decoder, block_shape=(3, 24, 24), halo=(1, halo, halo), stitched_axes=(0,))
    assert same_partition(whole, pieces)
    spans = [len(np.unique(np.nonzero(pieces == i)[0] // 3)) for i in range(1, pieces.max() + 1)]
    assert pieces.max() >= 8 and max(spans) >= 3  # objects run through several z-blocks
    unlinked = decode_blockwise(maps, decoder, block_shape=(3, 24, 24), halo=(0, halo, halo))
    assert not same_partition(whole, unlinked)  # without the Z strips the stack falls apart


def test_stitched_axes_need_a_halo():
    with pytest.raises(FluosegError, match="halo of at least 1"):
        plan_blocks((4, 20, 20), block_shape=(2, 10, 10), halo=(0, 4, 4), stitched_axes=(0,))
