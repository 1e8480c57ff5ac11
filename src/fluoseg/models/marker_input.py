"""Marker input layers: what a network does with its K marker slots before the first block.

Every image reaches the network as K slots, one per marker of the model's panel, with the
slots of markers the image lacks filled with zeros, plus an availability vector ``(N, K)``
of 0/1. A marker input layer sits in front of the network and may change both:

- ``"mz"`` (Marker Zero, MS-ME paper): missing markers are zeros, nothing is sampled.
- ``"ms"`` (Marker Sampling): at training time, drops present markers at random and
  returns the reduced availability, so that attention modules (Marker Excite) and HeMIS
  backends see which markers the network actually received. Identity at inference.
- ``"ms-dr"`` (Marker Sampling with Dropout): MS, and the kept markers are scaled by
  ``1 / (1 - r_drop)`` at training time only, like Dropout.
- ``"ms-vr"`` (Marker Sampling with Variable Ratio): MS, and the markers the network
  receives are scaled by ``K / (number received)`` at training *and* inference time.

All sampling layers take the option ``r_drop`` (default 0.5, the paper's choice).

Layers register with :func:`register_marker_input` and are built by name, with their
options validated, by :func:`build_marker_input`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from fluoseg.errors import FluosegError
from fluoseg.models.registry import Registry

T = TypeVar("T", bound=type)

MARKER_INPUTS: Registry[type[nn.Module]] = Registry("marker input layer", required=("n_markers",))


def register_marker_input(name: str) -> Callable[[T], T]:
    """Class decorator registering a :class:`MarkerInput` subclass under ``name``."""
    return MARKER_INPUTS.register(name)


def build_marker_input(name: str, *, n_markers: int, **options: Any) -> MarkerInput:
    """Build the marker input layer ``name`` for ``n_markers`` slots.

    Raises
    ------
    FluosegError
        For an unknown name or option; the message lists the accepted ones.
    """
    return MARKER_INPUTS.build(name, n_markers=n_markers, **options)


def marker_input_names() -> list[str]:
    """Names of the registered marker input layers, sorted."""
    return MARKER_INPUTS.names()


def mask_missing(x: Tensor, availability: Tensor) -> Tensor:
    """Zero the slots of ``x`` (N, K, H, W) whose ``availability`` (N, K) is 0."""
    return x * availability.to(x.dtype)[:, :, None, None]


class MarkerInput(nn.Module):
    """Base class of marker input layers.

    Subclasses implement :meth:`forward`. Layers that sample markers do so only when
    ``self.training`` is true and draw from torch's global generator, so that seeding a
    training run (``torch.manual_seed``) makes the sampling reproducible.

    Parameters
    ----------
    n_markers
        Number of marker slots K.
    """

    def __init__(self, n_markers: int) -> None:
        super().__init__()
        self.n_markers = int(n_markers)

    def forward(self, x: Tensor, availability: Tensor) -> tuple[Tensor, Tensor]:
        """Map the slots and availability the network receives.

        Parameters
        ----------
        x
            ``(N, K, H, W)`` marker slots, zeros where a marker is missing.
        availability
            ``(N, K)`` float 0/1, which slots carry a marker.

        Returns
        -------
        tuple of Tensor
            The (possibly re-weighted or sampled) slots and the availability that
            describes them, same shapes as the inputs.
        """
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"n_markers={self.n_markers}"


@register_marker_input("mz")
class MarkerZero(MarkerInput):
    """Marker Zero: the network sees missing markers as zero-filled slots.

    Slots arrive zero-filled already; they are masked again with the availability so that
    the vector is authoritative even if a caller left data in a slot it marked missing
    (the mask is a no-op otherwise).
    """

    def forward(self, x: Tensor, availability: Tensor) -> tuple[Tensor, Tensor]:
        return mask_missing(x, availability), availability


def default_availability(x: Tensor) -> Tensor:
    """All markers available: ``(N, K)`` ones matching ``x`` (N, K, H, W)."""
    return torch.ones(x.shape[:2], dtype=x.dtype, device=x.device)


def checked_marker_input(model: nn.Module, x: Tensor, availability: Tensor | None) -> tuple[Tensor, Tensor]:
    """Validate a segmentation model's input and apply its marker input layer.

    ``model`` has ``in_channels``, ``output_size`` (raising ``ValueError`` for an
    inadmissible size) and ``marker_input``; ``availability`` defaults to all present.

    Raises
    ------
    ValueError
        If ``x`` is not ``(N, in_channels, H, W)`` with admissible sizes, or the
        availability does not have shape ``(N, in_channels)``.
    """
    if x.ndim != 4 or x.shape[1] != model.in_channels:
        raise ValueError(f"expected input (N, {model.in_channels}, H, W), got {tuple(x.shape)}")
    for size in x.shape[-2:]:
        model.output_size(int(size))
    if availability is None:
        availability = default_availability(x)
    elif tuple(availability.shape) != tuple(x.shape[:2]):
        raise ValueError(f"expected availability of shape {tuple(x.shape[:2])}, got {tuple(availability.shape)}")
    return model.marker_input(x, availability)


def sample_markers(availability: Tensor, r_drop: float) -> Tensor:
    """Draw which present markers a training sample keeps; never none of them.

    Every present marker (availability 1) of every sample is kept independently with
    probability ``1 - r_drop``; absent markers stay absent. A sample whose draw keeps none
    of its present markers is drawn again (rejection sampling), so the kept subset follows
    the Bernoulli distribution *conditioned on being non-empty*. That is symmetric in the
    markers, and with ``r_drop = 0.5`` every non-empty subset of a sample's markers is
    equally likely, the property the MS-ME paper chose 0.5 for. (Keeping one marker at
    random instead would move the mass of the empty draw onto single markers.)

    Parameters
    ----------
    availability
        ``(N, K)`` 0/1; values above 0.5 count as present.
    r_drop
        Probability of dropping each present marker, in ``[0, 1)``.

    Returns
    -------
    Tensor
        ``(N, K)`` 0/1 of the kept markers, dtype of ``availability``. Samples without
        any present marker keep nothing (there is nothing to sample from).

    Notes
    -----
    Randomness comes from torch's global generator. The expected number of redraws of a
    sample with k markers is ``r_drop**k / (1 - r_drop**k)``, small unless ``r_drop`` is
    close to 1 and k small.
    """
    present = availability > 0.5
    keep = 1.0 - r_drop
    kept = present & (torch.rand(present.shape, device=availability.device) < keep)
    redraw = present.any(dim=1) & ~kept.any(dim=1)
    while bool(redraw.any()):
        rows = redraw.nonzero(as_tuple=True)[0]
        draw = present[rows] & (torch.rand((len(rows), present.shape[1]), device=availability.device) < keep)
        kept[rows] = draw
        redraw[rows] = ~draw.any(dim=1)
    return kept.to(availability.dtype)


@register_marker_input("ms")
class MarkerSampling(MarkerInput):
    """Marker Sampling (MS): train on random subsets of the markers each sample has.

    MS-ME paper: "a sampling layer that randomly deletes markers at training time with
    probability r_drop, i.e. x_k <- Bern(r_drop) x_k [...] r_drop = 1 is excluded because
    that would create an input image without markers. Note that no such sampling occurs
    at inference". In training mode each marker a sample *has* (availability 1) is kept
    with probability ``1 - r_drop``; a dropped marker's slot is zeroed and its
    availability set to 0, so attention modules see the reduced set. A draw that would
    drop all markers of a sample is redrawn (see :func:`sample_markers`), which keeps the
    sampling unbiased across markers. With heterogeneous panels only the markers a sample
    actually has are sampled from. In eval mode the layer is Marker Zero (missing slots
    zeroed, availability unchanged).

    Parameters
    ----------
    n_markers
        Number of marker slots K.
    r_drop
        Probability of dropping each present marker at training time, in ``[0, 1)``; 0 is
        Marker Zero. The paper uses 0.5 (every marker combination equally likely).

    Raises
    ------
    FluosegError
        If ``r_drop`` is not a number in ``[0, 1)``.
    """

    def __init__(self, n_markers: int, *, r_drop: float = 0.5) -> None:
        super().__init__(n_markers)
        if isinstance(r_drop, bool) or not isinstance(r_drop, (int, float)) or not 0.0 <= r_drop < 1.0:
            raise FluosegError(
                f"marker input option 'r_drop' must be a number in [0, 1) (the probability of dropping a marker), "
                f"got {r_drop!r}"
            )
        self.r_drop = float(r_drop)

    def sample(self, x: Tensor, availability: Tensor) -> tuple[Tensor, Tensor]:
        """Sampled slots and availability in training mode, zero-masked inputs otherwise."""
        if self.training and self.r_drop > 0.0:
            availability = sample_markers(availability, self.r_drop)
        return mask_missing(x, availability), availability

    def forward(self, x: Tensor, availability: Tensor) -> tuple[Tensor, Tensor]:
        return self.sample(x, availability)

    def extra_repr(self) -> str:
        return f"n_markers={self.n_markers}, r_drop={self.r_drop}"


@register_marker_input("ms-dr")
class MarkerSamplingDropout(MarkerSampling):
    """Marker Sampling with Dropout scaling (MS-DR).

    MS-ME paper: "the sampling layer is replaced with a Dropout layer, i.e.
    x_k <- r_drop^-1 Bern(r_drop) x_k only at training time". The paper's formula writes
    the keep probability as r_drop, which coincides with ``1 - r_drop`` at its
    r_drop = 0.5; here, as in Dropout, kept markers are scaled by the inverse keep
    probability ``1 / (1 - r_drop)`` so that a marker's expected value over the sampling
    equals its value at inference (ignoring the redraw of empty subsets). In eval mode
    nothing is scaled (Marker Zero).

    Parameters
    ----------
    n_markers
        Number of marker slots K.
    r_drop
        Probability of dropping each present marker at training time, in ``[0, 1)``.
    """

    def forward(self, x: Tensor, availability: Tensor) -> tuple[Tensor, Tensor]:
        x, availability = self.sample(x, availability)
        if self.training:
            x = x / (1.0 - self.r_drop)
        return x, availability


@register_marker_input("ms-vr")
class MarkerSamplingVariableRatio(MarkerSampling):
    """Marker Sampling with Variable Ratio scaling (MS-VR).

    MS-ME paper: "the sampling layer normalizes the output according to the number of
    sampled markers, i.e. x_k <- p^-1 Bern(r_drop) x_k at training time, with p being the
    ratio of markers chosen by the sampling layer. [...] the normalization p is also
    applied at inference time, i.e. x_k <- p^-1 x_k, since it is a function of the number
    of utilized markers". Here ``p = (markers the network receives) / K`` with K the
    panel size, in both modes: after sampling at training time, and with the present
    markers at inference. The paper trained on complete panels, where this equals its
    "chosen / available" ratio; defining p against K also with heterogeneous panels
    keeps the scale a function of the input the network sees only, so the same marker
    subset is scaled the same way at training and at inference.

    Parameters
    ----------
    n_markers
        Number of marker slots K.
    r_drop
        Probability of dropping each present marker at training time, in ``[0, 1)``.
    """

    def forward(self, x: Tensor, availability: Tensor) -> tuple[Tensor, Tensor]:
        x, availability = self.sample(x, availability)
        # A sample without any marker is all zeros; clamping avoids 0/0 for it.
        received = (availability > 0.5).sum(dim=1).clamp(min=1).to(x.dtype)
        return x * (self.n_markers / received)[:, None, None, None], availability
