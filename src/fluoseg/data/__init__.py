"""Data handling: samples and manifests, normalisation, resampling, augmentation, simulators.

Submodules are imported explicitly (``from fluoseg.data.normalize import compute_stats``);
this package imports nothing itself, so importing one part never pulls in the others.
"""
