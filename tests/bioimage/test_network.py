"""The packaged forward pass: zero padding by the margin, task activation, members side by side."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fluoseg.bioimage.network import PackagedNetwork

SPEC = {"name": "unet", "options": {"depth": 2, "base_filters": 4, "padding": "valid"}, "in_channels": 2,
        "out_channels": 2}


def test_members_are_padded_activated_and_concatenated_in_order():
    torch.manual_seed(0)
    members = [{"model": SPEC, "task": {"name": "semantic", "classes": ["a"]}},
               {"model": SPEC, "task": {"name": "semantic", "classes": ["b"]}}]
    network = PackagedNetwork(members, margin=20).eval()
    image, availability = torch.randn(1, 2, 48, 48), torch.tensor([[1.0, 0.0]])
    with torch.no_grad():
        output = network(image, availability)
        by_hand = [torch.softmax(member(F.pad(image, (20,) * 4), availability), dim=1)[:, 1:]
                   for member in network.networks]  # softmax over background and the class, class kept
    assert output.shape == (1, 2, 48, 48)
    torch.testing.assert_close(output, torch.cat(by_hand, dim=1))
    assert not torch.allclose(by_hand[0], by_hand[1])  # the members really differ


def test_left_out_availability_is_read_off_zero_filled_slots_in_both_weight_formats():
    from fluoseg.bioimage.export import _trace
    from fluoseg.bioimage.sizes import package_sizes

    torch.manual_seed(1)
    spec = {**SPEC, "in_channels": 3, "options": {**SPEC["options"], "attention": "me"}}  # Marker Excite uses it
    network = PackagedNetwork([{"model": spec, "task": {"name": "semantic", "classes": ["a"]}}], margin=20).eval()
    image = torch.randn(1, 3, 48, 48)
    image[:, 1] = 0
    scripted = _trace(network, image, torch.ones(1, 3), package_sizes(list(network.networks)))
    with torch.no_grad():
        explicit = network(image, torch.tensor([[1.0, 0.0, 1.0]]))
        for run in (network, scripted):
            torch.testing.assert_close(run(image), explicit)
            torch.testing.assert_close(run(image, torch.tensor([[1.0, 0.0, 1.0]])), explicit)
        assert (network(image, torch.ones(1, 3)) - explicit).abs().max() > 1e-4
