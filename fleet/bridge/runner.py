"""What an agent computes, apart from its socket: the device's measurements, and its task runner.

``load_welcome`` turns a ``welcome`` into the algorithm and the client data it names (``CannotJoin`` when this
device cannot run them); ``run_task`` runs one ``task`` with the project's own algorithms
(``Learner.fit``) and gives the answer to send: an ``update`` with what it measured (compute seconds
and peak memory), or a ``refusal`` (cause ``memory`` when the task's demand exceeds the free memory,
``failure`` when the task cannot run). ``fleet.bridge.agent`` calls them on its worker thread.

torch and the algorithms are imported inside the functions that use them.
"""

from __future__ import annotations

import resource
import sys
import time

__all__ = ["CannotJoin", "configure_threads", "free_memory_bytes", "measured_flops_per_s", "load_welcome",
           "run_task"]


def configure_threads(threads: int | None) -> int:
    """Set torch's intra-op threads to ``threads`` when given; otherwise leave torch's choice (which honours
    ``OMP_NUM_THREADS``). Returns the count torch uses."""
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def free_memory_bytes() -> int:
    """MemAvailable from /proc/meminfo (Linux), else 0."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def measured_flops_per_s(size: int = 256, repeats: int = 5) -> float:
    """A quick float32 matmul throughput: 2 n^3 FLOPs per product, best of ``repeats``."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2.0 * size ** 3 / max(best, 1e-9)


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class CannotJoin(Exception):
    """The welcome asks for something this agent cannot run."""


def load_welcome(body: dict, data_dir: str | None) -> tuple[object, object]:
    """The algorithm and the ``ClientData`` a ``welcome`` body names; ``CannotJoin`` for anything this
    device cannot provide (an unknown algorithm or parameters, a dataset it does not hold)."""
    import numpy as np
    import torch

    from algorithms.datasets import DATASETS, load_dataset
    from algorithms.local import ClientData
    from algorithms.registry import create_algorithm

    try:
        name = body["dataset"]["name"]
        if name not in DATASETS:
            raise ValueError(f"dataset {name!r} is unknown here (known: {', '.join(sorted(DATASETS))})")
        spec = DATASETS[name]
        params = dict(body["algorithm"]["params"])
        params.update(input_shape=spec.input_shape, num_classes=spec.num_classes)
        algorithm = create_algorithm(body["algorithm"]["name"], **params)
        dataset = load_dataset(spec.name, data_dir)
        idx = torch.from_numpy(np.array(body["dataset"]["partition"], dtype=np.int64))  # a writable copy
        data = ClientData(torch.from_numpy(np.array(dataset.train_x))[idx],
                          torch.from_numpy(np.array(dataset.train_y))[idx])
    except Exception as error:  # noqa: BLE001  (whatever fails here, the welcome asks the impossible)
        raise CannotJoin(f"{type(error).__name__}: {error}") from None
    return algorithm, data


def run_task(algorithm, data, body: dict) -> tuple[str, dict]:
    """Run the ``task`` of ``body`` on ``data``; the kind and body of the answer to send."""
    from algorithms.base import TaskConfig
    from algorithms.local import ModelState
    from fleet.bridge import payloads

    task_id = int(body["task_id"])
    free = free_memory_bytes()
    if int(body.get("peak_memory_bytes", 0)) > free > 0:
        return "refusal", payloads.refusal_body(task_id, "memory", free)
    try:
        architecture = tuple(int(w) for w in body.get("architecture", ()))  # the agent rebuilds the model
        state = ModelState(payloads.to_torch(body["weights"]),
                           None if body.get("mask") is None else payloads.to_torch(body["mask"]),
                           int(body.get("prune_step", 0)), architecture)
        config = TaskConfig(body["phase"], int(body["local_steps"]), int(body["batch_size"]),
                            str(body.get("mode", "")), architecture)
        before = _peak_rss_bytes()
        start = time.perf_counter()
        result = algorithm.fit(state, config, data, int(body["seed"]))
        compute_s = time.perf_counter() - start
        if result.kind != body["update_kind"]:
            raise ValueError(f"computed a {result.kind!r} update, the task asks for {body['update_kind']!r}")
        return "update", payloads.update_body(task_id, result, compute_s, max(0, _peak_rss_bytes() - before))
    except Exception as error:  # noqa: BLE001  (any fault in the task is the task's failure)
        print(f"fleet.agent: task {task_id} failed ({type(error).__name__}: {error})", file=sys.stderr)
        return "refusal", payloads.refusal_body(task_id, "failure", free)
