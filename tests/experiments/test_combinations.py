"""All-combination evaluation of a trained run: one row per (class, combination, sample)."""

import csv

import pytest

from fluoseg.cli import main
from fluoseg.data.manifest import load_manifest
from fluoseg.errors import FluosegError
from fluoseg.experiments import combinations as combinations_module
from fluoseg.experiments.combinations import evaluate_run, sample_combinations
from fluoseg.experiments.panels import write_manifest_with_available
from fluoseg.markers import MarkerPanel
from fluoseg.train.trainer import train

MS = {"marker_input": "ms"}


@pytest.fixture()
def ms_run(experiment_config, tmp_path):
    _, config = experiment_config(options=MS)
    return train(config, tmp_path / "ms_run", progress=False)


def test_every_combination_class_and_sample_is_scored(ms_run, tiny_dataset, tmp_path, monkeypatch):
    out = tmp_path / "eval"
    rows = evaluate_run(ms_run, tiny_dataset, out, sample_ids=["s3", "s4"], method="MS", fold=2, tile_size=60,
                        progress=False)
    written = list(csv.DictReader((out / "combinations.csv").open()))
    assert len(rows) == len(written) == (2**3 - 1) * 2 * 2  # combinations x classes x samples
    assert {r["combination"] for r in written} == {"m_1", "m_2", "m_3", "m_12", "m_13", "m_23", "m_123"}
    assert {(r["method"], r["fold"]) for r in written} == {("MS", "2")}
    assert all(0.0 <= float(r["f1"]) <= 1.0 for r in written)
    assert {r["markers"] for r in written if r["combination"] == "m_13"} == {"m1+m3"}
    summary = list(csv.DictReader((out / "combinations_summary.csv").open()))
    assert len(summary) == 7 * 2 and {r["n"] for r in summary} == {"2"}

    # per-sample cache: a rerun predicts nothing
    def fail(*args, **kwargs):
        raise AssertionError("a cached sample was evaluated again")

    monkeypatch.setattr(combinations_module, "evaluate_sample", fail)
    again = evaluate_run(ms_run, tiny_dataset, out, sample_ids=["s3", "s4"], method="MS", fold=2, progress=False)
    assert sorted(map(str, again)) == sorted(map(str, rows))


def test_samples_are_scored_only_on_their_available_markers(ms_run, tiny_dataset, tmp_path):
    partial = write_manifest_with_available(tiny_dataset, {"s4": ["m1", "m3"]}, tmp_path / "partial.yaml")
    sample = load_manifest(partial).sample("s4")
    assert sample_combinations(MarkerPanel(["m1", "m2", "m3"]), sample) == [("m1",), ("m3",), ("m1", "m3")]
    rows = evaluate_run(ms_run, partial, tmp_path / "eval", tile_size=60, progress=False)  # default: run's test split
    assert {r["sample"] for r in rows} == {"s4"}
    assert {r["combination"] for r in rows} == {"m_1", "m_3", "m_13"}


def test_cli_combinations(ms_run, tiny_dataset, tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["experiment", "combinations", str(ms_run), "--data", str(tiny_dataset), "--out", str(out),
                 "--samples", "s4", "--method", "MS", "--tile-size", "60", "--quiet"]) == 0
    assert "mean F1" in capsys.readouterr().out
    assert len(list(csv.DictReader((out / "combinations.csv").open()))) == 7 * 2
    assert main(["experiment", "combinations", str(ms_run), "--data", str(tiny_dataset), "--out", str(out),
                 "--samples", "nope", "--quiet"]) == 2
    assert "nope" in capsys.readouterr().err


def test_run_without_test_split_needs_samples(experiment_config, tiny_dataset, tmp_path):
    path, config = experiment_config()
    config.data.split.test = []
    run = train(config, tmp_path / "no_test", progress=False)
    with pytest.raises(FluosegError, match="--samples"):
        evaluate_run(run, tiny_dataset, tmp_path / "eval", progress=False)
