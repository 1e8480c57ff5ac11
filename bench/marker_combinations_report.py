"""Render ``bench/results/marker_combinations.md`` and its README block from the per-unit CSV.

Kept apart from ``bench/marker_combinations.py`` so that ``--report`` needs neither torch nor
the work folder. Every number of the report and of the README block comes from the per-unit
CSV (``marker_combinations_units.csv``: one row per trained network, marker combination and
class, with the pixel counts pooled over the fold's test samples and the network's training
batches); the optional run record (``marker_combinations_run.json``) adds only the settings
text and the computational cost. Without a per-unit CSV the report and the block say that the
numbers are pending and show the means of the old run (2026-11-21) from its committed
summary, labelled as the old run, without its statistics.

Statistics (issue 11): the unit of replication is an independently trained network, a
(fold, seed). The 31 combinations of a fold are scored by one network on the same test
samples, so they are averaged into one value per network (the mean F1 over the
combinations, per class; "both" is the mean of the two classes) before any test. Methods are
compared by paired t-tests over the networks they share (same fold and seed), against MS on
all 31 combinations and against UB on the combinations UB was trained for; Holm's
correction runs over every test of the report together, the stars follow the adjusted p,
and n is written beside every star. No verdict rests on fewer than 3 networks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from _common import Test, adjust_holm, mean_sd, paired_test

UNIT_FIELDS = ("method", "fold", "seed", "combination", "markers", "class", "tp", "fp", "fn", "f1", "batches")
"""Columns of the per-unit CSV, in file order."""

REFERENCE = "MS"
UPPER_BOUND = "UB"
FOCUS = "MS-ME"
# Issue 11, item 3: does longer training close the MS-ME-UB gap? Both trained with 4x the batches:
# MS-ME-4x against UB-4x is the equal-steps comparison at the longer schedule; MS-ME-4x against
# UB compares equal total compute (one network against UB's four networks of a fold).
LONGER = "MS-ME-4x"
LONGER_UB = "UB-4x"
LONGER_FACTOR = 4
UPPER_BOUNDS = (UPPER_BOUND, LONGER_UB)
"""Methods whose networks are trained one per combination (their rows cover only those combinations)."""
R_DROP = 0.5
"""MS-ME's marker-drop probability (the paper's)."""


@dataclass(frozen=True)
class Probe:
    """One change to the MS-ME network, trained on the same folds with MS-ME's batches (issue 11, item 3).

    ``unet`` holds the U-Net options it sets on top of MS-ME's (``base_filters_factor``
    multiplies the benchmark's ``--base-filters``); ``question`` is the hypothesis it tests.
    """

    change: str
    question: str
    unet: Mapping[str, Any]

    @property
    def r_drop(self) -> float:
        return float(self.unet.get("marker_input_options", {}).get("r_drop", R_DROP))


# Why does MS-ME trail UB at equal steps? Marker sampling spreads one network's batches over 31
# panels where UB trains on its own panel only (exposure), five panels' worth of tasks share
# MS-ME's filters (capacity), and Marker Excite rescales every block (placement).
PROBES = {
    "MS-ME-r25": Probe("r_drop 0.25", "exposure: do panels with many markers gain when drawn more often?",
                       {"marker_input_options": {"r_drop": 0.25}}),
    "MS-ME-r75": Probe("r_drop 0.75", "exposure: do panels with few markers gain when drawn more often?",
                       {"marker_input_options": {"r_drop": 0.75}}),
    "MS-ME-2w": Probe("twice the filters", "capacity: does a wider network close the gap?",
                      {"base_filters_factor": 2}),
    "MS-ME-BD": Probe("Marker Excite after the bottleneck and decoder blocks only",
                      "placement: does excitation of the encoder cost accuracy?",
                      {"attention_at": ["bottleneck", "decoder"]}),
}
METHODS = ("MZ", "MS", "MS-ME", "MS-SE", "HeMIS", "UB", "MS-ME-4x", "UB-4x", *PROBES)
MAIN_METHODS = tuple(m for m in METHODS if m not in PROBES)
"""The methods of the main comparisons (the probes form their own family of tests)."""
BOTH = "both"
README_BEGIN = "<!-- markers:begin (bench/marker_combinations.py --report) -->"
README_END = "<!-- markers:end -->"
UNITS_CSV = "bench/results/marker_combinations_units.csv"
OLD_SUMMARY = "bench/results/marker_combinations_2026-11-21_summary.csv"
FULL_RUN = ("nohup env OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python bench/marker_combinations.py "
            "> bench/work/marker_combinations.log 2>&1 &")
FULL_RUN_TIME = "about 4 h on 2 cores at 1 thread"

Rows = list[dict[str, Any]]
Network = tuple[int, int]  # (fold, seed): one independently trained network per method


# ---- reading ------------------------------------------------------------------------------------

def typed(raw: Sequence[Mapping[str, str]]) -> Rows:
    """Per-unit CSV rows (strings) with integer counts, folds, seeds and batches, and a float F1."""
    rows = []
    for r in raw:
        row: dict[str, Any] = dict(r)
        for key in ("fold", "seed", "tp", "fp", "fn", "batches"):
            row[key] = int(r[key])
        row["f1"] = float(r["f1"])
        rows.append(row)
    return rows


def _classes(rows: Rows) -> list[str]:
    return list(dict.fromkeys(r["class"] for r in rows))


def _methods(rows: Rows) -> list[str]:
    present = {r["method"] for r in rows}
    return [m for m in METHODS if m in present]


def _code_key(code: str) -> tuple[int, str]:
    """Fewest markers first, then by code (``m_135``): the paper's subset order."""
    return len(code) - 2, code


def _network(row: Mapping[str, Any]) -> Network:
    return int(row["fold"]), int(row["seed"])


def _fmt(value: float, spec: str = ".3f") -> str:
    return "n/a" if value is None or not np.isfinite(value) else format(value, spec)


def _network_label(network: Network, seeds: int) -> str:
    return f"fold {network[0]}" if seeds == 1 else f"f{network[0]}/s{network[1]}"


# ---- per-network values --------------------------------------------------------------------------

def upper_bound_combinations(rows: Rows) -> dict[Network, set[str]]:
    """The combinations UB (or UB-4x: the same plan) was trained for, per (fold, seed)."""
    trained: dict[Network, set[str]] = {}
    for r in rows:
        if r["method"] in UPPER_BOUNDS:
            trained.setdefault(_network(r), set()).add(r["combination"])
    return trained


def network_scores(rows: Rows, method: str, classes: Sequence[str],
                   only: Mapping[Network, set[str]] | None = None) -> dict[Network, float]:
    """One value per network of ``method``: its mean F1 over the combinations, averaged over ``classes``.

    ``only`` restricts each network to the combinations listed for its (fold, seed) (UB's);
    a network lacking one of the classes gets no value.
    """
    per: dict[tuple[Network, str], list[float]] = {}
    for r in rows:
        network = _network(r)
        if r["method"] != method or r["class"] not in classes:
            continue
        if only is not None and r["combination"] not in only.get(network, set()):
            continue
        per.setdefault((network, r["class"]), []).append(r["f1"])
    networks = sorted({network for network, _ in per})
    return {n: float(np.mean([np.mean(per[n, c]) for c in classes])) for n in networks
            if all((n, c) in per for c in classes)}


def combination_scores(rows: Rows, method: str, combination: str, classes: Sequence[str]) -> dict[Network, float]:
    """F1 of one combination per network of ``method``, averaged over ``classes``."""
    return network_scores([r for r in rows if r["combination"] == combination], method, classes)


def _class_sets(classes: Sequence[str]) -> list[tuple[str, list[str]]]:
    return [(c, [c]) for c in classes] + ([(BOTH, list(classes))] if len(classes) > 1 else [])


def comparisons(rows: Rows) -> list[Test]:
    """Every paired test of the report, Holm-adjusted together.

    Part ``MS``: F1(method) − F1(MS) over all combinations; part ``UB``: F1(method) − F1(UB)
    on the combinations UB was trained for (per network); part ``UB-4x``: MS-ME-4x − UB-4x
    on those combinations (equal steps at the longer schedule); per class and for both classes.
    """
    methods, classes = [m for m in _methods(rows) if m in MAIN_METHODS], _classes(rows)
    trained = upper_bound_combinations(rows)
    tests: list[Test] = []
    if REFERENCE in methods:
        for method in [m for m in methods if m not in (REFERENCE, LONGER, *UPPER_BOUNDS)]:
            for label, chosen in _class_sets(classes):
                tests.append(paired_test(REFERENCE, f"{method} − {REFERENCE}, {label}",
                                         network_scores(rows, method, chosen),
                                         network_scores(rows, REFERENCE, chosen)))
    if UPPER_BOUND in methods:
        for method in [m for m in methods if m not in UPPER_BOUNDS]:
            for label, chosen in _class_sets(classes):
                tests.append(paired_test(UPPER_BOUND, f"{method} − {UPPER_BOUND}, {label} (UB's combinations)",
                                         network_scores(rows, method, chosen, trained),
                                         network_scores(rows, UPPER_BOUND, chosen, trained)))
    if LONGER in methods and LONGER_UB in methods:
        for label, chosen in _class_sets(classes):
            tests.append(paired_test(LONGER_UB, f"{LONGER} − {LONGER_UB}, {label} (UB's combinations)",
                                     network_scores(rows, LONGER, chosen, trained),
                                     network_scores(rows, LONGER_UB, chosen, trained)))
    adjust_holm(tests)
    return tests


PROBE_PART = "probes"


def probe_comparisons(rows: Rows) -> list[Test]:
    """The probes' own family of tests, Holm-adjusted together (apart from :func:`comparisons`).

    Per probe, both classes: F1(probe) − F1(MS-ME) over all combinations, and F1(probe) −
    F1(UB) on the combinations UB was trained for (to set beside MS-ME − UB).
    """
    methods, classes = _methods(rows), _classes(rows)
    trained = upper_bound_combinations(rows)
    tests: list[Test] = []
    for probe in [m for m in methods if m in PROBES]:
        if FOCUS in methods:
            tests.append(paired_test(PROBE_PART, f"{probe} − {FOCUS}, {BOTH}", network_scores(rows, probe, classes),
                                     network_scores(rows, FOCUS, classes)))
        if UPPER_BOUND in methods:
            tests.append(paired_test(PROBE_PART, f"{probe} − {UPPER_BOUND}, {BOTH} (UB's combinations)",
                                     network_scores(rows, probe, classes, trained),
                                     network_scores(rows, UPPER_BOUND, classes, trained)))
    adjust_holm(tests)
    return tests


def draw_probability(combination: str, r_drop: float, markers: int = 5) -> float:
    """Probability that marker sampling keeps exactly ``combination``'s markers of a sample with all ``markers``.

    Each marker is kept with probability ``1 - r_drop``, and an empty draw is drawn again
    (:func:`fluoseg.models.marker_input.sample_markers`): ``(1-r)^k r^(K-k) / (1 - r^K)``.
    """
    kept = len(combination) - 2  # "m_124" keeps 3 markers
    return (1 - r_drop) ** kept * r_drop ** (markers - kept) / (1 - r_drop ** markers)


def batches(rows: Rows, method: str) -> list[int]:
    """The distinct training-batch counts of a method's networks."""
    return sorted({r["batches"] for r in rows if r["method"] == method})


def _test(tests: Sequence[Test], question: str) -> Test | None:
    return next((t for t in tests if t.question == question), None)


# ---- report sections ------------------------------------------------------------------------------

def means_lines(rows: Rows) -> list[str]:
    """Mean ± SD over networks of the per-network mean F1, on all combinations and on UB's."""
    methods, classes = _methods(rows), _classes(rows)
    trained = upper_bound_combinations(rows)
    lines = ["## Mean F1 per method and class", "",
             "Per network (fold × seed), the mean over its combinations of the F1 pooled over the fold's test "
             "samples; then mean ± SD over the networks (n networks). UB covers only its combinations; the last "
             "columns restrict every network to the combinations UB was trained for on that fold.", "",
             "| method | training batches | " + " | ".join(f"{c} (all)" for c in classes) + " | "
             + " | ".join(f"{c} (UB's combinations)" for c in classes) + " |",
             "|---|---:|" + "---:|" * (2 * len(classes))]
    for method in methods:
        cells = [f"{mean_sd(list(v.values()))} (n={len(v)})"
                 for v in (network_scores(rows, method, [c]) for c in classes)]
        if method in UPPER_BOUNDS:
            cells = ["–"] * len(classes)
        cells += [f"{mean_sd(list(v.values()))} (n={len(v)})" if v else "–"
                  for v in (network_scores(rows, method, [c], trained) for c in classes)]
        lines.append(f"| {method} | {', '.join(map(str, batches(rows, method)))} | " + " | ".join(cells) + " |")
    return lines + [""]


def tests_lines(tests: Sequence[Test], part: str, title: str, text: str) -> list[str]:
    chosen = [t for t in tests if t.part == part]
    if not chosen:
        return [f"## {title}", "", f"_No {part} results yet._", ""]
    lines = [f"## {title}", "", text, "",
             "| comparison | mean difference | n | p | p (Holm) | significance |", "|---|---:|---:|---:|---:|---|"]
    lines += [f"| {t.question} | {t.cell()} |" for t in chosen]
    return lines + [""]


FOCUS_PAIRS = ((FOCUS, UPPER_BOUND), (LONGER, UPPER_BOUND), (LONGER, LONGER_UB))
"""(method, upper bound) pairs compared per trained combination: equal steps, equal total compute,
equal steps at the longer schedule."""


def pair_relation(rows: Rows, method: str, reference: str) -> str:
    """What a (method, upper bound) pair holds equal, from the batches the networks recorded:
    ``equal steps`` (at LONGER_FACTOR x the schedule against UB-4x), ``equal total training
    compute`` (one network against the upper bound's networks of a fold) or ``UNEQUAL steps``."""
    steps_method, steps_reference = batches(rows, method), batches(rows, reference)
    if steps_method == steps_reference:
        return "equal steps" + (f" at {LONGER_FACTOR}x the schedule" if reference == LONGER_UB else "")
    sizes = {len(codes) for codes in upper_bound_combinations(rows).values()}
    per_fold = sizes.pop() if len(sizes) == 1 else 0  # UB networks per fold
    if len(steps_method) == 1 and len(steps_reference) == 1 and steps_method[0] == per_fold * steps_reference[0]:
        return "equal total training compute"
    return "UNEQUAL steps"


def steps_text(rows: Rows, method: str, reference: str) -> str:
    """The sentence of the report saying what a (method, upper bound) pair holds equal."""
    relation = pair_relation(rows, method, reference)
    counts = (f"Training batches: {method} {', '.join(map(str, batches(rows, method)))}, {reference} "
              f"{', '.join(map(str, batches(rows, reference)))} per network")
    if relation.startswith("equal steps"):
        return f"The paper's central claim is that they are equal. {counts}: **{relation}**."
    if relation == "equal total training compute":
        per_fold = len(next(iter(upper_bound_combinations(rows).values())))
        return (f"{counts}: one {method} network for all 31 combinations against {per_fold} {reference} networks "
                f"per fold, so **{relation}** (not equal steps per network).")
    return f"{counts}: **{relation}: this table does not test the claim**."


def focus_lines(rows: Rows, method: str = FOCUS, reference: str = UPPER_BOUND) -> list[str]:
    """Issue 11, item 3: ``method`` − ``reference`` (an upper bound) per combination it was trained for, every network."""
    trained = upper_bound_combinations(rows)
    methods, classes = _methods(rows), _classes(rows)
    title = f"## {method} − {reference} per trained combination"
    if method not in methods or reference not in methods:
        return [title, "", f"_Needs {method} and {reference} results._", ""]
    networks = sorted(set(network_scores(rows, method, classes)) & set(trained))
    seeds = len({s for _, s in networks})
    markers = {r["combination"]: r["markers"] for r in rows}
    codes = sorted(set().union(*trained.values()), key=_code_key) if trained else []
    lines = [title, "",
             f"F1({method}) − F1({reference}) of each network on each combination {reference} was trained for. "
             f"{steps_text(rows, method, reference)}"
             " Descriptive (no test per combination; the tests over UB's combinations are in the tables above); "
             f"`{method} ≥ {reference}` counts the networks where the difference is ≥ 0.", "",
             "| combination | markers | class | " + " | ".join(_network_label(n, seeds) for n in networks)
             + f" | mean ± SD | {method} | {reference} | {method} ≥ {reference} |",
             "|---|---|---|" + "---:|" * (len(networks) + 4)]
    for code in codes:
        for label, chosen in _class_sets(classes):
            focus = combination_scores(rows, method, code, chosen)
            ub = combination_scores(rows, reference, code, chosen)
            shared = [n for n in networks if n in focus and n in ub]
            differences = {n: focus[n] - ub[n] for n in shared}
            cells = [_fmt(differences[n], "+.3f") if n in differences else "" for n in networks]
            values = list(differences.values())
            lines.append(f"| {code} | {markers.get(code, '')} | {label} | " + " | ".join(cells)
                         + f" | {mean_sd(values, signed=True)} | {mean_sd([focus[n] for n in shared])} | "
                         f"{mean_sd([ub[n] for n in shared])} | {sum(v >= 0 for v in values)}/{len(values)} |")
    return lines + [""]


def _test_cell(test: Test | None, better: str = "better", worse: str = "worse") -> str:
    """A README/report cell: difference, Holm p, n and the verdict; ``—`` without a test."""
    if test is None:
        return "—"
    return f"{test.mean_difference:+.3f} (p Holm {test.p_holm:.2g}, n={test.n}): {test.verdict(better, worse)}"


def _mean_gap(rows: Rows, method: str, code: str, classes: Sequence[str]) -> tuple[str, list[float]]:
    """F1(method) − F1(UB) on one trained combination: ``mean ± SD`` over the networks and the differences."""
    values = combination_scores(rows, method, code, classes)
    ub = combination_scores(rows, UPPER_BOUND, code, classes)
    differences = [values[n] - ub[n] for n in values if n in ub]
    return mean_sd(differences, signed=True), differences


def probe_lines(rows: Rows, tests: Sequence[Test]) -> list[str]:
    """Issue 11, item 3: the probes of why MS-ME trails UB at equal steps, tested and per trained combination."""
    methods, classes = _methods(rows), _classes(rows)
    probes = [m for m in methods if m in PROBES]
    title = f"## Why {FOCUS} trails {UPPER_BOUND} at equal steps: probes"
    if not probes or FOCUS not in methods:
        return [title, "", f"_No probe results yet ({', '.join(PROBES)})._", ""]
    lines = [title, "",
             f"Each probe is the {FOCUS} network with one change, trained on the same folds and seeds with the "
             f"same batches as {FOCUS}. The {len(tests)} tests of this section are a family of their own (planned "
             "after the comparisons above): Holm's correction over them, stars and verdicts from the adjusted p, n "
             "beside each. Over all combinations a probe is compared with MS-ME; on UB's combinations with UB, "
             f"beside {FOCUS} − {UPPER_BOUND} above.", "",
             f"| probe | change | question | training batches | − {FOCUS}, all combinations, {BOTH} | "
             f"− {UPPER_BOUND}, UB's combinations, {BOTH} |", "|---|---|---|---:|---|---|"]
    for probe in probes:
        cells = [_test_cell(_test(tests, f"{probe} − {reference}, {BOTH}{suffix}"))
                 for reference, suffix in ((FOCUS, ""), (UPPER_BOUND, " (UB's combinations)"))]
        lines.append(f"| {probe} | {PROBES[probe].change} | {PROBES[probe].question} | "
                     f"{', '.join(map(str, batches(rows, probe)))} | " + " | ".join(cells) + " |")
    trained = upper_bound_combinations(rows)
    if UPPER_BOUND not in methods or not trained:
        return lines + [""]
    rates = sorted({R_DROP} | {PROBES[p].r_drop for p in probes})
    markers = {r["combination"]: r["markers"] for r in rows}
    lines += ["", f"F1(network) − F1({UPPER_BOUND}) per combination {UPPER_BOUND} was trained for, mean ± SD over "
              f"the networks (descriptive). `P(drawn)` is the chance that marker sampling gives a training sample "
              f"exactly this panel, at r_drop " + " / ".join(f"{r:g}" for r in rates) + ".", "",
              f"| combination | markers | class | P(drawn) | {FOCUS} | " + " | ".join(probes) + " |",
              "|---|---|---|---|" + "---:|" * (len(probes) + 1)]
    for code in sorted(set().union(*trained.values()), key=_code_key):
        drawn = " / ".join(f"{draw_probability(code, r):.3f}" for r in rates)
        for label, chosen in _class_sets(classes):
            cells = [_mean_gap(rows, method, code, chosen)[0] for method in (FOCUS, *probes)]
            lines.append(f"| {code} | {markers.get(code, '')} | {label} | {drawn} | " + " | ".join(cells) + " |")
    return lines + [""]


def per_combination_lines(rows: Rows) -> list[str]:
    """Mean F1 over the networks per (method, class, combination); the probes are in :func:`probe_lines`."""
    methods, classes = [m for m in _methods(rows) if m in MAIN_METHODS], _classes(rows)
    means: dict[tuple[str, str, str], list[float]] = {}
    markers: dict[str, str] = {}
    for r in rows:
        means.setdefault((r["method"], r["class"], r["combination"]), []).append(r["f1"])
        markers[r["combination"]] = r["markers"]
    lines = ["## Per combination (mean F1 over the networks)", "",
             "| combination | markers | " + " | ".join(f"{m} {c[:4]}." for c in classes for m in methods) + " |",
             "|---|---|" + "---:|" * (len(classes) * len(methods))]
    for code in sorted(markers, key=_code_key):
        cells = [_fmt(float(np.mean(means[m, c, code]))) if (m, c, code) in means else "" for c in classes
                 for m in methods]
        lines.append(f"| {code} | {markers[code]} | " + " | ".join(cells) + " |")
    return lines + [""]


def settings_lines(record: Mapping[str, Any] | None) -> list[str]:
    """The run's settings, from the run record written by the benchmark."""
    if not record:
        return ["_No run record (`marker_combinations_run.json`): settings unknown._"]
    s = record["settings"]
    ub = s["ub_combinations"]
    ub_text = ("all trainable combinations" if ub == "all" else f"{ub} combinations spread over the 31"
               if str(ub).isdigit() else f"combinations {ub}")
    half = max(4, int(s["base_filters"]) // 2)
    return [
        f"- Data: `{s['manifest']}` → `{s['data']}`" + (f" ({s['crop']}×{s['crop']} px crops at the windows richest "
                                                         "in the rarest class)" if s["crop"] else " (whole samples)"),
        f"- {s['folds']}-fold cross-validation by sample (`kfold_splits`, seed 0), the same folds for every method "
        f"and seed; training seeds {s['seeds']}; every method evaluated on all 31 marker combinations of its test "
        "samples.",
        f"- U-Net: depth {s['depth']}, {s['base_filters']} base filters, valid padding, no normalisation; HeMIS: "
        f"{half} backend filters, 2 backend layers, U-Net frontend with {half} base filters. One joint network "
        "for both classes (the paper trains one per class).",
        f"- Training: {s['epochs']} epochs × {s['steps']} steps = {s['epochs'] * s['steps']} batches of {s['batch']} "
        f"patches of {s['patch']} px, Adam lr {s['lr']}, log-weighted cross-entropy, flips/rotations/intensity "
        "jitter, model selection by best validation mean F1 (once per epoch).",
        f"- UB: {ub_text}, {s['ub_epochs']} epochs × {s['steps']} steps = {s['ub_epochs'] * s['steps']} batches per "
        "model, a Marker-Zero U-Net trained and validated only on its combination.",
        f"- Inference: overlap-tile with {s['tile']}-px input tiles. CPU: {s['cpus']} cores, {s['threads']} torch "
        f"thread(s), torch {s['torch']}, Python {s['python']}; commit {s['commit']}; "
        f"{record.get('wall_minutes', float('nan')):.0f} min of work in all invocations.",
    ]


def cost_lines(record: Mapping[str, Any] | None) -> list[str]:
    if not record or not record.get("cost"):
        return ["_No run record: cost not measured._"]
    s = record["settings"]
    lines = [f"Median over 5 training batches ({s['batch']} × {s['patch']}² px, after one warm-up) and 3 inference "
             f"tiles (1 × {s['tile']}² px), {s['threads']} thread(s) on CPU, each network in its own process; peak "
             "memory is that process's peak resident set size (`resource.getrusage`), the increase is over the "
             "process after imports and model construction. Wall time per model is the measured total "
             "(training + per-epoch validation) in this benchmark.", "",
             "| method | parameters (×10⁶) | training (ms/batch) | inference (ms/tile) | peak RSS (MiB) | "
             "increase (MiB) | wall time per model (s) | models | threads |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for c in record["cost"]:
        lines.append(f"| {c['method']} | {c['parameters'] / 1e6:.3f} | {1000 * c['train_s_per_batch']:.0f} | "
                     f"{1000 * c['infer_s_per_tile']:.0f} | {c['peak_rss_mib']:.0f} | "
                     f"{c['peak_rss_mib'] - c['baseline_rss_mib']:.0f} | {_fmt(c['wall_s_per_model'], '.0f')} | "
                     f"{c['models']} | {c.get('threads', s['threads'])} |")
    return lines


NOTES = [
    "- vessels5 is simulated (see `../shared/data/README.md`); arteries are rare and absent from some samples, "
    "so their per-fold F1 is noisy.",
    "- Deviations from the paper, for a CPU budget: far fewer training steps (the paper trains 200 epochs), a "
    "smaller U-Net, crops, one joint network for both classes, and an upper bound on a subset of combinations.",
    "- The networks of one fold share their test samples across seeds; with one seed the n of every test is the "
    "number of folds. With 4 networks only large, consistent differences can survive Holm's correction: "
    "'no detectable difference' is not evidence of equality.",
    "- Rebuild this report and the README block from the committed CSV with `bench/marker_combinations.py "
    "--report`; rerunning the benchmark skips finished (method, fold, seed) units.",
]


def render(rows: Rows, record: Mapping[str, Any] | None = None, *, source: str = UNITS_CSV,
           smoke: bool = False) -> str:
    """The Markdown report of a run's per-unit rows (read from ``source``; the run record adds settings and cost)."""
    tests = comparisons(rows)
    networks = {m: len(network_scores(rows, m, _classes(rows))) for m in _methods(rows)}
    title = "# Marker combinations on vessels5" + (" (SMOKE RUN: tiny settings, numbers meaningless)" if smoke else "")
    lines = [title, "",
             f"Rendered by `bench/marker_combinations.py --report` from `{source}` "
             "(one row per network, combination and class; pixel counts pooled over the fold's test samples).", "",
             "## Statistics", "",
             "The unit of replication is an independently trained network (fold × seed): the 31 combinations of a "
             "fold are scored by one network on the same test samples, so they are averaged into one value per "
             "network before testing (UB: its per-combination networks of a fold and seed together). Networks per method: " + ", ".join(f"{m} {n}" for m, n in networks.items())
             + f". Paired t-tests over the networks two methods share; Holm's correction over all {len(tests)} "
             "tests of the comparisons below together (the probes of MS-ME are a family of their own, in their "
             "section); the stars follow the Holm-adjusted p "
             "(* ≤ 0.05, ** ≤ 0.01, *** ≤ 0.001), with n beside each; no verdict on fewer than 3 networks.", "",
             "## Setting", ""] + settings_lines(record) + [""]
    lines += means_lines(rows)
    lines += tests_lines(tests, REFERENCE, f"Paired differences F1(method) − F1({REFERENCE})",
                         "Per network, mean F1 over all 31 combinations; `both` averages the two classes.")
    lines += tests_lines(tests, UPPER_BOUND,
                         f"Paired differences F1(method) − F1({UPPER_BOUND}), on UB's combinations", "Per network, mean F1 over the combinations UB was trained for on its fold.")
    if LONGER_UB in _methods(rows):
        lines += tests_lines(tests, LONGER_UB, f"Paired differences F1({LONGER}) − F1({LONGER_UB}), on UB's combinations",
                             f"Equal steps at the longer schedule ({LONGER_FACTOR}x): does the MS-ME − UB gap close "
                             "with longer training?")
    methods = _methods(rows)
    for method, reference in FOCUS_PAIRS:
        if method == FOCUS or (method in methods and reference in methods):
            lines += focus_lines(rows, method, reference)
    lines += probe_lines(rows, probe_comparisons(rows))
    lines += per_combination_lines(rows)
    lines += ["## Computational cost (cf. Supplementary Table 3)", ""] + cost_lines(record)
    lines += ["", "## Notes", ""] + NOTES
    return "\n".join(lines) + "\n"


def readme_block(rows: Rows, *, source: str = UNITS_CSV) -> str:
    """The README's summary: mean F1 per method, the tests against MS and UB with Holm-based verdicts."""
    tests = comparisons(rows)
    methods, classes = [m for m in _methods(rows) if m in MAIN_METHODS], _classes(rows)
    folds = len({r["fold"] for r in rows})
    seeds = sorted({r["seed"] for r in rows})
    steps = {m: ", ".join(map(str, batches(rows, m))) for m in methods}
    lines = [README_BEGIN,
             f"**Marker combinations on vessels5** (`bench/results/marker_combinations.md`, rendered by "
             f"`bench/marker_combinations.py --report` from `{source}`): {folds}-fold cross-validation by sample, "
             f"seed(s) {', '.join(map(str, seeds))}, every method evaluated on all 31 marker combinations of its test "
             f"samples; training batches per network: " + ", ".join(f"{m} {s}" for m, s in steps.items()) + ". "
             "The unit is the trained network (fold × seed): per network the mean F1 over the combinations, then "
             f"paired t-tests, Holm over all {len(tests)} tests of the report; verdicts follow the Holm-adjusted p.",
             "", f"| method | {' | '.join(classes)} | − {REFERENCE}, {BOTH} classes (p Holm, n) | "
             f"− {UPPER_BOUND} on UB's combinations, {BOTH} (p Holm, n) |", "|---|" + "---|" * (len(classes) + 2)]
    for method in methods:
        means = [mean_sd(list(network_scores(rows, method, [c],
                                              upper_bound_combinations(rows) if method in UPPER_BOUNDS else None
                                              ).values())) for c in classes]
        cells = []
        for reference, suffix in ((REFERENCE, ""), (UPPER_BOUND, " (UB's combinations)")):
            cells.append(_test_cell(_test(tests, f"{method} − {reference}, {BOTH}{suffix}")))
        lines.append(f"| {method} | " + " | ".join(means) + " | " + " | ".join(cells) + " |")
    trained = upper_bound_combinations(rows)
    for method, reference in FOCUS_PAIRS:
        if method not in methods or reference not in methods or not trained:
            continue
        codes = sorted(set().union(*trained.values()), key=_code_key)
        per_code = []
        for code in codes:
            focus = combination_scores(rows, method, code, classes)
            ub = combination_scores(rows, reference, code, classes)
            shared = [n for n in focus if n in ub]
            per_code.append(f"{code} {mean_sd([focus[n] - ub[n] for n in shared], signed=True)}")
        holds = pair_relation(rows, method, reference)
        test = _test(tests, f"{method} − {reference}, {BOTH} (UB's combinations)")
        verdict = ("" if test is None else f" Over these combinations: {test.mean_difference:+.3f} "
                   f"(p Holm {test.p_holm:.2g}, n={test.n}): {test.verdict('better', 'worse')}.")
        lines += ["", f"{method} − {reference} per trained combination ({BOTH} classes, mean ± SD over networks; "
                  f"{holds}): " + "; ".join(per_code) + f".{verdict} Per-network values in the report."]
    if UPPER_BOUND in methods:
        lines += ["", "The UB rows show their mean F1 on their own combinations only."]
    lines += probe_summary(rows, tests)
    return "\n".join(lines + [README_END]) + "\n"


def probe_summary(rows: Rows, tests: Sequence[Test]) -> list[str]:
    """The README's sentence on the probes: each probe − UB on UB's combinations beside MS-ME − UB (from ``tests``,
    the :func:`comparisons` of ``rows``)."""
    probe_tests = probe_comparisons(rows)
    probes = [m for m in _methods(rows) if m in PROBES]
    if not probe_tests or UPPER_BOUND not in _methods(rows):
        return []
    focus = _test(tests, f"{FOCUS} − {UPPER_BOUND}, {BOTH} (UB's combinations)")
    parts = [f"{p} ({PROBES[p].change}) "
             + _test_cell(_test(probe_tests, f"{p} − {UPPER_BOUND}, {BOTH} (UB's combinations)")) for p in probes]
    return ["", f"Why {FOCUS} trails {UPPER_BOUND} (probes: the MS-ME network with one change, same batches; "
            f"their own Holm family of {len(probe_tests)} tests): − {UPPER_BOUND} on UB's combinations, {BOTH} "
            f"classes, against {FOCUS} − {UPPER_BOUND} "
            + ("—" if focus is None else f"{focus.mean_difference:+.3f}") + ": " + "; ".join(parts) + "."]


# ---- pending (no run under these rules yet) -------------------------------------------------------

def _old_means(old: Rows) -> tuple[list[str], list[str], dict[tuple[str, str], float]]:
    methods = [m for m in METHODS if any(r["method"] == m for r in old)]
    classes = list(dict.fromkeys(r["class"] for r in old))
    means = {}
    for method in methods:
        for c in classes:
            values = [float(r["mean_f1"]) for r in old if r["method"] == method and r["class"] == c]
            if values:
                means[method, c] = float(np.mean(values))
    return methods, classes, means


def _old_table(old: Rows) -> list[str]:
    methods, classes, means = _old_means(old)
    lines = [f"| method (old run) | {' | '.join(classes)} |", "|---|" + "---|" * len(classes)]
    for method in methods:
        note = " (its 4 trained combinations only)" if method == UPPER_BOUND else ""
        lines.append(f"| {method}{note} | " + " | ".join(_fmt(means.get((method, c), float("nan"))) for c in classes)
                     + " |")
    return lines


PENDING = ("numbers pending. The re-run under issue 11's rules (the trained network as the unit, paired tests "
           "over folds, Holm's correction over all comparisons, UB trained with as many batches as the other "
           "methods, MS-ME − UB per trained combination) has not been done yet. It is `" + FULL_RUN + "` ("
           + FULL_RUN_TIME + "); it writes `" + UNITS_CSV + "`, from which `--report` renders this "
           "block. Until then no difference between the methods is claimed.")

OLD = ("Mean F1 over the 31 combinations and 4 folds of the old run (2026-11-21, `" + OLD_SUMMARY + "`: UB trained "
       "100 batches against 250 for the others; its significance tests, over (class, combination, fold) units, "
       "are withdrawn):")


def render_pending(old: Rows) -> str:
    """The report while no per-unit CSV exists: what is pending, and the old run's means, labelled."""
    lines = ["# Marker combinations on vessels5: pending", "", "**Marker combinations on vessels5**: " + PENDING, ""]
    if old:
        lines += [OLD, ""] + _old_table(old)
    return "\n".join(lines) + "\n"


def readme_pending_block(old: Rows) -> str:
    lines = [README_BEGIN, "**Marker combinations on vessels5** (`bench/results/marker_combinations.md`): " + PENDING]
    if old:
        lines += ["", OLD, ""] + _old_table(old)
    return "\n".join(lines + [README_END]) + "\n"
