"""Model arguments: paths as they are, names through the registered lookups."""

from __future__ import annotations

import pytest

from fluoseg.bioimage.sources import register_model_lookup, resolve_model, unregister_model_lookup
from fluoseg.errors import FluosegError


def test_existing_paths_are_used_as_they_are(tmp_path):
    assert resolve_model(tmp_path) == tmp_path


def test_names_go_through_registered_lookups(tmp_path):
    def lookup(name):
        return tmp_path / "zoo" / name if name == "test-only-model" else None

    register_model_lookup(lookup)
    try:
        assert resolve_model("test-only-model") == tmp_path / "zoo" / "test-only-model"
        with pytest.raises(FluosegError, match="model name"):
            resolve_model("vessels")
    finally:
        unregister_model_lookup(lookup)
    with pytest.raises(FluosegError, match="model name"):
        resolve_model("test-only-model")


def test_missing_paths_are_not_asked_of_lookups(tmp_path):
    asked = []
    lookup = register_model_lookup(lambda name: asked.append(name))
    try:
        with pytest.raises(FluosegError, match="no such run directory"):
            resolve_model(tmp_path / "missing" / "run")
        assert asked == []
    finally:
        unregister_model_lookup(lookup)
