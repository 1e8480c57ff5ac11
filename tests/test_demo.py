import json

import pytest
import tifffile

from fluoseg.demo import CLASSES, TEST, run_demo
from fluoseg.errors import FluosegError


def test_demo_runs_end_to_end_and_refuses_to_overwrite(tmp_path):
    out = tmp_path / "demo"
    results = run_demo(out, epochs=3, device="cpu", progress=False)
    assert set(results) == {f"{m}/{c}" for m in ("all", "subset") for c in CLASSES}
    written = json.loads((out / "scores.json").read_text())
    assert written["f1"] == results and written["epochs"] == 3
    # the written F1 recomputed from the written masks, 2 |P & T| / (|P| + |T|), with numpy alone
    truth = tifffile.imread(out / "data" / "masks" / f"{TEST[0]}.ome.tif") > 0
    for markers in ("all", "subset"):
        predicted = tifffile.imread(out / f"pred_{markers}" / f"{TEST[0]}.tif") > 0
        sinusoids = CLASSES.index("sinusoids")
        p, t = predicted[sinusoids], truth[sinusoids]
        assert results[f"{markers}/sinusoids"] == pytest.approx(2 * (p & t).sum() / (p.sum() + t.sum()))
    # 60 steps already find most sinusoids, with all markers and with endomucin + collagen only; they
    # cover 5.7 % of the test image, so marking every pixel would score 2p / (1 + p) = 0.11
    assert results["all/sinusoids"] > 0.55 and results["subset/sinusoids"] > 0.55, results
    # the shipped nuclei model on the shipped samples (it scores F1@0.5 0.755, AJI 0.648)
    nuclei = json.loads((out / "nuclei" / "scores.json").read_text())
    assert nuclei["images"] == ["nuclei_a", "nuclei_b", "nuclei_c"]
    assert nuclei["f1_at_0.5"] > 0.7 and nuclei["f1_at_0.75"] > 0.45 and nuclei["aji"] > 0.6, nuclei
    for name in ("demo.png", "scores_all.csv", "scores_subset.csv", "config.yaml", "run/run.json", "nuclei/overlay.png"):
        assert (out / name).is_file()
    with pytest.raises(FluosegError, match="--overwrite"):
        run_demo(out, epochs=3, device="cpu", progress=False)
