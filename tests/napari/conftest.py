"""The napari tests use the bioimage tests' tiny trained runs; Qt runs offscreen."""

from __future__ import annotations

import os

from tests.bioimage.conftest import instance_run, semantic_run  # noqa: F401  (fixtures)

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before any Qt import: no display in CI
