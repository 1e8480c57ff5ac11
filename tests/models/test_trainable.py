"""Tests of fluoseg.models.trainable: Marker-Excite-only, head-only and full fine-tuning scopes."""

from __future__ import annotations

import pytest
import torch

from fluoseg.errors import FluosegError
from fluoseg.models import build_model, count_parameters
from fluoseg.models.trainable import eval_frozen_normalization, freeze_except, trainable_parameters


def ms_me(**options):
    torch.manual_seed(0)
    options = {"in_channels": 3, "out_channels": 2, "depth": 2, "base_filters": 4, "marker_input": "ms",
               "attention": "me", **options}
    return build_model("unet", **options)


def test_excite_scope_is_exactly_the_marker_excite_modules():
    net = ms_me()
    names = trainable_parameters(net, "excite")
    # Independent oracle: in the U-Net every attention module sits at "<block>.hook"; the
    # default E+B+D placement leaves the input block's hook empty.
    expected = [n for n, _ in net.named_parameters() if ".hook." in n]
    assert names == expected and len(names) == 4 * 4  # 4 blocks (E, B, 2 D) x squeeze/excite x weight/bias
    assert not any(n.startswith("encoders.0.") for n in names)


def test_excite_scope_includes_se_modules_and_the_marker_embedding():
    net = ms_me(attention="se", front_end="channel-invariant")
    names = trainable_parameters(net, "excite")
    assert "front_end.embedding.table.weight" in names
    assert [n for n in names if n != "front_end.embedding.table.weight"] == [
        n for n, _ in net.named_parameters() if ".hook." in n]
    assert not any(n.startswith("front_end.encoder") for n in names)


def test_head_all_and_combined_scopes():
    net = ms_me()
    assert trainable_parameters(net, "head") == ["head.weight", "head.bias"]
    assert trainable_parameters(net, "all") == [n for n, _ in net.named_parameters()]
    combined = trainable_parameters(net, "excite + head")
    assert set(combined) == set(trainable_parameters(net, "excite")) | {"head.weight", "head.bias"}
    assert combined == [n for n, _ in net.named_parameters() if n in set(combined)]  # model order


def test_marker_excite_is_a_tiny_share_of_the_ms_me_unet():
    # MS-ME U-Net (depth 4, 32 filters) on K = 5 markers: ME after 3 encoder blocks
    # (64, 128, 256 maps), the bottleneck (512) and 4 decoder blocks (256, 128, 64, 32);
    # each has 5 x 31 + 31 weights/biases in its first layer and 31 F + F in its second.
    with torch.device("meta"):
        net = build_model("unet", in_channels=5, out_channels=2, attention="me")
    maps = [64, 128, 256, 512, 256, 128, 64, 32]
    expected = sum(5 * 31 + 31 + 31 * f + f for f in maps)
    assert expected == 47568
    freeze_except(net, "excite")
    assert count_parameters(net, trainable_only=True) == expected
    assert 0.005 < expected / count_parameters(net) < 0.007  # "+0.6 % parameters"


@pytest.mark.parametrize("scope", ["excite", "head", "all"])
def test_a_training_step_changes_exactly_the_scope(scope):
    net = ms_me().train()
    trainable = set(freeze_except(net, scope))
    assert {n for n, p in net.named_parameters() if p.requires_grad} == trainable
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    optimiser = torch.optim.Adam(net.parameters(), lr=1e-2)  # frozen ones get no gradient
    x = torch.randn(2, 3, 44, 44)
    target = torch.randint(0, 2, (2, net.output_size(44), net.output_size(44)))
    loss = torch.nn.functional.cross_entropy(net(x, torch.ones(2, 3)), target)
    loss.backward()
    optimiser.step()
    for name, parameter in net.named_parameters():
        changed = not torch.equal(parameter, before[name])
        assert changed == (name in trainable), name


def test_frozen_batch_normalisation_keeps_its_running_statistics():
    net = ms_me(norm="batch").train()
    freeze_except(net, "excite")
    switched = eval_frozen_normalization(net)
    assert switched and all(".convs." in n for n in switched)
    before = {n: b.clone() for n, b in net.named_buffers()}
    net(torch.randn(2, 3, 44, 44))
    assert all(torch.equal(b, before[n]) for n, b in net.named_buffers())
    # Without the call the statistics drift, which is why the trainer must make it.
    net.train()
    net(torch.randn(2, 3, 44, 44))
    assert not all(torch.equal(b, before[n]) for n, b in net.named_buffers())
    freeze_except(net, "all")
    assert eval_frozen_normalization(net.train()) == []


def test_mistakes_name_the_scopes():
    scopes = r"\['all', 'excite', 'head'\]"
    with pytest.raises(FluosegError, match=rf"unknown trainable scope 'decoder'; choose one of {scopes}"):
        trainable_parameters(ms_me(), "decoder")
    with pytest.raises(FluosegError, match="no parameters in trainable scope 'excite'.*attention 'me'"):
        freeze_except(build_model("unet", in_channels=2, out_channels=1, depth=2, base_filters=4), "excite")
    with pytest.raises(FluosegError, match="does not say which layers are its head"):
        trainable_parameters(torch.nn.Sequential(torch.nn.Conv2d(1, 1, 1)), "head")
