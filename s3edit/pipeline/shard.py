"""Frames shared out over the processes of one run: ``torchrun`` or ``accelerate launch``.

    torchrun --nproc_per_node 4 -m s3edit edit clip.job --attr Eyeglasses

The launcher starts one process per GPU and sets ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK``; without them the run is one process (``Shard.single()``) and nothing
here does anything. With them, ``joined`` starts a torch.distributed process group the
first time a stage asks for it, and the stages split their work by batch:

- ``share`` hands out every ``world``-th item of a list that all processes build the
  same way (the encode batches of the clip, the edit's x_T chunks), starting at the
  process's rank. The batches are the ones a single process makes, so each frame is
  computed exactly as one process computes it, and which process owns a batch does
  not depend on what is already written: a rerun skips the frames on disk;
- ``barrier`` waits for every process: before work that reads what the others wrote
  (the clip identity is merged from every frame), and around the job's records,
  which only rank 0 writes (``sync`` then rereads the manifest in the others).

The group only ever carries barriers and one sum, so it is gloo's (CPU sockets) on
every device: it works with several processes per GPU as well as one. Its timeout is
``TIMEOUT``, long enough for rank 0 to align a long video while the others wait.
Processes other than rank 0 print no progress or notes (``console.set_quiet``); rank
0's bars count its own share, which the others finish at about the same time.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

import torch
import torch.distributed as dist

from s3edit import console
from s3edit.job import Job

T = TypeVar("T")

TIMEOUT = timedelta(hours=24)  # a barrier waits this long (gloo's default is 30 minutes)


@dataclass(frozen=True)
class Shard:
    """This process's place in the run: ``rank`` of ``world`` processes, ``local_rank``
    on its machine."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @classmethod
    def single(cls) -> Shard:
        return cls()

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Shard:
        """From the variables torchrun and accelerate set; one process when they are
        absent."""
        world = int(env.get("WORLD_SIZE", "1") or 1)
        if world <= 1:
            return cls.single()
        rank = int(env.get("RANK", "0"))
        return cls(rank, world, int(env.get("LOCAL_RANK", str(rank))))

    @property
    def first(self) -> bool:
        """Rank 0: the process that writes the job's records."""
        return self.rank == 0

    def share(self, items: Sequence[T]) -> list[T]:
        """This process's items: every ``world``-th one from ``rank``."""
        return list(items[self.rank::self.world])

    def barrier(self) -> None:
        """Wait until every process gets here."""
        if self.world > 1:
            dist.barrier()

    def sync(self, job: Job) -> None:
        """Wait for every process, then reread the manifest rank 0 may have written."""
        if self.world > 1:
            dist.barrier()
            job.reload()

    def total(self, n: int) -> int:
        """``n`` summed over the processes."""
        if self.world == 1:
            return n
        t = torch.tensor([n], dtype=torch.int64)
        dist.all_reduce(t)
        return int(t.item())


def local_cuda_index(env: Mapping[str, str] = os.environ) -> int | None:
    """The GPU of this process under a launcher (``LOCAL_RANK``, wrapped round the GPUs
    there are, so several processes may share one); None without a launcher."""
    local = env.get("LOCAL_RANK")
    if local is None or not torch.cuda.is_available():
        return None
    return int(local) % torch.cuda.device_count()


_joined: list[Shard] = []  # the shard of this process, once joined


def joined() -> Shard:
    """This process's shard; under a launcher (``WORLD_SIZE`` > 1) the process group is
    started on the first call (every process must make it)."""
    if _joined:
        return _joined[0]
    shard = Shard.from_env()
    if shard.world > 1:
        if not dist.is_initialized():
            dist.init_process_group("gloo", timeout=TIMEOUT)
            atexit.register(_leave)
        shard = Shard(dist.get_rank(), dist.get_world_size(), shard.local_rank)
        index = local_cuda_index()
        if index is not None:  # what a bare "cuda" means in this process
            torch.cuda.set_device(index)
        if not shard.first:
            console.set_quiet(True)
    _joined.append(shard)
    return shard


def _leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
