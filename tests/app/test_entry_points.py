"""The programs a user runs: the three `[project.scripts]` entry points and the three `python -m` shims name the
same `main` functions, and each answers `--help` with status 0."""

from __future__ import annotations

import importlib
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
SHIMS = {"fleet-run": "fleet.run", "fleet-sweep": "fleet.sweep", "fleet-agent": "fleet.agent",
         "fleet-keys": "fleet.keys", "fleet-export-fleet": "fleet.export_fleet"}


def test_every_documented_command_has_an_entry_point():
    assert set(SCRIPTS) == set(SHIMS)


@pytest.mark.parametrize("script", sorted(SHIMS))
def test_the_entry_point_and_the_shim_call_one_main(script):
    module, _, attr = SCRIPTS[script].partition(":")
    target = getattr(importlib.import_module(module), attr)
    assert callable(target)
    assert importlib.import_module(SHIMS[script]).main is target


@pytest.mark.parametrize("shim", sorted(SHIMS.values()))
def test_python_dash_m_answers_help(shim):
    proc = subprocess.run([sys.executable, "-m", shim, "--help"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: ")
