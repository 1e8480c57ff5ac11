"""Export of trained runs as bioimage.io packages, checked by bioimage.io's own test and by fluoseg."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
import yaml

from fluoseg.errors import FluosegError
from fluoseg.infer import Segmenter

pytest.importorskip("bioimageio.core", reason="the bioimageio extra is not installed")

MARKERS = ["m1", "m2", "m3"]


def _description(package) -> dict:
    with zipfile.ZipFile(package) as archive:
        return yaml.safe_load(archive.read("rdf.yaml"))


def _array(package, name: str) -> np.ndarray:
    import io

    with zipfile.ZipFile(package) as archive:
        return np.load(io.BytesIO(archive.read(name)))


def test_package_passes_bioimageio_test_offline(semantic_package):
    from fluoseg.bioimage.export import test_package

    assert test_package(semantic_package) == []


def test_description_states_markers_availability_halo_sizes_and_normalisation(semantic_package):
    rdf = _description(semantic_package)
    image, availability = rdf["inputs"]
    assert [image["id"], availability["id"]] == ["image", "availability"]
    assert image["axes"][1]["channel_names"] == MARKERS
    assert availability["axes"][1]["channel_names"] == MARKERS
    # depth-2 valid U-Net: admissible inputs 44, 48, ... trim 20 px per side (hand-computed)
    y = image["axes"][2]
    assert (y["size"]["min"], y["size"]["step"]) == (44, 4)
    assert rdf["outputs"][0]["axes"][2]["halo"] == 20
    assert rdf["outputs"][0]["axes"][1]["channel_names"] == ["blob", "bar"]
    (normalise,) = [p for p in image["preprocessing"] if p["id"] != "ensure_dtype"]
    assert normalise["id"] == "zero_mean_unit_variance" and normalise["kwargs"]["axes"] == ["y", "x"]
    assert set(rdf["weights"]) == {"pytorch_state_dict", "torchscript"}
    assert rdf["config"]["fluoseg"]["members"][0]["markers"] == MARKERS


def test_test_output_is_what_fluoseg_predicts_on_the_test_image(semantic_run, semantic_package):
    raw = _array(semantic_package, "test_image.npy")
    # the package's test output is a plain float32 forward pass (what bioimage.io consumers run)
    expected = Segmenter.load(semantic_run, device="cpu").predict_probabilities(raw[0], MARKERS, precision="float32")
    np.testing.assert_allclose(_array(semantic_package, "test_maps.npy")[0], expected, atol=1e-4)


def test_instance_package_outputs_distance_and_foreground_as_fluoseg_does(instance_run, instance_package):
    rdf = _description(instance_package)
    assert rdf["outputs"][0]["axes"][1]["channel_names"] == ["distance", "foreground"]
    # same-padded depth-2 U-Net: no margin, sizes step 4, two steps of context (hand-computed)
    assert rdf["outputs"][0]["axes"][2]["halo"] == 8
    raw = _array(instance_package, "test_image.npy")
    # one tile the size of the test image: a same-padded network sees the zero border the package sees
    _, maps = Segmenter.load(instance_run, device="cpu").predict_labels(raw[0], MARKERS, tile_size=raw.shape[-1],
                                                                         precision="float32")
    np.testing.assert_allclose(_array(instance_package, "test_maps.npy")[0], maps, atol=1e-4)


def test_card_and_cover_are_in_the_package(semantic_package):
    with zipfile.ZipFile(semantic_package) as archive:
        card = archive.read("README.md").decode()
        cover = archive.read("cover.png")
    assert "`m1`, `m2`, `m3`" in card and "Decoding" in card and "halo" in card
    assert cover.startswith(b"\x89PNG")


def test_sample_with_unnamed_channels_needs_names(semantic_run, tmp_path):
    import tifffile

    from fluoseg.bioimage.export import export_package

    sample = tmp_path / "unnamed.tif"
    tifffile.imwrite(sample, np.random.default_rng(0).integers(0, 255, (3, 64, 64), dtype=np.uint8),
                     photometric="minisblack")
    with pytest.raises(FluosegError, match="--sample-channels"):
        export_package(semantic_run, tmp_path / "m.zip", sample=sample)


def test_refuses_other_suffixes_existing_outputs_and_unknown_models(semantic_run, semantic_package, tmp_path):
    from fluoseg.bioimage.export import export_package

    with pytest.raises(FluosegError, match=".zip"):
        export_package(semantic_run, tmp_path / "model.tif")
    with pytest.raises(FluosegError, match="--overwrite"):
        export_package(semantic_run, semantic_package)
    with pytest.raises(FluosegError, match="no such run directory"):
        export_package("no-such-model", tmp_path / "m.zip")
    with pytest.raises(FluosegError, match="already a bioimage.io package"):
        export_package(semantic_package, tmp_path / "again.zip")


def test_availability_may_be_left_out_zero_filled_markers_are_then_absent(semantic_package):
    from bioimageio.core import Tensor, create_prediction_pipeline, predict
    from bioimageio.spec import load_model_description

    description = load_model_description(semantic_package)
    image = _array(semantic_package, "test_image.npy").copy()
    image[:, 1] = 0  # m2 not imaged

    def maps(**inputs) -> np.ndarray:
        tensors = {"image": Tensor(image, dims=("batch", "channel", "y", "x"))}
        tensors.update({k: Tensor(v, dims=("batch", "channel")) for k, v in inputs.items()})
        pipeline = create_prediction_pipeline(description, weight_format="torchscript")
        return predict(model=pipeline, inputs=tensors).members["maps"].data.to_numpy()

    # (that the vector changes the maps of networks that use it is tested in test_network.py)
    np.testing.assert_allclose(maps(), maps(availability=np.array([[1, 0, 1]], np.float32)), atol=1e-6)


def test_one_unnamed_sample_channel_is_the_marker_of_a_one_marker_model():
    from fluoseg.bioimage.export import _test_sample
    from fluoseg.data.samples import sample_paths

    grey = sample_paths()[0][0]  # one channel, no names in the file
    assert _test_sample(None, grey, None, ("DNA",)).channel_names == ("DNA",)
    with pytest.raises(FluosegError, match="--sample-channels"):
        _test_sample(None, grey, None, ("DNA", "actin"))
