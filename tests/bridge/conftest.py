"""Fixtures for the bridge tests."""

from __future__ import annotations

import pytest
import zmq


@pytest.fixture
def ctx():
    context = zmq.Context()
    yield context
    context.destroy(linger=0)
