"""Atomic files and jsonl: round trips, natural key order, no partial file when a write fails."""

import json

import pytest

from rzero_jax import io


class Unserializable:
  pass


def test_atomic_json_round_trip_and_natural_order(tmp_path):
  path = str(tmp_path / "d" / "x.json")
  io.atomic_json(path, {"b": 1, "a": [1.5]})
  assert open(path).read() == '{\n  "b": 1,\n  "a": [\n    1.5\n  ]\n}'
  assert [p.name for p in (tmp_path / "d").iterdir()] == ["x.json"]
  points = {"step_16": {"b": 2, "a": 1}, "base": 0, "step_8": 1, "iter_10": 3, "iter_2": 4}
  io.atomic_json(path, points, natural_order=True)
  assert list(json.load(open(path))) == ["base", "iter_2", "iter_10", "step_8", "step_16"]
  io.atomic_json(path + "2", dict(reversed(points.items())), natural_order=True)
  assert open(path).read() == open(path + "2").read()
  io.atomic_json(path, {"a": [1]}, indent=None, newline=True)
  assert open(path).read() == '{"a": [1]}\n'


def test_jsonl_round_trip(tmp_path):
  path = str(tmp_path / "d" / "r.jsonl")
  records = [{"question": "é = ?", "p_hat": 0.5}, {"answer": None}]
  io.write_jsonl(path, records)
  assert (
      open(path, encoding="utf-8").read().splitlines()[0] == '{"question": "é = ?", "p_hat": 0.5}'
  )
  assert io.read_jsonl(path) == records


def test_partial_jsonl_skips_a_torn_line_and_a_missing_file(tmp_path):
  path = tmp_path / "r.jsonl"
  path.write_text('{"a": 1}\n\n{"a": 2}\n{"a": ')
  with pytest.raises(ValueError):
    io.read_jsonl(str(path))
  assert io.read_jsonl(str(path), partial=True) == [{"a": 1}, {"a": 2}]
  assert io.read_jsonl(str(tmp_path / "none.jsonl"), partial=True) == []
  with pytest.raises(OSError):
    io.read_jsonl(str(tmp_path / "none.jsonl"))


@pytest.mark.parametrize(
    "write",
    [
        lambda path: io.atomic_json(path, {"a": Unserializable()}),
        lambda path: io.write_jsonl(
            path, ({"a": i} if i < 2 else Unserializable() for i in range(3))
        ),
    ],
)
def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, write):
  path = tmp_path / "x.json"
  path.write_text("old")
  with pytest.raises(TypeError):
    write(str(path))
  assert path.read_text() == "old"
  assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_a_writer_interrupted_mid_write_leaves_no_partial_file(tmp_path, monkeypatch):
  # The text is written to the temporary file, then the rename fails (a kill at that point).
  path = tmp_path / "x.txt"

  def fail(src, dst):
    assert open(src).read() == "new text"
    raise KeyboardInterrupt

  monkeypatch.setattr(io.os, "replace", fail)
  with pytest.raises(KeyboardInterrupt):
    io.atomic_write_text(str(path), "new text")
  assert list(tmp_path.iterdir()) == []
