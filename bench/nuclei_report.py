"""Render ``bench/results/nuclei.md``, ``nuclei.csv`` and the README's nuclei block from ``nuclei_units.csv``.

Kept apart from the benchmark (``bench/nuclei.py``) so that ``--report`` renders from the
committed per-unit table alone, without torch and without ``bench/work``. Every number in the
report comes from that table; the words that judge a factor follow the Holm-adjusted p-values
and the sign of the mean difference, so they cannot go stale.

The unit of replication (issue 11) is one independently trained network: a (variant, seed)
pair, scored on the test images pooled. ``nuclei_units.csv`` has one row per unit; ``nuclei.csv``
is the per-variant summary derived from it (means over seeds, their sd, n), which
``bench/peers.py`` reads to pick its fluoseg variant by ``best_val_f1_at_0.5`` (the MEAN
validation score over seeds).

Seeds are not paired across variants: seed 0 of ``border`` and seed 0 of ``distance-art`` share
no weights (different output heads), no patch sequence (other training images) and no
artificial images, so nothing makes their scores correlated. Factor effects are therefore
differences of means compared with Welch's t-test of the two groups of networks, and Holm's
correction runs over every test of the report together.

A table without rows of the current set-up (:data:`SETUP`) renders as "not run yet": the old
single-seed numbers stay in the history only (:data:`HISTORY`), and ``nuclei.csv`` is left as it
is (until the full run, it holds the 8 rows of that single-seed run).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from _common import (
    MIN_REPLICATES,
    Test,
    adjust_holm,
    fill_readme_block,
    mean_sd,
    read_rows,
    welch_test,
    write_rows,
    write_text,
)

from fluoseg.metrics.stats import stars

Rows = list[dict[str, Any]]
SETUP = "issue-11"   # the rules the units were made under; rows of another set-up render as "not run yet"
HISTORY = "44aea49"  # the last commit with the single-seed report (bench/results/nuclei.md) and README paragraph
README_BEGIN = "<!-- nuclei:begin (bench/nuclei.py --report) -->"
README_END = "<!-- nuclei:end -->"
FULL_RUN = "nohup nice .venv/bin/python bench/nuclei.py --parallel 2 > bench/work/nuclei.log 2>&1 &"
METHODS = ("border", "distance")
FACTORS = {"artificial": "artificial images", "scale": "scale normalisation"}

# Test metrics pooled over the test images (columns of the unit table), as (header, column)
METRICS = (
    ("F1@0.5", "f1_at_0.5"), ("Acc@0.5", "accuracy_at_0.5"), ("F1@0.75", "f1_at_0.75"),
    ("mAcc 0.5:0.95", "accuracy_mean_0.5_0.95"), ("AJI", "aji"), ("US rate", "us_rate"), ("OS rate", "os_rate"),
    ("P@0.5", "precision_at_0.5"), ("R@0.5", "recall_at_0.5"), ("PQ@0.5", "pq_at_0.5"),
    ("F1 0.5:0.95", "f1_mean_0.5_0.95"), ("AJI (Cellpose)", "aji_cellpose"), ("Kromp P", "kromp_precision"),
    ("Kromp R", "kromp_recall"), ("pixel Dice", "pixel_dice"), ("n true", "n_true"), ("n pred", "n_pred"),
)
SHOWN = METRICS[:7]                                               # the report's per-variant table
# The primary metric is tested; the others are shown as differences of means only (testing three metrics
# would triple the Holm family and leave 3-seed comparisons without power).
TESTED = (("F1@0.5", "f1_at_0.5"),)
DESCRIBED = (("mAcc", "accuracy_mean_0.5_0.95"), ("AJI", "aji"))
VALIDATION = "best_val_f1_at_0.5"   # validation F1@0.5 of the kept (best-validation) epoch: chooses the variant
COST = ("train_wall_min", "train_epochs_min", "infer_wall_s", "infer_s_per_image", "infer_s_per_megapixel")
SETTINGS = ("target_diameter", "n_artificial", "epochs", "steps_per_epoch", "batch_size", "patch_size", "threads",
            "params", "test_images")
UNIT_FIELDS = (("setup", "smoke", "variant", "method", "artificial", "scale", "seed")
               + tuple(column for _, column in METRICS) + ("best_epoch", VALIDATION) + COST + SETTINGS)


# ---- reading the table ----------------------------------------------------------------------------

def variant_name(method: str, artificial: bool, scale: bool) -> str:
    """``border``, ``distance-art``, ``border-scale``, ``distance-art-scale``, ... (bench/nuclei.py's names)."""
    return "-".join([method] + (["art"] if artificial else []) + (["scale"] if scale else []))


def current_units(rows: Rows) -> Rows:
    """The rows made under the current rules (older or foreign rows never render as results)."""
    return [r for r in rows if r.get("setup") == SETUP]


def _value(row: dict[str, Any], column: str) -> float:
    try:
        return float(row[column])
    except (KeyError, TypeError, ValueError):
        return float("nan")


def _variants(units: Rows) -> list[str]:
    """Variant names in the grid's order: baseline, +art, +scale, +both; border before distance."""
    keys = {(int(r["scale"]), int(r["artificial"]), METHODS.index(r["method"])): r["variant"] for r in units}
    return [keys[k] for k in sorted(keys)]


def _group(units: Rows, variant: str, column: str) -> list[float]:
    """One value per network (seed) of a variant, finite values only, in seed order."""
    rows = sorted((r for r in units if r["variant"] == variant), key=lambda r: int(r["seed"]))
    return [v for v in (_value(r, column) for r in rows) if np.isfinite(v)]


def _seeds(units: Rows, variant: str) -> list[int]:
    return sorted(int(r["seed"]) for r in units if r["variant"] == variant)


def _setting(units: Rows, column: str) -> str:
    """A setting shared by the units (e.g. epochs), the values joined with '/' where they differ, '' for none."""
    values = sorted({str(r.get(column, "")) for r in units if r.get(column, "") != ""})
    return "/".join(values)


# ---- the summary (nuclei.csv) -----------------------------------------------------------------------

def summarise(units: Rows) -> Rows:
    """One row per variant: means over seeds of every metric (and their sd), n, the mean validation score.

    ``best_val_f1_at_0.5`` is the MEAN over seeds of each network's best validation F1@0.5: what
    ``bench/peers.py`` (and the report) choose the variant by.
    """
    summary = []
    for variant in _variants(units):
        rows = [r for r in units if r["variant"] == variant]
        first = rows[0]
        row: dict[str, Any] = {"variant": variant, "method": first["method"], "artificial": first["artificial"],
                               "scale": first["scale"], "n": len(rows),
                               "seeds": " ".join(map(str, _seeds(units, variant)))}
        for _, column in METRICS:
            row[column] = _mean(_group(units, variant, column))
        row[VALIDATION] = _mean(_group(units, variant, VALIDATION))
        for column in (*(c for _, c in SHOWN), VALIDATION):
            row[f"{column}_sd"] = _sd(_group(units, variant, column))
        row["best_epochs"] = " ".join(str(r["best_epoch"]) for r in sorted(rows, key=lambda r: int(r["seed"])))
        for column in COST:
            row[column] = _mean(_group(units, variant, column))
        for column in SETTINGS:
            row[column] = _setting(rows, column)
        row["setup"] = SETUP
        summary.append(row)
    return summary


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else float("nan")


def _sd(values: Sequence[float]) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")


def chosen_variant(summary: Rows) -> dict[str, Any] | None:
    """The variant a user should pick: the highest MEAN validation F1@0.5 over seeds (never a test score)."""
    scored = [r for r in summary if np.isfinite(_value(r, VALIDATION))]
    return max(scored, key=lambda r: _value(r, VALIDATION)) if scored else None


# ---- the tests ------------------------------------------------------------------------------------

def _comparisons(units: Rows) -> list[tuple[str, str, str, str]]:
    """(part, comparison, changed variant, reference variant) for every factor effect the grid allows.

    Artificial images and scale normalisation within each method and each level of the other
    factor; distance vs border within each (artificial, scale) cell.
    """
    present = set(_variants(units))
    out = []
    for factor, other in (("artificial", "scale"), ("scale", "artificial")):
        for method in METHODS:
            for level in (False, True):
                base = {factor: False, other: level}
                changed = {factor: True, other: level}
                text = (f"{method}, {'with' if level else 'without'} {FACTORS[other]}: "
                        f"with − without {FACTORS[factor]}")
                out.append((factor, text, variant_name(method, **changed), variant_name(method, **base)))
    for artificial in (False, True):
        for scale in (False, True):
            cell = f"{'with' if artificial else 'without'} artificial images, {'with' if scale else 'without'} scale " \
                   "normalisation"
            out.append(("method", f"{cell}: distance − border", variant_name("distance", artificial, scale),
                        variant_name("border", artificial, scale)))
    return [c for c in out if c[2] in present and c[3] in present]


def all_tests(units: Rows) -> list[Test]:
    """Welch's t-test of every comparison and tested metric at the network level, Holm over all of them."""
    tests = [welch_test(part, f"{text}, {label}", _group(units, changed, column), _group(units, reference, column))
             for part, text, changed, reference in _comparisons(units) for label, column in TESTED]
    adjust_holm(tests)
    return tests


def _counted(tests: Sequence[Test]) -> int:
    return sum(np.isfinite(t.p_value) for t in tests)


def _family(tests: Sequence[Test]) -> str:
    """``Holm over all 12 tests of the report``, or why there is none."""
    counted = _counted(tests)
    if not counted:
        return f"no test yet (fewer than {MIN_REPLICATES} networks per group)"
    return f"Holm over all {counted} tests of the report"


def _cell(test: Test) -> str:
    """The test table's cells; dashes where there is no test (too few networks)."""
    if np.isfinite(test.p_value):
        return test.cell()
    return f"{test.mean_difference:+.3f} | {test.n_label} | – | – | not tested (n={test.n_label})"


def _short(test: Test) -> str:
    """``+0.012 (p 0.2, p Holm 1, n=3+3: no detectable difference)``; no p where there is no test."""
    if not np.isfinite(test.p_value):
        return f"{test.mean_difference:+.3f} (n={test.n_label}: **{_verdict(test)}**)"
    return (f"{test.mean_difference:+.3f} (p {test.p_value:.2g}, p Holm {test.p_holm:.2g}, n={test.n_label}: "
            f"**{_verdict(test)}**)")


def _verdict(test: Test) -> str:
    return test.verdict("better", "worse", few=f"not tested, fewer than {MIN_REPLICATES} networks per group")


# ---- the report -----------------------------------------------------------------------------------

def not_run_markdown(plan_note: str) -> str:
    """``nuclei.md`` while no unit of the current set-up exists: no numbers, the old run in the history."""
    return "\n".join([
        "# Nuclear instance segmentation on DSB 2018 fluorescence (Kromp et al. Tables I and III in spirit)", "",
        "**Not run yet under issue 11's rules** (several independently trained networks per variant, the network as "
        "the unit, the variant chosen on validation scores, factor effects tested with Welch's t-test and Holm's "
        "correction over the report). The earlier grid trained ONE network per variant and read the factor effects "
        "off test differences without replicates or tests; its numbers are withdrawn as evidence and stay in the "
        f"history only: `git show {HISTORY}:bench/results/nuclei.md`.", "",
        "Until the full run replaces it, `nuclei.csv` still holds that run's 8 single-seed rows (seed 0 of the old "
        "configuration, one network each), not results under these rules: `bench/peers.py` picks its fluoseg variant "
        "from their `best_val_f1_at_0.5` column (a validation score) and `bench/train_zoo.py` quotes their range.", "",
        plan_note, "", "Run it (cached and resumable; `--report` re-renders from `bench/results/nuclei_units.csv`):",
        "", "```bash", FULL_RUN, ".venv/bin/python bench/nuclei.py --report", "```", ""])


def markdown(units: Rows, plan_note: str, figures: Sequence[Path] = ()) -> str:
    """``nuclei.md`` from the unit rows of the current set-up."""
    summary = summarise(units)
    tests = all_tests(units)
    smoke = any(str(r.get("smoke")) == "1" for r in units)
    lines = ["# Nuclear instance segmentation on DSB 2018 fluorescence (Kromp et al. Tables I and III in spirit)", "",
             "Rendered by `bench/nuclei.py --report` from the per-unit table `nuclei_units.csv` (one row per variant "
             "and seed: an independently trained network); `nuclei.csv` is the per-variant summary derived from it."
             + (" **SMOKE RUN: tiny data and training, the numbers are meaningless.**" if smoke else ""), ""]
    lines += setup_lines(units) + [""]
    lines += ["## Summary", ""] + summary_lines(units, summary, tests) + [""]
    lines += variant_section(units, summary)
    lines += effects_section(units, tests)
    lines += units_section(units)
    lines += ["## Sizing", "", plan_note, "", actual_time(units), ""]
    if figures:
        lines += ["## Examples", "", "Test images with truth contours (green) and predicted contours (magenta) of "
                  "each variant's first seed; large images are cropped.", ""]
        lines += [f"![{f.stem}]({f.name})" for f in figures] + [""]
    lines += ["## Reproduce", "", "```bash", FULL_RUN,
              ".venv/bin/python bench/nuclei.py --report   # this report from bench/results/nuclei_units.csv",
              "```", ""]
    return "\n".join(lines)


def setup_lines(units: Rows) -> list[str]:
    seeds = sorted({int(r["seed"]) for r in units})
    diameter = _setting([r for r in units if r["scale"] == "1"], "target_diameter") or "?"
    return [
        "## Set-up", "",
        f"- Data: DSB 2018 fluorescence (`/work/shared/data/dsb2018_fluo`), the fixed split "
        f"`bench/splits/dsb2018_fluo.json`; each network scored on the {_setting(units, 'test_images') or '?'} test "
        "images pooled (TP/FP/FN and AJI sums over the images).",
        f"- Training: U-Net ({float(_setting(units, 'params').split('/')[0]) / 1e6:.2f} M parameters), "
        f"{_setting(units, 'epochs')} epochs x {_setting(units, 'steps_per_epoch')} steps x batch "
        f"{_setting(units, 'batch_size')} of {_setting(units, 'patch_size')}² patches, "
        f"{_setting(units, 'threads')} thread(s); the kept epoch is the best by validation F1@0.5 (whole validation "
        "images). `border`: Kromp's 3-class U-Net, labels by seeded growth; `distance`: distance map + foreground, "
        f"h-maxima watershed. `-art`: plus {_setting(units, 'n_artificial') or '?'} artificial images (`fluoseg synth "
        "nuclei`, drawn per seed from the training images only); `-scale`: images rescaled to a mean nucleus "
        f"diameter of {diameter} px, test images with "
        "`--diameter auto`.",
        f"- Replicates: seeds {', '.join(map(str, seeds))}; each (variant, seed) is an independently trained network "
        "(`train.seed`: initial weights, patch sampling, augmentation; and the seed of the artificial images).",
        "- Choice: the variant a user should pick is the one with the highest MEAN validation F1@0.5 over seeds; "
        "test scores never choose anything here (issue 11).",
        f"- Statistics: the network is the unit. Seeds are not paired across variants (different heads, training "
        "images and artificial images share nothing), so each factor effect is a difference of means compared with "
        f"Welch's two-sided t-test of the two groups of networks; Holm's correction over all tests of this report "
        f"together; stars and verdicts follow the Holm-adjusted p (* <= 0.05, ** <= 0.01, *** <= 0.001), n (networks "
        f"of each group) beside each. Groups with fewer than {MIN_REPLICATES} networks are not tested. With 3+3 "
        "networks only large, consistent effects can reach significance: 'no detectable difference' is not "
        "evidence of equality.",
    ]


def summary_lines(units: Rows, summary: Rows, tests: Sequence[Test]) -> list[str]:
    """The choice (by validation) and the factor verdicts on F1@0.5: the findings, every number from the table."""
    lines = []
    chosen = chosen_variant(summary)
    if chosen is not None:
        name = chosen["variant"]
        by_val = sorted(summary, key=lambda r: -_value(r, VALIDATION))
        runner = by_val[1] if len(by_val) > 1 else None
        lines.append(
            f"- Variant to use (highest mean VALIDATION F1@0.5 over seeds): **{name}**, validation "
            f"{mean_sd(_group(units, name, VALIDATION))} (n={chosen['n']})"
            + (f", next {runner['variant']} {mean_sd(_group(units, runner['variant'], VALIDATION))} "
               f"(n={runner['n']})" if runner else "")
            + f"; its test F1@0.5 {mean_sd(_group(units, name, 'f1_at_0.5'))}, AJI "
              f"{mean_sd(_group(units, name, 'aji'))}.")
        best_test = max(summary, key=lambda r: _value(r, "f1_at_0.5"))
        if best_test["variant"] != name:
            lines.append(f"- On the test images another variant has the highest mean F1@0.5 "
                         f"({best_test['variant']}, {mean_sd(_group(units, best_test['variant'], 'f1_at_0.5'))}); "
                         "the choice stays the validation one (choosing by test would overstate its score).")
    label = TESTED[0][0]
    for part, title in (("artificial", "Artificial images"), ("scale", "Scale normalisation"),
                        ("method", "Distance − border")):
        mine = [t for t in tests if t.part == part and t.question.endswith(f", {label}")]
        if mine:
            lines.append(f"- {title}, test {label}: " + "; ".join(
                f"{t.question.removesuffix(f', {label}')} {_short(t)}" for t in mine) + ".")
    return lines


def variant_section(units: Rows, summary: Rows) -> list[str]:
    lines = ["## Per variant (test split, pooled over images)", "",
             "Mean ± sd over the seeds (networks) of each network's pooled test score; validation F1@0.5 of the kept "
             "epoch, the best epoch of each seed; cost means over seeds.", "",
             "| variant | n | val F1@0.5 | " + " | ".join(h for h, _ in SHOWN)
             + " | best epochs | train (min) | infer (s/img) |",
             "|---|---:|---:|" + "---:|" * len(SHOWN) + "---|---:|---:|"]
    for row in summary:
        name = row["variant"]
        cells = [mean_sd(_group(units, name, VALIDATION))] + [mean_sd(_group(units, name, c)) for _, c in SHOWN]
        lines.append(f"| {name} | {row['n']} | " + " | ".join(cells) + f" | {row['best_epochs']} | "
                     f"{_value(row, 'train_wall_min'):.1f} | {_value(row, 'infer_s_per_image'):.2f} |")
    return lines + [
        "", "F1 = 2TP/(2TP+FP+FN) and accuracy = TP/(TP+FP+FN) (StarDist's \"accuracy\", Cellpose's \"AP\") from "
        "one-to-one IoU matching, TP/FP/FN summed over the test images; mAcc = accuracy averaged over IoU "
        "0.50:0.05:0.95; AJI = Kumar et al. (pooled as sum C / sum U); US/OS rate = Kromp et al. under-/over-"
        "segmentation rates. `nuclei_units.csv` has more columns (precision, recall, PQ, Kromp's counts, times).", ""]


def effects_section(units: Rows, tests: Sequence[Test]) -> list[str]:
    lines = ["## Factor effects (test split, network level)", "",
             "Difference of the means over seeds (changed − reference). F1@0.5, the primary metric, is tested "
             f"(Welch's t-test, {_family(tests)}; cell: difference, Holm-adjusted stars, n = networks of each "
             "group); mAcc and AJI are differences of means only, without a test.", "",
             "| comparison | " + " | ".join(f"Δ{label}" for label, _ in TESTED + DESCRIBED) + " |",
             "|---|" + "---|" * len(TESTED + DESCRIBED)]
    for part, text, changed, reference in _comparisons(units):
        cells = []
        for label, _ in TESTED:
            t = next(t for t in tests if t.question == f"{text}, {label}")
            cells.append(f"{t.mean_difference:+.3f} {stars(t.p_holm) if np.isfinite(t.p_value) else 'not tested'} "
                         f"(n={t.n_label})")
        for _, column in DESCRIBED:
            difference = float(np.mean(_group(units, changed, column)) - np.mean(_group(units, reference, column)))
            cells.append(f"{difference:+.3f}")
        lines.append(f"| {text} | " + " | ".join(cells) + " |")
    lines += ["", "Every test:", "", "| comparison | mean difference | n | p | p (Holm) | significance | verdict |",
              "|---|---|---|---|---|---|---|"]
    lines += [f"| {t.question} | {_cell(t)} | {_verdict(t)} |" for t in tests]
    return lines + [""]


def units_section(units: Rows) -> list[str]:
    lines = ["## Per network", "", "| variant | seed | best epoch | val F1@0.5 | test F1@0.5 | test mAcc | test AJI |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name in _variants(units):
        for r in sorted((r for r in units if r["variant"] == name), key=lambda r: int(r["seed"])):
            lines.append(f"| {name} | {r['seed']} | {r['best_epoch']} | {_value(r, VALIDATION):.3f} | "
                         f"{_value(r, 'f1_at_0.5'):.3f} | {_value(r, 'accuracy_mean_0.5_0.95'):.3f} | "
                         f"{_value(r, 'aji'):.3f} |")
    return lines + [""]


def actual_time(units: Rows) -> str:
    train = [_value(r, "train_wall_min") for r in units]
    infer = [_value(r, "infer_wall_s") / 60 for r in units]
    total = float(np.nansum(train) + np.nansum(infer))
    return (f"Actual: {total:.0f} min of training and prediction wall time for the {len(units)} networks reported "
            f"here ({np.nanmedian(train):.1f} min median training per network).")


def readme_block(units: Rows, plan_note: str) -> str:
    """The README's nuclei paragraph between its markers; every number from the unit table."""
    if not units:
        return "\n".join([
            README_BEGIN,
            "**Nuclei on DSB 2018 fluorescence** (`bench/nuclei.py`, border and distance U-Nets with and without "
            "artificial images and scale normalisation): **not run yet under issue 11's rules** (3 independently "
            "trained networks per variant, the variant chosen on validation scores, factor effects tested at the "
            "network level with Holm's correction). The earlier grid trained one network per variant and read the "
            "factor effects off test differences without replicates; it stays in the history only "
            f"(`git show {HISTORY}:bench/results/nuclei.md`). {plan_note} Full run: `{FULL_RUN}`.",
            README_END]) + "\n"
    summary = summarise(units)
    tests = all_tests(units)
    seeds = sorted({int(r["seed"]) for r in units})
    lines = [README_BEGIN,
             "**Nuclei on DSB 2018 fluorescence** (`bench/results/nuclei.md`, rendered by `bench/nuclei.py --report` "
             f"from `bench/results/nuclei_units.csv`): {len(summary)} variants (border / distance U-Net x artificial "
             f"images x scale normalisation), {len(seeds)} seeds each, {_setting(units, 'epochs')} x "
             f"{_setting(units, 'steps_per_epoch')} steps on {_setting(units, 'threads')} CPU thread(s) (a short "
             f"budget, not convergence); scored on {_setting(units, 'test_images')} test images pooled. The network is "
             f"the unit (Welch's t-tests, {_family(tests)}).", ""]
    lines += summary_lines(units, summary, tests)
    return "\n".join(lines + [README_END]) + "\n"


def render_report(units_path: Path, results: Path, *, readme: bool, plan_note: str) -> Path:
    """``nuclei.md`` (and ``nuclei.csv`` and the README block) from the per-unit table alone.

    Without units of the current set-up, ``nuclei.csv`` is left untouched (it holds the old
    single-seed rows that ``bench/peers.py`` still reads) and the report says "not run yet".
    """
    units = current_units(read_rows(units_path))
    report = results / "nuclei.md"
    if not units:
        write_text(report, not_run_markdown(plan_note))
    else:
        write_rows(results / "nuclei.csv", summarise(units))
        figures = sorted(results.glob("nuclei_overlay_*.png"))
        write_text(report, markdown(units, plan_note, figures))
    if readme:
        fill_readme_block(README_BEGIN, README_END, readme_block(units, plan_note))
    return report
