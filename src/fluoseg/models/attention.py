"""Attention modules for U-Net blocks: Squeeze-and-Excitation and Marker Excite.

Both recalibrate the F feature maps of a block with one weight in (0, 1) per map,
``X_f <- w_f X_f`` (MS-ME paper, Fig. 3a); they differ in what the weights depend on:

- ``"se"`` (Squeeze-and-Excitation, Hu et al. 2018; the MS-SE baseline): the block's own
  activations, through their spatial means.
- ``"me"`` (Marker Excite, MS-ME paper): only the availability vector V of the markers
  the network receives, never the image.

They register with :func:`~fluoseg.models.registry.register_attention` and are chosen with
the U-Net options ``attention`` (``"se"``/``"me"``), ``attention_options`` and
``attention_at``. Without ``attention_at`` they go after the encoder, bottleneck and
decoder blocks (E+B+D), the paper's best placement (Fig. 3f,g); ``["input", ...]``
adds the first block for the ablation.

Also here: the analysis of Supplementary Fig. 6 (:func:`me_layer_outputs`,
:func:`mean_pairwise_cosine_distance`) and the width of the MS+ baseline, the U-Net
widened until it has over 20 % more parameters (:func:`widened_base_filters`), which
shows that attention gains do not come from model size.
"""

from __future__ import annotations

from itertools import combinations
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from fluoseg.errors import FluosegError
from fluoseg.models.registry import count_parameters, register_attention
from fluoseg.models.unet import UNet

DEFAULT_PLACEMENT = ("encoder", "bottleneck", "decoder")
"""Blocks that get SE/ME when ``attention_at`` is not given: E+B+D as in MS-ME."""

MAX_DEFAULT_HIDDEN = 4095
"""Largest 2^K - 1 Marker Excite uses unasked (K = 12); beyond, ``hidden`` must be given."""


@register_attention("se")
class SqueezeExcitation(nn.Module):
    """Squeeze-and-Excitation: weight each feature map by a function of all maps' means.

    MS-ME paper (MS-SE): each module learns "a weighting function delta: R^F -> R^F of a
    feature map X with F activations, where each activation layer X_f is weighted as a
    function of its layer-wise mean value <X_f>, i.e. X_f <- delta_f(<X_f>) X_f. delta is
    parametrized using two fully-connected network layers, respectively, with F/2 and F
    nodes and no biases. The first layer is followed by a [ReLU] and the second one by a
    sigmoid function."

    Parameters
    ----------
    channels
        Number of feature maps F of the block.
    n_markers
        Number of marker slots K (unused: SE does not look at the availability).
    reduction
        The hidden layer has ``max(1, F // reduction)`` units; 2 in the paper.

    Raises
    ------
    FluosegError
        If ``reduction`` is not a positive integer.
    """

    default_at = DEFAULT_PLACEMENT

    def __init__(self, channels: int, n_markers: int, *, reduction: int = 2) -> None:
        super().__init__()
        if isinstance(reduction, bool) or not isinstance(reduction, int) or reduction < 1:
            raise FluosegError(f"attention option 'reduction' must be a positive integer, got {reduction!r}")
        hidden = max(1, channels // reduction)
        self.squeeze = nn.Linear(channels, hidden, bias=False)
        self.excite = nn.Linear(hidden, channels, bias=False)

    def weights(self, features: Tensor) -> Tensor:
        """``(N, F)`` weights in (0, 1) for features ``(N, F, H, W)``."""
        return torch.sigmoid(self.excite(torch.relu(self.squeeze(features.mean(dim=(-2, -1))))))

    def forward(self, features: Tensor, availability: Tensor) -> Tensor:
        return features * self.weights(features)[:, :, None, None]


@register_attention("me")
class MarkerExcite(nn.Module):
    """Marker Excite: weight each feature map by a function of the markers available.

    MS-ME paper: ME "learns a weighting from a binary vector V encoding which of the K
    markers are presented to the network as input. Our module thus learns a function
    omega: {0, 1}^K -> R^F to weight the activations as X_f <- omega_f(V) X_f. [...] we
    parametrize omega using two fully-connected layers. The first layer has as many nodes
    as possible marker combinations (2^K - 1) and we employ biases in both layers, which
    is seen to increase F1-score (Supplementary Fig. 4)." The layers are followed by a
    ReLU and a sigmoid, as in SE. The weights depend on V only: the image never reaches
    them, so for a given marker combination the module is a fixed per-channel scaling.

    V is the availability after the marker input layer, i.e. at training time the markers
    Marker Sampling kept.

    Parameters
    ----------
    channels
        Number of feature maps F of the block.
    n_markers
        Number of marker slots K, the length of V.
    bias
        Biases in both fully-connected layers (paper: yes; ``False`` is the Supplementary
        Fig. 4 ablation).
    hidden
        Units of the first layer; ``None`` is the paper's ``2**K - 1``. Must be given when
        K > 12, where ``2**K - 1`` would be wastefully large.

    Raises
    ------
    FluosegError
        If ``hidden`` is not a positive integer, or is left out for K > 12.
    """

    default_at = DEFAULT_PLACEMENT

    def __init__(self, channels: int, n_markers: int, *, bias: bool = True, hidden: int | None = None) -> None:
        super().__init__()
        if not isinstance(bias, bool):
            raise FluosegError(f"attention option 'bias' must be true or false, got {bias!r}")
        if hidden is None:
            hidden = 2**n_markers - 1
            if hidden > MAX_DEFAULT_HIDDEN:
                raise FluosegError(
                    f"Marker Excite would have 2^{n_markers} - 1 = {hidden} hidden units for {n_markers} markers; "
                    f"set attention_options.hidden to a smaller number"
                )
        elif isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 1:
            raise FluosegError(f"attention option 'hidden' must be a positive integer, got {hidden!r}")
        self.n_markers = n_markers
        self.squeeze = nn.Linear(n_markers, hidden, bias=bias)
        self.excite = nn.Linear(hidden, channels, bias=bias)

    def weights(self, availability: Tensor) -> Tensor:
        """``(N, F)`` weights in (0, 1) for availability vectors ``(N, K)``."""
        return torch.sigmoid(self.excite(torch.relu(self.squeeze(availability.to(self.squeeze.weight.dtype)))))

    def forward(self, features: Tensor, availability: Tensor) -> Tensor:
        return features * self.weights(availability).to(features.dtype)[:, :, None, None]


def availability_vectors(n_markers: int) -> np.ndarray:
    """All ``2**K - 1`` non-empty availability vectors, ``(2**K - 1, K)`` float32 of 0/1.

    Ordered like :meth:`fluoseg.markers.MarkerPanel.subsets`: fewest markers first, then
    by slot (for K = 3: 100, 010, 001, 110, 101, 011, 111).
    """
    rows = [
        [1.0 if slot in combo else 0.0 for slot in range(n_markers)]
        for size in range(1, n_markers + 1)
        for combo in combinations(range(n_markers), size)
    ]
    return np.asarray(rows, dtype=np.float32).reshape(-1, n_markers)


def me_layer_outputs(model: nn.Module, panel_size: int) -> dict[str, np.ndarray]:
    """Output of every Marker Excite module for every marker combination.

    The data of the MS-ME paper's Supplementary Fig. 6: since ME depends only on the
    availability vector, each module is summarised by its ``2**K - 1`` weight vectors.

    Parameters
    ----------
    model
        A network containing :class:`MarkerExcite` modules, e.g. a U-Net built with
        ``attention="me"``.
    panel_size
        Number of marker slots K the model was built for.

    Returns
    -------
    dict of str to numpy.ndarray
        Module path (``"encoders.1.hook"``, ``"bottleneck.hook"``, ``"decoders.0.hook"``,
        in forward order) to an array ``(2**K - 1, F)`` of weights, rows in the order of
        :func:`availability_vectors`. In a U-Net, ``encoders.i`` is resolution level i
        and ``decoders.i`` level ``depth - 1 - i`` (level 0 is full resolution).

    Raises
    ------
    FluosegError
        If the model has no Marker Excite module or was built for another panel size.
    """
    modules = {name: module for name, module in model.named_modules() if isinstance(module, MarkerExcite)}
    if not modules:
        raise FluosegError("the model has no Marker Excite modules; build it with attention 'me'")
    sizes = {module.n_markers for module in modules.values()}
    if sizes != {panel_size}:
        raise FluosegError(f"the model's Marker Excite modules expect {sorted(sizes)} markers, not {panel_size}")
    vectors = torch.from_numpy(availability_vectors(panel_size))
    outputs = {}
    with torch.no_grad():
        for name, module in modules.items():
            weights = module.weights(vectors.to(module.squeeze.weight.device))
            outputs[name] = weights.float().cpu().numpy()
    return outputs


def pairwise_cosine_distances(outputs: np.ndarray) -> np.ndarray:
    """Cosine distances ``1 - cos`` between all pairs of rows of ``outputs`` (M, F).

    Returns
    -------
    numpy.ndarray
        The ``M (M - 1) / 2`` distances of the pairs ``i < j``, row-major (the condensed
        form of :func:`scipy.spatial.distance.pdist`).
    """
    rows = np.asarray(outputs, dtype=np.float64)
    if rows.ndim != 2:
        raise ValueError(f"expected a 2D array (combinations, features), got shape {rows.shape}")
    # Sigmoid outputs are positive, so norms are never 0; the floor only guards odd inputs.
    unit = rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
    first, second = np.triu_indices(len(rows), k=1)
    return 1.0 - np.einsum("ij,ij->i", unit[first], unit[second])


def mean_pairwise_cosine_distance(outputs: np.ndarray) -> float:
    """Mean cosine distance between the rows of one ME module's outputs (M, F).

    The MS-ME paper's "recalibration strength" of a layer (Supplementary Fig. 6): 0 when
    the module weights channels the same way for every marker combination, larger the
    more the weighting depends on which markers are available.

    Raises
    ------
    ValueError
        If ``outputs`` is not 2D with at least two rows.
    """
    distances = pairwise_cosine_distances(outputs)
    if distances.size == 0:
        raise ValueError("need at least two combinations (rows) to compare")
    return float(distances.mean())


def _unet_parameters(base_filters: int, depth: int, in_channels: int, out_channels: int, **options: Any) -> int:
    # On the meta device nothing is allocated or initialised, so even wide networks count
    # instantly, with the exact architecture rather than a formula that could drift from it.
    with torch.device("meta"):
        net = UNet(in_channels, out_channels, depth=depth, base_filters=base_filters, **options)
    return count_parameters(net)


def widened_base_filters(
    base_filters: int, depth: int, in_channels: int, out_channels: int, min_increase: float = 0.2, **options: Any
) -> int:
    """Width of the MS+ baseline: the narrowest U-Net with over ``min_increase`` more parameters.

    MS-ME paper: "a much larger UNet baseline (MS+) of over 20% more parameters" shows
    that the gain of Marker Excite (+0.6 % parameters) is not a matter of model size.

    Parameters
    ----------
    base_filters, depth, in_channels, out_channels
        The reference U-Net.
    min_increase
        Required relative increase of the parameter count (strictly exceeded).
    **options
        Further U-Net options of the reference (``norm``, ...) that change the count.

    Returns
    -------
    int
        The smallest ``base_filters`` whose U-Net has more than
        ``(1 + min_increase)`` times the reference's parameters (36 for the MS-ME U-Net:
        depth 4, 32 filters, 5 markers, 2 classes).

    Raises
    ------
    FluosegError
        If ``min_increase`` is not a non-negative number.
    """
    if isinstance(min_increase, bool) or not isinstance(min_increase, (int, float)) or min_increase < 0:
        raise FluosegError(f"min_increase must be a non-negative number, got {min_increase!r}")
    target = (1.0 + min_increase) * _unet_parameters(base_filters, depth, in_channels, out_channels, **options)
    width = base_filters + 1
    # Counts grow with the width, so the first width above the target is the answer.
    while _unet_parameters(width, depth, in_channels, out_channels, **options) <= target:
        width += 1
    return width
