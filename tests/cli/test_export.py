"""``fluoseg export`` and ``fluoseg predict PACKAGE`` from the command line."""

from __future__ import annotations

import numpy as np
import pytest

from fluoseg.cli.main import main
from fluoseg.config import load_config
from fluoseg.io import read_mask
from fluoseg.train.trainer import train


def test_export_then_predict_with_the_package_as_with_the_run(tiny_config, tiny_dataset, tmp_path, capsys):
    pytest.importorskip("bioimageio.spec", reason="the bioimageio extra is not installed")
    run = train(load_config(tiny_config), tmp_path / "run", progress=False)
    package = tmp_path / "model.zip"
    assert main(["export", str(run), "--out", str(package), "--no-test", "--name", "tiny vessels"]) == 0
    assert package.is_file() and "wrote" in capsys.readouterr().out
    image = tiny_dataset.parent / "images" / "s4.tif"
    names = ["--channel-names", "m1,m2,m3", "--quiet"]
    assert main(["predict", str(run), str(image), "--out", str(tmp_path / "a"), *names]) == 0
    assert main(["predict", str(package), str(image), "--out", str(tmp_path / "b"), *names]) == 0
    assert np.array_equal(read_mask(tmp_path / "a" / "s4.tif"), read_mask(tmp_path / "b" / "s4.tif"))
    assert main(["export", str(run), "--out", str(package), "--no-test"]) == 2  # exists: one-line error
    assert "--overwrite" in capsys.readouterr().err
