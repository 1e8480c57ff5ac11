import csv
import json

import pytest
import torch

from fluoseg.config import load_config
from fluoseg.errors import FluosegError
from fluoseg.train import trainer as trainer_module
from fluoseg.run import read_checkpoint_dict as load_checkpoint
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
    assert all(0 < float(r["validation_seconds"]) < float(r["seconds"]) for r in rows)
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

    def die_after_first_epoch(run, member, rows):
        original(run, member, rows)
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


def test_killed_before_the_metrics_file_resumes_with_every_row(tiny_config, tmp_path, monkeypatch):
    reference = train(load_config(tiny_config), tmp_path / "reference", progress=False)

    def die_before_writing(run, member, rows):
        raise KeyboardInterrupt  # killed after epoch 1's checkpoint, before its metrics.csv

    monkeypatch.setattr(trainer_module, "_write_metrics", die_before_writing)
    with pytest.raises(KeyboardInterrupt):
        train(load_config(tiny_config), tmp_path / "killed", progress=False)
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / "killed" / "model" / "last.pt")["epoch"] == 1
    assert not (tmp_path / "killed" / "model" / "metrics.csv").exists()

    resumed = train(load_config(tiny_config), tmp_path / "killed", resume=True, progress=False)
    expected = list(csv.DictReader((reference / "model" / "metrics.csv").open()))
    rows = list(csv.DictReader((resumed / "model" / "metrics.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert [r["train_loss"] for r in rows] == [r["train_loss"] for r in expected]


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
    run = train(load_config(tmp_path / "fine.yaml"), tmp_path / "fine", progress=False)
    assert load_checkpoint(run / "model" / "best.pt")["task"]["name"] == "semantic"
    # ce-log gives 2 softmax logits for 1 class: the regression head cannot carry over.
    assert json.loads((run / "model" / "init_from.json").read_text())["head"] == "fresh"

    # One sigmoid class with the ISL paper's Jaccard loss: the regression head carries over, shifted.
    shifted = dict(fine, data=dict(fine["data"], classes=["blob"]), train=dict(fine["train"], loss="jaccard"))
    (tmp_path / "shifted.yaml").write_text(yaml.safe_dump(shifted))
    run = train(load_config(tmp_path / "shifted.yaml"), tmp_path / "shifted", progress=False)
    record = json.loads((run / "model" / "init_from.json").read_text())
    assert (record["head"], record["shift"]) == ("shifted-sigmoid", 0.0)  # gaussian-normalised target


# ---- optimisers, schedules, selection by validation loss, selectable semantic losses ----------


def metric_rows(run, member="model"):
    return list(csv.DictReader((run / member / "metrics.csv").open()))


def kill_after_first_epoch(monkeypatch):
    original = trainer_module._write_metrics
    calls = {"n": 0}

    def die(run, member, rows):
        original(run, member, rows)
        calls["n"] += 1
        if calls["n"] == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(trainer_module, "_write_metrics", die)
    return original


def killed_and_resumed(config_path, run, monkeypatch):
    """Train ``config_path`` into ``run``, killed after its first epoch, then resumed to the end."""
    original = kill_after_first_epoch(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        train(load_config(config_path), run, progress=False)
    monkeypatch.setattr(trainer_module, "_write_metrics", original)
    return train(load_config(config_path), run, resume=True, progress=False)


def test_sgd_with_a_step_schedule_logs_the_learning_rate(make_config, tmp_path):
    run = train(load_config(make_config(epochs=3, steps_per_epoch=1, optimizer="sgd", momentum=0.9,
                                        schedule="step", step_size=1, gamma=0.5)), tmp_path / "run", progress=False)
    assert [float(r["lr"]) for r in metric_rows(run)] == pytest.approx([1e-3, 5e-4, 2.5e-4])
    state = load_checkpoint(run / "model" / "last.pt")
    assert state["optimizer_state"]["param_groups"][0]["momentum"] == 0.9
    assert any("momentum_buffer" in s for s in state["optimizer_state"]["state"].values())
    assert state["schedule_state"]["name"] == "step"


def test_killed_run_with_a_schedule_resumes_to_the_same_result(make_config, tmp_path, monkeypatch):
    # step_size 2 decays after epoch 2: a resumed run that restarted the schedule would not.
    settings = dict(epochs=3, steps_per_epoch=2, optimizer="sgd", schedule="step", step_size=2, gamma=0.5)
    reference = train(load_config(make_config(**settings)), tmp_path / "reference", progress=False)
    resumed = killed_and_resumed(make_config(**settings), tmp_path / "killed", monkeypatch)
    assert same_weights(weights(reference / "model" / "last.pt"), weights(resumed / "model" / "last.pt"))
    assert [float(r["lr"]) for r in metric_rows(resumed)] == pytest.approx([1e-3, 1e-3, 5e-4])


def test_batches_drawn_by_workers_train_reproducibly_and_resume_to_the_same_result(make_config, tmp_path,
                                                                                  monkeypatch):
    settings = dict(epochs=2, steps_per_epoch=3, workers=2)
    reference = train(load_config(make_config(**settings)), tmp_path / "reference", progress=False)
    again = train(load_config(make_config(**settings)), tmp_path / "again", progress=False)
    assert same_weights(weights(reference / "model" / "last.pt"), weights(again / "model" / "last.pt"))
    in_process = train(load_config(make_config(epochs=2, steps_per_epoch=3)), tmp_path / "in-process", progress=False)
    assert not same_weights(weights(reference / "model" / "last.pt"), weights(in_process / "model" / "last.pt"))
    resumed = killed_and_resumed(make_config(**settings), tmp_path / "killed", monkeypatch)
    assert same_weights(weights(reference / "model" / "last.pt"), weights(resumed / "model" / "last.pt"))


def test_select_by_loss_keeps_the_epoch_with_the_lowest_validation_loss(make_config, tmp_path):
    run = train(load_config(make_config(epochs=4, steps_per_epoch=1, learning_rate=0.05, select_by="loss")),
                tmp_path / "run", progress=False)
    rows = metric_rows(run)
    losses = [float(r["val_loss"]) for r in rows]
    assert all(loss > 0 for loss in losses)
    expected_best = [int(loss < min(losses[:i], default=float("inf"))) for i, loss in enumerate(losses)]
    assert [int(r["best"]) for r in rows] == expected_best and 0 in expected_best  # the loss went up once
    best_epoch = losses.index(min(losses)) + 1
    assert load_checkpoint(run / "model" / "best.pt")["epoch"] == best_epoch
    assert load_checkpoint(run / "model" / "best.pt")["best_score"] == pytest.approx(-min(losses))


def test_validation_loss_is_the_task_loss_of_the_whole_sample(make_config, tmp_path):
    """Stitched tile logits give the same loss as one forward pass over the zero-padded sample."""
    import numpy as np

    from fluoseg.models import build_model
    from fluoseg.tasks import make_task
    from fluoseg.train.trainer import Trainer

    config = load_config(make_config(epochs=1, steps_per_epoch=1))
    trainer = Trainer(config, tmp_path / "run", progress=False)
    task = make_task(config, trainer.classes)
    samples = trainer.prepare(trainer.split.val, task)
    task.fit([s.targets for s in trainer.prepare(trainer.split.train, task)])
    model = build_model("unet", in_channels=3, out_channels=3, depth=2, base_filters=4).eval()
    geometry = trainer_module.geometry_for(model, 60)
    loss = trainer.validate(model, samples, task, geometry)["loss"]
    image = samples[0].image
    size = model.valid_input_size(image.shape[-1] + 2 * geometry.margin)
    padded = np.zeros((1, 3, size, size), np.float32)
    padded[0, :, geometry.margin: geometry.margin + 72, geometry.margin: geometry.margin + 72] = image
    with torch.no_grad():
        logits = model(torch.as_tensor(padded), torch.as_tensor(samples[0].availability)[None])[..., :72, :72]
        direct = task.loss(logits, {k: torch.as_tensor(v)[None] for k, v in samples[0].targets.items()})
    assert loss == pytest.approx(float(direct), rel=1e-4)


@pytest.mark.parametrize(("loss", "options", "channels"), [
    ("bce", {"pos_weight": 9}, 2),
    ("dice", {}, 2),
    ("dice", {"mode": "softmax", "include_background": False}, 3),
    ("bce-dice", {}, 2),
    ("jaccard", {}, 2),
    ("focal", {"alpha": 0.25}, 2),
    ("focal", {"mode": "softmax"}, 3),
])
def test_each_semantic_loss_trains_and_predicts(make_config, tmp_path, loss, options, channels):
    import numpy as np

    from fluoseg.infer import Segmenter

    run = train(load_config(make_config(epochs=1, steps_per_epoch=1, loss=loss, loss_options=options)),
                tmp_path / "run", progress=False)
    state = load_checkpoint(run / "model" / "best.pt")
    assert state["model"]["out_channels"] == channels and state["task"]["loss"] == loss
    assert np.isfinite(float(metric_rows(run)[0]["train_loss"])) and np.isfinite(float(metric_rows(run)[0]["val_loss"]))
    masks, probabilities = Segmenter.load(run, device="cpu").predict_masks(
        np.random.default_rng(0).random((3, 72, 72), np.float32), ["m1", "m2", "m3"], tile_size=60)
    assert masks.shape == (2, 72, 72) and probabilities.shape == (2, 72, 72) and masks.sum(axis=0).max() <= 1


def test_sigmoid_decoding_keeps_classes_exclusive():
    import numpy as np

    from fluoseg.tasks import SemanticTask, task_from_state

    task = SemanticTask(["a", "b"], loss="bce")
    probabilities = np.array([[[0.9, 0.6, 0.2]], [[0.7, 0.8, 0.4]]], np.float32)  # (2 classes, 1, 3)
    assert task.decode(probabilities)[:, 0].tolist() == [[1, 0, 0], [0, 1, 0]]
    assert task.output_channels() == 2 and task_from_state(task.state()).loss_name == "bce"
    targets = {"classes": torch.tensor([[[0, 1, 2, -1]]])}
    logits = torch.zeros(1, 2, 1, 4, requires_grad=True)
    task.loss(logits, targets).backward()
    assert torch.all(logits.grad[..., 3] == 0)  # outside-the-image pixels are ignored


@pytest.mark.parametrize(("train", "task", "message"), [
    ({"loss": "dice"}, "instance", "semantic only"),
    ({"loss_options": {"pos_weight": 9}}, "semantic", "not ce-log"),
    ({"loss": "bce", "loss_options": {"mode": "softmax"}}, "semantic", "mode"),
    ({"loss": "dice", "loss_options": {"from_logits": False}}, "semantic", "set by fluoseg"),
    ({"optimizer": "rmsprop"}, "semantic", "train.optimizer"),
])
def test_invalid_optimisation_settings_are_user_errors(make_config, train, task, message, tmp_path):
    import yaml

    path = make_config("bad.yaml", **train)
    path.write_text(yaml.safe_dump(dict(yaml.safe_load(path.read_text()), task=task)))
    with pytest.raises(FluosegError, match=message) as info:  # at loading, or when training starts
        trainer_module.train(load_config(path), tmp_path / "run", progress=False)
    assert info.value.path == path and not (tmp_path / "run").exists()


def test_run_started_before_the_new_keys_still_resumes(make_config, tmp_path):
    import yaml

    from fluoseg.config import TrainConfig

    run = train(load_config(make_config(epochs=1, steps_per_epoch=1)), tmp_path / "run", progress=False)
    stored = yaml.safe_load((run / "config.yaml").read_text())
    for key in ("optimizer", "momentum", "weight_decay", "schedule", "step_size", "gamma", "patience", "select_by",
                "loss", "loss_options", "precision"):
        assert key in TrainConfig.model_fields
        stored["train"].pop(key)
    stored["model"].pop("trainable")
    (run / "config.yaml").write_text(yaml.safe_dump(stored, sort_keys=False))
    train(load_config(make_config(epochs=1, steps_per_epoch=1)), run, resume=True, progress=False)
    with pytest.raises(FluosegError, match="differs"):
        train(load_config(make_config(epochs=1, steps_per_epoch=1, optimizer="sgd")), run, resume=True,
              progress=False)


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_a_small_network_learns_a_separable_problem(make_config, tiny_dataset, tmp_path, precision):
    """Blobs are bright in m2 and bars in m3: a few dozen steps must segment them far above chance,
    in float32 and in bfloat16 mixed precision alike."""
    from fluoseg.evaluate import evaluate_semantic
    from fluoseg.infer import Segmenter
    from fluoseg.io import read_image, write_image

    config = make_config(epochs=8, steps_per_epoch=8, learning_rate=1e-2, batch_size=4, precision=precision)
    run = train(load_config(config), tmp_path / "run", progress=False)
    segmenter = Segmenter.load(run, device="cpu")
    (tmp_path / "pred").mkdir()
    image = read_image(tiny_dataset.parent / "images" / "s4.tif").array  # the test sample, never trained on
    masks, _ = segmenter.predict_masks(image, ["m1", "m2", "m3"], tile_size=60)
    write_image(tmp_path / "pred" / "s4.tif", masks, axes="CYX", channel_names=["blob", "bar"])
    truth = tmp_path / "truth"
    truth.mkdir()
    (truth / "s4.tif").write_bytes((tiny_dataset.parent / "masks" / "s4.tif").read_bytes())
    f1 = {r["class"]: r["value"] for r in evaluate_semantic(tmp_path / "pred", truth)
          if r["image"] == "ALL" and r["metric"] == "f1"}
    # chance (predicting every pixel as the class) gives F1 = 2p/(1+p): about 0.2 for blobs, 0.1 for bars
    assert f1["blob"] > 0.8 and f1["bar"] > 0.6, f1


def test_bfloat16_training_computes_in_bfloat16_and_keeps_float32_weights(make_config, tmp_path):
    """Mixed precision changes the arithmetic (the weights after the same seeded steps differ from
    float32's) but not what is stored: float32 weights, as a float32 run's."""
    runs = {p: train(load_config(make_config(f"{p}.yaml", epochs=1, steps_per_epoch=2, precision=p)), tmp_path / p,
                     progress=False) for p in ("float32", "bfloat16")}
    stored = {p: weights(run / "model" / "last.pt") for p, run in runs.items()}
    assert all(v.dtype == torch.float32 for v in stored["bfloat16"].values() if v.is_floating_point())
    assert not same_weights(stored["float32"], stored["bfloat16"])
    rows = list(csv.DictReader((runs["bfloat16"] / "model" / "metrics.csv").open()))
    assert 0.0 < float(rows[0]["train_loss"]) < float("inf")


@pytest.mark.parametrize("native", [False, True])
def test_auto_precision_trains_in_bfloat16_only_where_it_is_native(make_config, tmp_path, monkeypatch, native):
    import fluoseg.device

    monkeypatch.setattr(fluoseg.device, "native_bfloat16", lambda device: native)
    auto = train(load_config(make_config("auto.yaml", epochs=1, steps_per_epoch=2, precision="auto")),
                 tmp_path / "auto", progress=False)
    expected = "bfloat16" if native else "float32"
    explicit = train(load_config(make_config("explicit.yaml", epochs=1, steps_per_epoch=2, precision=expected)),
                     tmp_path / "explicit", progress=False)
    assert same_weights(weights(auto / "model" / "last.pt"), weights(explicit / "model" / "last.pt"))


@pytest.mark.parametrize("native", [False, True])
def test_emulated_bfloat16_training_is_warned_about(make_config, tmp_path, monkeypatch, caplog, native):
    monkeypatch.setattr(trainer_module, "native_bfloat16", lambda device: native)
    with caplog.at_level("WARNING", logger="fluoseg"):
        train(load_config(make_config(epochs=1, steps_per_epoch=1, precision="bfloat16")), tmp_path / "run",
              progress=False)
    assert any("emulation" in r.getMessage() for r in caplog.records) != native


def test_an_unknown_precision_is_refused_by_the_config(make_config):
    with pytest.raises(FluosegError, match="precision"):
        load_config(make_config(precision="float16"))


# ---- model.trainable: Marker-Excite-only fine-tuning ---------------------------------------


def me_config(make_config, name, epochs=1, **model):
    """A tiny MS-ME U-Net (Marker Sampling, Marker Excite, batch norm) config with ``model`` overrides."""
    import yaml

    path = make_config(name, epochs=epochs, steps_per_epoch=3, learning_rate=1e-2)
    config = yaml.safe_load(path.read_text())
    config["model"]["options"].update(marker_input="ms", attention="me", norm="batch")
    config["model"].update(model)
    path.write_text(yaml.safe_dump(config))
    return path


def test_excite_fine_tuning_moves_only_the_marker_layers(make_config, tmp_path):
    pretrained = train(load_config(me_config(make_config, "pre.yaml")), tmp_path / "pre", progress=False)
    start = weights(pretrained / "model" / "best.pt")
    config = load_config(me_config(make_config, "fine.yaml", init_from=str(pretrained), trainable="excite"))
    run = train(config, tmp_path / "fine", progress=False)
    assert json.loads((run / "model" / "init_from.json").read_text())["head"] == "copy"
    tuned = weights(run / "model" / "last.pt")
    assert set(tuned) == set(start)
    moved = {k for k in tuned if not torch.equal(tuned[k], start[k])}
    excite = {k for k in tuned if ".hook." in k}  # every Marker Excite module of the U-Net sits at <block>.hook
    assert excite and moved == excite  # all of them trained, nothing else changed by a single bit
    assert any("running_mean" in k for k in tuned)  # batch-norm statistics were among the frozen tensors

    from fluoseg.models import build_model

    n_excite = sum(start[k].numel() for k in excite)
    n_all = sum(p.numel() for p in build_model("unet", in_channels=3, out_channels=3, depth=2, base_filters=4,
                                               marker_input="ms", attention="me", norm="batch").parameters())
    assert f"model: {n_all} parameters, {n_excite} trainable (model.trainable: excite)" in (run / "train.log").read_text()


def test_all_is_the_default_and_logs_every_parameter_as_trainable(make_config, tmp_path):
    run = train(load_config(me_config(make_config, "all.yaml")), tmp_path / "run", progress=False)
    log = (run / "train.log").read_text()
    line = next(line for line in log.splitlines() if "trainable (model.trainable: all)" in line)
    total, trainable = (int(word) for word in line.replace(",", "").split() if word.isdigit())
    assert total == trainable > 0


def test_head_scope_trains_the_output_layer_only(make_config, tmp_path):
    pretrained = train(load_config(me_config(make_config, "pre.yaml")), tmp_path / "pre", progress=False)
    start = weights(pretrained / "model" / "best.pt")
    run = train(load_config(me_config(make_config, "head.yaml", init_from=str(pretrained), trainable="head")),
                tmp_path / "head", progress=False)
    tuned = weights(run / "model" / "last.pt")
    assert {k for k in tuned if not torch.equal(tuned[k], start[k])} == {"head.weight", "head.bias"}


def test_excite_without_marker_excite_layers_is_a_one_line_error(make_config, tmp_path):
    path = make_config("plain.yaml")
    config = load_config(path)
    config.model.trainable = "excite"
    with pytest.raises(FluosegError, match="model.trainable: the model has no parameters in trainable scope 'excite'") as info:
        train(config, tmp_path / "run", progress=False)
    assert info.value.path == path and "\n" not in info.value.message
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_unknown_trainable_scope_is_refused_by_the_schema(make_config):
    import yaml

    path = make_config()
    config = yaml.safe_load(path.read_text())
    config["model"]["trainable"] = "encoder"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(FluosegError, match="model.trainable"):
        load_config(path)


def test_killed_excite_fine_tuning_resumes_to_the_same_result(make_config, tmp_path, monkeypatch):
    pretrained = train(load_config(me_config(make_config, "pre.yaml")), tmp_path / "pre", progress=False)

    def config():
        return load_config(me_config(make_config, "fine.yaml", epochs=2, init_from=str(pretrained), trainable="excite"))

    reference = train(config(), tmp_path / "reference", progress=False)
    original = kill_after_first_epoch(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        train(config(), tmp_path / "killed", progress=False)
    monkeypatch.setattr(trainer_module, "_write_metrics", original)
    resumed = train(config(), tmp_path / "killed", resume=True, progress=False)
    assert same_weights(weights(reference / "model" / "last.pt"), weights(resumed / "model" / "last.pt"))
    start, tuned = weights(pretrained / "model" / "best.pt"), weights(resumed / "model" / "last.pt")
    assert {k for k in tuned if not torch.equal(tuned[k], start[k])} == {k for k in tuned if ".hook." in k}
