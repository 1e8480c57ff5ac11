"""Render ``bench/results/beyond.md`` from the per-unit CSVs of ``bench/beyond.py``.

Kept apart from the benchmark so that the report can be re-rendered (``python
bench/beyond.py --report``) without torch. Every number in the report comes from the CSVs;
the words that judge a result ("helps", "does not help") follow the Holm-adjusted p-values
and the sign of the mean difference, so they cannot go stale.

Tests: paired t-tests over seeds (the unit: one independently simulated dataset and
trained network per seed); one-sample t-tests of per-seed rank correlations against 0;
Holm's correction over every test of the report together.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from _common import Test, adjust_holm, mean_sd, paired_test
from scipy import stats as scipy_stats

from fluoseg.metrics.calibration import spearman_correlation

Rows = list[dict[str, Any]]
LONGER_LABEL = "4x"  # bench/beyond.py's LONGER


def _verdict(test: Test) -> str:
    return test.verdict("positive", "negative") if test.part == "D" else test.verdict("better", "worse")


def _float(rows: Rows, key: str) -> list[float]:
    return [float(r[key]) for r in rows]


def _by(rows: Rows, **match: Any) -> Rows:
    return [r for r in rows if all(str(r[k]) == str(v) for k, v in match.items())]


def _seeds(rows: Rows) -> list[str]:
    return sorted({str(r["seed"]) for r in rows}, key=int)


def _per_seed(rows: Rows, value: Callable[[Rows], float]) -> dict[str, float]:
    return {seed: value(_by(rows, seed=seed)) for seed in _seeds(rows)}


def _one_sample(part: str, question: str, values: Sequence[float]) -> Test:
    values = np.asarray(values, dtype=float)
    p = float(scipy_stats.ttest_1samp(values, 0.0).pvalue) if values.size > 1 and values.std() > 0 else float("nan")
    return Test(part, question, int(values.size), float(values.mean()) if values.size else float("nan"), p)


# ---- parts ----------------------------------------------------------------------------------------

def part_a(rows: Rows, tests: list[Test]) -> list[str]:
    subsets = list(dict.fromkeys(r["subset"] for r in rows))
    lines = ["## A. Marker-flexible instance segmentation: one MS-ME network vs one network per subset",
             "",
             "Simulated cells (`fluoseg synth cells`, markers DAPI, ECAD, CK, CD45), Kromp's border method, "
             "object F1@0.5 pooled over 6 test images. MS-ME: one network, Marker Sampling + Marker Excite. "
             "UB: one network per subset trained on exactly those markers (Marker Zero input, no attention). "
             "Same steps for every network. Mean ± SD over seeds.", "",
             f"The MS-ME network trained {LONGER_LABEL} longer shows whether a gap closes with training.", "",
             f"| subset | MS-ME | UB | MS-ME − UB | MS-ME {LONGER_LABEL} steps |", "|---|---|---|---|---|"]
    longer = f"MS-ME {LONGER_LABEL} steps"
    wins = 0
    for subset in subsets:
        msme = _float(_by(rows, method="MS-ME", subset=subset), "f1_50")
        ub = _float(_by(rows, method="UB", subset=subset), "f1_50")
        difference = float(np.mean(msme) - np.mean(ub)) if msme and ub else float("nan")
        wins += difference >= 0
        lines.append(f"| {subset} | {mean_sd(msme)} | {mean_sd(ub)} | {difference:+.3f} | "
                     f"{mean_sd(_float(_by(rows, method=longer, subset=subset), 'f1_50'))} |")
    mean_of = lambda method: _per_seed(_by(rows, method=method), lambda r: float(np.mean(_float(r, "f1_50"))))  # noqa: E731
    test = paired_test("A", "MS-ME − UB, mean object F1 over the 15 subsets (equal steps)", mean_of("MS-ME"), mean_of("UB"))
    tests.append(test)
    lines += ["", f"Mean over subsets: MS-ME {mean_sd(list(mean_of('MS-ME').values()))}, "
              f"UB {mean_sd(list(mean_of('UB').values()))}, {longer} {mean_sd(list(mean_of(longer).values()))}; "
              f"MS-ME is at least as good as UB on {wins} of {len(subsets)} subsets (means over seeds). "
              f"Verdict, equal steps: **{test.verdict('MS-ME better', 'MS-ME worse')}**.", ""]
    if any(r["method"] == longer for r in rows):
        tests.append(paired_test("A", f"{longer} − UB, mean object F1 over the 15 subsets", mean_of(longer), mean_of("UB")))
    return lines


def part_b(rows: Rows, tests: list[Test]) -> list[str]:
    lines = ["## B. A marker outside the trained panel",
             "",
             "The channel-invariant front end (shared per-channel encoder, marker embedding with a learned default "
             "row for unknown names) is trained without one marker and given it at test time under a name it never "
             "saw (`--markers ...,E-cadherin`). Reference: an MS-ME U-Net (slot front end) trained on the remaining "
             "markers. cells: ECAD held out, object F1@0.5; vessels5: endoglin held out, sinusoid pixel F1 on the "
             "paper's 2 test samples. ECAD is the simulator's only membrane stain, so the cells model has never "
             "seen a marker of its kind; on vessels5, endoglin shares its role (vessel walls) with endomucin, "
             "which the model was trained on.", "",
             "| data | model | inputs at test | score (mean ± SD) | n |", "|---|---|---|---|---|"]
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        mine = _by(rows, dataset=dataset)
        for model, inputs in dict.fromkeys((r["model"], r["inputs"]) for r in mine):
            scores = _float(_by(mine, model=model, inputs=inputs), "score")
            lines.append(f"| {dataset} | {model} | {inputs} | {mean_sd(scores)} | {len(scores)} |")
        unseen = next(i for m, i in dict.fromkeys((r["model"], r["inputs"]) for r in mine) if "+" in i)
        given = _per_seed(_by(mine, model="channel-invariant", inputs=unseen), lambda r: float(r[0]["score"]))
        without = _per_seed(_by(mine, model="channel-invariant", inputs="trained markers"),
                            lambda r: float(r[0]["score"]))
        msme = _per_seed(_by(mine, model="MS-ME", inputs="trained markers"), lambda r: float(r[0]["score"]))
        tests.append(paired_test("B", f"{dataset}: channel-invariant with the unseen marker − without it", given, without))
        tests.append(paired_test("B", f"{dataset}: channel-invariant with the unseen marker − MS-ME without it",
                             given, msme))
    return lines + [""]


def part_c(rows: Rows, tests: list[Test]) -> list[str]:
    modes = ("none", "excite", "all", "scratch")
    names = {"none": "no adaptation", "excite": "Marker Excite only", "all": "full fine-tuning",
             "scratch": "from scratch"}
    sizes = sorted({int(r["n_images"]) for r in rows if r["mode"] != "none"})
    lines = ["## C. Adapting to a shifted domain from few annotated images",
             "",
             "Shifted simulator setting (smaller denser cells, weak membrane stain, brighter cytoplasm stain, more "
             "noise and blur). Start: the MS-ME network of part A (default domain). Marker-Excite-only fine-tuning "
             "(`model.trainable: excite`) vs full fine-tuning vs training from scratch, same steps. Object F1@0.5 "
             "on 6 shifted test images, mean over the 15 marker subsets (all four markers in brackets).", "",
             "| annotated images | " + " | ".join(names[m] for m in modes) + " |", "|---" * (len(modes) + 1) + "|"]
    for n in sizes:
        cells = []
        for mode in modes:
            chosen = _by(rows, mode=mode) if mode == "none" else _by(rows, mode=mode, n_images=n)
            cells.append(f"{mean_sd(_float(chosen, 'f1_mean_subsets'))} ({mean_sd(_float(chosen, 'f1_all_markers'))})")
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
        value = lambda mode: _per_seed(_by(rows, mode=mode, n_images=n), lambda r: float(r[0]["f1_mean_subsets"]))  # noqa: E731
        tests.append(paired_test("C", f"n={n}: Excite only − full fine-tuning", value("excite"), value("all")))
        tests.append(paired_test("C", f"n={n}: Excite only − from scratch", value("excite"), value("scratch")))
    return lines + [""]


def part_d(rows: Rows, tests: list[Test]) -> list[str]:
    methods = list(dict.fromkeys(r["method"] for r in rows))
    val_ece = {m: float(np.mean(_float(_by(rows, images="val", method=m), "ece"))) for m in methods}
    chosen = min(methods, key=lambda m: val_ece[m])
    lines = ["## D. Knowing when a marker subset can be trusted",
             "",
             "An MS-ME network on 5 markers (DAPI, ECAD, CK, CD45, KI67; 31 subsets). For each subset, the expected "
             "F1 of the interior class is computed from the probabilities alone (no ground truth) and compared with "
             "the true pixel F1 and the true object F1@0.5 on the test images. The probability method (plain, "
             "8-fold TTA, 8-pass MC dropout) is chosen by the lowest pixel ECE on the validation images: "
             f"**{chosen}** (validation ECE " + ", ".join(f"{m} {val_ece[m]:.4f}" for m in methods) + ").", "",
             "Columns: pixel ECE of the interior probability; how far and how well-ordered the expected F1 is "
             "against the true pixel F1 and the true object F1@0.5 over the 31 subsets (Spearman per seed, then "
             "mean ± SD); and the same order check for the object-level *agreement* F1@0.5 (objects of each TTA or "
             "dropout pass matched against those of the averaged prediction; no ground truth needed).", "",
             "| method | test ECE | mean abs(expected − true pixel F1) | Spearman expected vs pixel F1 | "
             "Spearman expected vs object F1 | Spearman agreement vs object F1 |",
             "|---|---|---|---|---|---|"]
    for method in methods:
        test_rows = _by(rows, images="test", method=method)
        per_seed = {s: _by(test_rows, seed=s) for s in _seeds(test_rows)}
        pixel = [spearman_correlation(_float(r, "expected_f1"), _float(r, "true_f1")) for r in per_seed.values()]
        objects = [spearman_correlation(_float(r, "expected_f1"), _float(r, "object_f1_50")) for r in per_seed.values()]
        error = [float(np.mean(np.abs(np.subtract(_float(r, "expected_f1"), _float(r, "true_f1")))))
                 for r in per_seed.values()]
        ece = [float(np.mean(_float(r, "ece"))) for r in per_seed.values()]
        agreement = [spearman_correlation(_float(r, "agreement_f1_50"), _float(r, "object_f1_50"))
                     for r in per_seed.values() if "agreement_f1_50" in r[0] and r[0]["agreement_f1_50"] != "nan"]
        lines.append(f"| {method}{' (chosen)' if method == chosen else ''} | {mean_sd(ece)} | {mean_sd(error)} | "
                     f"{mean_sd(pixel)} | {mean_sd(objects)} | {mean_sd(agreement)} |")
        if method == chosen:
            tests.append(_one_sample("D", f"{method}: Spearman(expected F1, true object F1) over 31 subsets ≠ 0",
                                     objects))
            if agreement:
                tests.append(_one_sample("D", f"{method}: Spearman(agreement F1, true object F1) over 31 subsets ≠ 0",
                                         agreement))
    test_rows = _by(rows, images="test", method=chosen)
    subsets = list(dict.fromkeys(r["subset"] for r in test_rows))
    lines += ["", f"Per subset ({chosen}, test images, mean over seeds), sorted by expected F1:", "",
              "| subset | expected F1 | true pixel F1 | agreement F1@0.5 | true object F1@0.5 |", "|---|---|---|---|---|"]
    means = []
    for subset in subsets:
        mine = _by(test_rows, subset=subset)
        agreement = float(np.mean(_float(mine, "agreement_f1_50"))) if "agreement_f1_50" in mine[0] else float("nan")
        means.append((float(np.mean(_float(mine, "expected_f1"))), subset, float(np.mean(_float(mine, "true_f1"))),
                      agreement, float(np.mean(_float(mine, "object_f1_50")))))
    for expected, subset, pixel, agreement, objects in sorted(means, reverse=True):
        shown = "–" if not np.isfinite(agreement) else f"{agreement:.3f}"
        lines.append(f"| {subset} | {expected:.3f} | {pixel:.3f} | {shown} | {objects:.3f} |")
    return lines + [""]


PARTS: dict[str, Callable[[Rows, list[Test]], list[str]]] = {"A": part_a, "B": part_b, "C": part_c, "D": part_d}


PART_NAMES = {"A": "marker subsets", "B": "unseen marker", "C": "adaptation", "D": "uncertainty"}
README_BEGIN = "<!-- beyond:begin (bench/beyond.py --report) -->"
README_END = "<!-- beyond:end -->"


def readme_block(tables: dict[str, Rows]) -> str:
    """The README's summary of the report: one line per test, verdicts from the Holm-adjusted p-values."""
    _, tests = _sections(tables)
    lines = [README_BEGIN, "**Beyond the papers** (`bench/results/beyond.md`, rendered by `bench/beyond.py --report`; "
             f"seeds as the unit, n = {len(_seeds([r for rows in tables.values() for r in rows]))}, Holm over "
             f"{len(tests)} tests):", ""]
    lines += [_summary_line(t, f"{PART_NAMES[t.part]}, ") for t in tests]
    return "\n".join(lines + [README_END]) + "\n"


def _summary_line(test: Test, prefix: str) -> str:
    return (f"- {prefix}{test.question}: {test.mean_difference:+.3f} (p Holm {test.p_holm:.2g}, n={test.n}): "
            f"**{_verdict(test)}**")


def _sections(tables: dict[str, Rows]) -> tuple[list[str], list[Test]]:
    """The sections of the parts whose CSV exists, and all their tests, Holm-adjusted together."""
    tests: list[Test] = []
    body: list[str] = []
    for part, build in PARTS.items():
        if tables.get(part):
            body += build(tables[part], tests)
    adjust_holm(tests)
    return body, tests


def render(tables: dict[str, Rows]) -> str:
    """The Markdown report of the parts whose CSV exists (``{part: rows}``)."""
    body, tests = _sections(tables)
    seeds = sorted({str(r["seed"]) for rows in tables.values() for r in rows}, key=int)
    header = ["# Beyond the papers: unseen markers, Excite-only adaptation, per-subset uncertainty (issue 16)", "",
              "Rendered by `python bench/beyond.py --report` from the per-unit CSVs `bench/results/beyond_*.csv`, "
              "written by `OMP_NUM_THREADS=1 PYTHONPATH=src python bench/beyond.py` (CPU, 1 thread per process). "
              f"Unit of replication: the seed ({len(seeds)} seeds: each its own simulated images and its own "
              "trained networks). Every network: a depth-3 U-Net with 8 filters, 20 epochs x 40 steps of batch 4 "
              "(adaptation: 10 epochs), cosine schedule, the epoch with the best validation score kept; decoding "
              "with the run's defaults for every method; nothing chosen on test images.", "",
              f"Tests: paired t-tests over seeds (one-sample for correlations), Holm-corrected over all {len(tests)} "
              "tests of this report together; the stars follow the Holm-adjusted p-value, n beside each. With "
              f"{len(seeds)} seeds only large, consistent effects can reach significance: a 'no detectable difference' is not "
              "evidence of equality.", ""]
    summary = ["## Summary", "", "Every comparison of the report, its verdict from the Holm-adjusted p-value:", ""]
    summary += [_summary_line(t, f"{t.part}: ") for t in tests]
    header += summary + [""]
    table = ["## Tests (Holm over the whole report)", "",
             "| part | comparison | mean difference | n | p | p (Holm) | significance |", "|---|---|---|---|---|---|---|"]
    numbers: dict[str, int] = {}
    for t in tests:
        numbers[t.part] = numbers.get(t.part, 0) + 1
        table.append(f"| {t.part}{numbers[t.part]} | {t.question} | {t.cell()} |")
    return "\n".join(header + body + table) + "\n"
