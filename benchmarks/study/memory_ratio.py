"""FedFPZO's memory claim on this project's models: dense backprop's training peak against zeroth-order's.

    .venv/bin/python benchmarks/study/memory_ratio.py

Prints, per model and batch size, the cost model's training-task peak memory (``algorithm.demand``) of fedavg
(dense backprop, SGD), zo (dense zeroth-order) and fedfpzo at density 0.1 (sparse zeroth-order) with its
default storage ``csr`` (a device that stores only the kept weights) and with ``dense_bool`` (what this
project's Python client holds: dense zeros, a bool mask and an int64 index of the kept coordinates), and the
ratio fedavg / fedfpzo for each. The cost model is checked against the allocator in docs/memory.md (BP, ZO
and ``dense_bool`` sparse ZO; ``csr`` is a model of a leaner device, not measured here).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from algorithms.base import TaskConfig  # noqa: E402
from algorithms.registry import create_algorithm  # noqa: E402

SHAPE = {"input_shape": (1, 28, 28), "num_classes": 10}


def peak_bytes(name: str, model: str, batch: int, **params) -> int:
    algorithm = create_algorithm(name, model=model, batch_size=batch, local_steps=10, **params, **SHAPE)
    return algorithm.demand(TaskConfig("train", 10, batch)).peak_memory_bytes


def main() -> None:
    print("| model | batch | fedavg (BP) | zo (dense ZO) | fedfpzo csr | fedfpzo dense_bool | BP / csr | "
          "BP / dense_bool |")
    print("|---|---|---|---|---|---|---|---|")
    for model in ("mlp_small", "mlp", "cnn", "cnn_large"):
        for batch in (1, 16, 64):
            bp = peak_bytes("fedavg", model, batch)
            zo = peak_bytes("zo", model, batch, queries=5)
            fp = peak_bytes("fedfpzo", model, batch, queries=5, density=0.1)
            held = peak_bytes("fedfpzo", model, batch, queries=5, density=0.1, sparse_format="dense_bool")
            print(f"| {model} | {batch} | {bp:,} | {zo:,} | {fp:,} | {held:,} | {bp / fp:.1f}x | {bp / held:.1f}x |")


if __name__ == "__main__":
    main()
