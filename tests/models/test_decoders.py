"""Tests of the encoder networks: unet-encoder, unetpp, fcn and deeplabv3."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from fluoseg.errors import FluosegError
from fluoseg.models import build_model, count_parameters, model_names, model_spec
from fluoseg.tiling import geometry_for
from fluoseg.tasks.segmentation_losses import build_loss

ARCHITECTURES = ("unet-encoder", "unetpp", "fcn", "deeplabv3")


def small(name: str, in_channels: int = 2, out_channels: int = 2, **options) -> nn.Module:
    return build_model(name, in_channels=in_channels, out_channels=out_channels, **{"encoder": "resnet18", **options})


def count_on_meta(name: str, in_channels: int, out_channels: int, **options) -> int:
    with torch.device("meta"):
        return count_parameters(build_model(name, in_channels=in_channels, out_channels=out_channels, **options))


def test_registered():
    assert set(ARCHITECTURES) <= set(model_names())


@pytest.mark.parametrize(
    ("name", "options", "reference"),
    [
        # segmentation_models_pytorch.Unet("resnet34", classes=1)
        ("unet-encoder", {"encoder": "resnet34"}, (3, 1, 24_436_369)),
        # torchvision fcn_resnet101 / deeplabv3_resnet101 (21 classes) without their aux head
        ("fcn", {"encoder": "resnet101"}, (3, 21, 54_314_346 - 2_365_205)),
        ("deeplabv3", {"encoder": "resnet101"}, (3, 21, 60_996_202 - 2_365_205)),
        ("deeplabv3", {"encoder": "resnet50"}, (3, 21, 42_004_074 - 2_365_205)),
    ],
)
def test_parameter_counts_match_the_reference_implementations(name, options, reference):
    in_channels, out_channels, parameters = reference
    assert count_on_meta(name, in_channels, out_channels, **options) == parameters


def test_head_names_follow_torchvision():
    fcn = dict(small("fcn").named_parameters())
    assert {"classifier.0.weight", "classifier.1.weight", "classifier.4.weight", "classifier.4.bias"} <= set(fcn)
    deeplab = dict(small("deeplabv3").named_parameters())
    for key in ("classifier.0.convs.0.0.weight", "classifier.0.convs.3.0.weight", "classifier.0.convs.4.1.weight",
                "classifier.0.project.0.weight", "classifier.1.weight", "classifier.4.bias"):
        assert key in deeplab


@pytest.mark.parametrize("name", ARCHITECTURES)
@pytest.mark.parametrize("in_channels", [1, 3, 5])
def test_trains_with_marker_sampling(name, in_channels):
    torch.manual_seed(0)
    options = {"deep_supervision": True} if name == "unetpp" else {}
    model = small(name, in_channels, 2, marker_input="ms", **options)
    assert model.padding == "same" and model.in_channels == in_channels and model.out_channels == 2
    loss_fn = build_loss("bce-dice")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randn(2, in_channels, 64, 64)
    availability = torch.ones(2, in_channels)
    availability[1, 0] = 0.0 if in_channels > 1 else 1.0
    target = (torch.rand(2, 2, 64, 64) > 0.7).float()
    head_before = [p.detach().clone() for p in model.parameters()][-1]
    losses = []
    for _ in range(2):
        optimizer.zero_grad()
        logits = model(x, availability)
        loss = loss_fn(logits, target)
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        optimizer.step()
        losses.append(float(loss.detach()))
    assert all(torch.isfinite(torch.tensor(losses)))
    assert not torch.equal([p.detach() for p in model.parameters()][-1], head_before)
    model.eval()
    with torch.inference_mode():
        assert model(x, availability).shape == (2, 2, 64, 64)
        assert model(x).shape == (2, 2, 64, 64)  # availability defaults to all present


@pytest.mark.parametrize("encoder", ["resnet34", "resnet50", "densenet121"])
def test_every_encoder_under_the_unet(encoder):
    model = build_model("unet-encoder", in_channels=3, out_channels=4, encoder=encoder).eval()
    with torch.inference_mode():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 4, 64, 64)


def test_resnet101_trains_one_step():
    # The transfer-learning study's encoder; one architecture suffices, the others share the code.
    model = build_model("unetpp", in_channels=5, out_channels=2, encoder="resnet101")
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    loss = build_loss("bce", pos_weight=9.0)(model(torch.randn(2, 5, 64, 64)), torch.zeros(2, 2, 64, 64))
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)


@pytest.mark.parametrize(
    ("name", "options", "stride"),
    [
        ("unet-encoder", {}, 32),
        ("unetpp", {}, 32),
        ("unet-encoder", {"stem_stride": 1}, 8),
        ("unetpp", {"stem_stride": 1}, 8),
        ("fcn", {}, 8),
        ("fcn", {"output_stride": 32}, 32),
        ("deeplabv3", {"output_stride": 16}, 16),
        ("deeplabv3", {"stem_stride": 1}, 8),
    ],
)
def test_admissible_sizes_are_multiples_of_the_total_stride(name, options, stride):
    model = small(name, **options)
    assert model.total_stride == stride
    assert model.output_size(4 * stride) == 4 * stride
    assert model.valid_input_size(1) == stride and model.valid_input_size(stride + 1) == 2 * stride
    assert model.valid_input_size(3 * stride) == 3 * stride
    for size in (stride + 1, 0, -stride):
        with pytest.raises(ValueError, match="not admissible"):
            model.output_size(size)
    geometry = geometry_for(model, 100)
    assert geometry.mode == "same" and geometry.input_size == geometry.output_size
    assert geometry.alignment == stride and geometry.input_size % stride == 0


@pytest.mark.parametrize("name", ["unet-encoder", "unetpp"])
def test_no_stem_downsampling_runs_at_full_resolution(name):
    model = small(name, stem_stride=1).eval()
    assert model.encoder.feature_strides == (1, 1, 2, 4, 8)
    with torch.inference_mode():
        assert model(torch.randn(1, 2, 40, 48)).shape == (1, 2, 40, 48)


def test_inadmissible_input_is_refused():
    model = small("unet-encoder").eval()
    with pytest.raises(ValueError, match="multiple of 32"):
        model(torch.randn(1, 2, 64, 70))
    with pytest.raises(ValueError, match="expected input"):
        model(torch.randn(1, 3, 64, 64))
    with pytest.raises(ValueError, match="availability"):
        model(torch.randn(1, 2, 64, 64), torch.ones(1, 3))


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_missing_markers_are_zeroed_by_the_marker_input_layer(name):
    model = small(name, 3).eval()
    x = torch.randn(1, 3, 64, 64)
    availability = torch.tensor([[1.0, 0.0, 1.0]])
    garbage = x.clone()
    garbage[:, 1] = 100.0
    zeros = x.clone()
    zeros[:, 1] = 0.0
    with torch.inference_mode():
        torch.testing.assert_close(model(garbage, availability), model(zeros, availability))


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("unet-encoder", {"decoder_channels": [64, 32, 16, 16, 8]}),
        ("unetpp", {"deep_supervision": True, "stem_stride": 1}),
        ("fcn", {"output_stride": 16, "dropout": 0.2}),
        ("deeplabv3", {"output_stride": 16, "atrous_rates": [2, 4, 6], "marker_input": "ms-vr"}),
    ],
)
def test_spec_round_trips(name, options):
    model = small(name, 3, 2, **options).eval()
    spec = json.loads(json.dumps(model_spec(model)))
    assert spec["name"] == name and spec["options"]["encoder"] == "resnet18"
    assert spec["options"]["encoder_weights"] is None
    for key, value in options.items():
        assert spec["options"][key] == value
    rebuilt = build_model(**spec).eval()
    rebuilt.load_state_dict(model.state_dict())
    assert model_spec(rebuilt) == spec
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(rebuilt(x), model(x))


def test_unetpp_nodes_and_deep_supervision():
    model = small("unetpp", deep_supervision=True)
    assert sorted(model.nodes) == sorted(f"x_{i}_{j}" for j in range(1, 5) for i in range(5 - j))
    assert len(model.heads) == 4
    x = torch.randn(2, 2, 64, 64)
    outputs = model(x)
    assert isinstance(outputs, list) and [o.shape for o in outputs] == [(2, 2, 64, 64)] * 4
    model.eval()
    with torch.inference_mode():
        single = model(x)
        model.training = True  # top-level flag only: list output, normalisation still in eval mode
        heads = model(x)
        model.training = False
    torch.testing.assert_close(single, torch.stack(heads).mean(dim=0))
    plain = small("unetpp")
    assert len(plain.heads) == 1 and isinstance(plain(x), torch.Tensor)


def test_unetpp_contains_the_unet_decoder_path():
    unet, unetpp = small("unet-encoder"), small("unetpp")
    # X^{i, 4-i} takes the same inputs as the U-Net decoder block of level i, plus the dense skips.
    assert unetpp.nodes["x_3_1"].conv1[0].in_channels == unet.blocks[0].conv1[0].in_channels
    assert unetpp.nodes["x_0_4"].conv1[0].in_channels == unet.blocks[3].conv1[0].in_channels + 3 * 32


def test_deeplab_rates_and_batch_of_one():
    assert small("deeplabv3", output_stride=16).atrous_rates == (6, 12, 18)
    model = small("deeplabv3")
    assert model.atrous_rates == (12, 24, 36)
    assert model.classifier[0].convs[1][0].dilation == (12, 12)
    logits = model(torch.randn(1, 2, 64, 64))  # the image-pooling branch has one value per channel
    logits.mean().backward()
    assert logits.shape == (1, 2, 64, 64)


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("unet-encoder", {"encoder": "vgg16"}, "unknown encoder 'vgg16'"),
        ("unet-encoder", {"decoder_channels": [16, 8]}, "decoder_channels"),
        ("unetpp", {"deep_supervision": "yes"}, "deep_supervision"),
        ("fcn", {"output_stride": 12}, "output_stride"),
        ("fcn", {"dropout": 1.0}, "dropout"),
        ("deeplabv3", {"output_stride": 32}, "output_stride' must be 8 or 16"),
        ("deeplabv3", {"stem_stride": 1, "output_stride": 16}, "output_stride"),
        ("deeplabv3", {"atrous_rates": "6,12"}, "atrous_rates"),
        ("unet-encoder", {"encoder_weights": 3}, "encoder_weights"),
        ("unet-encoder", {"marker_input": "mx"}, "marker input"),
        ("fcn", {"output_strid": 8}, "unknown option 'output_strid'"),
    ],
)
def test_invalid_options_are_user_errors(name, options, message):
    with pytest.raises(FluosegError, match=message):
        build_model(name, in_channels=2, out_channels=1, **options)
