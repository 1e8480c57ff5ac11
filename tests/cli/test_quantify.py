"""``fluoseg quantify``: the CLI's tables equal direct numpy counts, in 2D and 3D; docs/quantify.md runs."""

from __future__ import annotations

import csv
import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest

from fluoseg.cli.main import main
from fluoseg.io import write_image
from support import SHARED_DATA

PAGE = Path(__file__).resolve().parents[2] / "docs" / "quantify.md"
VESSELS5 = SHARED_DATA / "vessels5"


def read_table(path: Path) -> dict[tuple[str, str, str, str], float]:
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["sample", "region", "class", "metric", "value"]
    return {(r["sample"], r["region"], r["class"], r["metric"]): float(r["value"]) if r["value"] else float("nan")
            for r in rows}


def write_case(folder: Path, rng: np.random.Generator, names: list[str], shape: tuple[int, ...]) -> dict:
    """Random masks, tissue and region label files named like each other in three folders."""
    axes = "ZYX"[-len(shape):]
    arrays = {}
    for name in names:
        masks = (rng.random((2, *shape)) < 0.2).astype(np.uint8)
        tissue = (rng.random(shape) < 0.7).astype(np.uint8)
        regions = rng.integers(0, 4, shape).astype(np.uint16)
        write_image(folder / "masks" / f"{name}.tif", masks, axes="C" + axes, channel_names=["vessel", "artery"])
        write_image(folder / "tissue" / f"{name}.tif", tissue, axes=axes)
        write_image(folder / "regions" / f"{name}.tif", regions, axes=axes)
        arrays[name] = (masks.astype(bool), tissue.astype(bool), regions)
    return arrays


@pytest.mark.parametrize("shape,size,measure", [((37, 45), "0.5", "area_um2"), ((5, 21, 18), "2,0.5,0.5", "volume_um3")],
                         ids=["2d", "3d"])
def test_cli_table_equals_numpy_counts(tmp_path, shape, size, measure):
    rng = np.random.default_rng(len(shape))
    arrays = write_case(tmp_path, rng, ["b1", "b2"], shape)
    out = tmp_path / "out" / "fractions.csv"
    status = main(["quantify", str(tmp_path / "masks"), "--tissue", str(tmp_path / "tissue"), "--regions",
                   str(tmp_path / "regions"), "--region-names", "1=dia,2=meta", "--pixel-size", size,
                   "--block", "16", "--out", str(out), "--quiet"])
    assert status == 0
    table = read_table(out)
    voxel = 0.25 if len(shape) == 2 else 2 * 0.25
    for sample, (masks, tissue, regions) in arrays.items():
        for region, name in ((None, "all"), (1, "dia"), (2, "meta"), (3, "3")):
            inside = tissue if region is None else tissue & (regions == region)
            for c, cls in enumerate(["vessel", "artery"]):
                count = int((masks[c] & inside).sum())
                assert table[sample, name, cls, "class_pixels"] == count
                assert table[sample, name, cls, "tissue_pixels"] == int(inside.sum())
                assert table[sample, name, cls, "fraction"] == pytest.approx(count / inside.sum())
                assert table[sample, name, cls, f"class_{measure}"] == pytest.approx(count * voxel)
    assert {k[1] for k in table} == {"all", "dia", "meta", "3"}
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_files_in_order_and_outputs_kept_without_overwrite(tmp_path, capsys):
    rng = np.random.default_rng(3)
    arrays = write_case(tmp_path, rng, ["a", "b"], (20, 24))
    out = tmp_path / "t.csv"
    masks = [str(tmp_path / "masks" / f"{n}.tif") for n in ("b", "a")]
    tissue = [str(tmp_path / "tissue" / f"{n}.tif") for n in ("b", "a")]
    assert main(["quantify", *masks, "--tissue", *tissue, "--out", str(out), "--no-plot"]) == 0
    table = read_table(out)
    m, t, _ = arrays["b"]
    assert table["b", "all", "artery", "class_pixels"] == int((m[1] & t).sum())
    assert "class_area_um2" not in {k[3] for k in table}  # no pixel size anywhere: pixel counts only
    assert not out.with_suffix(".png").exists()
    printed = capsys.readouterr().out
    assert re.search(r"b\s+all\s+artery\s+" + f"{100 * (m[1] & t).sum() / t.sum():.3f}", printed)
    before = out.read_bytes()
    assert main(["quantify", *masks, "--out", str(out), "--no-plot"]) == 2
    assert "exists" in capsys.readouterr().err and out.read_bytes() == before
    assert main(["quantify", *masks, "--out", str(out), "--no-plot", "--overwrite"]) == 0
    assert out.read_bytes() != before  # without tissue every pixel counts


def test_user_mistakes_are_one_line_errors(tmp_path, capsys):
    rng = np.random.default_rng(5)
    write_case(tmp_path, rng, ["a", "b"], (12, 12))
    masks = str(tmp_path / "masks")
    refused = [  # by the argument parser, before anything is read
        (["--pixel-size", "1,2,3,4"], "--pixel-size"),
        (["--region-names", "dia"], "--region-names"),
    ]
    for extra, message in refused:
        with pytest.raises(SystemExit) as exit_:
            main(["quantify", masks, "--out", str(tmp_path / "x.csv"), *extra])
        assert exit_.value.code == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    failing = [
        (["--tissue", str(tmp_path / "tissue" / "a.tif")], "1 tissue files were given for 2 masks files"),
        (["--tissue", str(tmp_path / "nowhere")], "not found"),
        (["--classes", "only"], "class names"),
    ]
    for extra, message in failing:
        assert main(["quantify", masks, "--out", str(tmp_path / "x.csv"), *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    assert not (tmp_path / "x.csv").exists() and not (tmp_path / "x.png").exists()
    (tmp_path / "other").mkdir()
    write_image(tmp_path / "other" / "a.tif", np.ones((12, 12), np.uint8), axes="YX")
    assert main(["quantify", masks, "--tissue", str(tmp_path / "other"), "--out", str(tmp_path / "x.csv")]) == 2
    assert "no tissue file named like the masks b.tif" in capsys.readouterr().err


def _documented_commands() -> list[str]:
    blocks = re.findall(r"```\n(.*?)```", PAGE.read_text(encoding="utf-8"), flags=re.S)
    return [line for block in blocks for line in block.splitlines() if line.startswith("fluoseg ")]


def test_documented_commands_parse():
    from fluoseg.cli.main import build_parser

    commands = _documented_commands()
    assert len(commands) == 2
    for command in commands:
        assert build_parser().parse_args(shlex.split(command)[1:]).command == "quantify"


@pytest.mark.skipif(not VESSELS5.is_dir(), reason="vessels5 data not present (../shared/data/vessels5)")
def test_vessels5_example_gives_the_listed_percentages(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    command = next(c for c in _documented_commands() if "vessels5" in c)
    # the page runs from the repository root; here the working folder is tmp_path
    args = [str(SHARED_DATA / a.removeprefix("../shared/data/")) if a.startswith("../shared/data/") else a
            for a in shlex.split(command)[1:]]
    assert any(a.startswith(str(VESSELS5)) for a in args)
    assert main(args + ["--quiet"]) == 0
    table = read_table(tmp_path / "vessels5_fractions.csv")
    listed = json.loads((VESSELS5 / "samples.json").read_text())["samples"]
    assert len(listed) == 8
    for sample in listed:
        for cls in ("sinusoids", "arteries"):
            assert 100 * table[sample["id"], "all", cls, "fraction"] == pytest.approx(sample[f"{cls}_pct"], abs=0.006)
        assert table[sample["id"], "all", "sinusoids", "tissue_area_um2"] == 768 * 768
    assert (tmp_path / "vessels5_fractions.png").is_file()
