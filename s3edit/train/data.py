"""Training data: aligned face crops with their landmarks, read from job folders.

A job made by ``s3edit align`` holds one crop per frame with a face and the crop
landmarks; the job's own readers (``Job.aligned_frames``, ``Job.read_crops``) serve
encoding and training alike, and crops enter the network as
``s3edit.model.frames.to_model`` makes them. All crops are held in memory at the
model's resolution (a 64 px crop is 48 KB as float32: 10,000 crops are about 0.5 GB).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from s3edit.job import Job
from s3edit.model.frames import rescale_landmarks, to_model


@dataclass
class CropData:
    """crops (N, 3, S, S) float32 in [-1, 1]; landmarks (N, 68, 2) float32, crop px of
    size S (pixel-centre origin)."""

    crops: torch.Tensor
    landmarks: torch.Tensor

    def __len__(self) -> int:
        return self.crops.shape[0]

    @property
    def size(self) -> int:
        return int(self.crops.shape[-1])

    def frames(self, index: torch.Tensor) -> torch.Tensor:
        return self.crops[index]


def load_job_crops(job: Job, size: int) -> CropData:
    """Every valid crop of an aligned job, resized to ``size``."""
    frames = job.aligned_frames()
    crops = to_model(job.read_crops(frames.indices), size)
    landmarks = rescale_landmarks(frames.crop_landmarks, frames.size, size)
    return CropData(crops=crops, landmarks=torch.from_numpy(landmarks))


def load_jobs(jobs: list[Job], size: int) -> CropData:
    parts = [load_job_crops(job, size) for job in jobs]
    return CropData(
        crops=torch.cat([p.crops for p in parts]),
        landmarks=torch.cat([p.landmarks for p in parts]),
    )
