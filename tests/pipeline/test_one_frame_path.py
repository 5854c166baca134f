"""One frame's path through ``s3edit edit VIDEO``: every original crop is read at most
twice (the encode stage's two passes), the source video is decoded at most twice
(align's one streaming pass, paste) and the track file is not read back after align
writes it; the provisional crops align makes while it detects equal crops made from
the final track."""

from __future__ import annotations

from collections import Counter

import numpy as np

import s3edit.job as job_module
import s3edit.pipeline.align as pa
import s3edit.pipeline.paste as pp
from s3edit.face import align as fa
from s3edit.job import Job
from s3edit.pipeline.run import edit_video
from s3edit.video import io as vio


def test_edit_video_reads_each_crop_three_times_and_decodes_the_video_twice(example_clip, small_weights, tiny,
                                                                           tmp_path, monkeypatch):
    decodes, reads = [], Counter()
    real_iter, real_read = vio.iter_frames, Job.read_crops

    def counting_iter(path, **kw):
        decodes.append(kw)
        return real_iter(path, **kw)

    def counting_read(self, indices, edit=None):
        indices = list(indices)
        reads.update((edit, int(i)) for i in indices)
        return real_read(self, indices, edit)

    track_reads = []
    real_open = job_module.safe_open

    def counting_open(path, *args, **kwargs):
        if str(path).endswith("track.safetensors"):
            track_reads.append(path)
        return real_open(path, *args, **kwargs)

    for module in (pa, pp):
        monkeypatch.setattr(module, "iter_frames", counting_iter)
    monkeypatch.setattr(Job, "read_crops", counting_read)
    monkeypatch.setattr(job_module, "safe_open", counting_open)
    result = edit_video(example_clip, [("Eyeglasses", 0.6)], tmp_path / "out.mp4", job_dir=tmp_path / "a.s3job",
                        weights=small_weights, steps=2, device="cpu", size=tiny.crop_size)
    assert result.video.is_file()
    frames = result.job.aligned_frames().indices
    assert len(decodes) == 2, decodes  # align (one pass) and paste
    # the encode stage's two passes, and the confined edit's original crop (x0 outside the region)
    assert {reads[(None, int(i))] for i in frames} == {3}
    assert not [k for k in reads if k[0] is not None]  # a confined edit is pasted from its change
    assert not track_reads  # align wrote the track; the later stages share its arrays


def test_provisional_crops_equal_crops_of_the_final_track(example_clip, tmp_path):
    job = pa.align_video(example_clip, tmp_path / "a.s3job", size=64, max_frames=40)
    assert not (job.align_dir / "crops.provisional.npz").exists()
    track = job.read_track("valid", "transforms")
    for frame in vio.iter_frames(example_clip, stop=40):
        if track["valid"][frame.index]:
            expected = fa.warp_crop(frame.image, track["transforms"][frame.index].astype(np.float64), 64)
            assert np.array_equal(job.read_crops([frame.index])[0], expected)


def test_a_provisional_crop_the_final_track_does_not_confirm_is_made_again(example_clip, tmp_path, monkeypatch):
    """A provisional crop whose transform differs from the final track's is removed and
    made again from a second decode of that frame."""
    real_crop = pa.ProvisionalCropper._crop

    def off_by_a_pixel(self, pts, dets, settled):
        before = set(self.indices)
        real_crop(self, pts, dets, settled)
        for k, i in enumerate(self.indices):
            if i not in before and i == 5:  # a wrong crop, recorded with a transform the track will not have
                self.transforms[k] = self.transforms[k] + np.eye(3, dtype=np.float32) * 0.01
                self.job.write_crop(5, np.zeros((64, 64, 3), np.uint8))
        self.job.write_provisional(np.asarray(self.indices), np.asarray(self.transforms))

    decodes = []
    real_iter = vio.iter_frames

    def counting_iter(path, **kw):
        decodes.append(kw)
        return real_iter(path, **kw)

    monkeypatch.setattr(pa.ProvisionalCropper, "_crop", off_by_a_pixel)
    monkeypatch.setattr(pa, "iter_frames", counting_iter)
    job = pa.align_video(example_clip, tmp_path / "a.s3job", size=64, max_frames=40)
    assert decodes[1:] == [{"start": 5, "stop": 6}]  # only frame 5 is decoded again
    track = job.read_track("transforms")
    frame = next(f for f in vio.iter_frames(example_clip, stop=40) if f.index == 5)
    expected = fa.warp_crop(frame.image, track["transforms"][5].astype(np.float64), 64)
    assert np.array_equal(job.read_crops([5])[0], expected)


def test_real_clip_with_occlusion_and_a_cut_aligns_in_one_decode(shared_clips, tmp_path, monkeypatch):
    """On real footage (a hand over the face; a face that leaves at a cut) every crop is
    still made in the detection pass and equals the crop of the final track."""
    real_iter = vio.iter_frames
    for name in ("woman_hand_occlusion_04.mp4", "man_face_then_noface_cut.mov"):
        decodes = []

        def counting_iter(path, **kw):
            decodes.append(kw)
            return real_iter(path, **kw)

        monkeypatch.setattr(pa, "iter_frames", counting_iter)
        job = pa.align_video(shared_clips / name, tmp_path / f"{name}.s3job", size=64, max_frames=90)
        assert len(decodes) == 1, (name, decodes)
        track = job.read_track("valid", "transforms")
        assert track["valid"].any()
        for frame in real_iter(shared_clips / name, stop=90):
            if track["valid"][frame.index]:
                expected = fa.warp_crop(frame.image, track["transforms"][frame.index].astype(np.float64), 64)
                assert np.array_equal(job.read_crops([frame.index])[0], expected), (name, frame.index)
