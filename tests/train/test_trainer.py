import csv
import json

import pytest
import torch

from fluoseg.config import load_config
from fluoseg.errors import FluosegError
from fluoseg.train import trainer as trainer_module
from fluoseg.train.checkpoint import load_checkpoint
from fluoseg.train.trainer import train


def weights(path):
    return load_checkpoint(path)["model_state"]


def same_weights(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def test_run_directory_contents(tiny_config, tmp_path):
    run = train(load_config(tiny_config), tmp_path / "run", progress=False)
    assert json.loads((run / "run.json").read_text()) == {"members": ["model"]}
    assert (run / "config.yaml").is_file()
    rows = list(csv.DictReader((run / "model" / "metrics.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert {"train_loss", "val_f1_blob", "val_f1_bar", "val_mean_f1"} <= set(rows[0])
    state = load_checkpoint(run / "model" / "best.pt")
    assert state["markers"] == ["m1", "m2", "m3"] and state["classes"] == ["blob", "bar"]
    assert state["preprocess"]["normalization"] == "gaussian"
    assert state["model"]["out_channels"] == 3
    assert load_checkpoint(run / "model" / "last.pt")["epoch"] == 2


def test_deterministic_given_seed(tiny_config, tmp_path):
    a = train(load_config(tiny_config), tmp_path / "a", progress=False)
    b = train(load_config(tiny_config), tmp_path / "b", progress=False)
    assert same_weights(weights(a / "model" / "last.pt"), weights(b / "model" / "last.pt"))


def test_killed_run_resumes_to_the_same_result(tiny_config, tmp_path, monkeypatch):
    reference = train(load_config(tiny_config), tmp_path / "reference", progress=False)

    original = trainer_module._write_metrics
    calls = {"n": 0}

    def die_after_first_epoch(path, rows):
        original(path, rows)
        calls["n"] += 1
        if calls["n"] == 1:
            raise KeyboardInterrupt  # killed right after epoch 1 was saved

    monkeypatch.setattr(trainer_module, "_write_metrics", die_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        train(load_config(tiny_config), tmp_path / "killed", progress=False)
    monkeypatch.setattr(trainer_module, "_write_metrics", original)
    assert load_checkpoint(tmp_path / "killed" / "model" / "last.pt")["epoch"] == 1

    resumed = train(load_config(tiny_config), tmp_path / "killed", resume=True, progress=False)
    assert same_weights(weights(reference / "model" / "last.pt"), weights(resumed / "model" / "last.pt"))
    rows = list(csv.DictReader((resumed / "model" / "metrics.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2"]


def test_existing_run_dir_is_not_overwritten(tiny_config, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "keep.txt").write_text("x")
    with pytest.raises(FluosegError, match="--overwrite"):
        train(load_config(tiny_config), tmp_path / "run", progress=False)
    assert (tmp_path / "run" / "keep.txt").read_text() == "x"


def test_resume_with_other_config_is_refused(make_config, tmp_path):
    train(load_config(make_config(epochs=1)), tmp_path / "run", progress=False)
    with pytest.raises(FluosegError, match="differs"):
        train(load_config(make_config("other.yaml", epochs=1, learning_rate=0.5)), tmp_path / "run", resume=True,
              progress=False)


def test_separate_mode_trains_one_binary_model_per_class(make_config, tmp_path):
    run = train(load_config(make_config(epochs=1, class_mode="separate")), tmp_path / "run", progress=False)
    assert json.loads((run / "run.json").read_text()) == {"members": ["blob", "bar"]}
    state = load_checkpoint(run / "bar" / "best.pt")
    assert state["classes"] == ["bar"] and state["model"]["out_channels"] == 2


def test_encoder_networks_train_and_load_without_their_pretrained_file(tiny_dataset, tmp_path):
    import yaml

    from fluoseg.infer import Segmenter
    from fluoseg.models import build_encoder

    weights = tmp_path / "resnet18.pt"
    torch.save(build_encoder("resnet18", in_channels=3).state_dict(), weights)
    for name, options in (("unet-encoder", {"encoder": "resnet18", "encoder_weights": str(weights)}),
                          ("unetpp", {"encoder": "resnet18", "deep_supervision": True})):
        config = {
            "data": {"manifest": str(tiny_dataset), "split": {"val": ["s3"], "test": ["s4"]}},
            "model": {"name": name, "options": options},
            "train": {"epochs": 1, "steps_per_epoch": 1, "batch_size": 2, "patch_size": 64, "device": "cpu",
                      "num_threads": 1},
        }
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config))
        run = train(load_config(path), tmp_path / name, progress=False)
        weights.unlink(missing_ok=True)  # prediction must not need the pretrained file any more
        segmenter = Segmenter.load(run, device="cpu")
        masks, _ = segmenter.predict_masks(torch.zeros(3, 72, 72).numpy(), ["m1", "m2", "m3"], tile_size=64)
        assert masks.shape == (2, 72, 72)


def test_in_silico_labelling_pretraining_then_fine_tuning(tiny_dataset, tmp_path):
    """Predict marker m1 from m2, m3; then start a segmentation model from those weights."""
    import yaml

    from fluoseg.infer import Segmenter
    from fluoseg.io import read_image

    base = {"data": {"manifest": str(tiny_dataset), "split": {"val": ["s3"], "test": ["s4"]}},
            "model": {"name": "unet", "options": {"depth": 2, "base_filters": 4}},
            "train": {"epochs": 1, "steps_per_epoch": 2, "batch_size": 2, "patch_size": 60, "device": "cpu",
                      "num_threads": 1}}
    pretext = dict(base, task="regression", regression={"targets": ["m1"]})
    (tmp_path / "isl.yaml").write_text(yaml.safe_dump(pretext))
    isl = train(load_config(tmp_path / "isl.yaml"), tmp_path / "isl", progress=False)
    state = load_checkpoint(isl / "model" / "best.pt")
    assert state["markers"] == ["m2", "m3"] and state["task"]["targets"] == ["m1"]
    rows = list(csv.DictReader((isl / "model" / "metrics.csv").open()))
    assert "val_pearson_m1" in rows[0] and "val_mae_m1" in rows[0]

    image = read_image(tiny_dataset.parent / "images" / "s4.tif").array
    predicted = Segmenter.load(isl, device="cpu").predict_probabilities(image, ["m1", "m2", "m3"])
    assert predicted.shape == (1, 72, 72)

    fine = dict(base, data=dict(base["data"], markers=["m2", "m3"]))
    fine["model"] = dict(base["model"], init_from=str(isl))
    (tmp_path / "fine.yaml").write_text(yaml.safe_dump(fine))
    from fluoseg.train.trainer import transfer_weights
    from fluoseg.models import build_model

    model = build_model("unet", in_channels=2, out_channels=3, depth=2, base_filters=4)
    copied, total = transfer_weights(model, isl)
    assert 0 < copied < total  # everything but the new head
    run = train(load_config(tmp_path / "fine.yaml"), tmp_path / "fine", progress=False)
    assert load_checkpoint(run / "model" / "best.pt")["task"]["name"] == "semantic"
