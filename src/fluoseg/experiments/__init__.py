"""Experiments of the MS-ME paper: marker combinations, upper bound, cross-validation, panels.

Modules (reachable as ``fluoseg experiment`` and ``fluoseg crossval`` subcommands, see
:mod:`fluoseg.cli.experiment`):

- :mod:`.results`: the long results table (one row per method, class, marker
  combination, fold and sample) and its per-combination summary;
- :mod:`.combinations`: evaluate a trained run on every marker subset of its test samples;
- :mod:`.compare`: paired differences to a reference method (Wilcoxon), marker effects
  (Mann-Whitney);
- :mod:`.panels`: heterogeneous training panels, the paper's Cases 1-6, and the
  ``|M^UB| / |M^total|`` ratio;
- :mod:`.upper_bound`: one plain network per trainable marker combination (UB);
- :mod:`.crossval`: the one k-fold cross-validation by sample, with pluggable scorers:
  :class:`.combinations.CombinationScorer` (all marker combinations) and
  :class:`.config_comparison.TestSetScorer` (per-sample metrics, config comparisons);
- :mod:`.me_analysis`: recalibration strength of Marker Excite layers (Supplementary Fig. 6);
- :mod:`.runs`: resumable training units shared by the above; :mod:`.plots`: figures.

Importing this package imports nothing heavy; torch is loaded by the modules that train
or predict.
"""
