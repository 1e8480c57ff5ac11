"""The model zoo: a run exported to a zoo folder predicts as the run did, by name, from the CLI."""

import csv

import numpy as np
import pytest
import tifffile

from fluoseg import zoo
from fluoseg.cli import main
from fluoseg.errors import FluosegError
from fluoseg.infer import Segmenter


@pytest.fixture(scope="module")
def nuclei_run(tmp_path_factory):
    """A tiny distance-map nuclei run with scale normalisation, trained for a few steps."""
    from support import train_nuclei_run

    root = tmp_path_factory.mktemp("zoo")
    return root, train_nuclei_run(root, n=4, instance={"method": "distance", "min_size": 5, "target_diameter": 10.0},
                                  val=["n3"])


def test_exported_model_predicts_as_its_run(nuclei_run, tmp_path, monkeypatch):
    root, run = nuclei_run
    zoo.export_run(run, tmp_path / "tinynuclei", card="# tinynuclei\n\nA test model.\n", task_updates={"h": 0.7})
    monkeypatch.setattr(zoo, "ZOO_DIR", tmp_path)
    assert [m.name for m in zoo.available()] == ["tinynuclei"] and zoo.get("tinynuclei").summary == "A test model."
    image = tifffile.imread(root / "images" / "n1.tif")[None].astype(np.float32)
    from_zoo = Segmenter.pretrained("tinynuclei", device="cpu")
    from_run = Segmenter.load(run, device="cpu")
    assert from_zoo.task.h == 0.7 and from_zoo.task.target_diameter == 10.0  # tuned decoding travels with the model
    # one unnamed channel, one-marker model: no names needed; float32 arithmetic, so the only
    # difference left is the float16 rounding of the exported weights
    maps_zoo = from_zoo.predict_probabilities(image, precision="float32")
    maps_run = from_run.predict_probabilities(image, ["DNA"], precision="float32")
    np.testing.assert_allclose(maps_zoo, maps_run, atol=2e-2)
    assert Segmenter.load("tinynuclei", device="cpu").task.h == 0.7  # a name where a run is expected
    with pytest.raises(FluosegError, match="no run directory or pretrained model called 'nope'.*tinynuclei"):
        Segmenter.load("nope")


def test_a_model_exported_before_the_diameter_bias_takes_a_calibrated_one(nuclei_run, tmp_path):
    import json

    _, run = nuclei_run
    folder = zoo.export_run(run, tmp_path / "old", card="# old\n")
    model = json.loads((folder / zoo.MODEL_FILE).read_text())
    model["task"].pop("diameter_bias", None)  # as exported before models had one
    (folder / zoo.MODEL_FILE).write_text(json.dumps(model))
    assert Segmenter.load(folder, device="cpu").task.diameter_bias == 1.0
    zoo.write_retuned(folder, tmp_path / "new", task_updates={"diameter_bias": 1.1}, card="# new\n")
    assert Segmenter.load(tmp_path / "new", device="cpu").task.diameter_bias == 1.1


def test_cli_lists_models_and_predicts_by_name_with_object_tables(nuclei_run, tmp_path, monkeypatch, capsys):
    root, run = nuclei_run
    zoo.export_run(run, tmp_path / "zoo" / "tinynuclei", card="# tinynuclei\n\nA test model.\n")
    monkeypatch.setattr(zoo, "ZOO_DIR", tmp_path / "zoo")
    assert main(["models"]) == 0 and "tinynuclei   A test model." in capsys.readouterr().out
    assert main(["models", "tinynuclei"]) == 0 and "# tinynuclei" in capsys.readouterr().out
    out = tmp_path / "masks"
    assert main(["predict", "tinynuclei", str(root / "images"), "--out", str(out), "--objects", "--quiet"]) == 0
    labels = tifffile.imread(out / "n2.tif")
    rows = list(csv.DictReader((out / "n2_objects.csv").open()))
    assert len(rows) == len(np.unique(labels[labels > 0]))
    if rows:
        assert {"label", "area_px", "centroid_y", "eccentricity", "mean_DNA", "sum_DNA"} <= set(rows[0])
    assert main(["models", "nope"]) == 2


def test_export_refuses_existing_files_and_multi_member_runs(nuclei_run, tmp_path):
    _, run = nuclei_run
    zoo.export_run(run, tmp_path / "m", card="# m\n")
    with pytest.raises(FluosegError, match="--overwrite"):
        zoo.export_run(run, tmp_path / "m", card="# m\n")
    zoo.export_run(run, tmp_path / "m", card="# m\n", overwrite=True)


def test_a_nuclear_channel_picked_from_a_multichannel_file_and_a_stack(nuclei_run, tmp_path, monkeypatch):
    from fluoseg.io import read_labels, write_image

    root, run = nuclei_run
    zoo.export_run(run, tmp_path / "zoo" / "tinynuclei", card="# tinynuclei\n\nA test model.\n")
    monkeypatch.setattr(zoo, "ZOO_DIR", tmp_path / "zoo")
    grey = tifffile.imread(root / "images" / "n1.tif")
    write_image(tmp_path / "two.ome.tif", np.stack([grey[::-1], grey]), axes="CYX", channel_names=["actin", "DAPI"])
    out = tmp_path / "masks"
    assert main(["predict", "tinynuclei", str(tmp_path / "two.ome.tif"), "--out", str(out), "--markers", "DNA=DAPI",
                 "--quiet"]) == 0
    single = Segmenter.pretrained("tinynuclei", device="cpu").predict_labels(grey[None])[0]
    assert np.array_equal(read_labels(out / "two.tif"), single)  # the DAPI channel, fed as DNA, and nothing else
    stack = np.stack([grey, grey[::-1]])[None]  # (1, Z, Y, X): slice by slice
    labels, _ = Segmenter.pretrained("tinynuclei", device="cpu").predict_labels(stack)
    assert labels.shape == stack.shape[1:]


def test_a_pretrained_model_exports_to_a_bioimageio_package_that_predicts_as_it_does(nuclei_run, tmp_path,
                                                                                      monkeypatch):
    from fluoseg.bioimage.export import export_package

    _, run = nuclei_run
    zoo.export_run(run, tmp_path / "zoo" / "tinynuclei", card="# tinynuclei\n\nA test model.\n")
    monkeypatch.setattr(zoo, "ZOO_DIR", tmp_path / "zoo")
    monkeypatch.setattr("fluoseg.data.samples.sample_paths", lambda: [(run.parent / "images" / "n0.tif", None)])
    package = export_package("tinynuclei", tmp_path / "tiny.zip")
    image = tifffile.imread(run.parent / "images" / "n2.tif")[None]
    expected, _ = Segmenter.pretrained("tinynuclei", device="cpu").predict_labels(image)
    got, _ = Segmenter.load(package, device="cpu").predict_labels(image)
    assert np.array_equal(got, expected)
