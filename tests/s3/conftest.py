"""tests/s3 work on tensors of a few hundred numbers: every module runs on one torch
thread (the shared ``one_torch_thread`` fixture; restored afterwards)."""

import pytest


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    yield
