"""Tests of fluoseg.models.mc_dropout and the U-Net's dropout option."""

from __future__ import annotations

import pytest
import torch

from fluoseg.errors import FluosegError
from fluoseg.models import build_model, model_spec
from fluoseg.models.mc_dropout import dropout_modules, mc_dropout


def unet(**options):
    torch.manual_seed(0)
    return build_model("unet", **{"in_channels": 2, "out_channels": 2, "depth": 2, "base_filters": 4, **options})


def test_dropout_sits_after_the_bottleneck_and_inner_decoders_and_adds_no_weights():
    net = unet(dropout=0.3)
    assert len(dropout_modules(net)) == 1 and net.dropout.p == 0.3  # one module, applied depth times
    assert dropout_modules(unet()) == []
    assert net.state_dict().keys() == unet().state_dict().keys()  # weights load either way
    assert model_spec(net)["options"]["dropout"] == 0.3
    calls = []
    net.dropout.register_forward_hook(lambda module, args, out: calls.append(tuple(out.shape[1:2])))
    net.eval()(torch.randn(1, 2, 44, 44))
    assert calls == [(16,), (8,)]  # bottleneck (16 maps) and the first of two decoder blocks (8)


def test_mc_dropout_samples_differ_and_modes_are_restored():
    net = unet(dropout=0.3, norm="batch").train()
    x = torch.randn(2, 2, 44, 44)
    statistics = {n: b.clone() for n, b in net.named_buffers()}
    with torch.no_grad(), mc_dropout(net) as layers:
        assert layers == 1 and not net.training and net.dropout.training
        first, second = net(x), net(x)
    assert not torch.allclose(first, second)
    assert all(torch.equal(b, statistics[n]) for n, b in net.named_buffers())  # batch norm stayed in eval
    assert net.training and all(m.training for m in net.modules())  # training mode is back
    net.eval()
    with torch.no_grad():
        assert torch.equal(net(x), net(x))  # plain eval mode is deterministic


def test_mistakes():
    with pytest.raises(FluosegError, match="build it with the option dropout > 0"):
        with mc_dropout(unet()):
            pass
    with pytest.raises(FluosegError, match="unet option 'dropout' must be a number in \\[0, 1\\)"):
        unet(dropout=1.0)
