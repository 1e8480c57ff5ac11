"""Tests of fluoseg.io.points: the y,x CSV of point annotations."""

from __future__ import annotations

import numpy as np
import pytest

from fluoseg.errors import FluosegError
from fluoseg.io.points import read_points_csv, write_points_csv


def test_round_trip_and_extra_columns(tmp_path):
    points = np.array([[1.5, 2.0], [9.0, 0.0]], np.float32)
    path = write_points_csv(tmp_path / "a.csv", points)
    assert path.read_text().splitlines() == ["y,x", "1.5,2", "9,0"]
    np.testing.assert_array_equal(read_points_csv(path, (10, 3)), points)
    other = tmp_path / "b.csv"
    other.write_text("label,X,Y\n7,4,3\n\n8,0.5,1\n")  # any column order and case; blank lines skipped
    np.testing.assert_array_equal(read_points_csv(other), [[3.0, 4.0], [1.0, 0.5]])
    (tmp_path / "empty.csv").write_text("y,x\n")
    assert read_points_csv(tmp_path / "empty.csv").shape == (0, 2)


def test_write_refuses_an_existing_file_without_overwrite(tmp_path):
    path = write_points_csv(tmp_path / "a.csv", np.zeros((1, 2)))
    with pytest.raises(FluosegError, match="overwrite"):
        write_points_csv(path, np.ones((1, 2)))
    write_points_csv(path, np.ones((1, 2)), overwrite=True)
    assert read_points_csv(path).tolist() == [[1.0, 1.0]]


@pytest.mark.parametrize(("text", "message"), [
    ("row,col\n1,2\n", r"needs a header with columns y,x; found \['row', 'col'\]"),
    ("", r"needs a header with columns y,x; found \[\]"),
    ("y,x\n1,two\n", "line 2: y and x must be numbers"),
    ("y,x\n1\n", "line 2: y and x must be numbers"),
    ("y,x\n1,nan\n", "line 2: y and x must be finite numbers"),
    ("y,x\n1,2\n10,0\n", r"line 3: point \(y=10, x=0\) lies outside the 10x20 image"),
    ("y,x\n-0.5,2\n", r"line 2: point \(y=-0.5, x=2\) lies outside"),
    ("y,x\n0,20\n", r"point \(y=0, x=20\) lies outside"),
])
def test_bad_files_are_one_line_errors_naming_the_file(tmp_path, text, message):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(FluosegError, match=message) as error:
        read_points_csv(path, (10, 20))
    assert "bad.csv" in str(error.value) and "\n" not in str(error.value)


def test_missing_file(tmp_path):
    with pytest.raises(FluosegError, match="gone.csv"):
        read_points_csv(tmp_path / "gone.csv")
