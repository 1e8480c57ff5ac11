"""napari plugin (``pip install 'fluoseg[napari]'``; manifest ``napari.yaml``, npe2).

- *Segment* widget (:mod:`~fluoseg.napari.widget`): choose a run, a package or a zoo model,
  tick the markers present and map image layers to them by name, predict with a progress
  bar into a Labels layer (instance models) or Labels and Image layers (semantic models);
- reader (:mod:`~fluoseg.napari.reader`) of fluoseg outputs and OME-Zarr labels, and a
  writer (:mod:`~fluoseg.napari.writer`) of Labels layers;
- sample data (:mod:`~fluoseg.napari.sample`): simulated five-marker tissue.

Everything that is not Qt lives in :mod:`~fluoseg.napari.segment` and
:mod:`~fluoseg.napari.layers`, testable without a display.
"""
