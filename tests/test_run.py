"""Tests of fluoseg.run: the checkpoint file format and the run directory."""

import json

import numpy as np
import pytest
import torch

from fluoseg.errors import FluosegError
from fluoseg.models import build_model
from fluoseg.run import Checkpoint, ModelSpec, Preprocessing, RunDir, TrainingState
from fluoseg.run import read_checkpoint_dict as load_checkpoint
from fluoseg.run import write_checkpoint_dict as save_checkpoint


def test_round_trip_with_safe_loading(tmp_path):
    state = {"model_state": {"w": torch.ones(2)}, "markers": ["a"], "epoch": 3, "numpy_rng": {"state": {"s": 2**100}}}
    path = save_checkpoint(state, tmp_path / "last.pt")
    loaded = load_checkpoint(path)
    assert loaded["epoch"] == 3 and loaded["markers"] == ["a"] and loaded["numpy_rng"]["state"]["s"] == 2**100
    assert torch.equal(loaded["model_state"]["w"], torch.ones(2))
    assert not list(tmp_path.glob("*.partial"))


def test_failed_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = save_checkpoint({"epoch": 1}, tmp_path / "last.pt")

    def explode(*args, **kwargs):
        import errno

        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", explode)
    with pytest.raises(FluosegError, match="last.pt.*disk is full") as info:
        save_checkpoint({"epoch": 2}, path)
    assert "\n" not in str(info.value)
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary left behind


def test_rejects_foreign_and_corrupt_files(tmp_path):
    torch.save({"hello": 1}, tmp_path / "foreign.pt")
    with pytest.raises(FluosegError, match="not a fluoseg checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    with pytest.raises(FluosegError, match="corrupt"):
        load_checkpoint(tmp_path / "bad.pt")
    with pytest.raises(FluosegError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")


class Evil:
    """An arbitrary object: unpickling it would run code of the file's choosing."""


def test_refuses_pickled_objects(tmp_path):
    torch.save({"format": "fluoseg-checkpoint", "version": 1, "obj": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(FluosegError):
        load_checkpoint(tmp_path / "evil.pt")


def small_checkpoint(training: bool = True) -> Checkpoint:
    torch.manual_seed(0)
    model = build_model("unet", in_channels=2, out_channels=3, depth=2, base_filters=4, padding="same")
    state = None
    if training:
        optimizer = torch.optim.Adam(model.parameters())
        state = TrainingState(optimizer=optimizer.state_dict(), epoch=4, best_score=0.5, torch_rng=torch.get_rng_state(),
                              numpy_rng=np.random.default_rng(1).bit_generator.state, schedule={"name": "none"})
    return Checkpoint(model=ModelSpec.of(model), weights=model.state_dict(), task={"name": "semantic", "classes": ["x"]},
                      markers=("DAPI", "CD31"), classes=("x",), preprocess=Preprocessing(pixel_size_um=0.5),
                      geometry={"input_size": 64, "output_size": 64, "mode": "same"}, training=state)


def test_typed_checkpoint_round_trips_and_keeps_the_version_1_layout(tmp_path):
    checkpoint = small_checkpoint()
    path = checkpoint.save(tmp_path / "best.pt")
    raw = load_checkpoint(path)  # the dict layout every fluoseg version wrote
    assert raw["format"] == "fluoseg-checkpoint" and raw["version"] == 1
    assert {"model", "task", "model_state", "markers", "classes", "preprocess", "geometry", "optimizer_state", "epoch",
            "best_score", "torch_rng", "numpy_rng", "schedule_state", "select_by"} <= set(raw)
    loaded = Checkpoint.load(path)
    assert loaded.model == checkpoint.model and loaded.markers == ("DAPI", "CD31") and loaded.classes == ("x",)
    assert loaded.preprocess == Preprocessing(pixel_size_um=0.5) and loaded.training.epoch == 4
    x = torch.rand(1, 2, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded.build_model()(x), checkpoint.build_model()(x))
    assert loaded.build_task().classes == ("x",)
    inference_only = small_checkpoint(training=False).save(tmp_path / "plain.pt")
    assert Checkpoint.load(inference_only).training is None


def test_damaged_checkpoint_content_is_a_one_line_error(tmp_path):
    path = save_checkpoint({"model_state": {}, "markers": ["a"]}, tmp_path / "odd.pt")
    with pytest.raises(FluosegError, match="odd.pt: checkpoint lacks or garbles 'model'"):
        Checkpoint.load(path)


def test_run_dir_start_resume_and_index(tmp_path):
    run = RunDir(tmp_path / "run")
    resolved = {"data": {"manifest": "m.yaml"}, "split": {"train": ["a"], "val": ["b"], "test": []}}
    with pytest.raises(FluosegError, match="nothing to resume"):
        run.start(resolved, ["model"], resume=True, overwrite=False)
    run.start(resolved, ["model"], resume=False, overwrite=False)
    assert RunDir.open(run.path).members() == ["model"] and run.split() == {"train": ["a"], "val": ["b"], "test": []}
    run.start(resolved, ["model"], resume=True, overwrite=False)  # same config: fine
    with pytest.raises(FluosegError, match="differs"):
        run.start({**resolved, "data": {"manifest": "other.yaml"}}, ["model"], resume=True, overwrite=False)
    with pytest.raises(FluosegError, match="--overwrite"):
        run.start(resolved, ["model"], resume=False, overwrite=False)
    assert not run.is_finished(1)
    run.write_metrics("model", [{"epoch": 1, "seconds": 2.5}])
    assert run.is_finished(1) and not run.is_finished(2) and run.train_seconds() == 2.5
    (run.path / "run.json").write_text("{broken")
    with pytest.raises(FluosegError, match="run.json is damaged"):
        run.members()
    (run.path / "run.json").write_text(json.dumps({"members": []}))
    with pytest.raises(FluosegError, match="damaged"):
        run.members()
    with pytest.raises(FluosegError, match="not a fluoseg run directory"):
        RunDir.open(tmp_path)
    (tmp_path / "file").write_text("x")
    with pytest.raises(FluosegError, match="is a file"):
        RunDir(tmp_path / "file").start(resolved, ["model"], resume=False, overwrite=True)
