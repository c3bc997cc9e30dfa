"""A sampled fleet as arrays: ``sample_fleet_arrays`` and ``SampledFleet``, and ``sample_fleet`` on top.

The draws of ``devices.sampling`` (its module docstring states them and their order) made once for the
whole fleet; a device's ``DeviceProfile`` is made when it is first asked for. A fleet of ten million
devices is a few arrays of ten million floats, not ten million objects.
"""

from __future__ import annotations

import math
from dataclasses import fields as dataclass_fields
from typing import Mapping, Sequence

import numpy as np

from devices.background import BackgroundMemory, free_bytes_many
from devices.catalog import DEVICE_CLASSES, DeviceClass
from devices.links import LINK_CLASSES, LinkClass
from devices.sampling import DeviceProfile, MixEntry, checked_mix


def sample_fleet_arrays(mix: Sequence[MixEntry], n_devices: int, rng: np.random.Generator,
                        background_period_s: float = 3600.0, *,
                        device_classes: Mapping[str, DeviceClass] = DEVICE_CLASSES,
                        link_classes: Mapping[str, LinkClass] = LINK_CLASSES) -> "SampledFleet":
    """``sample_fleet`` as arrays (``SampledFleet``): the same draws, the same profiles, a few
    dozen bytes per device instead of an object each (what a fleet of millions needs)."""
    entries, counts, links = checked_mix(mix, n_devices, rng, background_period_s, device_classes, link_classes)
    return SampledFleet._draw(entries, counts, links, rng, background_period_s, device_classes)


def sample_fleet(mix: Sequence[MixEntry], n_devices: int, rng: np.random.Generator,
                 background_period_s: float = 3600.0, *,
                 device_classes: Mapping[str, DeviceClass] = DEVICE_CLASSES,
                 link_classes: Mapping[str, LinkClass] = LINK_CLASSES) -> list[DeviceProfile]:
    """Sample ``n_devices`` profiles from ``mix``; device ids 0..n-1 in mix order.

    Fractions must be ``>= 0`` and sum to 1 within ``FRACTION_SUM_TOLERANCE``; class names must
    be keys of ``device_classes`` / ``link_classes`` (the catalogs by default; pass others to
    try measured figures). The same ``rng`` state gives the same fleet: the profiles of
    ``sample_fleet_arrays`` with the same arguments, one object per device.
    """
    return list(sample_fleet_arrays(mix, n_devices, rng, background_period_s,
                                    device_classes=device_classes, link_classes=link_classes))


class SampledFleet(Sequence[DeviceProfile]):
    """A sampled fleet as a structure of arrays: per device only what was drawn (throughput, link
    rates, latency, background phase) and its mix entry; everything else is the entry's.

    ``fleet[i]`` is device ``i``'s ``DeviceProfile``, made on first use and kept (the devices that
    receive tasks); iterating makes each profile afresh without keeping it. ``entry_of[i]`` is the
    mix entry of device ``i`` (entries with no device included, so indices follow the mix).
    """

    def __init__(self, entries: Sequence[MixEntry], dcs: Sequence[DeviceClass], lcs: Sequence[LinkClass],
                 entry_of: np.ndarray, flops_per_s: np.ndarray, up_bit_per_s: np.ndarray,
                 down_bit_per_s: np.ndarray, latency_s: np.ndarray, phase_rad: np.ndarray,
                 background_period_s: float) -> None:
        self.entries, self.device_class_of_entry, self.link_class_of_entry = tuple(entries), tuple(dcs), tuple(lcs)
        self.entry_of = entry_of
        self.flops_per_s, self.up_bit_per_s, self.down_bit_per_s = flops_per_s, up_bit_per_s, down_bit_per_s
        self.latency_s, self.phase_rad = latency_s, phase_rad
        self.background_period_s = background_period_s
        self._made: dict[int, DeviceProfile] = {}

    @classmethod
    def _draw(cls, entries, counts, links, rng, period_s, device_classes) -> "SampledFleet":
        """Draw per entry, in the fixed order of the module docstring (the reproducibility contract)."""
        n = sum(counts)
        dcs = [device_classes[e.device_class] for e in entries]
        columns = [np.empty(n) for _ in range(5)]
        start = 0
        for dc, lc, count in zip(dcs, links, counts):
            if not count:
                continue
            speed = rng.lognormal(0.0, dc.flops_sigma, count)
            bandwidth = rng.lognormal(0.0, lc.bandwidth_sigma, count)
            latency = rng.lognormal(0.0, lc.latency_sigma, count)
            phase = rng.uniform(0.0, 2.0 * math.pi, count)
            part = slice(start, start + count)
            for column, values in zip(columns, (dc.sustained_flops_per_s * speed, lc.up_bit_per_s * bandwidth,
                                                lc.down_bit_per_s * bandwidth, lc.latency_s * latency, phase)):
                column[part] = values
            start += count
        flops, up, down, latency, _phase = columns
        for name, column, low_ok in (("flops_per_s", flops, False), ("up_bit_per_s", up, False),
                                     ("down_bit_per_s", down, False), ("latency_s", latency, True)):
            ok = np.isfinite(column) & ((column >= 0) if low_ok else (column > 0))
            if not ok.all():  # what each profile's own checks would say, found once for the fleet
                bad = int(np.flatnonzero(~ok)[0])
                raise ValueError(f"{name} must be finite and {'>=' if low_ok else '>'} 0, got "
                                 f"{column[bad]!r} (device {bad})")
        entry_of = np.repeat(np.arange(len(entries), dtype=np.int32), counts)
        fleet = cls(entries, dcs, links, entry_of, *columns, period_s)
        for e in range(len(entries)):  # the entry's own figures, checked on one real profile
            first = np.flatnonzero(entry_of == e)[:1]
            if len(first):
                fleet._checked(int(first[0]))
        return fleet

    def __len__(self) -> int:
        return len(self.entry_of)

    def __getitem__(self, device):  # one profile by id (made once), or a list for a slice
        if isinstance(device, slice):
            return [self._make(i) for i in range(*device.indices(len(self)))]
        made = self._made.get(device)
        if made is None:
            if not -len(self) <= device < len(self):
                raise IndexError(f"device {device} is not in a fleet of {len(self)}")
            device = device % len(self)
            made = self._made[device] = self._make(device)
        return made

    def __iter__(self):
        return (self._make(i) for i in range(len(self)))

    def _fields(self, i: int) -> tuple:
        """Device ``i``'s ``DeviceProfile`` fields in order, its background's last (as sample_fleet made them)."""
        e = int(self.entry_of[i])
        entry, dc, lc = self.entries[e], self.device_class_of_entry[e], self.link_class_of_entry[e]
        trainable = dc.ram_bytes - dc.runtime_reserve_bytes
        return (i, entry.device_class, entry.link_class, dc.ram_bytes, dc.runtime_reserve_bytes,
                self.flops_per_s.item(i), dc.compute_power_w, dc.battery_j, dc.recharge_w,
                self.up_bit_per_s.item(i), self.down_bit_per_s.item(i), self.latency_s.item(i),
                lc.loss_prob, lc.duty_cycle, lc.max_frame_payload_bytes, lc.frame_overhead_bytes,
                lc.tx_j_per_byte,
                (dc.background_mean_fraction * trainable, dc.background_amplitude_fraction * trainable,
                 self.background_period_s, self.phase_rad.item(i)))

    def _checked(self, i: int) -> DeviceProfile:
        """Device ``i``'s profile through the constructors' checks."""
        *fields, background = self._fields(i)
        return DeviceProfile(*fields, BackgroundMemory(*background))

    def _make(self, i: int) -> DeviceProfile:
        """Device ``i``'s profile without the per-object checks: the per-device draws were checked for the whole
        fleet at sampling, and each entry's figures on one profile through the constructors (``_checked``);
        the result is equal to ``_checked(i)``."""
        e = self.entry_of.item(i)
        entry, dc, lc = self.entries[e], self.device_class_of_entry[e], self.link_class_of_entry[e]
        trainable = dc.ram_bytes - dc.runtime_reserve_bytes
        return _unchecked_profile(
            i, entry.device_class, entry.link_class, dc.ram_bytes, dc.runtime_reserve_bytes,
            self.flops_per_s.item(i), dc.compute_power_w, dc.battery_j, dc.recharge_w,
            self.up_bit_per_s.item(i), self.down_bit_per_s.item(i), self.latency_s.item(i),
            lc.loss_prob, lc.duty_cycle, lc.max_frame_payload_bytes, lc.frame_overhead_bytes, lc.tx_j_per_byte,
            dc.background_mean_fraction * trainable, dc.background_amplitude_fraction * trainable,
            self.background_period_s, self.phase_rad.item(i))

    def device_class_of(self, i: int) -> str:
        """Device ``i``'s class name, without making its profile."""
        return self.entries[self.entry_of[i]].device_class

    def class_codes(self) -> tuple[list[str], np.ndarray]:
        """(the distinct device classes, sorted; each device's index into them), without a profile each."""
        present = np.bincount(self.entry_of, minlength=len(self.entries)) > 0
        names = sorted({e.device_class for e, here in zip(self.entries, present.tolist()) if here})
        of_entry = np.array([names.index(e.device_class) if e.device_class in names else -1 for e in self.entries],
                            dtype=np.int32)
        return names, of_entry[self.entry_of]

    def free_bytes_at_all(self, t_s: float) -> np.ndarray:
        """Every device's ``free_memory_bytes`` at ``t_s`` (int64), equal to the profile's scalar figure
        (``BackgroundMemory.at`` and ``max(0, int(trainable - background))``) device by device. An entry's
        devices are consecutive, so each entry is one slice with its class's figures as scalars."""
        out = np.empty(len(self), dtype=np.int64)
        starts = np.searchsorted(self.entry_of, np.arange(len(self.entries) + 1))
        for e, dc in enumerate(self.device_class_of_entry):
            part = slice(starts[e], starts[e + 1])
            n = part.stop - part.start
            if n:
                trainable = dc.ram_bytes - dc.runtime_reserve_bytes
                full = lambda value: np.broadcast_to(float(value), (n,))  # noqa: E731
                out[part] = free_bytes_many(full(trainable), full(dc.background_mean_fraction * trainable),
                                            full(dc.background_amplitude_fraction * trainable),
                                            self.background_period_s, self.phase_rad[part], t_s)
        return out

def _unchecked_constructor():
    """``f(*profile fields but background, *background fields) -> DeviceProfile``: both frozen objects filled
    through their slots' descriptors, what their generated ``__init__`` does, minus the checks."""
    names: dict = {"new": object.__new__, "Profile": DeviceProfile, "Background": BackgroundMemory}
    body = ["    bg = new(Background)"]
    for f in dataclass_fields(BackgroundMemory):
        names[f"b_{f.name}"] = BackgroundMemory.__dict__[f.name].__set__
        body.append(f"    b_{f.name}(bg, bg_{f.name})")
    body.append("    p = new(Profile)")
    params = []
    for f in dataclass_fields(DeviceProfile):
        names[f"p_{f.name}"] = DeviceProfile.__dict__[f.name].__set__
        body.append(f"    p_{f.name}(p, {'bg' if f.name == 'background' else f.name})")
        if f.name != "background":
            params.append(f.name)
    params += [f"bg_{f.name}" for f in dataclass_fields(BackgroundMemory)]
    exec(f"def make({', '.join(params)}):\n" + "\n".join(body) + "\n    return p", names)  # noqa: S102
    return names["make"]


_unchecked_profile = _unchecked_constructor()
