"""Fixtures for the algorithms tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def one_torch_thread():
    """Run a module's tests on one intra-op thread: the setting the batched workers use, the one the allocator
    peaks are measured at, and fast on a loaded 2-core machine (two OpenMP threads spin against other processes)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
