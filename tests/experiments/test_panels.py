"""Heterogeneous training panels: the paper's Cases 1-6 and |M^UB| / |M^total|."""

import pytest
import yaml

from fluoseg.cli import main
from fluoseg.data.manifest import load_manifest
from fluoseg.errors import FluosegError
from fluoseg.experiments.panels import (
    assign_case,
    case_panels,
    make_case_manifest,
    trainable_combinations,
    ub_ratio,
)

MARKERS = ("DAPI", "endomucin", "endoglin", "collagen", "CXCL12-GFP")
IDS = [f"s{i}" for i in range(1, 6)]
EXPECTED_UB = {1: 5, 2: 10, 3: 20, 4: 30, 5: 13, 6: 19}


@pytest.mark.parametrize("case", range(1, 7))
def test_cases_give_valid_panels_and_the_documented_ratio(case):
    assignment = assign_case(case, IDS, MARKERS, seed=3)
    assert set(assignment) == set(IDS)
    for markers in assignment.values():
        assert markers and set(markers) <= set(MARKERS)
        assert list(markers) == [m for m in MARKERS if m in markers]  # panel order, no duplicates
    assert ub_ratio(assignment.values(), MARKERS) == (EXPECTED_UB[case], 31)
    if case <= 4:  # a fixed number of markers per sample, a different combination each
        assert {len(m) for m in assignment.values()} == {case}
        assert len(set(assignment.values())) == 5


def test_case3_reproduces_the_papers_statement_about_m23():
    # "m_23 in Case 3 is only trainable using samples s^1 or s^2, and in Case 1 not even trainable"
    holders = [i for i, slots in enumerate(case_panels(3, 5)) if {1, 2} <= set(slots)]
    assert holders == [0, 1]
    assert ("endomucin", "endoglin") not in trainable_combinations(assign_case(1, IDS, MARKERS).values(), MARKERS)


def test_seed_reshuffles_which_sample_gets_which_panel():
    panels = {seed: assign_case(2, IDS, MARKERS, seed=seed) for seed in range(6)}
    assert len({tuple(sorted(p.items())) for p in panels.values()}) > 1
    assert all(sorted(p.values()) == sorted(panels[0].values()) for p in panels.values())


def test_ratio_uses_markers_present_in_training_samples():
    assert ub_ratio([("a",), ("a", "b")], ("a", "b", "c")) == (3, 3)


def test_case_needs_enough_markers():
    with pytest.raises(FluosegError, match="at least 4"):
        case_panels(3, 3)
    with pytest.raises(FluosegError, match="unknown case"):
        case_panels(7, 5)


def test_manifest_copy_has_the_assigned_available_markers(tiny_dataset, tmp_path):
    out = tmp_path / "elsewhere" / "case1.yaml"
    assignment, ratio = make_case_manifest(tiny_dataset, 1, out, seed=0, sample_ids=["s0", "s1", "s2"])
    assert ratio == (3, 7)
    data = load_manifest(out)
    for sample in data.samples:
        expected = assignment.get(sample.id, ("m1", "m2", "m3"))  # others keep every marker
        assert sample.usable_markers == expected
    assert {len(assignment[i]) for i in ("s0", "s1", "s2")} == {1}
    with pytest.raises(FluosegError, match="--overwrite"):
        make_case_manifest(tiny_dataset, 1, out)


def test_per_sample_entries_get_their_panel(tiny_dataset, tmp_path):
    root = tiny_dataset.parent
    listed = tmp_path / "listed.yaml"
    listed.write_text(yaml.safe_dump({"root": str(root), "markers": ["m1", "m2", "m3"], "classes": ["blob", "bar"],
                                      "masks": "masks/{id}.tif",
                                      "samples": [{"image": "images/s0.tif", "available": ["m1", "m2", "m3"]},
                                                  {"id": "x1", "image": "images/s1.tif", "masks": "masks/s1.tif"}]}))
    assignment, _ = make_case_manifest(listed, 2, tmp_path / "out.yaml", seed=1)
    data = load_manifest(tmp_path / "out.yaml")
    assert {s.id: s.usable_markers for s in data.samples} == assignment


def test_cli_panels(tiny_dataset, tmp_path, capsys):
    out = tmp_path / "case5.yaml"
    assert main(["experiment", "panels", str(tiny_dataset), "--case", "5", "--out", str(out), "--seed", "2"]) == 0
    printed = capsys.readouterr().out
    assert "|M^UB|/|M^total| = " in printed and "case 5" in printed
    assert all(len(s.usable_markers) == 2 and "m1" in s.usable_markers for s in load_manifest(out).samples)
    assert main(["experiment", "panels", str(tiny_dataset), "--case", "3", "--out", str(tmp_path / "c3.yaml")]) == 2
    assert "at least 4" in capsys.readouterr().err
