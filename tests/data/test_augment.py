"""Tests of training-patch augmentation (fluoseg.data.augment)."""

import numpy as np
import pytest

from fluoseg.data.augment import Augmenter, dihedral, inverse_dihedral
from fluoseg.errors import FluosegError


def _patch(shape=(3, 8, 8)):
    image = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    if shape[0] > 1:
        image[1] = 0.0  # a missing marker
    return image


def test_dihedral_has_eight_distinct_invertible_symmetries():
    array = np.arange(12, dtype=np.int32).reshape(1, 3, 4)
    outputs = {dihedral(array, i).tobytes() + bytes(dihedral(array, i).shape) for i in range(8)}
    assert len(outputs) == 8
    for i in range(8):
        assert np.array_equal(inverse_dihedral(dihedral(array, i), i), array)
        assert dihedral(array, i).flags["C_CONTIGUOUS"]
    with pytest.raises(FluosegError):
        dihedral(array, 8)


def test_geometry_is_identical_for_image_and_all_targets():
    rng = np.random.default_rng(0)
    augmenter = Augmenter(intensity_jitter=None, rng=rng)
    image = rng.random((3, 16, 16)).astype(np.float32)
    labels = (rng.random((16, 16)) * 50).astype(np.int32)
    for _ in range(30):
        masks = (image[:2] > 0.5).astype(np.uint8)  # (n, H, W)
        weights = image[2].astype(np.float64)  # (H, W)
        out, (m, lab, w) = augmenter(image, [masks, labels, weights])
        assert np.array_equal(m, (out[:2] > 0.5).astype(np.uint8))
        assert np.array_equal(w, out[2])  # a target equal to a channel stays equal
        assert m.dtype == np.uint8 and lab.dtype == np.int32 and w.dtype == np.float64
        assert sorted(lab.ravel()) == sorted(labels.ravel())  # pixels move, values do not change


def test_centred_output_windows_stay_aligned():
    # Valid-convolution training: the target is the centred output window of the input patch.
    rng = np.random.default_rng(8)
    image = rng.random((2, 20, 20)).astype(np.float32)
    augmenter = Augmenter(intensity_jitter=None, seed=9)
    for _ in range(20):
        out, (target,) = augmenter(image, [image[0, 6:14, 6:14].copy()])
        assert np.array_equal(target, out[0, 6:14, 6:14])


def test_all_eight_transforms_occur_with_equal_frequency():
    image = _patch((1, 5, 5))
    augmenter = Augmenter(intensity_jitter=None, seed=1)
    seen = {}
    for _ in range(800):
        out, _ = augmenter(image)
        seen[out.tobytes()] = seen.get(out.tobytes(), 0) + 1
    assert len(seen) == 8
    assert min(seen.values()) > 60  # 100 expected each


@pytest.mark.parametrize(("flips", "rot90", "expected"), [(True, False, 4), (False, True, 4), (False, False, 1)])
def test_restricted_symmetries(flips, rot90, expected):
    augmenter = Augmenter(flips=flips, rot90=rot90, intensity_jitter=None, seed=2)
    outputs = {augmenter(_patch((1, 4, 4)))[0].tobytes() for _ in range(100)}
    assert len(outputs) == expected


def test_non_square_patches_keep_their_shape():
    augmenter = Augmenter(seed=3)
    image, target = _patch((2, 6, 10)), np.zeros((6, 10))
    shapes = {(augmenter(image, [target])[0].shape, augmenter(image, [target])[1][0].shape) for _ in range(50)}
    assert shapes == {((2, 6, 10), (6, 10))}


def test_deterministic_given_a_seed_or_generator():
    image = np.random.default_rng(4).random((3, 12, 12)).astype(np.float32)
    runs = []
    for rng in [5, np.random.default_rng(5), 5]:
        augmenter = Augmenter(rng=rng)
        runs.append([augmenter(image, [image[0]])[0] for _ in range(5)])
    for a, b in zip(runs[0], runs[1]):
        assert np.array_equal(a, b)
    other = [Augmenter(seed=6)(image)[0] for _ in range(5)]
    assert not all(np.array_equal(a, b) for a, b in zip(runs[0], other))


def test_intensity_jitter_only_on_present_channels_and_never_on_targets():
    image = np.ones((3, 8, 8), np.float32)
    image[1] = 0.0
    target = image[0].copy()
    augmenter = Augmenter(flips=False, rot90=False, intensity_jitter=((0.5, 0.6), (1.0, 2.0)), seed=7)
    for _ in range(10):
        out, (t,) = augmenter(image, [target])
        assert np.all(out[1] == 0.0)  # the missing marker stays exactly zero
        assert 1.5 <= out[0, 0, 0] <= 2.6 and np.all(out[0] == out[0, 0, 0])  # one gain/offset per channel
        assert out[0, 0, 0] != out[2, 0, 0]
        assert np.array_equal(t, target)


def test_symmetric_ranges_and_config_style_arguments():
    a = Augmenter(intensity_jitter=(0.2, 0.3))
    assert a.scale_range == pytest.approx((0.8, 1.2)) and a.shift_range == pytest.approx((-0.3, 0.3))
    b = Augmenter(intensity_scale=0.2, intensity_shift=0.3)
    assert b.scale_range == a.scale_range and b.shift_range == a.shift_range
    assert not Augmenter(intensity_scale=0.0, intensity_shift=0.0).jitters
    out, _ = Augmenter(flips=False, rot90=False, intensity_jitter=None)(_patch())
    assert np.array_equal(out, _patch())
    assert Augmenter()(_patch().astype(np.uint8))[0].dtype == np.float32


def test_augment_user_errors():
    with pytest.raises(FluosegError, match="centred window"):
        Augmenter()(np.zeros((1, 8, 8)), [np.zeros((8, 7))])
    with pytest.raises(FluosegError, match="centred window"):
        Augmenter()(np.zeros((1, 8, 8)), [np.zeros((10, 10))])
    with pytest.raises(FluosegError, match="channel-first"):
        Augmenter()(np.zeros((8, 8)))
    with pytest.raises(FluosegError, match="not both"):
        Augmenter(intensity_jitter=(0.1, 0.1), intensity_scale=0.2)
    with pytest.raises(FluosegError, match="not both"):
        Augmenter(rng=1, seed=1)
    with pytest.raises(FluosegError, match="low <= high"):
        Augmenter(intensity_jitter=((1.2, 0.8), 0.0))
