"""``fluoseg predict``: ``--uncertainty`` (the map and the per-image table it writes) and ``--markers`` outside
the panel of a channel-invariant run."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import tifffile
import yaml

from fluoseg.cli import main
from fluoseg.io import read_labels, read_mask


def run_cli(*args: object) -> int:
    return main([str(a) for a in args])


def test_semantic_uncertainty_map_and_table(tiny_config, tiny_dataset, tmp_path, capsys):
    run = tmp_path / "run"
    assert run_cli("train", tiny_config, "--out", run, "--quiet") == 0
    images = [tiny_dataset.parent / "images" / f"s{i}.tif" for i in (3, 4)]
    out = tmp_path / "pred"
    assert run_cli("predict", run, *images, "--out", out, "--channel-names", "m1,m2,m3", "--quiet",
                   "--tile-size", "60", "--uncertainty") == 0
    maps = {}
    for name in ("s3", "s4"):
        mask_shape = read_mask(out / f"{name}.tif").shape
        maps[name] = tifffile.imread(out / f"{name}_uncertainty.tif")
        assert maps[name].dtype == np.float32 and maps[name].shape == mask_shape[1:] == (72, 72)
        assert 0 <= maps[name].min() and maps[name].max() <= 0.25  # variance of probabilities
    rows = list(csv.DictReader((out / "uncertainty.csv").open()))
    assert [r["image"] for r in rows] == ["s3", "s4"]
    assert {(r["method"], r["measure"], r["passes"]) for r in rows} == {("tta", "variance", "8")}
    for row in rows:
        assert float(row["mean_uncertainty"]) == pytest.approx(float(maps[row["image"]].mean()), rel=1e-6)
        assert float(row["mean_uncertainty"]) > 0  # an untrained-looking U-Net is not flip-invariant

    # existing outputs are kept unless --overwrite; the refusal names the file and costs nothing
    capsys.readouterr()
    assert run_cli("predict", run, images[1], "--out", out, "--channel-names", "m1,m2,m3", "--quiet",
                   "--uncertainty", "--uncertainty-measure", "entropy") == 2
    assert "s4" in capsys.readouterr().err
    assert run_cli("predict", run, images[1], "--out", out, "--channel-names", "m1,m2,m3", "--quiet",
                   "--tile-size", "60", "--uncertainty", "--uncertainty-measure", "entropy", "--overwrite") == 0
    entropy = tifffile.imread(out / "s4_uncertainty.tif")
    assert entropy.max() > 0.25 and entropy.max() <= np.log(3) + 1e-6  # nats of a 3-way softmax
    rows = list(csv.DictReader((out / "uncertainty.csv").open()))
    assert [(r["image"], r["measure"]) for r in rows] == [("s4", "entropy")]


def test_dropout_needs_a_model_with_dropout_before_anything_is_written(tiny_config, tiny_dataset, tmp_path, capsys):
    run = tmp_path / "run"
    assert run_cli("train", tiny_config, "--out", run, "--quiet") == 0
    out = tmp_path / "pred"
    image = tiny_dataset.parent / "images" / "s4.tif"
    assert run_cli("predict", run, image, "--out", out, "--channel-names", "m1,m2,m3", "--quiet",
                   "--uncertainty", "dropout") == 2
    err = capsys.readouterr().err
    assert "dropout" in err and len(err.strip().splitlines()) == 1
    assert not (out / "s4.tif").exists()
    assert run_cli("predict", run, image, "--out", out, "--channel-names", "m1,m2,m3", "--quiet",
                   "--uncertainty", "dropout", "--uncertainty-passes", "1") == 2


def test_instance_map_has_the_labels_shape_under_scale_normalisation(tiny_nuclei_dataset, tmp_path):
    config = {
        "data": {"manifest": str(tiny_nuclei_dataset), "split": {"val": ["n3"], "test": ["n4"]}},
        "task": "instance",
        "instance": {"method": "distance", "min_size": 5, "target_diameter": 12.0},
        "model": {"name": "unet", "options": {"depth": 2, "base_filters": 4, "padding": "valid", "dropout": 0.2}},
        "train": {"epochs": 1, "steps_per_epoch": 2, "batch_size": 2, "patch_size": 60, "seed": 0, "device": "cpu",
                  "num_threads": 1, "learning_rate": 1e-3},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    run = tmp_path / "run"
    assert run_cli("train", path, "--out", run, "--quiet") == 0
    out = tmp_path / "pred"
    image = tiny_nuclei_dataset.parent / "images" / "n4.tif"
    assert run_cli("predict", run, image, "--out", out, "--markers", "DNA", "--quiet", "--diameter", "8",
                   "--uncertainty", "dropout", "--uncertainty-passes", "3",
                   "--uncertainty-measure", "mutual-information") == 0
    labels = read_labels(out / "n4.tif")
    uncertainty = tifffile.imread(out / "n4_uncertainty.tif")
    assert uncertainty.shape == labels.shape == (64, 64) and uncertainty.dtype == np.float32
    assert 0 <= uncertainty.min() and uncertainty.max() <= np.log(2) + 1e-6  # one binary foreground
    row = next(csv.DictReader((out / "uncertainty.csv").open()))
    assert (row["method"], row["passes"]) == ("dropout", "3")


def test_channel_invariant_run_predicts_with_a_marker_it_never_saw(tiny_dataset, tmp_path, capsys):
    from support import CHANNEL_INVARIANT, make_tiny_sample, tiny_config_dict

    runs = {}
    for name, options in (("ci", CHANNEL_INVARIANT), ("slots", {})):
        config = tmp_path / f"{name}.yaml"
        config.write_text(yaml.safe_dump(tiny_config_dict(tiny_dataset, model_options=options)))
        runs[name] = tmp_path / name
        assert run_cli("train", config, "--out", runs[name], "--quiet") == 0
    image, _ = make_tiny_sample(4)
    path = tmp_path / "stained.tif"
    tifffile.imwrite(path, np.concatenate([image, image[1:2, ::-1]]), photometric="minisblack")
    names = ["--channel-names", "m1,m2,m3,E-cadherin", "--tile-size", "60", "--probabilities", "--quiet"]
    maps = {}
    for markers in ("m1,E-cadherin", "E-cadherin,m1", "m1"):
        out = tmp_path / markers.replace(",", "+")
        assert run_cli("predict", runs["ci"], path, "--out", out, "--markers", markers, *names) == 0
        assert read_mask(out / "stained.tif").shape == (2, 72, 72)
        maps[markers] = tifffile.imread(out / "stained_probabilities.tif")
    assert maps["m1,E-cadherin"].shape == (2, 72, 72)
    assert np.array_equal(maps["m1,E-cadherin"], maps["E-cadherin,m1"])
    assert np.abs(maps["m1,E-cadherin"] - maps["m1"]).max() > 1e-3

    capsys.readouterr()
    refused = tmp_path / "refused"
    for run, fix in ((runs["slots"], "model.options.front_end: channel-invariant"), (runs["ci"], "--markers")):
        markers = ["--markers", "m1,E-cadherin"] if run == runs["slots"] else []
        assert run_cli("predict", run, path, "--out", refused, *markers, *names) == 2
        err = capsys.readouterr().err.strip()
        assert "unknown marker 'E-cadherin'" in err and fix in err and len(err.splitlines()) == 1
        assert not (refused / "stained.tif").exists()


def test_the_shipped_model_labels_the_same_nuclei_in_bfloat16(tmp_path):
    from fluoseg.data.samples import sample_paths
    from fluoseg.metrics.instance import instance_rows
    from fluoseg.metrics.semantic import ALL_IMAGES

    image = sample_paths()[0][0]
    for precision in ("float32", "bfloat16"):
        assert run_cli("predict", "nuclei", image, "--out", tmp_path / precision, "--quiet", "--device", "cpu",
                       "--precision", precision) == 0
    full, reduced = (read_labels(tmp_path / p / f"{image.stem}.tif") for p in ("float32", "bfloat16"))
    assert full.max() > 5
    rows = instance_rows([(image.stem, reduced, full)])
    agreement = next(r["value"] for r in rows if r["image"] == ALL_IMAGES and r["metric"] == "f1"
                     and r["threshold"] == 0.5)
    assert agreement > 0.95, agreement  # the same nuclei, up to a few on the decision boundary
