"""The import contracts in pyproject.toml mean what docs/architecture.md says: each one breaks on a deliberate
violation of the rule it states, and the tree as it is keeps them all.

Each case copies the three packages and pyproject.toml into a temporary folder, appends one import to one
module, and runs ``lint-imports`` on the copy. ``COLUMNS`` is set wide so a contract's name stays on one line.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")

LAYERS = "inside fleet: the face on top, four independent worlds, the shared core at the bottom"
COORDINATOR = "the coordinator cannot tell a simulated device from a real one, and never computes"
ZMQ = "ZeroMQ lives only in fleet.bridge"
SIMPY = "SimPy is the core's and the simulated world's: the learning plane and the libraries never see it"
PHYSICS = "the simulated world is physics: no torch, no learning"
CODEC = "the wire codec is pure: no zmq, simpy or torch"
AGENT = "the agent ships to devices without the simulator"
SCENARIO = "scenario validation stays light (--help, bad-YAML errors)"
BATCHED = "batched kernels serve algorithms and never name them"
DEVICES = "devices/ is numpy physics: no simpy, zmq, torch or yaml"
FLEET_ON_TOP = "fleet sits on devices and algorithms, never the reverse"
RAY = "Ray is an optional extra: below the face only fleet.learning.ray_cluster imports it"


def _lint(tree: Path) -> tuple[int, dict[str, str]]:
    env = {**os.environ, "PYTHONPATH": str(tree), "COLUMNS": "400"}
    proc = subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=tree, env=env, capture_output=True, text=True,
                          timeout=300)
    verdicts = dict(re.findall(r"^(.+) (KEPT|BROKEN)(?: \(\d+ ignored imports?\))?$", proc.stdout,
                               flags=re.MULTILINE))
    return proc.returncode, verdicts


def _copy(tmp_path: Path) -> Path:
    tree = tmp_path / "tree"
    tree.mkdir()
    ignore = shutil.ignore_patterns("__pycache__")
    for package in ("fleet", "devices", "algorithms"):
        shutil.copytree(ROOT / package, tree / package, ignore=ignore)
    shutil.copy(ROOT / "pyproject.toml", tree / "pyproject.toml")
    return tree


def _module_file(tree: Path, module: str) -> Path:
    path = tree.joinpath(*module.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def test_the_tree_as_it_is_keeps_every_contract(tmp_path):
    status, verdicts = _lint(_copy(tmp_path))
    assert verdicts and set(verdicts.values()) == {"KEPT"}, verdicts
    assert status == 0


@pytest.mark.parametrize(("module", "line", "broken"), [
    ("fleet.coordinator.base", "import fleet.sim.network", {LAYERS, COORDINATOR}),
    ("fleet.coordinator.sync", "import torch", {COORDINATOR}),
    ("fleet.sim.network", "import fleet.bridge.hub", {LAYERS, ZMQ, PHYSICS}),
    ("fleet.sim.devices", "import algorithms.local", {PHYSICS}),
    ("fleet.learning.checkpoints", "import zmq", {ZMQ}),
    ("fleet.learning.plane", "import simpy", {SIMPY}),
    ("fleet.bridge.protocol", "import torch", {CODEC}),
    ("fleet.bridge.agent", "import fleet.sim.topology", {AGENT, LAYERS}),
    ("fleet.app.scenario", "import torch", {SCENARIO}),
    ("algorithms.batched", "import algorithms.fedavg", {BATCHED}),
    ("devices.physics", "import fleet.core.rng", {DEVICES, FLEET_ON_TOP}),
    ("fleet.learning.plane", "import ray", {RAY}),
])
def test_a_deliberate_violation_breaks_exactly_its_contracts(tmp_path, module, line, broken):
    tree = _copy(tmp_path)
    with _module_file(tree, module).open("a") as f:
        f.write(f"\n{line}  # a deliberate violation\n")
    status, verdicts = _lint(tree)
    assert status == 1
    assert {name for name, verdict in verdicts.items() if verdict == "BROKEN"} == broken
