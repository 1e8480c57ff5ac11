import json

import pytest

from fluoseg.demo import CLASSES, run_demo
from fluoseg.errors import FluosegError


def test_demo_runs_end_to_end_and_refuses_to_overwrite(tmp_path):
    out = tmp_path / "demo"
    results = run_demo(out, epochs=3, device="cpu", progress=False)
    assert set(results) == {f"{m}/{c}" for m in ("all", "subset") for c in CLASSES}
    written = json.loads((out / "scores.json").read_text())
    assert written["f1"] == results and written["epochs"] == 3
    # 60 steps already find most sinusoids, with all markers and with endomucin + collagen only
    assert results["all/sinusoids"] > 0.55 and results["subset/sinusoids"] > 0.55, results
    for name in ("demo.png", "scores_all.csv", "scores_subset.csv", "config.yaml", "run/run.json"):
        assert (out / name).is_file()
    with pytest.raises(FluosegError, match="--overwrite"):
        run_demo(out, epochs=3, device="cpu", progress=False)
