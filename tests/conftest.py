"""Fixtures shared by every test package."""

from __future__ import annotations

import pytest

from fleet.core.kernel import Kernel


@pytest.fixture
def kernel():
    return Kernel(seed=1)


@pytest.fixture(scope="session", autouse=True)
def dataset_cache(tmp_path_factory):
    """Decoded datasets go to a cache folder of the test session (``algorithms.datacache``), never the user's;
    subprocesses inherit it, so the real Fashion-MNIST is decoded once per session."""
    with pytest.MonkeyPatch.context() as patch:
        path = tmp_path_factory.mktemp("fleet-cache")
        patch.setenv("FLEET_CACHE_DIR", str(path))
        yield path
