import pytest
import torch

from fluoseg.errors import FluosegError
from fluoseg.run import read_checkpoint_dict as load_checkpoint, write_checkpoint_dict as save_checkpoint


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
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", explode)
    with pytest.raises(OSError):
        save_checkpoint({"epoch": 2}, path)
    assert load_checkpoint(path)["epoch"] == 1
    assert not list(tmp_path.glob("*.partial"))


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
