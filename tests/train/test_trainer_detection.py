"""Detection models through the ordinary trainer and CLI: train, validate, resume, reload, predict."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
import yaml
from support import make_tiny_nuclei, write_nuclei_dataset

from fluoseg.cli import main
from fluoseg.train import trainer as trainer_module
from fluoseg.infer import Segmenter
from fluoseg.run import RunDir
from fluoseg.tasks.detection import SCORE_GRID

TINY = {
    "maskrcnn": {"encoder": "resnet18", "fpn_channels": 16, "representation_size": 64, "mask_channels": 16,
                 "rpn_batch_size_per_image": 64, "box_batch_size_per_image": 64, "rpn_post_nms_top_n_train": 200,
                 "rpn_post_nms_top_n_test": 200},
    "lacss": {"depth": "resnet18", "fpn_channels": 16, "lpn_channels": [16, 16], "shared_channels": [16],
              "patch_channels": 8, "crop_size": 24},
}
"""Detectors that train a step in a fraction of a second on one CPU thread."""


def write_config(root: Path, model: str, *, epochs: int, instance: dict | None = None) -> Path:
    manifest = write_nuclei_dataset(root, 4)
    config = {"data": {"manifest": str(manifest), "split": {"val": ["n3"]}}, "task": "instance",
              "instance": instance or {}, "model": {"name": model, "options": TINY[model]},
              "train": {"epochs": epochs, "steps_per_epoch": 5, "batch_size": 2, "patch_size": 64, "device": "cpu",
                        "num_threads": 1, "learning_rate": 3e-3, "seed": 0}}
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def metrics(run: Path) -> list[dict[str, str]]:
    return list(csv.DictReader((run / "model" / "metrics.csv").open()))


def test_maskrcnn_trains_validates_reloads_and_predicts_through_the_cli(tmp_path, capsys):
    config = write_config(tmp_path, "maskrcnn", epochs=8)
    run = tmp_path / "run"
    assert main(["train", str(config), "--out", str(run), "--quiet"]) == 0
    rows = metrics(run)
    assert len(rows) == 8
    assert float(rows[-1]["train_loss"]) < 0.7 * float(rows[0]["train_loss"])
    # Validation matches whole validation images' objects: the detector has learnt to find nuclei.
    assert max(float(r["val_f1_at_0.5"]) for r in rows) > 0.3
    assert all(float(r["val_min_score"]) in SCORE_GRID for r in rows)  # scored at the best score threshold
    best_epoch = max(int(r["epoch"]) for r in rows if r["best"] == "1")

    checkpoint = RunDir.open(run).load("model", "best")
    assert checkpoint.model.is_detector and checkpoint.model.name == "maskrcnn"
    assert checkpoint.training.epoch == best_epoch
    model = checkpoint.build_model()
    assert all(torch.equal(v, checkpoint.weights[k]) for k, v in model.state_dict().items())

    image, truth = make_tiny_nuclei(3)
    labels, score_map = Segmenter.load(run).predict_labels(image, ["DNA"])
    assert labels.shape == truth.shape and score_map.shape == (1, *truth.shape)
    assert labels.max() >= 1 and np.all((score_map[0] > 0) == (labels > 0))
    noise = np.random.default_rng(0).normal(100.0, 5.0, image.shape).astype(np.float32)  # an empty field
    empty_labels, empty_scores = Segmenter.load(run).predict_labels(noise, ["DNA"])
    assert empty_labels.shape == truth.shape and not empty_labels.any() and not empty_scores.any()

    images = tmp_path / "images" / "n3.tif"
    assert main(["predict", str(run), str(images), "--out", str(tmp_path / "pred"), "--objects", "--quiet"]) == 0
    written = tifffile.imread(tmp_path / "pred" / "n3.tif")
    np.testing.assert_array_equal(written, labels)
    table = list(csv.DictReader((tmp_path / "pred" / "n3_objects.csv").open()))
    assert len(table) == labels.max()
    # each object's score, ranked as the labels are numbered (descending score), at least the run's min_score
    scores = [float(row["score"]) for row in table]
    assert scores == sorted(scores, reverse=True) and min(scores) >= 0.5
    assert scores[0] == pytest.approx(float(score_map[0][labels == 1].max()), abs=1e-6)
    # a lower --min-score keeps more detections (for COCO AP)
    assert main(["predict", str(run), str(images), "--out", str(tmp_path / "all"), "--objects", "--quiet",
                 "--min-score", "0.05"]) == 0
    every = list(csv.DictReader((tmp_path / "all" / "n3_objects.csv").open()))
    assert len(every) >= len(table) and min(float(row["score"]) for row in every) >= 0.05

    # test-time augmentation averages maps: refused for a detector, in one line
    assert main(["predict", str(run), str(images), "--out", str(tmp_path / "tta"), "--tta", "--quiet"]) == 2
    assert "leave --tta out" in capsys.readouterr().err

    # the score threshold is tuned on the validation images, stored in the run and used by predict
    assert main(["tune", str(run), "--objective", "f1_0.5"]) == 0
    record = json.loads((run / "model" / "decoding.json").read_text())
    search = list(csv.DictReader((run / "model" / "decoding_search.csv").open()))
    assert [float(r["min_score"]) for r in search] == list(SCORE_GRID)
    assert record["value"] == max(float(r["f1_0.5"]) for r in search) >= record["before"]
    assert record["before"] == float(next(r for r in search if float(r["min_score"]) == 0.5)["f1_0.5"])
    assert Segmenter.load(run).task.min_score == record["parameters"]["min_score"]

    # bioimage.io packages cannot describe a detector: refused in one line
    capsys.readouterr()
    assert main(["export", str(run), "--out", str(tmp_path / "model.zip")]) == 2
    error = capsys.readouterr().err.strip()
    assert "maskrcnn is a detection model" in error and "\n" not in error
    assert not (tmp_path / "model.zip").exists()


def test_killed_lacss_run_resumes_to_the_same_weights(tmp_path, monkeypatch):
    config = write_config(tmp_path, "lacss", epochs=2)
    reference = tmp_path / "reference"
    assert main(["train", str(config), "--out", str(reference), "--quiet"]) == 0
    assert float(metrics(reference)[-1]["train_loss"]) < float(metrics(reference)[0]["train_loss"])

    original = trainer_module._write_metrics

    def die_after_first_epoch(run, member, rows):
        original(run, member, rows)
        raise KeyboardInterrupt  # killed right after epoch 1 was saved

    monkeypatch.setattr(trainer_module, "_write_metrics", die_after_first_epoch)
    killed = tmp_path / "killed"
    assert main(["train", str(config), "--out", str(killed), "--quiet"]) != 0  # the CLI reports the interrupt
    assert RunDir.open(killed).load("model", "last").training.epoch == 1
    monkeypatch.setattr(trainer_module, "_write_metrics", original)
    assert main(["train", str(config), "--out", str(killed), "--quiet", "--resume"]) == 0
    expected = RunDir.open(reference).load("model", "last").weights
    resumed = RunDir.open(killed).load("model", "last").weights
    assert all(torch.equal(expected[k], resumed[k]) for k in expected)
    assert len(metrics(killed)) == 2


def test_point_supervision_with_maskrcnn_is_a_one_line_error(tmp_path, capsys):
    config = write_config(tmp_path, "maskrcnn", epochs=1, instance={"supervision": "points"})
    assert main(["train", str(config), "--out", str(tmp_path / "run"), "--quiet"]) != 0
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "config.yaml" in error[0] and "not possible with 'maskrcnn'" in error[0]


def test_bfloat16_training_of_a_detector_is_a_one_line_error(tmp_path, capsys):
    config = write_config(tmp_path, "lacss", epochs=1)
    settings = yaml.safe_load(config.read_text())
    settings["train"]["precision"] = "bfloat16"
    config.write_text(yaml.safe_dump(settings))
    assert main(["train", str(config), "--out", str(tmp_path / "run"), "--quiet"]) != 0
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "config.yaml" in error[0] and "train.precision" in error[0]
    assert not (tmp_path / "run").exists()


def test_lacss_trains_from_points_and_the_foreground(tmp_path):
    manifest = write_nuclei_dataset(tmp_path / "data", 4)
    assert main(["points", "--data", str(manifest), "--out", str(tmp_path / "pts")]) == 0
    config = write_config(tmp_path, "lacss", epochs=3, instance={"supervision": "points"})
    raw = yaml.safe_load(config.read_text())
    raw["data"]["manifest"] = str(tmp_path / "pts" / "manifest.yaml")
    config.write_text(yaml.safe_dump(raw))
    run = tmp_path / "run"
    assert main(["train", str(config), "--out", str(run), "--quiet"]) == 0
    rows = metrics(run)
    assert float(rows[-1]["train_loss"]) < 0.85 * float(rows[0]["train_loss"])
    assert set(rows[0]) >= {"val_f1_points", "val_score"}  # validated against the points, not labels
    task = RunDir.open(run).load("model", "best").build_task()
    assert task.supervision == "points"

