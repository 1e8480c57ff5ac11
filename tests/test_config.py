from pathlib import Path

import pytest
import yaml

from fluoseg.config import load_config
from fluoseg.errors import FluosegError


def write(tmp_path: Path, content: dict | str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(content if isinstance(content, str) else yaml.safe_dump(content))
    return path


def test_defaults_and_relative_manifest(tmp_path):
    config = load_config(write(tmp_path, {"data": {"manifest": "m.yaml"}}))
    assert config.data.manifest == (tmp_path / "m.yaml").resolve()
    assert config.model.name == "unet"
    assert config.train.patch_size == 572
    assert config.preprocess.normalization == "gaussian"


def test_unknown_key_is_named(tmp_path):
    path = write(tmp_path, {"data": {"manifest": "m.yaml"}, "train": {"epoch": 3}})
    with pytest.raises(FluosegError, match=r"unknown key 'train.epoch'") as info:
        load_config(path)
    assert "c.yaml" in str(info.value)


def test_invalid_value_is_named(tmp_path):
    with pytest.raises(FluosegError, match="train.epochs"):
        load_config(write(tmp_path, {"data": {"manifest": "m.yaml"}, "train": {"epochs": 0}}))


def test_missing_required_key(tmp_path):
    with pytest.raises(FluosegError, match="missing required key 'data'"):
        load_config(write(tmp_path, {"train": {}}))


@pytest.mark.parametrize("section, message", [
    ({"model": {"name": "resnet9000"}}, "model.name: unknown model 'resnet9000'; available: .*unet"),
    ({"train": {"loss": "focus"}}, "unknown loss 'focus'; available: .*bce"),
    ({"task": "instance", "instance": {"method": "magic"}}, "unknown instance method 'magic'; choose one of .*border"),
])
def test_registry_names_are_checked_when_training_starts(tmp_path, section, message):
    from fluoseg.train.trainer import check_names

    path = write(tmp_path, {"data": {"manifest": "m.yaml"}, **section})
    config = load_config(path)  # the schema holds registry names as plain strings
    with pytest.raises(FluosegError, match=message) as info:
        check_names(config, ("a",))
    assert info.value.path == path and "\n" not in str(info.value)


def test_loading_a_config_imports_no_torch(tmp_path):
    import subprocess
    import sys

    path = write(tmp_path, {"data": {"manifest": "m.yaml"}, "train": {"loss": "dice"}})
    code = f"import sys, fluoseg; fluoseg.load_config({str(path)!r}); print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


@pytest.mark.parametrize("text", ["data: [unclosed", "- just\n- a list\n", ""])
def test_broken_yaml_is_one_line_error(tmp_path, text):
    with pytest.raises(FluosegError) as info:
        load_config(write(tmp_path, text))
    assert "\n" not in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(FluosegError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_percentiles_must_be_ordered(tmp_path):
    with pytest.raises(FluosegError, match="percentiles"):
        load_config(write(tmp_path, {"data": {"manifest": "m.yaml"}, "preprocess": {"percentiles": [99, 1]}}))
