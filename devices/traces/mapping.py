"""From trace records to the simulator's devices: a ``SampledFleet`` and an availability timeline each.

Per client (docs/traces.md gives the reasons and FedScale's own reading of each field):

* ``flops_per_s = flops_per_sample / (computation_ms / 1000)``: FedScale's ``computation`` is the time one
  sample takes through the model (its ``ClientMetadata.get_completion_time`` multiplies it by 3 for a
  training step, forward and backward); ``flops_per_sample`` is the forward FLOPs per sample of the model
  the trace is read against;
* ``up_bit_per_s = 1000 * (upload_kbit_per_s or communication)``, ``down_bit_per_s`` likewise: FedScale uses
  one ``communication`` rate (kbit/s) for both directions;
* ``latency_s``: the record's, else the link class's median (no spread is drawn);
* the device class (memory, runtime reserve, power, battery, background memory) and the link class (loss,
  duty cycle, frames, energy per byte, gateway kind): the record's own, else the ones the caller names
  (``memory_mix``: one class, or several with fractions, dealt to the clients by a random permutation);
  a record's ``loss_prob`` replaces its link class's (as a ``fleet.mix`` entry's ``link`` override does);
* availability: ``PeriodicIntervals`` of the behaviour record, ``AlwaysOn`` without one;
* background-memory phase: the record's, else Uniform[0, 2 pi).

Draw order (the reproducibility contract): the permutation dealing the classes (only when ``memory_mix``
has more than one entry), then ``n`` phases. Devices are grouped by (device class, link class, loss_prob) in order of
first appearance, clients in their given order within a group (``SampledFleet`` keeps an entry's devices
consecutive); ``TraceFleet.client_ids[d]`` is device ``d``'s client.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from devices.availability import AlwaysOn, Availability
from devices.catalog import DEVICE_CLASSES, DeviceClass
from devices.links import LINK_CLASSES, LinkClass
from devices.sampled import SampledFleet
from devices.sampling import MixEntry, largest_remainder_counts
from devices.traces.bounds import BIT_PER_KBIT, MS_PER_S
from devices.traces.errors import TraceError
from devices.traces.periodic import PeriodicIntervals
from devices.traces.records import DeviceTrace

__all__ = ["TraceFleet", "trace_fleet", "flops_per_s_of", "MS_PER_S", "BIT_PER_KBIT"]


@dataclass(frozen=True)
class TraceFleet:
    """The devices of a trace: profiles as arrays, one timeline each, their clients, their charge at t = 0
    (NaN: the class's full battery, or none)."""

    fleet: SampledFleet
    availability: tuple[Availability, ...]
    client_ids: tuple[str, ...]
    battery_j_at_start: np.ndarray


def flops_per_s_of(computation_ms: float, flops_per_sample: float) -> float:
    """The throughput of a device that takes ``computation_ms`` per sample of a ``flops_per_sample`` model."""
    return flops_per_sample / (computation_ms / MS_PER_S)


def _timeline(trace: DeviceTrace) -> Availability:
    """The client's timeline: ``AlwaysOn`` without a behaviour or when its intervals cover the period."""
    b = trace.behaviour
    if b is None:
        return AlwaysOn()
    timeline = PeriodicIntervals(b.active_s, b.inactive_s, b.finish_time_s)
    return AlwaysOn() if timeline.always_on else timeline


def _deal(traces: Sequence[DeviceTrace], memory_mix: Sequence[tuple[str, float]],
          rng: np.random.Generator) -> list[str]:
    """Each client's device class: its own, else one of ``memory_mix`` (largest-remainder counts, dealt by
    a permutation drawn from ``rng`` when the mix has more than one class)."""
    lacking = [i for i, t in enumerate(traces) if t.device_class is None]
    classes = [t.device_class for t in traces]
    if lacking:
        counts = largest_remainder_counts([f for _, f in memory_mix], len(lacking))
        dealt = [name for (name, _), count in zip(memory_mix, counts) for _ in range(count)]
        order = rng.permutation(len(lacking)).tolist() if len(memory_mix) > 1 else range(len(lacking))
        for i, j in zip(lacking, order):
            classes[i] = dealt[j]
    return classes


def trace_fleet(traces: Sequence[DeviceTrace], flops_per_sample: float, memory_mix: Sequence[tuple[str, float]],
                link_class: str, rng: np.random.Generator, background_period_s: float = 3600.0, *,
                device_classes: Mapping[str, DeviceClass] = DEVICE_CLASSES,
                link_classes: Mapping[str, LinkClass] = LINK_CLASSES, where: str = "trace") -> TraceFleet:
    """The simulated devices of ``traces`` (see the module docstring). ``TraceError`` names the client and
    field a figure is wrong for; ``ValueError`` for bad arguments."""
    if not traces:
        raise ValueError("traces must not be empty")
    if not (math.isfinite(flops_per_sample) and flops_per_sample > 0):
        raise ValueError(f"flops_per_sample must be finite and > 0, got {flops_per_sample!r}")
    if not memory_mix:
        raise ValueError("memory_mix must name at least one device class")
    for name, _ in memory_mix:
        if name not in device_classes:
            raise ValueError(f"unknown device class {name!r}; known: {', '.join(device_classes)}")
    if link_class not in link_classes:
        raise ValueError(f"unknown link class {link_class!r}; known: {', '.join(link_classes)}")
    classes = _deal(traces, memory_mix, rng)
    phases = rng.uniform(0.0, 2.0 * math.pi, len(traces))
    keys: dict[tuple[str, str, float | None], list[int]] = {}
    for i, (t, dc_name) in enumerate(zip(traces, classes)):
        lc_name = t.link_class or link_class
        for field, name, table in (("device_class", dc_name, device_classes), ("link_class", lc_name, link_classes)):
            if name not in table:
                raise TraceError(f"{where}: client {t.client_id}: unknown {field} {name!r}")
        keys.setdefault((dc_name, lc_name, t.loss_prob), []).append(i)
    n = len(traces)
    order = [i for members in keys.values() for i in members]
    entries = [MixEntry(dc, lc, len(members) / n, {} if loss is None else {"loss_prob": loss})
               for (dc, lc, loss), members in keys.items()]
    dcs = [device_classes[e.device_class] for e in entries]
    lcs = [e.link_class_of(link_classes) for e in entries]
    entry_of = np.repeat(np.arange(len(entries), dtype=np.int32), [len(m) for m in keys.values()])
    columns = np.empty((6, n))
    for d, i in enumerate(order):
        t, lc = traces[i], lcs[entry_of[d]]
        flops = flops_per_s_of(t.computation_ms, flops_per_sample)
        if not math.isfinite(flops):
            raise TraceError(f"{where}: client {t.client_id}: computation {t.computation_ms!r} ms gives an "
                             "infinite throughput")
        for field, kbit_per_s in (("upload_kbit_per_s", t.upload_kbit_per_s),
                                  ("download_kbit_per_s", t.download_kbit_per_s)):
            field, kbit_per_s = ("communication", t.communication_kbit_per_s) if kbit_per_s is None else (
                field, kbit_per_s)
            if not math.isfinite(BIT_PER_KBIT * kbit_per_s):
                raise TraceError(f"{where}: client {t.client_id}: {field} {kbit_per_s!r} kbit/s overflows "
                                 "in bit/s")
        columns[:, d] = (flops, BIT_PER_KBIT * t.up_kbit_per_s, BIT_PER_KBIT * t.down_kbit_per_s,
                         lc.latency_s if t.latency_s is None else t.latency_s,
                         phases[i] if t.background_phase_rad is None else t.background_phase_rad,
                         math.nan if t.battery_j_at_start is None else t.battery_j_at_start)
        battery = dcs[entry_of[d]].battery_j
        if t.battery_j_at_start is not None and (battery is None or t.battery_j_at_start > battery):
            raise TraceError(f"{where}: client {t.client_id}: battery_j_at_start {t.battery_j_at_start!r} J "
                             f"exceeds its class's battery ({battery!r} J)")
    fleet = SampledFleet(entries, dcs, lcs, entry_of, *columns[:5], background_period_s)
    for e in range(len(entries)):  # the classes' own figures, through the profile constructors once each
        fleet._checked(int(np.flatnonzero(entry_of == e)[0]))
    availability = tuple(_timeline(traces[i]) for i in order)
    return TraceFleet(fleet, availability, tuple(traces[i].client_id for i in order), columns[5].copy())
