"""A flapping device's failure timeline: the same failures and repairs as before for the same seed, and
memory that stays flat however long it runs (only the edges after the latest query are held)."""

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from devices import RandomFailure

ROOT = Path(__file__).resolve().parents[2]

# Edges (0: first failure, 1: its repair, ...) of RandomFailure(1e-3, 2e-3, default_rng(2024)) as the
# implementation that kept every edge computed them (repr'd from it): the first batch, the second, and
# around the end of the first maximal batch (2 * (32 + 64 + ... + 65536) = 262,080 edges).
GOLDEN = {0: 0.001446113698545371, 1: 0.0035233922702587305, 63: 0.0923512561117168,
          64: 0.0927158118501981, 262079: 392.451324724341, 262080: 392.4517693653801,
          262081: 392.45565671404677, 300001: 449.93243168839007}


def _reference_edges(mtbf_s, mttr_s, rng, count):
    """The timeline as the docstring defines it, every edge kept: batches of 32 cycles doubling to
    65,536, each drawing its up periods, then its down periods, added to the last edge as a running sum."""
    child = rng.spawn(1)[0]
    parts, n, last_s, held = [], 32, 0.0, 0
    while held < count:
        steps = np.empty(2 * n)
        steps[0::2] = child.exponential(mtbf_s, n)
        steps[1::2] = child.exponential(mttr_s, n)
        parts.append(last_s + np.cumsum(steps))
        last_s, held, n = parts[-1][-1], held + 2 * n, min(2 * n, 1 << 16)
    return np.concatenate(parts)[:count]


def _check_edge(f, k, edge_s):
    """``edge_s`` is edge number ``k`` of ``f``, exactly: a failure (even k) or a repair (odd k)."""
    before_s = math.nextafter(edge_s, -math.inf)
    if k % 2 == 0:
        assert f.next_interruption(before_s, math.inf) == (edge_s, "failure")
        assert f.unavailable_cause(before_s) is None
        assert f.unavailable_cause(edge_s) == "failure"
    else:
        assert f.unavailable_cause(before_s) == "failure"
        assert f.unavailable_cause(edge_s) is None


def test_golden_edges_of_the_old_timeline():
    f = RandomFailure(1e-3, 2e-3, np.random.default_rng(2024))
    for k, edge_s in GOLDEN.items():  # forward, as a simulation asks
        _check_edge(f, k, edge_s)
    for k, edge_s in reversed(GOLDEN.items()):  # backward: forgotten edges are redrawn identically
        _check_edge(f, k, edge_s)


@pytest.mark.parametrize("seed, mtbf_s, mttr_s", [(1, 100.0, 25.0), (9, 1e-3, 1e-3), (4, 60.0, 5.0)])
def test_timeline_agrees_with_the_every_edge_reference_on_a_sample(seed, mtbf_s, mttr_s):
    count = 2 * 131_040 + 40_000  # past the first maximal batch, into the next one
    edges = _reference_edges(mtbf_s, mttr_s, np.random.default_rng(seed), count)
    sample = np.sort(np.random.default_rng(seed + 1).choice(count, 400, replace=False))
    f = RandomFailure(mtbf_s, mttr_s, np.random.default_rng(seed))
    for k in sample:
        _check_edge(f, int(k), float(edges[k]))
    for k in sample[::-37]:  # a few backward queries after the forward walk
        _check_edge(f, int(k), float(edges[k]))
    # a long stride forward, with the intermediate draws never queried, lands on the same edges
    g = RandomFailure(mtbf_s, mttr_s, np.random.default_rng(seed))
    _check_edge(g, count - 1, float(edges[-1]))


PROBE = """
import resource
import numpy as np
from devices import RandomFailure

fleet = [RandomFailure(1e-3, 1e-3, np.random.default_rng(seed)) for seed in range(4)]
peak = {}
for step in range(1, 2401):  # every 0.5 s of virtual time for 20 minutes: ~600,000 cycles a device
    t_s = 0.5 * step
    for f in fleet:  # what a device asks at a task's start
        f.unavailable_cause(t_s)
        f.next_interruption(t_s, t_s + 1.0)
    if step in (600, 2400):
        peak[step] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(peak[2400] - peak[600])
"""


def test_memory_stays_flat_with_flapping_devices():
    """Four devices failing every millisecond, from 5 to 20 virtual minutes. Keeping every edge grew the
    peak RSS by 140 MiB over this stretch; a cursor holds at most one batch (1 MiB) per device, reached
    before the early point (the maximal batch is first drawn at about 131 s)."""
    proc = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    growth_bytes = int(proc.stdout)
    assert growth_bytes < 8 * 2**20
