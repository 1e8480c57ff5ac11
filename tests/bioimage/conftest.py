"""Session fixtures of the bioimage.io tests: two tiny trained runs and their packages.

Training takes about a second per run and exporting a few seconds, so they are made once
per session, by the prediction fixture's recipe: a semantic run (valid-convolution U-Net,
the MS-ME set-up) and an instance run (distance + foreground heads, same padding), so both
size rules and a mixed activation are exported.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.make_prediction_fixture import train_run


@pytest.fixture(scope="session")
def semantic_run(tmp_path_factory) -> Path:
    return Path(train_run(tmp_path_factory.mktemp("semantic"), instance=False))


@pytest.fixture(scope="session")
def instance_run(tmp_path_factory) -> Path:
    return Path(train_run(tmp_path_factory.mktemp("instance"), instance=True))


@pytest.fixture(scope="session")
def semantic_package(semantic_run, tmp_path_factory) -> Path:
    pytest.importorskip("bioimageio.spec", reason="the bioimageio extra is not installed")
    from fluoseg.bioimage.export import export_package

    return export_package(semantic_run, tmp_path_factory.mktemp("packages") / "semantic.zip")


@pytest.fixture(scope="session")
def instance_package(instance_run, tmp_path_factory) -> Path:
    pytest.importorskip("bioimageio.spec", reason="the bioimageio extra is not installed")
    from fluoseg.bioimage.export import export_package

    return export_package(instance_run, tmp_path_factory.mktemp("packages") / "instance.zip")
