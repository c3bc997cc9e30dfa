"""A small trace pair in FedScale's schema, written by the tests (made up for them: not real data)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

# client id -> {'computation': ms per sample, 'communication': kbit/s}, as FedScale's client_device_capacity
CAPACITY = {
    1: {"computation": 50.0, "communication": 1000.0},
    2: {"computation": 200.0, "communication": 250.5},
    3: {"computation": 12.5, "communication": 40_000.0},
    4: {"computation": 80.0, "communication": 8_000.0},
}
# client id -> {'duration', 'inactive', 'finish_time', 'active', 'model'}, as FedScale's client_behave_trace
BEHAVIOUR = {
    1: {"duration": 300, "inactive": [200, 400], "finish_time": 1000, "active": [100, 300], "model": "made up"},
    2: {"duration": 1000, "inactive": [1000], "finish_time": 1000, "active": [0], "model": "made up"},
    3: {"duration": 500, "inactive": [100, 1000], "finish_time": 1000, "active": [0, 600], "model": "made up"},
    4: {"duration": 10, "inactive": [60], "finish_time": 3600, "active": [50], "model": "made up"},
}


def write_pair(folder: Path, capacity: dict = CAPACITY, behaviour: dict = BEHAVIOUR,
               suffix: str = ".pkl") -> tuple[Path, Path]:
    """Write ``capacity`` and ``behaviour`` into ``folder`` as pickles (protocol 4) or JSON."""
    paths = folder / f"capacity{suffix}", folder / f"behaviour{suffix}"
    for path, data in zip(paths, (capacity, behaviour)):
        if suffix == ".pkl":
            path.write_bytes(pickle.dumps(data, protocol=4))
        else:
            path.write_text(json.dumps(data))
    return paths
