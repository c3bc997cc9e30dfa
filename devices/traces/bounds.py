"""The physical bounds of every number a trace record carries: the scenario schema's bounds for the same quantity.

A trace must not admit a device a scenario could not describe (a latency of 1e300 s, a rate of 1e-300 bit/s:
the run then idles to its end): the limits are ``devices.bounds``, which the scenario schema uses too.

A figure is checked in the unit the simulator uses it in: a rate as ``BIT_PER_KBIT * kbit/s`` bit/s (so that
the float an exporter chose for a rate at a bound reads back inside it), a computation time in ms per sample.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["BIT_PER_KBIT", "MS_PER_S", "MAX_TIME_S", "MIN_RATE_BIT_PER_S", "MAX_RATE_BIT_PER_S", "MAX_LATENCY_S",
           "MAX_LOSS_PROB", "Bound", "BOUNDS"]

MS_PER_S = 1000.0
BIT_PER_KBIT = 1000.0  # FedScale's kbit is 1000 bit (it divides kbits by kbit/s)

from devices.bounds import MAX_LATENCY_S, MAX_LOSS_PROB, MAX_RATE_BIT_PER_S, MAX_TIME_S, MIN_RATE_BIT_PER_S


@dataclass(frozen=True)
class Bound:
    """``low <= scale * value <= high`` (``low < ...`` when ``low_open``; ``... < high`` when ``high_open``),
    shown in messages as ``text`` (the interval in the record's own unit) with the reason ``why``."""

    low: float
    high: float
    text: str
    why: str
    scale: float = 1.0
    low_open: bool = False
    high_open: bool = False

    def holds(self, value: float) -> bool:
        """Whether the finite ``value`` is inside the bound."""
        scaled = self.scale * value
        above = scaled > self.low if self.low_open else scaled >= self.low
        below = scaled < self.high if self.high_open else scaled <= self.high
        return above and below


def _rate(why: str) -> Bound:
    return Bound(MIN_RATE_BIT_PER_S, MAX_RATE_BIT_PER_S,
                 f"[{MIN_RATE_BIT_PER_S / BIT_PER_KBIT:g}, {MAX_RATE_BIT_PER_S / BIT_PER_KBIT:g}] kbit/s", why,
                 scale=BIT_PER_KBIT)


_LINK_RATE = "1 bit/s to 100 Gbit/s, as a scenario's link rates"
BOUNDS = {  # record key -> its bound; a key not here is a name, or checked by its own rule (intervals)
    "computation": Bound(0.0, MAX_TIME_S * MS_PER_S, f"(0, {MAX_TIME_S * MS_PER_S:g}] ms",
                         f"at most {MAX_TIME_S:g} s per sample, a scenario's longest time", low_open=True),
    "communication": _rate(_LINK_RATE),
    "upload_kbit_per_s": _rate(_LINK_RATE),
    "download_kbit_per_s": _rate(_LINK_RATE),
    "latency_s": Bound(0.0, MAX_LATENCY_S, f"[0, {MAX_LATENCY_S:g}] s", "as a scenario's link latency"),
    "loss_prob": Bound(0.0, MAX_LOSS_PROB, f"[0, {MAX_LOSS_PROB:g}]", "as a scenario's link loss_prob"),
    "background_phase_rad": Bound(0.0, 2.0 * math.pi, "[0, 2 pi)", "a phase", high_open=True),
    "battery_j_at_start": Bound(0.0, math.inf, "[0, the device class's battery] J", "a charge",
                                high_open=True),
    "finish_time": Bound(0.0, MAX_TIME_S, f"(0, {MAX_TIME_S:g}] s", "a scenario's longest period",
                         low_open=True),
}
