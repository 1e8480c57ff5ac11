"""Input sizes and halo of an exported network, in bioimage.io's terms.

bioimage.io tools tile an image themselves: they pad each tile's input by the output
``halo``, run the network, and crop the halo off its output. A package states which
input sizes the network accepts (``ParameterizedSize``: ``minimum + n * step``) and that
halo. For a fluoseg network wrapped in :class:`~fluoseg.bioimage.network.PackagedNetwork`
(zero-padded by its valid-convolution margin, so output size = input size):

- a size ``s`` is admissible when ``s + 2 * margin`` is an input size the network takes;
  consecutive admissible sizes are ``step`` apart (``2**depth`` for a U-Net);
- the halo is at least the margin, so every kept output pixel was computed from real image
  context only, the property fluoseg's own overlap-tile scheme has. Same-padded networks
  (no margin) get two steps of context;
- the halo is further chosen so that ``s - 2 * halo`` is a multiple of ``step``: the tiles a
  bioimage.io tool lays out are then ``step``-aligned with each other, and because pooling
  networks are translation-equivariant only for such shifts, tiled prediction of a
  valid-convolution network equals its whole-image prediction (no seams), as in fluoseg.
  The tiles' common pooling phase differs from the one fluoseg's own tiling uses by a few
  pixels (no halo can give both for sizes ``4 + 16 n``), so a tool's maps match fluoseg's
  to the network's own sensitivity to such shifts, not bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from fluoseg.errors import FluosegError
from fluoseg.tiling import SizedNetwork


@dataclass(frozen=True)
class PackageSizes:
    """Admissible sizes and halo of a packaged network (square tiles; same rule for y and x).

    Attributes
    ----------
    margin
        Pixels the network trims per side (the zero padding added in front of it).
    step
        Spacing of admissible sizes.
    halo
        Output pixels per side a tiling consumer crops (and pads its input tiles by).
    minimum
        Smallest admissible size that keeps at least ``step`` pixels after cropping the halo.
    """

    margin: int
    step: int
    halo: int
    minimum: int

    def admissible(self, size: int) -> bool:
        """Whether the packaged network accepts ``size`` pixels along an axis."""
        return size >= self.minimum and (size - self.minimum) % self.step == 0

    def largest_up_to(self, size: int) -> int:
        """The largest admissible size that is ``<= size``.

        Raises
        ------
        FluosegError
            If ``size`` is below the minimum.
        """
        if size < self.minimum:
            raise FluosegError(f"an image of {size} pixels is smaller than the {self.minimum} pixels the exported "
                               "network needs; choose a larger sample image")
        return self.minimum + (size - self.minimum) // self.step * self.step


def package_sizes(networks: Sequence[SizedNetwork]) -> PackageSizes:
    """The sizes and halo of member networks run side by side on the same input.

    Raises
    ------
    FluosegError
        If the members differ in padding, margin or admissible sizes (they cannot share
        one input tensor).
    """
    found = {_sizes(network) for network in networks}
    if len(found) != 1:
        raise FluosegError("the run's member networks differ in padding or admissible tile sizes, so they cannot "
                           "share one bioimage.io input; export runs whose members have the same architecture")
    return found.pop()


def _sizes(network: SizedNetwork) -> PackageSizes:
    first_input = int(network.valid_input_size(1))
    margin = (first_input - int(network.output_size(first_input))) // 2
    step = int(network.valid_input_size(first_input + 1)) - first_input
    smallest = int(network.valid_input_size(2 * margin + 1)) - 2 * margin
    if network.output_size(smallest + 2 * margin) != smallest:
        raise FluosegError("the network's margin depends on its input size; it cannot be exported with a halo")
    context = margin if margin else 2 * step
    halo = next((h for h in range(context, context + step) if (smallest - 2 * h) % step == 0), context)
    minimum = smallest
    while minimum - 2 * halo < step:
        minimum += step
    return PackageSizes(margin=margin, step=step, halo=halo, minimum=minimum)
