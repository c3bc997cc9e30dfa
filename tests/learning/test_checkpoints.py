"""Checkpoints are never trusted blindly: a damaged, truncated, empty, stale or foreign file is reported in
one line and recomputed, so a resumed run is bit-identical to an uninterrupted one; metrics always come
from the weights; a write that fails (a full disk) raises a clear error and leaves the run resumable."""

from __future__ import annotations

import errno
import json
import pickle
import re
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import fleet.learning.checkpoints
from fleet.app.build import build_simulation
from fleet.app.run import main
from fleet.app.scenario import parse_scenario
from fleet.app.study import learning_summary
from fleet.learning.checkpoints import CheckpointStore, CheckpointWriteError
from tests.learning.test_learning import _tiny

ROOT = Path(__file__).resolve().parents[2]
ROUNDS = 4
CLIENTS = 4  # per round, no over-selection: every version aggregates exactly this many local updates
SCENARIO = _tiny(**{"coordinator.rounds": ROUNDS})


def _name(version: int) -> str:
    return f"version_{version:06d}.ckpt"


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    """An uninterrupted run and the checkpoint folder it leaves (copied, never changed, by each test)."""
    folder = tmp_path_factory.mktemp("whole")
    return build_simulation(parse_scenario(SCENARIO), folder).run(), folder


def _flip(version: int):
    def damage(folder: Path) -> None:
        path = folder / _name(version)
        blob = bytearray(path.read_bytes())
        for i in range(len(blob) // 2, len(blob) // 2 + 64):  # inside the weights
            blob[i] ^= 0x55
        path.write_bytes(bytes(blob))
    return damage


def _stale_over_last(folder: Path) -> None:
    shutil.copyfile(folder / _name(2), folder / _name(ROUNDS))


def _truncate_last(folder: Path) -> None:
    path = folder / _name(ROUNDS)
    path.write_bytes(path.read_bytes()[:-100])


def _empty(folder: Path) -> None:
    (folder / _name(3)).write_bytes(b"")


def _pickle_that_runs_code(folder: Path) -> None:
    class Exploit:  # unpickling it would create the file "pwned"
        def __reduce__(self):
            return open, (str(folder / "pwned"), "w")
    (folder / _name(ROUNDS)).write_bytes(pickle.dumps({"weights": Exploit()}))


@pytest.mark.parametrize("damage, version, what", [
    (_flip(ROUNDS), ROUNDS, "checksum mismatch (damaged)"),
    (_flip(2), 2, "checksum mismatch (damaged)"),
    (_stale_over_last, ROUNDS, f"holds version 2, not {ROUNDS} (a stale copy)"),
    (_truncate_last, ROUNDS, "truncated or padded"),
    (_empty, 3, "empty file"),
    (_pickle_that_runs_code, ROUNDS, "not a fleet checkpoint"),
], ids=["flipped-last", "flipped-earlier", "stale-copy-over-last", "truncated-last", "empty-earlier",
        "pickle"])
def test_a_bad_checkpoint_is_reported_and_recomputed_bit_identically(whole, tmp_path, capsys, damage,
                                                                      version, what):
    sim, pristine = whole
    folder = tmp_path / "checkpoints"
    shutil.copytree(pristine, folder)
    damage(folder)
    capsys.readouterr()
    resumed = build_simulation(parse_scenario(SCENARIO), folder).run()
    line = re.escape(f"checkpoint {folder / _name(version)}: {what}") + r".*; recomputing"
    assert re.fullmatch(line, capsys.readouterr().err.rstrip("\n"))  # one line, naming the file
    assert resumed.learning.versions_resumed == ROUNDS - 1
    assert resumed.learning.jobs_run == CLIENTS  # only the bad version's updates were computed
    assert torch.equal(resumed.learning.state.weights, sim.learning.state.weights)
    assert resumed.kernel.recorder.sha256() == sim.kernel.recorder.sha256()
    assert ([(e.accuracy, e.loss) for e in resumed.learning.evaluations]
            == [(e.accuracy, e.loss) for e in sim.learning.evaluations])
    assert (folder / _name(version)).read_bytes() == (pristine / _name(version)).read_bytes()  # rewritten
    assert not (folder / "pwned").exists()


def _cli(scenario: Path, out: Path, *extra: str) -> tuple[int, dict]:
    rc = main([str(scenario), "--out", str(out), "--quiet", "--no-figures", *extra])
    return rc, json.loads((out / "summary.json").read_text())


def test_resume_through_the_cli_reports_damage_and_tells_the_truth(tmp_path, capsys):
    """The issue's case: flipped bytes in the last checkpoint made --resume report the stored accuracy
    while the loaded weights scored far worse; an empty earlier one crashed with EOFError."""
    scenario = tmp_path / "tiny.yaml"
    scenario.write_text(yaml.safe_dump(SCENARIO))
    rc, truth = _cli(scenario, tmp_path / "whole")
    assert rc == 0
    out = tmp_path / "crashed"
    assert _cli(scenario, out)[0] == 0
    _flip(ROUNDS)(out / "checkpoints")
    _empty(out / "checkpoints")
    capsys.readouterr()
    rc, summary = _cli(scenario, out, "--resume")
    err = capsys.readouterr().err.splitlines()
    assert rc == 0
    folder = out / "checkpoints"
    assert err == [f"checkpoint {folder / _name(3)}: empty file; recomputing",
                   f"checkpoint {folder / _name(ROUNDS)}: checksum mismatch (damaged); recomputing"]
    for key in ("final_accuracy", "final_loss", "best_accuracy", "event_log_sha256", "client_flops"):
        assert summary[key] == truth[key], key
    assert summary["versions_resumed"] == ROUNDS - 2
    assert summary["local_updates_computed"] == 2 * CLIENTS


def test_metrics_come_from_the_loaded_weights(whole, tmp_path):
    """A sound file holding other weights (version 1's, saved as the last) is loaded, and what the run
    reports is what those weights score: no number stored beside the weights is believed."""
    sim, pristine = whole
    folder = tmp_path / "checkpoints"
    shutil.copytree(pristine, folder)
    store = CheckpointStore(folder, (folder / "scenario.sha256").read_text().strip())
    first = store.load(1, sim.learning.state)
    store.save(ROUNDS, first)
    resumed = build_simulation(parse_scenario(SCENARIO), folder).run()
    assert resumed.learning.versions_resumed == ROUNDS and resumed.learning.jobs_run == 0
    assert torch.equal(resumed.learning.state.weights, first.weights)
    scored = sim.learning.algorithm.evaluate(first, sim.learning.test_x, sim.learning.test_y)
    assert resumed.learning.evaluations[-1].accuracy == scored["accuracy"]
    assert learning_summary(resumed)["final_accuracy"] == scored["accuracy"]
    assert scored["accuracy"] != sim.learning.evaluations[-1].accuracy  # the test can tell them apart


def test_a_checkpoint_round_trips_a_pruned_state(tmp_path):
    from algorithms.local import ModelState

    weights = torch.randn(10)
    mask = torch.tensor([True, False] * 5)
    store = CheckpointStore(tmp_path, "f" * 64)
    store.save(7, ModelState(weights, mask, 2))
    back = store.load(7, ModelState(torch.zeros(10)))
    assert torch.equal(back.weights, weights) and torch.equal(back.mask, mask) and back.prune_step == 2
    lines = []
    other = CheckpointStore(tmp_path / "other", "e" * 64, report=lines.append)
    shutil.copyfile(tmp_path / _name(7), tmp_path / "other" / _name(7))
    assert other.load(7, ModelState(torch.zeros(10))) is None
    assert lines == [f"checkpoint {tmp_path / 'other' / _name(7)}: belongs to another scenario; recomputing"]
    assert store.load(7, ModelState(torch.zeros(11))) is None  # another model's weights


class _FullDisk:
    """A file that takes half of what is written and then reports a full disk."""

    def __init__(self, path, mode):
        self._f = open(path, mode)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()

    def write(self, data):
        self._f.write(data[:len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_is_a_clear_error_and_the_run_stays_resumable(whole, tmp_path, monkeypatch):
    sim, _ = whole
    folder = tmp_path / "checkpoints"
    real_open = open

    def open_filling_up(path, mode="r", *args, **kwargs):
        if Path(path).name == _name(3) + ".tmp":
            return _FullDisk(path, mode)
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(fleet.learning.checkpoints, "open", open_filling_up, raising=False)
    with pytest.raises(CheckpointWriteError) as caught:
        build_simulation(parse_scenario(SCENARIO), folder).run()
    assert isinstance(caught.value, OSError) and caught.value.errno == errno.ENOSPC
    assert caught.value.filename == str(folder / _name(3))
    assert str(caught.value) == (f"checkpoint {folder / _name(3)}: cannot be written (No space left on "
                                 "device); the run can be resumed")
    assert sorted(p.name for p in folder.iterdir()) == ["scenario.sha256", _name(1), _name(2)]  # no torn file
    monkeypatch.undo()
    resumed = build_simulation(parse_scenario(SCENARIO), folder).run()
    assert resumed.learning.versions_resumed == 2 and resumed.learning.jobs_run == 2 * CLIENTS
    assert torch.equal(resumed.learning.state.weights, sim.learning.state.weights)


@pytest.mark.slow
def test_a_file_size_limit_through_the_cli_is_one_line_and_resumable(tmp_path):
    """A real EFBIG from the kernel (RLIMIT_FSIZE below one checkpoint's size) in a fresh process."""
    scenario = tmp_path / "tiny.yaml"
    scenario.write_text(yaml.safe_dump(SCENARIO))
    out = tmp_path / "out"

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (8192, 8192))

    proc = subprocess.run([sys.executable, "-m", "fleet.run", str(scenario), "--out", str(out), "--quiet",
                           "--no-figures"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          preexec_fn=limit)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.splitlines()) == 1
    assert str(out / "checkpoints" / _name(1)) in proc.stderr and "File too large" in proc.stderr
    assert not out.exists()  # the folder it made held only the scenario's stamp, no checkpoint: removed
    rc, summary = _cli(scenario, out, "--resume")
    rc_whole, truth = _cli(scenario, tmp_path / "whole")
    assert rc == rc_whole == 0
    assert summary["final_accuracy"] == truth["final_accuracy"]
    assert summary["event_log_sha256"] == truth["event_log_sha256"]


def test_a_checkpoint_carries_a_changed_architecture(tmp_path):
    from algorithms.local import ModelState

    store = CheckpointStore(tmp_path, "f" * 64)
    smaller = ModelState(torch.randn(6), None, 4, architecture=(3, 2))
    store.save(3, smaller)
    back = store.load(3, ModelState(torch.zeros(10)))  # the run's state before the prune: 10 weights
    assert torch.equal(back.weights, smaller.weights) and back.architecture == (3, 2) and back.prune_step == 4
    assert store.load(3, ModelState(torch.zeros(7), architecture=(3, 2))) is None  # same architecture, wrong size
    store.save(5, ModelState(torch.randn(10)))
    assert store.load(5, ModelState(torch.zeros(10))).architecture == ()
