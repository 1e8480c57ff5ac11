import torch
import numpy as np
import pytest

from fluoseg.config import load_config
from fluoseg.errors import FluosegError
from fluoseg.infer import Segmenter
from fluoseg.io import read_image, read_mask, write_image
from fluoseg.infer import PredictOptions
from fluoseg.predict import check_writable, output_paths, predict_file, resolve_channel_names
from fluoseg.train.trainer import train


@pytest.fixture()
def segmenter(tiny_config, tmp_path):
    run = train(load_config(tiny_config), tmp_path / "run", progress=False)
    return Segmenter.load(run, device="cpu")


def test_decode_joint_versus_separate_members(segmenter):
    p = np.array([[[0.6, 0.2]], [[0.3, 0.3]]], np.float32)  # joint: background 0.1 / 0.5
    assert segmenter.decode(p).tolist() == [[[1, 0]], [[0, 0]]]


def test_channel_order_in_file_does_not_matter(segmenter, tiny_dataset):
    image = read_image(tiny_dataset.parent / "images" / "s4.tif").array
    a = segmenter.predict_probabilities(image, ["m1", "m2", "m3"])
    b = segmenter.predict_probabilities(image[[2, 0, 1]], ["m3", "m1", "m2"])
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_subset_equals_zero_filled_missing_channel(segmenter, tiny_dataset):
    image = read_image(tiny_dataset.parent / "images" / "s4.tif").array
    subset = segmenter.predict_probabilities(image, ["m1", "m2", "m3"], markers=["m1", "m3"])
    only_two = segmenter.predict_probabilities(image[[0, 2]], ["m1", "m3"])
    np.testing.assert_allclose(subset, only_two, atol=1e-6)


def test_zarr_streamed_output_equals_tiff_output(segmenter, tiny_dataset, tmp_path):
    source = read_image(tiny_dataset.parent / "images" / "s4.tif")
    zarr_in = write_image(tmp_path / "s4.zarr", source.array, axes="CYX", channel_names=["m1", "m2", "m3"])
    tif_paths = output_paths([zarr_in], tmp_path / "tif", fmt="tif", probabilities=True)[0]
    zarr_paths = output_paths([zarr_in], tmp_path / "zarr", fmt="zarr", probabilities=False)[0]
    (tmp_path / "tif").mkdir()
    (tmp_path / "zarr").mkdir()
    predict_file(segmenter, zarr_in, tif_paths, PredictOptions())
    predict_file(segmenter, zarr_in, zarr_paths, PredictOptions())
    assert np.array_equal(read_mask(tif_paths.masks), read_mask(zarr_paths.masks))
    assert read_image(zarr_paths.masks).channel_names == ("blob", "bar")
    assert sorted(p.name for p in (tmp_path / "zarr").iterdir()) == ["s4.zarr"]  # no leftover temporaries


def test_a_small_image_gets_a_fitted_tile_that_predicts_as_the_default_tile(segmenter, tiny_dataset, monkeypatch):
    image = read_image(tiny_dataset.parent / "images" / "s4.tif").array  # 72 x 72
    network = segmenter.members[0].model
    tiles, forward = [], network.forward

    def recorded(batch, *args, **kwargs):
        tiles.append(batch.shape[-1])
        return forward(batch, *args, **kwargs)

    monkeypatch.setattr(network, "forward", recorded)
    fitted = segmenter.predict_probabilities(image, ["m1", "m2", "m3"])
    fitted_tiles, tiles[:] = list(tiles), []
    default = segmenter.predict_probabilities(image, ["m1", "m2", "m3"], tile_size=572)
    assert set(tiles) == {572} and max(fitted_tiles) < 200  # depth 2: 72 + 2 * 20 margin, rounded up
    np.testing.assert_allclose(fitted, default, atol=1e-5)


def test_3d_stack_is_predicted_slice_by_slice(segmenter, tiny_dataset):
    image = read_image(tiny_dataset.parent / "images" / "s4.tif").array
    stack = np.stack([image, image[:, ::-1]], axis=1)  # (C, Z, Y, X)
    probabilities = segmenter.predict_probabilities(stack, ["m1", "m2", "m3"])
    assert probabilities.shape == (2, 2, 72, 72)
    np.testing.assert_allclose(probabilities[:, 0], segmenter.predict_probabilities(image, ["m1", "m2", "m3"]), atol=1e-5)


def test_output_path_collisions_and_overwrite(tmp_path):
    with pytest.raises(FluosegError, match="collide"):
        output_paths([tmp_path / "a" / "x.tif", tmp_path / "b" / "x.ome.tif"], tmp_path, fmt="tif", probabilities=False)
    paths = output_paths([tmp_path / "x.tif"], tmp_path / "out", fmt="tif", probabilities=True)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "x_probabilities.tif").write_bytes(b"")
    with pytest.raises(FluosegError, match="--overwrite"):
        check_writable(paths, overwrite=False)
    check_writable(paths, overwrite=True)


def test_file_without_names_needs_names(tmp_path, tiny_dataset):
    image = read_image(tiny_dataset.parent / "images" / "s4.tif", lazy=True)
    with pytest.raises(FluosegError, match="--channel-names"):
        resolve_channel_names(image, None, None)
    assert resolve_channel_names(image, None, ["a", "b", "c"]) == ("a", "b", "c")
    assert resolve_channel_names(image, ["a", "b", "c"], ["b"]) == ("a", "b", "c")
    with pytest.raises(FluosegError, match="2 channel names given for an image with 3"):
        resolve_channel_names(image, ["a", "b"], None)


def test_one_unnamed_channel_is_the_marker_of_a_one_marker_model(tmp_path):
    import tifffile

    path = tmp_path / "grey.tif"
    tifffile.imwrite(path, np.zeros((8, 9), np.uint8))
    image = read_image(path, lazy=True)
    assert resolve_channel_names(image, None, None, panel=("DNA",)) == ("DNA",)
    with pytest.raises(FluosegError, match="no marker names"):
        resolve_channel_names(image, None, None, panel=("DNA", "actin"))


class _Equivariant(torch.nn.Module):
    """A pointwise (1x1) network: equivariant to every flip and rotation."""

    padding = "same"

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 1)

    def forward(self, x, availability=None):
        return self.conv(x)

    def output_size(self, n):
        return n

    def valid_input_size(self, at_least):
        return at_least


def test_tta_leaves_an_equivariant_model_unchanged_and_changes_others(segmenter, tiny_dataset):
    image = read_image(tiny_dataset.parent / "images" / "s4.tif").array
    member = segmenter.members[0]
    trained = member.model
    member.model = _Equivariant()
    plain = segmenter.predict_probabilities(image, ["m1", "m2", "m3"], tile_size=32)
    averaged = segmenter.predict_probabilities(image, ["m1", "m2", "m3"], tile_size=32, tta=True)
    np.testing.assert_allclose(plain, averaged, atol=1e-6)
    member.model = trained
    plain = segmenter.predict_probabilities(image, ["m1", "m2", "m3"])
    assert not np.allclose(plain, segmenter.predict_probabilities(image, ["m1", "m2", "m3"], tta=[0, 5]))
    with pytest.raises(FluosegError, match="0-7"):
        segmenter.predict_probabilities(image, ["m1", "m2", "m3"], tta=[9])


def test_zarr_semantic_output_on_dask_workers_equals_one_process(segmenter, tiny_dataset, tmp_path, caplog):
    import logging

    from fluoseg.cluster import dask_client
    from fluoseg.predict import BlockOptions

    image = read_image(tiny_dataset.parent / "images" / "s4.tif").array
    stack = write_image(tmp_path / "stack.zarr", np.stack([image, image[:, ::-1]], axis=1), axes="CZYX",
                        channel_names=["m1", "m2", "m3"])
    outputs = {}
    for name in ("here", "workers"):
        paths = output_paths([stack], tmp_path / name, fmt="zarr", probabilities=True)[0]
        (tmp_path / name).mkdir()
        outputs[name] = paths
    predict_file(segmenter, stack, outputs["here"], PredictOptions())
    caplog.set_level(logging.INFO, logger="fluoseg.predict")
    with dask_client(workers=2) as client:
        predict_file(segmenter, stack, outputs["workers"], PredictOptions(), blocks=BlockOptions(client=client))
    assert "2 bands of the network pass on the workers" in caplog.text  # one per plane
    for kind in ("masks", "probabilities"):
        here, there = (read_image(getattr(outputs[n], kind)).array[...] for n in ("here", "workers"))
        assert np.array_equal(here, there)
    assert sorted(p.name for p in (tmp_path / "workers").iterdir()) == ["stack.zarr", "stack_probabilities.zarr"]
