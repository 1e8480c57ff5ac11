"""Model card and cover of exported packages."""

from __future__ import annotations

import numpy as np
from PIL import Image

from fluoseg.bioimage.card import decoding_kind, output_channel_names, write_cover, write_model_card
from fluoseg.bioimage.sizes import PackageSizes


def test_output_channel_names_per_task():
    assert output_channel_names({"name": "semantic"}, ["vessel", "artery"]) == ("vessel", "artery")
    assert output_channel_names({"name": "instance", "method": "border"}, []) == ("background", "interior", "border")
    assert output_channel_names({"name": "instance", "method": "distance"}, []) == ("distance", "foreground")
    assert decoding_kind({"name": "instance", "method": "distance"}) == "distance"
    assert decoding_kind({"name": "regression"}) == "regression"


def test_card_states_inputs_sizes_and_the_trained_decoding_constants(tmp_path):
    card = write_model_card(
        tmp_path / "README.md", name="nuclei", description="Nuclei.", markers=["DAPI", "CD31"],
        output_channels=["distance", "foreground"], task={"name": "instance", "method": "distance", "h": 0.5,
                                                         "min_size": 4}, classes=[],
        preprocess={"normalization": "gaussian", "pixel_size_um": 0.5},
        sizes=PackageSizes(margin=92, step=16, halo=98, minimum=212), training={"epochs": 3},
        fluoseg_version="9.9").read_text()
    assert "`DAPI`, `CD31`" in card and "212 + n × 16" in card and "(98 px)" in card and "0.5 µm" in card
    assert "h-maxima" in card and "'h': 0.5" in card and "'min_size': 4" in card
    assert "## Validation" in card and "--channel-names DAPI,CD31" in card


def test_cover_is_two_to_one_with_objects_coloured(tmp_path):
    image = np.zeros((2, 32, 32), np.float32)
    image[0, 8:16, 8:16] = 1
    labels = np.zeros((32, 32), np.int32)
    labels[20:30, 20:30] = 3
    cover = np.asarray(Image.open(write_cover(tmp_path / "cover.png", image, labels, instance=True)))
    assert cover.shape[:2] == (256, 512)
    assert cover[:, 256:].max() > 0 and cover[:128, 256:384].max() == 0  # the object is bottom right only
    assert cover[96, 96].max() > 0  # the bright square of marker 0, scaled by 8
