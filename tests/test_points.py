"""Tests of fluoseg.points (``fluoseg points``): points derived from labels, and the manifest using them."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import yaml
from support import write_nuclei_dataset

from fluoseg.cli import main
from fluoseg.data.manifest import load_manifest
from fluoseg.errors import FluosegError
from fluoseg.io.points import read_points_csv


def test_one_point_inside_each_object_and_a_manifest_that_uses_them(tmp_path, capsys):
    source = write_nuclei_dataset(tmp_path / "data", 3)
    out = tmp_path / "pts"
    assert main(["points", "--data", str(source), "--out", str(out)]) == 0
    manifest = load_manifest(out / "manifest.yaml")
    assert [s.id for s in manifest.samples] == ["n0", "n1", "n2"]
    for sample in manifest.samples:
        assert sample.points_path == out / "points" / f"{sample.id}.csv"
        labels = tifffile.imread(sample.labels_path)
        points = sample.read_points(labels.shape)
        ids = np.unique(labels[labels > 0])
        assert len(points) == len(ids)
        # every point lies in its own object, the objects in ascending label order
        assert [labels[int(round(y)), int(round(x))] for y, x in points] == ids.tolist()
    raw = yaml.safe_load((out / "manifest.yaml").read_text())
    assert raw["labels"] == "labels/{id}.tif" and raw["markers"] == ["DNA"]

    # an existing output folder needs --overwrite, and nothing is changed without it
    before = (out / "points" / "n0.csv").read_text()
    assert main(["points", "--data", str(source), "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["points", "--data", str(source), "--out", str(out), "--overwrite"]) == 0
    assert (out / "points" / "n0.csv").read_text() == before


def test_samples_without_labels_are_refused(tmp_path, capsys):
    source = write_nuclei_dataset(tmp_path / "data", 2)
    raw = yaml.safe_load(source.read_text())
    del raw["labels"]
    source.write_text(yaml.safe_dump(raw))
    assert main(["points", "--data", str(source), "--out", str(tmp_path / "pts")]) == 2
    error = capsys.readouterr().err.strip()
    assert "['n0', 'n1'] have no instance labels" in error and "\n" not in error
    assert not (tmp_path / "pts").exists()


def test_a_manifest_naming_a_missing_points_file_is_refused(tmp_path):
    source = write_nuclei_dataset(tmp_path / "data", 2)
    raw = yaml.safe_load(source.read_text())
    raw["points"] = "points/{id}.csv"
    source.write_text(yaml.safe_dump(raw))
    (tmp_path / "data" / "points").mkdir()
    (tmp_path / "data" / "points" / "n0.csv").write_text("y,x\n3,4\n")
    with pytest.raises(FluosegError, match=r"sample 'n1': file .*n1.csv not found"):
        load_manifest(source)
    assert read_points_csv(tmp_path / "data" / "points" / "n0.csv").tolist() == [[3.0, 4.0]]
