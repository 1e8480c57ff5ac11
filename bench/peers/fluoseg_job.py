"""fluoseg measurement jobs for bench/peers.py; runs in fluoseg's own .venv, one fresh process
per measurement so ``ru_maxrss`` is the peak of that measurement alone.

Commands (spec keys in brackets):

* ``speed``  [run or pretrained, image, warmup_image, channels, repeats, threads, mode, diameter, five_channel,
  result]
  numpy image in memory -> instance labels (``Segmenter.predict_labels`` with the scored
  diameter mode, ``auto`` for a scale-normalised model, and the run's tuned decoding; mode
  ``labels``; the decoding, ``Segmenter.decode``, is timed apart from the rest) or
  -> activated maps only (``predict_probabilities``; mode ``probabilities``, the network and
  the overlap-tile stitching without decoding). ``five_channel``: a 5-marker model derived
  from the trained one (its first-layer weights spread over the 5 slots; speed only).
* ``stream`` [run, zarr, out, warmup_image, threads, mode, result]  Zarr in -> Zarr out:
  mode ``probabilities`` streams ``predict_probabilities(out=zarr)`` (fluoseg's streamed path),
  mode ``predict_file`` runs ``fluoseg.predict.predict_file`` for the instance run (what
  ``fluoseg predict --format zarr`` does), which decodes labels of the whole image.
* ``flops``  [run or pretrained, threads, tile, image_size, result]  FLOPs of one tile with
  ``torch.utils.flop_counter.FlopCounterMode``, the tile plan of an image, and the measured
  fp32 matmul and 3x3-convolution FLOP/s of this machine at ``threads`` threads.

The speed rows use the configuration that was scored (issue 11): ``diameter="auto"`` for a
scale-normalised model runs the diameter-estimating first pass and the rescaled second one,
as ``fluoseg predict`` did on the test images. The Zarr scaling rows (``stream``) measure
the streamed paths at the image's scale (``diameter="off"``): memory, not the scored speed.

``pretrained`` (a shipped model's name, e.g. ``nuclei``) replaces ``run``: the model exactly as
``fluoseg predict nuclei`` loads it (its tuned decoding and blank-field check included).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import StageTimer, load_spec, peak_rss_mb, time_runs, write_result  # noqa: E402

FIVE = ["DNA", "M2", "M3", "M4", "M5"]


def _segmenter(spec):
    import torch

    from fluoseg.infer import Segmenter

    torch.set_num_threads(spec["threads"])
    torch.set_num_interop_threads(1)
    if spec.get("pretrained"):
        return Segmenter.pretrained(spec["pretrained"], device="cpu")
    if spec.get("five_channel"):
        return _five_channel(spec["run"])
    return Segmenter.load(spec["run"], device="cpu")


def _five_channel(run):
    """The trained 1-marker network widened to 5 marker slots (first-layer weights / 5 in each)."""
    from dataclasses import replace

    from fluoseg.infer import Member, Segmenter
    from fluoseg.run import RunDir

    run_dir = RunDir.open(run)
    trained = run_dir.load(run_dir.members()[0])
    spec = replace(trained.model, in_channels=len(FIVE))
    widened = spec.build().state_dict()
    for key, value in trained.weights.items():
        if widened[key].shape == value.shape:
            widened[key] = value
        elif value.ndim == 4 and value.shape[1] == 1 and widened[key].shape[1] == len(FIVE):
            widened[key] = value.repeat(1, len(FIVE), 1, 1) / len(FIVE)
    checkpoint = replace(trained, model=spec, markers=tuple(FIVE), weights=widened)
    segmenter = Segmenter([Member.from_checkpoint(checkpoint, "cpu")])
    tuned = run_dir.decoding(run_dir.members()[0])
    if tuned:  # the decoding the 1-marker run predicts with
        segmenter.set_decoding(**tuned["parameters"])
    return segmenter


def speed(spec):
    import numpy as np

    segmenter = _segmenter(spec)
    names = FIVE if spec.get("five_channel") else ["DNA"]

    def as_cyx(x):
        x = np.asarray(x)
        x = x[None] if x.ndim == 2 else x
        if x.shape[0] != len(names):  # the same image in every marker slot
            x = np.repeat(x[:1], len(names), axis=0)
        return x

    image, warm = as_cyx(np.load(spec["image"])), as_cyx(np.load(spec["warmup_image"]))
    timer = None
    if spec["mode"] == "labels":
        timer = StageTimer()
        segmenter.decode = timer.wrap(segmenter.decode)  # predict_labels and the diameter probe call it
        run = lambda x: segmenter.predict_labels(x, names, diameter=spec["diameter"])[0]  # noqa: E731
    else:
        def run(x):
            out = segmenter.predict_probabilities(x, names)
            return (np.asarray(out)[0] > 0.5).astype(np.uint8)  # "objects": foreground pixels only
    result = time_runs(run, image, repeats=spec["repeats"], warmup_image=warm,
                       max_seconds=spec.get("max_s"), decode_timer=timer)
    from fluoseg.device import resolve_precision

    # the default precision (auto) is what `fluoseg predict` scored with; record what it resolved to
    precision = resolve_precision("auto", next(segmenter.members[0].model.parameters()).device)
    result.update(channels=len(names), diameter=spec["diameter"], precision=precision)
    write_result(spec, result)


def stream(spec):
    import os

    import numpy as np

    from fluoseg.infer import PredictOptions
    from fluoseg.io import create_output, read_image
    from fluoseg.predict import PredictionPaths, predict_file

    segmenter = _segmenter(spec)
    warm = np.load(spec["warmup_image"])[None].astype(np.float32)
    started = time.perf_counter()
    segmenter.predict_labels(warm, ["DNA"], diameter="off")
    warmup_s = time.perf_counter() - started
    rss_warm = peak_rss_mb()
    out = Path(spec["out"])
    image = read_image(spec["zarr"], lazy=True)
    names = list(image.channel_names or ["DNA"])
    shape = tuple(image.array.shape)
    started = time.perf_counter()
    if spec["mode"] == "probabilities":
        n_out = segmenter.members[0].task.activated_channels()
        with create_output(out, shape=(n_out, *shape[1:]), dtype="float32", axes="CYX",
                           channel_names=[f"p{i}" for i in range(n_out)], overwrite=True) as target:
            segmenter.predict_probabilities(image.array, names, out=target.array)
    else:
        predict_file(segmenter, Path(spec["zarr"]), PredictionPaths(masks=out, probabilities=None),
                     PredictOptions(diameter="off"),
                     overwrite=True)
    seconds = time.perf_counter() - started
    megapixels = shape[-1] * shape[-2] / 1e6
    write_result(spec, {"mode": spec["mode"], "size": shape[-1], "megapixels": megapixels, "seconds": seconds,
                        "mp_per_s": megapixels / seconds, "warmup_s": warmup_s, "peak_rss_mb_after_warmup": rss_warm,
                        "peak_rss_mb": peak_rss_mb(), "load_avg_1min": os.getloadavg()[0]})


def _bench(fn, flops, repeats=5):
    import numpy as np

    fn()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return flops / float(np.median(times))


def flops(spec):
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from fluoseg.tiling import plan_tiles

    segmenter = _segmenter(spec)
    member = segmenter.members[0]
    model = member.model
    geometry = segmenter.tile_geometry(member, spec.get("tile"))
    size = geometry.input_size
    x = torch.zeros(1, model.in_channels, size, size)
    availability = torch.ones(1, model.in_channels)
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model(x, availability)
    tile_flops = int(counter.get_total_flops())
    by_op = {str(k): int(v) for k, v in counter.get_flop_counts().get("Global", {}).items()}
    n = int(spec["image_size"])
    tiles = plan_tiles((n, n), geometry)
    per_input_pixel = tile_flops / size**2
    effective = tile_flops * len(tiles) / n**2

    # The network alone on one tile: default (contiguous) vs channels_last memory format.
    def forward(net, tensor):
        with torch.inference_mode():
            net(tensor, availability)

    import copy

    tile_s = _bench(lambda: forward(model, x), 1.0, repeats=3)
    last = copy.deepcopy(model).to(memory_format=torch.channels_last)
    tile_last_s = _bench(lambda: forward(last, x.to(memory_format=torch.channels_last)), 1.0, repeats=3)

    m = 2048
    a, b = torch.randn(m, m), torch.randn(m, m)
    matmul = _bench(lambda: a @ b, 2 * m**3)
    conv = torch.nn.Conv2d(32, 32, 3, padding=1).eval()
    xc = torch.randn(1, 32, 512, 512)
    conv_last = copy.deepcopy(conv).to(memory_format=torch.channels_last)
    xc_last = xc.to(memory_format=torch.channels_last)
    with torch.inference_mode():
        conv3 = _bench(lambda: conv(xc), 2 * 32 * 32 * 9 * 512 * 512)
        conv3_last = _bench(lambda: conv_last(xc_last), 2 * 32 * 32 * 9 * 512 * 512)

    # bfloat16, as `--precision auto` runs on a CPU with AMX/AVX-512 BF16: the tile under autocast
    # (output layer float32, as the predictor does) and the machine's bfloat16 peaks
    from fluoseg.device import native_bfloat16
    from fluoseg.predictor import keep_output_layers_float32

    reduced = {}
    if native_bfloat16(torch.device("cpu")):
        keep_output_layers_float32(last)
        x_last = x.to(memory_format=torch.channels_last)

        def forward_bf16():
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
                last(x_last, availability)

        tile_bf16_s = _bench(forward_bf16, 1.0, repeats=3)
        a16, b16 = a.bfloat16(), b.bfloat16()
        conv16 = copy.deepcopy(conv).bfloat16().to(memory_format=torch.channels_last)
        xc16 = xc.bfloat16().to(memory_format=torch.channels_last)
        with torch.inference_mode():
            reduced = {"tile_forward_bf16_s": 1.0 / tile_bf16_s, "tile_forward_bf16_gflops": tile_flops * tile_bf16_s / 1e9,
                       "matmul_bf16_gflops": _bench(lambda: a16 @ b16, 2 * m**3) / 1e9,
                       "conv3x3_bf16_gflops": _bench(lambda: conv16(xc16), 2 * 32 * 32 * 9 * 512 * 512) / 1e9}
    write_result(spec, {
        "tile_input": size, "tile_output": geometry.output_size, "tile_flops": tile_flops, "flops_by_op": by_op,
        "flops_per_tile_pixel": per_input_pixel, "image_size": n, "n_tiles": len(tiles),
        "flops_per_image_pixel": effective, "overlap_overhead": effective / per_input_pixel,
        "params": int(sum(p.numel() for p in model.parameters())),
        "matmul_gflops": matmul / 1e9, "matmul_size": m, "conv3x3_gflops": conv3 / 1e9,
        "conv3x3_channels_last_gflops": conv3_last / 1e9,
        "conv3x3_shape": "1x32x512x512, 32->32", "threads": spec["threads"], "torch": torch.__version__,
        "tile_forward_s": 1.0 / tile_s, "tile_forward_channels_last_s": 1.0 / tile_last_s,
        "tile_forward_gflops": tile_flops * tile_s / 1e9, "tile_forward_channels_last_gflops": tile_flops * tile_last_s / 1e9,
        **reduced,
    })


if __name__ == "__main__":
    command, job = load_spec()
    {"speed": speed, "stream": stream, "flops": flops}[command](job)
