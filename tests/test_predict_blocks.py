"""``fluoseg predict`` of instance models block by block: equal to whole-image decoding, resumable."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import zarr

from fluoseg.cli import main
from fluoseg.infer import PredictOptions, Segmenter
from fluoseg.io import read_image, write_image
from fluoseg.predict import BlockOptions, default_halo, output_paths, predict_file, work_folder

SRC = Path(__file__).resolve().parents[1] / "src"
BLOCKS = ["--block-size", "16", "--halo", "24"]


@pytest.fixture(scope="module")
def nuclei(tmp_path_factory):
    """A tiny threshold nuclei run and a 128x192 image of nuclei (24 blocks of 16x16 px, ~25 objects)."""
    from support import make_tiny_nuclei, train_nuclei_run

    root = tmp_path_factory.mktemp("blocks")
    run = train_nuclei_run(root / "train", instance={"method": "threshold", "min_size": 5}, val=["n4"], epochs=3)
    row = np.concatenate([make_tiny_nuclei(seed)[0] for seed in (11, 12, 13)], axis=2)
    image = root / "big.tif"
    write_image(image, np.concatenate([row, row[:, ::-1]], axis=1), axes="CYX", channel_names=["DNA"])
    return run, image


def labels_of(path: Path) -> np.ndarray:
    return np.asarray(read_image(path).array)[0]


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    return pairs.shape[1] == len(np.unique(a)) == len(np.unique(b)) and bool(np.all((a == 0) == (b == 0)))


@pytest.fixture(scope="module")
def whole(nuclei, tmp_path_factory):
    """Labels and maps of whole-image decoding (TIFF output of a small image)."""
    run, image = nuclei
    out = tmp_path_factory.mktemp("whole")
    assert main(["predict", str(run), str(image), "--out", str(out), "--probabilities", "--quiet"]) == 0
    return labels_of(out / "big.tif"), np.asarray(read_image(out / "big_probabilities.tif").array)


@pytest.fixture(scope="module")
def blockwise(nuclei, tmp_path_factory):
    """The output folder of a single-process blockwise prediction (Zarr labels and probabilities)."""
    run, image = nuclei
    out = tmp_path_factory.mktemp("blockwise")
    assert main(["predict", str(run), str(image), "--out", str(out), "--format", "zarr", "--probabilities",
                 "--objects", *BLOCKS, "--quiet"]) == 0
    return out


def test_zarr_output_is_decoded_blockwise_and_equals_whole_image(blockwise, whole):
    tmp_path = blockwise
    labels = labels_of(tmp_path / "big.zarr")
    assert whole[0].max() >= 15 and same_partition(labels, whole[0])
    assert np.array_equal(np.unique(labels), np.arange(labels.max() + 1))
    assert np.allclose(np.asarray(read_image(tmp_path / "big_probabilities.zarr").array), whole[1], atol=1e-6)
    zarr_array = read_image(tmp_path / "big.zarr", lazy=True).array
    assert not work_folder(tmp_path / "big.zarr").exists()
    assert (tmp_path / "big_objects.csv").read_text().count("\n") == labels.max() + 1  # header + one row per object
    assert tuple(getattr(zarr_array, "chunks", (1, 16, 16)))[-2:] == (16, 16)  # one block, one chunk


def test_large_images_are_decoded_blockwise_in_any_format(nuclei, whole, tmp_path):
    run, image = nuclei
    segmenter = Segmenter.load(run, device="cpu")
    paths = output_paths([image], tmp_path, fmt="tif", probabilities=False, objects=True)[0]
    calls = []
    blocks = BlockOptions(block_size=32, halo=24, min_pixels=100)
    from fluoseg.instance import blockjobs

    original = blockjobs.decode_job_block
    try:
        blockjobs.decode_job_block = lambda job, index: calls.append(index) or original(job, index)
        predict_file(segmenter, image, paths, PredictOptions(), blocks=blocks)
    finally:
        blockjobs.decode_job_block = original
    assert sorted(calls) == list(range(4 * 6))
    labels = labels_of(paths.masks)
    assert labels.dtype == np.uint16 and same_partition(labels, whole[0])
    assert paths.objects.read_text().count("\n") == labels.max() + 1  # header + one row per object
    assert default_halo(segmenter.task) == 64


def killing_script(run: Path, image: Path, out: Path, after: int) -> str:
    """A child that predicts and kills itself with SIGKILL when ``after`` blocks are finished."""
    return textwrap.dedent(f"""
        import os, signal
        from fluoseg.instance import blockjobs
        from fluoseg.cli import main

        original, done = blockjobs.decode_job_block, []
        def decode(job, index):
            if len(done) == {after}:
                os.kill(os.getpid(), signal.SIGKILL)
            done.append(original(job, index))
        blockjobs.decode_job_block = decode
        main(["predict", {str(run)!r}, {str(image)!r}, "--out", {str(out)!r}, "--format", "zarr",
              "--block-size", "16", "--halo", "24", "--quiet"])
    """)


def test_resume_after_sigkill_gives_the_uninterrupted_output(nuclei, whole, blockwise, tmp_path, capsys):
    run, image = nuclei
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    child = subprocess.run([sys.executable, "-c", killing_script(run, image, out, after=7)], env=env,
                           capture_output=True, text=True, timeout=300)
    assert child.returncode == -signal.SIGKILL, child.stderr
    work = work_folder(out / "big.zarr")
    assert not (out / "big.zarr").exists() and len(list((work / "blocks").glob("*.npz"))) == 7

    assert main(["predict", str(run), str(image), "--out", str(out), "--format", "zarr", *BLOCKS]) == 2
    assert "--resume" in capsys.readouterr().err  # progress is never thrown away silently
    assert main(["predict", str(run), str(image), "--out", str(out), "--format", "zarr", "--block-size", "16",
                 "--halo", "20", "--resume"]) == 2
    assert "other settings (halo)" in capsys.readouterr().err

    from fluoseg.instance import blockjobs

    calls, original = [], blockjobs.decode_job_block
    try:
        blockjobs.decode_job_block = lambda job, index: calls.append(index) or original(job, index)
        assert main(["predict", str(run), str(image), "--out", str(out), "--format", "zarr", *BLOCKS, "--resume",
                     "--quiet"]) == 0
    finally:
        blockjobs.decode_job_block = original
    assert sorted(calls) == list(range(7, 8 * 12))  # the finished blocks were not decoded again
    assert not work.exists()
    assert np.array_equal(labels_of(out / "big.zarr"), labels_of(blockwise / "big.zarr"))  # uninterrupted run
    assert same_partition(labels_of(out / "big.zarr"), whole[0])
    assert main(["predict", str(run), str(image), "--out", str(out), "--format", "zarr", "--resume"]) == 0
    assert "done before" in capsys.readouterr().out  # a finished output is kept by --resume


def test_two_dask_workers_give_the_single_process_output(nuclei, blockwise, tmp_path, capsys, caplog):
    import logging

    caplog.set_level(logging.INFO, logger="fluoseg.predict")
    run, image = nuclei
    single, workers = blockwise, tmp_path / "workers"
    assert main(["predict", str(run), str(image), "--out", str(workers), "--format", "zarr", *BLOCKS, "--quiet",
                 "--workers", "2", "--band-rows", "32", "--probabilities"]) == 0
    assert np.array_equal(labels_of(workers / "big.zarr"), labels_of(single / "big.zarr"))
    # the network ran on the workers in 4 bands of rows, and its maps equal one process's bit for bit
    assert "4 bands of the network pass on the workers" in caplog.text
    assert np.array_equal(read_image(workers / "big_probabilities.zarr").array[...],
                          read_image(single / "big_probabilities.zarr").array[...])
    assert not work_folder(workers / "big.zarr").exists()
    with pytest.raises(SystemExit):
        main(["predict", str(run), str(image), "--out", str(workers), "--workers", "2", "--scheduler", "tcp://x:1"])
    assert "not allowed with argument" in capsys.readouterr().err


def test_kill_before_the_maps_were_complete_predicts_them_again(nuclei, blockwise, tmp_path):
    run, image = nuclei
    out = tmp_path / "out"
    script = textwrap.dedent(f"""
        import os, signal
        from fluoseg.instance.blockjobs import BlockJob
        from fluoseg.cli import main

        BlockJob.mark_maps_done = lambda job: os.kill(os.getpid(), signal.SIGKILL)
        main(["predict", {str(run)!r}, {str(image)!r}, "--out", {str(out)!r}, "--format", "zarr",
              "--block-size", "16", "--halo", "24", "--quiet"])
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    child = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert child.returncode == -signal.SIGKILL, child.stderr
    work = work_folder(out / "big.zarr")
    assert (work / "maps.zarr").exists() and not (work / "maps.done").exists()
    assert not list((work / "blocks").glob("*.npz"))
    assert main(["predict", str(run), str(image), "--out", str(out), "--format", "zarr", *BLOCKS, "--resume",
                 "--quiet"]) == 0
    assert np.array_equal(labels_of(out / "big.zarr"), labels_of(blockwise / "big.zarr"))


def test_stitched_3d_zarr_stack_blockwise_equals_whole_stack(nuclei, tmp_path):
    run, image = nuclei
    plane = np.asarray(read_image(image).array)[:, :64, :96]
    stack = tmp_path / "stack.ome.zarr"  # nuclei drifting one pixel per slice: 3D objects through 6 planes
    write_image(stack, np.stack([np.roll(plane, k, axis=-1) for k in range(6)], axis=1), axes="CZYX",
                channel_names=["DNA"])
    assert main(["predict", str(run), str(stack), "--out", str(tmp_path / "whole"), "--format", "tif", "--quiet"]) == 0
    assert main(["predict", str(run), str(stack), "--out", str(tmp_path / "blocks"), "--format", "zarr", *BLOCKS,
                 "--block-depth", "2", "--quiet"]) == 0
    whole, blocks = labels_of(tmp_path / "whole" / "stack.tif"), labels_of(tmp_path / "blocks" / "stack.zarr")
    assert blocks.shape == whole.shape == (6, 64, 96)
    spans = np.array([np.unique(np.nonzero(whole == i)[0]).size for i in range(1, whole.max() + 1)])
    assert whole.max() >= 8 and (spans == 6).sum() >= 4  # objects cross all three z-blocks
    assert same_partition(blocks, whole)
    assert zarr.open_array(str(tmp_path / "blocks" / "stack.zarr" / "0"), mode="r").chunks == (2, 16, 16)


def test_3d_stack_blockwise_equals_whole_stack(nuclei, tmp_path):
    run, image = nuclei
    plane = np.asarray(read_image(image).array)[:, :64, :96]
    stack = tmp_path / "stack.tif"
    write_image(stack, np.stack([plane, plane[:, ::-1], plane[:, :, ::-1]], axis=1), axes="CZYX",
                channel_names=["DNA"])
    assert main(["predict", str(run), str(stack), "--out", str(tmp_path / "whole"), "--quiet",
                 "--stitch-threshold", "0"]) == 0  # one object per slice, blockwise too
    assert main(["predict", str(run), str(stack), "--out", str(tmp_path / "blocks"), "--format", "zarr", *BLOCKS,
                 "--stitch-threshold", "0", "--quiet"]) == 0
    whole, blocks = labels_of(tmp_path / "whole" / "stack.tif"), labels_of(tmp_path / "blocks" / "stack.zarr")
    assert blocks.shape == whole.shape == (3, 64, 96) and whole.max() >= 10
    assert same_partition(blocks, whole)  # slice-wise decoders: no object spans two planes in either


def test_channel_invariant_run_with_an_unknown_marker_is_decoded_blockwise_as_whole(tmp_path):
    from support import CHANNEL_INVARIANT, make_tiny_nuclei, train_nuclei_run

    run = train_nuclei_run(tmp_path / "train", instance={"method": "threshold", "min_size": 5}, val=["n4"],
                           epochs=3, model_options=CHANNEL_INVARIANT)
    dna = np.concatenate([make_tiny_nuclei(seed)[0] for seed in (11, 12)], axis=2)
    image = tmp_path / "two.tif"  # DNA and a membrane-like ring around the nuclei, a marker the run never saw
    ring = np.clip(np.abs(np.diff(dna.astype(np.int16), axis=2, append=0)), 0, 255).astype(np.uint8)
    write_image(image, np.concatenate([dna, ring]), axes="CYX", channel_names=["DNA", "E-cadherin"])
    outputs = {}
    for kind, extra in (("whole", []), ("blocks", ["--format", "zarr", *BLOCKS])):
        out = tmp_path / kind
        assert main(["predict", str(run), str(image), "--out", str(out), "--markers", "DNA,E-cadherin",
                     "--probabilities", "--quiet", *extra]) == 0
        outputs[kind] = out
    whole, blocks = labels_of(outputs["whole"] / "two.tif"), labels_of(outputs["blocks"] / "two.zarr")
    assert whole.shape == (64, 128) and whole.max() >= 3 and same_partition(blocks, whole)
    assert np.allclose(np.asarray(read_image(outputs["blocks"] / "two_probabilities.zarr").array),
                       np.asarray(read_image(outputs["whole"] / "two_probabilities.tif").array), atol=1e-6)


class InlineClient:
    """Dask's client calls that :func:`fluoseg.cluster.run_tasks` makes, run in this process:
    the distributed path, interruptible and observable in a test."""

    def scatter(self, data, **_):
        return data

    def map(self, function, *iterables, **_):
        return [function(*args) for args in zip(*iterables)]

    def gather(self, futures):
        return futures

    def nthreads(self):
        return {"inline": 1}


def test_resume_keeps_the_bands_of_an_interrupted_distributed_network_pass(nuclei, blockwise, tmp_path, monkeypatch):
    from fluoseg.network_pass import NetworkPass

    run, image = nuclei
    segmenter = Segmenter.load(run, device="cpu")
    paths = output_paths([image], tmp_path, fmt="zarr", probabilities=False)[0]
    blocks = BlockOptions(block_size=16, halo=24, client=InlineClient(), band_rows=32)
    bands: list[tuple[int, int]] = []
    original = NetworkPass.run

    def interrupted_after_two(self, image, out=None, *, rows=None, planes=None, progress=False):
        if len(bands) == 2:
            raise KeyboardInterrupt
        bands.append(rows)
        return original(self, image, out, rows=rows, planes=planes, progress=progress)

    monkeypatch.setattr(NetworkPass, "run", interrupted_after_two)
    with pytest.raises(KeyboardInterrupt):
        predict_file(segmenter, image, paths, PredictOptions(), blocks=blocks)
    work = work_folder(paths.masks)
    assert sorted(p.name for p in (work / "bands").iterdir()) == ["0.done", "1.done"]
    assert not (work / "maps.done").exists()

    bands.clear()
    monkeypatch.setattr(NetworkPass, "run", lambda self, *a, **k: bands.append(k["rows"]) or original(self, *a, **k))
    resume = BlockOptions(block_size=16, halo=24, client=InlineClient(), band_rows=32, resume=True)
    predict_file(segmenter, image, paths, PredictOptions(), blocks=resume)
    assert bands == [(64, 96), (96, 128)]  # the finished bands were not predicted again
    assert np.array_equal(labels_of(paths.masks), labels_of(blockwise / "big.zarr"))
    assert not work.exists()
