"""Cross-validation by sample: every sample once in test, results merged across folds."""

import csv
import json

import pytest

from fluoseg.cli import main
from fluoseg.errors import FluosegError
from fluoseg.experiments import crossval as crossval_module
from fluoseg.experiments.combinations import crossval_combinations as run_crossval
from fluoseg.experiments.crossval import Unit, case_config, shared_folds

MS = {"marker_input": "ms"}

SAMPLES = {"s0", "s1", "s2", "s3", "s4"}


def test_every_sample_is_once_in_test_and_folds_merge(experiment_config, tmp_path, monkeypatch):
    _, config = experiment_config(options=MS)
    out = tmp_path / "cv"
    rows = run_crossval(config, out, folds=2, method="MS", tile_size=60, progress=False, log=lambda m: None)
    tested = {}
    for row in rows:
        tested.setdefault(row["sample"], set()).add(row["fold"])
    assert set(tested) == SAMPLES and all(len(folds) == 1 for folds in tested.values())
    merged = list(csv.DictReader((out / "combinations.csv").open()))
    assert len(merged) == len(SAMPLES) * 7 * 2  # samples x combinations x classes
    assert {r["method"] for r in merged} == {"MS"} and {r["fold"] for r in merged} == {"0", "1"}
    splits = json.loads((out / "folds.json").read_text())["folds"]
    for split in splits:  # train, val and test never share a sample
        assert not set(split["train"]) & set(split["val"]) and not set(split["test"]) & set(split["train"] + split["val"])

    def fail(*args, **kwargs):
        raise AssertionError("a finished fold was trained again")

    monkeypatch.setattr(crossval_module, "train_unit", fail)
    again = run_crossval(config, out, folds=2, method="MS", tile_size=60, progress=False, log=lambda m: None)
    assert len(again) == len(rows)
    with pytest.raises(FluosegError, match="another folds"):
        run_crossval(config, out, folds=3, method="MS", progress=False, log=lambda m: None)
    assert not list(out.glob("*/fold*/run/*/last.pt"))  # finished units keep best.pt only
    assert list(out.glob("MS/fold*/run/model/best.pt"))
    monkeypatch.undo()
    _, other = experiment_config("mz.yaml")
    run_crossval(other, out, folds=2, method="MZ", tile_size=60, progress=False, log=lambda m: None)
    merged = list(csv.DictReader((out / "combinations.csv").open()))
    assert {r["method"] for r in merged} == {"MS", "MZ"}  # methods sharing OUT: one merged table


def test_same_folds_for_every_method_given_the_seed(experiment_config):
    _, a = experiment_config("a.yaml")
    _, b = experiment_config("b.yaml", options=MS)
    assert shared_folds([a], folds=2, seed=0) == shared_folds([b], folds=2, seed=0)
    assert shared_folds([a], folds=2, seed=0) != shared_folds([a], folds=2, seed=1)


def test_case_panels_go_to_training_samples_only(experiment_config, tmp_path):
    _, config = experiment_config()
    split = shared_folds([config], folds=2, seed=0)[1]
    cfg, notes = case_config(Unit("m", config, 1, "all", split), tmp_path / "fold1", case=1, case_seed=5)
    assert set(notes["panels"]) == set(split.train) and all(len(p) == 1 for p in notes["panels"].values())
    from fluoseg.data.manifest import load_manifest

    data = load_manifest(cfg.data.manifest)
    for sample in data.samples:
        expected = tuple(notes["panels"].get(sample.id, ("m1", "m2", "m3")))
        assert sample.usable_markers == expected


def test_cli_crossval(experiment_config, tmp_path, capsys):
    path, _ = experiment_config("cli.yaml")
    out = tmp_path / "cv_cli"
    assert main(["experiment", "crossval", str(path), "--folds", "2", "--out", str(out), "--tile-size", "60",
                 "--case", "2", "--quiet"]) == 0
    assert "|M^UB|/|M^total|" in capsys.readouterr().out
    merged = list(csv.DictReader((out / "combinations.csv").open()))
    assert {r["sample"] for r in merged} == SAMPLES and {r["method"] for r in merged} == {"cli"}
