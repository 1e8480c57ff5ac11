"""The example configurations validate, and the ISL example runs end to end on vessels5."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fluoseg.config import load_config
from support import SHARED_DATA

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
VESSELS5 = SHARED_DATA / "vessels5"


@pytest.mark.parametrize("path", sorted(p for p in EXAMPLES.glob("*/*.yaml") if p.name != "manifest.yaml"),
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_example_configs_validate(path):
    config = load_config(path)
    assert config.data.manifest.is_file()


@pytest.mark.skipif(not VESSELS5.is_dir(), reason="vessels5 data not present (../shared/data/vessels5)")
def test_isl_example_pretext_then_fine_tune_with_the_shifted_sigmoid(tmp_path):
    from fluoseg.train.trainer import train

    def shrunk(name: str):
        config = load_config(EXAMPLES / "isl_vessels5" / name)
        config.model.options.update(depth=2, base_filters=4)
        config.train.epochs, config.train.steps_per_epoch, config.train.patch_size = 1, 1, 64
        config.train.val_tile_size, config.train.num_threads = 128, 1
        return config

    pretext = train(shrunk("pretext.yaml"), tmp_path / "pretext", progress=False)
    fine = shrunk("finetune.yaml")
    assert fine.model.init_from == (EXAMPLES.parents[0] / "runs" / "isl-pretext").resolve()
    fine.model.init_from = pretext
    run = train(fine, tmp_path / "fine", progress=False)
    record = json.loads((run / "model" / "init_from.json").read_text())
    assert (record["head"], record["shift"]) == ("shifted-sigmoid", 0.5)
