"""Data-parallel training (``fluoseg train --nproc``): 2 CPU processes (gloo) against one."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fluoseg.cli import main
from fluoseg.config import load_config
from fluoseg.errors import FluosegError
from fluoseg.infer import Segmenter
from fluoseg.run import read_checkpoint_dict
from fluoseg.train.distributed import Ranks
from fluoseg.train.trainer import train

SRC = Path(__file__).resolve().parents[2] / "src"
# plain SGD: the step is -lr * gradient, so equal weights after a step mean equal gradients
SGD = dict(optimizer="sgd", momentum=0.0, weight_decay=0.0, learning_rate=0.05, batch_size=4, steps_per_epoch=2)


def weights(run):
    return read_checkpoint_dict(run / "model" / "last.pt")["model_state"]


def losses(run):
    return [float(r["train_loss"]) for r in csv.DictReader((run / "model" / "metrics.csv").open())]


def test_ranks_share_out_the_global_batch():
    assert Ranks().shard(4) == [0, 1, 2, 3]
    shards = [Ranks(rank=r, world=2).shard(4) for r in range(2)]
    assert shards == [[0, 2], [1, 3]]


def test_two_processes_train_as_one_with_the_same_global_batch(make_config, tmp_path):
    config = make_config(**SGD)
    one = train(load_config(config), tmp_path / "one", progress=False)
    assert main(["train", str(config), "--out", str(tmp_path / "two"), "--nproc", "2", "--quiet"]) == 0
    two = tmp_path / "two"
    a, b = weights(one), weights(two)
    for key in a:
        assert torch.allclose(a[key], b[key], rtol=1e-5, atol=1e-6), key
    assert losses(two) == pytest.approx(losses(one), rel=1e-5)  # the same loss curve
    assert len(losses(two)) == 2 and losses(two)[0] != losses(two)[1]
    assert (two / "train.log").read_text().count("2 processes") == 1  # rank 0 alone logs
    assert Segmenter.load(two, device="cpu").classes == ("blob", "bar")  # the checkpoint loads


def test_two_process_run_killed_with_sigkill_resumes_to_the_uninterrupted_result(make_config, tmp_path):
    config = make_config(**{**SGD, "epochs": 8, "steps_per_epoch": 4})
    straight = train(load_config(config), tmp_path / "straight", progress=False, nproc=2)
    killed = tmp_path / "killed"
    command = [sys.executable, "-m", "fluoseg", "train", str(config), "--out", str(killed), "--nproc", "2", "--quiet"]
    child = subprocess.Popen(command, env={**os.environ, "PYTHONPATH": str(SRC)}, start_new_session=True)
    deadline = time.monotonic() + 120
    while not (killed / "model" / "last.pt").exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(child.pid, signal.SIGKILL)  # the launcher and both ranks
    child.wait()
    epoch = read_checkpoint_dict(killed / "model" / "last.pt")["epoch"]
    assert 1 <= epoch < 8, "the run was not killed midway"
    with pytest.warns(UserWarning, match="took over the lock"):  # the killed launcher's
        resumed = train(load_config(config), killed, progress=False, nproc=2, resume=True)
    a, b = weights(straight), weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert losses(resumed) == losses(straight)


def test_a_global_batch_the_processes_cannot_share_is_refused(make_config, tmp_path):
    config = load_config(make_config(batch_size=3))
    with pytest.raises(FluosegError, match="multiple of 2"):
        train(config, tmp_path / "run", progress=False, nproc=2)
    assert not (tmp_path / "run").exists()
