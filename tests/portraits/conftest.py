"""Fixtures of the portrait tests: a tiny portrait folder made from scikit-image's
astronaut photo, the way a user's ``faces.csv`` folder is laid out."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage import data

# A tight crop around the astronaut's face box (179, 83)-(267, 171), as (rows, columns).
TIGHT = (slice(70, 190), slice(165, 280))


def make_folder(root: Path, n_faces: int = 2) -> Path:
    """A tiny portrait folder: tight astronaut crops (two sources) + one photo without a face."""
    image = data.astronaut()
    rows = []
    for i in range(n_faces):
        src = "studio" if i % 2 == 0 else "web"
        path = root / src / f"face{i}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        crop = np.ascontiguousarray(image[TIGHT][:, ::-1] if i % 2 else image[TIGHT])
        cv2.imwrite(str(path), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
        rows.append({"file": f"{src}/face{i}.jpg", "source": src, "person": f"p{i}", "gender": "female"})
    noise = np.random.default_rng(1).integers(0, 255, (100, 100, 3), dtype=np.uint8)
    (root / "web").mkdir(exist_ok=True)
    cv2.imwrite(str(root / "web" / "noise.png"), noise)
    rows.append({"file": "web/noise.png", "source": "web", "person": "noise", "gender": ""})
    with open(root / "faces.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root


@pytest.fixture(name="make_folder", scope="session")
def make_folder_fixture() -> Callable[..., Path]:
    """``make_folder(root, n_faces=2)`` -> root, a portrait folder with its faces.csv."""
    return make_folder


@pytest.fixture(scope="session")
def tight_box() -> tuple[slice, slice]:
    """The (rows, columns) slices of the tight face crop ``make_folder`` writes."""
    return TIGHT
