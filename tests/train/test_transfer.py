"""Tests of init_from weight transfer, including the ISL paper's shifted sigmoid (eq. 1)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from fluoseg.errors import FluosegError
from fluoseg.models import build_model, model_names
from fluoseg.tasks import RegressionTask, SemanticTask, build_instance_task
from fluoseg.run import Checkpoint, ModelSpec, RunDir
from fluoseg.train.transfer import output_parameter_names, resolve_head_mode, sigmoid_shift, transfer_weights

SMALL = {"unet": {"depth": 2, "base_filters": 4, "padding": "same"},
         "hemis": {"depth": 2, "base_filters": 4, "backend_filters": 4, "padding": "same"},
         "hemis-ms": {"depth": 2, "base_filters": 4, "backend_filters": 4, "padding": "same"},
         "unet-encoder": {"encoder": "resnet18"}, "unetpp": {"encoder": "resnet18", "deep_supervision": True},
         "fcn": {"encoder": "resnet18"}, "deeplabv3": {"encoder": "resnet18"}, "deepcell": {"window": 31}}



def small(name: str, out_channels: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(name, in_channels=2, out_channels=out_channels, **SMALL[name]).eval()


def fake_run(folder: Path, model: nn.Module, task_state: dict) -> Path:
    """A run directory as the trainer writes it, holding ``model`` as its best checkpoint."""
    run = RunDir(folder)
    run.path.mkdir(parents=True)
    run.write_index(["model"])
    run.save("model", "best", Checkpoint(model=ModelSpec.of(model), weights=model.state_dict(), task=task_state,
                                         markers=("a", "b"), classes=("x",)))
    return folder


def regression_state(targets=("DNA",), normalization="percentile") -> dict:
    return RegressionTask(list(targets), normalization=normalization).state()


@pytest.mark.parametrize("name", sorted(SMALL))
def test_every_architecture_names_its_output_layers(name):
    assert set(SMALL) == set(model_names())
    model = small(name, 3, 0)
    layers = output_parameter_names(model)
    assert layers and all(isinstance(layer, nn.Conv2d) and layer.out_channels == 3 for layer in layers.values())
    # Zeroing the named layers must zero the logits: they really are the output layers.
    with torch.no_grad():
        for layer in layers.values():
            layer.weight.zero_()
            layer.bias.zero_()
        out = model(torch.rand(1, 2, 64, 64))
    assert torch.count_nonzero(out) == 0


@pytest.mark.parametrize("name", ["unet", "unetpp", "fcn"])
@pytest.mark.parametrize("normalization,shift", [("percentile", 0.5), ("gaussian", 0.0)])
def test_shifted_sigmoid_starts_at_the_papers_f_of_the_pretrained_prediction(tmp_path, name, normalization, shift):
    pretrained = small(name, 1, seed=1)
    run = fake_run(tmp_path / "isl", pretrained, regression_state(normalization=normalization))
    model = small(name, 1, seed=2)
    task = SemanticTask(["nuclei"], loss="jaccard")
    report = transfer_weights(model, run, task)
    assert (report.head, report.shift) == ("shifted-sigmoid", shift)
    assert report.copied == len(pretrained.state_dict()) == report.total
    x = torch.rand(2, 2, 64, 64)
    with torch.no_grad():
        intensity = pretrained(x)  # the pretrained fluorescence prediction
        probability = task.activate(model(x))
    paper = 1.0 / (1.0 + torch.exp(-(intensity - shift)))  # eq. (1), increasing in the prediction
    assert torch.allclose(probability, paper, atol=1e-6)


def test_distance_method_takes_the_pretrained_rows_on_its_foreground_channel_only(tmp_path):
    pretrained = small("unet", 1, seed=1)
    run = fake_run(tmp_path / "isl", pretrained, regression_state())
    model = small("unet", 2, seed=2)
    fresh_distance_row = model.head.weight[0].clone()
    report = transfer_weights(model, run, build_instance_task("distance"))
    assert report.head == "shifted-sigmoid"
    assert torch.equal(model.head.weight[1], pretrained.head.weight[0])
    assert torch.equal(model.head.weight[0], fresh_distance_row)
    assert float(model.head.bias[1].detach()) == pytest.approx(float(pretrained.head.bias[0].detach()) - 0.5)


def test_auto_keeps_a_fresh_head_where_the_shift_does_not_apply(tmp_path):
    run = fake_run(tmp_path / "isl", small("unet", 1, seed=1), regression_state())
    model = small("unet", 3, seed=2)
    fresh = model.head.weight.clone()
    report = transfer_weights(model, run, build_instance_task("border"))
    assert report.head == "fresh" and report.copied == report.total - 2
    assert torch.equal(model.head.weight, fresh)
    with pytest.raises(FluosegError, match="shifted-sigmoid"):
        transfer_weights(small("unet", 3, seed=2), run, build_instance_task("border"), head="shifted-sigmoid")
    with pytest.raises(FluosegError, match="'copy'"):
        transfer_weights(small("unet", 3, seed=2), run, build_instance_task("border"), head="copy")


def test_same_task_copies_the_head_and_fresh_is_honoured(tmp_path):
    source = small("unet", 2, seed=1)
    run = fake_run(tmp_path / "sem", source, SemanticTask(["a", "b"], loss="bce").state())
    model = small("unet", 2, seed=2)
    assert transfer_weights(model, run, SemanticTask(["a", "b"], loss="bce")).head == "copy"
    assert torch.equal(model.head.weight, source.head.weight)
    model = small("unet", 2, seed=2)
    fresh = model.head.weight.clone()
    assert transfer_weights(model, run, SemanticTask(["a", "b"], loss="bce"), head="fresh").head == "fresh"
    body = next(k for k in source.state_dict() if not k.startswith("head."))
    assert torch.equal(model.head.weight, fresh) and torch.equal(model.state_dict()[body], source.state_dict()[body])


def test_resolve_head_mode_rules():
    regression, sigmoid1 = regression_state(), SemanticTask(["x"], loss="bce")
    assert resolve_head_mode("auto", regression, sigmoid1, same_shape=True) == "shifted-sigmoid"
    assert resolve_head_mode("auto", regression_state(("a", "b")), sigmoid1, same_shape=False) == "fresh"
    assert resolve_head_mode("auto", regression, SemanticTask(["x"]), same_shape=False) == "fresh"  # softmax ce-log
    assert resolve_head_mode("auto", regression, RegressionTask(["DNA"]), same_shape=True) == "copy"
    with pytest.raises(FluosegError, match="init_head"):
        resolve_head_mode("newest", regression, sigmoid1, same_shape=True)
    assert sigmoid_shift({"normalization": "percentile"}) == 0.5 and sigmoid_shift({}) == 0.0


def test_errors_name_the_run(tmp_path):
    with pytest.raises(FluosegError, match="run.json"):
        transfer_weights(small("unet", 1, 0), tmp_path, SemanticTask(["x"], loss="bce"))
    run = fake_run(tmp_path / "other", small("fcn", 1, seed=1), regression_state())
    with pytest.raises(FluosegError, match="no weight matches"):
        transfer_weights(small("unet", 1, 0), run, SemanticTask(["x"], loss="bce"))
