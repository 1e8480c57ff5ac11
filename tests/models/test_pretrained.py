"""Tests of fluoseg.models.pretrained: key mapping, first-conv adaptation, download cache."""

from __future__ import annotations

import re
import urllib.error
from pathlib import Path

import pytest
import torch

from fluoseg.errors import FluosegError
from fluoseg.models import build_model, model_spec
from fluoseg.models import pretrained
from fluoseg.models.encoders import build_encoder
from fluoseg.models.pretrained import (
    KNOWN_WEIGHTS,
    adapt_first_conv,
    default_cache_dir,
    load_encoder_weights,
    without_encoder_weights,
)


@pytest.fixture(scope="module")
def rgb_resnet18() -> dict[str, torch.Tensor]:
    """An 'ImageNet' ResNet-18 state dict: 3 input channels, non-trivial BN statistics, fc."""
    torch.manual_seed(0)
    encoder = build_encoder("resnet18", in_channels=3)
    state = {k: v.clone() for k, v in encoder.state_dict().items()}
    for key in state:
        if key.endswith(("running_mean", "running_var")):
            state[key] = torch.rand_like(state[key]) + 0.5
    state["fc.weight"] = torch.randn(1000, 512)
    state["fc.bias"] = torch.randn(1000)
    return state


def assert_encoder_holds(encoder, state, *, skip=("conv1.weight",)):
    own = encoder.state_dict()
    for key, value in state.items():
        if key in own and key not in skip:
            torch.testing.assert_close(own[key], value, msg=key)


def test_wrapped_and_prefixed_file_loads_completely(tmp_path, rgb_resnet18):
    path = tmp_path / "weights.pth"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in rgb_resnet18.items()}}, path)
    encoder = build_encoder("resnet18", in_channels=3)
    report = load_encoder_weights(encoder, path)
    assert report.prefix == "module." and report.complete
    assert report.missing == () and report.unexpected == () and report.adapted == () and report.mismatched == ()
    assert set(report.ignored) == {"module.fc.weight", "module.fc.bias"}
    assert_encoder_holds(encoder, rgb_resnet18, skip=())


@pytest.mark.parametrize("in_channels", [1, 5])
def test_first_convolution_is_adapted_to_the_marker_slots(rgb_resnet18, in_channels):
    encoder = build_encoder("resnet18", in_channels=in_channels)
    report = load_encoder_weights(encoder, rgb_resnet18)
    assert report.adapted == ("conv1.weight",) and report.complete
    rgb = rgb_resnet18["conv1.weight"]
    expected = rgb.mean(dim=1, keepdim=True).repeat(1, in_channels, 1, 1) * 3 / in_channels
    torch.testing.assert_close(encoder.conv1.weight.detach(), expected)
    if in_channels == 1:  # the usual grey-scale adaptation: the sum of the RGB kernels
        torch.testing.assert_close(encoder.conv1.weight.detach(), rgb.sum(dim=1, keepdim=True))
    assert_encoder_holds(encoder, rgb_resnet18)


def test_adapted_encoder_sees_a_grey_image_as_the_rgb_encoder_does(rgb_resnet18):
    # Why mean * 3 / C: equal values in all C slots give the RGB network's response to grey.
    rgb = build_encoder("resnet18", in_channels=3).eval()
    rgb.load_state_dict({k: v for k, v in rgb_resnet18.items() if not k.startswith("fc.")})
    five = build_encoder("resnet18", in_channels=5).eval()
    load_encoder_weights(five, rgb_resnet18)
    grey = torch.randn(1, 1, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(five(grey.expand(1, 5, -1, -1))[-1], rgb(grey.expand(1, 3, -1, -1))[-1],
                                   rtol=1e-4, atol=1e-4)


def test_adapt_first_conv_keeps_the_kernel_shape():
    weight = torch.randn(64, 3, 7, 7)
    assert adapt_first_conv(weight, 4).shape == (64, 4, 7, 7)


def test_partial_files_are_refused_unless_allowed(rgb_resnet18):
    dropped = [k for k in rgb_resnet18 if k.startswith("layer4.1.")]
    partial = {k: v for k, v in rgb_resnet18.items() if k not in dropped}
    encoder = build_encoder("resnet18", in_channels=3)
    before = encoder.state_dict()["layer4.1.conv1.weight"].clone()
    with pytest.raises(FluosegError, match=r"missing layer4\.1\..*encoder_weights_partial"):
        load_encoder_weights(encoder, partial)
    report = load_encoder_weights(encoder, partial, allow_partial=True)
    assert set(report.missing) == {k for k in dropped if not k.endswith("num_batches_tracked")}
    assert not report.complete
    torch.testing.assert_close(encoder.state_dict()["layer4.1.conv1.weight"], before)  # left as initialised
    assert_encoder_holds(encoder, partial)


def test_shape_mismatch_other_than_the_first_conv_is_refused(rgb_resnet18):
    broken = dict(rgb_resnet18)
    broken["layer1.0.conv2.weight"] = torch.randn(64, 64, 5, 5)
    encoder = build_encoder("resnet18", in_channels=3)
    with pytest.raises(FluosegError, match=r"mismatched layer1\.0\.conv2\.weight \(file \(64, 64, 5, 5\)"):
        load_encoder_weights(encoder, broken)
    report = load_encoder_weights(encoder, broken, allow_partial=True)
    assert len(report.mismatched) == 1 and report.mismatched[0].startswith("layer1.0.conv2.weight")


def test_unexpected_keys_need_strict_false(rgb_resnet18):
    extra = {**rgb_resnet18, "projection.weight": torch.zeros(3)}
    encoder = build_encoder("resnet18", in_channels=3)
    with pytest.raises(FluosegError, match="projection.weight"):
        load_encoder_weights(encoder, extra)
    report = load_encoder_weights(encoder, extra, strict=False)
    assert report.unexpected == ("projection.weight",) and report.complete


def test_weights_of_another_architecture_are_refused(rgb_resnet18):
    with pytest.raises(FluosegError, match="none of the .* densenet121 encoder"):
        load_encoder_weights(build_encoder("densenet121", in_channels=3), rgb_resnet18)


def test_torchvision_segmentation_backbone_layout(rgb_resnet18):
    # torchvision's COCO FCN/DeepLabv3 files: backbone.*, classifier.*, aux_classifier.*
    state = {f"backbone.{k}": v for k, v in rgb_resnet18.items() if not k.startswith("fc.")}
    state["classifier.4.weight"] = torch.zeros(21, 256, 1, 1)
    state["aux_classifier.0.weight"] = torch.zeros(256, 1024, 3, 3)
    encoder = build_encoder("resnet18", in_channels=3, output_stride=8)  # dilation changes no shape
    report = load_encoder_weights(encoder, state)  # strict: classifier keys are expected extras
    assert report.prefix == "backbone." and report.complete and report.unexpected == ()
    assert set(report.ignored) == {"classifier.4.weight", "aux_classifier.0.weight"}


def test_old_torchvision_densenet_keys_are_renamed():
    torch.manual_seed(1)
    source = build_encoder("densenet121", in_channels=3)
    old = {}
    for key, value in source.state_dict().items():
        # densenet121-a639ec97.pth writes "denselayer1.norm.1.weight" for "denselayer1.norm1.weight"
        old[re.sub(r"(denselayer\d+\.(?:norm|conv))([12])\.", r"\1.\2.", key)] = value
    old["classifier.weight"] = torch.zeros(1000, 1024)
    assert "features.denseblock1.denselayer1.norm.1.weight" in old
    target = build_encoder("densenet121", in_channels=2)
    report = load_encoder_weights(target, old)
    assert report.complete and report.unexpected == () and report.adapted == ("features.conv0.weight",)
    torch.testing.assert_close(target.state_dict()["features.denseblock4.denselayer16.conv2.weight"],
                               source.state_dict()["features.denseblock4.denselayer16.conv2.weight"])


def test_encoder_of_a_fluoseg_checkpoint(tmp_path):
    model = build_model("unet-encoder", in_channels=3, out_channels=2, encoder="resnet18")
    path = tmp_path / "checkpoint.pt"
    torch.save({"format": "fluoseg-checkpoint", "model": model_spec(model), "model_state": model.state_dict()}, path)
    encoder = build_encoder("resnet18", in_channels=3)
    with pytest.raises(FluosegError, match="strict=False"):
        load_encoder_weights(encoder, path)  # the decoder's keys are unexpected
    report = load_encoder_weights(encoder, path, strict=False)
    assert report.prefix == "encoder." and report.complete
    assert all(k.startswith(("blocks.", "head.")) for k in report.unexpected)
    assert_encoder_holds(encoder, {k[len("encoder."):]: v for k, v in model.state_dict().items()
                                   if k.startswith("encoder.")}, skip=())


def test_unsafe_or_missing_files_are_user_errors(tmp_path):
    encoder = build_encoder("resnet18", in_channels=1)
    with pytest.raises(FluosegError, match="not found"):
        load_encoder_weights(encoder, tmp_path / "nope.pth")
    pickled = tmp_path / "object.pth"
    torch.save({"state_dict": Path("/not/a/tensor")}, pickled)  # weights_only refuses arbitrary objects
    with pytest.raises(FluosegError, match="cannot read encoder weights"):
        load_encoder_weights(encoder, pickled)
    empty = tmp_path / "empty.pth"
    torch.save({"epoch": 1}, empty)
    with pytest.raises(FluosegError, match="no tensors"):
        load_encoder_weights(encoder, empty)


class FakeServer:
    """Stands in for the network: serves one state dict, counting downloads."""

    def __init__(self, state):
        self.state = state
        self.calls: list[str] = []

    def __call__(self, url: str, destination: Path) -> None:
        self.calls.append(url)
        torch.save(self.state, destination)


def test_url_is_downloaded_once_into_the_cache(tmp_path, monkeypatch, rgb_resnet18):
    server = FakeServer({f"module.{k}": v for k, v in rgb_resnet18.items()})
    monkeypatch.setattr(pretrained, "_fetch", server)
    url = "https://example.org/weights/resnet18-imagenet.pth"
    for _ in range(2):
        report = load_encoder_weights(build_encoder("resnet18", in_channels=4), url, cache_dir=tmp_path / "cache")
        assert report.complete and report.source == url
    assert server.calls == [url]
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["resnet18-imagenet.pth"]


def test_default_cache_follows_the_environment(tmp_path, monkeypatch, rgb_resnet18):
    monkeypatch.setenv("FLUOSEG_CACHE", str(tmp_path / "root"))
    assert default_cache_dir() == tmp_path / "root" / "weights"
    server = FakeServer(rgb_resnet18)
    monkeypatch.setattr(pretrained, "_fetch", server)
    load_encoder_weights(build_encoder("resnet18", in_channels=3), "http://example.org/r18.pth")
    assert (tmp_path / "root" / "weights" / "r18.pth").is_file()
    monkeypatch.delenv("FLUOSEG_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "fluoseg" / "weights"


def test_offline_download_is_a_clear_error_and_leaves_no_file(tmp_path, monkeypatch):
    def offline(url, destination):
        destination.write_bytes(b"partial")
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(pretrained, "_fetch", offline)
    with pytest.raises(FluosegError, match="cannot download encoder weights from https://example.org/w.pth"):
        load_encoder_weights(build_encoder("resnet18", in_channels=3), "https://example.org/w.pth", cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_named_weights_resolve_to_torchvision_and_check_the_hash(tmp_path, monkeypatch, rgb_resnet18):
    server = FakeServer(rgb_resnet18)  # not torchvision's file: its SHA-256 cannot match the name
    monkeypatch.setattr(pretrained, "_fetch", server)
    with pytest.raises(FluosegError, match="corrupt"):
        load_encoder_weights(build_encoder("resnet18", in_channels=3), "imagenet", cache_dir=tmp_path)
    assert server.calls == [KNOWN_WEIGHTS["imagenet"]["resnet18"]] and list(tmp_path.iterdir()) == []
    with pytest.raises(FluosegError, match=r"no 'coco-fcn' weights for encoder 'densenet121'"):
        load_encoder_weights(build_encoder("densenet121", in_channels=3), "coco-fcn", cache_dir=tmp_path)


def test_model_option_loads_and_spec_can_drop_it(tmp_path, rgb_resnet18):
    path = tmp_path / "r18.pth"
    torch.save(rgb_resnet18, path)
    model = build_model("fcn", in_channels=5, out_channels=2, encoder="resnet18", encoder_weights=str(path))
    assert model.encoder_weights_report.adapted == ("conv1.weight",)
    assert_encoder_holds(model.encoder, rgb_resnet18)
    spec = model_spec(model)
    assert spec["options"]["encoder_weights"] == str(path)
    path.unlink()  # a checkpoint must not need the weights file again
    options = without_encoder_weights(spec["options"])
    assert options["encoder_weights"] is None and spec["options"]["encoder_weights"] == str(path)
    rebuilt = build_model(spec["name"], in_channels=5, out_channels=2, options=options)
    rebuilt.load_state_dict(model.state_dict())


def test_model_option_partial(tmp_path, rgb_resnet18):
    path = tmp_path / "partial.pth"
    torch.save({k: v for k, v in rgb_resnet18.items() if not k.startswith("layer4")}, path)
    with pytest.raises(FluosegError, match="missing"):
        build_model("unet-encoder", in_channels=2, out_channels=1, encoder="resnet18", encoder_weights=str(path))
    model = build_model("unet-encoder", in_channels=2, out_channels=1, encoder="resnet18", encoder_weights=str(path),
                        encoder_weights_partial=True)
    assert model.encoder_weights_report.missing and not model.encoder_weights_report.complete
    with pytest.raises(FluosegError, match="encoder_weights_partial"):
        build_model("unet-encoder", in_channels=2, out_channels=1, encoder="resnet18", encoder_weights_partial="yes")
