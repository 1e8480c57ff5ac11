import argparse
import csv
import json
import shutil

import pytest
import yaml

from fluoseg.cli import main
from fluoseg.errors import FluosegError
from fluoseg.experiments import config_comparison
from fluoseg.experiments.config_comparison import compare_configs as run_crossval
from fluoseg.experiments.crossval import nested_subsets
from fluoseg.metrics.stats import holm, paired_t_test, paired_wilcoxon, stars

TINY = {"epochs": 1, "steps_per_epoch": 1}


def read(path):
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def run_split(out, folder):
    return yaml.safe_load((out / folder / "run" / "config.yaml").read_text())["split"]


def test_two_configs_share_folds_and_are_compared(make_config, tmp_path):
    a, b = make_config("adam.yaml", **TINY), make_config("sgd.yaml", optimizer="sgd", learning_rate=0.01, **TINY)
    lines = []
    result = run_crossval([a, b], tmp_path / "cv", folds=2, progress=False, log=lines.append)
    out = result.out

    folds = json.loads((out / "folds.json").read_text())["folds"]
    assert sorted(i for f in folds for i in f["test"]) == ["s0", "s1", "s2", "s3", "s4"]
    for k in range(2):
        assert run_split(out, f"adam/fold{k}") == run_split(out, f"sgd/fold{k}") == folds[k]

    per_fold = read(out / "per_fold.csv")
    assert {(r["config"], r["fold"]) for r in per_fold} == {(c, k) for c in ("adam", "sgd") for k in ("0", "1")}
    assert {"f1_blob", "f1_bar", "iou_blob", "iou_bar", "mean_f1", "mean_iou"} == {r["metric"] for r in per_fold}
    per_sample = read(out / "per_sample.csv")
    assert sorted(r["sample"] for r in per_sample if r["config"] == "sgd" and r["metric"] == "mean_f1") == \
        ["s0", "s1", "s2", "s3", "s4"]

    summary = {(r["config"], r["metric"]): r for r in read(out / "summary.csv")}
    row = summary[("adam", "f1_blob")]
    values = [float(r["value"]) for r in per_fold if r["config"] == "adam" and r["metric"] == "f1_blob"]
    assert row["n_folds"] == "2" and float(row["mean"]) == pytest.approx(sum(values) / 2)

    comparison = read(out / "comparison.csv")
    assert {(r["config"], r["reference"]) for r in comparison} == {("sgd", "adam")}
    assert {r["unit"] for r in comparison} == {"fold", "sample"}
    for r in comparison:  # each test recomputed from the scores it rests on
        source, key, test = (per_fold, "fold", paired_t_test) if r["unit"] == "fold" else \
            (per_sample, "sample", paired_wilcoxon)
        scores = {c: [float(x["value"]) for x in sorted(source, key=lambda x: x[key])
                      if x["config"] == c and x["metric"] == r["metric"]] for c in ("sgd", "adam")}
        expected = test(scores["sgd"], scores["adam"])
        assert r["n"] == ("2" if r["unit"] == "fold" else "5")
        assert float(r["mean_difference"]) == pytest.approx(expected.mean_difference)
        assert float(r["p_value"]) == pytest.approx(expected.p_value, nan_ok=True)
    # one Holm family over every test of the report, in file order, and the stars follow the adjusted p
    adjusted = holm([float(r["p_value"]) for r in comparison])
    assert [float(r["p_holm"]) for r in comparison] == pytest.approx(list(adjusted), nan_ok=True)
    assert [r["significance"] for r in comparison] == [stars(p) for p in adjusted]
    markdown = (out / "summary.md").read_text()
    assert "| sgd |" in markdown and "Paired differences to adam" in markdown
    timing = json.loads((out / "adam" / "fold0" / "timing.json").read_text())
    assert timing["parameters"] > 0 and timing["train_seconds"] > 0 and timing["n_test"] == len(folds[0]["test"])
    assert any("training on" in line for line in lines)


def test_rerun_skips_finished_folds_and_rescoring_reuses_training(make_config, tmp_path, monkeypatch):
    config = make_config("a.yaml", **TINY)
    out = tmp_path / "cv"
    run_crossval([config], out, folds=2, progress=False, log=lambda line: None)
    (out / "a" / "fold1" / "scores.csv").unlink()  # as if killed after training fold 1

    from fluoseg.train import trainer

    def no_training(*args, **kwargs):
        raise AssertionError("a finished training must not run again")

    monkeypatch.setattr(trainer.Trainer, "run", no_training)
    scored = []
    original = config_comparison.TestSetScorer.predict_and_score
    monkeypatch.setattr(config_comparison.TestSetScorer, "predict_and_score",
                        lambda self, unit, *a: scored.append(unit.fold) or original(self, unit, *a))
    lines = []
    run_crossval([config], out, folds=2, progress=False, log=lines.append)
    assert scored == [1] and sum("skipped" in line for line in lines) == 1
    run_crossval([config], out, folds=2, tta=True, progress=False, log=lambda line: None)
    assert scored == [1, 0, 1] and (out / "summary_tta.md").is_file() and (out / "a" / "fold0" / "scores.csv").is_file()


def test_other_folds_or_a_changed_config_are_refused(make_config, tmp_path):
    config = make_config("a.yaml", **TINY)
    out = tmp_path / "cv"
    run_crossval([config], out, folds=2, progress=False, log=lambda line: None)
    with pytest.raises(FluosegError, match="another folds"):
        run_crossval([config], out, folds=2, seed=1, progress=False, log=lambda line: None)
    with pytest.raises(FluosegError, match="differs"):
        run_crossval([make_config("a.yaml", learning_rate=0.5, **TINY)], out, folds=2, progress=False,
                     log=lambda line: None)
    with pytest.raises(FluosegError, match="share the name"):
        run_crossval([config, config], tmp_path / "other", folds=2, progress=False)


def test_nested_subsets_are_deterministic_and_nested():
    train = [f"x{i}" for i in range(20)]
    subsets = nested_subsets(train, [1, 5, 10], seed=3, fold=1)
    assert set(subsets[1]) < set(subsets[5]) < set(subsets[10]) < set(train)
    assert [len(subsets[n]) for n in (1, 5, 10)] == [1, 5, 10]
    assert subsets == nested_subsets(train, [1, 5, 10], seed=3, fold=1)
    assert subsets[10] != nested_subsets(train, [10], seed=3, fold=2)[10]
    with pytest.raises(FluosegError, match="exceeds"):
        nested_subsets(train, [21], seed=0, fold=0)


def test_train_size_sweep_trains_nested_subsets(tiny_dataset, make_config, tmp_path):
    images = tiny_dataset.parent / "images"
    for i in range(3):  # 8 samples: each of 2 folds trains on 3
        shutil.copy(images / f"s{i}.tif", images / f"t{i}.tif")
        shutil.copy(tiny_dataset.parent / "masks" / f"s{i}.tif", tiny_dataset.parent / "masks" / f"t{i}.tif")
    out = tmp_path / "cv"
    result = run_crossval([make_config("a.yaml", **TINY)], out, folds=2, train_sizes=[2, 1], progress=False,
                          log=lambda line: None)
    assert {(r["train_size"], r["fold"]) for r in result.per_fold} == {(n, k) for n in (1, 2) for k in (0, 1)}
    for k in range(2):
        small, large = run_split(out, f"a/n1/fold{k}"), run_split(out, f"a/n2/fold{k}")
        assert len(small["train"]) == 1 and set(small["train"]) < set(large["train"])
        assert small["val"] == large["val"] and small["test"] == large["test"]
    assert "## N = 1 training samples" in (out / "summary.md").read_text()
    with pytest.raises(FluosegError, match="exceeds"):
        run_crossval([make_config("a.yaml", **TINY)], tmp_path / "big", folds=2, train_sizes=[4], progress=False)


def test_instance_and_regression_metrics(tiny_nuclei_dataset, tiny_dataset, tmp_path):
    base = {"model": {"name": "unet", "options": {"depth": 2, "base_filters": 4}},
            "train": {"epochs": 1, "steps_per_epoch": 1, "batch_size": 2, "patch_size": 60, "device": "cpu",
                      "num_threads": 1, "val_tile_size": 60}}
    instance = dict(base, data={"manifest": str(tiny_nuclei_dataset)}, task="instance")
    regression = dict(base, data={"manifest": str(tiny_dataset)}, task="regression", regression={"targets": ["m1"]})
    for name, config in (("nuclei", instance), ("isl", regression)):
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(config))
    result = run_crossval([tmp_path / "nuclei.yaml"], tmp_path / "cv_nuclei", folds=2, progress=False,
                          log=lambda line: None)
    assert {r["metric"] for r in result.per_fold} == {"f1_at_0.5", "accuracy_at_0.5", "aji", "accuracy_mean_0.5_0.95"}
    result = run_crossval([tmp_path / "isl.yaml"], tmp_path / "cv_isl", folds=2, progress=False, log=lambda line: None)
    assert {r["metric"] for r in result.per_sample} == {"pearson_m1", "mae_m1"}


def test_command_line(make_config, tmp_path, capsys):
    assert main(["crossval", str(make_config("a.yaml", **TINY)), "--folds", "2", "--out", str(tmp_path / "cv"),
                 "--seed", "1", "--quiet"]) == 0
    assert "# Cross-validation (2 folds)" in capsys.readouterr().out
