"""Marker Excite analysis: one row per ME layer with the mean pairwise cosine distance."""

import csv

import pytest

from fluoseg.cli import main
from fluoseg.errors import FluosegError
from fluoseg.experiments.me_analysis import analyse_run, describe_layer
from fluoseg.infer import Segmenter
from fluoseg.models.attention import MarkerExcite
from fluoseg.train.trainer import train

MS_ME = {"marker_input": "ms", "attention": "me"}


def test_one_row_per_me_layer(experiment_config, tmp_path, capsys):
    _, config = experiment_config(options=MS_ME)
    run = train(config, tmp_path / "msme", progress=False)
    rows, files = analyse_run(run, tmp_path / "me")
    model = Segmenter.load(run).members[0].model
    layers = [name for name, m in model.named_modules() if isinstance(m, MarkerExcite)]
    assert [r["layer"] for r in rows] == layers
    # depth 2, E+B+D: encoder level 1, bottleneck (level 2), decoders at levels 1 and 0
    assert [r["label"] for r in rows] == ["Encoder 1", "Bottleneck 2", "Decoder 1", "Decoder 0"]
    assert all(r["n_combinations"] == 7 for r in rows)
    # the untrained-enough ME layers still recalibrate: some combination moves the features
    assert all(0 < r["mean_cosine_distance"] <= 2 for r in rows)
    assert all(r["sd_cosine_distance"] >= 0 for r in rows)
    written = list(csv.DictReader((tmp_path / "me" / "me_layers.csv").open()))
    assert len(written) == len(layers) and (tmp_path / "me" / "me_layers.png").is_file()

    assert main(["experiment", "me-analysis", str(run), "--out", str(tmp_path / "me_cli"), "--no-plot"]) == 0
    assert "Bottleneck 2" in capsys.readouterr().out


def test_run_without_marker_excite_is_an_error(experiment_config, tmp_path):
    _, config = experiment_config()
    run = train(config, tmp_path / "plain", progress=False)
    with pytest.raises(FluosegError, match="Marker Excite"):
        analyse_run(run, tmp_path / "me", plot=False)


def test_layer_names():
    assert describe_layer("encoders.0.hook", 4) == ("input", 0)
    assert describe_layer("decoders.0.hook", 4) == ("decoder", 3)
    assert describe_layer("frontend.bottleneck.hook", 4) == ("bottleneck", 4)
    assert describe_layer("head", 4) == ("other", None)
