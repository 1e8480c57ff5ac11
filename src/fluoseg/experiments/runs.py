"""Resumable units of work shared by the experiments: one training run, small JSON records.

A long experiment (cross-validation, upper bound, benchmark) is a list of units, each in
its own folder. A finished unit leaves a record file written atomically; a rerun skips it.
An interrupted training run is resumed from its ``last.pt`` (the trainer restores every
random state, so the result equals an uninterrupted run).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from fluoseg.config import RunConfig, config_to_dict
from fluoseg.data.split import Split
from fluoseg.errors import FluosegError
from fluoseg.io import write_json_atomically

TRAINED = "trained.json"
"""Record a finished training run leaves in its run directory."""


def read_json(path: str | Path) -> Any:
    """Read a JSON record; a damaged record is a one-line error naming the file."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        raise FluosegError("damaged record; delete it to redo this unit of work", path=path) from None


def split_record(split: Split) -> dict[str, list[str]]:
    """A split as a JSON-able dict of sample id lists."""
    return {"train": list(split.train), "val": list(split.val), "test": list(split.test)}


def fold_name(fold: int) -> str:
    """Folder name of a cross-validation fold."""
    return f"fold{fold}"


def check_record(path: Path, expected: dict[str, Any], *, what: str) -> bool:
    """Whether ``path`` records the same ``expected`` settings; False when it does not exist.

    Raises
    ------
    FluosegError
        If the record exists but was made with other settings (results would be mixed).
    """
    if not path.is_file():
        return False
    previous = read_json(path)
    for key, value in expected.items():
        if previous.get(key) != json.loads(json.dumps(value)):
            raise FluosegError(f"{what} was made with another {key} than now; use another output folder "
                               "or delete this one to redo it", path=path.parent)
    return True


def train_unit(config: RunConfig, run_dir: str | Path, *, split: Split, progress: bool = True) -> dict[str, Any]:
    """Train ``config`` on ``split`` into ``run_dir`` unless that was done already.

    A finished run (its ``trained.json``) is skipped, an interrupted one is resumed, and a
    finished run of another configuration or split is refused rather than reused. Once a
    unit is finished its ``last.pt`` files (optimiser state, kept for resuming) are deleted:
    an experiment of many units would otherwise keep gigabytes nobody reads.

    Returns
    -------
    dict
        The record: ``config``, ``split``, ``seconds`` (training wall time of this call,
        0 when skipped) and ``resumed``.
    """
    from fluoseg.train.trainer import Trainer  # deferred: torch is only needed to train

    run_dir = Path(run_dir)
    expected = {"config": config_to_dict(config), "split": split_record(split)}
    if check_record(run_dir / TRAINED, expected, what="the training run"):
        return read_json(run_dir / TRAINED)
    resume = (run_dir / "config.yaml").is_file()
    started = time.perf_counter()
    Trainer(config, run_dir, split=split, progress=progress).run(resume=resume, overwrite=not resume)
    record = {**expected, "seconds": round(time.perf_counter() - started, 3), "resumed": resume}
    write_json_atomically(run_dir / TRAINED, record)
    for last in run_dir.glob("*/last.pt"):
        last.unlink()
    return record
