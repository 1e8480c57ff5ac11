"""Tests of fluoseg.io.ngff: multiscale OME-Zarr 0.5 images and label images."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from fluoseg.errors import FluosegError
from fluoseg.io import read_image, read_labels, write_image
from fluoseg.io.ngff import pyramid_levels, write_ngff_image, write_ngff_labels, write_ngff_masks


def ome(path):
    return zarr.open_group(str(path), mode="r").attrs.asdict()["ome"]


def level(path, k):
    return zarr.open_array(str(path / str(k)), mode="r")[...]


def test_image_levels_average_2x2_blocks_and_record_their_centres(tmp_path):
    image = np.arange(25, dtype=np.uint16).reshape(1, 5, 5) * 4
    path = write_ngff_image(tmp_path / "a.ome.zarr", image, axes="CYX", pixel_size=(0.5, 0.25), levels=3)
    one = level(path, 1)
    assert one.shape == (1, 3, 3) and one.dtype == np.uint16
    assert one[0, 0, 0] == (0 + 4 + 20 + 24) / 4             # a full block
    assert one[0, 0, 2] == (16 + 36) / 2                      # cut by the right border: 2 pixels
    assert one[0, 2, 2] == 96                                 # the corner pixel alone
    assert level(path, 2).shape == (1, 2, 2)
    datasets = ome(path)["multiscales"][0]["datasets"]
    assert datasets[0]["coordinateTransformations"] == [{"type": "scale", "scale": [1.0, 0.5, 0.25]}]
    assert datasets[2]["coordinateTransformations"] == [
        {"type": "scale", "scale": [1.0, 2.0, 1.0]},
        {"type": "translation", "translation": [0.0, 0.75, 0.375]},  # centre of a 4x4 block
    ]


def test_label_levels_pick_pixels_and_never_invent_ids(tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 50, (3, 37, 41)).astype(np.uint32)
    image = rng.random((2, 3, 37, 41)).astype(np.float32)
    path = write_ngff_image(tmp_path / "s.ome.zarr", image, axes="CZYX", levels=3, labels={"cells": labels},
                            pixel_size=(2.0, 0.5, 0.5))
    for k in range(3):
        assert np.array_equal(level(path / "labels" / "cells", k), labels[:, :: 2**k, :: 2**k])
    meta = ome(path / "labels" / "cells")
    assert meta["image-label"]["source"] == {"image": "../../"}
    assert [d["coordinateTransformations"] for d in meta["multiscales"][0]["datasets"]][2] == [
        {"type": "scale", "scale": [2.0, 2.0, 2.0]}]
    assert [a["name"] for a in meta["multiscales"][0]["axes"]] == ["z", "y", "x"]
    assert ome(path / "labels") == {"version": "0.5", "labels": ["cells"]}


def test_downsample_z_and_default_level_count(tmp_path):
    assert pyramid_levels((256, 100)) == 1 and pyramid_levels((257, 100)) == 2 and pyramid_levels((2048, 9)) == 4
    path = write_ngff_image(tmp_path / "z.ome.zarr", np.ones((1, 8, 600, 20), np.float32), axes="CZYX",
                            downsample_z=True)
    shapes = [zarr.open_array(str(path / str(k)), mode="r").shape for k in range(3)]
    assert shapes == [(1, 8, 600, 20), (1, 4, 300, 10), (1, 2, 150, 5)]


def test_zarr_input_gives_the_same_store_as_numpy(tmp_path):
    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, (1, 1500, 1100)).astype(np.uint8)
    source = zarr.create_array(store={}, shape=image.shape, chunks=(1, 512, 512), dtype=np.uint8)
    source[...] = image
    a = write_ngff_image(tmp_path / "np.ome.zarr", image, axes="CYX", levels=3)
    b = write_ngff_image(tmp_path / "zarr.ome.zarr", source, axes="CYX", levels=3)
    for k in range(3):
        assert np.array_equal(level(a, k), level(b, k))


def test_masks_become_one_label_image_per_class_added_to_a_fluoseg_store(tmp_path):
    path = write_image(tmp_path / "img.ome.zarr", np.zeros((1, 20, 30), np.uint16), axes="CYX",
                       channel_names=["DAPI"], pixel_size=(0.5, 0.5))
    masks = np.zeros((2, 20, 30), np.uint8)
    masks[0, :10] = 1
    masks[1, 5:] = 1
    written = write_ngff_masks(path, masks, ["tissue", "vessel"])
    assert [p.name for p in written] == ["tissue", "vessel"]
    assert ome(path / "labels")["labels"] == ["tissue", "vessel"]
    vessel = ome(path / "labels" / "vessel")["image-label"]
    assert vessel["properties"] == [{"label-value": 1, "class": "vessel"}]
    assert vessel["colors"][0]["rgba"] != ome(path / "labels" / "tissue")["image-label"]["colors"][0]["rgba"]
    assert np.array_equal(read_labels(path, key="labels/vessel"), masks[1])
    again = read_image(path)
    assert again.channel_names == ("DAPI",) and again.pixel_size == pytest.approx((0.5, 0.5))


def test_replacing_a_label_image_keeps_one_listing(tmp_path):
    path = write_ngff_image(tmp_path / "r.ome.zarr", np.zeros((1, 8, 8), np.uint8), axes="CYX")
    write_ngff_labels(path, "nuclei", np.ones((8, 8), np.uint16))
    with pytest.raises(FluosegError, match="already exists"):
        write_ngff_labels(path, "nuclei", np.ones((8, 8), np.uint16))
    write_ngff_labels(path, "nuclei", np.full((8, 8), 2, np.uint16), overwrite=True)
    assert ome(path / "labels")["labels"] == ["nuclei"]
    assert (level(path / "labels" / "nuclei", 0) == 2).all()


def test_user_mistakes(tmp_path):
    image = np.zeros((1, 8, 8), np.uint8)
    with pytest.raises(FluosegError, match="axes"):
        write_ngff_image(tmp_path / "a.ome.zarr", image, axes="YXC")
    with pytest.raises(FluosegError, match="pixel_size"):
        write_ngff_image(tmp_path / "a.ome.zarr", image, axes="CYX", pixel_size=(1.0,))
    with pytest.raises(FluosegError, match="chunks"):
        write_ngff_image(tmp_path / "a.ome.zarr", image, axes="CYX", chunks=(1, 4))
    with pytest.raises(FluosegError, match="spatial shape"):
        write_ngff_image(tmp_path / "a.ome.zarr", image, axes="CYX", labels={"x": np.zeros((4, 4), np.uint8)})
    assert not any(tmp_path.iterdir())  # nothing half-written is left behind
    write_ngff_image(tmp_path / "a.ome.zarr", image, axes="CYX")
    with pytest.raises(FluosegError, match="already exists"):
        write_ngff_image(tmp_path / "a.ome.zarr", image, axes="CYX")
    with pytest.raises(FluosegError, match="integers"):
        write_ngff_labels(tmp_path / "a.ome.zarr", "f", np.zeros((8, 8), np.float32))
    with pytest.raises(FluosegError, match="write the image first"):
        write_ngff_labels(tmp_path / "missing.ome.zarr", "n", np.zeros((8, 8), np.uint8))
    plain = zarr.open_group(str(tmp_path / "plain.zarr"), mode="w", zarr_format=3)
    plain.create_array("0", shape=(8, 8), dtype=np.uint8)
    with pytest.raises(FluosegError, match="OME-NGFF 0.5"):
        write_ngff_labels(tmp_path / "plain.zarr", "n", np.zeros((8, 8), np.uint8))


@pytest.fixture
def full_store(tmp_path):
    rng = np.random.default_rng(2)
    image = rng.integers(0, 4000, (2, 4, 300, 280)).astype(np.uint16)
    labels = rng.integers(0, 9, (4, 300, 280)).astype(np.uint32)
    path = write_ngff_image(tmp_path / "full.ome.zarr", image, axes="CZYX", channel_names=["DAPI", "CD31"],
                            pixel_size=(2.0, 0.5, 0.5), labels={"nuclei": labels})
    write_ngff_masks(path, np.stack([labels > 0, labels > 4]), ["tissue", "vessel"])
    return path, image, labels


def test_a_real_ngff_validator_accepts_the_store(full_store):
    pytest.importorskip("ome_zarr_models", reason="the NGFF validator ome-zarr-models is not installed")
    from ome_zarr_models.v05.image import Image
    from ome_zarr_models.v05.image_label import ImageLabel

    path, _, _ = full_store
    model = Image.from_zarr(zarr.open_group(str(path), mode="r"))  # validates labels/ too
    assert len(model.attributes.ome.multiscales[0].datasets) == 2
    label = ImageLabel.from_zarr(zarr.open_group(str(path / "labels" / "vessel"), mode="r"))
    assert label.attributes.ome.image_label.properties[0].label_value == 1


def test_the_ome_zarr_reader_opens_image_and_labels(full_store):
    pytest.importorskip("ome_zarr", reason="the ome-zarr reader is not installed")
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    path, image, labels = full_store
    nodes = {node.metadata.get("name"): node for node in Reader(parse_url(str(path)))()}
    assert np.array_equal(np.asarray(nodes[path.name].data[0]), image)
    assert [tuple(d.shape) for d in nodes[path.name].data] == [(2, 4, 300, 280), (2, 4, 150, 140)]
    assert np.array_equal(np.asarray(nodes["nuclei"].data[1]), labels[:, ::2, ::2])
    assert {"nuclei", "tissue", "vessel"} <= set(nodes)
