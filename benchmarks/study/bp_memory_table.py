"""The backprop cost model against torch's allocator on the models structured pruning produces.

    .venv/bin/python benchmarks/study/bp_memory_table.py        # a few seconds, one thread

For each (model, architecture) and batch size: the peak memory of two SGD steps of ``local.bp_update``
measured by ``memory_probe.measure_peak`` on 200 random samples, against ``cost.bp_peak_memory_bytes`` of
``profile_named_model(model, architecture=...)``, and their difference in per cent of the measurement. The
table in docs/autoprune.md ("Memory of the pruned models") is this script's output.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from algorithms import cost  # noqa: E402
from algorithms.local import ClientData, ModelState, bp_update  # noqa: E402
from algorithms.memory_probe import measure_peak  # noqa: E402
from algorithms.optim import OptimizerStep  # noqa: E402
from algorithms.params import FunctionalModel  # noqa: E402
from algorithms.profiling import profile_named_model  # noqa: E402

CASES = [("cnn", (16, 32)), ("cnn", (8, 8)), ("cnn", (3, 3)), ("cnn", (1, 1)), ("cnn_femnist", (32, 64)),
         ("cnn_femnist", (20, 40)), ("cnn_femnist", (3, 5)), ("resnet_small", (16, 32, 64)),
         ("resnet_small", (8, 16, 30)), ("cnn_ns", (16, 32)), ("cnn_femnist_ns", (32, 64))]
BATCHES = (8, 32, 64)


def error(model: str, architecture: tuple[int, ...], batch: int) -> float:
    fm = FunctionalModel(model, (1, 28, 28), 10, architecture)
    g = torch.Generator().manual_seed(0)
    data = ClientData(torch.randn(200, 1, 28, 28, generator=g), torch.randint(0, 10, (200,), generator=g))
    state = ModelState(fm.init_weights(0))
    measured = measure_peak(lambda: bp_update(fm, state, data, 2, batch, OptimizerStep("sgd", 0.01), 1)).peak_bytes
    modelled = cost.bp_peak_memory_bytes(profile_named_model(model, architecture=architecture), batch, "sgd")
    return 100 * (modelled - measured) / measured


def main() -> None:
    torch.set_num_threads(1)
    print("| model | architecture | " + " | ".join(f"B={b}" for b in BATCHES) + " |")
    print("|---|---|" + "---|" * len(BATCHES))
    for model, architecture in CASES:
        cells = " | ".join(f"{error(model, architecture, b):+.2f} %" for b in BATCHES)
        print(f"| `{model}` | {architecture} | {cells} |")


if __name__ == "__main__":
    main()
