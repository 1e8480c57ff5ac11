"""Tests of the small atomic text/CSV writers in fluoseg.io."""

from __future__ import annotations

import csv

from fluoseg.io import write_csv_atomically, write_text_atomically


def test_text_and_csv_writers_replace_whole_files_and_leave_no_temporaries(tmp_path):
    target = write_text_atomically(tmp_path / "new" / "run.json", '{"a": 1}')
    assert target.read_text() == '{"a": 1}'
    write_text_atomically(target, "{}")
    assert target.read_text() == "{}"

    table = write_csv_atomically(tmp_path / "t.csv", [{"a": 1, "b": 2}, {"b": 3, "c": 4}])
    with table.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["a", "b", "c"] and rows[1] == {"a": "", "b": "3", "c": "4"}
    assert write_csv_atomically(tmp_path / "e.csv", []).read_text().strip() == "empty"
    assert not [p for p in tmp_path.rglob("*") if "partial" in p.name]
