import numpy as np

from fluoseg.tasks import IGNORE_INDEX
from fluoseg.data.dataset import PatchSampler, PreparedSample, cut_window, prepare_sample
from fluoseg.data.manifest import load_manifest
from fluoseg.markers import MarkerPanel
from fluoseg.tasks import SemanticTask


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
    weights = np.ones(shape, np.float32)
    return PreparedSample(id="x", image=image, availability=np.array([1, 0], np.float32),
                          targets={"classes": target, "weights": weights}, sampling_map=target)


def sampler_for(samples, input_size, output_size, foreground=0.0, seed=0):
    return PatchSampler(samples, input_size=input_size, output_size=output_size,
                        fill={"classes": IGNORE_INDEX, "weights": 0.0}, foreground_fraction=foreground,
                        augmenter=None, rng=np.random.default_rng(seed))


def test_patch_shapes_and_ignore_padding_for_small_images():
    images, availability, targets = sampler_for([make_prepared((10, 12))], 30, 20).batch(3)
    assert images.shape == (3, 2, 30, 30) and availability.shape == (3, 2)
    assert targets["classes"].shape == (3, 20, 20) and targets["weights"].shape == (3, 20, 20)
    assert (targets["classes"] == IGNORE_INDEX).sum(axis=(1, 2)).min() == 20 * 20 - 10 * 12
    assert np.all((targets["weights"] == 0) == (targets["classes"] == IGNORE_INDEX))


def test_patch_aligns_input_centre_with_targets():
    prepared = make_prepared()
    prepared.image[0] = np.arange(40)[None, :] + 100 * np.arange(40)[:, None]
    prepared.targets["classes"][:] = prepared.image[0].astype(np.int64) % 7  # a recognisable target
    sampler = sampler_for([prepared], 24, 10, seed=1)
    for _ in range(5):
        image, _, targets = sampler.draw()
        centre = image[0, 7:17, 7:17]  # margin 7
        assert np.array_equal(centre.astype(np.int64) % 7, targets["classes"])


def test_foreground_sampling_finds_rare_class():
    sampler = sampler_for([make_prepared()], 10, 6, foreground=1.0)
    assert all((sampler.draw()[2]["classes"] == 1).any() for _ in range(20))


def test_prepare_sample_uses_whole_sample_stats_and_available_markers(tiny_dataset):
    sample = load_manifest(tiny_dataset).sample("s0")
    panel = MarkerPanel(["m3", "m2", "m1", "extra"])
    prepared = prepare_sample(sample, panel=panel, task=SemanticTask(["blob", "bar"]))
    assert prepared.image.shape == (4, 72, 72)
    assert prepared.availability.tolist() == [1, 1, 1, 0]
    assert np.all(prepared.image[3] == 0)
    for slot in range(3):
        assert abs(prepared.image[slot].mean()) < 1e-4 and abs(prepared.image[slot].std() - 1) < 1e-3
    raw = sample.read_image().array
    np.testing.assert_allclose(prepared.image[0], (raw[2] - raw[2].mean()) / raw[2].std(), atol=1e-4)
    assert set(np.unique(prepared.targets["classes"])) == {0, 1, 2}
