"""StarDist 2D jobs for bench/peers.py; runs in bench/work/peers/venv-stardist (tensorflow-cpu).

Commands (spec keys in brackets):

* ``train``   [data, train, val, threads, budget_s, steps_per_epoch, model_dir, result]
  A fresh ``StarDist2D`` (the configuration of StarDist's DSB 2018 example: 32 rays, grid
  (2, 2), U-Net backbone defaults, 256x256 patches, batch 4, Adam 3e-4, ReduceLROnPlateau)
  trained on the images normalised to percentiles 1-99.8, with the example's augmenter
  (flips/transposes, intensity scale 0.6-2 and shift, Gaussian noise). Keras stops at the
  wall-clock budget counted from process start (a callback checked after every batch; the
  interrupted epoch is still validated), then the best-validation-loss weights are loaded as
  StarDist does after training, and the probability/NMS thresholds are optimised on the
  validation images (``optimize_thresholds``, timed separately: StarDist's own calibration step).
* ``predict`` [data, test, threads, model_dir, pred_dir, result]  label TIFF per test image.
* ``speed``   [image, warmup_image, repeats, threads, model_dir, result]  tiles of at most
  2048x2048 (``n_tiles``) so the 8192x8192 image fits in memory; the decoding
  (``_instances_from_prediction``: non-maximum suppression and polygon rendering) is timed
  apart from the rest (normalisation, network, tiling).
* ``versions`` [result]
"""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    PROCESS_START, StageTimer, log, load_spec, peak_rss_mb, predict_test_images, read_pairs, time_speed_image,
    write_result,
)

MODEL_NAME = "stardist_scratch"


def _setup(threads: int):
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    return tf


def _normalize(image):
    from csbdeep.utils import normalize

    return normalize(image.astype("float32"), 1, 99.8, axis=(0, 1))


def _augmenter():
    import numpy as np

    def augment(x, y):
        perm = tuple(np.random.permutation(y.ndim))
        x, y = x.transpose(perm), y.transpose(perm)
        for axis in range(y.ndim):
            if np.random.rand() > 0.5:
                x, y = np.flip(x, axis=axis), np.flip(y, axis=axis)
        x = x * np.random.uniform(0.6, 2) + np.random.uniform(-0.2, 0.2)
        sigma = 0.02 * np.random.uniform(0, 1)
        x = x + sigma * np.random.normal(0, 1, x.shape)
        return x, y

    return augment


def train(spec):
    tf = _setup(spec["threads"])
    import numpy as np
    from csbdeep.utils.tf import keras_import
    from stardist import fill_label_holes
    from stardist.models import Config2D, StarDist2D

    Callback = keras_import("callbacks", "Callback")
    deadline = PROCESS_START + spec["budget_s"]
    np.random.seed(spec.get("seed", 0))
    tf.random.set_seed(spec.get("seed", 0))
    images, labels = read_pairs(spec["data"], spec["train"])
    val_images, val_labels = read_pairs(spec["data"], spec["val"])
    X = [_normalize(x) for x in images]
    Y = [fill_label_holes(y) for y in labels]
    X_val = [_normalize(x) for x in val_images]
    Y_val = [fill_label_holes(y) for y in val_labels]
    config = Config2D(n_rays=32, grid=(2, 2), n_channel_in=1, use_gpu=False, train_patch_size=(256, 256),
                      train_batch_size=4, train_tensorboard=False)
    model_dir = Path(spec["model_dir"])
    model = StarDist2D(config, name=MODEL_NAME, basedir=str(model_dir))

    class Budget(Callback):
        def __init__(self):
            super().__init__()
            self.steps = 0
            self.epochs = 0
            self.stopped = False
            self.losses = []

        def on_train_batch_end(self, batch, logs=None):
            self.steps += 1
            if time.time() > deadline:
                self.stopped = True
                self.model.stop_training = True

        def on_epoch_end(self, epoch, logs=None):
            self.epochs += 1
            self.losses.append(float(logs.get("loss", float("nan"))))
            log(f"epoch {epoch + 1}: {self.steps} steps, loss {logs.get('loss', float('nan')):.4f}, "
                f"val_loss {logs.get('val_loss', float('nan')):.4f}")

    model.prepare_for_training()
    fit = model.keras_model.fit
    model.keras_model.fit = lambda *args, **kwargs: fit(*args, **{**kwargs, "verbose": 2})  # one line per epoch
    budget = Budget()
    model.callbacks.append(budget)
    loop_started = time.time()
    history = model.train(X, Y, validation_data=(X_val, Y_val), augmenter=_augmenter(), seed=spec.get("seed", 0),
                          epochs=100_000, steps_per_epoch=spec["steps_per_epoch"])
    train_wall = time.time() - PROCESS_START
    loop_s = time.time() - loop_started
    started = time.time()
    thresholds = model.optimize_thresholds(X_val, Y_val)
    thresholds_s = time.time() - started
    val_loss = history.history.get("val_loss", [])
    write_result(spec, {
        "model_dir": str(model_dir), "name": MODEL_NAME, "train_wall_s": train_wall, "loop_s": loop_s,
        "steps_done": budget.steps, "epochs_done": budget.epochs, "stopped_at_budget": budget.stopped,
        "images_seen": budget.steps * config.train_batch_size, "batch_size": config.train_batch_size,
        "best_val_loss": float(min(val_loss)) if val_loss else None,
        "val_losses": [float(x) for x in val_loss], "train_losses": budget.losses,
        "loss_first": budget.losses[0] if budget.losses else None, "loss_last": budget.losses[-1] if budget.losses else None,
        "best_epoch": int(np.argmin(val_loss)) + 1 if val_loss else None,
        "optimize_thresholds_s": thresholds_s, "thresholds": {k: float(v) for k, v in thresholds.items()},
        "params": int(model.keras_model.count_params()), "peak_rss_mb": peak_rss_mb(),
        "settings": {"n_rays": 32, "grid": [2, 2], "patch": 256, "batch_size": 4,
                     "learning_rate": float(config.train_learning_rate), "steps_per_epoch": spec["steps_per_epoch"],
                     "reduce_lr": dict(config.train_reduce_lr)},
    })


def _load(spec):
    _setup(spec["threads"])
    from stardist.models import StarDist2D

    return StarDist2D(None, name=MODEL_NAME, basedir=spec["model_dir"])


def _segment(model, image):
    tiles = tuple(max(1, math.ceil(s / 2048)) for s in image.shape)
    n_tiles = tiles if max(tiles) > 1 else None
    labels, _ = model.predict_instances(_normalize(image), n_tiles=n_tiles, show_tile_progress=False, verbose=False)
    return labels


def predict(spec):
    model = _load(spec)
    predict_test_images(spec, lambda image: _segment(model, image))


def speed(spec):
    model = _load(spec)
    timer = StageTimer()
    model._instances_from_prediction = timer.wrap(model._instances_from_prediction)  # looked up on the instance
    time_speed_image(spec, lambda image: _segment(model, image), decode_timer=timer)


def versions(spec):
    import csbdeep
    import keras
    import numpy
    import stardist
    import tensorflow as tf

    write_result(spec, {"stardist": stardist.__version__, "csbdeep": csbdeep.__version__, "tensorflow": tf.__version__,
                        "keras": keras.__version__, "numpy": numpy.__version__, "python": sys.version.split()[0]})


if __name__ == "__main__":
    command, job = load_spec()
    {"train": train, "predict": predict, "speed": speed, "versions": versions}[command](job)
