"""``fluoseg predict --format ngff``: the image as a multiscale OME-Zarr with the prediction as its label images."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import zarr

from fluoseg.cli import main
from fluoseg.config import load_config
from fluoseg.errors import FluosegError
from fluoseg.infer import PredictOptions, Segmenter
from fluoseg.io import read_image, read_mask, write_image
from fluoseg.io.ngff import write_ngff_image
from fluoseg.predict import output_paths, predict_file
from fluoseg.train.trainer import train

BLOCKS = ["--block-size", "16", "--halo", "24"]


def validated(path: Path):
    """The store as ome-zarr-models' NGFF 0.5 validator reads it (it checks labels/ too)."""
    pytest.importorskip("ome_zarr_models", reason="the NGFF validator ome-zarr-models is not installed")
    from ome_zarr_models.v05.image import Image
    from ome_zarr_models.v05.image_label import ImageLabel

    image = Image.from_zarr(zarr.open_group(str(path), mode="r"))
    names = zarr.open_group(str(path / "labels"), mode="r").attrs.asdict()["ome"]["labels"]
    labels = {n: ImageLabel.from_zarr(zarr.open_group(str(path / "labels" / n), mode="r")) for n in names}
    return image, labels


def levels(path: Path) -> list[np.ndarray]:
    group = zarr.open_group(str(path), mode="r")
    datasets = group.attrs.asdict()["ome"]["multiscales"][0]["datasets"]
    return [np.asarray(group[d["path"]][...]) for d in datasets]


def fingerprint(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    return pairs.shape[1] == len(np.unique(a)) == len(np.unique(b)) and bool(np.all((a == 0) == (b == 0)))


def test_semantic_masks_become_one_label_image_per_class(tiny_config, tiny_dataset, tmp_path):
    segmenter = Segmenter.load(train(load_config(tiny_config), tmp_path / "run", progress=False), device="cpu")
    image = tiny_dataset.parent / "images" / "s4.tif"
    names = ["m1", "m2", "m3"]
    tif = predict_file(segmenter, image, output_paths([image], tmp_path / "tif", fmt="tif", probabilities=False)[0],
                       PredictOptions(), channel_names=names)
    paths = output_paths([image], tmp_path / "ngff", fmt="ngff", probabilities=True)[0]
    written = predict_file(segmenter, image, paths, PredictOptions(), channel_names=names)
    assert written.name == "s4.ome.zarr" and paths.probabilities.name == "s4_probabilities.zarr"
    model, labels = validated(written)
    assert set(labels) == {"blob", "bar"}
    masks = read_mask(tif)
    pixels = np.asarray(read_image(image).array)
    assert np.array_equal(levels(written)[0], pixels)  # the input image is level 0, as it was
    assert read_image(written).channel_names == tuple(names)
    for k, name in enumerate(("blob", "bar")):
        pyramid = levels(written / "labels" / name)
        assert len(pyramid) == len(model.attributes.ome.multiscales[0].datasets)
        assert np.array_equal(pyramid[0], masks[k] > 0)
        assert labels[name].attributes.ome.image_label.properties[0].label_value == 1
    colours = {tuple(labels[n].attributes.ome.image_label.colors[0].rgba) for n in labels}
    assert len(colours) == 2  # the classes are told apart in a viewer
    assert not [p for p in written.parent.iterdir() if p.name.startswith(".")]  # no temporary left


@pytest.fixture(scope="module")
def nuclei(tmp_path_factory):
    """A tiny threshold nuclei run and a 128x320 OME-Zarr image of nuclei (~40 objects; 2 pyramid levels)."""
    from support import make_tiny_nuclei, train_nuclei_run

    root = tmp_path_factory.mktemp("ngff")
    run = train_nuclei_run(root / "train", instance={"method": "threshold", "min_size": 5}, val=["n4"], epochs=3)
    row = np.concatenate([make_tiny_nuclei(seed)[0] for seed in (11, 12, 13, 14, 15)], axis=2)
    pixels = np.concatenate([row, row[:, ::-1]], axis=1)
    image = write_ngff_image(root / "slides" / "big.ome.zarr", pixels, axes="CYX", channel_names=["DNA"],
                             pixel_size=(0.5, 0.5), levels=2)
    return run, image


def test_blockwise_instance_labels_of_an_ome_zarr_input(nuclei, tmp_path):
    run, image = nuclei
    before = fingerprint(image.parent)
    assert main(["predict", str(run), str(image), "--out", str(tmp_path / "whole"), "--format", "tif", "--quiet"]) == 0
    assert main(["predict", str(run), str(image), "--out", str(tmp_path / "ngff"), "--format", "ngff", *BLOCKS,
                 "--objects", "--quiet"]) == 0
    written = tmp_path / "ngff" / "big.ome.zarr"
    _, labels = validated(written)
    assert list(labels) == ["objects"]
    whole = np.asarray(read_image(tmp_path / "whole" / "big.tif").array)[0]
    pyramid = levels(written / "labels" / "objects")
    assert whole.max() >= 15 and same_partition(pyramid[0], whole) and len(pyramid) == 2
    assert np.array_equal(pyramid[1], pyramid[0][::2, ::2])  # levels pick pixels: no invented ids
    assert (tmp_path / "ngff" / "big_objects.csv").read_text().count("\n") == pyramid[0].max() + 1
    assert read_image(written).pixel_size == (0.5, 0.5)
    assert not (tmp_path / "ngff" / "big.work").exists()
    assert fingerprint(image.parent) == before  # nothing of the input changed


def test_an_output_never_replaces_its_input(nuclei, tmp_path, capsys):
    run, image = nuclei
    before = fingerprint(image.parent)
    assert main(["predict", str(run), str(image), "--out", str(image.parent), "--format", "ngff", "--overwrite",
                 "--quiet"]) != 0
    assert "big.ome.zarr would replace this input image" in capsys.readouterr().err
    tif = tmp_path / "a.tif"
    write_image(tif, np.zeros((1, 8, 8), np.uint8), axes="CYX")
    with pytest.raises(FluosegError, match="would replace this input"):
        output_paths([tif], tmp_path, fmt="tif", probabilities=False)
    assert fingerprint(image.parent) == before
