"""Landmark face mask: region (face + brows + forehead band, not hair/background),
dilation, feathering, empty masks for frames without landmarks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from s3edit.face.mask import (
    ATTRIBUTE_REGIONS,
    SMILE_PAD,
    MaskConfig,
    attribute_region,
    edit_region,
    eye_band,
    eye_ellipses_t,
    face_mask,
    face_polygons,
    hard_face_mask,
)

SIZE = 256


def synthetic_landmarks() -> np.ndarray:
    """(68, 2) a frontal face in a 256 px crop: jaw ear-to-ear through the chin at
    (128, 220), brows at y ~ 90, eyes at y 110, nose 100-150, mouth at y 180."""
    lm = np.zeros((68, 2), np.float32)
    t = np.linspace(0, np.pi, 17)
    lm[0:17] = np.stack([128 - 80 * np.cos(t), 110 + 110 * np.sin(t)], -1)
    lm[17:22] = np.stack([np.linspace(70, 115, 5), [95, 90, 88, 88, 90]], -1)
    lm[22:27] = np.stack([np.linspace(141, 186, 5), [90, 88, 88, 90, 95]], -1)
    lm[27:31] = np.stack([np.full(4, 128), np.linspace(100, 140, 4)], -1)
    lm[31:36] = np.stack([np.linspace(115, 141, 5), np.full(5, 150)], -1)
    a = np.linspace(0, 2 * np.pi, 7)[:6]
    lm[36:42] = np.stack([95 + 12 * np.cos(a), 110 + 5 * np.sin(a)], -1)
    lm[42:48] = np.stack([161 + 12 * np.cos(a), 110 + 5 * np.sin(a)], -1)
    b = np.linspace(0, 2 * np.pi, 13)[:12]
    lm[48:60] = np.stack([128 - 25 * np.cos(b), 180 + 10 * np.sin(b)], -1)
    c = np.linspace(0, 2 * np.pi, 9)[:8]
    lm[60:68] = np.stack([128 - 15 * np.cos(c), 180 + 4 * np.sin(c)], -1)
    return lm


def test_mask_covers_face_and_forehead_not_background():
    m = face_mask(synthetic_landmarks()[None], SIZE)
    assert m.shape == (1, SIZE, SIZE) and m.dtype == np.float32
    assert m.min() >= 0 and m.max() <= 1
    m = m[0]
    for x, y in [(128, 140), (128, 180), (95, 110), (161, 110), (128, 200), (128, 62)]:
        assert m[y, x] == pytest.approx(1.0, abs=1e-3), (x, y)  # nose, mouth, eyes, chin, forehead
    for x, y in [(128, 15), (5, 5), (250, 128), (5, 128), (128, 250)]:
        assert m[y, x] == 0.0, (x, y)  # hair line and above, background, below the chin


def test_forehead_band_lifts_brows_upwards():
    lm = synthetic_landmarks()
    poly = face_polygons(lm[None])[0]
    brows_lifted = poly[17:]
    # brow-to-chin distance ~ 131 px; band 0.35 of it, straight up (chin is below)
    assert np.allclose(brows_lifted[:, 0], lm[17:27, 0], atol=1e-4)
    assert np.all(lm[17:27, 1] - brows_lifted[:, 1] > 40)


def test_no_dilate_no_feather_is_the_hard_region():
    lm = synthetic_landmarks()[None]
    soft = face_mask(lm, SIZE, MaskConfig(dilate=0, feather=0))
    hard = hard_face_mask(lm, SIZE).astype(np.float32)
    assert np.array_equal(soft, hard) and set(np.unique(hard)) == {0.0, 1.0}


def test_dilation_grows_and_feathering_softens():
    lm = synthetic_landmarks()[None]
    areas = [face_mask(lm, SIZE, MaskConfig(dilate=d, feather=0)).sum() for d in (0, 4, 12)]
    assert areas[0] < areas[1] < areas[2]
    sharp = face_mask(lm, SIZE, MaskConfig(dilate=8, feather=0))
    soft = face_mask(lm, SIZE, MaskConfig(dilate=8, feather=8))
    fractional = lambda m: np.count_nonzero((m > 0.02) & (m < 0.98))  # noqa: E731
    assert fractional(sharp) == 0 and fractional(soft) > 1000


def test_missing_landmarks_give_empty_mask():
    lm = np.stack([synthetic_landmarks(), np.full((68, 2), np.nan, np.float32)])
    m = face_mask(lm, SIZE)
    assert m[0].sum() > 0 and not m[1].any()


def test_defaults_scale_with_crop_size():
    lm = synthetic_landmarks()[None]
    small = face_mask(lm, SIZE)
    large = face_mask(lm * 2, 2 * SIZE)
    assert large.sum() / small.sum() == pytest.approx(4.0, rel=0.03)


# --- attribute regions -------------------------------------------------------------------


@pytest.mark.parametrize("style, attribute", [("classic", "Eyeglasses"), ("sunglasses", "Sunglasses")])
def test_the_glasses_regions_hold_every_pixel_their_decoder_styles_change(style, attribute):
    from skimage import data as skdata

    from s3edit.portraits.glasses import STYLE_ATTRIBUTES, STYLES, draw_glasses
    from s3edit.face.detect import make_detector

    assert STYLE_ATTRIBUTES[style] == attribute
    image = skdata.astronaut()
    lm = make_detector("dlib").detect(image)[0].landmarks
    changed = (draw_glasses(image, lm, STYLES[style]) != image).any(-1)
    region = attribute_region(attribute, torch.from_numpy(lm).float()[None], 512)[0].numpy()
    assert changed.sum() > 1000 and not (changed & ~region).any()
    assert region.mean() < 0.1  # the eyes of a face a fifth of the photo wide


def test_the_kept_lenses_hold_the_eyes_and_lie_inside_the_classic_frames():
    from skimage import data as skdata

    from s3edit.face.detect import make_detector
    from s3edit.portraits.glasses import CLASSIC, glasses_layers

    image = skdata.astronaut()
    lm = make_detector("dlib").detect(image)[0].landmarks
    kept = ATTRIBUTE_REGIONS["Eyeglasses"].kept(torch.from_numpy(lm).float()[None], 512)[0].numpy()
    lens, frame = glasses_layers(image.shape[:2], lm, CLASSIC)
    eyes = np.rint(lm[36:48]).astype(int)
    assert kept[eyes[:, 1], eyes[:, 0]].all()  # every eye landmark is kept
    assert kept.sum() > 0.35 * (lens > 0.5).sum()  # over a third of the lenses
    assert not (kept & (frame > 0.5)).any()  # the frames the decoder draws stay outside
    assert (kept & (frame > 0)).sum() < 0.05 * kept.sum()  # but for their anti-aliased edge
    assert ATTRIBUTE_REGIONS["Sunglasses"].kept(torch.from_numpy(lm).float()[None], 512) is None  # dark lenses


def test_eye_ellipses_follow_the_eye_line():
    lm = synthetic_landmarks()  # eyes at (95, 110) and (161, 110): eye distance 66 px
    level = eye_ellipses_t(torch.from_numpy(lm[None]), SIZE, (0.25, 0.1))[0].numpy()
    rows, cols = np.nonzero(level[:, :128])
    assert cols.min() == pytest.approx(95 - 16.5, abs=1) and cols.max() == pytest.approx(95 + 16.5, abs=1)
    assert rows.min() == pytest.approx(110 - 6.6, abs=1) and rows.max() == pytest.approx(110 + 6.6, abs=1)
    assert level[110, 161] and not level[110, 128]  # both eyes, not the bridge
    # the face turned by 90 degrees (eyes one above the other): the ellipses turn with it
    turned = np.stack([SIZE - 1 - lm[:, 1], lm[:, 0]], -1).astype(np.float32)
    upright = eye_ellipses_t(torch.from_numpy(turned[None]), SIZE, (0.25, 0.1))[0].numpy()
    assert (upright != np.rot90(level, -1)).sum() <= 4  # but for rounding on the outline


def test_attribute_region_is_the_widened_eye_band_and_none_without_one():
    lm = synthetic_landmarks()[None]
    region = attribute_region("Eyeglasses", torch.from_numpy(lm), SIZE)
    assert region.dtype == torch.bool and region.shape == (1, SIZE, SIZE)
    assert np.array_equal(region.numpy(), eye_band(lm, SIZE, pad=ATTRIBUTE_REGIONS["Eyeglasses"].pad))
    assert attribute_region("Young", torch.from_numpy(lm), SIZE) is None


def test_the_smiling_region_is_the_mouth_widened_to_the_cheeks_and_chin_not_the_eyes():
    lm = synthetic_landmarks()  # eye distance 66 px; mouth x 103-153, y 170-190; nostrils y 150
    region = attribute_region("Smiling", torch.from_numpy(lm[None]), SIZE)[0].numpy()
    across, up, down = SMILE_PAD
    rows, cols = np.nonzero(region)
    assert cols.min() == pytest.approx(103 - across * 66, abs=1) and cols.max() == pytest.approx(153 + across * 66, abs=1)
    assert rows.min() == pytest.approx(170 - up * 66, abs=1) and rows.max() == pytest.approx(190 + down * 66, abs=1)
    assert region[150, 115:141].all()  # the nostrils' row: the cheeks' folds beside the nose
    assert not region[:130].any()  # eyes and brows untouched
    # a smile's corners: a mouth a third wider than this one still lies inside
    wide = lm.copy()
    wide[48:68, 0] = (wide[48:68, 0] - 128) * 4 / 3 + 128
    corners = np.rint(wide[[48, 54]]).astype(int)
    assert region[corners[:, 1], corners[:, 0]].all()


def test_edit_region_is_soft_inside_one_and_none_when_any_attribute_has_no_region():
    lm = torch.from_numpy(np.stack([synthetic_landmarks(), synthetic_landmarks() + 10]))
    soft = edit_region(["Eyeglasses"], lm, SIZE)
    box = attribute_region("Eyeglasses", lm, SIZE)
    hard = box & ~ATTRIBUTE_REGIONS["Eyeglasses"].kept(lm, SIZE)  # less the kept lenses
    assert soft.shape == (2, 1, SIZE, SIZE) and soft.min() >= 0 and soft.max() <= 1
    assert (soft[:, 0][hard] > 0.5).float().mean() > 0.95  # inside: the edit, but for the feathered rims
    assert (soft[:, 0][~box] < 0.5).all()
    assert soft[0, 0, 220:].max() == 0 and soft[0, 0, :40].max() == 0  # mouth, chin and hair untouched
    assert not torch.equal(soft[0], soft[1])  # per frame, from each frame's landmarks
    assert 0 < soft[0, 0][~box[0]].max() < 0.5  # feathered: no seam at the box's edge
    assert edit_region(["Eyeglasses", "Young"], lm, SIZE) is None
    both = edit_region(["Eyeglasses", "Smiling"], lm, SIZE)  # the union of the eyes' and the mouth's
    assert both[0, 0, 110, 128] > 0.5 and both[0, 0, 180, 128] > 0.5 and both[0, 0, 60, 128] == 0
    assert edit_region([], lm, SIZE) is None


def test_an_eyeglasses_edit_keeps_the_eyes_as_they_were():
    lm = torch.from_numpy(synthetic_landmarks()[None])
    soft = edit_region(["Eyeglasses"], lm, SIZE)[0, 0]
    assert soft[110, 95] < 0.01 and soft[110, 161] < 0.01  # the eyes: the original, through a clear lens
    assert soft[110, 128] > 0.9 and soft[85, 95] > 0.9  # the bridge and the rim above the eye: the edit
    sun = edit_region(["Sunglasses"], lm, SIZE)[0, 0]
    assert sun[110, 95] > 0.99  # dark lenses cover the eyes
