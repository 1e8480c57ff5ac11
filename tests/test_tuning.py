"""``fluoseg tune``: decoding tuned on validation images, stored in the run, used by predict."""

import json

import pytest

from fluoseg.cli import main
from fluoseg.config import load_config
from fluoseg.errors import FluosegError
from fluoseg.infer import Segmenter
from fluoseg.run import RunDir
from fluoseg.train.trainer import train
from fluoseg.tuning import MAX_PASSES, tune_pretrained, tune_run, tune_segmenter


@pytest.fixture(scope="module")
def instance_run(tmp_path_factory):
    from support import train_nuclei_run

    return train_nuclei_run(tmp_path_factory.mktemp("tune"), instance={"method": "distance", "h": 4.0, "min_size": 5},
                            val=["n3", "n4"], epochs=3)


def test_tuned_parameters_are_stored_and_used_by_prediction(instance_run):
    record = tune_run(instance_run, rounds=0, log=lambda line: None)
    stored = json.loads((instance_run / "model" / RunDir.DECODING).read_text())
    assert stored["parameters"] == record["parameters"] and set(record["parameters"]) == {"h", "threshold", "min_size"}
    assert record["samples"] == ["n3", "n4"] and record["value"] >= record["before"]  # the trained values were a candidate
    segmenter = Segmenter.load(instance_run, device="cpu")
    assert segmenter.task.h == record["parameters"]["h"]
    assert segmenter.task.min_size == record["parameters"]["min_size"]
    assert RunDir(instance_run).load("model").task["h"] == 4.0  # the checkpoint keeps what training used
    segmenter.set_decoding(h=2.5)
    assert segmenter.task.h == 2.5
    with pytest.raises(FluosegError, match=r"do not apply to this model; it has .*min_size"):
        segmenter.set_decoding(smoothing=1.0)


def test_auto_diameter_tuning_predicts_again_with_the_tuned_parameters(instance_run, monkeypatch):
    decodings = []  # the decoding in effect whenever a validation image is predicted
    load = Segmenter.load.__func__

    def scale_normalised(cls, *args, **kwargs):
        segmenter = load(cls, *args, **kwargs)
        segmenter.set_decoding(target_diameter=9.0)  # as if trained with scale normalisation
        predict = segmenter.model_scale_maps

        def spy(*a, **k):
            task = segmenter.task
            decodings.append({"h": task.h, "threshold": task.threshold, "min_size": task.min_size})
            return predict(*a, **k)

        segmenter.model_scale_maps = spy
        return segmenter

    monkeypatch.setattr(Segmenter, "load", classmethod(scale_normalised))
    record = tune_run(instance_run, rounds=0, log=lambda line: None)
    passes = record["passes"]
    # two validation images per pass, and once more with the calibrated diameter estimates
    assert 1 <= passes <= MAX_PASSES and len(decodings) == 2 * passes + 2
    searched, calibrated = decodings[:2 * passes], decodings[2 * passes:]
    assert searched[0]["h"] == 4.0 and searched[0]["min_size"] == 5  # the first pass: the trained decoding
    for before, after in zip(searched[::2], searched[2::2]):
        assert before != after  # a further pass only when the search moved the parameters
    decoding = {key: record["parameters"][key] for key in ("h", "threshold", "min_size")}
    # kept: the best of the decodings the images were predicted with (the settled one or an earlier one)
    assert decoding in searched[::2]
    assert calibrated == [decoding, decoding]  # calibrated with the kept decoding


def test_tune_segmenter_reads_each_image_once_and_leaves_the_best_decoding(instance_run, monkeypatch):
    from fluoseg.data.manifest import load_manifest
    from fluoseg.data.sample import Sample

    reads = []
    read_image = Sample.read_image

    def counted(self, *args, **kwargs):
        reads.append(self.id)
        return read_image(self, *args, **kwargs)

    monkeypatch.setattr(Sample, "read_image", counted)
    segmenter = Segmenter.load(instance_run, device="cpu")
    segmenter.set_decoding(target_diameter=9.0)  # scale-normalised: several passes with --diameter auto
    config = RunDir(instance_run).read_config()
    samples = [load_manifest(config["data"]["manifest"]).sample(i) for i in ("n3", "n4")]
    search = tune_segmenter(segmenter, samples, method="distance", trained={"h": 4.0, "threshold": 0.5, "min_size": 5},
                            rounds=0, log=lambda line: None)
    assert sorted(reads) == ["n3", "n4"]  # read once, however many passes predicted them
    assert 1 <= search.passes <= MAX_PASSES and 0.0 <= search.value <= 1.0
    task = segmenter.task
    assert {"h": task.h, "threshold": task.threshold, "min_size": task.min_size} == search.best


class _CyclingSearch:
    """Stands in for ``tune_decoding``: maps predicted with h carry h; the search on maps of h=2
    finds h=1, on maps of 1 finds 3, on maps of 3 finds 1 again (it never settles). Scored on
    their own maps, h=2, 1, 3 are worth 0.5, 0.7, 0.6; on other maps everything is worth 0."""

    next_h = {2.0: 1.0, 1.0: 3.0, 3.0: 1.0}
    own_value = {2.0: 0.5, 1.0: 0.7, 3.0: 0.6}

    def __call__(self, images, *, method, objective, rounds, grid=None, fixed=None, progress=None):
        from fluoseg.instance.tune import TuningResult

        predicted_with = float(images[0].maps[0, 0, 0])
        if rounds == 0:  # one candidate scored on these maps
            h = grid["h"][0]
            value = self.own_value[h] if h == predicted_with else 0.0
            return TuningResult(method=method, objective=objective, best={"h": h}, value=value)
        found = self.next_h[predicted_with]
        return TuningResult(method=method, objective=objective, best={"h": found}, value=0.9,
                            table=[{"h": found, "objective": 0.9}])


class _ScaleSegmenter:
    """A scale-normalised model whose maps record the h they were predicted with."""

    def __init__(self):
        self.task = type("Task", (), {"target_diameter": 9.0, "h": None})()

    def set_decoding(self, **parameters):
        self.task.h = parameters["h"]

    def model_scale_maps(self, array, names, options):
        import numpy as np

        return np.full((2, 4, 4), self.task.h, np.float32), None


class _FakeSample:
    id, channel_names, image_path = "v1", ("DNA",), "v1.tif"

    def read_image(self):
        import numpy as np

        return type("Image", (), {"array": np.zeros((1, 4, 4), np.float32), "pixel_size": None,
                                  "spatial_shape": (4, 4)})()

    def read_labels(self, spatial):
        import numpy as np

        return np.zeros(spatial, np.int32)


def test_passes_that_never_settle_keep_the_best_parameters_as_predicted(monkeypatch):
    import fluoseg.tuning as tuning

    monkeypatch.setattr(tuning, "tune_decoding", _CyclingSearch())
    segmenter = _ScaleSegmenter()
    search = tune_segmenter(segmenter, [_FakeSample()], method="distance", trained={"h": 2.0}, log=lambda line: None)
    # predicted with h = 2, 1, 3; the last search says 1 again, scored on maps of 3: not converged
    assert search.passes == MAX_PASSES == 3 and not search.converged
    assert search.best == {"h": 1.0} and search.value == 0.7 and search.before == 0.5
    assert segmenter.task.h == 1.0  # left at the kept parameters


def test_settled_passes_keep_the_last_search(monkeypatch):
    import fluoseg.tuning as tuning

    settling = _CyclingSearch()
    settling.next_h = {2.0: 1.0, 1.0: 1.0}  # maps of h=1 confirm h=1
    monkeypatch.setattr(tuning, "tune_decoding", settling)
    search = tune_segmenter(_ScaleSegmenter(), [_FakeSample()], method="distance", trained={"h": 2.0},
                            log=lambda line: None)
    assert search.passes == 2 and search.converged and search.best == {"h": 1.0} and search.value == 0.9


def test_settled_passes_never_keep_less_than_the_start(monkeypatch):
    import fluoseg.tuning as tuning

    settling = _CyclingSearch()
    settling.next_h = {2.0: 1.0, 1.0: 1.0}  # the passes settle on h=1, worth 0.9 on its own maps ...
    settling.own_value = {2.0: 0.95, 1.0: 0.9}  # ... while the start, h=2, was worth 0.95 on its own
    monkeypatch.setattr(tuning, "tune_decoding", settling)
    segmenter = _ScaleSegmenter()
    search = tune_segmenter(segmenter, [_FakeSample()], method="distance", trained={"h": 2.0}, log=lambda line: None)
    assert search.converged and search.best == {"h": 2.0} and search.value == 0.95 == search.before
    assert segmenter.task.h == 2.0


def test_one_pass_keeps_the_start_as_before(monkeypatch):
    import fluoseg.tuning as tuning

    monkeypatch.setattr(tuning, "tune_decoding", _CyclingSearch())
    segmenter = _ScaleSegmenter()
    segmenter.task.target_diameter = None  # not scale-normalised: one pass, the maps do not depend on the decoding
    search = tune_segmenter(segmenter, [_FakeSample()], method="distance", trained={"h": 2.0}, log=lambda line: None)
    assert search.passes == 1 and search.converged and search.best == {"h": 1.0}
    assert search.value == 0.9 and search.before == 0.5  # the start's score, not the search's


def test_cli_tune_and_predict_overrides(instance_run, tmp_path, capsys):
    assert main(["tune", str(instance_run), "--rounds", "1", "--quiet"]) == 0
    assert "stored in" in capsys.readouterr().out
    image = instance_run.parent / "images" / "n1.tif"
    assert main(["predict", str(instance_run), str(image), "--out", str(tmp_path / "a"), "--quiet"]) == 0
    assert main(["predict", str(instance_run), str(image), "--out", str(tmp_path / "b"), "--min-size", "100000",
                 "--quiet"]) == 0
    import tifffile

    assert tifffile.imread(tmp_path / "b" / "n1.tif").max() == 0  # every object is below the overriding size
    with pytest.raises(SystemExit) as stop:  # argparse refuses the value before anything loads
        main(["predict", str(instance_run), str(image), "--out", str(tmp_path / "c"), "--threshold", "1.5"])
    assert stop.value.code == 2 and not (tmp_path / "c").exists()


def test_tuning_refuses_semantic_runs(tiny_config, tmp_path):
    run = train(load_config(tiny_config), tmp_path / "run", progress=False)
    with pytest.raises(FluosegError, match="only instance runs"):
        tune_run(run, log=lambda line: None)
    assert main(["train", str(tiny_config), "--out", str(tmp_path / "other"), "--tune"]) == 2
    assert not (tmp_path / "other").exists()


def test_a_pretrained_model_is_tuned_on_a_labs_images_into_a_copy_predict_uses(instance_run, tmp_path, monkeypatch,
                                                                                 capsys):
    import numpy as np
    import tifffile

    from fluoseg import zoo

    zoo.export_run(instance_run, tmp_path / "zoo" / "tiny", card="# tiny\n\nA test model.\n", half=False)
    monkeypatch.setattr(zoo, "ZOO_DIR", tmp_path / "zoo")
    import yaml

    ours = yaml.safe_load(open(RunDir(instance_run).read_config()["data"]["manifest"]))
    manifest = tmp_path / "ours.yaml"  # the lab calls its nuclear channel DAPI
    manifest.write_text(yaml.safe_dump({**ours, "markers": ["DAPI"], "root": str(instance_run.parent)}))
    out = tmp_path / "tiny_ours"
    tune = ["tune", "tiny", "--data", str(manifest), "--samples", "n3,n4", "--out", str(out), "--rounds", "1", "--quiet"]
    assert main(tune) == 2 and not out.exists()  # DAPI is no marker of the model
    assert main([*tune, "--markers", "DNA=DAPI"]) == 0
    assert f"fluoseg predict {out}" in capsys.readouterr().out
    record = json.loads((out / zoo.TUNING_FILE).read_text())
    assert record["model"] == "tiny" and record["samples"] == ["n3", "n4"] and record["value"] >= record["before"]
    assert record["trained_with"] == {"h": 4.0, "threshold": 0.5, "min_size": 5} != record["parameters"]
    copy = Segmenter.load(out, device="cpu")
    task = copy.task
    assert {"h": task.h, "threshold": task.threshold, "min_size": task.min_size} == record["parameters"]
    assert (out / zoo.WEIGHTS_FILE).read_bytes() == (tmp_path / "zoo" / "tiny" / zoo.WEIGHTS_FILE).read_bytes()
    card = (out / zoo.CARD_FILE).read_text()
    assert card.startswith("# tiny\n\nA test model.") and "## Decoding re-tuned" in card and "n3, n4" in card
    assert Segmenter.pretrained("tiny", device="cpu").task.h == 4.0  # the shipped model is left as it was
    # predict with the copy gives what the original gives with the tuned parameters
    image = instance_run.parent / "images" / "n1.tif"
    assert main(["predict", str(out), str(image), "--out", str(tmp_path / "a"), "--quiet"]) == 0
    p = record["parameters"]
    assert main(["predict", "tiny", str(image), "--out", str(tmp_path / "b"), "--h", str(p["h"]), "--threshold",
                 str(p["threshold"]), "--min-size", str(p["min_size"]), "--quiet"]) == 0
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "a" / "n1.tif"), tifffile.imread(tmp_path / "b" / "n1.tif"))


def test_tuning_a_pretrained_model_refuses_before_predicting(instance_run, tmp_path, monkeypatch):
    from fluoseg import zoo

    folder = zoo.export_run(instance_run, tmp_path / "tiny", card="# tiny\n")
    manifest = RunDir(instance_run).read_config()["data"]["manifest"]
    predicted = []
    monkeypatch.setattr(Segmenter, "model_scale_maps", lambda *a, **k: predicted.append(1))
    out = tmp_path / "taken"
    out.mkdir()
    (out / zoo.CARD_FILE).write_text("mine")
    with pytest.raises(FluosegError, match="--overwrite"):
        tune_pretrained(folder, out, manifest=manifest, log=lambda line: None)
    assert main(["tune", str(folder), "--out", str(tmp_path / "x"), "--quiet"]) == 2  # no --data
    assert main(["tune", str(folder), "--data", manifest, "--quiet"]) == 2  # no --out
    assert main(["tune", str(instance_run), "--out", str(tmp_path / "y"), "--quiet"]) == 2  # a run tunes in place
    assert not predicted and (out / zoo.CARD_FILE).read_text() == "mine"
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
    with pytest.raises(FluosegError, match="has no \\['smoothing'\\]"):
        zoo.write_retuned(folder, tmp_path / "z", task_updates={"smoothing": 1.0}, card="")


class _OverestimatingSegmenter(_ScaleSegmenter):
    """Estimates every diameter 1.2 times too large; its maps record the diameter bias they were predicted with."""

    def __init__(self):
        super().__init__()
        self.task.diameter_bias = 1.0

    def set_decoding(self, **parameters):
        for key, value in parameters.items():
            setattr(self.task, key, value)

    def estimate_diameter(self, array, names, options):
        from fluoseg.instance.scale import estimate_diameter_from_labels

        return 1.2 * estimate_diameter_from_labels(_SampleWithObjects().read_labels((4, 4))) / self.task.diameter_bias

    def model_scale_maps(self, array, names, options):
        import numpy as np

        return np.full((2, 4, 4), self.task.diameter_bias, np.float32), None


class _SampleWithObjects(_FakeSample):
    def read_labels(self, spatial):
        import numpy as np

        labels = np.zeros(spatial, np.int32)
        labels[:2, :2] = 1
        return labels


class _ScaleSensitiveSearch:
    """Settles at once on h = 2; maps predicted at a diameter bias of 1.2 score ``calibrated``, others 0.5."""

    def __init__(self, calibrated):
        self.calibrated = calibrated

    def __call__(self, images, *, method, objective, rounds, grid=None, fixed=None, progress=None):
        from fluoseg.instance.tune import TuningResult

        bias = float(images[0].maps[0, 0, 0])
        value = self.calibrated if abs(bias - 1.2) < 1e-6 else 0.5
        return TuningResult(method=method, objective=objective, best={"h": 2.0}, value=value,
                            table=[{"h": 2.0, "objective": value}])


@pytest.mark.parametrize("calibrated, kept", [(0.8, True), (0.4, False)])
def test_diameter_estimates_are_calibrated_on_the_annotated_images_when_that_scores_higher(monkeypatch, calibrated,
                                                                                           kept):
    import fluoseg.tuning as tuning

    monkeypatch.setattr(tuning, "tune_decoding", _ScaleSensitiveSearch(calibrated))
    segmenter = _OverestimatingSegmenter()
    search = tune_segmenter(segmenter, [_SampleWithObjects(), _SampleWithObjects()], method="distance",
                            trained={"h": 2.0}, log=lambda line: None, calibrate_diameter=True)
    if kept:
        assert search.best == {"h": 2.0, "diameter_bias": 1.2} and search.value == 0.8
        assert segmenter.task.diameter_bias == 1.2
    else:
        assert search.best == {"h": 2.0} and search.value == 0.5 and segmenter.task.diameter_bias == 1.0
    assert search.before == 0.5


@pytest.mark.parametrize("before", [1.2, 1.1])
def test_a_calibrated_model_tuned_again_reports_the_calibration_in_effect(monkeypatch, before):
    import fluoseg.tuning as tuning

    monkeypatch.setattr(tuning, "tune_decoding", _ScaleSensitiveSearch(0.4))  # a new calibration scores no higher
    segmenter = _OverestimatingSegmenter()
    segmenter.task.diameter_bias = before
    search = tune_segmenter(segmenter, [_SampleWithObjects()], method="distance", trained={"h": 2.0},
                            log=lambda line: None, calibrate_diameter=True)
    # measured again at x1.2, or 1.2 not kept: either way the model keeps, and says, the bias it had
    assert search.best == {"h": 2.0, "diameter_bias": before} and segmenter.task.diameter_bias == before


def test_calibration_is_left_out_unless_asked_for_or_without_objects(monkeypatch):
    import fluoseg.tuning as tuning

    monkeypatch.setattr(tuning, "tune_decoding", _ScaleSensitiveSearch(0.8))
    assert tune_segmenter(_OverestimatingSegmenter(), [_SampleWithObjects()], method="distance", trained={"h": 2.0},
                          log=lambda line: None).best == {"h": 2.0}
    assert tune_segmenter(_OverestimatingSegmenter(), [_FakeSample()], method="distance", trained={"h": 2.0},
                          log=lambda line: None, calibrate_diameter=True).best == {"h": 2.0}
