import numpy as np
import pytest

from fluoseg.data.dataset import (
    IGNORE_INDEX,
    PatchSampler,
    PreparedSample,
    class_pixel_counts,
    cut_window,
    masks_to_target,
    prepare_sample,
)
from fluoseg.data.manifest import load_manifest
from fluoseg.errors import FluosegError
from fluoseg.markers import MarkerPanel


def test_masks_to_target_and_overlap_error():
    masks = np.zeros((2, 3, 3), np.uint8)
    masks[0, 0, 0] = 1
    masks[1, 2, 2] = 1
    target = masks_to_target(masks, ["a", "b"])
    assert target[0, 0] == 1 and target[2, 2] == 2 and target.sum() == 3
    masks[1, 0, 0] = 1
    with pytest.raises(FluosegError, match="separate"):
        masks_to_target(masks, ["a", "b"])


def test_cut_window_pads_outside():
    array = np.arange(16, dtype=np.float32).reshape(1, 4, 4)
    window = cut_window(array, -1, 2, 3, fill=-5)
    assert window.shape == (1, 3, 3)
    assert np.all(window[0, 0] == -5) and np.all(window[:, :, 2] == -5)
    assert window[0, 1, 0] == array[0, 0, 2]


def make_prepared(shape=(40, 40)):
    target = np.zeros(shape, np.int64)
    target[5:8, 30:33] = 1
    image = np.random.default_rng(0).normal(size=(2,) + shape).astype(np.float32)
    return PreparedSample(id="x", image=image, availability=np.array([1, 0], np.float32), target=target)


def test_patch_shapes_and_ignore_padding_for_small_images():
    sampler = PatchSampler([make_prepared((10, 12))], input_size=30, output_size=20, foreground_fraction=0.0,
                           augmenter=None, rng=np.random.default_rng(0))
    images, availability, targets = sampler.batch(3)
    assert images.shape == (3, 2, 30, 30) and availability.shape == (3, 2) and targets.shape == (3, 20, 20)
    assert (targets == IGNORE_INDEX).sum(axis=(1, 2)).min() == 20 * 20 - 10 * 12


def test_patch_aligns_input_centre_with_target():
    prepared = make_prepared()
    prepared.image[0] = np.arange(40)[None, :] + 100 * np.arange(40)[:, None]
    prepared.target[:] = prepared.image[0].astype(np.int64) % 7  # a recognisable target
    sampler = PatchSampler([prepared], input_size=24, output_size=10, foreground_fraction=0.0, augmenter=None,
                           rng=np.random.default_rng(1))
    for _ in range(5):
        image, _, target = sampler.draw()
        centre = image[0, 7:17, 7:17]  # margin 7
        assert np.array_equal(centre.astype(np.int64) % 7, target)


def test_foreground_sampling_finds_rare_class():
    rng = np.random.default_rng(0)
    sampler = PatchSampler([make_prepared()], input_size=10, output_size=6, foreground_fraction=1.0,
                           augmenter=None, rng=rng)
    assert all((sampler.draw()[2] == 1).any() for _ in range(20))


def test_class_pixel_counts():
    counts = class_pixel_counts([make_prepared(), make_prepared()], n_classes=2)
    assert counts.tolist() == [2 * (1600 - 9), 18, 0]


def test_prepare_sample_uses_whole_sample_stats_and_available_markers(tiny_dataset):
    sample = load_manifest(tiny_dataset).sample("s0")
    panel = MarkerPanel(["m3", "m2", "m1", "extra"])
    prepared = prepare_sample(sample, panel=panel, classes=["blob", "bar"])
    assert prepared.image.shape == (4, 72, 72)
    assert prepared.availability.tolist() == [1, 1, 1, 0]
    assert np.all(prepared.image[3] == 0)
    for slot in range(3):
        assert abs(prepared.image[slot].mean()) < 1e-4 and abs(prepared.image[slot].std() - 1) < 1e-3
    raw = sample.read_image().array
    np.testing.assert_allclose(prepared.image[0], (raw[2] - raw[2].mean()) / raw[2].std(), atol=1e-4)
