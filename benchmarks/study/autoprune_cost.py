"""What automatic structured pruning removed in finished runs, and the memory of the pruned model checked
against torch's allocator.

    .venv/bin/python benchmarks/study/autoprune_cost.py /tmp/autoprune_study    # the runs of run_seeds.py

For each variant found under RUNS (``RUNS/s<seed>/<variant>/summary.json``, as ``run_seeds.py`` writes
them), from each run's ``final_architecture``: the parameters and the forward FLOPs per sample of the
final model against the registered one (mean +- sd of the share removed over the seeds), the final widths
of the last seed, and one training step's peak memory at the run's batch size on the final model, modelled
(``algorithm.demand``, FedAvg's backprop cost on the pruned architecture) and measured
(``memory_probe.measure_peak`` around ``algorithm.fit``, one thread), for the last seed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from algorithms.base import TaskConfig  # noqa: E402
from algorithms.local import ClientData, ModelState  # noqa: E402
from algorithms.memory_probe import measure_peak  # noqa: E402
from algorithms.registry import create_algorithm  # noqa: E402

SHAPE = {"input_shape": (1, 28, 28), "num_classes": 10}
STEPS = 2


def _stat(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.mean(values):.1f} +- {100 * sd:.1f} %"


def _peaks(summary: dict) -> tuple[int, int]:
    """(modelled, measured) peak bytes of one training step on the run's final architecture."""
    params = summary["algorithm_params"]
    algorithm = create_algorithm("autoprune", **params, **SHAPE)
    architecture = tuple(summary["final_architecture"])
    fm = algorithm.functional_model_for(architecture)
    batch = algorithm.batch_size
    config = TaskConfig("train", STEPS, batch, architecture=architecture)
    state = ModelState(fm.init_weights(0), None, 0, architecture)
    g = torch.Generator().manual_seed(0)
    n = 4 * batch
    data = ClientData(torch.randn(n, *fm.input_shape, generator=g), torch.randint(0, 10, (n,), generator=g))
    measured = measure_peak(lambda: algorithm.fit(state, config, data, 1)).peak_bytes
    return algorithm.demand(config).peak_memory_bytes, measured


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", type=Path)
    args = p.parse_args()
    torch.set_num_threads(1)
    by_variant: dict[str, list[dict]] = {}
    for path in sorted(args.runs.glob("s*/*/summary.json")):
        summary = json.loads(path.read_text())
        if summary["algorithm"] == "autoprune":
            by_variant.setdefault(path.parent.name, []).append(summary)
    if not by_variant:
        print(f"no autoprune run under {args.runs}", file=sys.stderr)
        return 2
    print("| variant | seeds | params removed | forward FLOPs removed | final widths (last seed) | final params "
          "(last seed) | step peak, modelled / measured (last seed) |")
    print("|---|---|---|---|---|---|---|")
    for variant, summaries in by_variant.items():
        params_cut, flops_cut = [], []
        for s in summaries:
            algorithm = create_algorithm("autoprune", **s["algorithm_params"], **SHAPE)
            start, end = algorithm.profile_for(()), algorithm.profile_for(tuple(s["final_architecture"]))
            params_cut.append(1 - end.params / start.params)
            flops_cut.append(1 - end.forward_flops_per_sample / start.forward_flops_per_sample)
        last = summaries[-1]
        modelled, measured = _peaks(last)
        print(f"| {variant} | {len(summaries)} | {_stat(params_cut)} | {_stat(flops_cut)} | "
              f"{tuple(last['final_architecture'])} | {last['final_params']:,} | {modelled:,} / {measured:,} "
              f"({100 * (modelled - measured) / measured:+.1f} %) |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
