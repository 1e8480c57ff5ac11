"""End-to-end CLI behaviour: train -> predict -> evaluate, and one-line errors for bad input."""

import csv
import subprocess
import sys

import numpy as np
import pytest
import tifffile

from fluoseg.cli import main
from fluoseg.io import read_image, read_mask


def run_cli(*args: str) -> int:
    return main([str(a) for a in args])


def test_train_predict_evaluate_end_to_end(tiny_config, tiny_dataset, tmp_path, capsys):
    run = tmp_path / "run"
    assert run_cli("train", tiny_config, "--out", run, "--quiet", "--verbose") == 0
    log = (run / "train.log").read_text()
    assert "model epoch 2/2: train loss" in log and "finished" in log
    assert "epoch 1/2" in capsys.readouterr().err  # --verbose: the same records on stderr
    image = tiny_dataset.parent / "images" / "s4.tif"
    out = tmp_path / "pred"
    assert run_cli("predict", run, image, "--out", out, "--channel-names", "m1,m2,m3", "--probabilities", "--quiet") == 0
    masks = read_mask(out / "s4.tif")
    assert masks.shape == (2, 72, 72)
    assert read_image(out / "s4.tif").channel_names == ("blob", "bar")
    probabilities = read_image(out / "s4_probabilities.tif").array
    assert probabilities.dtype == np.float32 and probabilities.min() >= 0 and probabilities.max() <= 1

    # a subset of the trained markers, by name
    subset = tmp_path / "pred_subset"
    assert run_cli("predict", run, image, "--out", subset, "--channel-names", "m1,m2,m3", "--markers", "m2",
                   "--quiet") == 0
    assert read_mask(subset / "s4.tif").shape == (2, 72, 72)

    metrics = tmp_path / "metrics.csv"
    assert run_cli("evaluate", "--pred", out, "--truth", tiny_dataset.parent / "masks", "--out", metrics,
                   "--classes", "blob,bar") == 0
    rows = list(csv.DictReader(metrics.open()))
    assert list(rows[0]) == ["image", "class", "metric", "value"]
    assert {r["image"] for r in rows} == {"s4", "ALL"}
    assert {r["metric"] for r in rows} >= {"f1", "iou", "precision", "recall"}
    assert {r["class"] for r in rows} == {"blob", "bar"}

    # outputs are never overwritten without --overwrite
    before = (out / "s4.tif").read_bytes()
    assert run_cli("predict", run, image, "--out", out, "--channel-names", "m1,m2,m3", "--quiet") == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "s4.tif").read_bytes() == before
    assert run_cli("predict", run, image, "--out", out, "--channel-names", "m1,m2,m3", "--overwrite", "--quiet") == 0
    assert run_cli("evaluate", "--pred", out, "--truth", tiny_dataset.parent / "masks", "--out", metrics) == 2
    assert "--overwrite" in capsys.readouterr().err

    # unknown marker: one line naming it and listing the known ones
    assert run_cli("predict", run, image, "--out", tmp_path / "x", "--channel-names", "m1,m2,m3", "--markers", "GFP") == 2
    err = capsys.readouterr().err
    assert "GFP" in err and "m1" in err and err.count("\n") == 1

    # wrong channel count for the given names
    assert run_cli("predict", run, image, "--out", tmp_path / "y", "--channel-names", "m1,m2", "--quiet") == 2
    assert "channel" in capsys.readouterr().err
    assert not (tmp_path / "y" / "s4.tif").exists()

    # NaN pixels
    bad = tmp_path / "nan.tif"
    data = np.ones((3, 72, 72), np.float32)
    data[1, 5, 5] = np.nan
    tifffile.imwrite(bad, data, photometric="minisblack")
    assert run_cli("predict", run, bad, "--out", tmp_path / "z", "--channel-names", "m1,m2,m3", "--quiet") == 2
    err = capsys.readouterr().err
    assert "nan.tif" in err and "NaN" in err
    assert not (tmp_path / "z" / "nan.tif").exists()


@pytest.mark.parametrize("content", [b"", b"II*\x00garbage"])
def test_empty_or_corrupt_image_is_one_line_error(tiny_config, tmp_path, capsys, content):
    bad = tmp_path / "bad.tif"
    bad.write_bytes(content)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "run.json").write_text('{"members": ["model"]}')
    code = run_cli("predict", tmp_path / "run", bad, "--out", tmp_path / "out", "--channel-names", "a")
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "bad.tif" in err
    assert not (tmp_path / "out" / "bad.tif").exists()


def test_missing_files_and_bad_config(tmp_path, tiny_dataset, capsys):
    assert run_cli("train", tmp_path / "none.yaml", "--out", tmp_path / "r") == 2
    assert "none.yaml" in capsys.readouterr().err
    config = tmp_path / "bad.yaml"
    config.write_text(f"data: {{manifest: {tiny_dataset}}}\ntrain: {{epochz: 3}}\n")
    assert run_cli("train", config, "--out", tmp_path / "r") == 2
    err = capsys.readouterr().err
    assert "epochz" in err and "bad.yaml" in err and err.count("\n") == 1
    assert not (tmp_path / "r").exists()


def test_user_error_exit_code_without_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "fluoseg.cli", "evaluate", "--pred", str(tmp_path / "nope"),
                             "--truth", str(tmp_path), "--out", str(tmp_path / "m.csv")],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("fluoseg: error:") and "nope" in result.stderr


@pytest.mark.parametrize("method, extra", [("border", {}), ("distance", {"target_diameter": 12.0})])
def test_instance_train_predict_evaluate(tiny_nuclei_dataset, tmp_path, method, extra):
    import yaml

    from fluoseg.io import read_labels

    config = {
        "data": {"manifest": str(tiny_nuclei_dataset), "split": {"val": ["n3"], "test": ["n4"]}},
        "task": "instance",
        "instance": {"method": method, "min_size": 5, **extra},
        "model": {"name": "unet", "options": {"depth": 2, "base_filters": 4, "padding": "valid"}},
        "train": {"epochs": 1, "steps_per_epoch": 2, "batch_size": 2, "patch_size": 60, "seed": 0, "device": "cpu",
                  "num_threads": 1, "learning_rate": 1e-3},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    run = tmp_path / "run"
    assert run_cli("train", path, "--out", run, "--quiet") == 0
    image = tiny_nuclei_dataset.parent / "images" / "n4.tif"
    out = tmp_path / "pred"
    diameter = ["--diameter", "auto"] if extra else []
    assert run_cli("predict", run, image, "--out", out, "--markers", "DNA", "--probabilities", "--quiet", *diameter) == 0
    labels = read_labels(out / "n4.tif")
    assert labels.shape == (64, 64) and labels.dtype in (np.uint16, np.uint32)
    assert read_image(out / "n4_probabilities.tif").array.shape[0] == (3 if method == "border" else 2)
    metrics = tmp_path / "m.csv"
    assert run_cli("evaluate", "--task", "instance", "--pred", out, "--truth", tiny_nuclei_dataset.parent / "labels",
                   "--out", metrics) == 0
    rows = list(csv.DictReader(metrics.open()))
    assert list(rows[0]) == ["image", "metric", "threshold", "value"]
    names = {r["metric"] for r in rows}
    assert {"precision", "recall", "f1", "accuracy", "mean_matched_iou", "pq", "aji", "us_rate", "os_rate"} <= names
    assert any(r["image"] == "ALL" and r["metric"] == "f1" and r["threshold"] == "0.5" for r in rows)


def test_predict_takes_folders_of_images(tiny_config, tiny_dataset, tmp_path):
    run = tmp_path / "run"
    assert run_cli("train", tiny_config, "--out", run, "--quiet") == 0
    folder = tiny_dataset.parent / "images"
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "pred"
    assert run_cli("predict", run, folder, "--out", out, "--channel-names", "m1,m2,m3", "--quiet") == 0
    assert sorted(p.name for p in out.iterdir()) == [f"s{i}.tif" for i in range(5)]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run_cli("predict", run, empty, "--out", tmp_path / "pred2", "--quiet") == 2
    assert not (tmp_path / "pred2").exists()
