"""Simulated data for the demo, the tests and benchmarks.

- :func:`simulate_tissue` (:mod:`fluoseg.data.synth.vessels`): multi-marker bone-marrow-like
  tissue with sinusoid and artery masks, like the project's ``vessels5`` data.
- :func:`simulate_nuclei` (:mod:`fluoseg.data.synth.nuclei`): fluorescence nuclei with
  instance labels, including touching nuclei.
- :func:`simulate_nuclei_3d` (:mod:`fluoseg.data.synth.nuclei3d`): z-stacks of randomly
  oriented ellipsoidal nuclei, sampled anisotropically along z.
- :func:`simulate_cells` (:mod:`fluoseg.data.synth.cells`): multiplexed epithelial tissue
  (nuclear, membrane, cytoplasm and distractor markers) with cell and nucleus labels, drawn
  from a :class:`CellDomain` (presets ``"default"`` and ``"shifted"``);
  :func:`write_cells_dataset` writes such images with a manifest.

All are numpy/scipy only, deterministic given a seed, and take milliseconds per image.
"""

from fluoseg.data.synth.cell_domain import CELL_DOMAINS, CELL_MARKERS, DEFAULT_CELL_MARKERS, CellDomain, cell_domain
from fluoseg.data.synth.cells import SimulatedCells, simulate_cells
from fluoseg.data.synth.cells_dataset import write_cells_dataset
from fluoseg.data.synth.nuclei import SimulatedNuclei, simulate_nuclei, touching_pairs
from fluoseg.data.synth.nuclei3d import SimulatedNuclei3D, simulate_nuclei_3d
from fluoseg.data.synth.vessels import DEFAULT_MARKERS, VESSEL_CLASSES, SimulatedSample, simulate_tissue

__all__ = [
    "CELL_DOMAINS",
    "CELL_MARKERS",
    "CellDomain",
    "DEFAULT_CELL_MARKERS",
    "DEFAULT_MARKERS",
    "VESSEL_CLASSES",
    "SimulatedCells",
    "SimulatedNuclei",
    "SimulatedNuclei3D",
    "SimulatedSample",
    "cell_domain",
    "simulate_cells",
    "simulate_nuclei",
    "simulate_nuclei_3d",
    "simulate_tissue",
    "touching_pairs",
    "write_cells_dataset",
]
