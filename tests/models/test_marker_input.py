"""Tests of fluoseg.models.marker_input: Marker Zero, Marker Sampling (MS, MS-DR, MS-VR), the registry."""

from __future__ import annotations

import json

import pytest
import torch

from fluoseg.errors import FluosegError
from fluoseg.models import (
    MarkerInput,
    MarkerSampling,
    MarkerSamplingDropout,
    MarkerSamplingVariableRatio,
    MarkerZero,
    build_marker_input,
    build_model,
    marker_input_names,
    model_spec,
)
from fluoseg.models.marker_input import MARKER_INPUTS, mask_missing, register_marker_input, sample_markers
from fluoseg.models.registry import ATTENTION, register_attention


def test_mz_is_registered_and_built_by_name():
    assert "mz" in marker_input_names()
    layer = build_marker_input("mz", n_markers=3)
    assert isinstance(layer, MarkerZero) and layer.n_markers == 3


def test_unknown_layer_and_option_are_user_errors():
    with pytest.raises(FluosegError, match=r"unknown marker input layer 'ms-xx'.*'mz'"):
        build_marker_input("ms-xx", n_markers=3)
    with pytest.raises(FluosegError, match=r"unknown option 'r_drop'"):
        build_marker_input("mz", n_markers=3, r_drop=0.5)
    with pytest.raises(FluosegError, match="marker input layer"):
        build_model("unet", in_channels=2, out_channels=1, marker_input="nope")


def test_mz_keeps_available_slots_and_zeroes_missing_ones():
    x = torch.randn(2, 3, 4, 4)
    availability = torch.tensor([[1.0, 0.0, 1.0], [1.0, 1.0, 1.0]])
    y, returned = MarkerZero(3)(x, availability)
    assert returned is availability
    torch.testing.assert_close(y[0, [0, 2]], x[0, [0, 2]])
    assert torch.all(y[0, 1] == 0)
    torch.testing.assert_close(y[1], x[1])


def test_mz_is_identity_on_zero_filled_slots():
    x = torch.randn(1, 3, 4, 4)
    x[:, 1] = 0
    availability = torch.tensor([[1.0, 0.0, 1.0]])
    y, _ = MarkerZero(3)(x, availability)
    assert torch.equal(y, x)


def test_base_class_must_be_subclassed():
    with pytest.raises(NotImplementedError):
        MarkerInput(2)(torch.zeros(1, 2, 1, 1), torch.ones(1, 2))


def test_a_sampling_layer_plugs_into_the_unet_and_its_availability_reaches_attention():
    """The extension path of Marker Sampling + Marker Excite: sample at training time only,
    and hand the sampled availability to the attention hooks."""

    @register_marker_input("_test_drop_first")
    class DropFirst(MarkerInput):
        def __init__(self, n_markers: int, *, slot: int = 0) -> None:
            super().__init__(n_markers)
            self.slot = slot

        def forward(self, x, availability):
            if self.training:
                availability = availability.clone()
                availability[:, self.slot] = 0
            return mask_missing(x, availability), availability

    seen: list[torch.Tensor] = []

    @register_attention("_test_record")
    class Record(torch.nn.Module):
        def __init__(self, channels: int, n_markers: int) -> None:
            super().__init__()

        def forward(self, features, availability):
            seen.append(availability)
            return features

    try:
        net = build_model(
            "unet", in_channels=2, out_channels=1, depth=1, base_filters=2,
            marker_input="_test_drop_first", marker_input_options={"slot": 1}, attention="_test_record",
        )
        x = torch.randn(1, 2, 20, 20)
        net.train()
        net(x)
        assert all(torch.equal(a, torch.tensor([[1.0, 0.0]])) for a in seen) and len(seen) == 3
        seen.clear()
        net.eval()
        net(x)
        assert all(torch.equal(a, torch.ones(1, 2)) for a in seen)
    finally:
        MARKER_INPUTS.unregister("_test_drop_first")
        ATTENTION.unregister("_test_record")


# --- Marker Sampling -------------------------------------------------------------------


def heterogeneous_availability(n: int, k: int, generator: torch.Generator) -> torch.Tensor:
    """Random panels with at least one marker per sample, plus one sample with none."""
    availability = (torch.rand(n, k, generator=generator) < 0.6).float()
    availability[torch.arange(n), torch.randint(k, (n,), generator=generator)] = 1.0
    availability[0] = 0.0
    return availability


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("r_drop", [0.5, 0.9])
def test_ms_drops_only_present_markers_and_never_all_of_them(k, r_drop):
    generator = torch.Generator().manual_seed(k)
    availability = heterogeneous_availability(2000, k, generator)
    torch.manual_seed(0)
    kept = sample_markers(availability, r_drop)
    assert kept.dtype == availability.dtype and set(kept.unique().tolist()) <= {0.0, 1.0}
    assert torch.all(kept <= availability)  # only present markers can be kept
    assert torch.all(kept[1:].sum(dim=1) >= 1)  # every sample keeps one of its markers
    assert torch.all(kept[0] == 0)  # a sample without markers has nothing to keep
    if r_drop == 0.5 and k > 1:
        assert torch.any(kept != availability)  # something was dropped


def test_ms_rate_matches_r_drop_and_is_unbiased_across_markers():
    k, n, r_drop = 5, 40_000, 0.3
    torch.manual_seed(1)
    kept = sample_markers(torch.ones(n, k), r_drop)
    # Each marker is kept with probability 1 - r_drop, conditioned on keeping at least one.
    expected = (1 - r_drop) / (1 - r_drop**k)
    per_marker = kept.mean(dim=0)
    assert torch.allclose(per_marker, torch.full((k,), expected), atol=0.015), per_marker


def test_ms_at_half_rate_samples_every_combination_equally_often():
    """The paper's reason for r_drop = 0.5: all 2^K - 1 marker combinations equally likely."""
    k, n = 3, 21_000
    torch.manual_seed(2)
    kept = sample_markers(torch.ones(n, k), 0.5)
    codes = (kept * torch.tensor([1.0, 2.0, 4.0])).sum(dim=1).long()
    frequencies = torch.bincount(codes, minlength=8).float() / n
    assert frequencies[0] == 0
    assert torch.allclose(frequencies[1:], torch.full((7,), 1 / 7), atol=0.012), frequencies


def test_ms_samples_within_each_samples_own_panel():
    availability = torch.tensor([[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 1.0, 1.0]]).repeat(3000, 1)
    torch.manual_seed(3)
    kept = sample_markers(availability, 0.5)
    first, second = kept[0::2], kept[1::2]
    assert torch.all(first[:, [1, 3]] == 0) and torch.all(second[:, 0] == 0)
    # Of a two-marker panel, each of the 3 non-empty subsets has probability 1/3.
    assert abs(first[:, 0].mean().item() - 2 / 3) < 0.03 and abs(first[:, 2].mean().item() - 2 / 3) < 0.03


def test_ms_layer_zeroes_dropped_slots_and_reports_them():
    layer = MarkerSampling(4, r_drop=0.5).train()
    x = torch.randn(64, 4, 3, 3)
    availability = torch.ones(64, 4)
    availability[:, 3] = 0
    x[:, 3] = 0
    torch.manual_seed(4)
    y, kept = layer(x, availability)
    assert torch.all(kept <= availability) and torch.all(kept.sum(dim=1) >= 1)
    assert torch.equal(y, x * kept[:, :, None, None])


def test_ms_is_reproducible_with_the_global_seed():
    layer = MarkerSampling(5).train()
    x, availability = torch.randn(16, 5, 2, 2), torch.ones(16, 5)
    torch.manual_seed(5)
    first = layer(x, availability)
    torch.manual_seed(5)
    second = layer(x, availability)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


@pytest.mark.parametrize("name", ["ms", "ms-dr"])
def test_ms_and_ms_dr_are_marker_zero_at_inference(name):
    layer = build_marker_input(name, n_markers=3, r_drop=0.5).eval()
    x = torch.randn(8, 3, 4, 4)
    availability = torch.ones(8, 3)
    availability[::2, 1] = 0
    torch.manual_seed(6)
    y, returned = layer(x, availability)
    assert torch.equal(returned, availability)
    assert torch.equal(y, mask_missing(x, availability))


def test_ms_with_zero_rate_is_marker_zero_at_training():
    x, availability = torch.randn(4, 3, 2, 2), torch.tensor([[1.0, 0.0, 1.0]]).repeat(4, 1)
    y, returned = MarkerSampling(3, r_drop=0.0).train()(x, availability)
    assert torch.equal(returned, availability) and torch.equal(y, mask_missing(x, availability))


def test_ms_dr_scales_kept_markers_by_the_inverse_keep_probability_at_training_only():
    r_drop = 0.25
    layer = MarkerSamplingDropout(5, r_drop=r_drop).train()
    x, availability = torch.rand(32, 5, 2, 2) + 0.5, torch.ones(32, 5)
    torch.manual_seed(7)
    y, kept = layer(x, availability)
    torch.testing.assert_close(y, x * kept[:, :, None, None] / (1 - r_drop))
    y_eval, _ = layer.eval()(x, availability)
    assert torch.equal(y_eval, x)


def test_ms_vr_scales_by_the_inverse_ratio_of_markers_received_at_training_and_inference():
    k = 5
    layer = MarkerSamplingVariableRatio(k, r_drop=0.5).train()
    x, availability = torch.rand(32, k, 2, 2) + 0.5, torch.ones(32, k)
    availability[:, 4] = 0
    torch.manual_seed(8)
    y, kept = layer(x, availability)
    ratio = kept.sum(dim=1) / k  # p: the markers the network receives, relative to the panel
    torch.testing.assert_close(y, x * kept[:, :, None, None] / ratio[:, None, None, None])
    layer.eval()
    y_eval, returned = layer(x, availability)
    assert torch.equal(returned, availability)
    torch.testing.assert_close(y_eval, mask_missing(x, availability) * k / 4)  # 4 of 5 present
    # The same subset is scaled the same way whether sampled at training or given at inference.
    torch.testing.assert_close(layer(x[:3], kept[:3])[0], y[:3])
    # A sample without markers stays zeros instead of becoming NaN.
    assert torch.equal(layer(x[:1], torch.zeros(1, k))[0], torch.zeros_like(x[:1]))


@pytest.mark.parametrize("r_drop", [1.0, -0.1, 1.5, "0.5", True, None])
def test_invalid_drop_rate_is_a_user_error(r_drop):
    for name in ("ms", "ms-dr", "ms-vr"):
        with pytest.raises(FluosegError, match="r_drop"):
            build_marker_input(name, n_markers=3, r_drop=r_drop)


@pytest.mark.parametrize("name", ["ms", "ms-dr", "ms-vr"])
def test_sampling_layers_are_selected_by_unet_options_and_round_trip(name):
    net = build_model("unet", in_channels=3, out_channels=2, depth=2, base_filters=4,
                      marker_input=name, marker_input_options={"r_drop": 0.3})
    assert type(net.marker_input) is {"ms": MarkerSampling, "ms-dr": MarkerSamplingDropout,
                                      "ms-vr": MarkerSamplingVariableRatio}[name]
    assert net.marker_input.r_drop == 0.3
    spec = model_spec(net)
    assert spec["options"]["marker_input"] == name and spec["options"]["marker_input_options"] == {"r_drop": 0.3}
    rebuilt = build_model(**json.loads(json.dumps(spec)))
    rebuilt.load_state_dict(net.state_dict())
    x = torch.randn(2, 3, 44, 44)
    torch.manual_seed(9)
    net.train()(x).sum().backward()
    assert all(p.grad is not None for p in net.parameters())
    net.eval(), rebuilt.eval()
    torch.testing.assert_close(rebuilt(x), net(x))


def test_unet_with_ms_trains_on_sampled_inputs_and_predicts_deterministically():
    net = build_model("unet", in_channels=3, out_channels=1, depth=1, base_filters=2, marker_input="ms")
    x = torch.rand(1, 3, 20, 20) + 0.5
    net.train()
    outputs = set()
    for seed in range(12):
        torch.manual_seed(seed)
        outputs.add(tuple(net(x).flatten()[:4].tolist()))
    assert len(outputs) > 1  # different marker subsets were sampled
    net.eval()
    assert torch.equal(net(x), net(x))
