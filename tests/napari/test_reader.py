"""npe2 reader contract: a function for readable paths, None for others."""

from __future__ import annotations

import numpy as np
import pytest

from fluoseg.errors import FluosegError
from fluoseg.io import write_image
from fluoseg.napari.reader import get_reader


def test_reader_is_offered_for_image_files_only(tmp_path):
    path = write_image(tmp_path / "labels.tif", np.eye(4, dtype=np.uint16), axes="YX")
    reader = get_reader(str(path))
    ((data, _, kind),) = reader(str(path))
    assert kind == "labels" and np.array_equal(data, np.eye(4))
    assert get_reader(str(tmp_path / "notes.txt")) is None
    with pytest.raises(FluosegError, match="not found"):
        reader(str(tmp_path / "gone.tif"))
