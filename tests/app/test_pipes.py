"""A reader that goes away (`| head`) ends a command quietly: status 141, nothing on stderr."""

import os
import subprocess
import sys
from pathlib import Path

from fleet.app.pipes import SIGPIPE_STATUS, quiet_on_closed_pipe

ROOT = Path(__file__).resolve().parents[2]


def test_a_closed_pipe_is_status_141_and_no_traceback():
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the command writes a byte: every write fails
    try:
        proc = subprocess.run([sys.executable, "-m", "fleet.run", "--schema"], cwd=ROOT, stdout=write_end,
                              stderr=subprocess.PIPE, timeout=120)
    finally:
        os.close(write_end)
    assert proc.returncode == SIGPIPE_STATUS
    assert proc.stderr == b""


def test_the_wrapper_passes_the_status_and_other_errors_through():
    assert quiet_on_closed_pipe(lambda argv: 3)(None) == 3

    @quiet_on_closed_pipe
    def fails(argv):
        raise ValueError("not a pipe")

    try:
        fails(None)
    except ValueError as exc:
        assert str(exc) == "not a pipe"
    else:
        raise AssertionError("the ValueError was swallowed")
