"""The shipped ``nuclei`` model: it loads, segments unseen nuclei, and leaves empty fields empty."""

import numpy as np
import pytest

from fluoseg import Segmenter
from fluoseg.data.samples import sample_paths
from fluoseg.io import read_image, read_labels
from fluoseg.metrics.instance import instance_rows
from fluoseg.metrics.semantic import ALL_IMAGES
from fluoseg.zoo import available


@pytest.fixture(scope="module")
def nuclei():
    return Segmenter.pretrained("nuclei", device="cpu")


def test_the_nuclei_model_ships_with_a_complete_card():
    (model,) = [m for m in available() if m.name == "nuclei"]
    card = model.card
    for needed in ("CC0", "Caicedo", "bench/splits/dsb2018_fluo.json", "F1@0.5", "AJI", "diameter", "commit"):
        assert needed in card, needed
    assert (model.folder / "weights.pt").stat().st_size < 8e6  # a few MB inside the package


def test_shipped_samples_never_seen_in_training_are_segmented_well(nuclei):
    items = []
    for image_path, labels_path in sample_paths():
        labels, _ = nuclei.predict_labels(read_image(image_path).array)
        items.append((image_path.stem, labels, read_labels(labels_path)))
    pooled = {(r["metric"], r["threshold"]): r["value"] for r in instance_rows(items) if r["image"] == ALL_IMAGES}
    # 153 annotated nuclei, 92 of them crowded in one image: 0.827 measured with the 80-epoch model
    # (0.738 with the 20-epoch one); the test split as a whole is scored in bench/results/zoo.md
    assert pooled[("f1", 0.5)] > 0.7, pooled[("f1", 0.5)]


@pytest.mark.parametrize("field", ["gaussian", "poisson", "dim-uint8", "gradient-free-offset"])
def test_empty_fields_give_no_objects(nuclei, field):
    rng = np.random.default_rng(7)
    image = {
        "gaussian": lambda: rng.normal(100, 5, (512, 512)).astype(np.float32),
        "poisson": lambda: rng.poisson(30, (512, 512)).astype(np.uint16),
        "dim-uint8": lambda: np.clip(rng.normal(8, 2, (400, 600)), 0, 255).astype(np.uint8),
        "gradient-free-offset": lambda: (rng.normal(0, 1, (256, 256)) + 2000).astype(np.float32),
    }[field]()
    labels, _ = nuclei.predict_labels(image[None])
    assert labels.max() <= 3


def test_a_near_empty_field_keeps_its_one_nucleus(nuclei):
    image_path, labels_path = sample_paths()[0]
    image, truth = read_image(image_path).array[0].astype(np.float32), read_labels(labels_path)
    biggest = np.argmax(np.bincount(truth.ravel())[1:]) + 1
    rng = np.random.default_rng(8)
    field = rng.normal(float(np.median(image)), 2.0, image.shape).astype(np.float32)
    field[truth == biggest] = image[truth == biggest]
    labels, _ = nuclei.predict_labels(field[None])
    found = np.unique(labels[truth == biggest])
    assert labels.max() >= 1 and found[found > 0].size >= 1
    assert labels.max() <= 3
