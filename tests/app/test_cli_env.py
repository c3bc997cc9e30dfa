"""The command line in a hostile environment: bad --out folders, a full disk, odd scenario files,
YAML bombs, Ctrl-C. Each ends in one line on stderr naming the path or field, never a traceback."""

from __future__ import annotations

import errno
import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from fleet.app.run import INTERRUPTED, main

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "scenarios/smoke.yaml"
QUICK = ["--set", "coordinator.rounds=1", "--set", "fleet.devices=20", "--no-figures", "--quiet"]


def _main(capsys, *args):
    status = main([str(a) for a in args])
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in lines[0] and len(lines[0]) < 500, lines
    return status, lines[0]


@pytest.mark.parametrize("under, words", [("", "not a directory"), ("sub", "not a writable folder")])
def test_an_out_that_is_not_a_folder_is_refused_before_running(tmp_path, capsys, under, words):
    (tmp_path / "file").write_text("x")
    out = tmp_path / "file" / under if under else tmp_path / "file"
    status, line = _main(capsys, SMOKE, "--out", out, *QUICK)
    assert status == 2 and line.startswith(f"fleet.run: --out {out}: {words}")


def test_an_unwritable_out_is_refused_before_running(tmp_path, capsys, monkeypatch):
    def refuse(*args, **kwargs):  # as root a read-only mode bit does not stop writes: refuse here
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr("fleet.app.out_folder.tempfile.TemporaryFile", refuse)
    status, line = _main(capsys, SMOKE, "--out", tmp_path / "out", *QUICK)
    assert status == 2 and line.endswith("not a writable folder (Permission denied)")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_out_is_refused(tmp_path, capsys):
    out = tmp_path / "ro"
    out.mkdir(mode=0o500)
    status, line = _main(capsys, SMOKE, "--out", out, *QUICK)
    assert status == 2 and "not a writable folder" in line


def test_a_write_failing_mid_run_is_one_line_exit_1(tmp_path, capsys, monkeypatch):
    target = tmp_path / "out" / "events.csv"

    def full_disk(sim, out, figures=True, events="auto"):
        raise OSError(errno.ENOSPC, "No space left on device", str(target))

    monkeypatch.setattr("fleet.app.report.write_outputs", full_disk)
    status, line = _main(capsys, SMOKE, "--out", tmp_path / "out", *QUICK)
    assert status == 1 and line == f"fleet.run: cannot write {target}: No space left on device"


@pytest.mark.slow
def test_a_full_disk_in_a_real_process_is_one_line(tmp_path):
    """RLIMIT_FSIZE makes the kernel refuse writes past 2 KB (EFBIG), as a full disk refuses them."""
    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (2048, 2048))

    result = subprocess.run([sys.executable, "-m", "fleet.run", str(SMOKE), "--out", str(tmp_path / "o"),
                             *QUICK], cwd=ROOT, capture_output=True, text=True, timeout=120,
                            preexec_fn=limit)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1, result.stderr
    assert "fleet.run: cannot write" in lines[0] and "File too large" in lines[0]


def test_ctrl_c_is_one_line_and_exit_130(tmp_path, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("fleet.app.build.build_simulation", interrupted)
    status, line = _main(capsys, SMOKE, "--out", tmp_path / "out", *QUICK)
    assert status == 130 and line == INTERRUPTED == "fleet.run: interrupted"  # timing mode: nothing to resume


def test_ctrl_c_says_resume_only_when_checkpoints_were_left(tmp_path, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("fleet.app.build.build_simulation", interrupted)
    (tmp_path / "out" / "checkpoints").mkdir(parents=True)
    (tmp_path / "out" / "checkpoints" / "version_000003.ckpt").write_bytes(b"")
    status, line = _main(capsys, SMOKE, "--out", tmp_path / "out", *QUICK)
    assert status == 130 and line == "fleet.run: interrupted; the checkpoints so far stay (resume with --resume)"


def test_resume_of_a_timing_run_is_refused_before_anything_is_made(tmp_path, capsys):
    status, line = _main(capsys, SMOKE, "--resume", "--out", tmp_path / "out", *QUICK)
    assert status == 2 and line.startswith("fleet.run: --resume continues a learning run from its checkpoints; ")
    assert not (tmp_path / "out").exists()


def _bad_file(tmp_path, content: bytes):
    path = tmp_path / "s.yaml"
    path.write_bytes(content)
    return path


BOMB = b"a: &a [x, x, x, x, x, x, x, x, x]\n" + b"".join(
    f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n".encode()
    for p, c in zip("abcdefgh", "bcdefghi")) + b"fleet: {devices: *i}\n"


@pytest.mark.parametrize("content, words", [
    (b"name: caf\xe9\n", "not UTF-8 text (byte 9)"),
    (b"fleet: " + b"[" * 1000 + b"]" * 1000 + b"\n", "nested more than 32 levels deep"),
    (b"fleet: {devices: " + b"{a: " * 40 + b"1" + b"}" * 40 + b"}\n", "nested more than 32 levels deep"),
    (BOMB, "expands to more than 100,000 YAML nodes"),
    (b"a: &a [*a]\nfleet: {devices: 3}\n", "refers to the node that contains it"),
    (b"fleet: {mix: [{device_class: " + b"x" * 60_000 + b", link_class: wifi, fraction: 1}]}\n",
     "unknown device class 'xxxx"),
    (b"fleet:\n  ? " + b"y" * 60_000 + b"\n  : 1\n", "fleet.'yyyy"),
])
def test_odd_scenario_files_are_one_short_line_exit_2(tmp_path, capsys, content, words):
    assert len(BOMB) < 1024
    status, line = _main(capsys, _bad_file(tmp_path, content), "--out", tmp_path / "out", *QUICK)
    assert status == 2 and words in line and line.startswith("fleet.run: scenario error: ")


def test_a_fifo_is_refused_without_blocking(tmp_path, capsys):
    fifo = tmp_path / "s.yaml"
    os.mkfifo(fifo)
    status, line = _main(capsys, fifo, "--out", tmp_path / "out", *QUICK)
    assert status == 2 and line.endswith(f"{fifo}: not a regular file")


def test_an_alias_bomb_in_set_is_refused(tmp_path, capsys):
    value = BOMB.decode().replace("\n", ", ").removesuffix(", ").replace("fleet: {devices: *i}", "z: *i")
    status, line = _main(capsys, SMOKE, "--out", tmp_path / "out", *QUICK, "--set", f"name={{{value}}}")
    assert status == 2 and "--set name: expands to more than 100,000 YAML nodes" in line


def test_results_are_left_when_refused(tmp_path, capsys):
    """A refused rerun into a finished run's folder leaves its outputs as they were."""
    out = tmp_path / "out"
    assert main([str(SMOKE), "--out", str(out), *QUICK]) == 0
    before = (out / "summary.json").read_bytes()
    capsys.readouterr()
    status, _ = _main(capsys, SMOKE, "--out", out, *QUICK, "--set", "fleet.devices=1000000000")
    assert status == 2 and (out / "summary.json").read_bytes() == before
    assert json.loads(before)["devices"] == 20
