import pytest

from fluoseg.demo import CLASSES, run_demo
from fluoseg.errors import FluosegError


def test_demo_runs_end_to_end_and_refuses_to_overwrite(tmp_path):
    out = tmp_path / "demo"
    results = run_demo(out, epochs=1, device="cpu", progress=False)
    assert set(results) == {f"{m}/{c}" for m in ("all", "subset") for c in CLASSES}
    assert all(0.0 <= v <= 1.0 for v in results.values())
    for name in ("demo.png", "scores_all.csv", "scores_subset.csv", "config.yaml", "run/run.json"):
        assert (out / name).is_file()
    with pytest.raises(FluosegError, match="--overwrite"):
        run_demo(out, epochs=1, device="cpu", progress=False)
