"""tests/s3 work on tensors of a few hundred numbers: one intra-op thread is fastest,
and on a loaded machine torch's default thread pool spends most of the time waiting
(measured here: 98 s with the default threads vs 19 s with one, load ~13 on 2 cores).
Restored afterwards so other test folders keep their setting."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
