"""``fluoseg export``: a trained run as a bioimage.io model package (spec 0.5, zip).

The package holds the run's networks twice, as ``pytorch_state_dict`` weights whose
architecture is :mod:`fluoseg.bioimage.network` (copied in as a source file) and as
TorchScript (traced; runs without fluoseg), plus test tensors cut from a real sample, a
model card, a cover image and, in ``config.fluoseg``, the run's checkpoint metadata from
which ``fluoseg predict model.zip`` rebuilds the run exactly. Needs the ``bioimageio``
extra (``pip install fluoseg[bioimageio]``).
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
import torch

from fluoseg.bioimage import network as network_module
from fluoseg.bioimage.card import decoding_kind, output_channel_names, write_cover, write_model_card
from fluoseg.bioimage.describe import NORMALISATION_EPS, PackageFiles, PackageInfo, build_description
from fluoseg.bioimage.network import OptionalAvailability, PackagedNetwork
from fluoseg.bioimage.package import is_package
from fluoseg.bioimage.sizes import PackageSizes, package_sizes
from fluoseg import zoo
from fluoseg.bioimage.sources import resolve_model
from fluoseg.errors import FluosegError
from fluoseg.io import atomic_path, read_image, write_text_atomically
from fluoseg.markers import MarkerPanel, MarkerSelection
from fluoseg.run import Checkpoint, RunDir

DEFAULT_TEST_SIZE = 256
"""Test tensors are cut to the largest admissible size up to this (small packages, fast tests)."""
ARCHITECTURE_FILE = "fluoseg_network.py"
REQUIRED_EXTRA = "install the bioimageio extra: pip install 'fluoseg[bioimageio]'"


@dataclass(frozen=True)
class TestSample:
    """The image test tensors are cut from: ``(C, Y, X)`` with its channel names."""

    array: np.ndarray
    channel_names: tuple[str, ...]


def export_package(model: str | Path, out: str | Path, *, sample: str | Path | None = None,
                   channel_names: Sequence[str] | None = None, name: str | None = None,
                   authors: Sequence[str] = ("fluoseg",), license: str = "CC-BY-4.0", checkpoint: str = "best",
                   test_size: int = DEFAULT_TEST_SIZE, overwrite: bool = False) -> Path:
    """Write a trained run as a bioimage.io model package.

    Parameters
    ----------
    model
        A run directory, or a model name known to a lookup (:mod:`fluoseg.bioimage.sources`).
    out
        The ``.zip`` to write.
    sample
        Image the test tensors and cover are cut from; default: the first test (else
        validation, else training) sample of the run's split.
    channel_names
        Marker names of ``sample``'s channels when the file does not name them.
    name, authors, license
        Shown on bioimage.io; ``name`` defaults to one made from the run's folder name.
    checkpoint
        ``best`` or ``last``.
    test_size
        Largest side of the test tensors.
    overwrite
        Replace an existing ``out``.

    Raises
    ------
    FluosegError
        A missing or foreign model, an existing output, a sample that lacks names or is
        smaller than the network needs, or the bioimageio extra not being installed.
    """
    out = Path(out)
    if out.suffix.lower() != ".zip":
        raise FluosegError("a bioimage.io package is a .zip file; give --out NAME.zip", path=out)
    if out.exists() and not overwrite:
        raise FluosegError("output exists; pass --overwrite to replace it", path=out)
    source = resolve_model(model)
    if is_package(source):
        raise FluosegError("this is already a bioimage.io package; export a run directory", path=source)
    if zoo.is_zoo_folder(source):  # a pretrained model shipped with fluoseg
        run, checkpoints = None, [zoo.load_folder(source)]
    else:
        run = RunDir.open(source)
        checkpoints = run.load_all(checkpoint)
    if any(c.model.is_detector for c in checkpoints):
        raise FluosegError(f"{checkpoints[0].model.name} is a detection model, which bioimage.io packages (one "
                           "tensor in, maps out) cannot describe; predict with 'fluoseg predict' instead", path=source)
    _require_bioimageio()
    packaged = packaged_network(checkpoints)
    sizes = package_sizes(list(packaged.networks))
    packaged.margin = sizes.margin
    test = _test_sample(run, sample, channel_names, checkpoints[0].markers)
    with tempfile.TemporaryDirectory(prefix="fluoseg-export-") as folder:
        files = _write_files(Path(folder), packaged, checkpoints, sizes, test, test_size)
        info = _package_info(run, checkpoints, name=name, authors=authors, license=license, source=Path(source))
        write_model_card(files.documentation, name=info.name, description=info.description,
                         markers=checkpoints[0].markers, output_channels=info.output_channels,
                         task=checkpoints[0].task, classes=[c for ck in checkpoints for c in ck.classes],
                         preprocess=checkpoints[0].preprocess.as_dict(), sizes=sizes, training=info.training,
                         fluoseg_version=info.fluoseg_version)
        description = build_description(checkpoints, sizes, files, info)
        _save(description, Path(folder), out)
    return out


def test_package(path: str | Path) -> list[str]:
    """Run bioimage.io's own test (``bioimageio test``) on a package; returns what failed (empty: passed).

    It validates the description, reproduces the test outputs with every weights format
    and runs every weights format at several admissible sizes and batch sizes, offline.

    Raises
    ------
    FluosegError
        If bioimageio.core is not installed.
    """
    try:
        from bioimageio.core import test_model
    except ImportError:
        raise FluosegError(f"testing a package needs bioimageio.core; {REQUIRED_EXTRA}") from None
    summary = test_model(str(path))
    return [f"{detail.name}: {'; '.join(e.msg for e in detail.errors)}"
            for detail in summary.details if detail.status == "failed"]


def packaged_network(checkpoints: Sequence[Checkpoint]) -> PackagedNetwork:
    """The members of a run, with their weights, as one :class:`PackagedNetwork` (margin 0)."""
    network = PackagedNetwork([{"model": c.model.as_dict(), "task": dict(c.task)} for c in checkpoints])
    for member, checkpoint in zip(network.networks, checkpoints):
        member.load_state_dict(checkpoint.weights)
    return network.eval()


def spec_normalise(slots: np.ndarray, checkpoint: Checkpoint) -> np.ndarray:
    """The package's preprocessing on ``(K, Y, X)`` slots, as the spec defines it (with its epsilon)."""
    slots = slots.astype(np.float64)
    if checkpoint.preprocess.normalization == "percentile":
        low, high = np.percentile(slots, checkpoint.preprocess.percentiles, axis=(1, 2), keepdims=True)
        return ((slots - low) / (high - low + NORMALISATION_EPS)).astype(np.float32)
    mean, std = slots.mean(axis=(1, 2), keepdims=True), slots.std(axis=(1, 2), keepdims=True)
    return ((slots - mean) / (std + NORMALISATION_EPS)).astype(np.float32)


def _test_sample(run: RunDir | None, sample: str | Path | None, channel_names: Sequence[str] | None,
                 markers: Sequence[str] = ()) -> TestSample:
    if sample is None and run is None:  # a pretrained model: a shipped sample image of its marker
        from fluoseg.data.samples import sample_paths

        if tuple(markers) != ("DNA",):
            raise FluosegError("this pretrained model has no shipped sample; pass --sample with an image")
        image = read_image(sample_paths()[0][0])
        return TestSample(_middle_plane(image.array), ("DNA",))
    if sample is not None:
        image = read_image(sample)
        names = tuple(channel_names) if channel_names else image.channel_names
        if not names and image.n_channels == 1 and len(markers) == 1:
            names = tuple(markers)  # as in predict: one unnamed channel for a one-marker model is that marker
        if not names or len(names) != image.n_channels:
            raise FluosegError(f"the sample has {image.n_channels} channel(s) but no marker name for each; pass "
                               "--sample-channels with one name per channel", path=sample)
        return TestSample(_middle_plane(image.array), tuple(names))
    from fluoseg.data.manifest import load_manifest  # deferred: only needed without --sample

    config = run.read_config()
    manifest_path = (config.get("data") or {}).get("manifest")
    if not manifest_path or not Path(manifest_path).is_file():
        raise FluosegError("the run's data manifest is not found; pass --sample with an image to cut the test "
                           "tensors from", path=run.path)
    manifest = load_manifest(manifest_path)
    split = run.split()
    ids = split["test"] or split["val"] or split["train"] or [s.id for s in manifest.samples]
    chosen = manifest.sample(ids[0])
    return TestSample(_middle_plane(chosen.read_image().array), tuple(chosen.channel_names))


def _middle_plane(array: Any) -> np.ndarray:
    array = np.asarray(array, dtype=np.float32)
    return array[:, array.shape[1] // 2] if array.ndim == 4 else array


def _write_files(folder: Path, packaged: PackagedNetwork, checkpoints: Sequence[Checkpoint], sizes: PackageSizes,
                 test: TestSample, test_size: int) -> PackageFiles:
    first = checkpoints[0]
    panel = MarkerPanel(first.markers)
    ignored = set(first.build_task().ignored_channels)
    selection = MarkerSelection.resolve(panel, test.channel_names, ignore=ignored)
    slots = selection.arrange(test.array)
    side = sizes.largest_up_to(min(test_size, *slots.shape[-2:]))
    top, left = ((n - side) // 2 for n in slots.shape[-2:])
    raw = np.ascontiguousarray(slots[:, top:top + side, left:left + side])[None]
    availability = np.asarray(selection.availability, np.float32)[None]
    image = torch.from_numpy(spec_normalise(raw[0], first)[None])
    available = torch.from_numpy(availability)
    with torch.inference_mode():
        output = packaged(image, available)
    traced = _trace(packaged, image, available, sizes)
    files = PackageFiles(
        state_dict=folder / "weights.pt", torchscript=folder / "weights_torchscript.pt",
        architecture=folder / ARCHITECTURE_FILE, environment=folder / "environment.yaml",
        documentation=folder / "README.md", cover=folder / "cover.png", test_image=folder / "test_image.npy",
        test_availability=folder / "test_availability.npy", test_output=folder / "test_maps.npy",
        samples=(folder / "sample_image.tif", folder / "sample_availability.tif", folder / "sample_maps.tif"))
    torch.save(packaged.state_dict(), files.state_dict)
    traced.save(str(files.torchscript))
    files.architecture.write_text(Path(network_module.__file__).read_text(encoding="utf-8"), encoding="utf-8")
    write_text_atomically(files.environment, _environment())
    np.save(files.test_image, raw)
    np.save(files.test_availability, availability)
    np.save(files.test_output, output.numpy())
    for path, array in zip(files.samples, (raw, availability, output.numpy())):  # human-viewable copies
        tifffile.imwrite(path, array, photometric="minisblack")
    kind = decoding_kind(first.task)
    decoded = first.build_task().decode(output[0, : first.build_task().activated_channels()].numpy())
    write_cover(files.cover, image[0].numpy(), decoded, instance=kind not in ("semantic", "regression"))
    return files


def _trace(packaged: PackagedNetwork, image: torch.Tensor, availability: torch.Tensor,
           sizes: PackageSizes) -> torch.jit.ScriptModule:
    """TorchScript by tracing, checked at a second size (a traced shape constant would break tiling)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # the networks' size checks become constants
        traced = torch.jit.trace(packaged, (image, availability), check_trace=False)
    other = torch.zeros(1, image.shape[1], sizes.minimum, sizes.minimum + sizes.step)
    other[:, :, :: 7, :: 5] = 1.0
    with torch.inference_mode():
        expected, actual = packaged(other, availability), traced(other, availability)
    if expected.shape != actual.shape or not torch.allclose(expected, actual, atol=1e-5):
        raise RuntimeError("the traced network does not generalise to other input sizes")
    return torch.jit.script(OptionalAvailability(traced))


def _environment() -> str:
    import fluoseg

    return ("name: fluoseg\nchannels:\n  - pytorch\n  - conda-forge\ndependencies:\n"
            f"  - python>=3.10\n  - pytorch={torch.__version__.split('+')[0]}\n  - pip\n  - pip:\n"
            f"      - fluoseg=={fluoseg.__version__}\n")


def _package_info(run: RunDir | None, checkpoints: Sequence[Checkpoint], *, name: str | None,
                  authors: Sequence[str], license: str, source: Path | None = None) -> PackageInfo:
    import fluoseg

    first = checkpoints[0]
    classes = [c for ck in checkpoints for c in ck.classes]
    outputs = tuple(n for ck in checkpoints for n in output_channel_names(ck.task, ck.classes))
    kind = decoding_kind(first.task)
    what = "instance segmentation" if first.task.get("name") == "instance" else (
        "in-silico labelling" if kind == "regression" else "semantic segmentation")
    training: dict[str, Any] = {}
    if run is not None:
        train = run.read_config().get("train") or {}
        training = {key: train[key] for key in ("epochs", "batch_size", "patch_size", "learning_rate", "optimizer",
                                                "loss") if key in train}
        training["samples (train/val/test)"] = "/".join(str(len(v)) for v in run.split().values())
    else:
        training["pretrained"] = f"fluoseg zoo model {source.name if source else ''} (its card: 'fluoseg models')"
    training["model"] = f"{first.model.name} {first.model.options}"
    folder = run.path if run is not None else source
    return PackageInfo(
        name=name or _default_name(folder.name if folder is not None else "model", kind),
        description=(f"fluoseg {what} ({kind}) of {', '.join(classes) or 'objects'} from any subset of the "
                     f"markers {', '.join(first.markers)}."),
        authors=tuple(authors), license=license, output_channels=outputs,
        tags=("fluoseg", "fluorescence-light-microscopy", "segmentation", "2d", "pytorch", "unet"
              if first.model.name == "unet" else first.model.name, kind),
        fluoseg_version=fluoseg.__version__, torch_version=torch.__version__.split("+")[0], training=training)


def _default_name(folder: str, kind: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9_+\- ()]", "-", folder).strip() or "model"
    return f"fluoseg {kind} {cleaned}"[:64]


def _require_bioimageio() -> None:
    try:
        import bioimageio.spec  # noqa: F401
    except ImportError:
        raise FluosegError(f"bioimage.io export needs bioimageio.spec; {REQUIRED_EXTRA}") from None


def _save(description: Any, folder: Path, out: Path) -> None:
    """Zip the package in ``folder`` (bioimageio.spec checks every file's hash) and move it into place."""
    from bioimageio.spec import save_bioimageio_package

    packed = save_bioimageio_package(description, output_path=folder / "package.zip")
    with atomic_path(out, overwrite=True) as temporary:
        shutil.move(packed, temporary)
