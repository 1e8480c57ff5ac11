"""``fluoseg synth cells`` and ``nuclei3d``: simulated datasets from the command line."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from fluoseg.cli import main
from fluoseg.data.manifest import load_manifest
from fluoseg.io import read_image


def run_cli(*args: object) -> int:
    return main([str(a) for a in args])


def test_synth_cells_writes_a_multi_marker_instance_dataset(tmp_path):
    out = tmp_path / "cells"
    assert run_cli("synth", "cells", "--out", out, "--n-images", 2, "--size", 64, "--settings", "shifted",
                   "--markers", "ECAD,DAPI,CK,CD45,KI67", "--seed", 5) == 0
    manifest = load_manifest(out / "manifest.yaml")
    assert len(manifest.samples) == 2 and manifest.markers == ("ECAD", "DAPI", "CK", "CD45", "KI67")
    sample = manifest.samples[0]
    image = read_image(sample.image_path)
    assert image.array.shape == (5, 64, 64) and image.channel_names == ("ECAD", "DAPI", "CK", "CD45", "KI67")
    cells = sample.read_labels((64, 64))
    nuclei = read_image(out / "nuclei" / f"{sample.id}.tif").array.reshape(64, 64)
    assert cells.max() >= 2  # touching cells, each its own instance
    inside = nuclei > 0
    assert inside.any() and np.array_equal(nuclei[inside], cells[inside])  # a nucleus carries its cell's id
    provenance = yaml.safe_load((out / "simulation.yaml").read_text())
    assert provenance["domain"]["name"] == "shifted" and provenance["seed"] == 5


def test_settings_file_nuclei_target_and_overwrite(tmp_path, capsys):
    settings = tmp_path / "noisy.yaml"
    settings.write_text(yaml.safe_dump({"base": "shifted", "read_noise": 12}))
    out = tmp_path / "cells"
    assert run_cli("synth", "cells", "--out", out, "--n-images", 1, "--size", 64, "--settings", settings,
                   "--target", "nuclei") == 0
    assert yaml.safe_load((out / "simulation.yaml").read_text())["domain"]["read_noise"] == 12
    assert load_manifest(out / "manifest.yaml").samples[0].labels_path.parent.name == "nuclei"
    capsys.readouterr()
    assert run_cli("synth", "cells", "--out", out, "--n-images", 1, "--size", 64) == 2  # a dataset is there
    assert "--overwrite" in capsys.readouterr().err
    assert run_cli("synth", "cells", "--out", out, "--n-images", 1, "--size", 64, "--overwrite") == 0
    assert yaml.safe_load((out / "simulation.yaml").read_text())["domain"]["name"] == "default"


def test_mistakes_are_one_line_errors(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"read_noise": -3}))
    for args, words in ((["--markers", "DAPI,FOO"], "FOO"), (["--settings", bad], "read_noise"),
                        (["--settings", "dim"], "dim"), (["--size", 8], "too small")):
        capsys.readouterr()
        assert run_cli("synth", "cells", "--out", tmp_path / "x", *args) == 2
        err = capsys.readouterr().err
        assert words in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_cli_constants_agree_with_the_simulator():
    from fluoseg.cli import synth
    from fluoseg.data.synth import CELL_DOMAINS, CELL_MARKERS, DEFAULT_CELL_MARKERS

    assert synth.CELL_PRESETS == tuple(CELL_DOMAINS) and synth.CELL_MARKER_NAMES == CELL_MARKERS
    assert synth.DEFAULT_CELL_MARKERS == DEFAULT_CELL_MARKERS


def test_simulated_cells_train_an_instance_model_that_predicts_from_a_marker_subset(tmp_path):
    data = tmp_path / "cells"
    assert run_cli("synth", "cells", "--out", data, "--n-images", 3, "--size", 64) == 0
    config = {
        "data": {"manifest": str(data / "manifest.yaml"), "split": {"val": ["cells_0001"], "test": ["cells_0002"]}},
        "task": "instance",
        "instance": {"method": "border", "min_size": 5},
        "model": {"name": "unet", "options": {"depth": 2, "base_filters": 4, "marker_input": "ms", "attention": "me"}},
        "train": {"epochs": 1, "steps_per_epoch": 2, "batch_size": 2, "patch_size": 60, "seed": 0, "device": "cpu",
                  "num_threads": 1},
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    run = tmp_path / "run"
    assert run_cli("train", tmp_path / "config.yaml", "--out", run, "--quiet") == 0
    out = tmp_path / "pred"
    assert run_cli("predict", run, data / "images" / "cells_0002.ome.tif", "--out", out, "--markers", "ECAD,CK",
                   "--quiet") == 0
    assert read_image(out / "cells_0002.tif").array.reshape(-1, 64, 64).shape[0] == 1


def test_synth_nuclei3d_writes_labelled_anisotropic_stacks(tmp_path, capsys):
    out = tmp_path / "stacks"
    assert run_cli("synth", "nuclei3d", "--out", out, "--n-stacks", 2, "--shape", "8,48,64", "--z-step", 2,
                   "--seed", 3) == 0
    manifest = load_manifest(out / "manifest.yaml")
    assert len(manifest.samples) == 2 and manifest.markers == ("DNA",)
    image = read_image(manifest.samples[0].image_path)
    assert image.array.shape == (1, 8, 48, 64) and image.channel_names == ("DNA",)
    assert image.pixel_size == pytest.approx((1.0, 0.5, 0.5))
    labels = read_image(manifest.samples[0].labels_path).array.reshape(8, 48, 64)
    ids = np.unique(labels[labels > 0])
    assert len(ids) >= 2 and ids.max() == len(ids)
    spans = [len(np.unique(np.nonzero(labels == i)[0])) for i in ids]
    assert max(spans) >= 2  # nuclei span several slices: the stacks test 3D stitching
    capsys.readouterr()
    assert run_cli("synth", "nuclei3d", "--out", out, "--n-stacks", 1) == 2  # a dataset is there
    assert "--overwrite" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:  # argparse's one-line usage error
        run_cli("synth", "nuclei3d", "--out", tmp_path / "y", "--shape", "8,48")
    assert exited.value.code == 2 and "Z,Y,X" in capsys.readouterr().err
