from pathlib import Path

import numpy as np
import pytest
import tifffile
import yaml

from fluoseg.data.manifest import load_manifest
from fluoseg.errors import FluosegError
from support import SHARED_DATA

REPO = Path(__file__).resolve().parents[2]


def test_glob_manifest_loads(tiny_dataset):
    manifest = load_manifest(tiny_dataset)
    assert [s.id for s in manifest.samples] == [f"s{i}" for i in range(5)]
    assert manifest.markers == ("m1", "m2", "m3")
    assert manifest.classes == ("blob", "bar")
    sample = manifest.sample("s2")
    image = sample.read_image()
    masks = sample.read_masks(["bar"], image.spatial_shape)
    assert masks.shape == (1, 72, 72) and set(np.unique(masks)) <= {0, 1}
    assert sample.pixel_size == (1.0,)


def test_explicit_samples_with_per_class_masks_groups_and_panels(tmp_path):
    tifffile.imwrite(tmp_path / "a.tif", np.zeros((2, 8, 8), np.uint8), photometric="minisblack")
    tifffile.imwrite(tmp_path / "a_x.tif", np.ones((8, 8), np.uint8))
    spec = {"samples": [{"id": "A", "image": "a.tif", "markers": ["p", "q"], "available": ["q"],
                         "masks": {"x": "a_x.tif"}, "group": "mouse1"}]}
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(spec))
    manifest = load_manifest(tmp_path / "m.yaml")
    sample = manifest.samples[0]
    assert manifest.classes == ("x",)
    assert sample.split_group == "mouse1" and sample.usable_markers == ("q",)
    assert sample.read_masks(["x"], (8, 8)).sum() == 64


@pytest.mark.parametrize("spec, message", [
    ({"images": "nothing/*.tif"}, "matches no file"),
    ({"samples": [{"image": "missing.tif", "markers": ["a"]}]}, "not found"),
    ({"images": "*.tif", "markers": ["a"], "colour": 1}, "unknown key 'colour'"),
    ({"markers": ["a"]}, "needs 'images"),
    ({"samples": [{"image": "a.tif", "markers": ["a"], "available": ["z"]}]}, "not among its channels"),
    # found by fuzzing: each of these raised a raw KeyError, IndexError, ValueError,
    # NotImplementedError or OSError before
    ({"images": "a.tif", "markers": ["a"], "classes": ["c"], "masks": "{0}.tif"}, r"'masks: \{0\}.tif' uses \{0\}"),
    ({"images": "a.tif", "markers": ["a"], "masks": {"c": "{id}_{x}.tif"}}, r"'masks.c: .*' uses \{x\}"),
    ({"images": "a.tif", "markers": ["a"], "labels": "{"}, r"'labels: \{' is not a valid pattern"),
    ({"images": "", "markers": ["a"]}, "'images: ' is not a usable pattern"),
    ({"images": "/abs/*.tif", "markers": ["a"]}, "is not a usable pattern"),
    ({"images": "**x", "markers": ["a"]}, "is not a usable pattern"),
    ({"root": "a\x00", "images": "*.tif", "markers": ["a"]}, r"root holds a NUL character"),
    ({"samples": [{"image": "a\x00.tif", "markers": ["a"]}]}, r"samples.0.image holds a NUL"),
    ({"images": "a.tif", "markers": ["a"], "pixel_size_um": -1}, "must be a positive size"),
    ({"images": "a.tif", "markers": ["a"], "pixel_size_um": float("nan")}, "must be a positive size"),
    ({"images": "a.tif", "markers": ["a"], "pixel_size_um": [1, 1, 1, 1]}, "one per spatial axis"),
    ({"images": "a" * 300 + ".tif", "markers": ["a"]}, "cannot read: the name is too long"),
])
def test_manifest_errors(tmp_path, spec, message):
    tifffile.imwrite(tmp_path / "a.tif", np.zeros((8, 8), np.uint8))
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(FluosegError, match=message) as info:
        load_manifest(tmp_path / "m.yaml")
    assert "m.yaml" in str(info.value) or "aaaa" in str(info.value)
    assert "\n" not in str(info.value)


def test_duplicate_ids(tmp_path):
    tifffile.imwrite(tmp_path / "a.tif", np.zeros((8, 8), np.uint8))
    spec = {"markers": ["a"], "samples": [{"id": "x", "image": "a.tif"}, {"id": "x", "image": "a.tif"}]}
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(FluosegError, match="duplicate sample ids"):
        load_manifest(tmp_path / "m.yaml")


def test_mask_shape_mismatch(tmp_path):
    tifffile.imwrite(tmp_path / "a.tif", np.zeros((8, 8), np.uint8))
    tifffile.imwrite(tmp_path / "a_x.tif", np.zeros((9, 8), np.uint8))
    spec = {"markers": ["a"], "samples": [{"image": "a.tif", "masks": {"x": "a_x.tif"}}]}
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(spec))
    sample = load_manifest(tmp_path / "m.yaml").samples[0]
    with pytest.raises(FluosegError, match="differs from image shape"):
        sample.read_masks(["x"], (8, 8))


def test_channel_count_mismatch(tmp_path):
    tifffile.imwrite(tmp_path / "a.tif", np.zeros((3, 8, 8), np.uint8), photometric="minisblack")
    spec = {"markers": ["a", "b"], "samples": [{"image": "a.tif"}]}
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(FluosegError, match="3 channels but the manifest names 2"):
        load_manifest(tmp_path / "m.yaml").samples[0].read_image()


@pytest.mark.skipif(not (SHARED_DATA / "vessels5").is_dir(), reason="../shared/data/vessels5 is not present")
def test_vessels5_example_manifest_loads():
    manifest = load_manifest(REPO / "examples" / "vessels5" / "manifest.yaml")
    assert len(manifest.samples) == 8
    assert manifest.markers == ("DAPI", "endomucin", "endoglin", "collagen", "CXCL12-GFP")
    sample = manifest.sample("s001_00")
    image = sample.read_image(lazy=True)
    assert image.spatial_shape == (768, 768)
    masks = sample.read_masks(list(manifest.classes), image.spatial_shape)
    assert masks.shape == (2, 768, 768)
    assert abs(masks[0].mean() * 100 - 9.3) < 0.1  # samples.json: sinusoids_pct 9.3
