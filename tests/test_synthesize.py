import numpy as np
import pytest
import yaml

from fluoseg.cli import main
from fluoseg.config import load_config
from fluoseg.data.manifest import load_manifest
from fluoseg.errors import FluosegError
from fluoseg.synthesize import synthesize_nuclei
from fluoseg.train.trainer import train


def test_synth_cli_writes_a_trainable_manifest(tiny_nuclei_dataset, tmp_path):
    out = tmp_path / "artificial"
    code = main(["synth", "nuclei", "--data", str(tiny_nuclei_dataset), "--out", str(out), "--samples", "n0,n1",
                 "--n-images", "3", "--grid", "3", "--size", "48"])
    assert code == 0
    manifest = load_manifest(out / "manifest.yaml")
    assert len(manifest.samples) == 3 and manifest.markers == ("DNA",)
    labels = manifest.samples[0].read_labels((48, 48))
    assert labels.max() >= 1
    assert main(["synth", "nuclei", "--data", str(tiny_nuclei_dataset), "--out", str(out)]) == 2


def test_extra_train_samples_join_the_training_split(tiny_nuclei_dataset, tmp_path):
    extra = synthesize_nuclei(tiny_nuclei_dataset, tmp_path / "art", sample_ids=["n0"], n_images=2, grid=3, shape=48)
    config = {
        "data": {"manifest": str(tiny_nuclei_dataset), "extra_train": [str(extra)],
                 "split": {"val": ["n3"], "test": ["n4"]}},
        "task": "instance",
        "model": {"name": "unet", "options": {"depth": 2, "base_filters": 4}},
        "train": {"epochs": 1, "steps_per_epoch": 1, "batch_size": 1, "patch_size": 60, "device": "cpu"},
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    run = train(load_config(path), tmp_path / "run", progress=False)
    split = yaml.safe_load((run / "config.yaml").read_text())["split"]
    assert "artificial_0000" in split["train"] and "n3" in split["val"] and "n4" in split["test"]


def test_sources_need_labels(tiny_dataset, tmp_path):
    with pytest.raises(FluosegError, match="no instance labels"):
        synthesize_nuclei(tiny_dataset, tmp_path / "x", n_images=1)
