"""HeMIS: Hetero-Modal Image Segmentation (Havaei et al. 2016), as used in the MS-ME paper.

MS-ME paper: "Each marker is processed by separate models (backends) that are
subsequently combined with mean and standard deviation (abstraction layer). Such feature
aggregation using statistical moments allows to seamlessly apply backpropagation
regardless of the missing modalities. The merged output is then processed with
additional convolutional layers (frontend) to obtain the final segmentation."

Here:

- backends: one per marker slot, same architecture, separate weights: ``backend_layers``
  3x3 convolutions with ``backend_filters`` (F) filters and ReLU, on the slot alone;
- abstraction layer: per pixel and feature, the mean and the variance over the markers
  *present* in each sample (availability 1); with one marker the variance is 0. Absent
  markers contribute nothing, whatever their slots hold;
- frontend: a :class:`~fluoseg.models.unet.UNet` on the 2F moment channels, so sizes and
  the overlap-tile geometry follow from the U-Net's, shifted by what the backends trim.

The two registered variants differ only in their marker input layer:

- ``"hemis"``: ``marker_input="mz"``, all present markers are used;
- ``"hemis-ms"`` (HeMIS-MS): ``marker_input="ms"``, Marker Sampling drops whole
  backends at training time ("we herein ablate any backend corresponding to a missing
  marker, in order to avoid statistical moment calculations from empty feature maps").
  ``build_model("hemis", ..., marker_input="ms")`` is the same network.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from fluoseg.errors import FluosegError
from fluoseg.models.marker_input import build_marker_input, checked_marker_input
from fluoseg.models.registry import register_model
from fluoseg.models.unet import NORMS, PADDINGS, UNet

_SHRINK_PER_CONV = 2
"""Pixels a valid 3x3 convolution trims from a spatial size (one per side)."""


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise FluosegError(f"hemis option {name!r} must be a positive integer, got {value!r}")
    return value


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise FluosegError(f"hemis option {name!r} must be one of {list(choices)}, got {value!r}")
    return value


def abstraction(features: Tensor, availability: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and variance of per-marker feature maps over the markers present.

    Parameters
    ----------
    features
        ``(N, K, F, H, W)``: backend k's features of marker slot k.
    availability
        ``(N, K)`` 0/1; only slots with 1 enter the moments.

    Returns
    -------
    tuple of Tensor
        Mean and (population) variance, each ``(N, F, H, W)``; the variance is 0 for a
        sample with one marker. A sample without any marker gets zeros.

    Notes
    -----
    The MS-ME paper's text says "mean and standard deviation"; the variance of the
    original HeMIS is used because the standard deviation's gradient is infinite where
    all markers agree (always, with a single marker).
    """
    present = (availability > 0.5).to(features.dtype)[:, :, None, None, None]
    # Absent slots are selected away rather than multiplied by 0, so that even inf/NaN
    # in a slot marked missing cannot reach the moments.
    features = torch.where(present > 0, features, torch.zeros((), dtype=features.dtype, device=features.device))
    count = present.sum(dim=1).clamp(min=1.0)
    mean = features.sum(dim=1) / count
    variance = (present * (features - mean[:, None]) ** 2).sum(dim=1) / count
    return mean, variance


class Backend(nn.Sequential):
    """The per-marker feature extractor: ``layers`` 3x3 convolutions + ReLU on one slot."""

    def __init__(self, filters: int, *, layers: int, padding: str, norm: str) -> None:
        modules: list[nn.Module] = []
        for layer in range(layers):
            # A bias before a normalisation layer would be cancelled by it.
            modules.append(nn.Conv2d(1 if layer == 0 else filters, filters, 3,
                                     padding=1 if padding == "same" else 0, bias=norm == "none"))
            if norm == "batch":
                modules.append(nn.BatchNorm2d(filters))
            elif norm == "instance":
                modules.append(nn.InstanceNorm2d(filters, affine=True))
            modules.append(nn.ReLU(inplace=True))
        super().__init__(*modules)


@register_model("hemis")
class HeMIS(nn.Module):
    """HeMIS: per-marker backends, mean/variance abstraction, U-Net frontend.

    Parameters
    ----------
    in_channels
        Number of marker slots K (one backend each).
    out_channels
        Number of output logit channels.
    backend_filters
        Features F of each backend; the frontend receives 2F channels.
    backend_layers
        3x3 convolutions per backend.
    depth, base_filters
        The frontend U-Net's poolings and first-block filters.
    padding
        ``"valid"`` or ``"same"``, for backends and frontend alike.
    norm
        ``"none"``, ``"batch"`` or ``"instance"``, for backends and frontend alike.
    marker_input
        Registered marker input layer (``"mz"``; ``"ms"`` for HeMIS-MS), applied before
        the backends; its availability decides which backends enter the abstraction.
        ``marker_input_options`` are its options (``r_drop``).

    Notes
    -----
    With valid padding the backends trim ``2 * backend_layers`` pixels, so the admissible
    input sizes are the frontend's plus that (576, not 572, for the default depth-4
    frontend with 2 backend layers); :meth:`output_size` and :meth:`valid_input_size`
    account for it, and :mod:`fluoseg.tiling` derives tiles from them.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        backend_filters: int = 16,
        backend_layers: int = 2,
        depth: int = 4,
        base_filters: int = 8,
        padding: str = "valid",
        norm: str = "none",
        marker_input: str = "mz",
        marker_input_options: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.in_channels = _positive_int("in_channels", in_channels)
        self.out_channels = _positive_int("out_channels", out_channels)
        self.backend_filters = _positive_int("backend_filters", backend_filters)
        self.backend_layers = _positive_int("backend_layers", backend_layers)
        _positive_int("depth", depth)
        _positive_int("base_filters", base_filters)
        self.padding = _choice("padding", padding, PADDINGS)
        self.norm = _choice("norm", norm, NORMS)
        self.marker_input = build_marker_input(marker_input, n_markers=in_channels, **dict(marker_input_options or {}))
        self.backends = nn.ModuleList(
            Backend(backend_filters, layers=backend_layers, padding=padding, norm=norm) for _ in range(in_channels)
        )
        # The frontend's own marker input sees the 2F moment channels, always complete.
        self.frontend = UNet(2 * backend_filters, out_channels, depth=depth, base_filters=base_filters,
                             padding=padding, norm=norm, marker_input="mz")
        for module in self.backends.modules():
            if isinstance(module, nn.Conv2d):
                # He initialisation, as the frontend U-Net does for the same reason.
                nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    @property
    def backend_shrink(self) -> int:
        """Pixels the backends trim from each spatial size (0 with same padding)."""
        return _SHRINK_PER_CONV * self.backend_layers if self.padding == "valid" else 0

    def output_layers(self) -> list[nn.Conv2d]:
        """The convolution(s) producing the output logits (one row of weights per channel)."""
        return self.frontend.output_layers()

    def forward(self, x: Tensor, availability: Tensor | None = None) -> Tensor:
        """Logits for a batch of marker-slot images.

        Parameters
        ----------
        x
            ``(N, K, H, W)``, K = ``in_channels``; H and W must be admissible sizes.
        availability
            ``(N, K)`` float 0/1 of the markers present; default all present. Slots with
            0 do not influence the output.

        Returns
        -------
        Tensor
            ``(N, out_channels, output_size(H), output_size(W))`` logits.
        """
        x, availability = checked_marker_input(self, x, availability)
        used = (availability > 0.5).any(dim=0).tolist()
        size = (x.shape[-2] - self.backend_shrink, x.shape[-1] - self.backend_shrink)
        features = []
        for slot, backend in enumerate(self.backends):
            if used[slot]:
                features.append(backend(x[:, slot : slot + 1]))
            else:
                # No sample in the batch has this marker: skip its backend (the paper's
                # "ablate any backend corresponding to a missing marker").
                features.append(x.new_zeros((x.shape[0], self.backend_filters, *size)))
        mean, variance = abstraction(torch.stack(features, dim=1), availability)
        return self.frontend(torch.cat([mean, variance], dim=1))

    def output_size(self, input_size: int) -> int:
        """Spatial output size for an input of ``input_size`` (same rule for H and W).

        Raises
        ------
        ValueError
            If ``input_size`` is not admissible (see :meth:`valid_input_size`).
        """
        size = int(input_size)
        try:
            return self.frontend.output_size(size - self.backend_shrink)
        except ValueError:
            raise ValueError(
                f"input size {size} is not admissible for this HeMIS network ({self.padding} padding, backends "
                f"trimming {self.backend_shrink}, depth-{self.frontend.depth} frontend); use valid_input_size()"
            ) from None

    def valid_input_size(self, at_least: int) -> int:
        """Smallest admissible input size that is ``>= at_least``."""
        shrink = self.backend_shrink
        return self.frontend.valid_input_size(max(int(at_least) - shrink, 1)) + shrink

    def extra_repr(self) -> str:
        return (
            f"backend_filters={self.backend_filters}, backend_layers={self.backend_layers}, "
            f"padding={self.padding!r}, norm={self.norm!r}"
        )


@register_model("hemis-ms")
class HeMISMS(HeMIS):
    """HeMIS-MS: :class:`HeMIS` whose marker input layer defaults to Marker Sampling.

    At training time Marker Sampling drops whole backends: a dropped marker leaves the
    abstraction layer's moments exactly as if the sample never had it. Options as for
    :class:`HeMIS`; ``marker_input_options={"r_drop": ...}`` sets the drop rate.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        backend_filters: int = 16,
        backend_layers: int = 2,
        depth: int = 4,
        base_filters: int = 8,
        padding: str = "valid",
        norm: str = "none",
        marker_input: str = "ms",
        marker_input_options: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(
            in_channels, out_channels, backend_filters=backend_filters, backend_layers=backend_layers, depth=depth,
            base_filters=base_filters, padding=padding, norm=norm, marker_input=marker_input,
            marker_input_options=marker_input_options,
        )
