"""The score stage end to end on the example clip (short cuts of it, to stay fast), its
errors, the CLI's table / JSON / plot, and a real-clip check on shared footage."""

from __future__ import annotations

import dataclasses
import json

import cv2
import numpy as np
import pytest

from s3edit.errors import InputError, JobError
from s3edit.face import identity
from s3edit.face.detect import make_detector
from s3edit.face.identity import IdentityNet, l2_normalise
from s3edit.job import Job
from s3edit.metrics.psnr import PSNR_IDENTICAL
from s3edit.metrics.sheet import DEFAULT_TILE, LABEL_HEIGHT
from s3edit.pipeline.score import AttributeTarget, resolve_edited, score
from s3edit.video.io import VideoWriter, iter_frames, probe, source_info

SHORT = 16  # frames of the example clip the tests score


def write_copy(src, out, change=None, stop=None, size=None):
    """Re-encode ``src`` (first ``stop`` frames) with ``change(image) -> image``, at
    ``size`` (w, h) if ``change`` resizes."""
    info = probe(src)
    if size is not None:
        info = dataclasses.replace(info, width=size[0], height=size[1])
    with VideoWriter(out, like=info) as writer:
        for frame in iter_frames(src, stop=stop):
            image = frame.image if change is None else change(frame.image)
            writer.write(np.ascontiguousarray(image), frame.pts)
    return out


class PatchNet(IdentityNet):
    """A cheap stand-in identity net for tests of the plumbing: the face box's colours
    pooled to 4x4, centred. Any change of the face changes it."""

    name = "patch-4x4 (test)"
    dim = 48

    def embed(self, images, landmarks):
        rows = []
        for img, lm in zip(images, landmarks):
            x0, y0 = np.floor(lm.min(0)).astype(int)
            x1, y1 = np.ceil(lm.max(0)).astype(int)
            patch = cv2.resize(img[y0:y1, x0:x1], (4, 4), interpolation=cv2.INTER_AREA)
            rows.append(patch.astype(np.float32).ravel() - 100.0)
        return l2_normalise(np.array(rows))


class BrightnessHeads:
    """Fake attribute heads: "Bright" (face brighter than ``level``) and "Face" (always)."""

    names = ["Bright", "Face"]

    def __init__(self, level: float):
        self.level = level

    def predict(self, images, landmarks):
        means = np.array([img[int(lm[:, 1].min()):int(lm[:, 1].max()),
                              int(lm[:, 0].min()):int(lm[:, 0].max())].mean()
                          for img, lm in zip(images, landmarks)])
        return np.stack([means - self.level, np.ones_like(means)], axis=1)


@pytest.fixture(scope="module")
def clips(example_clip, tmp_path_factory):
    d = tmp_path_factory.mktemp("score")
    return {
        "short": write_copy(example_clip, d / "short.mp4", stop=SHORT),
        "blurred": write_copy(example_clip, d / "blurred.mp4",
                              lambda im: cv2.GaussianBlur(im, (0, 0), 3.0), stop=SHORT),
        "bright": write_copy(example_clip, d / "bright.mp4",
                             lambda im: cv2.add(im, np.full_like(im, 40)), stop=SHORT),
        "cut": write_copy(example_clip, d / "cut.mp4", stop=SHORT - 4),
        "small": write_copy(example_clip, d / "small.mp4",
                            lambda im: cv2.resize(im, (320, 320)), stop=SHORT, size=(320, 320)),
        "dir": d,
    }


@pytest.fixture
def patch_net(monkeypatch):
    monkeypatch.setitem(identity.ID_NETS, "patch", PatchNet)
    return "patch"


# --- metrics on real embeddings (dlib C++) --------------------------------------


@pytest.fixture(scope="module")
def self_report(clips):
    return score(clips["short"], clips["short"])


def test_a_video_against_itself_scores_one(self_report):
    r = self_report
    assert r.n_frames == SHORT and r.n_face_frames == SHORT and r.landmarks_from == "detected"
    assert "dlib_face_recognition_resnet_model_v1" in r.id_net
    assert r.id_preserve == pytest.approx(1.0, abs=1e-5)
    assert r.tl_id == pytest.approx(1.0, abs=1e-6) and r.tg_id == pytest.approx(1.0, abs=1e-6)
    assert r.warp_edited == r.warp_source and 0 < r.warp_source < 10
    assert np.isnan(r.series.warp_source[0]) and np.isfinite(r.series.warp_source[1:]).all()
    assert r.psnr_face == r.psnr_face_worst == PSNR_IDENTICAL
    assert r.tacr is None and r.napr is None


def test_a_blurred_copy_lowers_id_preserve(clips, self_report):
    r = score(clips["short"], clips["blurred"])
    assert r.id_preserve < 0.99 and r.id_preserve < self_report.id_preserve - 0.01
    assert 15 < r.psnr_face_worst <= r.psnr_face < 45
    assert r.tl_id == pytest.approx(1.0, abs=0.02)  # uniform blur stays consistent over time
    assert np.nanmax(r.series.id_to_source) < 0.995


# --- plumbing, with a cheap identity net ----------------------------------------------


@pytest.fixture(scope="module")
def short_job(clips):
    from s3edit.pipeline.align import align_video

    return align_video(clips["short"], clips["dir"] / "short.job", size=128)


def test_paste_round_trip_scored_from_jobs(short_job, clips):
    from s3edit.pipeline.paste import paste_video

    paste_video(short_job, clips["dir"] / "round_trip.mp4")
    r = score(short_job.root, short_job.root)  # ORIGINAL = its source, EDITED = its paste
    assert r.landmarks_from == "job" and r.edited == str((clips["dir"] / "round_trip.mp4").resolve())
    assert r.id_preserve > 0.99 and r.psnr_face > 35  # the paste round trip keeps the face
    assert r.tl_id == pytest.approx(1.0, abs=0.01) and r.tg_id == pytest.approx(1.0, abs=0.01)


def test_landmarks_come_from_the_original_job(short_job, clips, patch_net):
    job = short_job
    r = score(job.root, clips["bright"], id_net=patch_net)
    assert r.landmarks_from == "job" and r.original == str(clips["short"].resolve())
    detected = score(clips["short"], clips["bright"], id_net=patch_net)
    assert r.id_preserve == pytest.approx(detected.id_preserve, abs=0.02)
    assert r.id_preserve < 0.99


def test_edited_job_means_its_pasted_video(clips, tmp_path):
    job = Job.create(tmp_path / "job", source_info(probe(clips["short"])))
    with pytest.raises(JobError, match="records no pasted video; pass the edited video file"):
        resolve_edited(job.root)
    job.finish_stage("paste", output=str(clips["blurred"].resolve()))
    assert resolve_edited(job.root) == clips["blurred"].resolve()


def test_tacr_and_napr_with_attribute_heads(clips, patch_net):
    first = next(iter_frames(clips["short"])).image
    lm = make_detector("dlib").detect(first)[0].landmarks
    level = BrightnessHeads(0).predict([first], lm[None])[0, 0] + 15  # +40 crosses it
    attr = AttributeTarget(BrightnessHeads(level), "Bright", +1)
    r = score(clips["short"], clips["bright"], id_net=patch_net, attr=attr)
    assert r.attribute == "Bright" and r.tacr == 1.0 and r.napr == 1.0
    assert r.flips == {"Face": 0.0}  # the other head ("always") never flips
    data = r.to_dict()
    assert data["tacr"] == 1.0 and not any("need attribute heads" in n for n in data["notes"])
    with pytest.raises(InputError, match="'Beard' is not one the attribute heads predict"):
        score(clips["short"], clips["bright"], attr=AttributeTarget(BrightnessHeads(0), "Beard"))


@pytest.mark.parametrize("which, message", [
    ("cut", "the original has 16 frames but the edited video has 12; score compares frame by frame"),
    ("small", "the original is 384x384 but the edited video is 320x320; pass the full-frame edit"),
])
def test_mismatched_videos_are_refused(clips, which, message):
    with pytest.raises(InputError, match=message):
        score(clips["short"], clips[which])


def test_a_video_without_a_face_is_refused(clips):
    from s3edit.errors import NoFaceError

    grey = write_copy(clips["short"], clips["dir"] / "grey.mp4",
                      lambda im: np.full_like(im, 128), stop=3)
    with pytest.raises(NoFaceError, match="no face was found in any frame of the original"):
        score(grey, grey, id_net=PatchNet())


def test_missing_inputs_are_refused(clips, tmp_path):
    with pytest.raises(InputError, match="original video .*nope.mp4' does not exist"):
        score(tmp_path / "nope.mp4", clips["short"])
    with pytest.raises(InputError, match="edited video .*nope.mp4' does not exist"):
        score(clips["short"], tmp_path / "nope.mp4")
    with pytest.raises(JobError, match="is not an s3edit job folder"):
        score(tmp_path, clips["short"])
    job = Job.create(tmp_path / "job", source_info(probe(clips["short"])))
    with pytest.raises(JobError, match="has no finished align stage; run `s3edit align"):
        score(job.root, clips["short"], id_net=PatchNet())
    job.finish_stage("paste", output=str(tmp_path / "gone.mp4"))
    with pytest.raises(InputError, match="gone.mp4' recorded in job .* is missing; pass the edited"):
        score(clips["short"], job.root)


# --- CLI -------------------------------------------------------------------------


def test_cli_json_plot_and_sheet(cli, clips, patch_net, tmp_path):
    plot, sheet = tmp_path / "score.png", tmp_path / "sheet.png"
    result = cli("-q", "score", str(clips["short"]), str(clips["blurred"]), "--id-net", patch_net,
                 "--json", "--plot", str(plot), "--sheet", str(sheet))
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["format"] == "s3edit-score" and data["id_net"] == PatchNet.name
    assert 0 < data["id_preserve"] < 1 and data["n_frames"] == SHORT
    assert data["tacr"] is None and any("need attribute heads" in n for n in data["notes"])
    assert len(data["per_frame"]["warp_edited"]) == SHORT and data["per_frame"]["warp_edited"][0] is None
    assert data["paper_figures"]["S3Editor"]["tl_id"] == 0.9986
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    picture = cv2.imread(str(sheet))  # caption, original row, caption, edited row
    columns = min(6, SHORT)
    assert picture.shape == (LABEL_HEIGHT + 2 * (LABEL_HEIGHT + DEFAULT_TILE), columns * DEFAULT_TILE, 3)
    top = picture[2 * LABEL_HEIGHT:2 * LABEL_HEIGHT + DEFAULT_TILE].astype(float)
    bottom = picture[-DEFAULT_TILE:].astype(float)
    assert 1 < np.abs(top - bottom).mean() < 40  # the same faces, one row blurred

    again = cli("-q", "score", str(clips["short"]), str(clips["blurred"]), "--id-net", patch_net,
                "--plot", str(plot))
    assert again.exit_code == 1
    assert "already exists; pass --overwrite to replace it" in again.stderr
    assert "Traceback" not in again.stderr


def test_cli_table_names_the_net_and_says_why_no_tacr(cli, clips, patch_net):
    result = cli("-q", "score", str(clips["short"]), str(clips["short"]), "--id-net", patch_net)
    assert result.exit_code == 0, result.stderr
    assert "identity net: patch-4x4 (test)" in result.stdout
    assert "ID-Preserve" in result.stdout and "1.0000" in result.stdout
    assert "need attribute heads" in result.stdout and "0.9456" in result.stdout


@pytest.mark.parametrize("args, message", [
    (["--id-net", "facenet"], "unknown identity net 'facenet'; choose one of:"),
    (["--id-net", "arcface", "--weights", "./no-such-set"], "weight-set folder 'no-such-set' does not exist"),
    (["--cut"], "score compares frame by frame"),
])
def test_cli_errors_are_one_line(cli, clips, args, message):
    edited = clips["cut"] if "--cut" in args else clips["short"]
    extra = [a for a in args if a != "--cut"]
    result = cli("-q", "score", str(clips["short"]), str(edited), *extra)
    assert result.exit_code == 1
    assert message in result.stderr and "Traceback" not in result.stderr


# --- real footage -------------------------------------------------------------------


@pytest.mark.shared
@pytest.mark.slow
def test_real_clip_blur_lowers_identity_only(shared_clips, tmp_path):
    src = shared_clips / "talk_man_short_2s.mp4"
    if not src.is_file():
        pytest.skip("talk_man_short_2s.mp4 is absent")
    short = write_copy(src, tmp_path / "real.mp4", stop=60)
    blurred = write_copy(src, tmp_path / "real_blur.mp4",
                         lambda im: cv2.GaussianBlur(im, (0, 0), 3.0), stop=60)
    r = score(short, blurred)
    assert r.n_frames == 60 and r.n_face_frames >= 55
    assert 0.8 < r.id_preserve < 0.99
    assert r.tl_id == pytest.approx(1.0, abs=0.02) and r.tg_id == pytest.approx(1.0, abs=0.03)
    assert r.warp_edited_face < r.warp_source_face  # blur smooths what the flow misses
