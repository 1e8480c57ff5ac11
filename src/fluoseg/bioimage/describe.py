"""The bioimage.io resource description (``rdf.yaml``, spec 0.5) of an exported fluoseg model.

Everything bioimage.io can state natively is stated natively: input channel names are the
trained markers, the marker availability vector is a second input whose channels are the
same markers, admissible sizes are a ``ParameterizedSize``, the halo is on the output
axes, per-sample normalisation is the spec's ``zero_mean_unit_variance`` or
``scale_range`` over ``y, x`` per channel, and the pixel size is the spatial axes' scale
in micrometres. What the spec cannot express (watershed or border decoding into instance
labels, the instance scale normalisation) is in the model card and in ``config.fluoseg``,
from which fluoseg rebuilds the run's checkpoints. Needs ``bioimageio.spec``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fluoseg.bioimage.package import PACKAGE_FORMAT, PACKAGE_VERSION
from fluoseg.bioimage.sizes import PackageSizes
from fluoseg.run import Checkpoint

IMAGE_INPUT = "image"
AVAILABILITY_INPUT = "availability"
OUTPUT = "maps"
NORMALISATION_EPS = 1e-6
"""The spec's epsilon (``(x - mean) / (std + eps)``); fluoseg divides by the std alone, a
difference far below the reproducibility tolerance for any real image."""

CITATIONS = (
    ("Gomariz et al. (2021) Modality attention and sampling enables deep learning with heterogeneous marker "
     "combinations in fluorescence microscopy. Nature Machine Intelligence.", "https://arxiv.org/abs/2008.12380"),
    ("Ronneberger, Fischer and Brox (2015) U-Net: Convolutional networks for biomedical image segmentation. "
     "MICCAI.", "10.1007/978-3-319-24574-4_28"),
)


@dataclass(frozen=True)
class PackageFiles:
    """Files written before the description, by their local paths."""

    state_dict: Path
    torchscript: Path
    architecture: Path
    environment: Path
    documentation: Path
    cover: Path
    test_image: Path
    test_availability: Path
    test_output: Path
    samples: tuple[Path, Path, Path]
    """Sample tensors (TIFF) of the image, availability and output, for people and FAIR checks."""


@dataclass(frozen=True)
class PackageInfo:
    """What the description says about the model beyond its checkpoints."""

    name: str
    description: str
    authors: tuple[str, ...]
    license: str
    output_channels: tuple[str, ...]
    tags: tuple[str, ...]
    fluoseg_version: str
    torch_version: str
    training: dict[str, Any]


def build_description(checkpoints: Sequence[Checkpoint], sizes: PackageSizes, files: PackageFiles,
                      info: PackageInfo) -> Any:
    """A validated ``bioimageio.spec`` 0.5 ``ModelDescr`` of the packaged network.

    Raises
    ------
    pydantic.ValidationError
        If the description is invalid (a bug in the exporter, not a user mistake).
    """
    from bioimageio.spec.model import v0_5 as spec

    first = checkpoints[0]
    markers = list(first.markers)
    pixel = first.preprocess.pixel_size_um
    space = dict(unit="micrometer", scale=float(pixel)) if pixel else {}
    image_id, availability_id = spec.TensorId(IMAGE_INPUT), spec.TensorId(AVAILABILITY_INPUT)

    def input_axis(name: str) -> Any:
        return spec.SpaceInputAxis(id=spec.AxisId(name), size=spec.ParameterizedSize(min=sizes.minimum,
                                                                                      step=sizes.step), **space)

    def output_axis(name: str) -> Any:
        return spec.SpaceOutputAxisWithHalo(id=spec.AxisId(name), halo=sizes.halo, **space,
                                            size=spec.SizeReference(tensor_id=image_id, axis_id=spec.AxisId(name)))

    image = spec.InputTensorDescr(
        id=image_id, description="marker channels in this order (zeros for markers not imaged)",
        axes=[spec.BatchAxis(), spec.ChannelAxis(channel_names=markers), input_axis("y"), input_axis("x")],
        test_tensor=spec.FileDescr(source=files.test_image), sample_tensor=spec.FileDescr(source=files.samples[0]),
        preprocessing=[_normalisation(spec, first)])
    availability = spec.InputTensorDescr(
        id=availability_id, optional=True,
        description="1 for each marker present, 0 for absent ones; default: zero-filled channels are absent",
        axes=[spec.BatchAxis(), spec.ChannelAxis(channel_names=markers)],
        test_tensor=spec.FileDescr(source=files.test_availability),
        sample_tensor=spec.FileDescr(source=files.samples[1]))
    output = spec.OutputTensorDescr(
        id=spec.TensorId(OUTPUT), description="activated maps; decode with fluoseg (see the documentation)",
        axes=[spec.BatchAxis(), spec.ChannelAxis(channel_names=list(info.output_channels)), output_axis("y"),
              output_axis("x")],
        test_tensor=spec.FileDescr(source=files.test_output), sample_tensor=spec.FileDescr(source=files.samples[2]))
    members = [{"model": c.model.as_dict(), "task": dict(c.task)} for c in checkpoints]
    weights = spec.WeightsDescr(
        pytorch_state_dict=spec.PytorchStateDictWeightsDescr(
            source=files.state_dict, pytorch_version=spec.Version(info.torch_version),
            architecture=spec.ArchitectureFromFileDescr(
                source=files.architecture, callable=spec.Identifier("PackagedNetwork"),
                kwargs={"members": members, "margin": sizes.margin}),
            dependencies=spec.FileDescr(source=files.environment)),
        torchscript=spec.TorchscriptWeightsDescr(source=files.torchscript,
                                                 pytorch_version=spec.Version(info.torch_version),
                                                 parent="pytorch_state_dict"))
    return spec.ModelDescr(
        name=info.name, description=info.description,
        authors=[spec.Author(name=a) for a in info.authors],
        cite=[_citation(spec, text, ref) for text, ref in CITATIONS],
        license=spec.LicenseId(info.license), documentation=spec.FileDescr(source=files.documentation),
        covers=[spec.FileDescr(source=files.cover)],
        tags=list(info.tags), inputs=[image, availability], outputs=[output], weights=weights,
        config=spec.Config(fluoseg=fluoseg_section(checkpoints, sizes, info)),
    )


def fluoseg_section(checkpoints: Sequence[Checkpoint], sizes: PackageSizes, info: PackageInfo) -> dict[str, Any]:
    """``config.fluoseg``: the checkpoints' metadata, read back by :mod:`fluoseg.bioimage.package`."""
    members = []
    for index, checkpoint in enumerate(checkpoints):
        state = checkpoint.to_dict()
        members.append({"name": f"member{index}",
                        **{k: state[k] for k in ("model", "task", "markers", "classes", "preprocess", "geometry")}})
    return {"format": PACKAGE_FORMAT, "version": PACKAGE_VERSION, "fluoseg_version": info.fluoseg_version,
            "margin": sizes.margin, "halo": sizes.halo, "members": members, "training": info.training}


def _normalisation(spec: Any, checkpoint: Checkpoint) -> Any:
    axes = [spec.AxisId("y"), spec.AxisId("x")]  # per sample and per channel, as fluoseg normalises
    prep = checkpoint.preprocess
    if prep.normalization == "percentile":
        low, high = (float(p) for p in prep.percentiles)
        return spec.ScaleRangeDescr(kwargs=spec.ScaleRangeKwargs(axes=axes, min_percentile=low, max_percentile=high,
                                                                 eps=NORMALISATION_EPS))
    return spec.ZeroMeanUnitVarianceDescr(kwargs=spec.ZeroMeanUnitVarianceKwargs(axes=axes, eps=NORMALISATION_EPS))


def _citation(spec: Any, text: str, reference: str) -> Any:
    if reference.startswith("http"):
        return spec.CiteEntry(text=text, url=spec.HttpUrl(reference))
    return spec.CiteEntry(text=text, doi=spec.Doi(reference))
