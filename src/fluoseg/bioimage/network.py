"""The network a bioimage.io package runs: fluoseg's member networks behind one forward pass.

This file is also the architecture source of the package's ``pytorch_state_dict`` weights
(bioimage.io's ``ArchitectureFromFileDescr``): the exporter copies it into the package
unchanged, and bioimage.io tools import it and call :class:`PackagedNetwork` with the
keyword arguments the package lists. It therefore imports only torch and fluoseg by
absolute name (the package's ``environment.yaml`` names the fluoseg version); the
TorchScript weights of the same package need neither.

What it adds to the trained networks, so that the package follows the bioimage.io
conventions:

- *same-size output*: valid-convolution networks (the MS-ME U-Net) lose ``margin`` pixels
  per side; the input is zero-padded by that margin first, exactly as fluoseg's tiling pads
  the normalised image at its border, so the output has the input's size. Consumers still
  crop the declared ``halo`` (at least the margin), so kept pixels never see that padding
  inside an image.
- *activated outputs*: each member's task activation (softmax, sigmoid, or the distance
  task's raw distance and sigmoid foreground) is applied, so the package outputs the maps
  fluoseg averages over tiles and decodes.
- *several members* (one network per class) are concatenated along the channel axis, in
  the run's class order.
- *optional availability*: tools that feed one input (deepImageJ, QuPath, bioimageio.core's
  blockwise prediction, which cannot split a second, non-spatial input) may leave the
  availability out; it is then read off the image: a marker slot that is zero throughout
  is absent, fluoseg's own convention for missing markers (a normalised real channel is
  never exactly zero everywhere).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fluoseg.run import ModelSpec
from fluoseg.tasks import task_from_state


class _Activation(nn.Module):
    """A task's activation as a module, so tracing records it with the network."""

    def __init__(self, task_state: Mapping[str, Any]) -> None:
        super().__init__()
        self._activate = task_from_state(dict(task_state)).activate

    def forward(self, logits: Tensor) -> Tensor:
        return self._activate(logits)


class PackagedNetwork(nn.Module):
    """Member networks of a fluoseg run with padding and activation, as one module.

    Parameters
    ----------
    members
        Per member network ``{"model": ModelSpec.as_dict(), "task": Task.state()}``.
    margin
        Pixels each member trims per side (0 for same-padded networks); the input is
        zero-padded by this much.

    Notes
    -----
    ``forward(image, availability=None)`` takes the ``(N, K, H, W)`` normalised marker slots
    (zeros for missing markers) and the ``(N, K)`` 0/1 availability vector (default: from
    the image, :func:`availability_from_image`), and returns the ``(N, C, H, W)`` activated
    maps. ``H + 2 * margin`` must be an input size the members accept.
    """

    def __init__(self, members: Sequence[Mapping[str, Any]], margin: int = 0) -> None:
        super().__init__()
        self.margin = int(margin)
        self.networks = nn.ModuleList(ModelSpec(**dict(m["model"])).build() for m in members)
        self.activations = nn.ModuleList(_Activation(m["task"]) for m in members)

    def forward(self, image: Tensor, availability: Tensor | None = None) -> Tensor:
        if availability is None:
            availability = availability_from_image(image)
        if self.margin:
            image = F.pad(image, (self.margin,) * 4)
        outputs = [activate(network(image, availability))
                   for network, activate in zip(self.networks, self.activations)]
        return outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=1)


def availability_from_image(image: Tensor) -> Tensor:
    """``(N, K)`` availability of ``(N, K, H, W)`` marker slots: 0 where a slot is zero throughout."""
    return (image.abs().amax(dim=(2, 3)) > 0).to(image.dtype)


class OptionalAvailability(nn.Module):
    """A traced :class:`PackagedNetwork` whose availability input may be left out (TorchScript).

    Tracing cannot record an optional argument, so the traced network is wrapped in this
    small module, which is scripted.
    """

    def __init__(self, traced: nn.Module) -> None:
        super().__init__()
        self.network = traced

    def forward(self, image: Tensor, availability: Optional[Tensor] = None) -> Tensor:  # noqa: UP007 (TorchScript)
        if availability is None:
            availability = (image.abs().amax(dim=(2, 3)) > 0).to(image.dtype)
        return self.network(image, availability)
