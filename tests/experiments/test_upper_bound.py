"""Upper bound: one Marker-Zero network per trainable combination, skipped once finished."""

import csv

import pytest

from fluoseg.cli import main
from fluoseg.data.manifest import load_manifest
from fluoseg.errors import FluosegError
from fluoseg.experiments import runs
from fluoseg.experiments.panels import write_manifest_with_available
from fluoseg.experiments.upper_bound import parse_combinations, plan_upper_bound, run_upper_bound, spread
from fluoseg.markers import MarkerPanel
from fluoseg.run import read_checkpoint_dict as load_checkpoint

MS_ME = {"marker_input": "ms", "attention": "me"}


def test_trains_the_requested_combinations_and_skips_them_on_rerun(experiment_config, tmp_path, monkeypatch):
    _, config = experiment_config(options=MS_ME)  # UB drops sampling and attention
    out = tmp_path / "ub"
    rows, plans = run_upper_bound(config, out, combinations="m_2,m_13", tile_size=60, progress=False, log=lambda m: None)
    assert sorted(p.name for p in (out / "fold0").iterdir()) == ["m_13", "m_2"]
    assert {(r["method"], r["combination"], r["sample"]) for r in rows} == {("UB", "m_2", "s4"), ("UB", "m_13", "s4")}
    assert len(rows) == 2 * 2  # combinations x classes on the one test sample
    assert len(plans) == 1 and len(plans[0].trainable) == 7 and plans[0].total == 7

    unit = out / "fold0" / "m_13"
    state = load_checkpoint(unit / "run" / "model" / "best.pt")
    assert state["model"]["options"]["marker_input"] == "mz" and state["model"]["options"]["attention"] == "none"
    used = load_manifest(unit / "manifest.yaml")
    assert {s.usable_markers for s in used.samples} == {("m1", "m3")}  # every sample shows only G
    trainable = list(csv.DictReader((out / "trainable.csv").open()))
    assert len(trainable) == 7 and {r["combination"] for r in trainable if r["trained"] == "1"} == {"m_2", "m_13"}
    assert (out / "upper_bound.csv").is_file() and (out / "upper_bound_summary.csv").is_file()

    def fail(*args, **kwargs):
        raise AssertionError("a finished combination was trained again")

    monkeypatch.setattr(runs, "train_unit", fail)
    again, _ = run_upper_bound(config, out, combinations="m_2,m_13", tile_size=60, progress=False, log=lambda m: None)
    assert sorted(map(str, again)) == sorted(map(str, rows))


def test_interrupted_unit_resumes_and_changed_config_is_refused(experiment_config, tmp_path):
    _, config = experiment_config()
    out = tmp_path / "ub"
    run_upper_bound(config, out, combinations="m_1", tile_size=60, progress=False, log=lambda m: None)
    (out / "fold0" / "m_1" / "combinations.csv").unlink()  # evaluation lost: training is reused, not redone
    rows, _ = run_upper_bound(config, out, combinations="m_1", tile_size=60, progress=False, log=lambda m: None)
    assert len(rows) == 2
    (out / "fold0" / "m_1" / "combinations.csv").unlink()
    with pytest.raises(FluosegError, match="another config"):
        run_upper_bound(config, out, combinations="m_1", epochs=2, tile_size=60, progress=False, log=lambda m: None)


def test_trainable_set_follows_the_training_samples_panels(experiment_config, tiny_dataset, tmp_path):
    panels = {"s0": ["m1"], "s1": ["m2", "m3"], "s2": ["m1", "m2"]}
    manifest = write_manifest_with_available(tiny_dataset, panels, tmp_path / "het.yaml")
    _, config = experiment_config(manifest=manifest)
    (plan,) = plan_upper_bound(config)
    assert plan.split.train == ("s0", "s1", "s2")
    codes = [MarkerPanel(["m1", "m2", "m3"]).subset_code(g) for g in plan.trainable]
    assert codes == ["m_1", "m_2", "m_3", "m_12", "m_23"] and plan.total == 7
    assert plan.train_counts[("m2",)] == 2 and plan.train_counts[("m1", "m3")] == 0
    folds = plan_upper_bound(config, folds=2, max_combinations=2)
    assert len(folds) == 2 and all(len(p.chosen) <= 2 for p in folds)


def test_combination_codes_and_spread():
    panel = MarkerPanel(["a", "b", "c"])
    assert parse_combinations("m_13, m_2", panel) == [("a", "c"), ("b",)]
    with pytest.raises(FluosegError, match="bad combination code"):
        parse_combinations("m_14", panel)
    assert spread(panel.subsets(), 3) == [("a",), ("a", "b"), ("a", "b", "c")]


def test_cli_upper_bound(make_config, tmp_path, capsys):
    config = make_config("ub.yaml", epochs=3, steps_per_epoch=1)
    out = tmp_path / "ub_cli"
    assert main(["experiment", "upper-bound", str(config), "--out", str(out), "--max-combinations", "1",
                 "--epochs", "1", "--tile-size", "60", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "trainable 7 of 7" in printed and "(|M^UB|/|M^total| = 1.00), trained 1" in printed
    assert [p.name for p in (out / "fold0").iterdir()] == ["m_123"]
