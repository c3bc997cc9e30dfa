"""The reference of ``benchmarks/learning.py``: workload W as a plain torch program would run it.

Nothing of the simulator's learning plane is used: ``nn.Sequential`` (the ``cnn``), ``torch.optim.SGD``,
``torch.randperm`` batches and a sample-weighted mean of the deltas. Only W's inputs come from the project,
so that the updates are exactly the simulator's: the dataset loader (and its cache), the partition, the
initial weights and each task's seed. ``learning.py`` runs ``child_plain`` in a process of its own;
``learning_profile.py`` profiles ``plain_rounds``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path


def child_plain(out: Path, schedule: Path, threads: int) -> None:
    """W as a plain torch program would run it; writes ``summary.json`` (and its timings) into ``out``."""
    t_launch = float(os.environ["BENCH_LAUNCH"])
    import numpy as np
    import torch
    import torch.nn.functional as F

    from algorithms.datasets import load_dataset

    torch.set_num_threads(threads)
    plan = json.loads(schedule.read_text())
    data = load_dataset("fashion_mnist")
    model, parts = plain_setup(plan, np.asarray(data.train_y))
    params = list(model.parameters())
    t_loop = time.time()
    glob = plain_rounds(plan, model, parts, np.asarray(data.train_x), np.asarray(data.train_y))
    loop_s = time.time() - t_loop
    t_eval = time.time()
    with torch.no_grad():
        for p, g in zip(params, glob):
            p.copy_(g)
        tx, ty = torch.from_numpy(np.asarray(data.test_x)), torch.from_numpy(np.asarray(data.test_y))
        correct, loss = 0, 0.0
        for start in range(0, len(ty), 1000):
            logits = model(tx[start:start + 1000])
            loss += F.cross_entropy(logits, ty[start:start + 1000], reduction="sum").item()
            correct += int((logits.argmax(1) == ty[start:start + 1000]).sum())
    summary = {"final_accuracy": correct / len(ty), "final_loss": loss / len(ty),
               "updates_accepted": sum(len(j) for j in plan["rounds"]), "bench": {
                   "loop_s": loop_s, "eval_s": time.time() - t_eval, "startup_s": t_loop - t_launch}}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))


def plain_setup(plan: dict, labels):
    """The plain loop's model (W's initial weights) and partition (W's), as a plain program would get them."""
    import torch

    from algorithms.local import derive_seed
    from algorithms.models import build_model
    from algorithms.partition import partition
    from fleet.core.rng import PURPOSES, RngStreams

    parts = partition(labels, plan["devices"], "dirichlet", RngStreams(plan["seed"]).stream("partition"),
                      alpha=plan["alpha"], min_size=plan["min_samples"])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(plan["seed"], PURPOSES["model_init"]))
        model, _ = build_model("cnn", (1, 28, 28), 10)
    return model, parts


def plain_rounds(plan: dict, model, parts, x_np, y_np) -> list:
    """W's rounds in a plain torch loop: each client's update with ``torch.optim.SGD`` on ``model`` from the
    global weights, then the sample-weighted mean of the deltas; returns the final global weights."""
    import torch
    import torch.nn.functional as F

    from algorithms.local import derive_seed
    from fleet.core.rng import PURPOSES

    seed, lr, batch = plan["seed"], plan["lr"], plan["batch_size"]
    params = list(model.parameters())
    glob = [p.detach().clone() for p in params]
    for round_index, jobs in enumerate(plan["rounds"]):
        total = [torch.zeros_like(p) for p in params]
        samples = 0
        for device, task in jobs:  # in task id order, as the simulator aggregates
            x, y = torch.from_numpy(x_np[parts[device]]), torch.from_numpy(y_np[parts[device]])  # numpy: no OpenMP
            with torch.no_grad():
                for p, g in zip(params, glob):
                    p.copy_(g)
            opt = torch.optim.SGD(params, lr=lr)
            gen = torch.Generator().manual_seed(derive_seed(seed, PURPOSES["local"], device, round_index, task))
            perm = torch.randperm(len(y), generator=gen)
            for start in range(0, len(y), batch):  # one pass, the last batch partial
                b = perm[start:start + batch]
                opt.zero_grad()
                F.cross_entropy(model(x[b]), y[b]).backward()
                opt.step()
            with torch.no_grad():
                for t, p, g in zip(total, params, glob):
                    t.add_(p - g, alpha=float(len(y)))
            samples += len(y)
        with torch.no_grad():
            glob = [g + t / samples for g, t in zip(glob, total)]
    return glob
