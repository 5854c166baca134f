"""PSNR over a frame or a region: known values, identical images, empty regions."""

from __future__ import annotations

import math

import numpy as np

from s3edit.metrics.psnr import PSNR_IDENTICAL, psnr


def test_psnr_of_a_known_error_inside_and_outside_a_region():
    a = np.full((20, 30, 3), 100, np.uint8)
    b = a.copy()
    b[:10] += 5  # error 5 on the top half only
    region = np.zeros((20, 30), bool)
    region[:10] = True
    assert psnr(a, b, region) == np.float64(10 * np.log10(255**2 / 25))
    assert math.isclose(psnr(a, b), 10 * np.log10(255**2 / 12.5))
    assert psnr(a, b, ~region) == PSNR_IDENTICAL


def test_psnr_identical_and_empty_region():
    a = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    assert psnr(a, a) == PSNR_IDENTICAL
    assert math.isnan(psnr(a, a, np.zeros((8, 8), bool)))
