import numpy as np
import pytest
import zarr

from fluoseg.data.normalize import SampleStats, compute_stats, normalize
from fluoseg.errors import FluosegError


def test_streamed_stats_equal_numpy_on_2d_and_3d():
    rng = np.random.default_rng(0)
    for shape in [(3, 50, 37), (2, 4, 20, 9)]:
        image = rng.normal(5, 3, shape).astype(np.float32)
        stats = compute_stats(image, chunk_rows=7)
        flat = image.reshape(shape[0], -1).astype(np.float64)
        np.testing.assert_allclose(stats.mean, flat.mean(1), rtol=1e-9)
        np.testing.assert_allclose(stats.std, flat.std(1), rtol=1e-9)


def test_stats_from_zarr_are_read_in_chunks():
    image = np.random.default_rng(1).integers(0, 255, (2, 64, 40), dtype=np.uint8)
    store = zarr.create_array(store=zarr.storage.MemoryStore(), shape=image.shape, dtype=image.dtype, chunks=(2, 16, 40))
    store[:] = image
    np.testing.assert_allclose(compute_stats(store, chunk_rows=16).mean, image.reshape(2, -1).mean(1))


def test_percentiles_exact_for_integers_and_close_for_floats():
    rng = np.random.default_rng(2)
    ints = rng.integers(0, 1000, (1, 100, 100)).astype(np.uint16)
    stats = compute_stats(ints, method="percentile", percentiles=(1.0, 99.8))
    assert stats.low[0] == np.percentile(ints, 1.0, method="inverted_cdf")
    assert stats.high[0] == np.percentile(ints, 99.8, method="inverted_cdf")
    floats = rng.normal(0, 1, (1, 200, 200))
    fstats = compute_stats(floats, method="percentile", percentiles=(1.0, 99.0))
    assert abs(fstats.low[0] - np.percentile(floats, 1)) < 0.01
    assert abs(fstats.high[0] - np.percentile(floats, 99)) < 0.01


def test_whole_sample_stats_differ_from_patch_stats():
    image = np.zeros((1, 40, 40), np.float32)
    image[:, :, 20:] = 100.0
    stats = compute_stats(image)
    patch = image[:, :10, :10]  # pure background
    normalised = normalize(patch, stats)
    assert np.allclose(normalised, -1.0)  # background is one std below the sample mean, not unit noise


def test_constant_and_zero_channels():
    image = np.stack([np.zeros((8, 8)), np.full((8, 8), 3.0), np.arange(64.0).reshape(8, 8)])
    stats = compute_stats(image)
    out = normalize(image, stats, keep_zero_channels=True)
    assert np.all(out[0] == 0) and np.all(np.isfinite(out)) and np.allclose(out[1], 0)
    assert out.dtype == np.float32


def test_nan_makes_stats_non_finite_and_round_trip():
    image = np.ones((1, 4, 4), np.float32)
    image[0, 1, 1] = np.nan
    assert not compute_stats(image).is_finite
    stats = compute_stats(np.ones((2, 3, 3)), method="percentile")
    assert SampleStats.from_dict(stats.to_dict()) == stats


def test_errors():
    with pytest.raises(FluosegError):
        compute_stats(np.ones((1, 2, 2)), method="zscore")
    with pytest.raises(FluosegError, match="percentile"):
        normalize(np.ones((1, 2, 2)), compute_stats(np.ones((1, 2, 2))), method="percentile")
