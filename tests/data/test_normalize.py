"""Tests of whole-sample, streamed normalisation statistics (fluoseg.data.normalize)."""

import json

import numpy as np
import pytest
import zarr

from fluoseg.data.normalize import FLOAT_HISTOGRAM_BINS, SampleStats, compute_stats, normalize, standardize
from fluoseg.errors import FluosegError


class RecordingArray:
    """A lazy array stand-in that records the size of every read."""

    def __init__(self, array: np.ndarray) -> None:
        self._array = array
        self.shape, self.dtype = array.shape, array.dtype
        self.reads: list[int] = []

    def __getitem__(self, key):
        block = self._array[key]
        self.reads.append(block.size)
        return block


@pytest.mark.parametrize("shape", [(3, 50, 37), (2, 4, 20, 9)])
@pytest.mark.parametrize("rows", [1, 7, 1000])
def test_streamed_mean_std_equal_numpy(shape, rows):
    image = np.random.default_rng(0).normal(5, 3, shape).astype(np.float32)
    stats = compute_stats(image, chunk_rows=rows)
    flat = image.reshape(shape[0], -1).astype(np.float64)
    np.testing.assert_allclose(stats.mean, flat.mean(1), rtol=1e-12)
    np.testing.assert_allclose(stats.std, flat.std(1), rtol=1e-10)
    np.testing.assert_array_equal(stats.minimum, flat.min(1))
    assert stats.count == flat.shape[1] and stats.percentiles is None and stats.low is None


def test_chan_combination_is_stable_for_a_large_mean():
    # sum(x^2)/n - mean^2 would lose every digit here; the pairwise update does not.
    rng = np.random.default_rng(1)
    image = 1e8 + rng.normal(0, 1e-2, (1, 300, 200))
    stats = compute_stats(image, chunk_rows=3)
    assert stats.std[0] == pytest.approx(image.std(), rel=1e-6)


def test_reads_never_exceed_one_chunk():
    image = np.random.default_rng(2).integers(0, 255, (3, 6, 40, 30), dtype=np.uint8)
    lazy = RecordingArray(image)
    stats = compute_stats(lazy, method="percentile", chunk_rows=8)
    assert max(lazy.reads) <= 3 * 8 * 30
    assert sum(lazy.reads) == image.size  # 8-bit: exact percentiles in the same single pass
    np.testing.assert_allclose(stats.mean, image.reshape(3, -1).mean(1))
    # Whole planes that fit in the budget are read together, still within it.
    lazy = RecordingArray(image)
    compute_stats(lazy, chunk_rows=85)
    assert max(lazy.reads) <= 3 * 85 * 30 and len(lazy.reads) == 3


def test_stats_from_a_zarr_array():
    image = np.random.default_rng(3).integers(0, 4000, (2, 64, 40), dtype=np.uint16)
    store = zarr.create_array(store=zarr.storage.MemoryStore(), shape=image.shape, dtype=image.dtype,
                              chunks=(2, 16, 40))
    store[:] = image
    stats = compute_stats(store, method="percentile")  # automatic chunking follows the zarr chunks
    np.testing.assert_allclose(stats.mean, image.reshape(2, -1).mean(1), rtol=1e-12)
    np.testing.assert_allclose(stats.high, np.percentile(image.reshape(2, -1), 99.8, axis=1), rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.int32, bool])
def test_integer_percentiles_are_exact(dtype):
    rng = np.random.default_rng(4)
    values = rng.gamma(2.0, 40.0, (2, 3, 41, 29)) - (30 if dtype in (np.int16, np.int32) else 0)
    image = (values > 80) if dtype is bool else np.clip(values, -1000, 255).astype(dtype)
    for levels in [(1.0, 99.8), (0.0, 100.0), (37.3, 50.0)]:
        stats = compute_stats(image, method="percentile", percentiles=levels, chunk_rows=5)
        expected = np.percentile(image.reshape(2, -1).astype(np.float64), levels, axis=1)
        np.testing.assert_allclose([stats.low, stats.high], expected, rtol=1e-12, atol=1e-12)
        assert stats.percentiles == levels


@pytest.mark.parametrize("kind", ["normal", "exponential"])
def test_float_percentiles_within_one_histogram_bin(kind):
    rng = np.random.default_rng(5)
    image = (rng.normal(0, 1, (2, 200, 150)) if kind == "normal" else rng.exponential(3, (2, 200, 150)))
    image = image.astype(np.float32)
    stats = compute_stats(image, method="percentile", percentiles=(1.0, 99.8), chunk_rows=17)
    flat = image.reshape(2, -1).astype(np.float64)
    expected = np.percentile(flat, [1.0, 99.8], axis=1)
    bin_width = (flat.max(1) - flat.min(1)) / FLOAT_HISTOGRAM_BINS
    assert np.all(np.abs(np.array([stats.low, stats.high]) - expected) <= bin_width)


def test_constant_float_channel_percentiles():
    image = np.full((1, 10, 10), 3.5, np.float32)
    stats = compute_stats(image, method="percentile")
    assert stats.low == (3.5,) and stats.high == (3.5,)
    assert np.all(normalize(image, stats, method="percentile") == 0)


def test_normalised_sample_has_zero_mean_unit_std():
    image = np.random.default_rng(6).normal(30, 7, (3, 2, 40, 40))
    out = normalize(image, compute_stats(image))
    assert out.dtype == np.float32 and out.shape == image.shape
    np.testing.assert_allclose(out.reshape(3, -1).mean(1), 0, atol=1e-5)
    np.testing.assert_allclose(out.reshape(3, -1).std(1), 1, atol=1e-5)


def test_patch_uses_sample_statistics_not_its_own():
    rng = np.random.default_rng(7)
    image = rng.normal(20, 5, (2, 64, 64)).astype(np.float32)
    image[:, :32] += 100  # a bright half: the patch below is all background
    stats = compute_stats(image)
    patch = image[:, 40:60, 10:30]
    with_sample = standardize(patch, stats)
    with_patch = standardize(patch, compute_stats(patch))
    # The MS-ME rule: a patch is exactly the crop of the normalised sample (tiles agree) ...
    np.testing.assert_array_equal(with_sample, normalize(image, stats)[:, 40:60, 10:30])
    # ... and not a patch-level standardisation, which would blow background up to unit variance.
    assert with_sample.std() < 0.3 and with_patch.std() == pytest.approx(1.0, abs=1e-4)
    assert not np.allclose(with_sample, with_patch)


def test_percentile_normalisation_maps_percentiles_to_0_and_1():
    image = np.random.default_rng(8).integers(0, 1000, (2, 50, 50)).astype(np.uint16)
    stats = compute_stats(image, method="percentile", percentiles=(2.0, 98.0))
    out = normalize(image, stats, method="percentile")
    for c in range(2):
        np.testing.assert_allclose(np.percentile(out[c], [2.0, 98.0]), [0.0, 1.0], atol=1e-6)


@pytest.mark.parametrize("method", ["gaussian", "percentile"])
def test_zero_channels(method):
    rng = np.random.default_rng(9)
    image = rng.normal(50, 10, (3, 30, 30)).astype(np.float32)
    image[1] = 0.0  # a missing marker, zero-filled in the whole sample
    image[2] = 7.0  # a constant channel
    stats = compute_stats(image, method=method)
    out = normalize(image, stats, method=method)
    assert np.all(np.isfinite(out)) and np.all(out[1] == 0) and np.all(out[2] == 0)
    assert stats.zero_channels.tolist() == [False, True, False]
    # A marker dropped in a window (e.g. marker sampling) stays zero only when asked.
    window = image.copy()
    window[0] = 0.0
    assert np.all(normalize(window, stats, method=method)[0] != 0)
    kept = normalize(window, stats, method=method, keep_zero_channels=True)
    assert np.all(kept[0] == 0) and np.array_equal(kept[2], out[2])


def test_stats_round_trip_through_json():
    image = np.random.default_rng(10).integers(0, 255, (2, 3, 9, 9), dtype=np.uint8)
    for method in ["gaussian", "percentile"]:
        stats = compute_stats(image, method=method)
        back = SampleStats.from_dict(json.loads(json.dumps(stats.to_dict())))
        assert back == stats
    old_style = SampleStats.from_dict({"mean": [1.0], "std": [2.0], "low": None, "high": None})
    assert old_style.n_channels == 1 and old_style.percentiles is None


def test_non_finite_samples_are_flagged():
    image = np.ones((2, 4, 4), np.float32)
    image[1, 0, 0] = np.nan
    assert compute_stats(image).is_finite is False
    stats = compute_stats(image, method="percentile")
    assert not stats.is_finite
    with pytest.raises(FluosegError, match="not finite"):
        normalize(image, stats)
    assert compute_stats(np.ones((1, 3, 3))).is_finite


def test_user_errors():
    image = np.ones((1, 4, 4))
    with pytest.raises(FluosegError, match="unknown normalisation"):
        compute_stats(image, method="zscore")
    with pytest.raises(FluosegError, match="percentiles"):
        compute_stats(image, method="percentile", percentiles=(99.0, 1.0))
    with pytest.raises(FluosegError, match="channel-first"):
        compute_stats(np.ones((4, 4)))
    with pytest.raises(FluosegError, match="method='percentile'"):
        normalize(image, compute_stats(image), method="percentile")
    with pytest.raises(FluosegError, match="2 channels"):
        normalize(image, compute_stats(np.ones((2, 4, 4))))
    with pytest.raises(FluosegError, match="mean"):
        SampleStats.from_dict({"std": [1.0]})
