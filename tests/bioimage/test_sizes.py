"""Admissible sizes and halo of packaged networks, and the claim behind the halo: tiles agree."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fluoseg.bioimage.network import PackagedNetwork
from fluoseg.bioimage.sizes import PackageSizes, package_sizes
from fluoseg.errors import FluosegError
from fluoseg.models import build_model


def _unet(**options):
    return build_model("unet", in_channels=2, out_channels=2, **options)


@pytest.mark.parametrize(("options", "expected"), [
    # MS-ME U-Net: 572 -> 388 trims 92 px; sizes 4 + 16n; halo 98 (>= 92, 4 - 2h a multiple of 16)
    ({"depth": 4, "padding": "valid"}, PackageSizes(margin=92, step=16, halo=98, minimum=212)),
    ({"depth": 2, "base_filters": 4, "padding": "valid"}, PackageSizes(margin=20, step=4, halo=20, minimum=44)),
    ({"depth": 4, "padding": "same"}, PackageSizes(margin=0, step=16, halo=32, minimum=80)),
])
def test_sizes_by_hand(options, expected):
    assert package_sizes([_unet(**options)]) == expected


def test_members_of_different_geometry_cannot_share_an_input():
    with pytest.raises(FluosegError, match="differ"):
        package_sizes([_unet(depth=2, base_filters=4), _unet(depth=3, base_filters=4)])


def test_largest_admissible_size():
    sizes = PackageSizes(margin=20, step=4, halo=20, minimum=44)
    assert [sizes.largest_up_to(n) for n in (44, 47, 72, 73)] == [44, 44, 72, 72]
    assert sizes.admissible(48) and not sizes.admissible(46)
    with pytest.raises(FluosegError, match="smaller than"):
        sizes.largest_up_to(40)


def _tiled(network, padded: torch.Tensor, block: int, halo: int) -> np.ndarray:
    """What a bioimage.io tool does: blocks of ``block`` px over a halo-padded image, halos cropped."""
    inner = block - 2 * halo
    side = padded.shape[-1] - 2 * halo
    rows = []
    with torch.no_grad():
        for y in range(0, side, inner):
            tiles = [network(padded[..., y:y + block, x:x + block], torch.ones(1, 2))[0, :, halo:halo + inner,
                                                                                     halo:halo + inner].numpy()
                     for x in range(0, side, inner)]
            rows.append(np.concatenate(tiles, axis=-1))
    return np.concatenate(rows, axis=-2)


def test_tiles_with_the_halo_equal_the_whole_image_and_misaligned_ones_do_not():
    torch.manual_seed(0)
    spec = {"name": "unet", "options": {"depth": 2, "base_filters": 4, "padding": "valid"}, "in_channels": 2,
            "out_channels": 2}
    task = {"name": "semantic", "classes": ["a"]}  # softmax over background and a: 2 logits, 1 map
    network = PackagedNetwork([{"model": spec, "task": task}], margin=20).eval()
    sizes = package_sizes(list(network.networks))
    image = torch.randn(1, 2, 80, 80)
    with torch.no_grad():
        whole = network(image, torch.ones(1, 2))[0].numpy()
    # image sides and blocks are admissible; the blocks' inner parts step by a multiple of 4
    padded = torch.nn.functional.pad(image, (sizes.halo,) * 4, mode="reflect")
    with torch.no_grad():
        reference = network(padded, torch.ones(1, 2))[0, :, sizes.halo:-sizes.halo, sizes.halo:-sizes.halo].numpy()
    tiled = _tiled(network, padded, block=60, halo=sizes.halo)
    np.testing.assert_allclose(tiled, reference, atol=1e-5)
    np.testing.assert_allclose(reference[:, 30:50, 30:50], whole[:, 30:50, 30:50], atol=1e-5)  # far from borders
    # a block shifted by a multiple of the step reproduces the reference; shifted by 2 px it does not,
    # because the network then pools other pixel pairs together (why the halo keeps blocks on the grid)
    h = sizes.halo
    for shift, agrees in ((4, True), (2, False)):
        with torch.no_grad():
            block = network(padded[..., shift:shift + 60, shift:shift + 60], torch.ones(1, 2))[0].numpy()
        inner = block[:, h:h + 20, h:h + 20]
        assert np.allclose(inner, reference[:, shift:shift + 20, shift:shift + 20], atol=1e-5) == agrees
