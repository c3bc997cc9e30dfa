"""How good are the masks FedFPZO's pruners find? Pruning-at-initialisation masks trained by plain backprop.

    .venv/bin/python benchmarks/study/mask_quality.py                    # mlp_small and cnn, 3 seeds (~3 min)
    .venv/bin/python benchmarks/study/mask_quality.py --models mlp_small --seeds 1

For each model, seed, density and pruner (``algorithms.pruning.prune``: data-free NTK as fedfpzo runs it on
the server, 20 iterations of 8 draws on Gaussian batches of 16; random, global magnitude and SNIP one-shot,
SNIP on 256 labelled training samples), the masked network is trained centrally by SGD (momentum 0.9, the
same steps, batch and learning rate for every mask; the dense network too) on Fashion-MNIST and tested on
the first 2,000 test images. Backprop isolates the mask's quality from the zeroth-order estimator's noise.
It prints one markdown table (mean +- sd over seeds) and the per-layer density of each pruner's mask.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from algorithms.datasets import load_dataset  # noqa: E402
from algorithms.params import FunctionalModel  # noqa: E402
from algorithms.pruning import prune  # noqa: E402

PRUNERS = {"ntk": dict(iters=20, samples=8), "random": dict(iters=1, samples=1),
           "magnitude": dict(iters=1, samples=1), "snip": dict(iters=1, samples=1)}


def _data(n_train: int, n_test: int):
    ds = load_dataset("fashion_mnist")
    x = torch.tensor(np.array(ds.train_x[:n_train]), dtype=torch.float32)
    y = torch.tensor(np.array(ds.train_y[:n_train]), dtype=torch.long)
    tx = torch.tensor(np.array(ds.test_x[:n_test]), dtype=torch.float32)
    ty = torch.tensor(np.array(ds.test_y[:n_test]), dtype=torch.long)
    return x, y, tx, ty


def train_masked(fm: FunctionalModel, weights: torch.Tensor, mask: torch.Tensor, data, steps: int, batch: int,
                 lr: float, seed: int) -> float:
    """Test accuracy after ``steps`` of SGD with momentum on the masked weights (pruned ones stay 0)."""
    x, y, tx, ty = data
    keep = mask.float()
    w = (weights * keep).clone().requires_grad_(True)
    velocity = torch.zeros_like(w)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, len(y), (batch,), generator=g)
        loss = F.cross_entropy(fm(w, x[idx]), y[idx])
        (grad,) = torch.autograd.grad(loss, w)
        with torch.no_grad():
            velocity.mul_(0.9).add_(grad * keep)
            w.sub_(lr * velocity)
    with torch.no_grad():
        return float((fm(w, tx).argmax(1) == ty).float().mean())


def layer_density(fm: FunctionalModel, mask: torch.Tensor) -> list[float]:
    """The kept share of each prunable weight tensor, in layer order."""
    layout, out = fm.layout, []
    for shape, offset, prunable in zip(layout.shapes, layout.offsets, layout.prunable):
        if prunable:
            out.append(float(mask[offset:offset + int(np.prod(shape))].float().mean()))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["mlp_small", "cnn"])
    p.add_argument("--densities", nargs="+", type=float, default=[0.05, 0.1])
    p.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--lr", type=float, default=0.05)
    args = p.parse_args()
    torch.set_num_threads(1)
    data = _data(20000, 2000)
    acc: dict[tuple, list[float]] = {}
    layers: dict[tuple, list[float]] = {}
    for model in args.models:
        fm = FunctionalModel(model, (1, 28, 28), 10)
        for seed in args.seeds:
            w0 = fm.init_weights(seed)
            dense = torch.ones(fm.size, dtype=torch.bool)
            acc.setdefault((model, 1.0, "dense"), []).append(train_masked(fm, w0, dense, data, args.steps, 64,
                                                                         args.lr, seed))
            for density in args.densities:
                for pruner, how in PRUNERS.items():
                    batch = (data[0][:256], data[1][:256]) if pruner == "snip" else None
                    mask = prune(pruner, fm, w0, density, how["iters"], seed=seed, batch_size=16,
                                 samples=how["samples"], data=batch)
                    key = (model, density, pruner)
                    acc.setdefault(key, []).append(train_masked(fm, w0, mask, data, args.steps, 64, args.lr,
                                                                seed))
                    layers[key] = layer_density(fm, mask)
                    print(f"{model} d={density} {pruner} seed {seed}: {acc[key][-1]:.4f}", file=sys.stderr)
    print(f"| model | density | pruner | test accuracy after {args.steps} SGD steps (mean +- sd, "
          f"{len(args.seeds)} seeds) | kept share per prunable layer (last seed) |")
    print("|---|---|---|---|---|")
    for (model, density, pruner), values in acc.items():
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        dens = ", ".join(f"{d:.3f}" for d in layers.get((model, density, pruner), []))
        print(f"| {model} | {density:g} | {pruner} | {statistics.mean(values):.4f} +- {sd:.4f} | {dens or '-'} |")


if __name__ == "__main__":
    main()
