"""Tests of Kromp et al.'s artificial image generator (fluoseg.data.synth.kromp)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from fluoseg.data.synth.kromp import (
    NucleusAugmentation,
    background_region,
    generate_artificial_images,
    write_artificial_images,
)
from fluoseg.errors import FluosegError
from support import SHARED_DATA

NUCLEUS, HALO, BACKGROUND = 200, 50, 7
DSB = SHARED_DATA / "dsb2018_fluo"


def source(size: int = 120, radius: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """Bright disks; the ring within 15 px of them has one value, the allowed background another."""
    yy, xx = np.mgrid[:size, :size]
    labels = np.zeros((size, size), np.uint16)
    for k, (cy, cx) in enumerate([(40, 40), (40, 80), (80, 40), (80, 80)], start=1):
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] = k
    image = np.where(background_region(labels, radius=15), BACKGROUND, HALO).astype(np.uint8)
    image[labels > 0] = NUCLEUS
    return image, labels


def generate(**options: object) -> list[tuple[np.ndarray, np.ndarray]]:
    image, labels = source()
    settings: dict[str, object] = dict(n_images=3, grid=(4, 4), output_shape=(64, 64), seed=3)
    settings.update(options)
    return generate_artificial_images(image, labels, **settings)  # type: ignore[arg-type]


def test_labels_and_pixels_are_consistent() -> None:
    for image, labels in generate(overlap_mode="replace", place_probability=0.8):
        assert image.shape == (64, 64) and image.dtype == np.uint8 and labels.dtype == np.uint16
        ids = np.unique(labels)
        assert np.array_equal(ids, np.arange(ids.size))  # consecutive 1..N, all present
        assert 1 <= ids.size - 1 <= 16  # at most one nucleus per grid node
        assert (image[labels > 0] >= 0.7 * NUCLEUS - 1).all()  # nucleus pixels, gain >= 0.7
        assert (image[labels == 0] == BACKGROUND).all()  # background only from the allowed region


def test_deterministic_by_seed() -> None:
    first, again, other = generate(), generate(), generate(seed=4)
    for (a_img, a_lab), (b_img, b_lab) in zip(first, again):
        assert np.array_equal(a_img, b_img) and np.array_equal(a_lab, b_lab)
    assert any(not np.array_equal(a[1], b[1]) for a, b in zip(first, other))


def test_add_differs_from_replace_only_where_nuclei_overlap() -> None:
    dense = dict(grid=(5, 5), max_offset=8, place_probability=1.0, n_images=2)
    replaced, added = generate(overlap_mode="replace", **dense), generate(overlap_mode="add", **dense)
    differs = False
    for (r_img, r_lab), (a_img, a_lab) in zip(replaced, added):
        assert np.array_equal(r_lab, a_lab)  # same layout, labels always replace
        changed = r_img != a_img
        assert (r_lab[changed] > 0).all()
        assert (a_img[changed] > r_img[changed]).all()  # old + 0.5 * new is brighter
        differs |= bool(changed.any())
    assert differs


def test_multichannel_sources_keep_pixels_together() -> None:
    image, labels = source()
    two = np.stack([image, image + 1])
    (out, out_labels), = generate_artificial_images([two], [labels], n_images=1, output_shape=(48, 40),
                                                     augmentation=NucleusAugmentation(elastic_probability=1.0))
    assert out.shape == (2, 48, 40) and out_labels.shape == (48, 40)
    assert np.array_equal(out[1][out_labels == 0], out[0][out_labels == 0] + 1)


def test_write_artificial_images(tmp_path: Path) -> None:
    from fluoseg.io import read_image, read_labels

    pairs = generate(n_images=2)
    written = write_artificial_images(tmp_path, pairs)
    assert [p.name for p, _ in written] == ["kromp_0000.tif", "kromp_0001.tif"]
    for (image_path, label_path), (image, labels) in zip(written, pairs):
        assert image_path.parent.name == "images" and label_path.parent.name == "labels"
        assert np.array_equal(np.asarray(read_image(image_path).array)[0], image)
        assert np.array_equal(read_labels(label_path), labels)
    with pytest.raises(FluosegError):
        write_artificial_images(tmp_path, pairs)  # exists, no overwrite


def test_invalid_sources_and_options() -> None:
    image, labels = source()
    with pytest.raises(FluosegError):
        generate_artificial_images(image, labels, n_images=1, background_radius=200)
    with pytest.raises(FluosegError):
        generate_artificial_images(image, labels[:-1], n_images=1)
    with pytest.raises(FluosegError):
        generate_artificial_images(image, np.zeros_like(labels), n_images=1)
    with pytest.raises(FluosegError):
        generate_artificial_images(image, labels, n_images=1, overlap_mode="blend")  # type: ignore[arg-type]
    with pytest.raises(FluosegError):
        generate_artificial_images(image, labels, n_images=1, add_factor=0.0)


@pytest.mark.skipif(not DSB.is_dir(), reason="shared DSB 2018 data not available")
def test_fast_on_a_real_image() -> None:
    import tifffile

    image = tifffile.imread(DSB / "images" / "9ebcfaf2322932d4.tif")
    labels = tifffile.imread(DSB / "labels" / "9ebcfaf2322932d4.tif")
    start = time.perf_counter()
    pairs = generate_artificial_images(image, labels, n_images=4, seed=1)
    assert (time.perf_counter() - start) / 4 < 0.5
    assert all(p[0].shape == (256, 256) and p[1].max() >= 1 for p in pairs)
