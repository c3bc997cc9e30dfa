"""Measure the peak bytes of tensor memory a call allocates, to check the cost models against real torch code.

Method: torch's CPU memory profiler. ``torch.profiler.profile(profile_memory=True)`` makes torch's CPU
allocator report every allocation and every free (pointer, signed byte count, time, and the op it happened
in) for as long as the profiler runs. ``PeakMemory`` replays those events in time order, keeping the set of
blocks allocated inside the block and still alive; their running sum is the call's live tensor memory and
its maximum is the peak. This sees everything torch allocates: tensors created by ops in forward, in backward
(the autograd engine's buffers) and under ``inference_mode``, and the scratch that kernels allocate and free
inside one op (im2col columns, oneDNN buffers). What existed before the block (the caller's global weights,
the client's dataset, the module's own parameters) is never charged: a free whose block was not allocated
inside the block is ignored. Not seen: memory that does not come from torch's allocator (numpy arrays,
Python objects), which the local updates keep to a few bytes per step (the seed list).

Why not a ``TorchDispatchMode`` that tracks each output storage (the first design tried): it sees only op
outputs, not kernel scratch, and, worse, it changes what it measures. With any dispatch mode active
``at::isTensorSubclassLike`` is true for every tensor, so autograd stops accumulating gradients in place
(``InputBuffer::accumulate`` switches from ``add_`` to ``add``) and subclass-aware backward formulas take
their out-of-place branch: on ``mlp_small`` it reported one parameter-sized buffer (20 %) more than the
allocator sees without it. The profiler only listens.

Use: ``with PeakMemory() as probe: ...`` then ``probe.peak_bytes``, or ``measure_peak(fn, *args)``.
Profilers do not nest: one ``PeakMemory`` at a time, and not inside another ``torch.profiler`` session.
The events are read through ``experimental_event_tree`` and ``torch._C._profiler`` (torch 2.13), an
interface torch may change; ``tests/algorithms/test_memory_model.py`` checks the probe on exact cases.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch.profiler import ProfilerActivity, profile

__all__ = ["PeakMemory", "PeakReport", "measure_peak"]

_ALLOCATION = torch._C._profiler._EventType.Allocation


@dataclass(frozen=True)
class PeakReport:
    """A call's ``result`` and what it allocated: ``peak_bytes`` alive at once at most, ``final_bytes``
    still alive when it returned (what it hands back, e.g. a delta), and ``live_at_peak``: (op path that
    allocated it, bytes) for each block alive at the peak, largest first."""

    result: Any
    peak_bytes: int
    final_bytes: int
    live_at_peak: tuple[tuple[str, int], ...]


def _label(event) -> str:
    """``outer op > inner op`` of an allocation event (the inner one is the kernel that allocated)."""
    path = []
    parent = event.parent
    while parent is not None:
        path.append(parent.name)
        parent = parent.parent
    if not path:
        return "(outside any op)"
    outer, inner = path[-1], path[0]
    return outer if outer == inner else f"{outer} > {inner}"


def _allocations(roots) -> list:
    found, stack = [], list(roots)
    while stack:
        event = stack.pop()
        if event.tag == _ALLOCATION:
            found.append(event)
        stack.extend(event.children)
    return found


class PeakMemory:
    """Context manager: the peak of live CPU tensor memory allocated inside the block (see module docstring).

    After the block: ``peak_bytes``, ``final_bytes`` and ``live_at_peak`` as in :class:`PeakReport`.
    """

    def __init__(self) -> None:
        self._profiler = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
        self.peak_bytes = 0
        self.final_bytes = 0
        self.live_at_peak: tuple[tuple[str, int], ...] = ()

    def __enter__(self) -> "PeakMemory":
        self._profiler.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._profiler.__exit__(*exc)
        if exc[0] is None:
            self._replay(self._profiler.profiler.kineto_results.experimental_event_tree())

    def _replay(self, roots) -> None:
        events = sorted(_allocations(roots), key=lambda e: e.start_time_ns)
        live: dict[int, tuple[str, int]] = {}  # pointer -> (label, bytes) of blocks allocated inside
        total = peak = 0
        at_peak: dict[int, tuple[str, int]] = {}
        for event in events:
            fields = event.extra_fields
            if fields.device.type != "cpu":
                continue
            if fields.alloc_size > 0:
                live[fields.ptr] = (_label(event), fields.alloc_size)
                total += fields.alloc_size
                if total > peak:
                    peak, at_peak = total, dict(live)
            else:
                block = live.pop(fields.ptr, None)  # None: allocated before the block, not ours
                if block is not None:
                    total -= block[1]
        self.peak_bytes, self.final_bytes = peak, total
        self.live_at_peak = tuple(sorted(at_peak.values(), key=lambda r: -r[1]))


def measure_peak(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> PeakReport:
    """Run ``fn(*args, **kwargs)`` under a :class:`PeakMemory` and report what it allocated."""
    with PeakMemory() as probe:
        result = fn(*args, **kwargs)
    return PeakReport(result, probe.peak_bytes, probe.final_bytes, probe.live_at_peak)
