"""Edit-pairs files (``s3edit.train.pairs``): round trip, rows in the training data, and
every user-facing error."""

from __future__ import annotations

import json

import numpy as np
import pytest

from s3edit.train.pairs import read_pairs, resolve_pairs, write_pairs
from s3edit.errors import InputError


def test_round_trip_stores_job_paths_relative_to_the_file(tmp_path):
    path = write_pairs(tmp_path / "p.json", "Eyeglasses", tmp_path / "job", tmp_path / "twins",
                       np.array([[0, 0], [4, 1]]), note="test")
    meta = json.loads(path.read_text())
    assert meta["without"] == "job" and meta["with"] == "twins"
    pairs = read_pairs(path)
    assert pairs.attribute == "Eyeglasses" and pairs.frames.dtype == np.int64
    assert pairs.frames.tolist() == [[0, 0], [4, 1]]
    assert pairs.without == tmp_path / "job" and pairs.with_ == tmp_path / "twins"
    outside = write_pairs(tmp_path / "sub" / "q.json", "Smiling", tmp_path / "job", tmp_path / "twins", [[1, 2]])
    assert read_pairs(outside).without == (tmp_path / "job").resolve()


def test_rows_follow_the_data_order_and_skip_invalid_frames(tmp_path):
    pairs = read_pairs(write_pairs(tmp_path / "p.json", "Eyeglasses", tmp_path / "a", tmp_path / "b",
                                   [[2, 0], [5, 3]]))
    # data = job "other" (3 rows), job "b" (frames 0, 1, 3: 2 was invalid), job "a" (frames 0, 2, 5)
    roots = [tmp_path / "other", tmp_path / "b", tmp_path / "a"]
    numbers = [np.arange(3), np.array([0, 1, 3]), np.array([0, 2, 5])]
    assert resolve_pairs(pairs, roots, numbers).tolist() == [[3 + 3 + 1, 3 + 0], [3 + 3 + 2, 3 + 2]]
    with pytest.raises(InputError, match="frame 2 of .* is not a valid frame of job"):
        bad = read_pairs(write_pairs(tmp_path / "q.json", "Eyeglasses", tmp_path / "a", tmp_path / "b", [[2, 2]]))
        resolve_pairs(bad, roots, numbers)
    with pytest.raises(InputError, match="the 'with' job .* is not among the training inputs"):
        resolve_pairs(pairs, roots[2:], numbers[2:])


@pytest.mark.parametrize("content, message", [
    (None, "does not exist"),
    ("{", "is not readable JSON"),
    ('{"format": "other"}', "is not an s3edit pairs file of version 1"),
    ('{"format": "s3edit-edit-pairs", "version": 1, "attribute": "A", "without": "a", "with": "b", "frames": []}',
     "holds no pairs"),
    ('{"format": "s3edit-edit-pairs", "version": 1, "attribute": "A", "frames": [[0, 1]]}', "lacks or mangles"),
])
def test_bad_files_say_what_is_wrong(tmp_path, content, message):
    path = tmp_path / "p.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(InputError, match=message):
        read_pairs(path)
