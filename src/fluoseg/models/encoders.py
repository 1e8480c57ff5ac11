"""Encoder backbones: ResNet-18/34/50/101 and DenseNet-121 in plain torch.

The transfer-learning architectures (:mod:`fluoseg.models.decoders`, ``unetpp``, ``fcn``,
``deeplab``) put a decoder or head on one of these. Each encoder

- takes any number of input channels (the K marker slots, not RGB);
- returns the feature maps of its five stages, ``forward(x) -> list[Tensor]``, with their
  channel counts and strides in :attr:`Encoder.feature_channels` and
  :attr:`Encoder.feature_strides` (``(2, 4, 8, 16, 32)`` by default);
- names its modules and parameters exactly like torchvision (``conv1``, ``bn1``,
  ``layer1.0.conv1``, ``layer1.0.downsample.0`` ...; ``features.conv0``,
  ``features.denseblock1.denselayer1.norm1``, ``features.transition1.conv`` ...), so that
  ImageNet state dicts of torchvision and timm load by key (see
  :mod:`fluoseg.models.pretrained`); the classifier (``fc`` / ``classifier``) is left out;
- can drop the stem's downsampling (``stem_stride=1``, LACSS: "The original ResNet50
  employs a stem component that performs a downsampling operation, which we eliminated in
  our model"), for cells that are small compared with ImageNet objects;
- can trade the stride of its last one or two stages for dilation (``output_stride``), as
  DeepLabv3 and torchvision's FCN do, which changes no parameter shape.

The five stages are (ResNet) the stem ``relu(bn1(conv1(x)))``, ``layer1`` (after the
max-pool), ``layer2``, ``layer3``, ``layer4``; (DenseNet) the stem ``relu0``, then each
dense block followed by its transition's normalisation and ReLU (the map before the
transition's 1x1 convolution and pooling, as segmentation-models-pytorch taps it), and
``relu(norm5)`` after the last block.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fluoseg.errors import FluosegError

STEM_STRIDES = (1, 2)
"""``stem_stride`` values: 2 is torchvision's stem (stride-2 convolution, then a stride-2
max-pool: total downsampling 4); 1 drops both (LACSS: no downsampling in the stem)."""

_ENCODERS: dict[str, Callable[..., Encoder]] = {}


def _register(name: str) -> Callable[[Callable[..., Encoder]], Callable[..., Encoder]]:
    def decorator(factory: Callable[..., Encoder]) -> Callable[..., Encoder]:
        _ENCODERS[name] = factory
        return factory

    return decorator


def encoder_names() -> list[str]:
    """Names accepted by :func:`build_encoder` (and the models' ``encoder`` option), sorted."""
    return sorted(_ENCODERS)


def build_encoder(name: str, *, in_channels: int, stem_stride: int = 2, output_stride: int | None = None) -> Encoder:
    """Build an encoder by name.

    Parameters
    ----------
    name
        One of :func:`encoder_names`: ``"resnet18"``, ``"resnet34"``, ``"resnet50"``,
        ``"resnet101"``, ``"densenet121"``.
    in_channels
        Channels of the input image (marker slots).
    stem_stride
        2 (torchvision's stem: total stem downsampling 4) or 1 (no stem downsampling, as
        LACSS); see :data:`STEM_STRIDES`.
    output_stride
        Stride of the last feature map. ``None`` keeps the natural one (32, or 8 with
        ``stem_stride=1``); half or a quarter of it replaces the stride of the last one or
        two stages by dilation (DeepLabv3: 16 or 8).

    Raises
    ------
    FluosegError
        For an unknown name or an invalid option value.
    """
    try:
        factory = _ENCODERS[name]
    except (KeyError, TypeError):
        raise FluosegError(f"unknown encoder {name!r}; choose one of {encoder_names()}") from None
    return factory(in_channels=in_channels, stem_stride=stem_stride, output_stride=output_stride)


def _check_options(in_channels: Any, stem_stride: Any) -> None:
    if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
        raise FluosegError(f"encoder in_channels must be a positive integer, got {in_channels!r}")
    if isinstance(stem_stride, bool) or stem_stride not in STEM_STRIDES:
        raise FluosegError(
            "encoder option 'stem_stride' must be 2 (torchvision's stem) or 1 (no stem downsampling), "
            f"got {stem_stride!r}"
        )


def dilated_stages(natural_stride: int, output_stride: int | None) -> int:
    """How many of the last stages trade their stride for dilation to reach ``output_stride``.

    Raises
    ------
    FluosegError
        If ``output_stride`` is not the natural stride, half or a quarter of it.
    """
    if output_stride is None:
        return 0
    choices = {natural_stride // 2**n: n for n in range(3)}
    if isinstance(output_stride, bool) or output_stride not in choices:
        raise FluosegError(
            f"output_stride must be one of {sorted(choices)} for this encoder and stem "
            f"(its natural stride is {natural_stride}), got {output_stride!r}"
        )
    return choices[output_stride]


class Encoder(nn.Module):
    """Base class of the encoders: a backbone returning the maps of its five stages.

    Attributes
    ----------
    name
        Registered name (``"resnet34"``).
    in_channels
        Input channels.
    feature_channels
        Channels of the five feature maps, shallow to deep.
    feature_strides
        Their strides relative to the input, e.g. ``(2, 4, 8, 16, 32)``; with dilation the
        last ones repeat (``(2, 4, 8, 8, 8)`` at output stride 8), without stem
        downsampling ``(1, 1, 2, 4, 8)``.
    first_conv
        State-dict key of the first convolution's weight, whose input channels are
        adapted when ImageNet (RGB) weights are loaded.
    """

    name: str
    in_channels: int
    feature_channels: tuple[int, ...]
    feature_strides: tuple[int, ...]
    first_conv: str

    @property
    def output_stride(self) -> int:
        """Total downsampling of the encoder: input sizes must be multiples of it."""
        return self.feature_strides[-1]

    def forward(self, x: Tensor) -> list[Tensor]:  # pragma: no cover - abstract
        """Feature maps of the five stages for ``x`` (N, in_channels, H, W)."""
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"name={self.name!r}, in_channels={self.in_channels}, feature_strides={self.feature_strides}"


# --------------------------------------------------------------------------------------- ResNet


def _conv3x3(in_planes: int, out_planes: int, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)


def _conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """ResNet-18/34 residual block: two 3x3 convolutions (torchvision names).

    Unlike torchvision's, it accepts dilation, so that ResNet-18/34 can serve DeepLabv3
    too: ``dilation`` for the first convolution and ``next_dilation`` (default the same)
    for the second, which in the first block of a dilated stage already sees the finer
    grid that replaced the stride.
    """

    expansion = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        dilation: int = 1,
        next_dilation: int | None = None,
    ) -> None:
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride, dilation)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes, 1, dilation if next_dilation is None else next_dilation)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """ResNet-50/101 bottleneck block, stride on the 3x3 convolution (ResNet v1.5, torchvision).

    ``next_dilation`` is accepted for symmetry with :class:`BasicBlock` and unused: the
    convolutions after the strided one are 1x1.
    """

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        dilation: int = 1,
        next_dilation: int | None = None,
    ) -> None:
        super().__init__()
        self.conv1 = _conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride, dilation)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = _conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNetEncoder(Encoder):
    """ResNet (He et al. 2016) without its classifier, returning five feature maps.

    Parameters
    ----------
    name
        Name recorded on the encoder.
    block
        :class:`BasicBlock` (ResNet-18/34) or :class:`Bottleneck` (ResNet-50/101).
    layers
        Blocks per stage, e.g. ``(3, 4, 23, 3)`` for ResNet-101.
    in_channels
        Input channels.
    stem_stride
        2 (``conv1`` with stride 2 and the 3x3 stride-2 max-pool) or 1 (``conv1`` with
        stride 1 and no max-pool).
    output_stride
        ``None`` or the natural stride divided by 1, 2 or 4 (dilation in ``layer4``, or in
        ``layer3`` and ``layer4``), as torchvision's ``replace_stride_with_dilation``.
    """

    def __init__(
        self,
        name: str,
        block: type[BasicBlock] | type[Bottleneck],
        layers: tuple[int, int, int, int],
        *,
        in_channels: int,
        stem_stride: int = 2,
        output_stride: int | None = None,
    ) -> None:
        super().__init__()
        _check_options(in_channels, stem_stride)
        natural = 32 if stem_stride == 2 else 8
        n_dilated = dilated_stages(natural, output_stride)
        self.name = name
        self.in_channels = in_channels
        self.first_conv = "conv1.weight"
        self.inplanes = 64
        self.dilation = 1
        self.conv1 = nn.Conv2d(in_channels, 64, 7, stride=stem_stride, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        # No parameters, so dropping it keeps every state-dict key.
        self.maxpool: nn.Module = nn.MaxPool2d(3, stride=2, padding=1) if stem_stride == 2 else nn.Identity()
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2, dilate=n_dilated >= 2)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2, dilate=n_dilated >= 1)
        del self.inplanes, self.dilation
        stem = stem_stride
        strides = [stem, stem * (2 if stem_stride == 2 else 1)]
        for index in range(3):  # layer2..layer4 halve the resolution unless dilated
            dilated = index >= 3 - n_dilated
            strides.append(strides[-1] * (1 if dilated else 2))
        self.feature_strides = tuple(strides)
        self.feature_channels = (64, 64 * block.expansion, 128 * block.expansion, 256 * block.expansion,
                                 512 * block.expansion)
        self._initialise()

    def _make_layer(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        planes: int,
        blocks: int,
        stride: int = 1,
        dilate: bool = False,
    ) -> nn.Sequential:
        # Follows torchvision's ResNet._make_layer so that block indices and names match.
        downsample = None
        previous_dilation = self.dilation
        if dilate:
            self.dilation *= stride
            stride = 1
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                _conv1x1(self.inplanes, planes * block.expansion, stride), nn.BatchNorm2d(planes * block.expansion)
            )
        layers = [block(self.inplanes, planes, stride, downsample, dilation=previous_dilation,
                        next_dilation=self.dilation)]
        self.inplanes = planes * block.expansion
        layers.extend(block(self.inplanes, planes, dilation=self.dilation) for _ in range(1, blocks))
        return nn.Sequential(*layers)

    def _initialise(self) -> None:
        # torchvision's initialisation, so that a randomly initialised encoder trains alike.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: Tensor) -> list[Tensor]:
        stem = self.relu(self.bn1(self.conv1(x)))
        c1 = self.layer1(self.maxpool(stem))
        c2 = self.layer2(c1)
        c3 = self.layer3(c2)
        c4 = self.layer4(c3)
        return [stem, c1, c2, c3, c4]


@_register("resnet18")
def resnet18(**options: Any) -> ResNetEncoder:
    """ResNet-18 encoder, features ``(64, 64, 128, 256, 512)``."""
    return ResNetEncoder("resnet18", BasicBlock, (2, 2, 2, 2), **options)


@_register("resnet34")
def resnet34(**options: Any) -> ResNetEncoder:
    """ResNet-34 encoder, features ``(64, 64, 128, 256, 512)`` (Kromp et al.'s U-Net ResNet34)."""
    return ResNetEncoder("resnet34", BasicBlock, (3, 4, 6, 3), **options)


@_register("resnet50")
def resnet50(**options: Any) -> ResNetEncoder:
    """ResNet-50 encoder, features ``(64, 256, 512, 1024, 2048)``."""
    return ResNetEncoder("resnet50", Bottleneck, (3, 4, 6, 3), **options)


@_register("resnet101")
def resnet101(**options: Any) -> ResNetEncoder:
    """ResNet-101 encoder, features ``(64, 256, 512, 1024, 2048)`` (the transfer-learning study's)."""
    return ResNetEncoder("resnet101", Bottleneck, (3, 4, 23, 3), **options)


# ------------------------------------------------------------------------------------- DenseNet


class AtrousAvgPool(nn.Module):
    """The 2x2 average pooling of a DenseNet transition at stride 1, for a dilated stage.

    À trous: averaging ``x[i]``, ``x[i + d]`` (and likewise along x) at every position, then
    dilating the following convolutions, computes the strided network's values on the
    finer grid; ``d`` is the dilation the input is already at. The far edge is padded by
    replication.
    """

    def __init__(self, dilation: int = 1) -> None:
        super().__init__()
        self.dilation = dilation

    def forward(self, x: Tensor) -> Tensor:
        d = self.dilation
        height, width = x.shape[-2:]
        padded = F.pad(x, (0, d, 0, d), mode="replicate")
        return (
            padded[..., :height, :width]
            + padded[..., d : d + height, :width]
            + padded[..., :height, d : d + width]
            + padded[..., d : d + height, d : d + width]
        ) / 4

    def extra_repr(self) -> str:
        return f"dilation={self.dilation}"


class DenseLayer(nn.Module):
    """BN-ReLU-1x1 conv-BN-ReLU-3x3 conv producing ``growth_rate`` new maps (torchvision names)."""

    def __init__(self, num_input_features: int, growth_rate: int, bn_size: int, dilation: int = 1) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(num_input_features)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(num_input_features, bn_size * growth_rate, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(bn_size * growth_rate)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(
            bn_size * growth_rate, growth_rate, 3, padding=dilation, dilation=dilation, bias=False
        )

    def forward(self, x: Tensor) -> Tensor:
        # Not in place: x is shared with the block's concatenated input.
        out = self.conv1(F.relu(self.norm1(x)))
        return self.conv2(self.relu2(self.norm2(out)))


class DenseBlock(nn.ModuleDict):
    """``num_layers`` dense layers ``denselayer1..N``, each fed all previous maps."""

    def __init__(
        self, num_layers: int, num_input_features: int, growth_rate: int, bn_size: int, dilation: int = 1
    ) -> None:
        super().__init__()
        for i in range(num_layers):
            layer = DenseLayer(num_input_features + i * growth_rate, growth_rate, bn_size, dilation)
            self.add_module(f"denselayer{i + 1}", layer)

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        features = [x]
        for layer in self.values():
            features.append(layer(torch.cat(features, 1)))
        return torch.cat(features, 1)


class Transition(nn.Module):
    """BN-ReLU-1x1 conv-2x2 average pool between dense blocks (torchvision names).

    :meth:`forward` also returns the normalised block output (after ``relu``), the
    encoder's feature map at this scale.
    """

    def __init__(self, num_input_features: int, num_output_features: int, *, pool: nn.Module) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(num_input_features)
        self.relu = nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(num_input_features, num_output_features, 1, bias=False)
        self.pool = pool

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        skip = self.relu(self.norm(x))
        return self.pool(self.conv(skip)), skip


class DenseNetEncoder(Encoder):
    """DenseNet (Huang et al. 2017) without its classifier, returning five feature maps.

    Parameters
    ----------
    name
        Name recorded on the encoder.
    growth_rate, block_config, num_init_features, bn_size
        DenseNet hyper-parameters (DenseNet-121: 32, ``(6, 12, 24, 16)``, 64, 4).
    in_channels
        Input channels.
    stem_stride
        2 (``conv0`` with stride 2 and ``pool0``) or 1 (stride-1 ``conv0``, no ``pool0``).
    output_stride
        ``None`` or the natural stride divided by 1, 2 or 4: the average pooling of the
        last one or two transitions runs at stride 1 (:class:`AtrousAvgPool`) and the
        following blocks' 3x3 convolutions are dilated.

    Notes
    -----
    Modules live under ``features`` as in torchvision (``features.conv0``,
    ``features.denseblock1.denselayer1.norm1``, ``features.transition1.conv``,
    ``features.norm5``).
    """

    def __init__(
        self,
        name: str,
        *,
        growth_rate: int,
        block_config: tuple[int, int, int, int],
        num_init_features: int,
        bn_size: int,
        in_channels: int,
        stem_stride: int = 2,
        output_stride: int | None = None,
    ) -> None:
        super().__init__()
        _check_options(in_channels, stem_stride)
        natural = 32 if stem_stride == 2 else 8
        n_dilated = dilated_stages(natural, output_stride)
        self.name = name
        self.in_channels = in_channels
        self.first_conv = "features.conv0.weight"
        features = nn.Module()
        features.conv0 = nn.Conv2d(in_channels, num_init_features, 7, stride=stem_stride, padding=3, bias=False)
        features.norm0 = nn.BatchNorm2d(num_init_features)
        features.relu0 = nn.ReLU(inplace=True)
        features.pool0 = nn.MaxPool2d(3, stride=2, padding=1) if stem_stride == 2 else nn.Identity()
        channels = num_init_features
        dilation = 1
        skip_channels = []
        for i, num_layers in enumerate(block_config):
            features.add_module(f"denseblock{i + 1}", DenseBlock(num_layers, channels, growth_rate, bn_size, dilation))
            channels += num_layers * growth_rate
            if i < len(block_config) - 1:
                # Transition i+1 feeds block i+2; the last n_dilated blocks are dilated.
                dilate = i + 2 > len(block_config) - n_dilated
                pool = AtrousAvgPool(dilation) if dilate else nn.AvgPool2d(2, stride=2)
                if dilate:
                    dilation *= 2
                features.add_module(f"transition{i + 1}", Transition(channels, channels // 2, pool=pool))
                skip_channels.append(channels)
                channels //= 2
        features.norm5 = nn.BatchNorm2d(channels)
        self.features = features
        self.n_blocks = len(block_config)
        strides = [stem_stride, stem_stride * (2 if stem_stride == 2 else 1)]
        for index in range(3):
            strides.append(strides[-1] * (1 if index >= 3 - n_dilated else 2))
        self.feature_strides = tuple(strides)
        self.feature_channels = (num_init_features, *skip_channels, channels)
        self._initialise()

    def _initialise(self) -> None:
        # torchvision's DenseNet initialisation.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: Tensor) -> list[Tensor]:
        f = self.features
        stem = f.relu0(f.norm0(f.conv0(x)))
        out = f.pool0(stem)
        maps = [stem]
        for i in range(1, self.n_blocks):
            out, skip = getattr(f, f"transition{i}")(getattr(f, f"denseblock{i}")(out))
            maps.append(skip)
        # torchvision's classifier path also applies a ReLU after norm5.
        maps.append(F.relu(f.norm5(getattr(f, f"denseblock{self.n_blocks}")(out))))
        return maps


@_register("densenet121")
def densenet121(**options: Any) -> DenseNetEncoder:
    """DenseNet-121 encoder, features ``(64, 256, 512, 1024, 1024)``."""
    return DenseNetEncoder(
        "densenet121", growth_rate=32, block_config=(6, 12, 24, 16), num_init_features=64, bn_size=4, **options
    )
