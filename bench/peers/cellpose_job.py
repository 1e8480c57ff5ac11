"""Cellpose 3 (classic CNN) jobs for bench/peers.py; runs in bench/work/peers/venv-cellpose.

Cellpose as its authors train and run it (issue 11), within the benchmark's wall-clock budget:

* ``train``   [data, train, val, threads, budget_s, batch_size, learning_rate, bsize, model_dir, result]
  A fresh ``CellposeModel(pretrained_model=False)`` trained with ``cellpose.train.train_seg``
  and its defaults: AdamW, ``rescale=True`` (every training image scaled so its mean mask
  diameter becomes the network's ``diam_mean`` of 30 px, then Cellpose's 0.5-1.5x scale
  augmentation), and its learning-rate schedule: a 10-epoch linear warm-up, a constant rate,
  and - only when ``n_epochs > 100`` - halvings in the last 50 epochs (the last 100 above 300
  epochs) down to lr/1024. The budget is counted from process start. A probe on a throw-away
  copy of the network times Cellpose's data preparation and 3 training steps (after a
  warm-up step); the plan (:func:`plan_epochs`) then picks the schedule's length, ``n_epochs``
  in 150-299 (so that the annealing happens), and its epoch size to fill the time left.
  The schedule is followed by elapsed time, not by step count: every step takes the rate of
  ``cellpose_schedule`` at ``n_epochs x elapsed / training time``, so the warm-up, the constant
  phase and the decay keep their shares of the budget however the real step time differs
  from the probe's, and the decay ends at the budget. ``train_seg`` is given
  :data:`EPOCH_HEADROOM` times the planned batches, so it never runs out of epochs before the
  budget on a machine faster than probed; the hard stop at the budget ends training and saves
  the network as it is. The rate of every step is recorded (``lr_per_step``) so the report
  shows that the decay was reached, and ``train_seg``'s own rate at each of its epoch starts is
  checked against :func:`cellpose_schedule` (``lr_schedule_mismatches``).
* ``tune``    [data, val, threads, model, result]  ``flow_threshold`` x ``cellprob_threshold``
  on the validation images (:data:`FLOW_GRID`, :data:`CELLPROB_GRID`): the network runs once
  per image (``compute_masks=False``), each setting decodes those flows with Cellpose's own
  ``dynamics.resize_and_compute_masks`` as ``eval`` does, and the setting with the highest
  pooled F1 averaged over IoU 0.50:0.95 (``cellpose.metrics.average_precision`` counts) wins:
  the objective of ``fluoseg tune``.
* ``predict`` [data, test, threads, model, flow_threshold, cellprob_threshold, pred_dir, result]
  label TIFF per test image, ``eval(channels=[0, 0], diameter=model.diam_labels)``: images
  rescaled by the training-set mean diameter, as Cellpose does for a custom model.
* ``speed``   [image, warmup_image, repeats, threads, model, flow_threshold, cellprob_threshold, result]
  the scored configuration; the decoding (``_compute_masks``: flow dynamics and mask
  assembly) is timed apart from the rest (normalisation, rescaling, network, tiling).
* ``flops``, ``versions`` [result]
"""

from __future__ import annotations

import copy
import logging
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    PROCESS_START, StageTimer, log, load_spec, peak_rss_mb, predict_test_images, read_pairs, time_speed_image,
    write_result,
)

FLOW_GRID = (0.2, 0.4, 0.6, 0.8)          # Cellpose default 0.4; higher keeps more masks
CELLPROB_GRID = (-2.0, -1.0, 0.0, 1.0, 2.0)  # Cellpose default 0.0; lower grows masks
IOU_THRESHOLDS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))
MIN_ANNEALED_EPOCHS, MAX_EPOCHS = 150, 299   # train_seg decays only above 100 epochs; above 300 it decays longer
PROBE_STEPS = 4                               # the first is a warm-up, the other 3 are timed
TEST_LOSS_COST = 0.35                         # a test-loss batch (forward only) in training steps
EPOCH_HEADROOM = 2                            # train_seg's epochs hold this many times the planned batches


class BudgetExhausted(Exception):
    pass


def _setup(threads: int):
    import torch

    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stdout)
    return torch


def cellpose_schedule(learning_rate: float, n_epochs: int) -> list[float]:
    """The learning rate per epoch that ``train_seg`` of Cellpose 3.1.1.3 sets (``cellpose/train.py``).

    A 10-epoch linear warm-up from 0, then constant; above 100 epochs the last 50 epochs halve
    it every 5 epochs, above 300 the last 100 every 10. The training job checks every step
    against the rate ``train_seg`` actually set (``lr_schedule_mismatches`` in the result).
    """
    rates = [learning_rate * i / 9 for i in range(10)][:n_epochs] + [learning_rate] * max(0, n_epochs - 10)
    if n_epochs > 100:
        halvings, length = (10, 10) if n_epochs > 300 else (10, 5)
        rates = rates[: -halvings * length]
        for _ in range(halvings):
            rates += [rates[-1] / 2] * length
    return rates


def plan_epochs(seconds: float, step_s: float, *, test_every: int = 10) -> tuple[int, int]:
    """Cellpose epochs and batches per epoch that fill ``seconds`` at ``step_s`` per batch.

    ``train_seg`` anneals only with ``n_epochs > 100``, so epochs are made as short as needed
    (whole batches) to keep ``n_epochs`` between :data:`MIN_ANNEALED_EPOCHS` and
    :data:`MAX_EPOCHS`; a test-loss batch every ``test_every`` epochs is paid for. When fewer
    steps than :data:`MIN_ANNEALED_EPOCHS` fit, the plan still has that many one-batch epochs;
    the training job follows the schedule by elapsed time (see ``train``), so its shape and the
    decay at the end of the budget do not depend on how many steps fit.
    """
    steps = seconds / step_s
    per_epoch = max(1, int(steps // MIN_ANNEALED_EPOCHS))
    n_epochs = int(steps / (per_epoch + TEST_LOSS_COST / test_every))
    return max(MIN_ANNEALED_EPOCHS, min(n_epochs, MAX_EPOCHS)), per_epoch


def train(spec):
    torch = _setup(spec["threads"])
    import numpy as np
    from cellpose import dynamics, models
    from cellpose import train as cp_train

    deadline = PROCESS_START + spec["budget_s"]
    np.random.seed(spec.get("seed", 0))
    torch.manual_seed(spec.get("seed", 0))
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
                  rescale=True, bsize=int(spec["bsize"]), save_every=10**9)
    model_dir = Path(spec["model_dir"])
    model_dir.mkdir(parents=True, exist_ok=True)
    original_loss = cp_train._loss_fn_seg
    real_adamw = torch.optim.AdamW

    # Probe on a throw-away copy: Cellpose's preparation of a slice of the data, then
    # PROBE_STEPS batches; the intervals between loss calls after the first are full steps
    # (backward, optimiser, next batch and its augmentation, forward).
    (model_dir / "probe").mkdir(exist_ok=True)
    probe_net = copy.deepcopy(model.net)
    calls, prepared = [], []
    original_prepare = cp_train._process_train_test

    def timed_loss(lbl, y, device):
        calls.append(time.perf_counter())
        return original_loss(lbl, y, device)

    def timed_prepare(*args, **kwargs):  # normalisation and diameters of the data, linear in the images
        started = time.perf_counter()
        out = original_prepare(*args, **kwargs)
        prepared.append(time.perf_counter() - started)
        return out

    n_probe = min(len(images), PROBE_STEPS * batch)
    cp_train._loss_fn_seg, cp_train._process_train_test = timed_loss, timed_prepare
    probe_started = time.perf_counter()
    try:
        cp_train.train_seg(probe_net, train_data=images[:n_probe], train_labels=flows[:n_probe], n_epochs=1,
                           nimg_per_epoch=PROBE_STEPS * batch, save_path=str(model_dir / "probe"),
                           model_name="probe", **common)
    finally:
        cp_train._loss_fn_seg, cp_train._process_train_test = original_loss, original_prepare
    probe_s = time.perf_counter() - probe_started
    step_s = (calls[-1] - calls[1]) / max(len(calls) - 2, 1)
    prepare_s = prepared[0] * (len(images) + len(val_images)) / n_probe
    del probe_net
    remaining = deadline - time.time()
    seconds = 0.98 * (remaining - prepare_s) - 10  # 2% and 10 s for Cellpose's saving and the hard stop
    n_epochs, per_epoch = plan_epochs(seconds, step_s)
    seg_epoch = per_epoch * EPOCH_HEADROOM   # batches in each of train_seg's epochs
    expected_steps = seconds / step_s
    log(f"probe: {step_s:.2f} s per batch of {batch}, data preparation ~{prepare_s:.0f} s; {remaining:.0f} s left "
        f"(~{expected_steps:.0f} steps) -> a schedule of {n_epochs} epochs over the time left (the rate decays in "
        f"its last 50), followed by elapsed time; train_seg gets {n_epochs} epochs x {seg_epoch} batch(es) "
        f"(nimg_per_epoch {seg_epoch * batch}) and the hard stop at the budget ends it")

    optimizers, steps, losses, lrs = [], [0], [], []

    class RecordingAdamW(real_adamw):  # train_seg's own optimiser, kept so each step's lr can be read
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            optimizers.append(self)

    schedule = cellpose_schedule(spec["learning_rate"], n_epochs)
    mismatches = [0]

    def guarded_loss(lbl, y, device):
        now = time.time()
        if now > deadline:
            raise BudgetExhausted
        if y.requires_grad:  # a training batch: train_seg has set its epoch's rate, the step follows the loss
            groups = optimizers[-1].param_groups
            if steps[0] % seg_epoch == 0:  # train_seg sets the rate at each of its epochs' starts
                mismatches[0] += not math.isclose(groups[0]["lr"], schedule[min(steps[0] // seg_epoch, n_epochs - 1)],
                                                  rel_tol=1e-6)
            # the schedule by elapsed time: its shape and the end of its decay are tied to the budget,
            # not to a step count planned from the probe
            rate = float(schedule[min(int(n_epochs * (now - train_started) / (deadline - train_started)), n_epochs - 1)])
            for group in groups:
                group["lr"] = rate
            lrs.append(rate)
        loss = original_loss(lbl, y, device)
        if y.requires_grad:
            steps[0] += 1
            losses.append(float(loss.detach()))
        return loss

    cp_train._loss_fn_seg = guarded_loss
    torch.optim.AdamW = RecordingAdamW
    train_started = time.time()
    stopped = False
    try:
        filename, _, _ = cp_train.train_seg(
            model.net, train_data=images, train_labels=flows, test_data=val_images, test_labels=val_flows,
            n_epochs=n_epochs, nimg_per_epoch=seg_epoch * batch, nimg_test_per_epoch=batch,
            save_path=str(model_dir), model_name="cellpose_scratch", **common)
        path = Path(filename)
    except BudgetExhausted:
        stopped = True
        (model_dir / "models").mkdir(exist_ok=True)
        path = model_dir / "models" / "cellpose_scratch"
        model.net.save_model(str(path))
        log(f"budget reached after {steps[0]} steps (~{expected_steps:.0f} expected from the probe) (lr {lrs[-1] if lrs else 0:.6f}): "
            "training stopped, network saved as it is")
    finally:
        cp_train._loss_fn_seg = original_loss
        torch.optim.AdamW = real_adamw
    finished = time.time()
    peak_lr = max(lrs, default=math.nan)
    log(f"trained {steps[0]} steps in {finished - train_started:.0f} s; lr first {lrs[0] if lrs else math.nan:.6f}, "
        f"peak {peak_lr:.6f}, last {lrs[-1] if lrs else math.nan:.6f} (the schedule by elapsed time); "
        f"{mismatches[0]} epoch start(s) where train_seg's rate differed from cellpose_schedule; "
        f"{finished - PROCESS_START:.0f} s of the {spec['budget_s']:.0f} s budget used")
    write_result(spec, {
        "model": str(path), "train_wall_s": finished - PROCESS_START, "flows_s": flows_s, "probe_s": probe_s,
        "probe_step_s": step_s, "prepare_s_estimate": prepare_s, "loop_s": finished - train_started,
        "planned_epochs": n_epochs, "batches_per_epoch": seg_epoch, "planned_batches": n_epochs * seg_epoch,
        "schedule_epochs": n_epochs, "schedule_by": "elapsed time",
        "batches_done": steps[0], "steps_done": steps[0], "batch_size": batch, "images_seen": steps[0] * batch,
        "stopped_at_budget": stopped, "expected_steps": expected_steps, "train_losses": losses, "lr_per_step": lrs,
        "lr_steps_led_by_time": len(lrs), "lr_schedule_mismatches": mismatches[0],
        "lr_peak": peak_lr, "lr_last": lrs[-1] if lrs else None,
        "annealed": bool(lrs) and lrs[-1] <= peak_lr / 100,
        "loss_first": sum(losses[:3]) / max(len(losses[:3]), 1) if losses else None,
        "loss_last": sum(losses[-3:]) / max(len(losses[-3:]), 1) if losses else None,
        "diam_labels": float(model.net.diam_labels.item()), "diam_mean": float(model.net.diam_mean.item()),
        "params": int(sum(p.numel() for p in model.net.parameters())), "peak_rss_mb": peak_rss_mb(),
        "settings": {**{k: v for k, v in common.items() if k != "save_every"}, "optimizer": "AdamW (train_seg default)",
                     "n_epochs": n_epochs, "nimg_per_epoch": seg_epoch * batch, "nimg_test_per_epoch": batch},
    })


def _load(spec):
    torch = _setup(spec["threads"])
    from cellpose import models

    return models.CellposeModel(gpu=False, pretrained_model=spec["model"], device=torch.device("cpu"))


def _segment(model, image, *, flow_threshold: float = 0.4, cellprob_threshold: float = 0.0):
    """Cellpose's ``eval`` at the training-set mean diameter (``diam_labels``) with the given thresholds."""
    return model.eval(image, channels=[0, 0], diameter=float(model.diam_labels), flow_threshold=flow_threshold,
                      cellprob_threshold=cellprob_threshold, progress=None)[0]


def _thresholds(spec) -> dict[str, float]:
    return {"flow_threshold": float(spec["flow_threshold"]), "cellprob_threshold": float(spec["cellprob_threshold"])}


def pooled_f1_mean(truths, predictions) -> tuple[float, float]:
    """Pooled F1 averaged over IoU 0.50:0.95 and pooled F1 at 0.5 (Cellpose's matching counts)."""
    from cellpose import metrics

    _, tp, fp, fn = metrics.average_precision(truths, predictions, threshold=list(IOU_THRESHOLDS))
    tp, fp, fn = tp.sum(0), fp.sum(0), fn.sum(0)
    f1 = 2 * tp / (2 * tp + fp + fn)
    return float(f1.mean()), float(f1[0])


def tune(spec):
    """``flow_threshold`` and ``cellprob_threshold`` on the validation images (network run once per image)."""
    started = time.perf_counter()
    model = _load(spec)  # sets the threads
    import numpy as np
    import torch
    from cellpose import dynamics

    images, truths = read_pairs(spec["data"], spec["val"])
    diameter = float(model.diam_labels)
    rescale = float(model.diam_mean) / diameter
    niter = 1 / rescale * 200  # what eval uses with resample=True
    outputs = []
    for image in images:
        _, (_, dP, cellprob), _ = model.eval(image, channels=[0, 0], diameter=diameter, compute_masks=False,
                                             progress=None)
        outputs.append((dP, cellprob))
    network_s = time.perf_counter() - started

    def decode(dP, cellprob, flow_threshold, cellprob_threshold):
        return dynamics.resize_and_compute_masks(dP, cellprob, niter=niter, cellprob_threshold=cellprob_threshold,
                                                 flow_threshold=flow_threshold, interp=True, min_size=15,
                                                 max_size_fraction=0.4, device=torch.device("cpu"))

    # the decoding here must be eval's: compare on the first image with the defaults
    same = bool(np.array_equal(decode(*outputs[0], 0.4, 0.0), _segment(model, images[0])))
    rows = []
    for flow_threshold in FLOW_GRID:
        for cellprob_threshold in CELLPROB_GRID:
            predictions = [decode(dP, cp, flow_threshold, cellprob_threshold) for dP, cp in outputs]
            f1_mean, f1_05 = pooled_f1_mean([t.astype(np.int32) for t in truths], predictions)
            rows.append({"flow_threshold": flow_threshold, "cellprob_threshold": cellprob_threshold,
                         "f1_mean": f1_mean, "f1_0.5": f1_05, "n_pred": int(sum(p.max() for p in predictions))})
            log(f"tune: flow {flow_threshold} cellprob {cellprob_threshold}: F1 mean {f1_mean:.4f}, F1@0.5 {f1_05:.4f}")
    default = next(r for r in rows if r["flow_threshold"] == 0.4 and r["cellprob_threshold"] == 0.0)
    best = max(rows, key=lambda r: (r["f1_mean"], r["f1_0.5"], r is default))  # ties keep Cellpose's defaults
    log(f"tune: best flow_threshold {best['flow_threshold']}, cellprob_threshold {best['cellprob_threshold']} "
        f"(F1 mean {default['f1_mean']:.4f} with the defaults -> {best['f1_mean']:.4f}); eval-equivalent decoding: {same}")
    write_result(spec, {"parameters": {"flow_threshold": best["flow_threshold"],
                                       "cellprob_threshold": best["cellprob_threshold"]},
                        "objective": "f1_mean", "value": best["f1_mean"], "before": default["f1_mean"],
                        "grid": rows, "samples": spec["val"], "diameter": diameter, "network_s": network_s,
                        "seconds": time.perf_counter() - started, "decoding_matches_eval": same})


def predict(spec):
    model = _load(spec)
    predict_test_images(spec, lambda image: _segment(model, image, **_thresholds(spec)))


def speed(spec):
    logging.disable(logging.INFO)
    model = _load(spec)
    timer = StageTimer()
    model._compute_masks = timer.wrap(model._compute_masks)  # eval looks it up on the instance
    time_speed_image(spec, lambda image: _segment(model, image, **_thresholds(spec)), decode_timer=timer)


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
    {"train": train, "tune": tune, "predict": predict, "speed": speed, "flops": flops,
     "versions": versions}[command](job)
