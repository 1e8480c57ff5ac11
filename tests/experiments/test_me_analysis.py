"""Marker Excite analysis: one row per ME layer with the mean pairwise cosine distance."""

import csv

import numpy as np
import pytest
import torch
from scipy.spatial.distance import pdist

from fluoseg.cli import main
from fluoseg.errors import FluosegError
from fluoseg.experiments.me_analysis import analyse_run, describe_layer, layer_rows
from fluoseg.infer import Segmenter
from fluoseg.models.attention import MarkerExcite, me_layer_outputs
from fluoseg.models.registry import build_model
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
    # scipy's cosine distance of every pair of combinations is the oracle for both summaries
    outputs = me_layer_outputs(model, 3)
    for row in rows:
        distances = pdist(outputs[row["layer"]].astype(np.float64), "cosine")
        assert row["mean_cosine_distance"] == pytest.approx(distances.mean(), rel=1e-9)
        assert row["sd_cosine_distance"] == pytest.approx(distances.std(), rel=1e-9, abs=1e-15)
    written = list(csv.DictReader((tmp_path / "me" / "me_layers.csv").open()))
    assert len(written) == len(layers) and (tmp_path / "me" / "me_layers.png").is_file()

    assert main(["experiment", "me-analysis", str(run), "--out", str(tmp_path / "me_cli"), "--no-plot"]) == 0
    assert "Bottleneck 2" in capsys.readouterr().out


def test_hand_set_marker_excite_gives_the_worked_distances():
    """Every ME layer weights half its channels by marker 1 alone: the distances are known by hand.

    Hidden unit 0 is relu(v_1); the first half of the channels get sigmoid(100 v_1), the rest
    sigmoid(0) = 0.5. With marker 1 a layer's output is (1, .., 1, .5, .., .5), without it
    (.5, .., .5): cosine 0.75 / sqrt(1.25 * 0.5) = 3 / sqrt(10) whatever the width, so the
    distance is d = 1 - 3 / sqrt(10) = 0.0513167. Of the 7 combinations of 3 markers, 4 hold
    marker 1: 4 * 3 = 12 of the 21 pairs are at d, 9 at 0. Mean 12 d / 21 = 0.0293238,
    standard deviation d sqrt(12 * 9) / 21 = 0.0253947.
    """
    model = build_model("unet", in_channels=3, out_channels=2, depth=2, base_filters=4, marker_input="ms",
                        attention="me")
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, MarkerExcite):
                for parameter in module.parameters():
                    parameter.zero_()
                module.squeeze.weight[0, 0] = 1.0
                half = module.excite.out_features // 2
                module.excite.weight[:half, 0] = 100.0
    rows = layer_rows(model, 3)
    assert [r["label"] for r in rows] == ["Encoder 1", "Bottleneck 2", "Decoder 1", "Decoder 0"]
    for row in rows:
        assert row["n_combinations"] == 7
        assert row["mean_cosine_distance"] == pytest.approx(0.0293238, abs=1e-6)
        assert row["sd_cosine_distance"] == pytest.approx(0.0253947, abs=1e-6)
    with torch.no_grad():  # a layer that ignores the markers does not recalibrate at all
        for module in model.modules():
            if isinstance(module, MarkerExcite):
                module.excite.weight.zero_()
    assert all(r["mean_cosine_distance"] == pytest.approx(0.0, abs=1e-12) for r in layer_rows(model, 3))


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
