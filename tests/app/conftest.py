"""Fixtures shared by the app's tests."""

from __future__ import annotations

import pytest

from fleet.app import plotting


@pytest.fixture
def drawn(monkeypatch):
    """Every figure saved while the test runs, kept open (as ``plotting.save`` leaves it) for inspection."""
    figures = []
    monkeypatch.setattr(plotting, "close_figure", figures.append)
    yield figures
    for fig in figures:
        plotting.pyplot().close(fig)
