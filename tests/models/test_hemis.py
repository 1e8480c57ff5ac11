"""Tests of fluoseg.models.hemis: backends, the mean/variance abstraction, sizes, HeMIS-MS."""

from __future__ import annotations

import json

import pytest
import torch

from fluoseg.errors import FluosegError
from fluoseg.models import HeMIS, HeMISMS, MarkerSampling, UNet, build_model, count_parameters, model_spec
from fluoseg.models.hemis import abstraction
from fluoseg.tiling import geometry_for


def tiny(name: str = "hemis", k: int = 3, **options) -> HeMIS:
    options = {"backend_filters": 3, "backend_layers": 2, "depth": 2, "base_filters": 4, **options}
    return build_model(name, in_channels=k, out_channels=2, **options)


SIZE = 48  # admissible for tiny(): the depth-2 frontend's 44 plus 4 trimmed by the backends


# --- Abstraction layer -----------------------------------------------------------------


def test_abstraction_is_invariant_to_the_order_of_the_present_maps():
    torch.manual_seed(0)
    features = torch.randn(4, 5, 3, 6, 6)
    availability = torch.tensor([[1.0, 1, 1, 1, 1], [1, 0, 1, 0, 1], [0, 0, 0, 1, 0], [0, 1, 1, 0, 0]])
    mean, variance = abstraction(features, availability)
    for permutation in (torch.tensor([4, 3, 2, 1, 0]), torch.tensor([2, 0, 4, 1, 3])):
        permuted = abstraction(features[:, permutation], availability[:, permutation])
        torch.testing.assert_close(permuted[0], mean)
        torch.testing.assert_close(permuted[1], variance)
    # Population moments over the present maps only.
    present = features[1, [0, 2, 4]]
    torch.testing.assert_close(mean[1], present.mean(dim=0))
    torch.testing.assert_close(variance[1], present.var(dim=0, unbiased=False))


def test_abstraction_of_one_marker_is_its_features_with_zero_variance():
    features = torch.randn(1, 3, 2, 4, 4)
    mean, variance = abstraction(features, torch.tensor([[0.0, 1.0, 0.0]]))
    torch.testing.assert_close(mean[0], features[0, 1])
    assert torch.all(variance == 0)


def test_abstraction_ignores_absent_maps_whatever_they_hold():
    features = torch.randn(2, 3, 2, 4, 4)
    availability = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    expected = abstraction(features, availability)
    features[:, 1] = float("inf")
    features[1] = float("nan")
    mean, variance = abstraction(features, availability)
    torch.testing.assert_close(mean, expected[0])
    torch.testing.assert_close(variance, expected[1])
    assert torch.all(mean[1] == 0) and torch.all(variance[1] == 0)  # no markers: zeros, not NaN


# --- The network -----------------------------------------------------------------------


def test_structure_backends_per_slot_with_separate_weights_and_a_unet_frontend():
    net = tiny(k=4, backend_filters=5, backend_layers=3)
    assert net.in_channels == 4 and net.out_channels == 2 and net.padding == "valid"
    assert len(net.backends) == 4
    convs = [m for m in net.backends[0] if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(1, 5), (5, 5), (5, 5)]
    assert net.backends[0][0].weight.data_ptr() != net.backends[1][0].weight.data_ptr()
    assert not torch.equal(net.backends[0][0].weight, net.backends[1][0].weight)
    assert isinstance(net.frontend, UNet) and net.frontend.in_channels == 10 and net.frontend.depth == 2


def test_sizes_account_for_the_backends():
    net = tiny()
    assert net.backend_shrink == 4
    assert net.output_size(SIZE) == net.frontend.output_size(SIZE - 4) == 4
    assert net.valid_input_size(1) == SIZE and net.valid_input_size(SIZE + 1) == SIZE + 4
    with pytest.raises(ValueError, match="not admissible"):
        net.output_size(SIZE - 4)
    geometry = geometry_for(net, 58)  # tiling derives its tiles from the network's sizes
    assert geometry.input_size == 60 and geometry.output_size == net.output_size(60) == 16
    with torch.no_grad():
        assert net(torch.randn(1, 3, 64, 52)).shape == (1, 2, 20, 8)
    same = tiny(padding="same")
    assert same.backend_shrink == 0 and same.output_size(16) == 16 and same.valid_input_size(13) == 16
    with torch.no_grad():
        assert same(torch.randn(2, 3, 16, 24)).shape == (2, 2, 16, 24)
    default = build_model("hemis", in_channels=5, out_channels=2)
    assert default.valid_input_size(572) == 576 and default.output_size(576) == 388


def test_works_with_one_marker_present():
    net = tiny().eval()
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        out = net(x, torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]))
    assert out.shape == (2, 2, 4, 4) and torch.isfinite(out).all()
    single = tiny(k=1).eval()
    with torch.no_grad():
        assert torch.isfinite(single(x[:, :1])).all()


@pytest.mark.parametrize("name", ["hemis", "hemis-ms"])
def test_absent_markers_do_not_influence_the_output(name):
    torch.manual_seed(1)
    net = tiny(name).eval()
    x = torch.randn(2, 3, SIZE, SIZE)
    availability = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    changed = x.clone()
    changed[0, 1] = torch.randn(SIZE, SIZE) * 10
    changed[1, [0, 2]] = 7.0
    with torch.no_grad():
        torch.testing.assert_close(net(changed, availability), net(x, availability))
        # ...and they are not simply treated as zero images, which would shift the moments.
        assert not torch.allclose(net(x, availability), net(x, torch.ones(2, 3)))


def test_a_mixed_batch_equals_its_samples_alone():
    """Backends skipped for a whole batch and masked per sample give the same result."""
    torch.manual_seed(2)
    net = tiny().eval()
    x = torch.randn(2, 3, SIZE, SIZE)
    availability = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]])
    with torch.no_grad():
        batch = net(x, availability)
        for i in range(2):
            torch.testing.assert_close(batch[i : i + 1], net(x[i : i + 1], availability[i : i + 1]))


def test_permuting_slots_with_their_backends_keeps_the_output():
    """Backends have their own weights, so the network is invariant to moving a marker to
    another slot together with that slot's backend (the abstraction is symmetric)."""
    torch.manual_seed(3)
    net = tiny().eval()
    permuted = tiny().eval()
    permuted.load_state_dict(net.state_dict())
    order = [2, 0, 1]
    permuted.backends = torch.nn.ModuleList(net.backends[i] for i in order)
    x = torch.randn(2, 3, SIZE, SIZE)
    availability = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    with torch.no_grad():
        torch.testing.assert_close(permuted(x[:, order], availability[:, order]), net(x, availability))


def test_hemis_ms_drops_whole_backends_at_training_only():
    net = tiny("hemis-ms", k=4)
    assert isinstance(net, HeMISMS) and isinstance(net.marker_input, MarkerSampling)
    calls = [0] * 4

    def count(slot: int):
        def hook(module, inputs, output):
            calls[slot] += 1
        return hook

    for slot, backend in enumerate(net.backends):
        backend.register_forward_hook(count(slot))
    x = torch.randn(1, 4, SIZE, SIZE)
    net.train()
    torch.manual_seed(4)
    for _ in range(10):
        net(x)
    assert 0 < sum(calls) < 40 and all(0 < c < 10 for c in calls)  # each sometimes dropped, never all
    calls[:] = [0] * 4
    net.eval()
    net(x)
    assert calls == [1, 1, 1, 1]


def test_hemis_with_ms_option_is_hemis_ms():
    torch.manual_seed(5)
    a = tiny("hemis-ms")
    b = tiny("hemis", marker_input="ms")
    b.load_state_dict(a.state_dict())
    assert model_spec(a)["options"] == model_spec(b)["options"]
    assert model_spec(a)["name"] == "hemis-ms" and model_spec(b)["name"] == "hemis"
    assert model_spec(tiny("hemis"))["options"]["marker_input"] == "mz"
    x = torch.randn(1, 3, SIZE, SIZE)
    torch.manual_seed(6)
    out_a = a.train()(x)
    torch.manual_seed(6)
    torch.testing.assert_close(b.train()(x), out_a)


@pytest.mark.parametrize("k", [1, 3, 5])
@pytest.mark.parametrize("name", ["hemis", "hemis-ms"])
def test_builds_trains_and_round_trips(name, k):
    net = tiny(name, k=k, marker_input_options={"r_drop": 0.4} if name == "hemis-ms" else None)
    x = torch.randn(2, k, SIZE, SIZE, requires_grad=True)
    availability = torch.ones(2, k)
    availability[1, 0] = 0 if k > 1 else 1
    torch.manual_seed(7)
    out = net.train()(x, availability)
    assert out.shape == (2, 2, 4, 4)
    out.sum().backward()
    assert x.grad is not None and net.frontend.head.weight.grad is not None
    spec = json.loads(json.dumps(model_spec(net)))
    assert spec["name"] == name and spec["in_channels"] == k and spec["options"]["backend_filters"] == 3
    rebuilt = build_model(**spec)
    rebuilt.load_state_dict(net.state_dict())
    assert model_spec(rebuilt) == spec
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(x, availability), net.eval()(x, availability))


@pytest.mark.parametrize("norm", ["batch", "instance"])
def test_optional_normalisation(norm):
    net = tiny(norm=norm)
    layer = torch.nn.BatchNorm2d if norm == "batch" else torch.nn.InstanceNorm2d
    assert sum(isinstance(m, layer) for m in net.backends.modules()) == 3 * 2
    net(torch.randn(2, 3, SIZE, SIZE)).sum().backward()


@pytest.mark.parametrize(
    "options",
    [{"backend_filters": 0}, {"backend_layers": 1.5}, {"depth": 0}, {"base_filters": True}, {"padding": "full"},
     {"norm": "group"}, {"marker_input": "nope"}, {"marker_input_options": {"r_drop": 1.0}}, {"attention": "me"}],
)
def test_invalid_options_are_user_errors(options):
    with pytest.raises(FluosegError):
        tiny(**options)


def test_forward_rejects_bad_inputs():
    net = tiny()
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        net(torch.zeros(1, 2, SIZE, SIZE))
    with pytest.raises(ValueError, match="not admissible"):
        net(torch.zeros(1, 3, SIZE + 1, SIZE))
    with pytest.raises(ValueError, match="availability"):
        net(torch.zeros(1, 3, SIZE, SIZE), torch.ones(1, 2))


def test_default_hemis_is_smaller_than_the_unet():
    """Supplementary Table 3: HeMIS has fewer parameters than the U-Net (but more memory)."""
    with torch.device("meta"):
        hemis = build_model("hemis", in_channels=5, out_channels=2)
        unet = build_model("unet", in_channels=5, out_channels=2)
    backends = count_parameters(hemis.backends)
    assert backends == 5 * ((9 * 1 * 16 + 16) + (9 * 16 * 16 + 16))
    assert count_parameters(hemis) == backends + count_parameters(hemis.frontend) == 500_314
    assert count_parameters(hemis) < count_parameters(unet) / 10
