"""With heterogeneous panels the network never sees a marker its sample was not stained with."""

import numpy as np
import torch

from fluoseg.experiments.panels import write_manifest_with_available
from fluoseg import run as run_module
from fluoseg.train.trainer import train

MS = {"marker_input": "ms"}

PANELS = {"s0": ["m1"], "s1": ["m2", "m3"], "s2": ["m1", "m3"], "s3": ["m1", "m2"], "s4": ["m3"]}
SLOTS = ("m1", "m2", "m3")


def vector(markers):
    return tuple(float(m in markers) for m in SLOTS)


def test_marker_sampling_draws_only_from_available_markers(experiment_config, tiny_dataset, tmp_path, monkeypatch):
    manifest = write_manifest_with_available(tiny_dataset, PANELS, tmp_path / "het.yaml")
    _, config = experiment_config(options=MS, manifest=manifest, epochs=2, steps_per_epoch=3)
    seen = []
    original = run_module.build_model

    def spied_build_model(*args, **kwargs):
        model = original(*args, **kwargs)

        def spy(module, inputs, outputs):
            (x_in, available_in), (x_out, available_out) = inputs, outputs
            seen.append((module.training, x_in.detach().clone(), available_in.detach().clone(),
                         x_out.detach().clone(), available_out.detach().clone()))

        model.marker_input.register_forward_hook(spy)
        return model

    monkeypatch.setattr(run_module, "build_model", spied_build_model)
    train(config, tmp_path / "run", progress=False)

    training = [s for s in seen if s[0]]
    assert len(training) == 2 * 3  # every training step went through the marker input layer
    train_panels = {vector(PANELS[i]) for i in ("s0", "s1", "s2")}  # s3 validates, s4 tests
    sampled = False
    for _, x_in, available_in, x_out, available_out in training:
        for i in range(x_in.shape[0]):
            assert tuple(available_in[i].tolist()) in train_panels
            absent = available_in[i] == 0
            assert torch.all(x_in[i][absent] == 0)  # the trainer zero-filled unavailable markers
            dropped = available_out[i] == 0
            assert torch.all(x_out[i][dropped] == 0)  # MS output: nothing outside the kept markers
            assert torch.all(available_out[i] <= available_in[i]) and available_out[i].sum() >= 1
            sampled |= bool(torch.any(available_out[i] != available_in[i]))
    assert sampled  # MS did drop markers among the available ones
    validation = [s for s in seen if not s[0]]
    assert validation and all(tuple(a[0].tolist()) == vector(PANELS["s3"]) for _, _, a, _, _ in validation)
    # the files do hold signal in the slots that were hidden
    from fluoseg.data.manifest import load_manifest

    image = np.asarray(load_manifest(manifest).sample("s0").read_image().array)
    assert image[1].max() > 0 and image[2].max() > 0
