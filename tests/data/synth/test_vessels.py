"""Tests of the multi-marker vessel tissue simulator (fluoseg.data.synth.vessels)."""

import time

import numpy as np
import pytest
from scipy import ndimage

from fluoseg.data.synth import vessels
from fluoseg.data.synth.vessels import DEFAULT_MARKERS, VESSEL_CLASSES, simulate_tissue
from fluoseg.errors import FluosegError


@pytest.fixture(scope="module")
def samples():
    return [simulate_tissue((256, 256), seed=s) for s in range(8)]


def test_shapes_dtypes_and_determinism():
    a = simulate_tissue((96, 80), seed=3)
    b = simulate_tissue((96, 80), seed=3)
    assert a.image.shape == (5, 96, 80) and a.image.dtype == np.uint8
    assert a.masks.shape == (2, 96, 80) and a.masks.dtype == np.uint8 and set(np.unique(a.masks)) <= {0, 1}
    assert a.markers == DEFAULT_MARKERS and a.classes == VESSEL_CLASSES == ("sinusoids", "arteries")
    assert a.pixel_size == (1.0, 1.0) and a.failed == ()
    assert np.array_equal(a.image, b.image) and np.array_equal(a.masks, b.masks)
    assert not np.array_equal(a.image, simulate_tissue((96, 80), seed=4).image)


def test_class_fractions_like_vessels5(samples):
    fractions = np.array([[s.fractions[c] for c in VESSEL_CLASSES] for s in samples])
    assert np.all(fractions[:, 0] > 0.04) and np.all(fractions[:, 0] < 0.17)
    assert np.all(fractions[:, 1] <= 0.022)
    assert np.any(fractions[:, 1] > 0.003)  # arteries occur ...
    assert np.any(fractions[:, 1] == 0)  # ... but not in every sample
    for s in samples:
        assert not np.any(s.masks[0] & s.masks[1])  # exclusive classes


def test_sinusoids_are_thin_tortuous_tubes_and_arteries_thicker(samples):
    sample = simulate_tissue((256, 256), seed=2, artery_probability=1.0)
    sinusoids, arteries = sample.masks.astype(bool)
    # Half-width from the distance to the background: thin tubes, thicker arteries.
    sinusoid_halfwidth = np.percentile(ndimage.distance_transform_edt(sinusoids)[sinusoids], 90)
    artery_halfwidth = ndimage.distance_transform_edt(arteries)[arteries].max()
    assert 1.5 <= sinusoid_halfwidth <= 6 and artery_halfwidth >= 4.5
    _, n = ndimage.label(sinusoids)
    assert n >= 5  # a broken network of many pieces, not one blob


def test_marker_semantics(samples):
    contrast = {m: [] for m in DEFAULT_MARKERS}
    for seed in range(4):
        sample = simulate_tissue((256, 256), seed=seed, artery_probability=1.0)
        image = dict(zip(sample.markers, sample.image.astype(float)))
        sinusoids, arteries = sample.masks.astype(bool)
        background = ~ndimage.binary_dilation(sinusoids | arteries, iterations=4)
        wall = sinusoids & (ndimage.distance_transform_edt(sinusoids) <= 1.5)
        artery_wall = arteries & (ndimage.distance_transform_edt(arteries) <= 2.5)
        near_sinusoid = ndimage.binary_dilation(sinusoids, iterations=4) & ~sinusoids & ~arteries
        bg = {m: image[m][background].mean() for m in DEFAULT_MARKERS}
        contrast["endomucin"].append(image["endomucin"][wall].mean() - bg["endomucin"])
        contrast["endoglin"].append(image["endoglin"][wall].mean() - bg["endoglin"])
        contrast["collagen"].append(image["collagen"][artery_wall].mean() - bg["collagen"])
        contrast["DAPI"].append(bg["DAPI"] - image["DAPI"][sinusoids & ~wall].mean())
        contrast["CXCL12-GFP"].append(image["CXCL12-GFP"][near_sinusoid].mean() - bg["CXCL12-GFP"])
        # Arteries: bright in collagen, barely in endomucin.
        assert image["endomucin"][artery_wall].mean() - bg["endomucin"] < 0.3 * contrast["endomucin"][-1]
    mean = {m: float(np.mean(v)) for m, v in contrast.items()}
    assert mean["endomucin"] > 40 and mean["endoglin"] > 25 and mean["collagen"] > 40  # strong cues
    assert mean["endoglin"] < mean["endomucin"]  # endoglin is the weaker endothelial stain
    # Weak cues: fewer nuclei in lumens, stromal cells next to sinusoids.
    assert 0 < mean["DAPI"] < mean["endomucin"] and 0 < mean["CXCL12-GFP"] < 2 * mean["endomucin"]


def test_stain_varies_between_samples(samples):
    means = np.array([s.image.reshape(5, -1).mean(1) for s in samples])
    assert np.all(means.std(0) > 2)


def test_marker_subset_gives_the_same_channels():
    full = simulate_tissue((64, 64), seed=0)
    subset = simulate_tissue((64, 64), markers=["collagen", "DAPI"], seed=0)
    assert subset.markers == ("collagen", "DAPI")
    assert np.array_equal(subset.image, full.image[[3, 0]]) and np.array_equal(subset.masks, full.masks)


def test_failed_stain():
    normal = simulate_tissue((128, 128), seed=0)
    failed = simulate_tissue((128, 128), seed=0, failed_markers=["endomucin"])
    assert failed.failed == ("endomucin",)
    wall = normal.masks[0].astype(bool)
    assert failed.image[1][wall].mean() - failed.image[1][~wall].mean() < 10
    assert np.array_equal(failed.image[[0, 2, 3, 4]], normal.image[[0, 2, 3, 4]])
    everything = simulate_tissue((64, 64), seed=0, failed_stain_probability=1.0)
    assert everything.failed == DEFAULT_MARKERS


def test_no_arteries_and_fixed_fractions():
    sample = simulate_tissue((128, 128), seed=5, artery_probability=0.0, sinusoid_fraction=0.1)
    assert sample.masks[1].sum() == 0
    assert sample.fractions["sinusoids"] == pytest.approx(0.1, rel=0.25)


def test_fast():
    simulate_tissue((256, 256), seed=0)
    start = time.perf_counter()
    for seed in range(3):
        simulate_tissue((256, 256), seed=seed)
    assert (time.perf_counter() - start) / 3 < 0.5


def test_user_errors():
    with pytest.raises(FluosegError, match="knows markers"):
        simulate_tissue((64, 64), markers=["GFP"])
    with pytest.raises(FluosegError, match="distinct"):
        simulate_tissue((64, 64), markers=["DAPI", "DAPI"])
    with pytest.raises(FluosegError, match="at least 16"):
        simulate_tissue((8, 64))
    with pytest.raises(FluosegError, match="sinusoid_fraction"):
        simulate_tissue((64, 64), sinusoid_fraction=(0.2, 0.1))
    assert "simulate_tissue" in vessels.__all__
