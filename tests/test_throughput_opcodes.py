"""benchmarks/throughput.py's --opcodes mode: a figure that does not depend on the machine's load, so two runs
of it (each in a fresh process, as the benchmark runs them) must agree exactly."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _count(devices: int, rounds: int) -> dict:
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "throughput.py"), "--child", str(devices),
                          "--opcodes", str(rounds)], check=True, capture_output=True, text=True, timeout=300).stdout
    return json.loads(out)


def test_opcode_counts_repeat_exactly_and_count_every_task():
    first = _count(100, 2)
    assert first == _count(100, 2)
    fleet, bare = first["fleet"], first["bare"]
    assert fleet["tasks"] == bare["tasks"] == 2 * 20  # two rounds of a fifth of the fleet
    assert 1000 < fleet["opcodes"] / fleet["tasks"] < 20_000 and 1000 < bare["opcodes"] / bare["tasks"] < 20_000


def test_opcodes_refuses_zero_rounds():
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "throughput.py"), "--opcodes", "0"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "ROUNDS must be at least 1" in done.stderr
