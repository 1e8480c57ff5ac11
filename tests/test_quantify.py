"""Tests of fluoseg.quantify: class volume fractions inside tissue, per sample and region."""

from __future__ import annotations

import math

import numpy as np
import pytest
import zarr

from fluoseg.errors import FluosegError
from fluoseg.io import write_image
from fluoseg.quantify import plot_fractions, quantify_files, quantify_volumes


def table(rows):
    """{(sample, region, class, metric): value}."""
    return {(r["sample"], r["region"], r["class"], r["metric"]): r["value"] for r in rows}


def test_hand_counted_example_2d():
    vessels = np.array([[1, 1, 0, 0],
                        [1, 0, 0, 0],
                        [0, 0, 1, 1],
                        [0, 0, 1, 0]])
    arteries = np.array([[0, 0, 0, 1],
                         [0, 0, 0, 0],
                         [0, 0, 0, 0],
                         [1, 0, 0, 0]])
    tissue = np.array([[1, 1, 1, 1],
                       [1, 1, 1, 1],
                       [0, 1, 1, 1],
                       [0, 0, 1, 1]])
    regions = np.array([[1, 1, 2, 2],
                        [1, 1, 2, 2],
                        [1, 1, 2, 2],
                        [1, 1, 2, 2]])
    rows = quantify_volumes(np.stack([vessels, arteries]), tissue=tissue, regions=regions,
                            class_names=["vessel", "artery"], region_names={1: "dia", 2: "meta", 3: "none"},
                            pixel_size=(0.5, 2.0), sample="s1")
    t = table(rows)
    # all: tissue 13 px; all 6 vessel pixels are in tissue; the artery pixel at (3, 0) is not
    assert t["s1", "all", "vessel", "tissue_pixels"] == 13
    assert t["s1", "all", "vessel", "class_pixels"] == 6
    assert t["s1", "all", "vessel", "fraction"] == pytest.approx(6 / 13)
    assert t["s1", "all", "artery", "class_pixels"] == 1
    # dia = left two columns: tissue 5, vessels 3; meta: tissue 8, vessels 3, arteries 1
    assert t["s1", "dia", "vessel", "fraction"] == pytest.approx(3 / 5)
    assert t["s1", "meta", "vessel", "fraction"] == pytest.approx(3 / 8)
    assert t["s1", "meta", "artery", "class_pixels"] == 1
    assert t["s1", "dia", "artery", "fraction"] == 0
    assert t["s1", "meta", "vessel", "class_area_um2"] == pytest.approx(3.0)
    assert t["s1", "meta", "vessel", "tissue_area_um2"] == pytest.approx(8.0)
    assert math.isnan(t["s1", "none", "vessel", "fraction"]) and t["s1", "none", "vessel", "tissue_pixels"] == 0
    assert [r["region"] for r in rows][:: 2 * 5] == ["all", "dia", "meta", "none"]  # 5 metrics x 2 classes


def direct_counts(masks, tissue, regions):
    """{(region, class index): (class pixels, tissue pixels)} by plain numpy on whole arrays."""
    out = {}
    areas = {"all": np.ones(tissue.shape, bool)}
    if isinstance(regions, dict):
        areas.update({k: v.astype(bool) for k, v in regions.items()})
    elif regions is not None:
        areas.update({str(r): regions == r for r in np.unique(regions) if r})
    for name, area in areas.items():
        for c in range(len(masks)):
            out[name, c] = (int(np.sum((masks[c] == 1) & (tissue == 1) & area)), int(np.sum((tissue == 1) & area)))
    return out


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("shape", [(23, 31), (5, 13, 17)])
@pytest.mark.parametrize("region_kind", ["labels", "masks"])
def test_random_cases_match_direct_numpy_counts(seed, shape, region_kind):
    rng = np.random.default_rng(seed)
    masks = (rng.random((3, *shape)) < 0.3).astype(np.uint8)
    tissue = (rng.random(shape) < 0.7).astype(np.uint8)
    if region_kind == "labels":
        regions = rng.integers(0, 4, shape)
    else:
        regions = {"a": rng.random(shape) < 0.5, "b": rng.random(shape) < 0.3}
    rows = quantify_volumes(masks, tissue=tissue, regions=regions, class_names=["x", "y", "z"], block=7)
    t = table(rows)
    for (region, c), (count, tissue_count) in direct_counts(masks, tissue, regions).items():
        name = "xyz"[c]
        assert t["sample", region, name, "class_pixels"] == count
        assert t["sample", region, name, "tissue_pixels"] == tissue_count
        assert t["sample", region, name, "fraction"] == pytest.approx(count / tissue_count)


def test_3d_volumes_and_no_tissue_mask():
    masks = np.zeros((1, 2, 3, 3), np.uint8)
    masks[0, 1, :2, :2] = 255  # 0/255 masks are accepted
    t = table(quantify_volumes(masks, pixel_size=(2.0, 0.5, 0.5)))
    assert t["sample", "all", "class1", "tissue_pixels"] == 18
    assert t["sample", "all", "class1", "class_volume_um3"] == pytest.approx(4 * 0.5)
    assert t["sample", "all", "class1", "tissue_volume_um3"] == pytest.approx(18 * 0.5)


def test_zarr_inputs_are_streamed_and_match_numpy():
    rng = np.random.default_rng(9)
    masks = (rng.random((2, 40, 50)) < 0.2).astype(np.uint8)
    tissue = (rng.random((40, 50)) < 0.8).astype(np.uint8)
    regions = rng.integers(0, 3, (40, 50)).astype(np.uint16)
    stores = []
    for array, chunks in ((masks, (2, 16, 16)), (tissue, (16, 16)), (regions, (16, 16))):
        store = zarr.create_array(store={}, shape=array.shape, chunks=chunks, dtype=array.dtype)
        store[...] = array
        stores.append(store)
    streamed = quantify_volumes(stores[0], tissue=stores[1], regions=stores[2], block=16)
    assert streamed == quantify_volumes(masks, tissue=tissue, regions=regions)


def test_files_give_names_and_sizes_from_metadata(tmp_path):
    rng = np.random.default_rng(4)
    rows = []
    for name in ("bm1", "bm2"):
        masks = (rng.random((2, 30, 40)) < 0.25).astype(np.uint8)
        write_image(tmp_path / f"{name}.ome.zarr", masks, axes="CYX", channel_names=["sinusoid", "artery"],
                    pixel_size=(0.5, 0.5))
        write_image(tmp_path / f"{name}_tissue.tif", (rng.random((30, 40)) < 0.9).astype(np.uint8), axes="YX")
        write_image(tmp_path / f"{name}_regions.tif", np.repeat([[1] * 20 + [2] * 20], 30, axis=0).astype(np.uint8),
                    axes="YX")
    rows = quantify_files([tmp_path / "bm1.ome.zarr", tmp_path / "bm2.ome.zarr"],
                          [tmp_path / "bm1_tissue.tif", tmp_path / "bm2_tissue.tif"],
                          [tmp_path / "bm1_regions.tif", tmp_path / "bm2_regions.tif"],
                          region_names={1: "diaphysis", 2: "metaphysis"})
    t = table(rows)
    assert {r["sample"] for r in rows} == {"bm1", "bm2"}
    assert {r["class"] for r in rows} == {"sinusoid", "artery"}
    assert {r["region"] for r in rows} == {"all", "diaphysis", "metaphysis"}
    assert t["bm1", "diaphysis", "artery", "tissue_area_um2"] == pytest.approx(
        t["bm1", "diaphysis", "artery", "tissue_pixels"] * 0.25)
    png = plot_fractions(rows, tmp_path / "plots" / "fractions.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_region_masks_file_with_named_channels(tmp_path):
    masks = np.zeros((1, 10, 10), np.uint8)
    masks[0, :5] = 1
    regions = np.zeros((2, 10, 10), np.uint8)
    regions[0, :, :5] = 1
    regions[1] = 1
    write_image(tmp_path / "m.tif", masks, axes="CYX")
    write_image(tmp_path / "r.ome.tif", regions, axes="CYX", channel_names=["left", "everything"])
    t = table(quantify_files(tmp_path / "m.tif", regions=tmp_path / "r.ome.tif", class_names=["fg"]))
    assert t["m", "left", "fg", "fraction"] == pytest.approx(0.5)
    assert t["m", "everything", "fg", "class_pixels"] == 50


def test_user_mistakes_name_the_file(tmp_path):
    write_image(tmp_path / "m.tif", np.full((1, 8, 8), 2, np.uint8), axes="CYX")
    with pytest.raises(FluosegError, match="0/1") as error:
        quantify_files(tmp_path / "m.tif")
    assert error.value.path == tmp_path / "m.tif"
    write_image(tmp_path / "ok.tif", np.ones((1, 8, 8), np.uint8), axes="CYX")
    write_image(tmp_path / "t2.tif", np.ones((2, 8, 8), np.uint8), axes="CYX")
    write_image(tmp_path / "small.tif", np.ones((6, 8), np.uint8), axes="YX")
    with pytest.raises(FluosegError, match="one channel") as error:
        quantify_files(tmp_path / "ok.tif", tissue=tmp_path / "t2.tif")
    assert error.value.path == tmp_path / "t2.tif"
    with pytest.raises(FluosegError, match="same size"):
        quantify_files(tmp_path / "ok.tif", tissue=tmp_path / "small.tif")
    with pytest.raises(FluosegError, match="one per sample"):
        quantify_files([tmp_path / "ok.tif", tmp_path / "m.tif"], tissue=tmp_path / "small.tif")
    with pytest.raises(FluosegError, match="class names"):
        quantify_volumes(np.ones((2, 4, 4), np.uint8), class_names=["a"])
    with pytest.raises(FluosegError, match="pixel_size"):
        quantify_volumes(np.ones((1, 4, 4), np.uint8), pixel_size=(1.0, 1.0, 1.0))
    with pytest.raises(FluosegError, match="region"):
        quantify_volumes(np.ones((1, 4, 4), np.uint8), regions=-np.ones((4, 4), int))
    with pytest.raises(FluosegError, match="block"):
        quantify_volumes(np.ones((1, 4, 4), np.uint8), block=0)
    with pytest.raises(FluosegError, match="no finite"):
        plot_fractions([], tmp_path / "x.png")


def test_ngff_outputs_give_their_label_images_as_masks(tmp_path):
    from fluoseg.io.ngff import write_ngff_image, write_ngff_masks

    rng = np.random.default_rng(4)
    masks = rng.random((2, 40, 30)) > np.array([0.5, 0.8])[:, None, None]
    image = rng.integers(0, 255, (3, 40, 30)).astype(np.uint8)  # the image itself is no mask
    path = write_ngff_image(tmp_path / "s.ome.zarr", image, axes="CYX", pixel_size=(0.5, 0.5))
    write_ngff_masks(path, masks, ["tissue", "vessel"])
    t = table(quantify_files(path))
    assert t["s", "all", "vessel", "class_pixels"] == masks[1].sum()
    assert t["s", "all", "tissue", "class_pixels"] == masks[0].sum()
    assert t["s", "all", "vessel", "class_area_um2"] == pytest.approx(masks[1].sum() * 0.25)
