import numpy as np
import pytest

from fluoseg.data.blank import BLANK_SNR, is_blank, signal_to_noise


def _disk(shape, centre, radius):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2


@pytest.mark.parametrize("size", [256, 1024])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pure_noise_of_any_level_and_offset_is_blank(size, seed):
    rng = np.random.default_rng(seed)
    for level, offset in ((0.5, 10.0), (5.0, 100.0), (200.0, 3000.0)):
        image = rng.normal(offset, level, (1, size, size))
        assert 4.0 < signal_to_noise(image) < 8.5
        assert is_blank(image)


def test_camera_like_noise_in_integer_images_is_blank():
    rng = np.random.default_rng(3)
    assert is_blank(rng.poisson(20, (1, 512, 512)).astype(np.uint16))
    assert is_blank(np.clip(rng.normal(10, 1, (1, 512, 512)), 0, 255).astype(np.uint8))


def test_one_dim_nucleus_makes_an_image_non_blank():
    rng = np.random.default_rng(4)
    image = rng.normal(100, 5, (512, 512))
    image[_disk(image.shape, (200, 300), 6)] += 6  # 1.2 noise standard deviations
    assert signal_to_noise(image[None]) > BLANK_SNR
    image = rng.normal(100, 5, (512, 512))
    image[_disk(image.shape, (200, 300), 6)] += 2  # 0.4 sd: under the detection limit
    assert is_blank(image[None])


def test_any_channel_or_slice_with_signal_counts():
    rng = np.random.default_rng(5)
    stack = rng.normal(100, 5, (2, 3, 128, 128))
    assert is_blank(stack)
    stack[1, 2][_disk((128, 128), (64, 64), 8)] += 40
    assert not is_blank(stack)


def test_constant_and_noise_free_images():
    assert signal_to_noise(np.full((1, 64, 64), 7.0)) == 0.0
    clean = np.zeros((1, 64, 64))
    clean[0][_disk((64, 64), (32, 32), 6)] = 1.0
    assert signal_to_noise(clean) == np.inf


def test_large_planes_take_their_statistics_from_sampled_rows_with_the_same_score():
    from scipy import ndimage

    from fluoseg.data import blank

    rng = np.random.default_rng(6)
    image = rng.normal(100, 5, (1, 3000, 1500)) + np.linspace(0, 20, 1500)  # a gradient, 4.5 MP
    image[0][_disk((3000, 1500), (2900, 700), 5)] += 8
    assert image[0].size > blank.SAMPLE_PIXELS  # so rows are sampled
    smoothed = ndimage.gaussian_filter(image[0].astype(np.float32), 2.0)
    differences = np.diff(image[0], axis=-1)
    noise = 1.4826 * np.median(np.abs(differences - np.median(differences))) / np.sqrt(2) / (4 * np.sqrt(np.pi))
    full = (smoothed.max() - np.percentile(smoothed, 5)) / noise  # every pixel in both statistics
    assert signal_to_noise(image) == pytest.approx(full, rel=0.01)
    assert signal_to_noise(image) > BLANK_SNR  # the brightest spot is searched in every row
