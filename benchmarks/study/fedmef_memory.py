"""FedMef's memory claim on this project's models: FedMef (BaE and SAP) against the dynamic-sparse baseline
without either, at equal density, three ways.

    .venv/bin/python benchmarks/study/fedmef_memory.py            # about a minute on one core

Per model, batch size and round kind (``plain``; ``adjust``, which also computes and uploads a gradient):

- **modelled**: the cost model's peak of the task (``algorithm.demand``), what gates participation;
- **measured**: torch's allocator peak of the same task (``memory_probe.measure_peak`` around
  ``algorithm.fit``, 2 local steps, one thread, plus the bool mask the update reads in place), as the
  tests in ``tests/algorithms/test_fedmef.py`` measure it;
- **paper's accounting**: the weights and mask as held plus B times the Conv/Linear layer inputs saved for
  backward, each counted once in its SAP form (``sap.saved_layer_input_bytes_per_sample``): no ReLU or
  pooling state, no transients. This is how a memory footprint computed on paper counts activations.

Both runs of a row are at density 0.1 with ERK layer densities; FedMef's SAP is gamma 0.5 with a bitmap
index (the defaults). Change = (FedMef - baseline) / baseline.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from algorithms.base import TaskConfig  # noqa: E402
from algorithms.fedmef import FedMef  # noqa: E402
from algorithms.local import ClientData, ModelState  # noqa: E402
from algorithms.memory_probe import measure_peak  # noqa: E402
from algorithms.sap import saved_layer_input_bytes_per_sample  # noqa: E402

SHAPE = {"input_shape": (1, 28, 28), "num_classes": 10}
STEPS = 2
ROUND_OF = {"plain": 1, "adjust": 10}  # adjust_every is 10 by default


def _data(n: int, shape: tuple[int, ...]) -> ClientData:
    g = torch.Generator().manual_seed(0)
    return ClientData(torch.randn(n, *shape, generator=g), torch.randint(0, 10, (n,), generator=g))


def _row(algorithm: FedMef, batch: int, mode: str) -> tuple[int, int, int]:
    """(modelled, measured, paper's accounting) bytes of one task."""
    config = TaskConfig("train", STEPS, batch, mode=mode)
    start = algorithm.init(0)
    state = ModelState(start.weights, start.mask, ROUND_OF[mode])
    data = _data(4 * batch, algorithm.functional_model.input_shape)
    measured = measure_peak(lambda: algorithm.fit(state, config, data, 1)).peak_bytes + algorithm.functional_model.size
    profile = algorithm.profile
    held = profile.params * (profile.bytes_per_element + 1)
    paper = held + batch * saved_layer_input_bytes_per_sample(profile, algorithm.sap_gamma, algorithm.sap_index)
    return algorithm.demand(config).peak_memory_bytes, measured, paper


def _change(new: int, old: int) -> str:
    return f"{100 * (new - old) / old:+.1f} %"


def main() -> None:
    torch.set_num_threads(1)
    print("| model | batch | round | modelled: baseline / FedMef | change | measured: baseline / FedMef | change "
          "| paper's accounting: baseline / FedMef | change |")
    print("|---|---|---|---|---|---|---|---|---|")
    for model in ("mlp_small", "cnn", "cnn_ns"):
        baseline = FedMef(model=model, bae="off", sap_gamma=0.0, **SHAPE)
        fedmef = FedMef(model=model, **SHAPE)
        for batch in (16, 64):
            for mode in ("plain", "adjust"):
                b, f = _row(baseline, batch, mode), _row(fedmef, batch, mode)
                cells = [f"{b[i]:,} / {f[i]:,} | {_change(f[i], b[i])}" for i in range(3)]
                print(f"| {model} | {batch} | {mode} | {' | '.join(cells)} |", flush=True)


if __name__ == "__main__":
    main()
