"""visprune.book.performance.write_csv: the benchmarks' CSV writer."""

import csv

import pytest

from visprune.book.performance import write_csv


def test_write_csv_round_trip_and_float_format(tmp_path):
    rows = [{"step": "total", "wall_s": 521.725123456, "n": 3}, {"step": "render", "wall_s": 4.0, "n": 1}]
    out = write_csv(rows, tmp_path / "sub" / "t.csv")
    with out.open(newline="") as f:
        read = list(csv.DictReader(f))
    assert read == [{"step": "total", "wall_s": "521.725", "n": "3"}, {"step": "render", "wall_s": "4", "n": "1"}]
    out = write_csv(rows, tmp_path / "t2.csv", fields=["n", "step", "wall_s"])
    assert out.read_text().splitlines()[0] == "n,step,wall_s"


def test_write_csv_refuses_no_rows(tmp_path):
    with pytest.raises(ValueError, match="nothing to write"):
        write_csv([], tmp_path / "t.csv")
