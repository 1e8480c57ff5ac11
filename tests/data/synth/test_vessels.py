import numpy as np
import pytest

from fluoseg.data.synth.vessels import DEFAULT_MARKERS, simulate_tissue
from fluoseg.errors import FluosegError


def test_shapes_dtypes_and_determinism():
    a = simulate_tissue((96, 80), seed=3)
    b = simulate_tissue((96, 80), seed=3)
    assert a.image.shape == (5, 96, 80) and a.image.dtype == np.uint8
    assert a.masks.shape == (2, 96, 80) and set(np.unique(a.masks)) <= {0, 1}
    assert np.array_equal(a.image, b.image) and np.array_equal(a.masks, b.masks)
    assert not np.array_equal(a.image, simulate_tissue((96, 80), seed=4).image)


def test_classes_are_exclusive_and_fractions_plausible():
    fractions = np.array([simulate_tissue((256, 256), seed=s).masks.reshape(2, -1).mean(1) for s in range(8)])
    assert np.all(fractions[:, 0] > 0.02) and np.all(fractions[:, 0] < 0.2)
    assert np.all(fractions[:, 1] < 0.05)
    sample = simulate_tissue((128, 128), seed=1)
    assert not np.any(sample.masks[0] & sample.masks[1])


def test_marker_semantics():
    sample = simulate_tissue((256, 256), seed=2, artery_probability=1.0)
    image = dict(zip(sample.markers, sample.image.astype(float)))
    sinusoids, arteries = sample.masks.astype(bool)
    background = ~(sinusoids | arteries)
    assert image["endomucin"][sinusoids].mean() > image["endomucin"][background].mean() + 20
    assert image["collagen"][arteries].mean() >= image["collagen"][background].mean()
    wall = np.zeros_like(arteries)
    from scipy import ndimage

    wall = ndimage.binary_dilation(arteries, iterations=3) & ~arteries
    assert image["collagen"][wall].mean() > image["collagen"][background].mean() + 30


def test_marker_subset_order_and_failed_stain():
    sample = simulate_tissue((64, 64), markers=["collagen", "DAPI"], seed=0)
    assert sample.image.shape[0] == 2 and sample.markers == ("collagen", "DAPI")
    failed = simulate_tissue((64, 64), seed=0, failed_stain_probability=1.0)
    assert set(failed.failed) == set(DEFAULT_MARKERS)
    assert failed.image.mean() < simulate_tissue((64, 64), seed=0).image.mean()
    with pytest.raises(FluosegError, match="knows markers"):
        simulate_tissue((64, 64), markers=["GFP"])
