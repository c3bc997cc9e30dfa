"""Per-update wall time of FedMef (mlp_small, batch 16, 10 local steps, plain round, SAP 0.5 bitmap, density 0.1,
one torch thread): sequential fit vs the batched kernel, 50 clients of 100 samples (docs/fedmef.md). Usage:
    .venv/bin/python benchmarks/fedmef_kernel.py [H]   (input (1, H, H), default 28: Fashion-MNIST's first 5000
    training images; other H: Gaussian inputs)"""
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from algorithms.base import TaskConfig  # noqa: E402
from algorithms.batched import batched_local_updates  # noqa: E402
from algorithms.datasets import load_dataset  # noqa: E402
from algorithms.fedmef import FedMef  # noqa: E402
from algorithms.local import ClientData, ModelState, derive_seed  # noqa: E402

torch.set_num_threads(1)
side = int(sys.argv[1]) if len(sys.argv) > 1 else 28
shape, clients, repeats = (1, side, side), 50, 5
for gamma in (0.5, 0.0):
    algorithm = FedMef(model="mlp_small", batch_size=16, local_steps=10, density=0.1, sap_gamma=gamma,
                       sap_index="bitmap", input_shape=shape)
    start = algorithm.init(0)
    state = ModelState(start.weights, start.mask, 1)
    config = TaskConfig("train", 10, 16, mode="plain")
    assert algorithm.mode_at(1) == "plain" and algorithm.batched_kernel(config) is not None
    if side == 28:  # Fashion-MNIST itself: its ties (background zeros, 256 grey levels) are SAP's real case
        data = load_dataset("fashion_mnist")
        x, y = torch.tensor(data.train_x), torch.tensor(data.train_y)
        datas = [ClientData(x[100 * k:100 * (k + 1)].contiguous(), y[100 * k:100 * (k + 1)].contiguous())
                 for k in range(clients)]
    else:
        g = torch.Generator().manual_seed(0)
        datas = [ClientData(torch.randn(100, *shape, generator=g), torch.randint(0, 10, (100,), generator=g))
                 for _ in range(clients)]
    seeds = [derive_seed(7, k) for k in range(clients)]
    seq, bat = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        ref = [algorithm.fit(state, config, d, s) for d, s in zip(datas, seeds)]
        seq.append((time.perf_counter() - t0) / clients)
        t0 = time.perf_counter()
        got = batched_local_updates(algorithm, state, config, datas, seeds)
        bat.append((time.perf_counter() - t0) / clients)
    same = all(torch.equal(r.delta, b.delta) for r, b in zip(ref, got))
    s, b = statistics.median(seq), statistics.median(bat)
    print(f"input {shape} sap_gamma {gamma}: sequential {1e3 * s:.2f} ms/update, kernel {1e3 * b:.2f} ms/update, "
          f"speed-up {s / b:.1f}x (min {1e3 * min(seq):.2f} / {1e3 * min(bat):.2f}); bit-identical: {same}")

from algorithms.fedavg import FedAvg  # noqa: E402  (context: fedavg's kernel on the same clients)  # noqa: E402

fedavg = FedAvg(model="mlp_small", batch_size=16, local_steps=10, input_shape=shape)
fstate, fconfig = fedavg.init(0), TaskConfig("train", 10, 16)
times = []
for _ in range(repeats):
    t0 = time.perf_counter()
    batched_local_updates(fedavg, fstate, fconfig, datas, seeds)
    times.append((time.perf_counter() - t0) / clients)
print(f"input {shape} fedavg kernel (dense): {1e3 * statistics.median(times):.2f} ms/update")
