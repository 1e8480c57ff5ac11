"""The *Segment* dock widget: a model, the markers present (by layer), a progress bar.

1. Type a run folder, a ``.zip`` package or a zoo model name (or *Browse*), then *Load*.
2. One row per marker of the model: tick it when the image has it and choose its layer;
   layers named like a marker are chosen and ticked on their own.
3. *Segment* predicts in a background thread; the bar counts network tiles. Instance models
   give a Labels layer, semantic models one Labels layer per class (and, ticked, the
   probabilities as Image layers), in-silico labelling models Image layers.
"""

from __future__ import annotations

from typing import Any

from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from fluoseg.errors import FluosegError
from fluoseg.napari.layers import LayerData, match_layers
from fluoseg.napari.segment import TILE_SIZE, LayerSegmentation

NO_LAYER = "(none)"


class SegmentWidget(QWidget):
    """Segment image layers with a fluoseg model (see the module docstring).

    Parameters
    ----------
    napari_viewer
        The viewer (napari passes it when it opens the widget).
    """

    tile_done = Signal()

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.segmentation: LayerSegmentation | None = None
        self.rows: dict[str, tuple[QCheckBox, QComboBox]] = {}

        self.source = QLineEdit()
        self.source.setPlaceholderText("run folder, model .zip or zoo model name")
        browse, load = QPushButton("Browse…"), QPushButton("Load")
        browse.clicked.connect(self._browse)
        load.clicked.connect(lambda: self.load_model())
        source_row = QHBoxLayout()
        for item in (self.source, browse, load):
            source_row.addWidget(item)
        self.status = QLabel("No model loaded.")
        self.status.setWordWrap(True)
        self.markers = QGroupBox("Markers present (image layer of each)")
        self.marker_form = QFormLayout(self.markers)
        self.tile_size = QSpinBox()
        self.tile_size.setRange(64, 4096)
        self.tile_size.setValue(TILE_SIZE)
        self.probabilities = QCheckBox("also show class probabilities")
        self.run_button = QPushButton("Segment")
        self.run_button.setEnabled(False)
        self.run_button.clicked.connect(lambda: self.segment())
        self.progress = QProgressBar()
        self.progress.setFormat("%v / %m tiles")

        layout = QVBoxLayout(self)
        layout.addLayout(source_row)
        layout.addWidget(self.status)
        layout.addWidget(self.markers)
        options = QFormLayout()
        options.addRow("Tile size", self.tile_size)
        options.addRow(self.probabilities)
        layout.addLayout(options)
        layout.addWidget(self.run_button)
        layout.addWidget(self.progress)
        layout.addStretch()

        self.tile_done.connect(lambda: self.progress.setValue(self.progress.value() + 1))
        self.viewer.layers.events.inserted.connect(lambda event: self._watch(event.value))
        self.viewer.layers.events.removed.connect(lambda _: self._refresh_layer_choices())
        for layer in self.viewer.layers:
            layer.events.name.connect(lambda _: self._refresh_layer_choices())

    def _watch(self, layer: Any) -> None:
        """Follow a new layer's renames: naming a layer like a marker maps it."""
        layer.events.name.connect(lambda _: self._refresh_layer_choices())
        self._refresh_layer_choices()

    # ---- model ---------------------------------------------------------------------------

    def load_model(self, source: str | None = None) -> bool:
        """Load a model and list its markers; returns whether it worked (errors go to the status line)."""
        text = (source or self.source.text()).strip()
        self.source.setText(text)
        try:
            self.segmentation = LayerSegmentation.load(text)
        except FluosegError as error:
            self.segmentation = None
            self._set_markers(())
            self.status.setText(f"Cannot load: {error}")
            self.run_button.setEnabled(False)
            return False
        seg = self.segmentation
        self.status.setText(f"{seg.kind} model with markers {', '.join(seg.markers)}")
        self._set_markers(seg.markers)
        self.run_button.setEnabled(True)
        return True

    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "bioimage.io package", filter="Packages (*.zip)")
        path = path or QFileDialog.getExistingDirectory(self, "fluoseg run directory")
        if path:
            self.load_model(path)

    # ---- markers and layers --------------------------------------------------------------

    def _image_layer_names(self) -> list[str]:
        return [layer.name for layer in self.viewer.layers if layer._type_string == "image"]

    def _set_markers(self, markers: tuple[str, ...]) -> None:
        while self.marker_form.rowCount():
            self.marker_form.removeRow(0)
        self.rows = {}
        names = self._image_layer_names()
        for marker, layer in match_layers(markers, names).items():
            present, choice = QCheckBox(marker), QComboBox()
            choice.addItems([NO_LAYER, *names])
            if layer is not None:
                choice.setCurrentText(layer)
                present.setChecked(True)
            choice.currentTextChanged.connect(lambda text, box=present: box.setChecked(text != NO_LAYER))
            self.marker_form.addRow(present, choice)
            self.rows[marker] = (present, choice)

    def _refresh_layer_choices(self) -> None:
        names = self._image_layer_names()
        for marker, (present, choice) in self.rows.items():
            current = choice.currentText()
            choice.blockSignals(True)
            choice.clear()
            choice.addItems([NO_LAYER, *names])
            automatic = match_layers([marker], names)[marker]
            choice.setCurrentText(current if current in names else automatic or NO_LAYER)
            choice.blockSignals(False)
            present.setChecked(choice.currentText() != NO_LAYER and (present.isChecked() or current not in names))

    def chosen_layers(self) -> dict[str, str]:
        """``marker -> layer name`` for every ticked marker with a layer."""
        return {marker: choice.currentText() for marker, (present, choice) in self.rows.items()
                if present.isChecked() and choice.currentText() != NO_LAYER}

    # ---- prediction ----------------------------------------------------------------------

    def segment(self, *, blocking: bool = False) -> Any:
        """Predict from the chosen layers; in a worker thread unless ``blocking`` (tests, scripts).

        Returns the started worker, or the added layers when ``blocking``.
        """
        chosen = self.chosen_layers()
        if self.segmentation is None or not chosen:
            self.status.setText("Load a model and tick at least one marker with its layer.")
            return None
        images = {marker: self.viewer.layers[name].data for marker, name in chosen.items()}
        scale = tuple(self.viewer.layers[next(iter(chosen.values()))].scale)
        spatial = next(iter(images.values())).shape
        total = self.segmentation.tile_count(spatial, self.tile_size.value())
        self.progress.setRange(0, total or 0)  # (0, 0): busy indicator for packages fluoseg does not tile
        self.progress.setValue(0)
        self.run_button.setEnabled(False)
        self.status.setText(f"Segmenting with {', '.join(chosen)}…")

        def work() -> list[LayerData]:
            return self.segmentation.predict(images, tile_size=self.tile_size.value(),
                                             probabilities=self.probabilities.isChecked(), scale=scale,
                                             on_tile=self.tile_done.emit)

        if blocking:
            try:
                return self._show(work())
            finally:
                self.run_button.setEnabled(True)
        from napari.qt.threading import create_worker

        worker = create_worker(work)
        worker.returned.connect(self._show)
        worker.errored.connect(lambda error: self.status.setText(f"Failed: {error}"))
        worker.finished.connect(lambda: self.run_button.setEnabled(True))
        worker.start()
        return worker

    def _show(self, layers: list[LayerData]) -> list[Any]:
        added = [getattr(self.viewer, f"add_{kind}")(data, **meta) for data, meta, kind in layers]
        if self.progress.maximum() == 0:
            self.progress.setRange(0, 1)
            self.progress.setValue(1)
        self.status.setText(f"Added {len(added)} layer(s).")
        return added
