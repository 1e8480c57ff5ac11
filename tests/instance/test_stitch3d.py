"""Tests of fluoseg.instance.stitch3d: linking slice-wise objects into 3D objects."""

from __future__ import annotations

import numpy as np
import pytest

from fluoseg.errors import FluosegError
from fluoseg.instance.stitch3d import anisotropy, isotropic_zoom, stitch_slices


def square(shape, y0, y1, x0, x1, value=1):
    plane = np.zeros(shape, np.int32)
    plane[y0:y1, x0:x1] = value
    return plane


def test_a_shifted_square_continues_and_a_far_one_starts_a_new_object():
    z0 = square((10, 10), 2, 6, 2, 6)             # 16 px
    z1 = square((10, 10), 2, 6, 3, 7)             # IoU 12 / 20 = 0.6 with z0
    z2 = square((10, 10), 2, 6, 6, 10)            # IoU 4 / 28 = 0.14 with z1
    out = stitch_slices(np.stack([z0, z1, z2]), threshold=0.25)
    assert out.dtype == np.uint32
    assert set(np.unique(out[0])) == {0, 1} and set(np.unique(out[1])) == {0, 1}
    assert set(np.unique(out[2])) == {0, 2}
    # IoU 0.14 passes a lower threshold
    assert set(np.unique(stitch_slices(np.stack([z0, z1, z2]), threshold=0.1)[2])) == {0, 1}


def test_one_previous_object_goes_to_the_current_object_overlapping_it_most():
    prev = square((8, 12), 0, 4, 0, 8)                       # P, 32 px
    cur = square((8, 12), 0, 4, 0, 5, 1) + square((8, 12), 0, 4, 5, 8, 2)  # IoU 20/32 and 12/32
    out = stitch_slices(np.stack([prev, cur]), threshold=0.25)
    assert (out[1][:4, :5] == 1).all() and (out[1][:4, 5:8] == 2).all()


def test_a_loser_takes_its_second_choice_if_it_is_that_objects_best_match():
    # previous: P1 (cols 0-5), P2 (cols 6-11); current: C1 (cols 0-2), C2 (cols 3-7)
    prev = square((4, 12), 0, 4, 0, 6, 1) + square((4, 12), 0, 4, 6, 12, 2)
    cur = square((4, 12), 0, 4, 0, 3, 1) + square((4, 12), 0, 4, 3, 8, 2)
    # C1-P1 = 12/24 = 0.5; C2-P1 = 12/32 = 0.375 (C2's best); C2-P2 = 8/36 = 0.22
    out = stitch_slices(np.stack([prev, cur]), threshold=0.2)
    assert (out[1][:, :3] == 1).all()      # C1 keeps P1
    assert (out[1][:, 3:8] == 2).all()     # C2 loses P1 to C1 and continues P2
    out = stitch_slices(np.stack([prev, cur]), threshold=0.3)
    assert (out[1][:, 3:8] == 3).all()     # 0.22 is too low: C2 starts a new object


def test_empty_slice_breaks_chains_and_ids_follow_first_appearance():
    a = square((6, 6), 0, 3, 0, 3, 7) + square((6, 6), 3, 6, 3, 6, 3)
    stack = np.stack([a, np.zeros_like(a), a])
    out = stitch_slices(stack)
    assert out[0][0, 0] == 1 and out[0][5, 5] == 2
    assert out[2][0, 0] == 3 and out[2][5, 5] == 4
    assert not out[1].any()


def cellpose_stitch_oracle(stack: np.ndarray, threshold: float) -> np.ndarray:
    """Dense, loop-based reading of Cellpose's stitch3D (independent of the sparse code)."""
    out = np.zeros(stack.shape, np.int64)
    ids0 = [i for i in np.unique(stack[0]) if i]
    next_id = 1
    for i in sorted(ids0, key=lambda v: np.flatnonzero(stack[0].ravel() == v)[0]):
        out[0][stack[0] == i] = next_id
        next_id += 1
    for z in range(1, len(stack)):
        cur_ids = [i for i in np.unique(stack[z]) if i]
        prev_ids = [i for i in np.unique(out[z - 1]) if i]
        iou = np.zeros((len(cur_ids), len(prev_ids)))
        for r, c in enumerate(cur_ids):
            for k, p in enumerate(prev_ids):
                a, b = stack[z] == c, out[z - 1] == p
                iou[r, k] = (a & b).sum() / (a | b).sum()
        iou[iou < threshold] = 0
        if iou.size:
            iou[iou < iou.max(axis=0, keepdims=True)] = 0
        order = sorted(range(len(cur_ids)), key=lambda r: np.flatnonzero(stack[z].ravel() == cur_ids[r])[0])
        for r in order:
            if iou.size and iou[r].max() > 0:
                out[z][stack[z] == cur_ids[r]] = prev_ids[int(np.argmax(iou[r]))]
            else:
                out[z][stack[z] == cur_ids[r]] = next_id
                next_id += 1
    return out


@pytest.mark.parametrize("seed", range(6))
def test_matches_a_dense_reading_of_cellpose_on_random_stacks(seed):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:24, :24]
    planes = []
    centres = rng.uniform(3, 21, (5, 2))
    for _ in range(6):
        centres = centres + rng.normal(0, 1.5, centres.shape)  # objects drift between slices
        plane = np.zeros((24, 24), np.int32)
        for i, (cy, cx) in enumerate(centres, start=1):
            if rng.random() < 0.85:
                plane[(yy - cy) ** 2 + (xx - cx) ** 2 <= rng.uniform(2, 5) ** 2] = i
        planes.append(plane)
    stack = np.stack(planes)
    assert np.array_equal(stitch_slices(stack, threshold=0.3), cellpose_stitch_oracle(stack, 0.3))


def test_min_size_drops_small_3d_objects_and_renumbers():
    stack = np.stack([square((8, 8), 0, 2, 0, 2, 1) + square((8, 8), 4, 8, 4, 8, 2),
                      square((8, 8), 4, 8, 4, 8, 1)])
    out = stitch_slices(stack, min_size=5)  # the 2x2 square (4 voxels) goes; the 4x4x2 block stays
    assert set(np.unique(out)) == {0, 1} and (out[:, 4:, 4:] == 1).all()
    assert np.array_equal(stitch_slices(stack, min_size=4), stitch_slices(stack))


def test_bad_inputs_are_user_errors():
    with pytest.raises(FluosegError, match="stack"):
        stitch_slices(np.zeros((4, 4), int))
    with pytest.raises(FluosegError, match="threshold"):
        stitch_slices(np.zeros((2, 4, 4), int), threshold=0)
    with pytest.raises(FluosegError):
        stitch_slices(-np.ones((2, 4, 4), int))
    with pytest.raises(FluosegError, match="min_size"):
        stitch_slices(np.zeros((2, 4, 4), int), min_size=-1)


def test_anisotropy_and_isotropic_zoom():
    assert anisotropy((2.0, 0.5, 0.5)) == pytest.approx(4.0)
    assert anisotropy((1.0, 0.25, 1.0)) == pytest.approx(2.0)
    assert isotropic_zoom((2.0, 0.5, 0.5)) == pytest.approx((4.0, 1.0, 1.0))
    assert isotropic_zoom((2.0, 0.5, 0.5), target=1.0) == pytest.approx((2.0, 0.5, 0.5))
    for bad in [(1.0, 0.5), (0.0, 1.0, 1.0), (float("nan"), 1, 1), "abc"]:
        with pytest.raises(FluosegError):
            anisotropy(bad)
    with pytest.raises(FluosegError):
        isotropic_zoom((1, 1, 1), target=-1)


def test_stitching_the_slices_of_simulated_nuclei_recovers_them():
    from fluoseg.data.synth.nuclei3d import simulate_nuclei_3d
    from fluoseg.metrics.matching import match_objects

    _, truth, _ = simulate_nuclei_3d((20, 64, 64), seed=7, z_step=1.0, radius_range=(5, 7))
    # each slice on its own, ids 1..n per slice: what a 2D decoder gives
    per_slice = np.stack([np.unique(plane, return_inverse=True)[1].reshape(plane.shape) for plane in truth])
    stitched = stitch_slices(per_slice, threshold=0.25)
    matched = match_objects(truth, stitched, threshold=0.5)
    assert len(matched.true_labels) >= 0.9 * truth.max()
