"""Cellpose 3 (classic CNN) jobs for bench/peers.py; runs in bench/work/peers/venv-cellpose.

Commands (spec keys in brackets):

* ``train``   [data, train, val, threads, budget_s, batch_size, learning_rate, model_dir, result]
  A fresh ``CellposeModel(pretrained_model=False)`` trained with ``cellpose.train.train_seg``
  (its AdamW, warm-up and final learning-rate decay) within a wall-clock budget counted from
  process start: flows are computed first (timed), two training steps are timed on a copy of
  the network, and the number of Cellpose "epochs" (here one batch each, ``nimg_per_epoch =
  batch_size``, so the 10-step warm-up and the final decay fit any budget) is chosen to fill
  the remaining time. A hard stop ends training at the budget whatever happens; the network
  is then saved as it is. ``rescale=False``: no per-image diameter normalisation (no tool in
  the benchmark is given object sizes); Cellpose's own 0.5-1.5x scale augmentation applies.
* ``predict`` [data, test, threads, model, pred_dir, result]  label TIFF per test image,
  ``eval(channels=[0, 0], rescale=1.0)`` (the training scale), default thresholds.
* ``speed``   [image, warmup_image, repeats, threads, model, result]  see common.time_runs.
* ``versions`` [result]
"""

from __future__ import annotations

import copy
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    PROCESS_START, log, load_spec, peak_rss_mb, predict_test_images, read_pairs, time_speed_image, write_result,
)


class BudgetExhausted(Exception):
    pass


def _setup(threads: int):
    import torch

    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stdout)
    return torch


def train(spec):
    torch = _setup(spec["threads"])
    import numpy as np
    from cellpose import dynamics, models
    from cellpose import train as cp_train

    deadline = PROCESS_START + spec["budget_s"]
    np.random.seed(0)
    torch.manual_seed(0)
    images, labels = read_pairs(spec["data"], spec["train"])
    val_images, val_labels = read_pairs(spec["data"], spec["val"])
    cpu = torch.device("cpu")
    started = time.time()
    flows = dynamics.labels_to_flows([lab.astype(np.int32) for lab in labels], device=cpu)
    val_flows = dynamics.labels_to_flows([lab.astype(np.int32) for lab in val_labels], device=cpu)
    flows_s = time.time() - started
    log(f"flows of {len(flows)} + {len(val_flows)} images in {flows_s:.0f} s")

    model = models.CellposeModel(gpu=False, pretrained_model=False, device=cpu)
    batch = int(spec["batch_size"])
    common = dict(batch_size=batch, learning_rate=spec["learning_rate"], channels=[0, 0], normalize=True,
                  rescale=False, save_every=10**9)
    model_dir = Path(spec["model_dir"])
    model_dir.mkdir(parents=True, exist_ok=True)

    # Probe: 1 warm-up batch and 1 timed batch on a throw-away copy of the network.
    (model_dir / "probe").mkdir(exist_ok=True)
    probe_net = copy.deepcopy(model.net)
    times = []
    original_loss = cp_train._loss_fn_seg

    def timed_loss(lbl, y, device):
        times.append(time.perf_counter())
        return original_loss(lbl, y, device)

    cp_train._loss_fn_seg = timed_loss
    probe_started = time.time()
    try:
        cp_train.train_seg(probe_net, train_data=images[:4 * batch], train_labels=flows[:4 * batch], n_epochs=1,
                           nimg_per_epoch=2 * batch, save_path=str(model_dir / "probe"), model_name="probe", **common)
    finally:
        cp_train._loss_fn_seg = original_loss
    step_s = (times[-1] - times[0]) / max(len(times) - 1, 1)
    probe_s = time.time() - probe_started
    del probe_net
    remaining = deadline - time.time()
    # 0.93: Cellpose's own preparation of the full data (normalisation, diameters) and its
    # test-loss evaluation every 10 batches; the hard stop catches any overshoot.
    n_epochs = max(1, int(0.93 * (remaining - 15) / step_s))
    log(f"probe: {step_s:.2f} s per batch of {batch}; {remaining:.0f} s left -> {n_epochs} batches")

    stopped_early = [False]
    steps = [0]
    batch_losses = []

    def guarded_loss(lbl, y, device):
        if time.time() > deadline:
            raise BudgetExhausted
        loss = original_loss(lbl, y, device)
        if y.requires_grad:
            steps[0] += 1
            batch_losses.append(float(loss.detach()))
        return loss

    cp_train._loss_fn_seg = guarded_loss
    train_started = time.time()
    path = model_dir / "cellpose_scratch"
    try:
        filename, train_losses, test_losses = cp_train.train_seg(
            model.net, train_data=images, train_labels=flows, test_data=val_images, test_labels=val_flows,
            n_epochs=n_epochs, nimg_per_epoch=batch, nimg_test_per_epoch=batch, save_path=str(model_dir),
            model_name="cellpose_scratch", **common)
        path = Path(filename)
    except BudgetExhausted:
        stopped_early[0] = True
        (model_dir / "models").mkdir(exist_ok=True)
        path = model_dir / "models" / "cellpose_scratch"
        model.net.save_model(str(path))
        log("budget reached: training stopped, network saved as it is")
    finally:
        cp_train._loss_fn_seg = original_loss
    finished = time.time()
    write_result(spec, {
        "model": str(path), "train_wall_s": finished - PROCESS_START, "flows_s": flows_s, "probe_s": probe_s,
        "probe_step_s": step_s, "loop_s": finished - train_started, "planned_batches": n_epochs,
        "batches_done": steps[0], "batch_size": batch, "images_seen": steps[0] * batch,
        "stopped_at_budget": stopped_early[0], "train_losses": batch_losses,
        "loss_first": sum(batch_losses[:3]) / max(len(batch_losses[:3]), 1) if batch_losses else None,
        "loss_last": sum(batch_losses[-3:]) / max(len(batch_losses[-3:]), 1) if batch_losses else None,
        "params": int(sum(p.numel() for p in model.net.parameters())), "peak_rss_mb": peak_rss_mb(),
        "settings": {**{k: v for k, v in common.items() if k != "save_every"}, "optimizer": "AdamW (train_seg default)",
                     "bsize": 224, "nimg_per_epoch": batch, "diam_mean": float(model.diam_mean)},
    })


def _load(spec):
    torch = _setup(spec["threads"])
    from cellpose import models

    return models.CellposeModel(gpu=False, pretrained_model=spec["model"], device=torch.device("cpu"))


def _segment(model, image):
    masks = model.eval(image, channels=[0, 0], rescale=1.0, diameter=None, progress=None)[0]
    return masks


def predict(spec):
    model = _load(spec)
    predict_test_images(spec, lambda image: _segment(model, image))


def speed(spec):
    logging.disable(logging.INFO)
    model = _load(spec)
    time_speed_image(spec, lambda image: _segment(model, image))


def flops(spec):
    """FLOPs per pixel of the Cellpose network on one 224x224 tile (FlopCounterMode)."""
    torch = _setup(spec["threads"])
    from cellpose.resnet_torch import CPnet
    from torch.utils.flop_counter import FlopCounterMode

    net = CPnet([2, 32, 64, 128, 256], 3, sz=3, mkldnn=False, max_pool=True, diam_mean=30.0).eval()
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        net(torch.zeros(1, 2, 224, 224))
    total = int(counter.get_total_flops())
    write_result(spec, {"tile": 224, "tile_flops": total, "flops_per_tile_pixel": total / 224**2,
                        "params": int(sum(p.numel() for p in net.parameters())), "tile_overlap": 0.1})


def versions(spec):
    import numpy
    import torch
    from cellpose import version

    write_result(spec, {"cellpose": str(version), "torch": torch.__version__, "numpy": numpy.__version__,
                        "python": sys.version.split()[0]})


if __name__ == "__main__":
    command, job = load_spec()
    {"train": train, "predict": predict, "speed": speed, "flops": flops, "versions": versions}[command](job)
