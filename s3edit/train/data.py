"""Training data: aligned face crops with their landmarks, read from job folders.

A job made by ``s3edit align`` holds one crop per frame with a face and the crop
landmarks (``s3edit.job``); ``s3edit.pipeline.encode`` reads them for encoding and the
same readers serve training here. All crops are held in memory at the model's
resolution (a 64 px crop is 48 KB as float32: 10,000 crops are about 0.5 GB).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from s3edit.job import Job
from s3edit.pipeline.encode import aligned_frames, read_crops


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
    frames = aligned_frames(job)
    crops = read_crops([job.crop_path(int(i)) for i in frames.indices], size)
    # pixel-centre coordinates scale about the -0.5 px edge
    landmarks = (frames.crop_landmarks + 0.5) * (size / frames.size) - 0.5
    return CropData(crops=crops, landmarks=torch.from_numpy(landmarks))


def load_jobs(jobs: list[Job], size: int) -> CropData:
    parts = [load_job_crops(job, size) for job in jobs]
    return CropData(
        crops=torch.cat([p.crops for p in parts]),
        landmarks=torch.cat([p.landmarks for p in parts]),
    )
