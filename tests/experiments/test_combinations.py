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
    printed = capsys.readouterr().out
    assert "mean F1" in printed and "expected F1 vs F1 over 7 combinations: Spearman" in printed
    quality = list(csv.DictReader((out / "combinations_estimates.csv").open()))
    assert {r["class"] for r in quality} == {"blob", "bar"} and {r["n_combinations"] for r in quality} == {"7"}
    assert all(-1 <= float(r["spearman_expected_f1"]) <= 1 and 0 <= float(r["mean_ece"]) <= 1 for r in quality
               if r["spearman_expected_f1"])
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


# ---- label-free expected F1 per marker subset, ECE, and how well they rank the subsets -------


class _Image:
    def __init__(self, array):
        self.array, self.pixel_size = array, None


class _Sample:
    """A 4x4 two-marker sample whose class covers the left half."""

    id, image_path, pixel_size, channel_names, usable_markers = "s", "s.tif", None, ("a", "b"), ("a", "b")

    def read_image(self):
        import numpy as np

        return _Image(np.zeros((2, 4, 4), np.float32))

    def read_masks(self, classes, spatial):
        import numpy as np

        truth = np.zeros((1, 4, 4), np.uint8)
        truth[0, :, :2] = 1
        return truth


class _Segmenter:
    """Hand-made probability maps per marker subset, decoded like a one-class sigmoid model (p > 0.5)."""

    task_name, classes, panel = "semantic", ("c",), MarkerPanel(["a", "b"])

    def predict_masks(self, array, names, *, markers, precision, **settings):
        import numpy as np

        assert precision == "float32"  # scores must not depend on the machine's bfloat16 support
        p = np.full((1, 4, 4), 0.6 if markers == ("a",) else 0.2, np.float32)
        if markers == ("a", "b"):
            p[0], p[0, :, :2] = 0.1, 0.9
        return (p > 0.5).astype(np.uint8), p


def test_expected_f1_and_ece_of_hand_made_subsets(tmp_path):
    from fluoseg.experiments.combinations import evaluate_combinations
    from fluoseg.experiments.results import read_results, write_tables

    rows = evaluate_combinations(_Segmenter(), [_Sample()], method="M", progress=False)
    by = {r["combination"]: r for r in rows}
    # m_12: p = 0.9 on the 8 true pixels, 0.1 on the 8 others; the mask is exact (F1 = 1) but
    # the map only expects E[TP] = 7.2, E[FP] = E[FN] = 0.8: F1 0.9; ECE |1 - 0.9| = |0 - 0.1| = 0.1.
    assert by["m_12"]["f1"] == 1.0
    assert (by["m_12"]["expected_tp"], by["m_12"]["expected_fp"], by["m_12"]["expected_fn"]) == pytest.approx((7.2, 0.8, 0.8))
    assert by["m_12"]["expected_f1"] == pytest.approx(0.9) and by["m_12"]["ece"] == pytest.approx(0.1)
    # m_1: p = 0.6 everywhere, all predicted: F1 = 16 / 24; expected 19.2 / 25.6; ECE |0.5 - 0.6|
    assert by["m_1"]["f1"] == pytest.approx(2 / 3)
    assert by["m_1"]["expected_f1"] == pytest.approx(0.75) and by["m_1"]["ece"] == pytest.approx(0.1)
    # m_2: p = 0.2, nothing predicted: F1 = 0 and expected 0 (E[FN] = 3.2); ECE |0.5 - 0.2|
    assert by["m_2"]["f1"] == 0.0 and by["m_2"]["expected_f1"] == 0.0 and by["m_2"]["ece"] == pytest.approx(0.3)

    write_tables(rows, tmp_path)
    quality = list(csv.DictReader((tmp_path / "combinations_estimates.csv").open()))
    assert len(quality) == 1 and (quality[0]["class"], quality[0]["n_combinations"]) == ("c", "3")
    assert float(quality[0]["spearman_expected_f1"]) == pytest.approx(1.0)  # same order as the truth
    assert float(quality[0]["mean_abs_error_expected_f1"]) == pytest.approx((0.75 - 2 / 3 + 0 + 0.1) / 3)
    assert float(quality[0]["mean_ece"]) == pytest.approx(0.5 / 3)
    summary = {r["combination"]: r for r in csv.DictReader((tmp_path / "combinations_summary.csv").open())}
    assert float(summary["m_1"]["mean_expected_f1"]) == pytest.approx(0.75)
    again = {r["combination"]: r for r in read_results(tmp_path / "combinations.csv")}
    assert again["m_12"]["expected_f1"] == pytest.approx(0.9) and again["m_2"]["ece"] == pytest.approx(0.3)


# ---- instance runs: objects matched at IoU 0.5, estimates from the foreground probability ------


class _InstanceTask:
    name = "instance"

    @staticmethod
    def foreground_probability(maps):
        return maps[0]


class _LabelSample(_Sample):
    """Two true objects: the left column pair and the right column pair of a 4x4 image."""

    def read_labels(self, spatial):
        import numpy as np

        labels = np.zeros(spatial, np.int32)
        labels[:, :2], labels[:, 2:] = 1, 2
        return labels


class _InstanceSegmenter:
    """Subset a+b finds both objects (p = 0.9); a finds one as two halves (p = 0.6); b finds nothing."""

    task_name, task, classes, panel = "instance", _InstanceTask(), ("objects",), MarkerPanel(["a", "b"])

    def predict_labels(self, array, names, *, markers, diameter, precision, **settings):
        import numpy as np

        assert diameter == "off"  # one scale for every subset
        assert precision == "float32"  # scores must not depend on the machine's bfloat16 support
        labels, p = np.zeros((4, 4), np.int32), np.full((1, 4, 4), 0.2, np.float32)
        if markers == ("a", "b"):
            labels[:, :2], labels[:, 2:], p[:] = 1, 2, 0.9
        elif markers == ("a",):
            labels[:2, :2], labels[2:, :2], p[0, :, :2] = 1, 2, 0.6
        return labels, p


def test_instance_runs_score_objects_and_foreground_estimates():
    from fluoseg.experiments.combinations import evaluate_combinations

    rows = evaluate_combinations(_InstanceSegmenter(), [_LabelSample()], method="M", progress=False)
    by = {r["combination"]: r for r in rows}
    assert {r["class"] for r in rows} == {"objects"}
    # a+b: both objects exact; every pixel p = 0.9 and predicted: E[TP] = 14.4, E[FP] = 1.6, E[FN] = 0
    assert (by["m_12"]["tp"], by["m_12"]["fp"], by["m_12"]["fn"], by["m_12"]["f1"]) == (2, 0, 0, 1.0)
    assert by["m_12"]["expected_f1"] == pytest.approx(28.8 / 30.4) and by["m_12"]["ece"] == pytest.approx(0.1)
    # a: two halves of object 1 (IoU 0.5 each: one matches, ties break to one pair), object 2 missed
    assert (by["m_1"]["tp"], by["m_1"]["fp"], by["m_1"]["fn"]) == (1, 1, 1)
    # foreground 0.6 on the 8 predicted pixels, 0.2 on the 8 others: E[TP] 4.8, E[FP] 3.2, E[FN] 1.6
    assert by["m_1"]["expected_f1"] == pytest.approx(9.6 / 14.4)
    # b: nothing found; E[TP] = 0 (nothing predicted)
    assert (by["m_2"]["tp"], by["m_2"]["fn"], by["m_2"]["expected_f1"]) == (0, 2, 0.0)


def test_detectors_are_refused(monkeypatch):
    from fluoseg.experiments.combinations import evaluate_combinations

    class _Detector(_InstanceSegmenter):
        class task:  # noqa: N801 - stands in for a task object
            name = "instance"

            @staticmethod
            def predict_objects(*args, **kwargs):
                raise AssertionError("not called")

            @staticmethod
            def validate(*args, **kwargs):
                raise AssertionError("not called")

    with pytest.raises(FluosegError, match="detector"):
        evaluate_combinations(_Detector(), [_LabelSample()], method="M", progress=False)


def test_cli_combinations_of_an_instance_run_on_simulated_cells(tmp_path):
    import yaml

    data = tmp_path / "cells"
    assert main(["synth", "cells", "--out", str(data), "--n-images", "3", "--size", "64", "--markers", "DAPI,ECAD,CK"]) == 0
    config = {
        "data": {"manifest": str(data / "manifest.yaml"), "split": {"val": ["cells_0001"], "test": ["cells_0002"]}},
        "task": "instance", "instance": {"method": "border", "min_size": 5},
        "model": {"name": "unet", "options": {"depth": 2, "base_filters": 4, "padding": "same", "marker_input": "ms",
                                              "attention": "me"}},
        "train": {"epochs": 1, "steps_per_epoch": 2, "batch_size": 2, "patch_size": 64, "seed": 0, "device": "cpu",
                  "num_threads": 1},
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    assert main(["train", str(tmp_path / "config.yaml"), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    out = tmp_path / "eval"
    assert main(["experiment", "combinations", str(tmp_path / "run"), "--data", str(data / "manifest.yaml"),
                 "--out", str(out), "--tile-size", "64"]) == 0
    rows = list(csv.DictReader((out / "combinations.csv").open()))
    assert len(rows) == 7 and {r["class"] for r in rows} == {"objects"}  # 2**3 - 1 subsets, one test image
    truth = load_manifest(data / "manifest.yaml").sample("cells_0002").read_labels((64, 64))
    n_true = len(set(truth[truth > 0].tolist()))
    assert all(int(r["tp"]) + int(r["fn"]) == n_true for r in rows)  # every true object is counted once
    estimates = list(csv.DictReader((out / "combinations_estimates.csv").open()))
    assert len(estimates) == 1 and int(estimates[0]["n_combinations"]) == 7
