"""Paired differences, Wilcoxon and Mann-Whitney on a hand-made results table."""

import csv

import numpy as np
import pytest
from scipy import stats

from fluoseg.cli import main
from fluoseg.errors import FluosegError
from fluoseg.experiments.compare import difference_tests, marker_effect, paired_differences
from fluoseg.experiments.results import RESULT_FIELDS, read_results, result_row, summarize, write_csv

COMBOS = {"m_1": ("x",), "m_2": ("y",), "m_12": ("x", "y")}
SAMPLES = ("s0", "s1")


def rows_of(method, class_name, tps, combos=tuple(COMBOS)):
    """Rows with F1 = tp / 50 (fp = 0, fn = 100 - 2 tp), one per (combination, sample) in order."""
    units = [(c, s) for c in combos for s in SAMPLES]
    return [result_row(method=method, class_name=class_name, combination=c, markers=COMBOS[c], fold=0, sample=s,
                       tp=tp, fp=0, fn=100 - 2 * tp) for (c, s), tp in zip(units, tps)]


@pytest.fixture()
def table(tmp_path):
    ms = rows_of("MS", "c1", [10, 11, 12, 13, 14, 15]) + rows_of("MS", "c2", [20, 20, 21, 21, 22, 22])
    a = rows_of("A", "c1", [11, 13, 15, 17, 19, 21]) + rows_of("A", "c2", [20, 20, 21, 21, 22, 22])
    b = rows_of("B", "c1", [9, 15], combos=("m_12",))
    write_csv(ms, tmp_path / "ms.csv")
    write_csv(a + b, tmp_path / "others.csv")
    return [tmp_path / "ms.csv", tmp_path / "others.csv"]


def test_f1_is_computed_from_counts(table):
    rows = read_results(table)
    assert len(rows) == 26 and list(rows[0]) == list(RESULT_FIELDS)
    assert rows[0]["f1"] == pytest.approx(10 / 50)


def test_paired_differences_and_wilcoxon(table):
    differences = paired_differences(read_results(table), "MS")
    a1 = [d for d in differences if d["method"] == "A" and d["class"] == "c1"]
    assert [round(d["difference"], 10) for d in a1] == [0.02, 0.04, 0.06, 0.08, 0.10, 0.12]
    tests = {(t["method"], t["class"]): t for t in difference_tests(differences)}
    # six positive, distinct differences: exact two-sided p = 2 / 2^6
    assert tests["A", "c1"]["p_value"] == pytest.approx(2 / 64) and tests["A", "c1"]["n"] == 6
    # Holm over the 3 finite p-values of this call (A c2 has none): the smallest is multiplied by 3
    finite = sorted(t["p_value"] for t in tests.values() if np.isfinite(t["p_value"]))
    assert len(finite) == 3 and finite[0] == pytest.approx(2 / 64)
    assert tests["A", "c1"]["p_holm"] == pytest.approx(3 * 2 / 64) and tests["A", "c1"]["stars"] == "n.s."
    assert tests["A", "c1"]["mean_difference"] == pytest.approx(0.07)
    assert np.isnan(tests["A", "c2"]["p_value"]) and tests["A", "c2"]["stars"] == "n/a"  # all differences 0
    pooled = tests["A", "all"]  # both classes together, as the paper tests
    every = [d for d in differences if d["method"] == "A"]
    expected = stats.wilcoxon([d["f1"] for d in every], [d["f1_reference"] for d in every], zero_method="wilcox")
    assert pooled["n"] == 12 and pooled["p_value"] == pytest.approx(expected.pvalue)
    # B has only m_12: just the units both have are paired
    b = [d for d in differences if d["method"] == "B"]
    assert [(d["combination"], d["sample"], round(d["difference"], 10)) for d in b] == [
        ("m_12", "s0", round((9 - 14) / 50, 10)), ("m_12", "s1", 0.0)]


def test_fold_unit_pools_counts_over_samples(table):
    differences = paired_differences(read_results(table), "MS", unit="fold")
    first = next(d for d in differences if d["method"] == "A" and d["class"] == "c1" and d["combination"] == "m_1")
    # A: tp 11 + 13 = 24, fn 78 + 74 = 152 -> F1 = 48 / 200; MS: tp 21, fn 158 -> 42 / 200
    assert first["sample"] == "ALL"
    assert first["f1"] == pytest.approx(48 / 200) and first["f1_reference"] == pytest.approx(42 / 200)
    assert len([d for d in differences if d["method"] == "A"]) == 6  # 2 classes x 3 combinations x 1 fold


def test_marker_effect_is_mann_whitney(table):
    effects = marker_effect(read_results(table), "x")
    ms = next(e for e in effects if e["method"] == "MS" and e["class"] == "c1")
    with_x, without = [10 / 50, 11 / 50, 14 / 50, 15 / 50], [12 / 50, 13 / 50]
    expected = stats.mannwhitneyu(with_x, without, alternative="two-sided")
    assert (ms["n_with"], ms["n_without"]) == (4, 2)
    assert ms["p_value"] == pytest.approx(expected.pvalue) and ms["u_statistic"] == expected.statistic
    with pytest.raises(FluosegError, match="occurs in no combination"):
        marker_effect(read_results(table), "z")


def test_errors(table, tmp_path):
    with pytest.raises(FluosegError, match="reference method 'UB'"):
        paired_differences(read_results(table), "UB")
    rows = read_results(table)
    with pytest.raises(FluosegError, match="two results"):
        paired_differences(rows + rows[:1], "MS")
    (tmp_path / "bad.csv").write_text("method,class\nMS,c1\n")
    with pytest.raises(FluosegError, match="columns"):
        read_results(tmp_path / "bad.csv")


def test_summary_per_combination(table):
    summary = summarize(read_results(table))
    ms = [s for s in summary if s["method"] == "MS" and s["class"] == "c1"]
    assert [s["combination"] for s in ms] == ["m_1", "m_2", "m_12"]
    assert ms[0]["mean_f1"] == pytest.approx(10.5 / 50) and ms[0]["sd_f1"] == pytest.approx(np.std([0.2, 0.22], ddof=1))


def test_cli_compare_writes_tables_and_boxplot(table, tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(["experiment", "compare", *map(str, table), "--reference", "MS", "--out", str(out),
                 "--marker-effect", "x"]) == 0
    assert "A" in capsys.readouterr().out
    for name in ("differences_vs_MS.csv", "tests_vs_MS.csv", "differences_vs_MS.png", "marker_effect_x.csv"):
        assert (out / name).is_file()
    assert (out / "differences_vs_MS.png").read_bytes()[:4] == b"\x89PNG"
    tests = list(csv.DictReader((out / "tests_vs_MS.csv").open()))
    assert {(t["method"], t["class"]) for t in tests} == {("A", "c1"), ("A", "c2"), ("A", "all"), ("B", "c1")}


def test_network_unit_tests_independent_networks_with_a_paired_t_test():
    rows = []
    for fold, (ref, gain) in enumerate([(10, 1), (12, 2), (11, 3), (13, 4)]):  # 4 folds = 4 networks per method
        for method, tp in (("MS", ref), ("ME", ref + gain)):
            for combination, markers in COMBOS.items():
                for sample in SAMPLES:
                    rows.append(result_row(method=method, class_name="c1", combination=combination, markers=markers,
                                           fold=fold, sample=sample, tp=tp, fp=0, fn=100 - 2 * tp))
    differences = paired_differences(rows, "MS", unit="network")
    assert len(differences) == 4 and all(d["combination"] == "mean of 3" for d in differences)
    # per network: F1 = tp / 50 pooled over samples and averaged over combinations; gains 1..4 tp
    assert [round(d["difference"], 10) for d in differences] == [0.02, 0.04, 0.06, 0.08]
    (test,) = difference_tests(differences, unit="network")
    # differences 0.02, 0.04, 0.06, 0.08: t = 0.05 / (0.025820 / 2) = 3.8730 with 3 df, p = 0.03047
    assert test["test"] == "paired t" and test["n"] == 4
    assert test["statistic"] == pytest.approx(3.8730, abs=1e-4) and test["p_value"] == pytest.approx(0.03047, abs=1e-4)
    assert test["p_holm"] == test["p_value"] and test["stars"] == "*"  # a family of one test
