"""Physical bounds shared by everything that takes a device's figures from a user: the scenario schema
(``fleet/app/schema.py``) and trace files (``devices/traces/bounds.py``). One place, so that a trace cannot admit a
device a scenario could not describe."""

from __future__ import annotations

__all__ = ["MAX_TIME_S", "MIN_RATE_BIT_PER_S", "MAX_RATE_BIT_PER_S", "MAX_LATENCY_S", "MAX_LOSS_PROB"]

MAX_TIME_S = 1e9  # ~32 years of virtual time: every time and period of a run stays below it
MIN_RATE_BIT_PER_S = 1.0  # a link's rate, up or down
MAX_RATE_BIT_PER_S = 1e11  # 100 Gbit/s
MAX_LATENCY_S = 3_600.0  # a link's one-way latency
MAX_LOSS_PROB = 0.99  # per transmission attempt: at 0.99 a message still arrives, after many tries
