"""Write the hand-made example trace pair in FedScale's format: ``example_capacity.pkl`` and
``example_behaviour.pkl`` (and the same data as ``.json``), read by ``scenarios/trace_small.yaml``.

These are NOT real traces: 40 made-up clients, drawn from a fixed seed so that the files are reproducible,
with figures in the ranges of FedScale's published ``client_device_capacity`` (tens to hundreds of ms per
sample, hundreds to tens of thousands of kbit/s) and a two-day behaviour period with a few online stretches
a day (about a third of the time online, some clients from t = 0). The schema is FedScale's
(``benchmark/dataset/data/device_info/README.md``): capacity client id -> ``{'computation': ms per sample,
'communication': kbit/s}``; behaviour client id -> ``{'duration', 'inactive', 'finish_time', 'active',
'model'}``, times in seconds. Run ``python scenarios/traces/make_example.py``
to rewrite them.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np

CLIENTS = 40
PERIOD_S = 2 * 86_400  # finish_time: the behaviour repeats every two days
SEED = 20_240_612
HERE = Path(__file__).resolve().parent


def make() -> tuple[dict, dict]:
    rng = np.random.default_rng(SEED)
    capacity, behaviour = {}, {}
    for cid in range(1, CLIENTS + 1):
        capacity[cid] = {"computation": round(float(rng.lognormal(np.log(60.0), 0.6)), 1),
                         "communication": round(float(rng.lognormal(np.log(4_000.0), 1.0)), 3)}
        active, inactive, t = [], [], -float(rng.integers(0, 6 * 3600))  # some clients start online
        while True:
            start = max(t, 0.0)
            end = t + float(rng.integers(1_800, 6 * 3_600))
            if end > PERIOD_S:
                break
            if end > 0:
                active.append(int(start))
                inactive.append(int(end))
            t = end + float(rng.integers(3_600, 12 * 3_600))
        behaviour[cid] = {"duration": inactive[-1] - active[0], "inactive": inactive, "finish_time": PERIOD_S,
                          "active": active, "model": "hand-made example"}
    return capacity, behaviour


def main() -> None:
    capacity, behaviour = make()
    for name, data in (("example_capacity", capacity), ("example_behaviour", behaviour)):
        (HERE / f"{name}.pkl").write_bytes(pickle.dumps(data, protocol=4))
        (HERE / f"{name}.json").write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
