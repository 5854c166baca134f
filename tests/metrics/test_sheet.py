"""Contact sheets: frame picks, face boxes at the frame's edge, tile and sheet layout."""

from __future__ import annotations

import cv2
import numpy as np

from s3edit.metrics.sheet import (
    LABEL_HEIGHT, contact_sheet, face_box, pick_frames, tile, write_sheet,
)


def test_pick_frames_spreads_over_the_face_frames():
    valid = np.zeros(20, bool)
    valid[5:15] = True
    assert pick_frames(valid, 3) == [5, 9, 14]  # positions 0, 4.5 -> 4 (to even), 9
    assert pick_frames(valid, 50) == list(range(5, 15))
    assert pick_frames(np.zeros(4, bool), 3) == [] and pick_frames(valid, 0) == []


def test_face_box_is_square_and_clipped_to_the_frame():
    lm = np.array([[40.0, 50.0], [60.0, 90.0]]).repeat(34, axis=0)
    assert face_box(lm, (200, 300), margin=1.0) == (30, 50, 70, 90)
    x0, y0, x1, y1 = face_box(lm - 45, (200, 300), margin=2.0)  # near the top-left corner
    assert (x0, y0, x1, y1) == (0, 0, 45, 65)


def test_tile_letterboxes_and_the_sheet_stacks_rows(tmp_path):
    image = np.zeros((100, 200, 3), np.uint8)
    image[:, :100] = 255
    t = tile(image, (0, 0, 200, 100), size=64)
    assert t.shape == (64, 64, 3) and t[:16].max() == 0 and t[32, :30].min() == 255
    sheet = contact_sheet([("a", [t, t, t]), ("b", [t, t, t])], ["frame 0", "frame 1", "frame 2"])
    assert sheet.shape == (LABEL_HEIGHT + 2 * (LABEL_HEIGHT + 64), 3 * 64, 3)
    write_sheet(sheet, tmp_path / "s.png")
    np.testing.assert_array_equal(cv2.cvtColor(cv2.imread(str(tmp_path / "s.png")), cv2.COLOR_BGR2RGB), sheet)
