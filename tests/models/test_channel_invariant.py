"""Tests of the channel-invariant front end (fluoseg.models.channel_invariant) inside the U-Net."""

from __future__ import annotations

import json

import pytest
import torch

from fluoseg.errors import FluosegError
from fluoseg.models import UNet, build_model, model_spec
from fluoseg.models.channel_invariant import (
    ChannelInvariantFrontEnd,
    build_front_end,
    front_end_names,
    marker_rows,
    vocabulary_availability,
)


def ci_unet(**options) -> UNet:
    front = {"features": 6, "width": 5, "unknown_rate": 0.1, **options.pop("front", {})}
    options = {"in_channels": 3, "out_channels": 2, "depth": 2, "base_filters": 4,
               "front_end": "channel-invariant", "front_end_options": front, **options}
    torch.manual_seed(0)
    return build_model("unet", **options).eval()


def ids(*rows):
    return torch.tensor(rows, dtype=torch.long)


def test_registered_front_ends_and_marker_rows():
    assert front_end_names() == ["channel-invariant", "slots"]
    assert marker_rows(["DAPI", "ECAD", "CK"], ["CK", "PanCK", "DAPI", "HOECHST"]) == [2, 3, 0, 3]


def test_shapes_valid_padding_accounts_for_the_encoder_trim():
    net = ci_unet()
    plain = build_model("unet", in_channels=3, out_channels=2, depth=2, base_filters=4)
    assert net.front_end.shrink == 4  # two valid 3x3 convolutions
    assert net.output_size(48) == plain.output_size(44)
    assert net.valid_input_size(41) == plain.valid_input_size(41 - 4) + 4
    size = net.valid_input_size(41)
    x = torch.randn(2, 5, size, size)  # five channels for a three-marker vocabulary
    out = net(x, marker_ids=ids([0, 1, 2, 3, 3], [2, 2, 1, 0, 3]))
    assert out.shape == (2, 2, net.output_size(size), net.output_size(size))
    assert net.encoders[0].convs[0].in_channels == 6


def test_shapes_same_padding_and_mean_max_pooling():
    net = ci_unet(padding="same", front={"pool": "mean-max", "layers": 3})
    assert net.front_end.shrink == 0 and net.front_end.out_channels == 12
    assert net.encoders[0].convs[0].in_channels == 12
    assert net(torch.randn(1, 2, 32, 32), marker_ids=ids([1, 3])).shape == (1, 2, 32, 32)


@pytest.mark.parametrize("pool", ["mean", "max", "mean-max"])
def test_output_is_invariant_to_the_order_of_the_channels(pool):
    net = ci_unet(front={"pool": pool})
    torch.manual_seed(1)
    x = torch.randn(2, 4, 64, 64)
    rows = ids([0, 1, 2, 3], [3, 0, 2, 1])
    availability = torch.tensor([[1.0, 1.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0]])
    order = torch.tensor([2, 0, 3, 1])
    with torch.no_grad():
        a = net(x, availability, marker_ids=rows)
        b = net(x[:, order], availability[:, order], marker_ids=rows[:, order])
    assert torch.allclose(a, b, atol=1e-5) and a.abs().max() > 0


def test_absent_channels_do_not_affect_the_output():
    net = ci_unet(attention="me")
    torch.manual_seed(2)
    x = torch.randn(1, 3, 64, 64)
    availability = torch.tensor([[1.0, 0.0, 1.0]])
    rows = ids([0, 1, 2])
    with torch.no_grad():
        reference = net(x, availability, marker_ids=rows)
        changed = x.clone()
        changed[:, 1] = float("nan")  # whatever the absent channel holds
        assert torch.equal(net(changed, availability, marker_ids=rows), reference)
        # ... and it is the same as not passing the channel at all.
        dropped = net(x[:, [0, 2]], torch.ones(1, 2), marker_ids=ids([0, 2]))
    assert torch.allclose(dropped, reference, atol=1e-6)


def test_unknown_markers_use_the_default_embedding_row():
    net = ci_unet()
    table = net.front_end.embedding.table.weight
    x = torch.randn(1, 2, 64, 64)
    with torch.no_grad():
        unknown = net(x, marker_ids=ids([0, 3]))
        as_marker_2 = net(x, marker_ids=ids([0, 2]))
        table[2] = table[3]  # marker 2 now looks exactly like the default row
        assert torch.equal(net(x, marker_ids=ids([0, 2])), unknown)
    assert not torch.allclose(unknown, as_marker_2)


def test_slot_layout_is_the_default_and_matches_explicit_rows():
    net = ci_unet()
    x = torch.randn(2, 3, 64, 64)
    availability = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]])
    with torch.no_grad():
        assert torch.equal(net(x, availability), net(x, availability, marker_ids=ids([0, 1, 2], [0, 1, 2])))


def test_gradients_reach_the_encoder_and_only_the_embedding_rows_used():
    net = ci_unet(front={"unknown_rate": 0.0}).train()
    net(torch.randn(2, 2, 64, 64), marker_ids=ids([0, 2], [2, 0])).square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.front_end.encoder.parameters())
    row_grads = net.front_end.embedding.table.weight.grad.abs().sum(dim=1)
    assert row_grads[0] > 0 and row_grads[2] > 0 and row_grads[1] == 0 and row_grads[3] == 0


def test_training_shows_known_markers_as_unknown_at_the_given_rate():
    front = build_front_end("channel-invariant", n_markers=4, padding="same", unknown_rate=0.3, features=2, width=2)
    x, availability = torch.randn(500, 4, 4, 4), torch.ones(500, 4)
    torch.manual_seed(3)
    _, known = front.train()(x, availability)
    assert 0.6 < known.mean().item() < 0.8  # ~70 % keep their identity
    _, known = front.eval()(x, availability)
    assert known.min().item() == 1.0  # never at inference
    net = ci_unet(front={"unknown_rate": 0.5}).train()
    net(torch.randn(8, 3, 64, 64)).sum().backward()
    assert net.front_end.embedding.table.weight.grad[3].abs().sum() > 0  # the default row learns


def test_vocabulary_availability_ignores_unknown_and_absent_channels():
    known = vocabulary_availability(ids([0, 3, 2, 2], [3, 3, 1, 1]), torch.tensor([[1.0, 1.0, 0.0, 1.0],
                                                                                    [1.0, 1.0, 0.0, 0.0]]), 3)
    assert known.tolist() == [[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]]


def test_no_channel_present_gives_a_finite_output():
    net = ci_unet()
    out = net(torch.randn(1, 2, 64, 64), torch.zeros(1, 2), marker_ids=ids([0, 1]))
    assert torch.isfinite(out).all()


def test_valid_output_is_shift_equivariant_on_the_pooling_grid():
    net = ci_unet()
    size = net.valid_input_size(64)
    x = torch.randn(1, 3, size + 8, size + 8)
    out_size = net.output_size(size)
    with torch.no_grad():
        whole = net(x)
        window = net(x[..., 8:, 8:][..., :size, :size])
    assert torch.allclose(whole[..., 8 : 8 + out_size, 8 : 8 + out_size], window, atol=1e-5)


def test_spec_round_trip_rebuilds_the_same_network():
    net = ci_unet(attention="me", front={"pool": "max"})
    spec = json.loads(json.dumps(model_spec(net)))
    assert spec["options"]["front_end"] == "channel-invariant"
    assert spec["options"]["front_end_options"]["pool"] == "max"
    rebuilt = build_model(**spec)
    rebuilt.load_state_dict(net.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(rebuilt.eval()(x), net(x))
    assert "front_end.embedding.table.weight" in net.state_dict()
    assert not any(k.startswith("front_end") for k in build_model("unet", in_channels=3, out_channels=2).state_dict())


def test_mistakes():
    with pytest.raises(FluosegError, match="unknown front end 'pooled'"):
        ci_unet(front_end="pooled", front_end_options={})
    with pytest.raises(FluosegError, match="unknown option 'depth' for front end"):
        ci_unet(front={"depth": 2})
    with pytest.raises(FluosegError, match="'kernel_size' must be a positive odd integer"):
        ci_unet(front={"kernel_size": 2})
    with pytest.raises(FluosegError, match="'pool' must be one of"):
        ci_unet(front={"pool": "sum"})
    with pytest.raises(FluosegError, match="'unknown_rate'"):
        ci_unet(front={"unknown_rate": 1.0})
    with pytest.raises(FluosegError, match="needs marker_input 'mz' or 'ms'"):
        ci_unet(marker_input="ms-vr")
    net = ci_unet()
    with pytest.raises(ValueError, match="marker_ids must lie in"):
        net(torch.randn(1, 2, 64, 64), marker_ids=ids([0, 4]))
    with pytest.raises(ValueError, match="integer marker_ids"):
        net(torch.randn(1, 2, 64, 64), marker_ids=torch.zeros(1, 2))
    with pytest.raises(ValueError, match="expected input \\(N, 3, H, W\\)"):
        net(torch.randn(1, 2, 64, 64))
    with pytest.raises(ValueError, match="without marker_ids the input needs 3 channels"):
        net.front_end(torch.randn(1, 2, 8, 8), torch.ones(1, 2))
    with pytest.raises(ValueError, match="need the channel-invariant front end"):
        build_model("unet", in_channels=2, out_channels=1, depth=2, base_filters=4)(
            torch.randn(1, 2, 64, 64), marker_ids=ids([0, 1]))
    assert isinstance(net.front_end, ChannelInvariantFrontEnd)
