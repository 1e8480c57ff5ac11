"""Simulated data for the demo, the tests and benchmarks.

- :func:`simulate_tissue` (:mod:`fluoseg.data.synth.vessels`): multi-marker bone-marrow-like
  tissue with sinusoid and artery masks, like the project's ``vessels5`` data.
- :func:`simulate_nuclei` (:mod:`fluoseg.data.synth.nuclei`): fluorescence nuclei with
  instance labels, including touching nuclei.
- :func:`simulate_nuclei_3d` (:mod:`fluoseg.data.synth.nuclei3d`): z-stacks of randomly
  oriented ellipsoidal nuclei, sampled anisotropically along z.

All are numpy/scipy only and deterministic given a seed; a 2D image takes milliseconds,
a 16 x 128 x 128 stack a fraction of a second.
"""

from fluoseg.data.synth.nuclei import SimulatedNuclei, simulate_nuclei, touching_pairs
from fluoseg.data.synth.nuclei3d import SimulatedNuclei3D, simulate_nuclei_3d
from fluoseg.data.synth.vessels import DEFAULT_MARKERS, VESSEL_CLASSES, SimulatedSample, simulate_tissue

__all__ = [
    "DEFAULT_MARKERS",
    "VESSEL_CLASSES",
    "SimulatedNuclei",
    "SimulatedNuclei3D",
    "SimulatedSample",
    "simulate_nuclei",
    "simulate_nuclei_3d",
    "simulate_tissue",
    "touching_pairs",
]
