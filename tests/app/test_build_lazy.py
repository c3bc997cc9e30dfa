"""The fleet as ``build_simulation`` makes it for millions of devices: sampled as arrays, each device's timeline
and battery made when first asked for, equal to what one object per device made at build time gave."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from devices import AllOf, AlwaysOn, Diurnal, RandomFailure
from fleet.app.build import _availability, _fleet, _initial_battery
from fleet.app.scenario import load_variants
from fleet.core.kernel import Kernel

SCENARIO = Path(__file__).resolve().parents[2] / "scenarios" / "iot_1000.yaml"


def _eager(scenario, kernel, entry_of, profiles):
    """Availability and batteries as they were built before: one object per device, in device order."""
    rng = kernel.rng.stream("availability")
    phases = rng.random(len(entry_of))
    out = []
    for device in range(len(entry_of)):
        cfg = scenario.fleet.mix[entry_of[device]].availability
        parts = []
        if cfg.diurnal is not None:
            d = cfg.diurnal
            parts.append(Diurnal(d.period_s, d.on_fraction, float(phases[device]) * d.period_s))
        if cfg.failure is not None:
            f = cfg.failure
            parts.append(RandomFailure(f.mtbf_s, f.mttr_s, kernel.rng.stream("failure", device)))
        out.append(AlwaysOn() if not parts else parts[0] if len(parts) == 1 else AllOf(tuple(parts)))
    draws = kernel.rng.stream("availability").random(len(profiles))
    battery = []
    for p, u, e in zip(profiles, draws.tolist(), entry_of.tolist()):
        charge = scenario.fleet.mix[e].battery_charge
        battery.append(None if p.battery_j is None else p.battery_j * (charge.low + (charge.high - charge.low) * u))
    return out, battery


def test_lazy_timelines_and_batteries_are_the_eager_ones():
    (_, scenario), = [v for v in load_variants(SCENARIO, ["mode=timing"]) if v[0] == "fedavg"]
    lazy_kernel, eager_kernel = Kernel(scenario.seed), Kernel(scenario.seed)
    profiles, availability, battery = _fleet(scenario, lazy_kernel)
    eager_kernel.rng.stream("fleet")  # the same streams drawn in the same order
    from devices import MixEntry, sample_fleet_arrays

    mix = [MixEntry(e.device_class, e.link_class, e.fraction, e.link.figures()) for e in scenario.fleet.mix]
    eager_profiles = sample_fleet_arrays(mix, scenario.fleet.devices, eager_kernel.rng.stream("fleet"))
    timelines, batteries = _eager(scenario, eager_kernel, eager_profiles.entry_of, list(eager_profiles))
    assert [battery[d] for d in range(len(profiles))] == batteries
    times = np.random.default_rng(0).uniform(0, 3e5, 40).tolist()
    for device in range(0, len(profiles), 7):
        lazy, eager = availability[device], timelines[device]
        assert type(lazy) is type(eager)
        for t in times:
            assert lazy.unavailable_cause(t) == eager.unavailable_cause(t)
            assert lazy.next_interruption(t, t + 7200.0) == eager.next_interruption(t, t + 7200.0)
    assert availability[3] is availability[3]
    assert _availability is not None and _initial_battery is not None
