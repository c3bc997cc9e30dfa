"""Fixtures shared by every test package."""

from __future__ import annotations

import pytest

from fleet.core.kernel import Kernel


@pytest.fixture
def kernel():
    return Kernel(seed=1)
