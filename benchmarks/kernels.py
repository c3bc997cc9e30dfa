"""Batched kernels: client updates of the batched kernels against the sequential loop, and the iot_1000 run.

(Until December 2026 this was ``benchmarks/learning.py``; that name now runs the reference workload W.)

    .venv/bin/python benchmarks/kernels.py                 # full run (a few minutes)
    .venv/bin/python benchmarks/kernels.py --quick         # fewer clients, one repetition
    .venv/bin/python benchmarks/kernels.py --no-scenario   # skip the iot_1000 run

All in one process and one run, at the process's torch thread count T (``--threads``, default torch's):

1. Client updates per second of ``algorithms.batched.batched_local_updates`` over N clients (random data of
   the model's input shape, 10 local steps of batch 32) against the same N updates computed one after
   another by ``algorithm.fit``, for fedavg cnn, fedavg mlp_small and zo mlp_small (and fedavg mlp and
   fedprox mlp_small, for information). The sequential loop runs at T threads and at 1 thread and is credited with the
   faster of the two: on a loaded 2-core machine two OpenMP threads can spin against other processes and
   run 10x slower, and a baseline that slow would flatter the ratio. Target: ratio >= 1.5.
2. The batched path's achieved client FLOP/s (``algorithm.demand(config).flops`` per update, the cost
   model's count) against a 2048x2048 float32 matmul at T threads, measured in the same run. Target >= 0.5.
3. Wall time and peak RSS (``RUSAGE_CHILDREN``) of ``python -m fleet.run scenarios/iot_1000.yaml``.
   Targets: <= 300 s and <= 1.5 GiB.

Every timing is the best of the repetitions, candidates alternating, so that a burst of load from other
processes hits them alike.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from algorithms.base import TaskConfig  # noqa: E402
from algorithms.batched import batched_local_updates  # noqa: E402
from algorithms.fedavg import FedAvg  # noqa: E402
from algorithms.fedprox import FedProx  # noqa: E402
from algorithms.local import ClientData, derive_seed  # noqa: E402
from algorithms.zo import ZerothOrder  # noqa: E402

DIGITS, FASHION = (1, 8, 8), (1, 28, 28)
TARGET_CASES = ("fedavg cnn", "fedavg mlp_small", "zo mlp_small")  # the rows the targets apply to
CASES = [  # (label, algorithm, input shape)
    ("fedavg cnn", lambda: FedAvg(model="cnn", input_shape=FASHION), FASHION),
    ("fedavg mlp_small", lambda: FedAvg(model="mlp_small", input_shape=DIGITS), DIGITS),
    ("zo mlp_small", lambda: ZerothOrder(model="mlp_small", input_shape=DIGITS), DIGITS),
    ("fedavg mlp", lambda: FedAvg(model="mlp", input_shape=FASHION), FASHION),
    ("fedprox mlp_small", lambda: FedProx(model="mlp_small", mu=0.1, input_shape=DIGITS), DIGITS),
]


def client_datas(shape: tuple[int, ...], clients: int, seed: int = 0) -> list[ClientData]:
    g = torch.Generator().manual_seed(seed)
    sizes = np.random.default_rng(seed).integers(40, 121, clients)
    return [ClientData(torch.randn(int(n), *shape, generator=g), torch.randint(0, 10, (int(n),), generator=g))
            for n in sizes]


def best_of(candidates: dict, repeats: int) -> dict[str, float]:
    """Best wall time of each candidate, alternating them ``repeats`` times (after one warm-up call each)."""
    for run in candidates.values():
        run()
    best = {name: float("inf") for name in candidates}
    for _ in range(repeats):
        for name, run in candidates.items():
            t0 = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def with_threads(threads: int, run):
    def call():
        torch.set_num_threads(threads)
        run()
    return call


def matmul(threads: int, n: int = 2048, reps: int = 10):
    a, b = torch.randn(n, n), torch.randn(n, n)
    return with_threads(threads, lambda: [a @ b for _ in range(reps)]), 2 * n ** 3 * reps


def learning_table(threads: int, clients: int, repeats: int) -> list[dict]:
    rows = []
    mm_run, mm_flops = matmul(threads)
    for label, make, shape in CASES:
        algorithm = make()
        state = algorithm.init(1)
        config = TaskConfig("train", 10, 32)
        datas = client_datas(shape, clients)
        seeds = [derive_seed(1, k) for k in range(clients)]

        def sequential():
            for d, s in zip(datas, seeds):
                algorithm.fit(state, config, d, s)

        candidates = {
            "vectorized": with_threads(
                threads, lambda: batched_local_updates(algorithm, state, config, datas, seeds)),
            f"sequential {threads} thr": with_threads(threads, sequential),
            "matmul": mm_run,
        }
        if threads != 1:
            candidates["sequential 1 thr"] = with_threads(1, sequential)
        best = best_of(candidates, repeats)
        torch.set_num_threads(threads)
        seq_name = min((k for k in best if k.startswith("sequential")), key=best.get)
        flops = algorithm.demand(config).flops * clients
        rows.append({
            "case": label, "clients": clients,
            "vec_ups": clients / best["vectorized"], "seq_ups": clients / best[seq_name],
            "seq_threads": seq_name.split()[1],
            "vec_gflops": flops / best["vectorized"] / 1e9, "mm_gflops": mm_flops / best["matmul"] / 1e9,
        })
    return rows


def scenario_run(path: Path) -> dict:
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "fleet.run", str(path), "--quiet", "--no-figures",
                               "--out", out], cwd=ROOT, capture_output=True, text=True)
        wall = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # KiB on Linux
    return {"returncode": proc.returncode, "wall_s": wall, "peak_rss_bytes": rss, "stderr": proc.stderr[-2000:]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20 clients, one repetition")
    parser.add_argument("--no-scenario", action="store_true", help="skip the iot_1000 run")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--clients", type=int, default=None)
    args = parser.parse_args()
    clients = args.clients or (20 if args.quick else 100)
    repeats = 1 if args.quick else 3
    print(f"torch {torch.__version__}, {args.threads} threads, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f} at start")
    rows = learning_table(args.threads, clients, repeats)
    header = (f"{'case':<17} {'clients':>7} {'seq upd/s':>10} {'(thr)':>5} {'vec upd/s':>10} {'ratio':>6} "
              f"{'vec GFLOP/s':>11} {'matmul GFLOP/s':>14} {'ratio':>6}")
    print(header)
    ok = True
    for r in rows:
        speedup, efficiency = r["vec_ups"] / r["seq_ups"], r["vec_gflops"] / r["mm_gflops"]
        ok &= speedup >= 1.5 or r["case"] not in TARGET_CASES
        print(f"{r['case']:<17} {r['clients']:>7} {r['seq_ups']:>10.1f} {r['seq_threads']:>5} "
              f"{r['vec_ups']:>10.1f} {speedup:>6.2f} {r['vec_gflops']:>11.1f} {r['mm_gflops']:>14.1f} "
              f"{efficiency:>6.2f}")
    print(f"load average {os.getloadavg()[0]:.2f} at the end of the table")
    print(f"target updates/s ratio >= 1.5 ({', '.join(TARGET_CASES)}):", "met" if ok else "NOT met",
          "| target FLOP/s ratio >= 0.5: see the last column")
    if not args.no_scenario:
        r = scenario_run(ROOT / "scenarios" / "iot_1000.yaml")
        gib = r["peak_rss_bytes"] / 2**30
        status = "ok" if r["returncode"] == 0 else f"FAILED (exit {r['returncode']}): {r['stderr']}"
        print(f"iot_1000: {status}; wall {r['wall_s']:.1f} s (target <= 300), peak RSS {gib:.2f} GiB "
              f"(target <= 1.5)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
