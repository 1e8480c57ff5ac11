"""Tests of fluoseg.infer internals (the Segmenter itself is exercised in test_predict.py)."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from fluoseg.errors import FluosegError
from fluoseg.infer import FRAGMENT_ZOOM, PredictOptions, Segmenter
from fluoseg.predictor import keep_output_layers_float32, make_batch_predictor
from fluoseg.markers import ChannelFeed, MarkerSelection
from fluoseg.models import build_model


def test_batch_predictor_runs_channels_last_with_the_same_outputs():
    torch.manual_seed(0)
    model = build_model("unet", in_channels=2, out_channels=3, depth=2, base_filters=4, padding="same").eval()
    reference = copy.deepcopy(model)
    batch = np.random.default_rng(0).normal(size=(2, 2, 32, 32)).astype(np.float32)
    predict = make_batch_predictor(model, np.ones(2, np.float32), lambda logits: torch.softmax(logits, 1))
    kernels = [p for p in model.parameters() if p.dim() == 4 and p.shape[-1] == 3]
    assert kernels and all(p.is_contiguous(memory_format=torch.channels_last) for p in kernels)
    assert not all(p.is_contiguous() for p in kernels)  # really NHWC, not a trivially contiguous shape
    with torch.inference_mode():
        expected = torch.softmax(reference(torch.from_numpy(batch), torch.ones(2, 2)), 1).numpy()
    np.testing.assert_allclose(predict(batch), expected, atol=1e-5)


def test_batch_predictor_in_bfloat16_stays_close_to_float32_and_returns_float32():
    torch.manual_seed(0)
    model = build_model("unet", in_channels=2, out_channels=3, depth=2, base_filters=8, padding="same").eval()
    batch = np.random.default_rng(0).normal(size=(2, 2, 48, 48)).astype(np.float32)
    softmax = lambda logits: torch.softmax(logits, 1)  # noqa: E731
    full = make_batch_predictor(copy.deepcopy(model), np.ones(2, np.float32), softmax)(batch)
    reduced = make_batch_predictor(model, np.ones(2, np.float32), softmax, precision="bfloat16")(batch)
    assert reduced.dtype == np.float32
    difference = np.abs(reduced - full)
    # bfloat16 keeps 8 significant bits: the probabilities move (so bfloat16 really ran) but little
    assert 1e-4 < difference.max() < 0.05, difference.max()
    with pytest.raises(FluosegError, match="float32 or bfloat16"):
        make_batch_predictor(model, np.ones(2, np.float32), softmax, precision="auto")


def test_batch_predictor_in_bfloat16_computes_the_output_layers_in_float32():
    model = build_model("unet", in_channels=1, out_channels=2, depth=2, base_filters=4, padding="same").eval()
    seen: dict[str, torch.dtype] = {}
    first_conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    first_conv.register_forward_hook(lambda module, inputs, out: seen.__setitem__("body", out.dtype))
    model.head.register_forward_hook(lambda module, inputs, out: seen.__setitem__("head", out.dtype))
    batch = np.zeros((1, 1, 32, 32), np.float32)
    make_batch_predictor(model, np.ones(1, np.float32), torch.sigmoid, precision="bfloat16")(batch)
    assert seen == {"body": torch.bfloat16, "head": torch.float32}
    make_batch_predictor(model, np.ones(1, np.float32), torch.sigmoid)(batch)
    assert seen == {"body": torch.float32, "head": torch.float32}


def test_float32_output_layers_hand_autocast_back_to_the_layers_after_them():
    class HeadInTheMiddle(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = torch.nn.Conv2d(1, 1, 1)
            self.after = torch.nn.Conv2d(1, 1, 1)

        def output_layers(self) -> list[torch.nn.Module]:
            return [self.head]

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            middle = self.head(x)
            return middle, self.after(middle)

    model = HeadInTheMiddle()
    keep_output_layers_float32(model)
    keep_output_layers_float32(model)  # registering twice adds no second pair of hooks
    assert len(model.head._forward_pre_hooks) == 1 and len(model.head._forward_hooks) == 1
    with torch.autocast("cpu", dtype=torch.bfloat16):
        middle, after = model(torch.ones(1, 1, 4, 4))
        assert torch.is_autocast_enabled("cpu")
    assert (middle.dtype, after.dtype) == (torch.float32, torch.bfloat16)
    assert not torch.is_autocast_enabled("cpu")
    assert model(torch.ones(1, 1, 4, 4))[1].dtype == torch.float32


def test_predict_options_refuse_an_unknown_precision():
    with pytest.raises(FluosegError, match="unknown precision 'half'"):
        PredictOptions(precision="half")


class _FragmentingSegmenter(Segmenter):
    """A stand-in for a network trained on objects of ``target`` px, shown disks of ``true`` px.

    At zoom z it sees disks of ``true * z`` px; disks over twice its training size it cuts
    into pieces, so they measure 0.6 of their size (what a distance-map network does to
    nuclei much larger than it was trained on).
    """

    def __init__(self, true: float, target: float) -> None:  # no network: only the probes are simulated
        self.true = true
        self.task = SimpleNamespace(target_diameter=target, object_fit=lambda maps, labels: None)
        self.zooms: list[float] = []

    def _probe(self, image, channel_names, options, zoom):
        self.zooms.append(zoom)
        seen = self.true * zoom
        measured = seen if seen <= 2 * self.task.target_diameter else 0.6 * seen
        yy, xx = np.mgrid[:512, :512]
        labels = np.zeros((512, 512), np.int32)
        if measured <= 0:
            return None, labels
        for k, (cy, cx) in enumerate([(128, 128), (128, 384), (384, 128), (384, 384)], start=1):
            labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= (measured / 2) ** 2] = k
        return None, labels


def test_auto_diameter_probes_again_at_the_zoom_a_first_pass_asks_for():
    image = np.zeros((1, 64, 64), np.float32)
    one_pass = _FragmentingSegmenter(true=60, target=14)
    assert one_pass.estimate_diameter(image, refinements=0) == pytest.approx(36, rel=0.05)
    refined = _FragmentingSegmenter(true=60, target=14)
    assert refined.estimate_diameter(image) == pytest.approx(60, rel=0.05)
    assert refined.zooms[0] == 1.0 and refined.zooms[1] == pytest.approx(14 / 36, rel=0.05)
    # objects near the training size need one pass; small ones are never probed zoomed in
    for true in (14, 18, 5):
        segmenter = _FragmentingSegmenter(true=true, target=14)
        assert segmenter.estimate_diameter(image) == pytest.approx(true, rel=0.1)
        assert segmenter.zooms == [1.0]


def _disks(diameter: float) -> np.ndarray:
    """Four disks of ``diameter`` px in a 512² label image."""
    yy, xx = np.mgrid[:512, :512]
    labels = np.zeros((512, 512), np.int32)
    for k, (cy, cx) in enumerate([(128, 128), (128, 384), (384, 128), (384, 384)], start=1):
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= (diameter / 2) ** 2] = k
    return labels


class _PiecesSegmenter(Segmenter):
    """A stand-in for a distance-map network trained on objects of ``target`` px, shown objects of ``true`` px.

    At zoom z it sees objects of ``true * z`` px. Those over 2.5 times its training size it
    cuts into pieces of the training size, and objects under half of it it fuses in pairs;
    either way its decoded objects then fit its distance map badly (0.5 against 0.8).
    The "maps" of a probe are that fit, which the stand-in task hands back.
    """

    def __init__(self, true: float, target: float) -> None:
        self.true = true
        self.task = SimpleNamespace(target_diameter=target, object_fit=lambda maps, labels: maps)
        self.zooms: list[float] = []

    def _probe(self, image, channel_names, options, zoom):
        self.zooms.append(zoom)
        seen, target = self.true * zoom, self.task.target_diameter
        if seen > 2.5 * target:
            return 0.5, _disks(target)
        if seen < 0.5 * target:
            return 0.5, _disks(seen * np.sqrt(2))
        return 0.8, _disks(seen)


def test_auto_diameter_measures_objects_a_first_probe_cut_into_pieces_at_half_zoom():
    image = np.zeros((1, 64, 64), np.float32)
    pieces = _PiecesSegmenter(true=41, target=14)  # pieces of 14 px ask for no zoom; the fit tells
    assert pieces.estimate_diameter(image) == pytest.approx(41, rel=0.05)
    assert pieces.zooms[:2] == [1.0, FRAGMENT_ZOOM]
    unchecked = _PiecesSegmenter(true=41, target=14)
    unchecked.task.object_fit = lambda maps, labels: None  # a network that measures no distances
    assert unchecked.estimate_diameter(image) == pytest.approx(14, rel=0.05) and unchecked.zooms == [1.0]
    # small objects fused at zoom 1 fuse at half zoom too: the objects do not grow, the estimate stands
    fused = _PiecesSegmenter(true=6, target=14)
    assert fused.estimate_diameter(image) == pytest.approx(6 * np.sqrt(2), rel=0.05)
    assert fused.zooms == [1.0, FRAGMENT_ZOOM]
    # objects seen whole fit well: no half-zoom probe
    whole = _PiecesSegmenter(true=16, target=14)
    assert whole.estimate_diameter(image) == pytest.approx(16, rel=0.05) and whole.zooms == [1.0]


def test_auto_diameter_keeps_the_first_probe_when_the_half_zoom_one_fits_worse():
    image = np.zeros((1, 64, 64), np.float32)
    segmenter = _PiecesSegmenter(true=41, target=14)
    fits = iter([0.5, 0.4])  # the larger objects at half zoom fit the distance map even worse
    segmenter.task.object_fit = lambda maps, labels: next(fits)
    assert segmenter.estimate_diameter(image) == pytest.approx(14, rel=0.05)
    assert segmenter.zooms == [1.0, FRAGMENT_ZOOM]


def test_auto_diameter_without_objects_keeps_the_training_scale():
    segmenter = _FragmentingSegmenter(true=0, target=14)
    assert segmenter.estimate_diameter(np.zeros((1, 64, 64), np.float32)) == 14.0


def test_auto_diameter_decodes_a_reused_first_probe_once():
    from scipy import ndimage as ndi

    from fluoseg.data.samples import sample_paths
    from fluoseg.io import read_image

    # sample b's nuclei (~18 px) zoomed to about the model's 14.6 px: no rescaling needed
    image = ndi.zoom(read_image(sample_paths()[1][0]).array.astype(np.float32), (1, 0.8, 0.8), order=1)
    segmenter = Segmenter.pretrained("nuclei", device="cpu")
    decoded = []
    decode = segmenter.decode
    segmenter.decode = lambda maps: decoded.append(maps) or decode(maps)  # type: ignore[method-assign]
    labels, maps = segmenter.predict_labels(image)  # nuclei near the training size: the probe's maps are kept
    assert len(decoded) == 1 and decoded[0] is maps
    np.testing.assert_array_equal(labels, decode(maps))
    assert labels.max() > 30
    decoded.clear()
    segmenter.predict_labels(image, diameter=2 * segmenter.task.target_diameter)  # rescaled: probe-free, one decode
    assert len(decoded) == 1


def test_the_shipped_model_measures_nuclei_twice_the_size_it_cuts_into_pieces():
    from scipy import ndimage as ndi

    from fluoseg.data.samples import sample_paths
    from fluoseg.io import read_image

    segmenter = Segmenter.pretrained("nuclei", device="cpu")
    image = read_image(sample_paths()[1][0]).array.astype(np.float32)  # nuclei ~17 px, the model's ~15 px
    enlarged = ndi.zoom(image, (1, 2, 2), order=1)  # ~34 px: the first probe cuts them into ~20 px pieces
    assert segmenter.estimate_diameter(enlarged) == pytest.approx(2 * segmenter.estimate_diameter(image), rel=0.2)


def test_objects_of_a_stack_are_stitched_across_slices_unless_asked_not_to():
    from fluoseg.data.samples import sample_paths
    from fluoseg.io import read_image

    plane = read_image(sample_paths()[0][0]).array[0]
    stack = np.stack([plane] * 3)[None]  # (C, Z, Y, X): the same nuclei on three slices
    segmenter = Segmenter.pretrained("nuclei", device="cpu")
    stitched, _ = segmenter.predict_labels(stack, diameter=14.6)
    per_slice, _ = segmenter.predict_labels(stack, diameter=14.6, stitch_threshold=0)
    n = len(np.unique(stitched[0])) - 1
    assert n > 10
    assert (stitched[0] == stitched[1]).all() and (stitched[1] == stitched[2]).all()
    assert stitched.max() == n and per_slice.max() == 3 * n
    with pytest.raises(FluosegError, match="stitching threshold"):
        segmenter.predict_labels(stack, stitch_threshold=1.5)


NAMES = ("m1", "m2", "m3", "E-cadherin")


def trained_segmenter(manifest, out, **model_options) -> Segmenter:
    """A tiny semantic run on the tiny dataset (panel m1, m2, m3), trained a few steps."""
    import yaml

    from support import tiny_config_dict

    from fluoseg.config import load_config
    from fluoseg.train.trainer import train

    config = out.parent / f"{out.name}.yaml"
    config.write_text(yaml.safe_dump(tiny_config_dict(manifest, model_options=model_options)))
    return Segmenter.load(train(load_config(config), out, progress=False), device="cpu")


@pytest.fixture()
def channel_invariant(tiny_dataset, tmp_path) -> Segmenter:
    from support import CHANNEL_INVARIANT

    return trained_segmenter(tiny_dataset, tmp_path / "ci", **CHANNEL_INVARIANT)


@pytest.fixture()
def with_new_marker() -> np.ndarray:
    """Sample 4 of the tiny dataset plus a fourth channel, "E-cadherin", that the panel lacks."""
    from support import make_tiny_sample

    image, _ = make_tiny_sample(4)
    return np.concatenate([image, image[1:2, ::-1]])  # the blob marker's signal, mirrored


def test_channel_invariant_model_predicts_with_a_marker_outside_its_panel(channel_invariant, with_new_marker):
    segmenter = channel_invariant
    assert segmenter.takes_any_marker
    feed = segmenter.select_markers(NAMES, ["E-cadherin", "m1"])
    assert isinstance(feed, ChannelFeed) and feed.used == ("m1", "E-cadherin") and feed.unknown == ("E-cadherin",)
    chosen = dict(markers=["m1", "E-cadherin"], tile_size=60)  # 72 px in 60 px tiles: several tiles
    probabilities = segmenter.predict_probabilities(with_new_marker, NAMES, **chosen)
    assert probabilities.shape == (2, 72, 72) and 0 <= probabilities.min() and probabilities.max() <= 1
    assert np.array_equal(segmenter.predict_probabilities(with_new_marker, NAMES, **chosen), probabilities)
    without = segmenter.predict_probabilities(with_new_marker, NAMES, markers=["m1"], tile_size=60)
    assert np.abs(probabilities - without).max() > 1e-3
    masks, maps = segmenter.predict_masks(with_new_marker, NAMES, **chosen)
    assert masks.shape == (2, 72, 72) and masks.dtype == np.uint8 and np.array_equal(maps, probabilities)


def test_order_of_the_channels_does_not_change_a_channel_invariant_prediction(channel_invariant, with_new_marker):
    segmenter = channel_invariant
    reference = segmenter.predict_probabilities(with_new_marker, NAMES, markers=["m1", "m3", "E-cadherin"],
                                                tile_size=60)
    order = [3, 2, 0, 1]
    shuffled = segmenter.predict_probabilities(with_new_marker[order], [NAMES[i] for i in order], tile_size=60,
                                               markers=["E-cadherin", "m1", "m3"])
    np.testing.assert_allclose(shuffled, reference, atol=1e-5)


def test_known_markers_fed_as_channels_equal_the_slot_path(channel_invariant, with_new_marker, monkeypatch):
    segmenter, image, names = channel_invariant, with_new_marker[:3], NAMES[:3]
    assert isinstance(segmenter.select_markers(names, ["m3", "m1"]), MarkerSelection)  # known alone: slots
    slots = segmenter.predict_probabilities(image, names, markers=["m3", "m1"], tile_size=60, tta=[0, 5])
    monkeypatch.setattr(segmenter, "select_markers", lambda channel_names, markers, source=None:
                        ChannelFeed.resolve(segmenter.panel, channel_names, use=markers, source=source))
    fed = segmenter.predict_probabilities(image, names, markers=["m3", "m1"], tile_size=60, tta=[0, 5])
    np.testing.assert_allclose(fed, slots, atol=1e-5)


def test_unknown_markers_need_a_choice_and_a_channel_invariant_model(channel_invariant, with_new_marker,
                                                                      tiny_dataset, tmp_path):
    with pytest.raises(FluosegError, match=r"unknown marker 'E-cadherin'.*choose the markers to feed with --markers"):
        channel_invariant.predict_probabilities(with_new_marker, NAMES, tile_size=60)
    slots = trained_segmenter(tiny_dataset, tmp_path / "slots")
    assert not slots.takes_any_marker
    for attempt in (lambda: slots.parse_markers("m1,E-cadherin"),
                    lambda: slots.predict_probabilities(with_new_marker, NAMES, markers=["m1", "E-cadherin"])):
        with pytest.raises(FluosegError, match=r"unknown marker 'E-cadherin'; this model knows \['m1', 'm2', 'm3'\] "
                           r".*model\.options\.front_end: channel-invariant\) can take markers outside its panel"):
            attempt()
    # a channel the choice leaves out may still carry any name, for every model
    assert slots.predict_probabilities(with_new_marker, NAMES, markers=["m1"], tile_size=60).shape == (2, 72, 72)


def test_auto_diameter_divides_by_the_calibrated_bias():
    segmenter = _FragmentingSegmenter(true=18, target=14)
    segmenter.task.diameter_bias = 1.2  # this model's estimates come out 1.2 times too large
    assert segmenter.estimate_diameter(np.zeros((1, 64, 64), np.float32)) == pytest.approx(15, rel=0.1)
