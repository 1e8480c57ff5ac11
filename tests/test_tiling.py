"""Tests of fluoseg.tiling: the MS-ME overlap-tile scheme, streamed stitching, same-mode blending."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
import zarr

from fluoseg.errors import FluosegError
from fluoseg.models import build_model
from fluoseg.tiling import (TileGeometry, band_tiles, fitted_geometry, geometry_for, plan_tiles, predict_tiled,
                            tile_weights)

RNG = np.random.default_rng(7)



def torch_predictor(net):
    def predict_batch(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return net(torch.from_numpy(batch)).numpy()

    return predict_batch


def pointwise(weights: np.ndarray, margin: int = 0):
    """A 1x1 linear 'network' in numpy; with a margin it also trims like a valid network."""

    def predict_batch(batch: np.ndarray) -> np.ndarray:
        out = np.einsum("oc,bchw->bohw", weights, batch).astype(np.float32)
        return out[..., margin : out.shape[-2] - margin, margin : out.shape[-1] - margin] if margin else out

    return predict_batch


def whole_image_prediction(net, image: np.ndarray, margin: int) -> np.ndarray:
    """The reference: the whole image zero-padded by the margin (and at the end up to an
    admissible size) in one network pass, cropped to the image."""
    _, height, width = image.shape
    padded = np.zeros((image.shape[0], net.valid_input_size(height + 2 * margin), net.valid_input_size(width + 2 * margin)), np.float32)
    padded[:, margin : margin + height, margin : margin + width] = image
    with torch.inference_mode():
        return net(torch.from_numpy(padded[None]))[0].numpy()[:, :height, :width]


def coverage(tiles, shape) -> np.ndarray:
    count = np.zeros(shape, int)
    for tile in tiles:
        count[tile.output_window] += 1
    return count


class RecordingArray:
    """An array-like that records every read and refuses whole-array conversion."""

    def __init__(self, array) -> None:
        self.array = array
        self.shape = array.shape
        self.reads: list[tuple] = []

    def __getitem__(self, key):
        self.reads.append(key)
        return self.array[key]

    def __array__(self, *args, **kwargs):
        raise AssertionError("the whole image was converted to an array")


# --- geometry ---------------------------------------------------------------------------


def test_geometry_of_the_ms_me_unet():
    net = build_model("unet", in_channels=5, out_channels=2, base_filters=1)  # sizes depend only on depth/padding
    geometry = geometry_for(net, 572)
    assert (geometry.input_size, geometry.output_size, geometry.margin, geometry.mode) == (572, 388, 92, "valid")
    assert geometry.alignment == 16
    assert geometry_for(net, 560) == geometry  # rounded up to an admissible size
    assert geometry_for(net, 572, aligned=False).alignment == 1
    same = geometry_for(build_model("unet", in_channels=1, out_channels=1, base_filters=1, padding="same"), 500)
    assert (same.input_size, same.output_size, same.margin, same.mode, same.alignment) == (512, 512, 0, "same", 16)


def test_geometry_enlarges_tiles_smaller_than_the_alignment():
    net = build_model("unet", in_channels=1, out_channels=1, base_filters=1)
    geometry = geometry_for(net, 1)
    assert geometry.output_size >= geometry.alignment == 16
    assert (geometry.input_size, geometry.output_size) == (204, 20)


def test_fitted_geometry_shrinks_the_tile_to_a_smaller_image():
    net = build_model("unet", in_channels=1, out_channels=1, base_filters=1)  # 572 -> 388, margin 92
    sizes = {shape: (g.input_size, g.output_size) for shape in [(256, 256), (100, 30), (400, 10), (388, 5), (10, 10),
                                                                 (3, 256, 200)]
             for g in [fitted_geometry(net, 572, shape)]}
    # the smallest admissible input (572 - 16k) whose output (input - 184) covers the longest side
    assert sizes == {(256, 256): (444, 260), (100, 30): (284, 100), (400, 10): (572, 388), (388, 5): (572, 388),
                     (10, 10): (204, 20), (3, 256, 200): (444, 260)}
    assert fitted_geometry(net, 572, (256, 256)).alignment == 16
    assert fitted_geometry(net, 300, (256, 256)) == geometry_for(net, 300)  # never larger than asked for
    same = build_model("unet", in_channels=1, out_channels=1, base_filters=1, padding="same")
    assert fitted_geometry(same, 572, (100, 100)) == geometry_for(same, 572)  # its padding shows: kept


def test_a_fitted_tile_predicts_what_the_large_tile_does():
    torch.manual_seed(2)
    net = build_model("unet", in_channels=1, out_channels=2, base_filters=2).eval()
    image = RNG.normal(size=(1, 50, 37)).astype(np.float32)
    large, fitted = geometry_for(net, 572), fitted_geometry(net, 572, image.shape)
    assert fitted.input_size < large.input_size
    predictions = [predict_tiled(torch_predictor(net), image, geometry=g, out_channels=2) for g in (large, fitted)]
    np.testing.assert_allclose(*predictions, rtol=1e-5, atol=1e-5)


def test_geometry_needs_only_duck_typed_sizes():
    class Encoder:
        padding = "same"

        def output_size(self, n: int) -> int:
            return n

        def valid_input_size(self, n: int) -> int:
            return n

    assert geometry_for(Encoder(), 100) == TileGeometry(100, 100, "same", 1)
    with pytest.raises(FluosegError, match="tile size"):
        geometry_for(Encoder(), 0)


def test_tiling_does_not_import_torch():
    code = "import sys, fluoseg.tiling; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_geometry_rejects_inconsistent_sizes():
    with pytest.raises(ValueError):
        TileGeometry(572, 387, "valid")
    with pytest.raises(ValueError):
        TileGeometry(100, 90, "same")
    with pytest.raises(ValueError):
        TileGeometry(100, 100, "full")


# --- plan -------------------------------------------------------------------------------


def test_plan_is_the_ms_me_scheme_when_unaligned():
    geometry = TileGeometry(572, 388, "valid")
    tiles = plan_tiles((1000, 800), geometry)
    y_starts = sorted({t.output_window[0].start for t in tiles})
    x_starts = sorted({t.output_window[1].start for t in tiles})
    assert y_starts == [0, 388, 612] and x_starts == [0, 388, 412]  # step 388, last shifted back
    for tile in tiles:
        (iy, ix), (oy, ox) = tile.input_window, tile.output_window
        assert (iy.start, ix.start) == (oy.start - 92, ox.start - 92)
        assert iy.stop - iy.start == ix.stop - ix.start == 572
        assert oy.stop - oy.start == ox.stop - ox.start == 388
    # every output pixel once, except where the last tile of a row/column overlaps
    expected_y = np.ones(1000, int)
    expected_y[612:776] = 2
    expected_x = np.ones(800, int)
    expected_x[412:776] = 2
    np.testing.assert_array_equal(coverage(tiles, (1000, 800)), np.outer(expected_y, expected_x))


def test_plan_exact_multiple_has_no_overlap():
    tiles = plan_tiles((776, 388), TileGeometry(572, 388, "valid"))
    assert len(tiles) == 2
    assert np.all(coverage(tiles, (776, 388)) == 1)


def test_aligned_plan_steps_on_the_pooling_grid():
    geometry = TileGeometry(572, 388, "valid", alignment=16)
    shape = (1000, 1300)
    tiles = plan_tiles(shape, geometry)
    starts = sorted({t.output_window[1].start for t in tiles})
    assert starts == [0, 384, 768, 912]  # step 384; last = ceil((1300 - 388) / 16) * 16
    assert all(t.output_window[0].start % 16 == 0 and t.output_window[1].start % 16 == 0 for t in tiles)
    assert all(t.input_window[0].start == t.output_window[0].start - 92 for t in tiles)
    count = coverage(tiles, shape)
    assert count.min() == 1
    last = [t for t in tiles if t.output_window[1].start == 912][0]
    assert last.output_window[1].stop == 1300 and last.output_crop[1] == slice(0, 388)
    # the last row's tiles reach beyond the image; only their in-image part is written
    bottom = [t for t in tiles if t.output_window[0].start == max(s.output_window[0].start for s in tiles)][0]
    assert bottom.output_window[0] == slice(624, 1000) and bottom.output_crop[0] == slice(0, 376)


def test_image_smaller_than_one_tile():
    tiles = plan_tiles((50, 30), TileGeometry(572, 388, "valid", alignment=16))
    assert len(tiles) == 1
    tile = tiles[0]
    assert tile.input_window == (slice(-92, 480), slice(-92, 480))
    assert tile.output_window == (slice(0, 50), slice(0, 30)) and tile.output_crop == (slice(0, 50), slice(0, 30))


def test_plan_rejects_bad_overlap_and_empty_images():
    with pytest.raises(FluosegError, match="overlap"):
        plan_tiles((100, 100), TileGeometry(32, 32, "same"), overlap=32)
    with pytest.raises(FluosegError, match="overlap"):
        plan_tiles((100, 100), TileGeometry(32, 32, "same"), overlap=-1)
    with pytest.raises(FluosegError, match="empty"):
        plan_tiles((0, 100), TileGeometry(32, 32, "same"))


def test_same_mode_blending_weights_form_a_partition_of_unity():
    geometry = TileGeometry(64, 64, "same")
    shape = (150, 170)
    tiles = plan_tiles(shape, geometry)  # default overlap 64 // 8 = 8, last tiles overlap more
    assert sorted({t.output_window[0].start for t in tiles}) == [0, 56, 86]
    total = np.zeros(shape)
    for tile in tiles:
        weights = tile_weights(tile)
        assert weights.shape == (64, 64) and weights.min() > 0 and weights.max() == 1
        total[tile.output_window] += weights
    np.testing.assert_allclose(total, 1.0, atol=1e-6)  # pairwise cosine ramps sum to one
    assert all(t.ramps == ((0, 0), (0, 0)) for t in plan_tiles(shape, TileGeometry(64, 48, "valid")))


# --- prediction: equality with whole-image prediction --------------------------------------


@pytest.mark.parametrize("shape, batch_size", [((70, 93), 1), ((41, 130), 3)])
def test_tiled_equals_whole_image_depth2(shape, batch_size):
    torch.manual_seed(0)
    net = build_model("unet", in_channels=2, out_channels=3, depth=2, base_filters=4).eval()
    geometry = geometry_for(net, 60)
    assert (geometry.input_size, geometry.output_size, geometry.margin) == (60, 20, 20)
    assert shape[0] % 20 and shape[1] % 20  # the last tiles are shifted and averaged
    image = RNG.normal(size=(2, *shape)).astype(np.float32)
    tiled = predict_tiled(torch_predictor(net), image, geometry=geometry, out_channels=3, batch_size=batch_size)
    assert tiled.shape == (3, *shape) and tiled.dtype == np.float32
    np.testing.assert_allclose(tiled, whole_image_prediction(net, image, geometry.margin), rtol=1e-5, atol=1e-5)


def test_tiled_equals_whole_image_ms_me_depth4():
    torch.manual_seed(1)
    net = build_model("unet", in_channels=1, out_channels=2, base_filters=2).eval()
    geometry = geometry_for(net, 220)  # output 36, aligned step 32
    image = RNG.normal(size=(1, 90, 101)).astype(np.float32)
    tiled = predict_tiled(torch_predictor(net), image, geometry=geometry, out_channels=2, batch_size=4)
    np.testing.assert_allclose(tiled, whole_image_prediction(net, image, geometry.margin), rtol=1e-5, atol=1e-5)


def test_unaligned_tiles_do_not_match_whole_image_prediction():
    """The literal MS-ME placement (step = 36, not a multiple of 16) shifts the pooling grid."""
    torch.manual_seed(1)
    net = build_model("unet", in_channels=1, out_channels=2, base_filters=2).eval()
    geometry = geometry_for(net, 220, aligned=False)
    image = RNG.normal(size=(1, 90, 101)).astype(np.float32)
    tiled = predict_tiled(torch_predictor(net), image, geometry=geometry, out_channels=2, batch_size=4)
    assert np.abs(tiled - whole_image_prediction(net, image, geometry.margin)).max() > 1e-2


def test_same_mode_pointwise_equals_whole_image():
    weights = RNG.normal(size=(2, 3)).astype(np.float32)
    image = RNG.normal(size=(3, 150, 170)).astype(np.float32)
    tiled = predict_tiled(pointwise(weights), image, geometry=TileGeometry(64, 64, "same"), out_channels=2, batch_size=2)
    np.testing.assert_allclose(tiled, np.einsum("oc,chw->ohw", weights, image), rtol=1e-5, atol=1e-6)
    constant = predict_tiled(lambda b: np.ones((len(b), 1, 64, 64), np.float32), image,
                             geometry=TileGeometry(64, 64, "same"), out_channels=1, overlap=20)
    np.testing.assert_allclose(constant, 1.0, rtol=1e-6)


def test_same_mode_with_a_same_padding_unet():
    net = build_model("unet", in_channels=2, out_channels=1, depth=2, base_filters=4, padding="same").eval()
    geometry = geometry_for(net, 30)
    assert (geometry.input_size, geometry.output_size, geometry.alignment) == (32, 32, 4)
    result = predict_tiled(torch_predictor(net), RNG.normal(size=(2, 50, 70)).astype(np.float32),
                           geometry=geometry, out_channels=1, overlap=8)
    assert result.shape == (1, 50, 70) and np.isfinite(result).all()


# --- prediction: inputs, outputs, streaming --------------------------------------------------


VALID_POINTWISE = TileGeometry(28, 20, "valid")  # margin 4


def test_3d_stack_equals_per_slice_prediction():
    torch.manual_seed(2)
    net = build_model("unet", in_channels=2, out_channels=1, depth=2, base_filters=4).eval()
    geometry = geometry_for(net, 60)
    stack = RNG.normal(size=(2, 3, 45, 50)).astype(np.float32)
    result = predict_tiled(torch_predictor(net), stack, geometry=geometry, out_channels=1, batch_size=5)
    assert result.shape == (1, 3, 45, 50)
    for z in range(3):
        expected = predict_tiled(torch_predictor(net), stack[:, z], geometry=geometry, out_channels=1)
        np.testing.assert_allclose(result[:, z], expected, atol=1e-5)  # batching changes rounding only
        np.testing.assert_allclose(result[:, z], whole_image_prediction(net, stack[:, z], geometry.margin), atol=1e-5)


def test_zarr_in_zarr_out_reads_only_windows(tmp_path):
    weights = RNG.normal(size=(2, 3)).astype(np.float32)
    data = RNG.normal(size=(3, 2, 61, 47)).astype(np.float32)
    source = zarr.create_array(store=str(tmp_path / "in.zarr"), shape=data.shape, chunks=(3, 1, 16, 16), dtype="float32")
    source[...] = data
    target = zarr.create_array(store=str(tmp_path / "out.zarr"), shape=(2, 2, 61, 47), chunks=(2, 1, 16, 16), dtype="float32")
    recorder = RecordingArray(source)
    returned = predict_tiled(pointwise(weights, margin=4), recorder, geometry=VALID_POINTWISE, out_channels=2,
                             out=target, batch_size=3)
    assert returned is target
    np.testing.assert_allclose(target[...], np.einsum("oc,czyx->ozyx", weights, data), rtol=1e-5, atol=1e-6)
    assert recorder.reads
    for _, z, ys, xs in recorder.reads:
        assert isinstance(z, int)
        assert ys.stop - ys.start <= 28 and xs.stop - xs.start <= 28  # one window, never the image


def test_output_is_written_in_row_bands_while_predicting():
    """Streaming: finished rows reach `out` before the last tile is predicted, in bands no
    taller than a tile row, so only a band is ever held in memory."""
    events: list[tuple[str, int]] = []

    class RecordingOut:
        def __init__(self, shape):
            self.shape = shape
            self.array = np.full(shape, np.nan, np.float32)

        def __setitem__(self, key, value):
            events.append(("write", key[1].stop - key[1].start))
            self.array[key] = value

    def predict_batch(batch):
        events.append(("predict", len(batch)))
        return batch[:, :, 4:-4, 4:-4].copy()

    image = RNG.normal(size=(1, 130, 45)).astype(np.float32)
    out = RecordingOut((1, 130, 45))
    predict_tiled(predict_batch, image, geometry=VALID_POINTWISE, out_channels=1, out=out, batch_size=2)
    np.testing.assert_allclose(out.array, image)
    writes = [i for i, e in enumerate(events) if e[0] == "write"]
    predicts = [i for i, e in enumerate(events) if e[0] == "predict"]
    assert writes[0] < predicts[-1]
    assert max(events[i][1] for i in writes) <= VALID_POINTWISE.output_size
    assert sum(events[i][1] for i in writes) == 130  # every row written exactly once


def test_transform_is_applied_before_zero_padding():
    image = RNG.uniform(1, 2, size=(3, 30, 35)).astype(np.float32)
    batches: list[np.ndarray] = []
    raw_shapes: list[tuple[int, ...]] = []

    def transform(window: np.ndarray) -> np.ndarray:
        raw_shapes.append(window.shape)
        assert window.dtype == np.float32
        return window[:2] + 10.0  # may change the channel count

    def predict_batch(batch):
        batches.append(batch.copy())
        return batch[:, :1, 4:-4, 4:-4]

    result = predict_tiled(predict_batch, image, geometry=VALID_POINTWISE, out_channels=1, transform=transform)
    np.testing.assert_allclose(result[0], image[0] + 10.0)
    assert all(shape[0] == 3 for shape in raw_shapes)
    first = batches[0][0]  # the top-left tile: its input starts 4 pixels outside the image
    assert first.shape == (2, 28, 28)
    assert np.all(first[:, :4, :] == 0) and np.all(first[:, :, :4] == 0)
    assert np.all(first[:, 4:, 4:] >= 11.0)


def test_small_image_and_preallocated_numpy_out():
    image = RNG.normal(size=(1, 7, 5)).astype(np.float32)
    out = np.zeros((1, 7, 5), np.float32)
    returned = predict_tiled(pointwise(np.ones((1, 1), np.float32), margin=4), image,
                             geometry=VALID_POINTWISE, out_channels=1, out=out, progress=True)
    assert returned is out
    np.testing.assert_allclose(out, image)


def test_prediction_errors():
    image = np.zeros((1, 30, 30), np.float32)
    good = pointwise(np.ones((1, 1), np.float32), margin=4)
    with pytest.raises(FluosegError, match="axes"):
        predict_tiled(good, np.zeros((30, 30), np.float32), geometry=VALID_POINTWISE, out_channels=1)
    with pytest.raises(FluosegError, match="batch size"):
        predict_tiled(good, image, geometry=VALID_POINTWISE, out_channels=1, batch_size=0)
    with pytest.raises(ValueError, match="out has shape"):
        predict_tiled(good, image, geometry=VALID_POINTWISE, out_channels=1, out=np.zeros((1, 30, 31), np.float32))
    with pytest.raises(ValueError, match="predict_batch returned"):
        predict_tiled(pointwise(np.ones((1, 1), np.float32)), image, geometry=VALID_POINTWISE, out_channels=1)
    with pytest.raises(ValueError, match="transform"):
        predict_tiled(good, image, geometry=VALID_POINTWISE, out_channels=1, transform=lambda w: w[:, 1:])


# --- bands: one image shared out by rows ------------------------------------------------------


def _bands(height: int, step: int) -> list[tuple[int, int]]:
    return [(start, min(start + step, height)) for start in range(0, height, step)]


@pytest.mark.parametrize("padding, tile, overlap", [("valid", 60, None), ("same", 32, 8)])
@pytest.mark.parametrize("batch_size", [1, 3])
def test_bands_equal_the_whole_image_bit_for_bit(padding, tile, overlap, batch_size):
    torch.manual_seed(4)
    net = build_model("unet", in_channels=2, out_channels=2, depth=2, base_filters=4, padding=padding).eval()
    geometry = geometry_for(net, tile)
    image = RNG.normal(size=(2, 97, 75)).astype(np.float32)
    whole = predict_tiled(torch_predictor(net), image, geometry=geometry, out_channels=2, batch_size=batch_size,
                          overlap=overlap)
    banded = np.full_like(whole, np.nan)
    for rows in _bands(97, 16):  # bands thinner than a tile: most tiles reach two or more
        predict_tiled(torch_predictor(net), image, geometry=geometry, out_channels=2, batch_size=batch_size,
                      overlap=overlap, out=banded, rows=rows)
    np.testing.assert_array_equal(banded, whole)


def test_a_band_writes_only_its_rows_and_keeps_the_whole_image_batches():
    calls: list[int] = []

    def batch_dependent(batch: np.ndarray) -> np.ndarray:
        # a 'network' whose output depends on the batch it is in, as fast kernels may
        calls.append(len(batch))
        return pointwise(np.eye(1, dtype=np.float32), margin=4)(batch) + len(batch) / 64

    image = RNG.normal(size=(1, 70, 45)).astype(np.float32)
    whole = predict_tiled(batch_dependent, image, geometry=VALID_POINTWISE, out_channels=1, batch_size=4)
    out = np.full_like(whole, np.nan)
    calls.clear()
    predict_tiled(batch_dependent, image, geometry=VALID_POINTWISE, out_channels=1, batch_size=4, out=out,
                  rows=(20, 40))
    np.testing.assert_array_equal(out[:, 20:40], whole[:, 20:40])
    assert np.isnan(out[:, :20]).all() and np.isnan(out[:, 40:]).all()
    assert sum(calls) < len(plan_tiles((70, 45), VALID_POINTWISE))  # the band runs only its batches


def test_bands_and_planes_of_a_stack():
    weights = RNG.normal(size=(2, 3)).astype(np.float32)
    stack = RNG.normal(size=(3, 4, 50, 41)).astype(np.float32)
    whole = predict_tiled(pointwise(weights, margin=4), stack, geometry=VALID_POINTWISE, out_channels=2,
                          batch_size=5)
    out = np.full_like(whole, np.nan)
    for planes in ([0, 2], [1, 3]):
        for rows in _bands(50, 25):
            predict_tiled(pointwise(weights, margin=4), stack, geometry=VALID_POINTWISE, out_channels=2,
                          batch_size=5, out=out, rows=rows, planes=planes)
    np.testing.assert_array_equal(out, whole)


def test_band_tiles_counts_the_tiles_bands_share():
    shape = (100, 30)
    tiles = plan_tiles(shape, VALID_POINTWISE)  # output tiles of 20 rows
    assert band_tiles(shape, VALID_POINTWISE, (0, 100)) == len(tiles)
    per_row = len({t.output_window[1].start for t in tiles})
    assert band_tiles(shape, VALID_POINTWISE, (0, 20)) == per_row  # a band on tile borders: its own tiles
    assert band_tiles(shape, VALID_POINTWISE, (10, 30)) == 2 * per_row  # across a border: both tile rows


def test_band_errors():
    image = np.zeros((1, 40, 40), np.float32)
    kwargs = dict(geometry=VALID_POINTWISE, out_channels=1)
    for rows in [(0, 0), (-1, 10), (30, 41), (20, 10)]:
        with pytest.raises(FluosegError, match="rows must be a band"):
            predict_tiled(pointwise(np.eye(1, dtype=np.float32), 4), image, rows=rows, **kwargs)
    with pytest.raises(FluosegError, match="has none"):
        predict_tiled(pointwise(np.eye(1, dtype=np.float32), 4), image, planes=[0], **kwargs)
    with pytest.raises(FluosegError, match="slice indices"):
        predict_tiled(pointwise(np.eye(1, dtype=np.float32), 4), image[:, None], planes=[1], **kwargs)
