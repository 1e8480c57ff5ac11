"""Tests of fluoseg.models.attention: SE, Marker Excite, their placement, MS+ width, Supp. Fig. 6."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fluoseg.errors import FluosegError
from fluoseg.models import (
    MarkerExcite,
    SqueezeExcitation,
    UNet,
    attention_names,
    availability_vectors,
    build_attention,
    build_model,
    count_parameters,
    me_layer_outputs,
    mean_pairwise_cosine_distance,
    model_spec,
    widened_base_filters,
)
from fluoseg.models.attention import pairwise_cosine_distances
from fluoseg.models.unet import NoAttention


def tiny(**options) -> UNet:
    options = {"in_channels": 3, "out_channels": 2, "depth": 2, "base_filters": 4, **options}
    return build_model("unet", **options)


def hooks(net: UNet) -> dict[str, torch.nn.Module]:
    return {name: module for name, module in net.named_modules() if name.endswith("hook")}


# --- Squeeze-and-Excitation -------------------------------------------------------------


def test_se_is_two_bias_free_layers_f_half_and_f():
    se = build_attention("se", channels=8, n_markers=3)
    assert isinstance(se, SqueezeExcitation) and "se" in attention_names()
    assert se.squeeze.weight.shape == (4, 8) and se.excite.weight.shape == (8, 4)
    assert se.squeeze.bias is None and se.excite.bias is None
    assert count_parameters(se) == 8 * 8


def test_se_weights_depend_on_the_image_not_on_availability():
    torch.manual_seed(0)
    se = SqueezeExcitation(6, 2)
    features = torch.rand(2, 6, 5, 5)
    other = torch.rand(2, 6, 5, 5) * 3
    assert not torch.allclose(se.weights(features), se.weights(other))
    out = se(features, torch.tensor([[1.0, 0.0], [1.0, 1.0]]))
    torch.testing.assert_close(out, features * se.weights(features)[:, :, None, None])
    torch.testing.assert_close(se(features, torch.ones(2, 2)), out)


def test_se_reduction_option():
    assert SqueezeExcitation(8, 1, reduction=4).squeeze.out_features == 2
    assert SqueezeExcitation(1, 1).squeeze.out_features == 1
    with pytest.raises(FluosegError, match="reduction"):
        tiny(attention="se", attention_options={"reduction": 0})


# --- Marker Excite ---------------------------------------------------------------------


def test_me_has_2k_minus_1_hidden_units_and_biases():
    me = build_attention("me", channels=8, n_markers=3)
    assert isinstance(me, MarkerExcite) and "me" in attention_names()
    assert me.squeeze.weight.shape == (7, 3) and me.excite.weight.shape == (8, 7)
    assert me.squeeze.bias is not None and me.excite.bias is not None
    assert count_parameters(me) == 3 * 7 + 7 + 7 * 8 + 8


def test_me_without_bias_has_no_bias_parameters():
    me = MarkerExcite(8, 3, bias=False)
    assert not any("bias" in name for name, _ in me.named_parameters())
    assert count_parameters(me) == 3 * 7 + 7 * 8
    net = tiny(attention="me", attention_options={"bias": False})
    assert not any("hook" in name and "bias" in name for name, _ in net.named_parameters())


def test_me_weights_change_with_availability_and_not_with_the_image():
    torch.manual_seed(1)
    me = MarkerExcite(6, 3)
    availability = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]])
    first, second = torch.rand(2, 6, 4, 4), torch.rand(2, 6, 4, 4) * 5 + 1
    # The per-channel factor out / in is the same for any image...
    factor_first = me(first, availability) / first
    factor_second = me(second, availability) / second
    torch.testing.assert_close(factor_first, factor_second)
    torch.testing.assert_close(factor_first[:, :, 0, 0], me.weights(availability))
    # ...and differs between marker combinations.
    assert not torch.allclose(me.weights(availability[:1]), me.weights(availability[1:]))


def test_me_hidden_option_and_large_panels():
    assert MarkerExcite(4, 3, hidden=5).squeeze.out_features == 5
    assert MarkerExcite(4, 12).squeeze.out_features == 4095
    with pytest.raises(FluosegError, match="hidden"):
        MarkerExcite(4, 13)
    assert MarkerExcite(4, 13, hidden=64).squeeze.out_features == 64
    for bad in ({"hidden": 0}, {"hidden": 2.5}, {"bias": "yes"}):
        with pytest.raises(FluosegError):
            tiny(attention="me", attention_options=bad)


def test_me_sees_the_availability_marker_sampling_kept():
    net = tiny(marker_input="ms", attention="me").train()
    seen = []
    net.bottleneck.hook.register_forward_hook(lambda module, inputs, output: seen.append(inputs[1]))
    sampled = []
    net.marker_input.register_forward_hook(lambda module, inputs, output: sampled.append(output[1]))
    torch.manual_seed(2)
    net(torch.randn(8, 3, 44, 44))
    assert torch.equal(seen[0], sampled[0])
    assert torch.any(sampled[0] != 1)  # something was dropped, and ME was told


# --- Placement in the U-Net ------------------------------------------------------------


@pytest.mark.parametrize("name, cls", [("se", SqueezeExcitation), ("me", MarkerExcite)])
def test_default_placement_is_encoder_bottleneck_decoder(name, cls):
    net = tiny(attention=name)
    assert net.attention_at == ("encoder", "bottleneck", "decoder")
    assert isinstance(net.encoders[0].hook, NoAttention)  # the input block is left out
    placed = [key for key, module in hooks(net).items() if isinstance(module, cls)]
    assert placed == ["encoders.1.hook", "bottleneck.hook", "decoders.0.hook", "decoders.1.hook"]
    assert model_spec(net)["options"]["attention_at"] is None
    with_input = tiny(attention=name, attention_at=["input", "encoder", "bottleneck", "decoder"])
    assert isinstance(with_input.encoders[0].hook, cls)
    only_decoder = tiny(attention=name, attention_at=["decoder"])
    assert sum(isinstance(m, cls) for m in hooks(only_decoder).values()) == 2


def test_unknown_attention_is_a_user_error_before_placement():
    with pytest.raises(FluosegError, match="unknown attention module 'mex'"):
        tiny(attention="mex")


@pytest.mark.parametrize("k", [1, 3, 5])
@pytest.mark.parametrize("name", ["se", "me"])
def test_ms_se_and_ms_me_build_train_and_round_trip(name, k):
    net = build_model("unet", in_channels=k, out_channels=2, depth=2, base_filters=4,
                      marker_input="ms", attention=name)
    x = torch.randn(2, k, 44, 44, requires_grad=True)
    torch.manual_seed(3)
    out = net.train()(x)
    assert out.shape == (2, 2, 4, 4)
    out.sum().backward()
    assert all(p.grad is not None for p in net.parameters())
    spec = json.loads(json.dumps(model_spec(net)))
    rebuilt = build_model(**spec)
    rebuilt.load_state_dict(net.state_dict())
    assert model_spec(rebuilt) == spec
    availability = torch.ones(2, k)
    availability[1, 0] = 0
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(x, availability), net.eval()(x, availability))


def test_attention_adds_few_parameters_to_the_ms_me_unet():
    """Supplementary Table 3: UNet 7.76 M, MS-SE 8.2 M, MS-ME 7.81 M (+0.6 %), MS+ > +20 %."""
    with torch.device("meta"):  # counts without allocating
        unet = count_parameters(build_model("unet", in_channels=5, out_channels=2))
        ms_se = count_parameters(build_model("unet", in_channels=5, out_channels=2, marker_input="ms", attention="se"))
        ms_me = count_parameters(build_model("unet", in_channels=5, out_channels=2, marker_input="ms", attention="me"))
    assert unet == 7_760_706
    # SE: F^2 per block over E+B+D, F in 64..512 and 256..32.
    assert ms_se - unet == sum(f * f for f in (64, 128, 256, 512, 256, 128, 64, 32)) == 435_200
    # ME: (5*31 + 31) + (31*F + F) per block.
    assert ms_me - unet == sum(186 + 32 * f for f in (64, 128, 256, 512, 256, 128, 64, 32)) == 47_568
    assert ms_me / unet - 1 < 0.0065


# --- MS+ width -------------------------------------------------------------------------


def test_widened_base_filters_is_the_narrowest_width_over_20_percent():
    assert widened_base_filters(32, 4, 5, 2) == 36

    def params(width: int) -> int:
        with torch.device("meta"):
            return count_parameters(UNet(3, 2, depth=2, base_filters=width))

    width = widened_base_filters(8, 2, 3, 2)
    assert params(width) > 1.2 * params(8) >= params(width - 1)
    assert widened_base_filters(8, 2, 3, 2, min_increase=0.0) == 9
    assert widened_base_filters(8, 2, 3, 2, min_increase=1.0) > width
    assert widened_base_filters(8, 2, 3, 2, norm="batch") >= 9
    with pytest.raises(FluosegError, match="min_increase"):
        widened_base_filters(8, 2, 3, 2, min_increase=-0.1)


# --- Supplementary Fig. 6 analysis -----------------------------------------------------


def test_availability_vectors_follow_the_panel_subset_order():
    vectors = availability_vectors(3)
    expected = [[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [1, 0, 1], [0, 1, 1], [1, 1, 1]]
    assert vectors.dtype == np.float32 and vectors.tolist() == expected
    assert availability_vectors(5).shape == (31, 5) and availability_vectors(1).tolist() == [[1.0]]


def test_me_layer_outputs_hold_each_module_for_every_combination():
    torch.manual_seed(4)
    net = tiny(marker_input="ms", attention="me")
    outputs = me_layer_outputs(net, 3)
    assert list(outputs) == ["encoders.1.hook", "bottleneck.hook", "decoders.0.hook", "decoders.1.hook"]
    assert {name: o.shape for name, o in outputs.items()} == {
        "encoders.1.hook": (7, 8), "bottleneck.hook": (7, 16), "decoders.0.hook": (7, 8), "decoders.1.hook": (7, 4)}
    expected = net.bottleneck.hook.weights(torch.from_numpy(availability_vectors(3))).detach().numpy()
    np.testing.assert_allclose(outputs["bottleneck.hook"], expected)
    with pytest.raises(FluosegError, match="no Marker Excite"):
        me_layer_outputs(tiny(attention="se"), 3)
    with pytest.raises(FluosegError, match="expect \\[3\\] markers, not 5"):
        me_layer_outputs(net, 5)


def test_mean_pairwise_cosine_distance():
    assert mean_pairwise_cosine_distance(np.ones((4, 3))) == pytest.approx(0.0, abs=1e-12)
    assert mean_pairwise_cosine_distance(np.eye(3)) == pytest.approx(1.0)
    rows = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]])
    distances = pairwise_cosine_distances(rows)  # pairs (0, 1), (0, 2), (1, 2)
    np.testing.assert_allclose(distances, [1 - 2**-0.5, 1.0, 1 - 2**-0.5])
    assert mean_pairwise_cosine_distance(rows) == pytest.approx((2 - 2**0.5 + 1) / 3)
    with pytest.raises(ValueError):
        mean_pairwise_cosine_distance(np.ones((1, 3)))
    torch.manual_seed(5)
    strength = {name: mean_pairwise_cosine_distance(o) for name, o in me_layer_outputs(tiny(attention="me"), 3).items()}
    assert all(0.0 < value < 1.0 for value in strength.values())
