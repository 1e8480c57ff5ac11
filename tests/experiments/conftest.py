"""Fixtures of the experiment tests: tiny configs with a chosen network, trained in a second."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from fluoseg.config import load_config


@pytest.fixture()
def experiment_config(make_config, tmp_path: Path):
    """Factory: a tiny config (1 epoch of 1 step unless told) with extra U-Net options; returns (path, RunConfig)."""

    def make(name: str = "exp.yaml", *, options: dict | None = None, manifest: Path | None = None, **train: object):
        settings = {"epochs": 1, "steps_per_epoch": 1, **train}
        path = make_config(name, **settings)
        raw = yaml.safe_load(path.read_text())
        raw["model"]["options"].update(options or {})
        if manifest is not None:
            raw["data"]["manifest"] = str(manifest)
        path.write_text(yaml.safe_dump(raw))
        return path, load_config(path)

    return make
