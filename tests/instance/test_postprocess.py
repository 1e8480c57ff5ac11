"""Tests of fluoseg.instance.postprocess: decoding ideal targets back into objects."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fluoseg.errors import FluosegError
from fluoseg.instance.postprocess import (
    h_maxima_per_object,
    labels_from_border_classes,
    labels_from_distance,
    labels_from_threshold,
    regrid_labels,
)
from fluoseg.data.resample import resample_to_shape
from fluoseg.instance.targets import border_targets, distance_targets
from fluoseg.metrics.matching import match_objects
from support import SHARED_DATA

DSB = SHARED_DATA / "dsb2018_fluo"


def two_touching_disks() -> np.ndarray:
    yy, xx = np.mgrid[:40, :60]
    labels = np.zeros((40, 60), np.int32)
    labels[(yy - 20) ** 2 + (xx - 20) ** 2 <= 11**2] = 1
    labels[(yy - 20) ** 2 + (xx - 39) ** 2 <= 11**2] = 2  # centres 19 px apart: overlapping chord
    return labels


def one_hot(classes: np.ndarray) -> np.ndarray:
    return np.moveaxis(np.eye(3, dtype=np.float32)[classes], -1, 0)


def ious(truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    return match_objects(truth, pred, threshold=0.5).iou


def assert_two_disks_recovered(pred: np.ndarray, truth: np.ndarray) -> None:
    assert pred.dtype == np.uint32
    assert sorted(np.unique(pred)) == [0, 1, 2]
    matched = ious(truth, pred)
    assert matched.size == 2 and (matched > 0.9).all()


def test_border_classes_recover_two_touching_disks() -> None:
    truth = two_touching_disks()
    pred = labels_from_border_classes(one_hot(border_targets(truth)))
    assert_two_disks_recovered(pred, truth)
    assert np.array_equal(pred > 0, truth > 0)  # full extent, rims included


def test_distance_recovers_two_touching_disks() -> None:
    truth = two_touching_disks()
    distance, foreground = distance_targets(truth)
    assert_two_disks_recovered(labels_from_distance(distance, foreground.astype(np.float32)), truth)
    # A per-object normalised map with a proportional h and a little smoothing too.
    normalised, _ = distance_targets(truth, normalise="per_object")
    pred = labels_from_distance(normalised, foreground.astype(np.float32), h=0.2, smooth_sigma=1.0)
    assert_two_disks_recovered(pred, truth)


def test_distance_keeps_objects_lower_than_h_and_handles_stacks() -> None:
    truth = two_touching_disks()
    truth[2:5, 2:5] = 3  # peak distance 2 < h
    distance, foreground = distance_targets(truth)
    pred = labels_from_distance(distance, foreground, h=5.0, min_size=0)
    assert len(ious(truth, pred)) == 3
    stack = labels_from_distance(np.stack([distance] * 2), np.stack([foreground] * 2), h=5.0, min_size=0)
    assert stack.shape == (2, 40, 60) and sorted(np.unique(stack)) == list(range(7))
    with pytest.raises(FluosegError):
        labels_from_distance(distance, foreground[:-1])
    with pytest.raises(FluosegError):
        labels_from_distance(distance, foreground, h=0)


def test_threshold_connected_components_and_min_size() -> None:
    probability = np.zeros((30, 30), np.float32)
    probability[2:4, 2:4] = 0.9  # 4 px speck
    probability[10:20, 10:20] = 0.8  # 100 px object with a hole
    probability[14:16, 14:16] = 0.1
    probability[25:28, 5:25] = 0.5  # exactly at the threshold: background
    labels = labels_from_threshold(probability, min_size=10)
    assert labels.dtype == np.uint32 and sorted(np.unique(labels)) == [0, 1]
    assert (labels == 1).sum() == 96
    assert (labels_from_threshold(probability, min_size=10, fill_holes=True) == 1).sum() == 100
    assert labels_from_threshold(probability, min_size=0).max() == 2
    # Diagonal neighbours: apart with connectivity 1, joined with 2.
    diagonal = np.zeros((4, 4))
    diagonal[0, 0] = diagonal[1, 1] = 1
    assert labels_from_threshold(diagonal, min_size=0).max() == 2
    assert labels_from_threshold(diagonal, min_size=0, connectivity=2).max() == 1
    stack = labels_from_threshold(np.stack([probability, probability]), min_size=10)
    assert sorted(np.unique(stack)) == [0, 1, 2]


def test_border_classes_validation_and_stacks() -> None:
    truth = two_touching_disks()
    probs = one_hot(border_targets(truth))
    stack = labels_from_border_classes(np.stack([probs, probs], axis=1))
    assert stack.shape == (2, 40, 60) and stack.max() == 4
    with pytest.raises(FluosegError):
        labels_from_border_classes(probs[:2])
    with pytest.raises(FluosegError):
        labels_from_border_classes(np.full_like(probs, np.nan))


@pytest.mark.skipif(not DSB.is_dir(), reason="shared DSB 2018 data not available")
def test_round_trip_on_real_dsb_image() -> None:
    import tifffile

    truth = tifffile.imread(DSB / "labels" / "9ebcfaf2322932d4.tif")  # 58 nuclei, 45 touching others
    n_true = len(np.unique(truth)) - 1
    from_border = labels_from_border_classes(one_hot(border_targets(truth)), min_size=0)
    distance, foreground = distance_targets(truth)
    from_distance = labels_from_distance(distance, foreground, min_size=0)
    for pred in (from_border, from_distance):
        assert len(ious(truth, pred)) > 0.95 * n_true


def random_height_map(seed: int, shape=(96, 96)) -> tuple[np.ndarray, np.ndarray]:
    """Blurred noise cut into blobs: many objects, some touching the edges, some low, plateaus."""
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    field = ndi.gaussian_filter(rng.normal(size=shape), rng.uniform(1.5, 4))
    mask = field > np.quantile(field, rng.uniform(0.3, 0.8))
    height = ndi.distance_transform_edt(mask) * rng.uniform(0.2, 1.5) + rng.normal(0, 0.3, shape) * mask
    if seed % 3 == 0:  # plateaus and exact ties
        height = np.round(height * 2) / 2
    return np.where(mask, np.maximum(height, 0.0), 0.0), mask


@pytest.mark.parametrize("seed", range(40))
def test_h_maxima_per_object_equals_the_whole_image_computation(seed):
    from skimage.morphology import h_maxima

    height, mask = random_height_map(seed)
    for h in (0.3, 1.0, 2.5):
        expected = h_maxima(height, h).astype(bool) & mask
        np.testing.assert_array_equal(h_maxima_per_object(height, mask, h), expected)


def test_single_peak_objects_take_the_closed_form_and_agree_with_skimage():
    from skimage.morphology import h_maxima

    from fluoseg.instance.postprocess import _single_peak_objects, connected_components

    yy, xx = np.mgrid[:30, :100]
    cone = np.maximum(0.0, 6.0 - np.hypot(yy - 15, xx - 12) / 2)  # one peak
    plateau = np.minimum(4.0, np.maximum(0.0, 8.0 - np.hypot(yy - 15, xx - 45) / 1.5))  # one flat top
    twin = np.maximum(np.maximum(0.0, 5.0 - np.hypot(yy - 15, xx - 80) / 2),  # two peaks, one object
                      np.maximum(0.0, 4.0 - np.hypot(yy - 15, xx - 87) / 2))
    height = cone + plateau + twin
    mask = height > 0
    objects, count = connected_components(mask, connectivity=2, return_num=True)
    assert count == 3
    assert _single_peak_objects(height, objects, count).tolist() == [False, True, True, False]
    for h in (0.5, 2.0, 4.5):
        expected = h_maxima(height, h).astype(bool) & mask
        np.testing.assert_array_equal(h_maxima_per_object(height, mask, h), expected)
    assert h_maxima_per_object(height, mask, 2.0)[:, 30:60].sum() == (plateau == 4.0).sum()  # the whole top


def test_h_maxima_per_object_without_background_and_without_objects():
    from skimage.morphology import h_maxima

    yy, xx = np.mgrid[:20, :20]
    height = 5.0 - np.hypot(yy - 10, xx - 10) / 4 + (yy == 3) * (xx == 3) * 3.0  # two maxima, no background
    full = np.ones(height.shape, bool)
    np.testing.assert_array_equal(h_maxima_per_object(height, full, 1.0), h_maxima(height, 1.0).astype(bool))
    assert not h_maxima_per_object(np.zeros((8, 8)), np.zeros((8, 8), bool), 1.0).any()


@pytest.mark.parametrize("seed", range(30))
def test_flooding_component_by_component_equals_the_whole_image_watershed(seed):
    from scipy import ndimage as ndi
    from skimage.segmentation import watershed

    from fluoseg.instance.postprocess import _flood_components, connected_components

    height, mask = random_height_map(seed)
    rng = np.random.default_rng(seed)
    for connectivity in (1, 2):
        footprint = ndi.generate_binary_structure(2, connectivity)
        components = connected_components(mask, connectivity=connectivity)
        markers = connected_components(h_maxima_per_object(height, mask, rng.uniform(0.2, 1.5)), connectivity=2)
        markers[rng.random(mask.shape) < 0.002] = 0  # some components left without a marker stay background
        expected = watershed(-height, markers=markers, mask=mask, connectivity=footprint)
        flooded = _flood_components(-height, markers, components, ndi.find_objects(components), footprint)
        if seed % 3:
            np.testing.assert_array_equal(flooded, expected)
        else:  # plateaus: marker pixels tie, and skimage's heap orders ties by its own layout
            assert np.array_equal(flooded > 0, expected > 0)
            assert set(np.unique(flooded)) == set(np.unique(expected))
            assert (flooded != expected).mean() < 0.01


def test_distance_decoding_floods_only_components_with_several_seeds() -> None:
    from unittest import mock

    import fluoseg.instance.postprocess as postprocess

    truth = two_touching_disks()
    truth[5:10, 50:55] = 3  # a lone square: one seed, no flooding
    distance, foreground = distance_targets(truth)
    with mock.patch.object(postprocess, "watershed", wraps=postprocess.watershed) as flood:
        pred = labels_from_distance(distance, foreground.astype(np.float32), min_size=0)
    assert flood.call_count == 1 and flood.call_args.kwargs["mask"].size < truth.size / 2  # the pair's box only
    assert sorted(np.unique(pred)) == [0, 1, 2, 3]
    assert (pred[5:10, 50:55] == pred[7, 52]).all()


def whole_image_border_decoding(probs: np.ndarray, connectivity: int, min_size: int) -> np.ndarray:
    """labels_from_border_classes before it flooded component by component: one watershed over the image."""
    from scipy import ndimage as ndi
    from skimage.segmentation import watershed

    from fluoseg.instance.postprocess import _finalise, connected_components

    classes = np.argmax(probs, axis=0)
    seeds = connected_components(classes == 1, connectivity=connectivity)
    grown = watershed(probs[2].astype(np.float64), markers=seeds, mask=classes != 0,
                      connectivity=ndi.generate_binary_structure(2, connectivity))
    return _finalise(grown, min_size)


@pytest.mark.parametrize("seed", range(12))
def test_border_decoding_floods_component_by_component_as_the_whole_image_watershed(seed):
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    truth = np.zeros((96, 96), np.int32)
    for index in range(1, 30):  # overlapping disks: touching nuclei, lone ones, some cut by the edge
        y, x, r = rng.integers(0, 96), rng.integers(0, 96), rng.integers(3, 9)
        truth[(np.mgrid[:96, :96][0] - y) ** 2 + (np.mgrid[:96, :96][1] - x) ** 2 <= r * r] = index
    hot = one_hot(border_targets(truth))
    soft = np.stack([ndi.gaussian_filter(c, rng.uniform(0.5, 1.5)) for c in hot]) + rng.uniform(0, 0.05, hot.shape)
    for connectivity in (1, 2):
        expected = whole_image_border_decoding(soft, connectivity, 3)  # real-valued: no ties between seed pixels
        np.testing.assert_array_equal(labels_from_border_classes(soft, connectivity=connectivity, min_size=3),
                                      expected)
        # one-hot maps are flat, seed pixels tie, and skimage's heap orders ties by its own layout
        flat = labels_from_border_classes(hot, connectivity=connectivity, min_size=0)
        expected = whole_image_border_decoding(hot, connectivity, 0)
        assert flat.max() == expected.max() and np.array_equal(flat > 0, expected > 0)
        assert (np.argmax(hot, axis=0)[flat != expected] == 2).all()  # only where fronts meet in a border band


def test_border_decoding_floods_only_regions_with_several_seeds() -> None:
    from unittest import mock

    import fluoseg.instance.postprocess as postprocess

    truth = two_touching_disks()
    truth[5:10, 50:55] = 3  # a lone square: one seed, no flooding
    with mock.patch.object(postprocess, "watershed", wraps=postprocess.watershed) as flood:
        pred = labels_from_border_classes(one_hot(border_targets(truth)), min_size=0)
    assert flood.call_count == 1 and flood.call_args.kwargs["mask"].size < truth.size / 2  # the pair's box only
    assert sorted(np.unique(pred)) == [0, 1, 2, 3]


@pytest.mark.parametrize("seed", range(12))
def test_float32_maps_decode_as_their_float64_copies(seed):
    # float32 maps are decoded without a float64 copy of the whole map; the seeds' float margin
    # and the flooding order must still be those of the map in float64
    height, mask = random_height_map(seed)
    distance = (height + np.random.default_rng(seed).normal(0, 0.05, height.shape)).astype(np.float32)
    probability = np.where(mask, 0.9, 0.1).astype(np.float32)
    for h in (0.3, 1.0):
        original = distance.copy()
        labels = labels_from_distance(distance, probability, h=h, min_size=3)
        np.testing.assert_array_equal(labels, labels_from_distance(distance.astype(np.float64), probability,
                                                                   h=h, min_size=3))
        np.testing.assert_array_equal(distance, original)  # the caller's map is left alone
    assert h_maxima_per_object(np.where(mask, np.maximum(distance, 0), 0), mask, 1.0).dtype == bool


def test_near_equal_peaks_of_a_float32_map_take_the_float64_margin():
    # two peaks 5e-7 apart joined 0.8 below them: one object for h = 1. skimage's float margin
    # in float32 (2e-6 x the value) would make the lower peak a second seed and split it
    yy, xx = np.mgrid[:21, :41]
    twin = np.maximum(5.0 - 0.1 * np.hypot(yy - 10, xx - 12), 5.0 - 0.1 * np.hypot(yy - 10, xx - 28))
    distance = twin.astype(np.float32)
    distance[10, 28] = np.nextafter(np.float32(5.0), np.float32(0.0))
    probability = (twin > 3.5).astype(np.float32)
    labels = labels_from_distance(distance, probability, h=1.0, min_size=0)
    assert labels.max() == 1


def test_finalise_matches_a_size_filter_and_skimage_relabel_sequential():
    from skimage.segmentation import relabel_sequential

    from fluoseg.instance.postprocess import _finalise

    rng = np.random.default_rng(0)
    for _ in range(100):
        labels = rng.integers(0, rng.integers(1, 30), size=(int(rng.integers(1, 30)), int(rng.integers(1, 30))))
        min_size = int(rng.integers(0, 6))
        sizes = np.bincount(labels.ravel())
        small = sizes < min_size
        small[0] = False
        expected = relabel_sequential(np.where(small[labels], 0, labels))[0]
        found = _finalise(labels, min_size)
        assert found.dtype == np.uint32 and np.array_equal(found, expected)
    assert _finalise(np.zeros((0, 4), np.int64), 5).shape == (0, 4)


def three_close_disks(size: int = 90) -> np.ndarray:
    """Disks of radius 13, 11 and 9 px whose outlines touch or nearly touch, on a ``size``² grid."""
    yy, xx = np.mgrid[:size, :size]
    labels = np.zeros((size, size), np.int32)
    for index, (cy, cx, r) in enumerate([(30, 30, 13), (30, 55, 11), (55, 42, 9)], start=1):
        labels[((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r) & (labels == 0)] = index
    return labels


def test_regrid_follows_the_fine_maps_where_nearest_neighbour_gives_blocks() -> None:
    truth = three_close_disks()
    distance, foreground = distance_targets(truth)
    fine = np.stack([distance, foreground.astype(np.float32)])
    coarse = resample_to_shape(fine, (30, 30), kind="probabilities")  # the network's scale: a third of the pixels
    labels = labels_from_distance(coarse[0] * 30 / 90, coarse[1], h=0.5, min_size=0)
    assert labels.max() == 3
    blocks = resample_to_shape(labels, truth.shape, kind="labels")
    regridded = regrid_labels(labels, fine[1] > 0.5, -fine[0])
    assert regridded.dtype == np.uint32 and sorted(np.unique(regridded)) == [0, 1, 2, 3]
    assert (ious(truth, regridded) > 0.97).all()  # the fine outlines, met where the fine distance says
    assert ious(truth, blocks).min() < 0.93 < ious(truth, regridded).min()


def test_regrid_keeps_labels_that_already_fit_and_drops_what_leaves_the_region() -> None:
    truth = three_close_disks(60)
    assert np.array_equal(regrid_labels(truth, truth > 0, np.zeros(truth.shape)), truth)
    region = truth > 0
    region[truth == 2] = False  # object 2 has no pixel of the region left: it vanishes, ids stay consecutive
    region[:3, :3] = True  # region that no object reaches stays background
    regridded = regrid_labels(truth, region, np.zeros(truth.shape))
    assert sorted(np.unique(regridded)) == [0, 1, 2]
    assert np.array_equal(regridded == 2, truth == 3) and not regridded[:3, :3].any()


@pytest.mark.parametrize("seed", range(12))
def test_regrid_floods_the_band_piece_by_piece_as_one_watershed(seed):
    from scipy import ndimage as ndi
    from skimage.segmentation import watershed

    from fluoseg.instance.postprocess import _finalise

    height, mask = random_height_map(seed)
    labels = labels_from_distance(height, mask.astype(np.float32), h=0.5, min_size=0)
    small = resample_to_shape(labels, (48, 48), kind="labels")  # decoded at half the resolution
    region, elevation = mask, -(height + np.random.default_rng(seed).uniform(0, 1e-3, height.shape))
    for connectivity in (1, 2):
        footprint = ndi.generate_binary_structure(2, connectivity)
        seeds = np.where(region, resample_to_shape(small, region.shape, kind="labels"), 0).astype(np.int64)
        unassigned = region & (seeds == 0)
        shore = (seeds > 0) & ndi.binary_dilation(unassigned, footprint)
        grown = watershed(elevation, markers=np.where(shore, seeds, 0), mask=unassigned | shore, connectivity=footprint)
        expected = _finalise(np.where(seeds > 0, seeds, grown), 1)  # one watershed over the image
        assert unassigned.any() and grown.max() > 0
        np.testing.assert_array_equal(regrid_labels(small, region, elevation, connectivity=connectivity), expected)


def test_regrid_carries_a_stack_slice_by_slice() -> None:
    truth = np.stack([three_close_disks(60), np.zeros((60, 60), np.int32), three_close_disks(60)[::-1]])
    truth[2][truth[2] > 0] += 3  # ids unique over the stack, as decoded stacks have them
    small = resample_to_shape(truth, (3, 30, 30), kind="labels")
    regridded = regrid_labels(small, truth > 0, np.zeros(truth.shape))
    assert regridded.shape == truth.shape and regridded.max() == 6 and not regridded[1].any()
    assert np.array_equal(regridded > 0, truth > 0)
    assert (ious(truth[2], regridded[2]) > 0.95).all() and set(np.unique(regridded[2])) == {0, 4, 5, 6}


def test_regrid_refuses_maps_of_another_shape() -> None:
    with pytest.raises(FluosegError, match="do not match"):
        regrid_labels(np.zeros((5, 5), np.int32), np.zeros((10, 10), bool), np.zeros((10, 12)))
