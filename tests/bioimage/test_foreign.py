"""Packages made elsewhere: run through bioimageio.core, tiled, as semantic models."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fluoseg.errors import FluosegError
from fluoseg.infer import Segmenter

pytest.importorskip("bioimageio.core", reason="the bioimageio extra is not installed")

WEIGHTS = np.array([[1.5, -2.0]], np.float32)  # a 1x1 convolution: foreground = sigmoid(1.5 a - 2 b + 0.25)
BIAS = 0.25


class Pointwise(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(2, 1, 1)
        self.conv.weight.data = torch.from_numpy(WEIGHTS)[:, :, None, None]
        self.conv.bias.data = torch.tensor([BIAS])

    def forward(self, x):
        return torch.sigmoid(self.conv(x))


@pytest.fixture(scope="module")
def foreign_package(tmp_path_factory):
    """A one-input package (TorchScript) of a pointwise network, as another tool would write it."""
    from bioimageio.spec import save_bioimageio_package
    from bioimageio.spec.model import v0_5 as spec

    folder = tmp_path_factory.mktemp("foreign")
    network = Pointwise().eval()
    torch.jit.script(network).save(str(folder / "weights.pt"))
    test_input = np.random.default_rng(0).normal(size=(1, 2, 64, 64)).astype(np.float32)
    np.save(folder / "in.npy", test_input)
    np.save(folder / "out.npy", network(torch.from_numpy(test_input)).detach().numpy())
    (folder / "README.md").write_text("# pointwise\n")
    size = spec.ParameterizedSize(min=32, step=16)
    image_id = spec.TensorId("raw")
    description = spec.ModelDescr(
        name="pointwise test model", description="a 1x1 convolution", authors=[spec.Author(name="test")],
        cite=[spec.CiteEntry(text="none", doi=spec.Doi("10.1007/978-3-319-24574-4_28"))],
        license=spec.LicenseId("MIT"), documentation=spec.FileDescr(source=folder / "README.md"),
        inputs=[spec.InputTensorDescr(id=image_id, axes=[
            spec.BatchAxis(), spec.ChannelAxis(channel_names=["a", "b"]),
            spec.SpaceInputAxis(id=spec.AxisId("y"), size=size), spec.SpaceInputAxis(id=spec.AxisId("x"), size=size)],
            test_tensor=spec.FileDescr(source=folder / "in.npy"))],
        outputs=[spec.OutputTensorDescr(id=spec.TensorId("prob"), axes=[
            spec.BatchAxis(), spec.ChannelAxis(channel_names=["fg"]),
            spec.SpaceOutputAxis(id=spec.AxisId("y"), size=spec.SizeReference(tensor_id=image_id, axis_id="y")),
            spec.SpaceOutputAxis(id=spec.AxisId("x"), size=spec.SizeReference(tensor_id=image_id, axis_id="x"))],
            test_tensor=spec.FileDescr(source=folder / "out.npy"))],
        weights=spec.WeightsDescr(torchscript=spec.TorchscriptWeightsDescr(
            source=folder / "weights.pt", pytorch_version=spec.Version(torch.__version__.split("+")[0]))))
    return save_bioimageio_package(description, output_path=folder / "pointwise.zip")


def _expected(image: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-(np.tensordot(WEIGHTS, image, axes=1) + BIAS)))


def test_foreign_package_is_run_tiled_with_its_channels_by_name(foreign_package):
    from fluoseg.bioimage.foreign import ForeignModel, load_model

    model = load_model(foreign_package)
    assert isinstance(model, ForeignModel) and model.classes == ("fg",) and model.panel.names == ("a", "b")
    image = np.random.default_rng(1).normal(size=(2, 100, 90)).astype(np.float32)  # several 32-px blocks
    maps = model.predict_probabilities(image, ["a", "b"], tile_size=32)
    np.testing.assert_allclose(maps, _expected(image), atol=1e-5)
    swapped = model.predict_probabilities(image[::-1], ["b", "a"], tile_size=32)
    np.testing.assert_allclose(swapped, maps, atol=1e-6)
    masks, _ = model.predict_masks(image, ["a", "b"])
    assert np.array_equal(masks, (_expected(image) > 0.5).astype(np.uint8))


def test_channel_count_must_match_when_names_do_not(foreign_package):
    from fluoseg.bioimage.foreign import ForeignModel

    with pytest.raises(FluosegError, match="takes 2 channel"):
        ForeignModel.load(foreign_package).predict_probabilities(np.zeros((3, 40, 40), np.float32), ["x", "y", "z"])


def test_fluoseg_packages_load_as_segmenters_and_two_input_foreign_ones_are_refused(semantic_package, tmp_path):
    import zipfile

    import yaml

    from fluoseg.bioimage.foreign import ForeignModel, load_model

    assert isinstance(load_model(semantic_package), Segmenter)
    stripped = tmp_path / "stripped.zip"
    with zipfile.ZipFile(semantic_package) as source, zipfile.ZipFile(stripped, "w") as target:
        for item in source.namelist():
            data = source.read(item)
            if item == "rdf.yaml":
                rdf = yaml.safe_load(data)
                rdf["config"].pop("fluoseg")
                data = yaml.safe_dump(rdf).encode()
            target.writestr(item, data)
    with pytest.raises(FluosegError, match="one image input only"):
        ForeignModel.load(stripped)
