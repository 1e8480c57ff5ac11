"""The Segment widget, headless: offscreen Qt and napari's viewer model (no OpenGL needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("napari", reason="the napari extra is not installed")
pytest.importorskip("qtpy", reason="the napari extra is not installed")

MANIFEST = Path(__file__).resolve().parents[2] / "src" / "fluoseg" / "napari" / "napari.yaml"


@pytest.fixture()
def viewer():
    from napari.components import ViewerModel
    from qtpy.QtWidgets import QApplication

    application = QApplication.instance() or QApplication([])
    model = ViewerModel()
    yield model
    application.processEvents()


def test_widget_maps_layers_by_name_and_segments_the_sample_data(viewer, semantic_run):
    from fluoseg.napari.sample import tissue_sample
    from fluoseg.napari.widget import SegmentWidget

    for data, meta, kind in tissue_sample()[:3]:
        getattr(viewer, f"add_{kind}")(data[:100, :90], **meta)
    widget = SegmentWidget(viewer)
    assert not widget.load_model(str(semantic_run / "missing")) and "Cannot load" in widget.status.text()
    assert widget.load_model(str(semantic_run))
    assert widget.chosen_layers() == {}  # the tiny run's markers are m1..m3: nothing matches yet
    viewer.layers["DAPI"].name = "m1"
    viewer.layers["endoglin"].name = "M3"
    assert widget.chosen_layers() == {"m1": "m1", "m3": "M3"}
    widget.tile_size.setValue(64)
    added = widget.segment(blocking=True)
    assert [layer.name for layer in added] == ["run blob", "run bar"]
    assert widget.progress.value() == widget.progress.maximum() > 1
    assert all(layer.data.shape == (100, 90) for layer in added)


def test_widget_segments_in_a_worker_thread(viewer, semantic_run):
    import time

    from qtpy.QtWidgets import QApplication

    from fluoseg.napari.widget import SegmentWidget

    viewer.add_image(np.random.default_rng(0).normal(size=(64, 64)).astype(np.float32), name="m2")
    widget = SegmentWidget(viewer)
    widget.load_model(str(semantic_run))
    finished = []
    worker = widget.segment()
    worker.finished.connect(lambda: finished.append(True))
    deadline = time.monotonic() + 60
    while not finished and time.monotonic() < deadline:
        QApplication.processEvents()
        time.sleep(0.01)
    QApplication.processEvents()
    assert finished and [layer.name for layer in viewer.layers] == ["m2", "run blob", "run bar"]
    assert widget.run_button.isEnabled()


def test_manifest_is_valid_and_its_commands_import():
    npe2 = pytest.importorskip("npe2")
    manifest = npe2.PluginManifest.from_file(MANIFEST)
    manifest.validate_imports()
    assert {c.id for c in manifest.contributions.commands} == {
        "fluoseg.segment", "fluoseg.read", "fluoseg.write_labels", "fluoseg.sample_tissue"}
