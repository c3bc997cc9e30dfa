"""How much of the loss curvature a pruning mask keeps: the zeroth-order step size it can bear.

    .venv/bin/python benchmarks/study/kept_curvature.py          # mlp_small at density 0.1, 3 seeds (~30 s)

For ZO-SGD with Gaussian directions (q of them a step), the expected second-order term of one step is
(lr^2 / 2q) (tr(H) |g|^2 + 2 g'Hg) over the perturbed coordinates, so the largest stable step scales as
1 / tr(H_kept). This prints, for fedfpzo's masks at initialisation (``algorithms.pruning.prune`` as the server
runs it), the trace of the empirical Fisher (the mean squared per-sample gradient, a proxy of the Gauss-Newton
part of H) over the kept coordinates, as a share of the dense network's, on 256 Fashion-MNIST training images.
A mask that keeps 10 % of the weights but 40 % of the trace bears a step 2.5x larger than dense ZO's, not 10x.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from algorithms.params import FunctionalModel  # noqa: E402
from algorithms.pruning import prune  # noqa: E402
from benchmarks.study.mask_quality import PRUNERS, _data  # noqa: E402


def fisher_diagonal(fm: FunctionalModel, weights: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean over the samples of the squared per-sample loss gradient, per coordinate."""
    total = torch.zeros_like(weights)
    for i in range(len(y)):
        w = weights.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(fm(w, x[i:i + 1]), y[i:i + 1]), w)
        total += grad.square()
    return total / len(y)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="mlp_small")
    p.add_argument("--density", type=float, default=0.1)
    p.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    args = p.parse_args()
    torch.set_num_threads(1)
    x, y, _, _ = _data(256, 1)
    fm = FunctionalModel(args.model, (1, 28, 28), 10)
    shares: dict[str, list[float]] = {}
    for seed in args.seeds:
        w0 = fm.init_weights(seed)
        fisher = fisher_diagonal(fm, w0, x, y)
        for pruner, how in PRUNERS.items():
            mask = prune(pruner, fm, w0, args.density, how["iters"], seed=seed, batch_size=16,
                         samples=how["samples"], data=(x, y) if pruner == "snip" else None)
            shares.setdefault(pruner, []).append(float(fisher[mask].sum() / fisher.sum()))
    print(f"| mask ({args.model}, density {args.density:g}) | share of the dense Fisher trace kept (mean +- sd, "
          f"{len(args.seeds)} seeds) | predicted stable ZO step vs dense (1 / share) |")
    print("|---|---|---|")
    for pruner, values in shares.items():
        mean = statistics.mean(values)
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        print(f"| {pruner} | {mean:.3f} +- {sd:.3f} | {1 / mean:.1f}x |")


if __name__ == "__main__":
    main()
