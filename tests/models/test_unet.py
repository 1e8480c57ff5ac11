"""Tests of fluoseg.models.unet: the MS-ME U-Net, its sizes and its extension points."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fluoseg.errors import FluosegError
from fluoseg.models import UNet, build_model, count_parameters
from fluoseg.models.registry import ATTENTION, register_attention


def tiny(**options) -> UNet:
    options = {"in_channels": 2, "out_channels": 3, "depth": 2, "base_filters": 4, **options}
    return build_model("unet", **options)


def test_ms_me_geometry_572_to_388():
    net = build_model("unet", in_channels=1, out_channels=2, base_filters=1)  # depth 4, valid by default
    assert net.padding == "valid" and net.depth == 4
    assert net.output_size(572) == 388
    with torch.inference_mode():
        assert net(torch.zeros(1, 1, 572, 572)).shape == (1, 2, 388, 388)


def test_admissible_sizes_valid_padding():
    net = build_model("unet", in_channels=1, out_channels=1, base_filters=1)
    assert net.valid_input_size(572) == 572
    assert net.valid_input_size(560) == 572
    assert net.valid_input_size(573) == 588  # admissible sizes are 2**depth apart
    assert net.valid_input_size(1) == 188 and net.output_size(188) == 4  # the smallest
    for size in (570, 571, 187, 0, -4):
        with pytest.raises(ValueError, match="not admissible"):
            net.output_size(size)


def test_same_padding_keeps_the_size():
    net = tiny(padding="same")
    assert net.output_size(32) == 32 and net.valid_input_size(30) == 32 and net.valid_input_size(1) == 4
    with pytest.raises(ValueError):
        net.output_size(30)
    with torch.inference_mode():
        assert net(torch.randn(2, 2, 24, 20)).shape == (2, 3, 24, 20)


def test_default_architecture_is_the_half_width_unet():
    net = build_model("unet", in_channels=5, out_channels=2)
    assert [b.convs[0].out_channels for b in net.encoders] == [32, 64, 128, 256]
    assert net.bottleneck.convs[0].out_channels == 512
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d)) for m in net.modules())
    assert sum(isinstance(m, nn.MaxPool2d) for m in net.modules()) == 1  # shared, applied 4 times

    def block(cin: int, cout: int) -> int:
        return 9 * cin * cout + cout + 9 * cout * cout + cout

    filters = [32, 64, 128, 256, 512]
    expected = block(5, 32) + sum(block(filters[i - 1], filters[i]) for i in range(1, 5))
    expected += sum(4 * filters[i + 1] * filters[i] + filters[i] + block(2 * filters[i], filters[i]) for i in range(4))
    expected += 32 * 2 + 2
    assert count_parameters(net) == expected == 7_760_706


@pytest.mark.parametrize("norm, layer", [("batch", nn.BatchNorm2d), ("instance", nn.InstanceNorm2d)])
def test_optional_normalisation(norm, layer):
    net = tiny(norm=norm)
    assert sum(isinstance(m, layer) for m in net.modules()) == 2 * (2 * 2 + 1)
    net(torch.randn(2, 2, 44, 44)).sum().backward()


def test_forward_backward_and_availability_default():
    net = tiny()
    x = torch.randn(2, 2, 44, 44, requires_grad=True)
    y = net(x)
    assert y.shape == (2, 3, 4, 4)
    y.sum().backward()
    assert x.grad is not None and all(p.grad is not None for p in net.parameters())
    with torch.inference_mode():
        torch.testing.assert_close(net(x), net(x, torch.ones(2, 2)))


def test_missing_markers_are_zeroed_by_mz():
    net = tiny().eval()
    x = torch.randn(1, 2, 44, 44)
    zeroed = x.clone()
    zeroed[:, 1] = 0
    with torch.inference_mode():
        torch.testing.assert_close(net(x, torch.tensor([[1.0, 0.0]])), net(zeroed))


def test_forward_rejects_bad_inputs():
    net = tiny()
    with pytest.raises(ValueError, match=r"\(N, 2, H, W\)"):
        net(torch.zeros(1, 3, 44, 44))
    with pytest.raises(ValueError, match="not admissible"):
        net(torch.zeros(1, 2, 45, 44))
    with pytest.raises(ValueError, match="availability"):
        net(torch.zeros(1, 2, 44, 44), torch.ones(2, 2))


def test_translation_equivariance_only_for_multiples_of_the_pooling_grid():
    """Why fluoseg.tiling aligns tiles to 2**depth: shifting by 4 (depth 2) commutes with the
    network, shifting by 2 does not."""
    net = tiny().eval()
    size = net.valid_input_size(44)
    out = net.output_size(size)
    x = torch.randn(1, 2, size + 4, size + 4)
    with torch.inference_mode():
        whole = net(x)
        shifted = net(x[..., 4 : 4 + size, 4 : 4 + size])
        torch.testing.assert_close(shifted, whole[..., 4 : 4 + out, 4 : 4 + out], rtol=1e-5, atol=1e-5)
        off_grid = net(x[..., 2 : 2 + size, 2 : 2 + size])
        assert not torch.allclose(off_grid, whole[..., 2 : 2 + out, 2 : 2 + out], atol=1e-3)


def test_attention_hooks_follow_every_block_with_their_options():
    calls: list[tuple[int, int, tuple[int, ...]]] = []

    @register_attention("_test_gate")
    class Gate(nn.Module):
        def __init__(self, channels: int, n_markers: int, *, scale: float = 1.0) -> None:
            super().__init__()
            self.channels, self.scale = channels, scale
            self.weight = nn.Parameter(torch.ones(n_markers, channels))

        def forward(self, features, availability):
            calls.append((self.channels, features.shape[1], tuple(availability.shape)))
            return features * (availability @ self.weight)[:, :, None, None] * self.scale

    try:
        net = tiny(attention="_test_gate", attention_options={"scale": 0.5})
        net(torch.randn(1, 2, 44, 44), torch.tensor([[1.0, 0.0]]))
        # input + 1 encoder + bottleneck + 2 decoders, each with its own channel count
        assert [c[0] for c in calls] == [4, 8, 16, 8, 4]
        assert all(c[0] == c[1] and c[2] == (1, 2) for c in calls)
        assert count_parameters(net) == count_parameters(tiny()) + 2 * (4 + 8 + 16 + 8 + 4)

        calls.clear()
        tiny(attention="_test_gate", attention_at=["bottleneck", "decoder"])(torch.randn(1, 2, 44, 44))
        assert [c[0] for c in calls] == [16, 8, 4]

        with pytest.raises(FluosegError, match="unknown option 'scael'"):
            tiny(attention="_test_gate", attention_options={"scael": 1})
        with pytest.raises(FluosegError, match="attention_at"):
            tiny(attention="_test_gate", attention_at=["middle"])
    finally:
        ATTENTION.unregister("_test_gate")
    with pytest.raises(FluosegError, match="unknown attention module '_test_gate'"):
        tiny(attention="_test_gate")


def test_widened_variant_is_base_filters():
    narrow, wide = tiny(base_filters=4), tiny(base_filters=8)
    assert count_parameters(wide) > 3 * count_parameters(narrow)
    assert wide.output_size(44) == narrow.output_size(44)
