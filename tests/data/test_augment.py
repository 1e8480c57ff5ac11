import numpy as np

from fluoseg.data.augment import Augmenter, dihedral, inverse_dihedral


def test_all_eight_symmetries_distinct_and_invertible():
    array = np.arange(9).reshape(1, 3, 3)
    outputs = {dihedral(array, i).tobytes() for i in range(8)}
    assert len(outputs) == 8
    for i in range(8):
        assert np.array_equal(inverse_dihedral(dihedral(array, i), i), array)


def test_targets_stay_aligned_and_all_transforms_occur():
    rng = np.random.default_rng(0)
    image = rng.random((2, 6, 6)).astype(np.float32)
    augmenter = Augmenter(intensity_scale=0.0, intensity_shift=0.0, rng=np.random.default_rng(1))
    seen = set()
    for _ in range(200):
        out, (target,) = augmenter(image, [image[0].copy()])
        assert np.array_equal(out[0], target)
        seen.add(out.tobytes())
    assert len(seen) == 8


def test_jitter_spares_missing_channels_and_is_deterministic():
    image = np.ones((3, 4, 4), np.float32)
    image[1] = 0.0
    a = Augmenter(rng=np.random.default_rng(5))(image, [])[0]
    b = Augmenter(rng=np.random.default_rng(5))(image, [])[0]
    assert np.array_equal(a, b)
    assert np.all(a[1] == 0) and not np.allclose(a[0], 1.0)


def test_no_geometry_when_disabled():
    image = np.arange(16, dtype=np.float32).reshape(1, 4, 4)
    out, _ = Augmenter(flips=False, rot90=False, intensity_scale=0, intensity_shift=0)(image, [])
    assert np.array_equal(out, image)
