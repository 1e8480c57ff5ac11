"""Sample data: the demo model's five markers as Image layers, true masks as Labels."""

from __future__ import annotations

from fluoseg.napari.sample import tissue_sample


def test_sample_has_the_demo_markers_and_true_masks():
    layers = tissue_sample()
    assert [m["name"] for _, m, k in layers if k == "image"] == ["DAPI", "endomucin", "endoglin", "collagen",
                                                                 "CXCL12-GFP"]
    assert [m["name"] for _, m, k in layers if k == "labels"] == ["true sinusoids", "true arteries"]
    assert all(data.shape == (384, 384) for data, _, _ in layers)
