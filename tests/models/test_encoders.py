"""Tests of fluoseg.models.encoders: torchvision-compatible ResNet/DenseNet encoders."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fluoseg.errors import FluosegError
from fluoseg.models.encoders import AtrousAvgPool, build_encoder, encoder_names

# torchvision's parameter counts minus the ImageNet classifier (fc / classifier).
TORCHVISION_PARAMETERS = {
    "resnet18": 11_689_512 - 513_000,
    "resnet34": 21_797_672 - 513_000,
    "resnet50": 25_557_032 - 2_049_000,
    "resnet101": 44_549_160 - 2_049_000,
    "densenet121": 7_978_856 - 1_025_000,
}


def on_meta(name: str, **options) -> nn.Module:
    """An encoder without memory or initialisation cost, for counting and naming."""
    with torch.device("meta"):
        return build_encoder(name, **{"in_channels": 3, **options})


def test_names():
    assert encoder_names() == ["densenet121", "resnet101", "resnet18", "resnet34", "resnet50"]


@pytest.mark.parametrize("name", sorted(TORCHVISION_PARAMETERS))
def test_parameter_counts_match_torchvision(name):
    encoder = on_meta(name)
    assert sum(p.numel() for p in encoder.parameters()) == TORCHVISION_PARAMETERS[name]


def test_resnet_names_and_shapes_follow_torchvision():
    state = on_meta("resnet50").state_dict()
    expected = {
        "conv1.weight": (64, 3, 7, 7),
        "bn1.running_mean": (64,),
        "layer1.0.conv1.weight": (64, 64, 1, 1),
        "layer1.0.downsample.0.weight": (256, 64, 1, 1),
        "layer1.0.downsample.1.running_var": (256,),
        "layer2.0.conv2.weight": (128, 128, 3, 3),
        "layer3.5.bn3.weight": (1024,),
        "layer4.2.conv3.weight": (2048, 512, 1, 1),
    }
    for key, shape in expected.items():
        assert tuple(state[key].shape) == shape, key
    assert not any(key.startswith(("fc.", "avgpool")) for key in state)
    resnet101 = on_meta("resnet101").state_dict()
    assert "layer3.22.conv3.weight" in resnet101 and "layer3.23.conv1.weight" not in resnet101
    resnet34 = on_meta("resnet34").state_dict()
    assert "layer2.0.downsample.0.weight" in resnet34 and "layer1.0.downsample.0.weight" not in resnet34


def test_resnet_v1_5_strides_on_the_3x3_convolution():
    encoder = on_meta("resnet50")
    assert encoder.layer2[0].conv1.stride == (1, 1) and encoder.layer2[0].conv2.stride == (2, 2)


def test_densenet_names_and_shapes_follow_torchvision():
    state = on_meta("densenet121").state_dict()
    expected = {
        "features.conv0.weight": (64, 3, 7, 7),
        "features.norm0.weight": (64,),
        "features.denseblock1.denselayer1.norm1.weight": (64,),
        "features.denseblock1.denselayer1.conv1.weight": (128, 64, 1, 1),
        "features.denseblock1.denselayer6.conv2.weight": (32, 128, 3, 3),
        "features.transition1.norm.running_mean": (256,),
        "features.transition1.conv.weight": (128, 256, 1, 1),
        "features.denseblock4.denselayer16.norm1.weight": (992,),
        "features.norm5.bias": (1024,),
    }
    for key, shape in expected.items():
        assert tuple(state[key].shape) == shape, key
    assert not any(key.startswith("classifier") for key in state)


@pytest.mark.parametrize(
    ("name", "channels"),
    [("resnet18", (64, 64, 128, 256, 512)), ("resnet50", (64, 256, 512, 1024, 2048)),
     ("densenet121", (64, 256, 512, 1024, 1024))],
)
@pytest.mark.parametrize("in_channels", [1, 5])
def test_features_at_five_scales_for_any_input_channels(name, channels, in_channels):
    encoder = build_encoder(name, in_channels=in_channels).eval()
    assert encoder.feature_channels == channels
    assert encoder.feature_strides == (2, 4, 8, 16, 32) and encoder.output_stride == 32
    with torch.inference_mode():
        features = encoder(torch.randn(2, in_channels, 64, 64))
    expected = [(2, c, 64 // s, 64 // s) for c, s in zip(channels, encoder.feature_strides)]
    assert [tuple(f.shape) for f in features] == expected


@pytest.mark.parametrize("name", ["resnet18", "densenet121"])
def test_no_stem_downsampling_keeps_full_resolution_and_the_keys(name):
    plain = build_encoder(name, in_channels=2)
    lacss = build_encoder(name, in_channels=2, stem_stride=1).eval()
    assert lacss.feature_strides == (1, 1, 2, 4, 8) and lacss.output_stride == 8
    assert list(lacss.state_dict()) == list(plain.state_dict())  # ImageNet weights still load
    assert not any(isinstance(m, nn.MaxPool2d) for m in lacss.modules())
    with torch.inference_mode():
        features = lacss(torch.randn(1, 2, 32, 32))
    assert [f.shape[-1] for f in features] == [32, 32, 16, 8, 4]


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "densenet121"])
@pytest.mark.parametrize("output_stride", [16, 8])
def test_dilation_computes_the_strided_network_on_a_finer_grid(name, output_stride):
    # À trous: same weights, stride replaced by dilation -> the strided network's values
    # are the dilated network's values at every (32 / output_stride)-th position.
    torch.manual_seed(0)
    plain = build_encoder(name, in_channels=3).eval()
    dilated = build_encoder(name, in_channels=3, output_stride=output_stride).eval()
    dilated.load_state_dict(plain.state_dict())
    step = 32 // output_stride
    expected_strides = (2, 4, 8, 16, 16) if output_stride == 16 else (2, 4, 8, 8, 8)
    assert dilated.feature_strides == expected_strides
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        coarse, fine = plain(x)[-1], dilated(x)[-1]
    assert fine.shape[-1] == 64 // output_stride
    torch.testing.assert_close(fine[..., ::step, ::step], coarse, rtol=1e-4, atol=1e-4)


def test_atrous_average_pool_matches_strided_pool_on_its_grid():
    x = torch.randn(1, 2, 8, 8)
    strided = nn.AvgPool2d(2, stride=2)(x)
    torch.testing.assert_close(AtrousAvgPool(1)(x)[..., ::2, ::2], strided)
    assert AtrousAvgPool(3)(x).shape == x.shape


def test_dilated_resnet_uses_dilation_in_the_last_stages():
    encoder = on_meta("resnet50", output_stride=8)
    assert encoder.layer3[0].conv2.stride == (1, 1) and encoder.layer3[0].conv2.dilation == (1, 1)
    assert encoder.layer3[1].conv2.dilation == (2, 2)
    assert encoder.layer4[0].conv2.dilation == (2, 2) and encoder.layer4[2].conv2.dilation == (4, 4)
    assert encoder.layer4[0].downsample[0].stride == (1, 1)


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("resnet152", {}, "unknown encoder 'resnet152'.*resnet101"),
        ("resnet18", {"stem_stride": 4}, "stem_stride"),
        ("resnet18", {"stem_stride": True}, "stem_stride"),
        ("resnet18", {"output_stride": 12}, r"output_stride must be one of \[8, 16, 32\]"),
        ("resnet18", {"stem_stride": 1, "output_stride": 16}, r"\[2, 4, 8\]"),
        ("densenet121", {"in_channels": 0}, "in_channels"),
    ],
)
def test_invalid_options_are_user_errors(name, options, message):
    with pytest.raises(FluosegError, match=message):
        build_encoder(name, **{"in_channels": 3, **options})
