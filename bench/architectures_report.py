"""Render ``bench/results/architectures.md`` and its README block from ``architectures_units.csv``.

Kept apart from the benchmark (``bench/architectures.py``) so that ``--report`` re-renders
from the committed per-unit table alone, without torch and without ``bench/work``. Every
number in the report comes from that table; the words that judge a result follow the
Holm-adjusted p-values and the sign of the mean difference, so they cannot go stale.

The unit of replication is the fold: one independently trained network per (network, fold),
scored on the fold's test images pooled (crossval's ``per_fold*.csv``). Each comparison is a
two-sided paired t-test over the folds; Holm's correction runs over every test of the report
together.

The table has one row per (part, network, tta, train_size, fold, metric) with ``value``;
part ``run`` holds the run's settings (``plan_*``), wall seconds (``wall_seconds_*``) and the
pretext network's validation Pearson correlation, with the other keys empty.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from _common import Test, adjust_holm, mean_sd, paired_test

from fluoseg.metrics.stats import stars

Rows = list[dict[str, Any]]
UNIT_FIELDS = ("part", "network", "tta", "train_size", "fold", "metric", "value")
README_BEGIN = "<!-- architectures:begin (bench/architectures.py --report) -->"
README_END = "<!-- architectures:end -->"
REFERENCE = "unet"

NETWORKS = {  # crossval config name -> label: bench/architectures.py's ARCHS and the two ISL starts
    "unet": "U-Net (MS-ME)", "unet-resnet34": "U-Net ResNet34", "unetpp-resnet34": "U-Net++ ResNet34",
    "fcn-resnet34": "FCN ResNet34 (OS 8)", "deeplabv3-resnet34": "DeepLabv3 ResNet34 (OS 16)",
    "scratch": "from scratch", "isl-pretrained": "ISL-pretrained",
}
INSTANCE_COLUMNS = (("F1@0.5", "f1_at_0.5"), ("Acc@0.5", "accuracy_at_0.5"), ("AJI", "aji"),
                    ("mAcc 0.5:0.95", "accuracy_mean_0.5_0.95"))
SEMANTIC_COLUMNS = (("F1 sinusoids", "f1_sinusoids"), ("F1 arteries", "f1_arteries"), ("mean F1", "mean_f1"),
                    ("mean IoU", "mean_iou"))
ARCH_PARTS = {  # part -> (title, short name, columns, the tested metric)
    "dsb": ("dsb2018_fluo: nuclear instance segmentation (border method)", "dsb2018", INSTANCE_COLUMNS, "f1_at_0.5"),
    "vessels": ("vessels5: semantic segmentation of sinusoids and arteries", "vessels5", SEMANTIC_COLUMNS, "mean_f1"),
}
ISL_PARTS = {  # part -> (title, short name, columns (all tested), how the fine-tuned network starts)
    "isl": ("Instance segmentation, border method", "border", INSTANCE_COLUMNS[:3],
            "all but the output layer (3 softmax classes: a fresh head)"),
    "isl_semantic": ("The paper's set-up: nucleus foreground, one sigmoid output, Jaccard loss", "foreground",
                     (("F1 nuclei", "f1_nuclei"), ("IoU nuclei", "mean_iou")),
                     "all layers, the output behind the shifted sigmoid of the paper's eq. (1), "
                     "f(x) = 1 / (1 + exp(-(x - 0.5)))"),
}
ARCH_NETWORKS = ("unet", "unet-resnet34", "unetpp-resnet34", "fcn-resnet34", "deeplabv3-resnet34")
TIMING = ("parameters", "train_seconds", "predict_seconds_per_image")


# ---- reading the table ----------------------------------------------------------------------------

def _select(rows: Rows, **match: Any) -> Rows:
    return [r for r in rows if all(str(r[k]) == str(v) for k, v in match.items())]


def _per_fold(rows: Rows, part: str, network: str, metric: str, *, tta: bool = False,
              size: str = "all") -> dict[str, float]:
    """``{fold: value}`` of one network, finite values only."""
    chosen = _select(rows, part=part, network=network, metric=metric, tta="yes" if tta else "no", train_size=size)
    values = {str(r["fold"]): float(r["value"]) for r in chosen}
    return {fold: value for fold, value in values.items() if np.isfinite(value)}


def _networks(rows: Rows, part: str) -> list[str]:
    present = {r["network"] for r in rows if r["part"] == part}
    return [name for name in NETWORKS if name in present]


def _run(rows: Rows, metric: str, default: float = float("nan")) -> float:
    chosen = _select(rows, part="run", metric=metric)
    return float(chosen[0]["value"]) if chosen else default


def _sizes(rows: Rows, part: str) -> list[str]:
    return sorted({str(r["train_size"]) for r in rows if r["part"] == part}, key=lambda s: (len(s), s))


def _folds(rows: Rows) -> int:
    return len({str(r["fold"]) for r in rows if r["part"] != "run"})


# ---- the tests ------------------------------------------------------------------------------------

def arch_tests(rows: Rows, part: str) -> list[Test]:
    """Each network vs the MS-ME U-Net (without and with TTA on both), and TTA vs no TTA per network."""
    _, short, columns, metric = ARCH_PARTS[part]
    label = next(c for c, m in columns if m == metric)
    tests = []
    networks = _networks(rows, part)
    for network in networks:
        if network == REFERENCE or REFERENCE not in networks:
            continue
        for tta in (False, True):
            method, reference = (_per_fold(rows, part, name, metric, tta=tta) for name in (network, REFERENCE))
            if method and reference:  # a TTA pass not run yet has no rows
                question = (f"{short} {label}: {NETWORKS[network]} − {NETWORKS[REFERENCE]}"
                            f"{', both with TTA' if tta else ''}")
                tests.append(paired_test(part, question, method, reference))
    for network in networks:
        if _per_fold(rows, part, network, metric, tta=True):
            tests.append(paired_test(part, f"{short} {label}: TTA − no TTA, {NETWORKS[network]}",
                                     _per_fold(rows, part, network, metric, tta=True),
                                     _per_fold(rows, part, network, metric)))
    return tests


def isl_tests(rows: Rows, part: str) -> list[Test]:
    """ISL-pretrained − from scratch per training-set size and metric."""
    _, short, columns, _ = ISL_PARTS[part]
    return [paired_test(part, f"ISL {short}, N={size}, {label}: ISL-pretrained − from scratch",
                        _per_fold(rows, part, "isl-pretrained", metric, size=size),
                        _per_fold(rows, part, "scratch", metric, size=size))
            for size in _sizes(rows, part) for label, metric in columns]


def all_tests(rows: Rows) -> list[Test]:
    """Every test of the report, Holm-adjusted together."""
    tests = [t for part in ARCH_PARTS if _select(rows, part=part) for t in arch_tests(rows, part)]
    tests += [t for part in ISL_PARTS if _select(rows, part=part) for t in isl_tests(rows, part)]
    adjust_holm(tests)
    return tests


def _find(tests: Sequence[Test], question: str) -> Test:
    return next(t for t in tests if t.question == question)


def _short(test: Test) -> str:
    """``+0.012 (p Holm 0.34, n=3: no detectable difference)``."""
    return (f"{test.mean_difference:+.3f} (p {test.p_value:.2g}, p Holm {test.p_holm:.2g}, n={test.n}: "
            f"**{test.verdict('better', 'worse')}**)")


# ---- sections -------------------------------------------------------------------------------------

def _test_table(tests: Sequence[Test]) -> list[str]:
    lines = ["| comparison | mean difference | n | p | p (Holm) | significance | per-fold differences |",
             "|---|---|---|---|---|---|---|"]
    for t in tests:
        per_fold = ", ".join(f"{d:+.3f}" for d in t.differences) or "–"
        lines.append(f"| {t.question} | {t.cell()} | {per_fold} |")
    return lines


def _values(rows: Rows, part: str, network: str, metric: str, *, tta: bool = False, size: str = "all") -> list[float]:
    return list(_per_fold(rows, part, network, metric, tta=tta, size=size).values())


def arch_section(rows: Rows, part: str, tests: Sequence[Test]) -> list[str]:
    title, _, columns, metric = ARCH_PARTS[part]
    label = next(c for c, m in columns if m == metric)
    networks = _networks(rows, part)
    missing = [NETWORKS[n] for n in ARCH_NETWORKS if n not in networks]
    lines = [f"## {title}", "",
             "Mean ± sd over the folds of each fold's score pooled over its test images."
             + (f" Not in this run (left out with `--archs`): {', '.join(missing)}." if missing else ""), "",
             "| network | TTA | " + " | ".join(c for c, _ in columns) + " |", "|---|---|" + "---|" * len(columns)]
    for network in networks:
        for tta in (False, True):
            cells = [mean_sd(_values(rows, part, network, m, tta=tta)) for _, m in columns]
            if any(c != "–" for c in cells):
                lines.append(f"| {NETWORKS[network]} | {'yes' if tta else 'no'} | " + " | ".join(cells) + " |")
    lines += ["", f"Paired t-tests over folds of {label} (Holm over the whole report):", ""]
    lines += _test_table([t for t in tests if t.part == part])
    lines += ["", "Cost, mean over folds: parameters, training seconds per fold (summed epoch times, validation "
              "included), inference seconds per test image (tiling, activation and decoding) without and with TTA.",
              "", "| network | parameters | train (s/fold) | infer (s/image) | infer TTA (s/image) |",
              "|---|---|---|---|---|"]
    for network in networks:
        timing = {m: _values(rows, part, network, m) for m in TIMING}
        if not timing["parameters"]:
            continue
        with_tta = _values(rows, part, network, "predict_seconds_per_image", tta=True)
        lines.append(f"| {NETWORKS[network]} | {np.mean(timing['parameters']) / 1e6:.2f} M | "
                     f"{np.mean(timing['train_seconds']):.0f} | {np.mean(timing['predict_seconds_per_image']):.2f} | "
                     f"{f'{np.mean(with_tta):.2f}' if with_tta else '–'} |")
    return lines + [""]


def isl_section(rows: Rows, tests: Sequence[Test]) -> list[str]:
    pearson = _run(rows, "pretext_val_pearson")
    lines = ["## In-silico-labelling pretraining vs from scratch (dsb2018)", "",
             f"Pretext: degraded -> clean dsb2018 image, {_run(rows, 'plan_pretext_images'):.0f} images, "
             f"{_run(rows, 'plan_pretext_epochs'):.0f} x {_run(rows, 'plan_steps'):.0f} steps, intensities normalised "
             "to [0, 1] (1-99.8 percentiles); validation Pearson correlation of the kept epoch "
             f"{'–' if not np.isfinite(pearson) else f'{pearson:.3f}'}. Fine-tuning: the same U-Net from the pretext "
             f"weights or from scratch, on N nested training images per fold, {_run(rows, 'plan_epochs'):.0f} x "
             f"{_run(rows, 'plan_steps'):.0f} steps, {_folds(rows)} folds of a {_run(rows, 'plan_isl_images'):.0f}-image "
             "pool. Δ: mean over folds of ISL − scratch, paired t-test over folds, Holm-adjusted stars (n beside).", ""]
    for part, (title, _, columns, start) in ISL_PARTS.items():
        lines += [f"### {title}", ""]
        if not _select(rows, part=part):
            lines += ["(not run yet)", ""]
            continue
        lines += [f"ISL network starts from {start}.", "",
                  "| N | " + " | ".join(f"{c} scratch | {c} ISL | Δ" for c, _ in columns) + " |",
                  "|---|" + "---|---|---|" * len(columns)]
        mine = [t for t in tests if t.part == part]
        for size in _sizes(rows, part):
            cells = []
            for label, metric in columns:
                test = _find(mine, f"ISL {ISL_PARTS[part][1]}, N={size}, {label}: ISL-pretrained − from scratch")
                cells += [mean_sd(_values(rows, part, "scratch", metric, size=size)),
                          mean_sd(_values(rows, part, "isl-pretrained", metric, size=size)),
                          f"{test.mean_difference:+.3f} {stars(test.p_holm)} (n={test.n})"]
            lines.append(f"| {size} | " + " | ".join(cells) + " |")
        lines += ["", "Per-fold tests:", ""] + _test_table(mine) + [""]
    return lines


def summary_lines(rows: Rows, tests: Sequence[Test]) -> list[str]:
    """Best network per dataset, TTA gains, ISL effect per N: the findings, verdicts from Holm."""
    lines = []
    for part, (_, short, columns, metric) in ARCH_PARTS.items():
        networks = _networks(rows, part)
        if not networks:
            continue
        label = next(c for c, m in columns if m == metric)
        means = {n: float(np.mean(_values(rows, part, n, metric))) for n in networks if _values(rows, part, n, metric)}
        best = max(means, key=lambda n: means[n])
        if best == REFERENCE:
            runner_up = max((n for n in means if n != REFERENCE), key=lambda n: means[n], default=None)
            versus = ("" if runner_up is None else f"; next {NETWORKS[runner_up]} {means[runner_up]:.3f}, "
                      f"difference {_short(_find(tests, f'{short} {label}: {NETWORKS[runner_up]} − {NETWORKS[REFERENCE]}'))}")
            lines.append(f"- {short}, {label} without TTA: highest mean {NETWORKS[best]} {means[best]:.3f}{versus}.")
        else:
            test = _find(tests, f"{short} {label}: {NETWORKS[best]} − {NETWORKS[REFERENCE]}")
            lines.append(f"- {short}, {label} without TTA: highest mean {NETWORKS[best]} {means[best]:.3f} vs "
                         f"{NETWORKS[REFERENCE]} {means[REFERENCE]:.3f}, difference {_short(test)}.")
        gains = [t for t in tests if t.part == part and "TTA − no TTA" in t.question]
        if gains:
            differences = [t.mean_difference for t in gains]
            better = sum(t.verdict("better", "worse") == "better" for t in gains)
            worse = sum(t.verdict("better", "worse") == "worse" for t in gains)
            lines.append(f"- {short}, TTA − no TTA ({label}): {min(differences):+.3f} to {max(differences):+.3f} over "
                         f"the {len(gains)} networks, significantly better for {better} and worse for {worse} after "
                         f"Holm (n={gains[0].n} each).")
    for part, (_, short, columns, _) in ISL_PARTS.items():
        label, _ = columns[0]
        mine = [t for t in tests if t.part == part and t.question.endswith(f"{label}: ISL-pretrained − from scratch")]
        if mine:
            lines.append(f"- ISL pretraining − scratch, {short} set-up, {label}: " + "; ".join(
                f"N={t.question.split('N=')[1].split(',')[0]} {_short(t)}" for t in mine) + ".")
    return lines


def render(rows: Rows, notes: str = "") -> str:
    """The Markdown report of the table's parts; ``notes`` (number-free reading) is appended."""
    tests = all_tests(rows)
    counted = sum(np.isfinite(t.p_value) for t in tests)  # a test without a p-value (no variation) is not counted
    folds = _folds(rows)
    smoke = _run(rows, "smoke", 0.0) > 0
    wall = {r["metric"].removeprefix("wall_seconds_"): float(r["value"]) for r in _select(rows, part="run")
            if r["metric"].startswith("wall_seconds_")}
    plan = {r["metric"].removeprefix("plan_"): float(r["value"]) for r in _select(rows, part="run")
            if r["metric"].startswith("plan_")}
    lines = ["# Architectures and ISL pretraining on CPU", "",
             "Rendered by `python bench/architectures.py --report` from the per-unit table "
             "`bench/results/architectures_units.csv` (one row per part, network, TTA, training-set size, fold and "
             f"metric), which the full run writes{' (SMOKE RUN: meaningless numbers)' if smoke else ''}. "
             f"{_run(rows, 'threads'):.0f} torch thread(s) on a 2-core CPU shared with other jobs. Wall time of all "
             f"parts: {sum(wall.values()) / 60:.0f} min ({', '.join(f'{k} {v / 60:.1f}' for k, v in wall.items())} "
             "min).", "",
             f"Setup: {folds}-fold cross-validation by image (dsb2018) or sample (vessels5) with the same folds for "
             "every network (`fluoseg crossval`), test images predicted with and without test-time augmentation "
             "(8 flips/rotations). Networks from random initialisation (no pretrained ImageNet/COCO weights are "
             f"reachable here), Adam lr {plan.get('learning_rate', float('nan')):g}, batch {plan.get('batch', 0):.0f} "
             f"of {plan.get('patch', 0):.0f}x{plan.get('patch', 0):.0f} patches, {plan.get('epochs', 0):.0f} epochs x "
             f"{plan.get('steps', 0):.0f} steps, the task's loss (border: weighted 3-class CE; semantic: MS-ME "
             "log-weighted CE), best validation score kept. dsb2018: "
             f"{plan.get('dsb_images', 0):.0f} images, centre crops {plan.get('crop', 0):.0f}x{plan.get('crop', 0):.0f}. "
             f"vessels5: 8 samples at {plan.get('vessels_pixel_um', float('nan')):g} µm/px. These are short CPU "
             "trainings: the numbers compare the architectures at equal, small budgets, not at convergence.", "",
             f"Statistics (issue 11): the unit is the fold, one independently trained network, scored on its test "
             f"images pooled. Every comparison is a two-sided paired t-test over the {folds} folds; Holm's correction "
             f"runs over all {counted} tests of this report that have a p-value, together; the stars and verdicts "
             "follow the Holm-adjusted p-value (* <= 0.05, ** <= 0.01, *** <= 0.001), n beside each. With "
             f"{folds} folds and {counted} tests only very large, consistent effects can reach significance: "
             "'no detectable difference' is not evidence of equality.", "",
             "## Summary", ""] + summary_lines(rows, tests) + [""]
    for part in ARCH_PARTS:
        if _select(rows, part=part):
            lines += arch_section(rows, part, tests)
    if any(_select(rows, part=part) for part in ISL_PARTS):
        lines += isl_section(rows, tests)
    if notes:
        lines += [notes.strip(), ""]
    return "\n".join(lines)


def readme_block(rows: Rows) -> str:
    """The README's summary of the report, between its markers; every number from the table."""
    tests = all_tests(rows)
    counted = sum(np.isfinite(t.p_value) for t in tests)
    lines = [README_BEGIN,
             "**Architectures, TTA and ISL pretraining** (`bench/results/architectures.md`, rendered by "
             "`bench/architectures.py --report` from `bench/results/architectures_units.csv`): "
             f"{_folds(rows)}-fold cross-validation, every network from random weights for "
             f"{_run(rows, 'plan_epochs') * _run(rows, 'plan_steps'):.0f} steps (a CPU budget, not convergence); "
             f"the fold is the unit (paired t-tests, n={_folds(rows)}), Holm over the report's {counted} tests.", ""]
    lines += summary_lines(rows, tests)
    return "\n".join(lines + [README_END]) + "\n"
