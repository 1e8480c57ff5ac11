"""Simulated data for the demo, the tests and benchmarks.

- :func:`simulate_tissue` (:mod:`fluoseg.data.synth.vessels`): multi-marker bone-marrow-like
  tissue with sinusoid and artery masks, like the project's ``vessels5`` data.
- :func:`simulate_nuclei` (:mod:`fluoseg.data.synth.nuclei`): fluorescence nuclei with
  instance labels, including touching nuclei.

Both are numpy/scipy only, deterministic given a seed, and take milliseconds per image.
"""

from fluoseg.data.synth.nuclei import SimulatedNuclei, simulate_nuclei, touching_pairs
from fluoseg.data.synth.vessels import DEFAULT_MARKERS, VESSEL_CLASSES, SimulatedSample, simulate_tissue

__all__ = [
    "DEFAULT_MARKERS",
    "VESSEL_CLASSES",
    "SimulatedNuclei",
    "SimulatedSample",
    "simulate_nuclei",
    "simulate_tissue",
    "touching_pairs",
]
