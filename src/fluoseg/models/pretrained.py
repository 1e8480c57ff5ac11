"""Pretrained encoder weights: download once, map keys, adapt the first convolution.

:func:`load_encoder_weights` fills an encoder of :mod:`fluoseg.models.encoders` from a
state dict of the same architecture, e.g. torchvision's ImageNet ResNet-101 or the backbone
of its COCO DeepLabv3, although the encoder takes K marker slots instead of RGB.

Sources
-------
- a local file written by ``torch.save``; always read with ``torch.load(weights_only=True)``
  (a weights file never executes code);
- an ``http(s)://`` URL, downloaded once into the cache folder (``cache_dir``, else
  ``$FLUOSEG_CACHE/weights``, else ``~/.cache/fluoseg/weights``) and read from there later;
- a name from :data:`KNOWN_WEIGHTS`: ``"imagenet"`` (torchvision's ImageNet weights of the
  encoder), ``"coco-fcn"`` / ``"coco-deeplabv3"`` (the ResNet-50/101 backbones of
  torchvision's COCO-trained FCN / DeepLabv3, as used by the transfer-learning study);
- an in-memory mapping of tensors.

Key mapping
-----------
The encoders use torchvision's parameter names, so most files load by key:

- torchvision and timm ResNets share the names (``conv1``, ``bn1``, ``layer1.0.conv1``,
  ``layer1.0.downsample.0``, classifier ``fc``); timm and torchvision DenseNets too
  (``features.conv0``, ``features.denseblock1.denselayer1.norm1``, classifier ``classifier``).
- The original torchvision DenseNet files (``densenet121-a639ec97.pth``) name dense-layer
  parameters ``...denselayer1.norm.1.weight``; these are renamed to ``norm1`` as
  torchvision's own loader does.
- Wrappers are unpacked: ``{"state_dict": ...}`` (also ``model_state_dict``,
  ``model_state`` of a fluoseg checkpoint, ``model``, ``net``, ``network``), and a common
  key prefix is found and stripped (``module.`` of DataParallel, ``encoder.`` of a fluoseg
  model, ``backbone.`` of torchvision segmentation models, or several of them).
- Classifier keys (``fc``, ``classifier``, ``aux_classifier``, ``head``, ``last_linear``) are
  expected to be unused and reported as ``ignored``, never as errors.

First convolution
-----------------
When the file's first convolution has ``C_src`` input channels (3 for RGB) and the encoder
``C``, every one of the C kernels becomes the mean of the C_src kernels scaled by
``C_src / C``: the response to an image whose slots all hold the same grey value equals
the RGB network's response to that grey image, whatever C. (A single slot gets the sum of
the RGB kernels, the usual grey-scale adaptation.) Other shape mismatches are refused.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from fluoseg.errors import FluosegError
from fluoseg.models.encoders import Encoder

logger = logging.getLogger(__name__)

CACHE_ENV = "FLUOSEG_CACHE"
"""Environment variable naming fluoseg's cache root; weights go to its ``weights`` folder."""

_TORCHVISION = "https://download.pytorch.org/models/"

KNOWN_WEIGHTS: dict[str, dict[str, str]] = {
    "imagenet": {
        "resnet18": _TORCHVISION + "resnet18-f37072fd.pth",
        "resnet34": _TORCHVISION + "resnet34-b627a593.pth",
        "resnet50": _TORCHVISION + "resnet50-0676ba61.pth",
        "resnet101": _TORCHVISION + "resnet101-63fe2227.pth",
        "densenet121": _TORCHVISION + "densenet121-a639ec97.pth",
    },
    "coco-fcn": {
        "resnet50": _TORCHVISION + "fcn_resnet50_coco-1167a1af.pth",
        "resnet101": _TORCHVISION + "fcn_resnet101_coco-7ecb50ca.pth",
    },
    "coco-deeplabv3": {
        "resnet50": _TORCHVISION + "deeplabv3_resnet50_coco-cd0a2569.pth",
        "resnet101": _TORCHVISION + "deeplabv3_resnet101_coco-586e9e4e.pth",
    },
}
"""Named weights per encoder: torchvision's ImageNet-1k (V1) weights and the backbones of its
COCO (VOC classes) segmentation models. Their file names carry a SHA-256 prefix, checked
after download."""

IGNORED_PREFIXES = ("fc.", "classifier.", "aux_classifier.", "head.", "last_linear.")
"""Classifier keys of ImageNet/segmentation files that an encoder does not use."""

WRAPPER_KEYS = ("state_dict", "model_state_dict", "model_state", "model", "net", "network")
"""Keys under which checkpoints nest their state dict, tried in this order."""

_OLD_DENSENET_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$"
)
_HASH_IN_NAME = re.compile(r"-([a-f0-9]{6,})\.")
_SHOWN = 5  # keys listed in error messages


@dataclass(frozen=True)
class LoadReport:
    """What :func:`load_encoder_weights` did.

    Attributes
    ----------
    source
        The file, URL or name the weights came from.
    loaded
        Encoder keys filled from the file.
    missing
        Encoder keys the file lacks (left as initialised); ``num_batches_tracked`` buffers,
        absent from older files and irrelevant to inference, are not listed.
    unexpected
        File keys the encoder has no use for, classifier keys excepted.
    adapted
        Encoder keys filled after adaptation (the first convolution's input channels).
    mismatched
        Keys present in both with incompatible shapes (left as initialised).
    ignored
        Classifier keys of the file, unused by design.
    prefix
        The key prefix stripped from the file's keys (``""`` for none).
    """

    source: str
    loaded: tuple[str, ...]
    missing: tuple[str, ...]
    unexpected: tuple[str, ...]
    adapted: tuple[str, ...]
    mismatched: tuple[str, ...]
    ignored: tuple[str, ...]
    prefix: str

    @property
    def complete(self) -> bool:
        """Whether every encoder parameter and statistic came from the file."""
        return not self.missing and not self.mismatched

    def summary(self) -> str:
        """One line for logs."""
        return (
            f"{len(self.loaded)} tensors loaded from {self.source} ({len(self.adapted)} adapted, "
            f"{len(self.missing)} missing, {len(self.mismatched)} mismatched, {len(self.unexpected)} unexpected, "
            f"{len(self.ignored)} classifier keys ignored)"
        )


def default_cache_dir() -> Path:
    """``$FLUOSEG_CACHE/weights`` if the variable is set, else ``~/.cache/fluoseg/weights``."""
    root = os.environ.get(CACHE_ENV)
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "fluoseg"
    return base / "weights"


def _fetch(url: str, destination: Path) -> None:
    """Download ``url`` to ``destination`` (replaced in tests; raises ``OSError`` when offline)."""
    request = urllib.request.Request(url, headers={"User-Agent": "fluoseg"})
    with urllib.request.urlopen(request, timeout=60) as response, open(destination, "wb") as out:
        shutil.copyfileobj(response, out, length=1 << 20)


def cached_download(url: str, *, cache_dir: str | Path | None = None, check_hash: bool = False) -> Path:
    """Path of the cached copy of ``url``, downloading it on first use.

    The file is written to a temporary name in the cache folder and renamed when complete,
    so an interrupted download never leaves a truncated file that later runs would trust.

    Parameters
    ----------
    url
        ``http://`` or ``https://`` address; the cached file keeps its base name.
    cache_dir
        Folder of the cache; default :func:`default_cache_dir`.
    check_hash
        Verify that the file's SHA-256 starts with the hex digits after the last ``-`` of
        its name (torch.hub's convention, used by torchvision's files).

    Raises
    ------
    FluosegError
        If the download fails (offline, unknown address) or the hash does not match.
    """
    folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    name = Path(urllib.parse.urlparse(url).path).name or hashlib.sha256(url.encode()).hexdigest()[:16]
    target = folder / name
    if target.is_file():
        return target
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FluosegError(
            f"cannot create the weights cache folder ({exc.strerror}); set {CACHE_ENV}", path=folder
        ) from None
    handle, partial = tempfile.mkstemp(prefix=f".{name}.", suffix=".partial", dir=folder)
    os.close(handle)
    partial_path = Path(partial)
    try:
        logger.info("downloading %s to %s", url, target)
        try:
            _fetch(url, partial_path)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise FluosegError(
                f"cannot download encoder weights from {url} ({reason}); check the network connection, or "
                f"download the file elsewhere and give its local path (or copy it to {target})"
            ) from None
        if check_hash:
            _check_hash(partial_path, name, url)
        os.replace(partial_path, target)
    finally:
        partial_path.unlink(missing_ok=True)
    return target


def _check_hash(path: Path, name: str, url: str) -> None:
    match = _HASH_IN_NAME.search(name)
    if match is None:
        return
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    if not digest.hexdigest().startswith(match.group(1)):
        raise FluosegError(f"the file downloaded from {url} is corrupt (SHA-256 does not match its name); try again")


def resolve_source(source: str | Path, encoder_name: str) -> str | Path:
    """Turn a :data:`KNOWN_WEIGHTS` name into its URL; other sources pass through.

    Raises
    ------
    FluosegError
        If the name has no weights for this encoder.
    """
    if isinstance(source, str) and source in KNOWN_WEIGHTS:
        urls = KNOWN_WEIGHTS[source]
        if encoder_name not in urls:
            raise FluosegError(
                f"no {source!r} weights for encoder {encoder_name!r}; they exist for {sorted(urls)} "
                "(or give a file path or URL)"
            )
        return urls[encoder_name]
    return source


def read_state_dict(source: str | Path, *, cache_dir: str | Path | None = None) -> dict[str, Tensor]:
    """Tensors of a weights file or URL, unwrapped from checkpoint containers.

    Raises
    ------
    FluosegError
        If the file is missing, cannot be read safely (``weights_only=True`` refuses
        arbitrary pickled objects), or holds no tensors.
    """
    text = str(source)
    is_url = text.startswith(("http://", "https://"))
    if is_url:
        path = cached_download(text, cache_dir=cache_dir, check_hash=_is_known_url(text))
    else:
        path = Path(text).expanduser()
    if not path.is_file():
        raise FluosegError("encoder weights file not found; give an existing file, an http(s) URL or "
                           f"one of {sorted(KNOWN_WEIGHTS)}", path=path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for foreign or truncated files
        raise FluosegError(
            f"cannot read encoder weights ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
            "expected a state dict saved with torch.save", path=path
        ) from None
    return _unwrap(state, path)


def _is_known_url(url: str) -> bool:
    return any(url in urls.values() for urls in KNOWN_WEIGHTS.values())


def _unwrap(state: Any, origin: str | Path) -> dict[str, Tensor]:
    for _ in range(4):  # nesting deeper than this is not a weights file
        if not isinstance(state, Mapping):
            break
        if any(isinstance(v, Tensor) for v in state.values()):
            return {str(k): v for k, v in state.items() if isinstance(v, Tensor)}
        inner = next((state[k] for k in WRAPPER_KEYS if isinstance(state.get(k), Mapping)), None)
        if inner is None:
            break
        state = inner
    raise FluosegError(f"no tensors found in encoder weights {origin}; expected a state dict (optionally under "
                       f"one of {list(WRAPPER_KEYS)})")


def _rename_old_densenet(key: str) -> str:
    match = _OLD_DENSENET_KEY.match(key)
    return match.group(1) + match.group(2) if match else key


def _find_prefix(keys: list[str], targets: set[str]) -> str:
    """The prefix that, stripped, makes the most file keys encoder keys ("" if none helps)."""
    votes: Counter[str] = Counter()
    for key in keys:
        # Candidate prefixes end at a dot: "module.encoder.conv1.weight" -> "", "module.", ...
        for start in [0, *(i + 1 for i, c in enumerate(key) if c == ".")]:
            if key[start:] in targets:
                votes[key[:start]] += 1
    if not votes:
        return ""
    best = max(votes.values())
    # Ties (rare) go to the shortest prefix, the least surprising reading.
    return min((p for p, v in votes.items() if v == best), key=len)


def _is_ignored(key: str) -> bool:
    return key.startswith(IGNORED_PREFIXES)


def adapt_first_conv(weight: Tensor, in_channels: int) -> Tensor:
    """Kernels for ``in_channels`` inputs from kernels ``(O, C_src, kh, kw)``.

    Every new input channel gets the mean of the ``C_src`` source kernels times
    ``C_src / in_channels``: for RGB weights and C slots, the mean of the RGB kernels
    repeated C times and scaled by 3/C.
    """
    source_channels = weight.shape[1]
    mean = weight.mean(dim=1, keepdim=True)
    return mean.repeat(1, in_channels, 1, 1) * (source_channels / in_channels)


def load_encoder_weights(
    encoder: Encoder,
    source: str | Path | Mapping[str, Tensor],
    *,
    strict: bool = True,
    allow_partial: bool = False,
    cache_dir: str | Path | None = None,
) -> LoadReport:
    """Fill ``encoder`` with pretrained weights.

    Parameters
    ----------
    encoder
        An encoder from :func:`fluoseg.models.encoders.build_encoder`, any input channels.
    source
        Local file, ``http(s)`` URL (downloaded once, see :func:`cached_download`), a name of
        :data:`KNOWN_WEIGHTS` (``"imagenet"``, ``"coco-fcn"``, ``"coco-deeplabv3"``), or a
        mapping of tensors.
    strict
        Refuse files with keys the encoder does not use (classifier keys excepted). The
        models load with ``strict=False``: extra keys (a decoder) do no harm there.
    allow_partial
        Accept files that leave encoder tensors missing or with mismatched shapes; those keep
        their initialisation. By default such a load is refused, since a silently partial
        encoder trains, just worse.
    cache_dir
        Download cache folder for URLs; default :func:`default_cache_dir`.

    Returns
    -------
    LoadReport
        Loaded, missing, unexpected, adapted, mismatched and ignored keys.

    Raises
    ------
    FluosegError
        For an unreadable source, a file matching none of the encoder's keys, missing or
        mismatched tensors (unless ``allow_partial``), or unexpected keys (if ``strict``);
        the message lists the first few keys.
    """
    if isinstance(source, Mapping):
        label = "<state dict>"
        state = _unwrap(source, label)
    else:
        resolved = resolve_source(source, encoder.name)
        label = str(resolved)
        state = read_state_dict(resolved, cache_dir=cache_dir)
    own = encoder.state_dict()
    targets = set(own)
    renamed = {_rename_old_densenet(k): v for k, v in state.items()}
    prefix = _find_prefix(list(renamed), targets)
    stripped: dict[str, Tensor] = {}
    unexpected: list[str] = []
    ignored: list[str] = []
    for key, value in renamed.items():
        name = key[len(prefix) :] if key.startswith(prefix) else None
        if name is not None and name in targets:
            stripped[name] = value
        elif _is_ignored(key) or (name is not None and _is_ignored(name)):
            ignored.append(key)
        else:
            unexpected.append(key)
    if not stripped:
        raise FluosegError(
            f"none of the {len(state)} keys of {label} names a tensor of the {encoder.name} encoder "
            f"(file keys start {sorted(state)[:3]}, encoder keys {sorted(targets)[:3]}); are these weights for "
            "another architecture?"
        )

    new_state = dict(own)
    loaded: list[str] = []
    adapted: list[str] = []
    mismatched: list[str] = []
    for name, value in stripped.items():
        expected = own[name]
        if value.shape != expected.shape:
            if name == encoder.first_conv and value.ndim == 4 and value.shape[0] == expected.shape[0] \
                    and value.shape[2:] == expected.shape[2:]:
                value = adapt_first_conv(value.to(torch.float64), expected.shape[1])
                adapted.append(name)
            else:
                mismatched.append(f"{name} (file {tuple(value.shape)}, encoder {tuple(expected.shape)})")
                continue
        new_state[name] = value.to(dtype=expected.dtype)
        loaded.append(name)
    missing = [k for k in own if k not in stripped and not k.endswith("num_batches_tracked")]
    report = LoadReport(source=label, loaded=tuple(loaded), missing=tuple(missing), unexpected=tuple(unexpected),
                        adapted=tuple(adapted), mismatched=tuple(mismatched), ignored=tuple(ignored), prefix=prefix)
    if (missing or mismatched) and not allow_partial:
        problems = [*(f"missing {k}" for k in missing), *(f"mismatched {k}" for k in mismatched)]
        raise FluosegError(
            f"encoder weights {label} leave {len(missing)} tensors of the {encoder.name} encoder missing and "
            f"{len(mismatched)} mismatched (first: {', '.join(problems[:_SHOWN])}); use weights of the same "
            "architecture, or allow a partial load (encoder_weights_partial: true)"
        )
    if unexpected and strict:
        raise FluosegError(
            f"encoder weights {label} hold {len(unexpected)} keys the {encoder.name} encoder does not use "
            f"(first: {', '.join(unexpected[:_SHOWN])}); load with strict=False to ignore them"
        )
    # Every encoder key is in new_state, so this strict load cannot drop anything silently.
    encoder.load_state_dict(new_state, strict=True)
    logger.info("encoder %s: %s", encoder.name, report.summary())
    return report


def without_encoder_weights(options: Mapping[str, Any]) -> dict[str, Any]:
    """Model options with ``encoder_weights`` removed, for rebuilding from a checkpoint.

    A model's spec records the ``encoder_weights`` it was built with; a network rebuilt to
    receive a checkpoint's state dict does not need them (they would be overwritten) and
    must not depend on the file or the network being there.
    """
    result = dict(options)
    if "encoder_weights" in result:
        result["encoder_weights"] = None
    return result
