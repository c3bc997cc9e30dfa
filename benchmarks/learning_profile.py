"""Where W's time goes, per client update: torch's computation against everything around it.

    .venv/bin/python benchmarks/learning_profile.py            # 3 rounds of W (300 updates) per measurement
    .venv/bin/python benchmarks/learning.py --profile          # the same
    .venv/bin/python benchmarks/learning_profile.py --backends vectorized --only-backends   # measurements 1-2 only
    .venv/bin/python benchmarks/learning_profile.py --backends vectorized --op-time 3     # measurement 6 only

Three measurements, each on ``benchmarks/workload_w.yaml`` cut to ``--rounds`` rounds:

1. The simulator without learning: W in timing mode (the same fleet, rounds, selection and event loop, no
   learning plane), wall time of the event loop per task, unprofiled. This is the per-update cost of
   everything that is not the learning plane: dispatch, the simulated network, the device processes, the
   round's bookkeeping and the event log.
2. The learning plane (``LearningPlane.aggregate``: building each client's data, the backend, the
   aggregation), under cProfile, with one torch thread so that the vectorized kernel's units run on the
   profiled thread, for the ``vectorized`` and the ``sequential`` backend, timed in the thread's CPU time (so
   that waiting for a core on a busy machine is not counted). Time inside torch's C functions
   (operators, autograd's engine, ``Function.apply``) is torch's computation; the rest (Python, numpy, the
   per-operator Python wrappers of torch) is overhead. cProfile slows Python code down (every call is
   hooked), so the overhead it reports is an upper bound.
3. The same learning plane unprofiled, for the wall time the profile's shares are applied to.
4. For comparison, the benchmark's plain torch loop (``nn.Module``, ``torch.optim.SGD``) on the same updates,
   profiled the same way.
5. Unprofiled, the backends on W's clients (their sample counts and seeds, the rounds of measurement 2) with
   a 4x4 input instead of 28x28: the same operators in the same order with almost no arithmetic, so the time
   per update is the overhead (Python, and torch's per-operator dispatch) without cProfile's inflation;
   next to the same clients on 28x28 random data.
6. With ``--op-time N`` (and nothing else): the overhead without cProfile's hook cost, ``op_time``: the
   unprofiled CPU time of the learning plane less the time inside torch's operators as ``torch.profiler``
   records them (its own recording cost measured and taken off), N alternating repetitions.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import json
import pstats
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WORKLOAD = ROOT / "benchmarks" / "workload_w.yaml"


def _is_torch(key: tuple) -> bool:
    """Whether a cProfile entry is torch's own C code (an operator, autograd's engine, a Function's apply)."""
    filename, _, name = key
    if filename != "~":
        return False
    return "torch" in name or name in ("<built-in method apply>",) or "_EngineBase" in name


def _area(key: tuple) -> str:
    filename, _, name = key
    if filename == "~":
        return "builtins (numpy, Python)" if "torch" not in name else "torch C"
    for part, label in (("/algorithms/", "algorithms/"), ("/fleet/", "fleet/"), ("/torch/", "torch (Python)"),
                        ("/simpy/", "simpy"), ("/numpy/", "numpy (Python)")):
        if part in filename:
            return label
    return "other Python"


def _hook_cost(calls: int = 200_000) -> float:
    """cProfile's own cost per profiled call (a Python function calling a builtin), in seconds: what its
    figures for Python code are inflated by, per call it counts."""
    def f(x):
        return abs(x)

    def loop():
        for i in range(calls):
            f(i)

    t0 = time.perf_counter()
    loop()
    bare = time.perf_counter() - t0
    profile = cProfile.Profile(time.thread_time)
    t0 = time.perf_counter()
    profile.runcall(loop)
    return max(0.0, (time.perf_counter() - t0 - bare) / (2 * calls))  # two profiled calls per iteration


def _run(backend: str, rounds: int, out: Path, mode: str = "learning", profile: cProfile.Profile | None = None):
    """W with ``backend`` (in-process); returns (summary, seconds inside ``LearningPlane.aggregate``)."""
    import torch

    from fleet.app import run as app_run
    from fleet.learning.plane import LearningPlane

    inner = LearningPlane.aggregate
    spent = [0.0]

    def aggregate(self, *args, **kwargs):
        t0 = time.perf_counter()
        if profile is not None:
            profile.enable()
        try:
            return inner(self, *args, **kwargs)
        finally:
            if profile is not None:
                profile.disable()
            spent[0] += time.perf_counter() - t0

    LearningPlane.aggregate = aggregate
    threads = torch.get_num_threads()
    torch.set_num_threads(1 if profile is not None else threads)
    try:
        app_run.main([str(WORKLOAD), "--out", str(out), "--quiet", "--no-figures", "--set",
                      f"executor.backend={backend}", "--set", f"coordinator.rounds={rounds}", "--set", f"mode={mode}"])
    finally:
        LearningPlane.aggregate = inner
        torch.set_num_threads(threads)
    return json.loads((out / "summary.json").read_text()), spent[0]


def _client_jobs(run_dir: Path, shape: tuple[int, ...]):
    """W's updates of ``run_dir``'s events.csv (their clients' sample counts and seeds, round by round) on
    random data of ``shape``: (algorithm, states, jobs per round, data by device, updates)."""
    import csv

    import numpy as np
    import torch

    from algorithms.datasets import load_dataset
    from algorithms.fedavg import FedAvg
    from algorithms.local import ClientData, derive_seed
    from algorithms.partition import partition
    from fleet.core.rng import PURPOSES, RngStreams
    from fleet.learning.backends import Job

    labels = np.asarray(load_dataset("fashion_mnist").train_y)
    parts = partition(labels, 1000, "dirichlet", RngStreams(1).stream("partition"), alpha=0.5, min_size=8)
    with open(run_dir / "events.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["event"] == "update"]
    rounds: dict[int, list[tuple[int, int]]] = {}
    for r in rows:
        rounds.setdefault(int(r["round"]), []).append((int(r["task"]), int(r["device"])))
    algorithm = FedAvg(model="cnn", local_steps=1, local_epochs=1.0, lr=0.05, input_shape=shape)
    states = {0: algorithm.init(0)}
    gen = torch.Generator().manual_seed(0)
    datas = {d: ClientData(torch.randn(len(parts[d]), *shape, generator=gen),
                           torch.randint(0, 10, (len(parts[d]),), generator=gen))
             for jobs in rounds.values() for _, d in jobs}
    jobs = [[Job(t, d, r, 0, algorithm.fit_config(algorithm.task(r), len(parts[d])),
                 derive_seed(1, PURPOSES["local"], d, r, t)) for t, d in sorted(jobs)]
            for r, jobs in sorted(rounds.items())]
    return algorithm, states, jobs, datas, len(rows)


@contextlib.contextmanager
def _units_as_on_28x28():
    """Within: ``BackpropKernel`` cuts clients into the units it made on the first (28x28) inputs it saw, per
    batch size. It sizes units by memory, so on 4x4 it would make them 16x larger: fewer operator calls per
    update than on 28x28 (53 against 132 on W), and no upper bound of 28x28's overhead."""
    from algorithms.batched.bp import BackpropKernel

    plan_of = BackpropKernel.unit_plan
    per_unit: dict[int, int] = {}

    def plan(self, net, state, batch):
        count, options = plan_of(self, net, state, batch)
        return per_unit.setdefault(batch, count), options

    BackpropKernel.unit_plan = plan
    try:
        yield
    finally:
        BackpropKernel.unit_plan = plan_of


def operator_overhead(run_dir: Path, repeats: int = 3) -> None:
    """Measurement 5: the backends on the clients of ``run_dir``'s events.csv, 28x28 and 4x4 inputs."""
    import torch

    from fleet.learning.backends import SequentialBackend, VectorizedBackend

    results = {}
    with _units_as_on_28x28():
        for shape in ((1, 28, 28), (1, 4, 4)):
            algorithm, states, jobs, datas, updates = _client_jobs(run_dir, shape)
            for backend in (VectorizedBackend(), SequentialBackend()):
                best = float("inf")
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    for round_jobs in jobs:
                        backend.run(algorithm, states, round_jobs, datas.__getitem__)
                    best = min(best, time.perf_counter() - t0)
                results[backend.name, shape] = best / updates
    print(f"\n5. unprofiled, at {torch.get_num_threads()} torch threads, ms per update (best of {repeats}), the same "
          f"{updates} clients with random data:")
    for name in ("vectorized", "sequential"):
        real, tiny = results[name, (1, 28, 28)], results[name, (1, 4, 4)]
        print(f"   {name:<10} 28x28 {real * 1e3:6.2f}   4x4 (the operators without the arithmetic) {tiny * 1e3:6.3f}"
              f"   difference (the arithmetic) {(real - tiny) * 1e3:6.2f}")


def _record_cost(count: int = 500, repeats: int = 40) -> float:
    """torch.profiler's cost per operator it records inside another recorded operator, in seconds: the
    profiled minus the unprofiled time of ``count`` tiny ``add_`` calls that ``torch._foreach_add_`` makes
    (each one recorded as a child), best of ``repeats`` each."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    xs = [torch.zeros(1) for _ in range(count)]
    bare = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch._foreach_add_(xs, 1.0)
        bare.append(time.perf_counter() - t0)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(repeats):
            torch._foreach_add_(xs, 1.0)
    recorded = [e.time_range.elapsed_us() * 1e-6 for e in prof.events() if e.cpu_parent is None]
    return max(0.0, (min(recorded) - min(bare)) / count)


def _op_seconds(prof) -> tuple[float, int, int]:
    """From a torch.profiler run: (seconds inside the top-level operators, which include autograd's backward
    nodes; how many operators were recorded inside them; how many top-level operators)."""
    inside = nested = top = 0
    for e in prof.events():
        if e.cpu_parent is not None:
            continue
        top += 1
        inside += e.time_range.elapsed_us()
        stack = list(e.cpu_children)
        while stack:
            c = stack.pop()
            nested += 1
            stack.extend(c.cpu_children)
    return inside * 1e-6, nested, top


def op_time(run_dir: Path, backends: list[str], repeats: int) -> None:
    """Measurement 6 (``--op-time``): the overhead without cProfile. The backends on W's updates (the clients of
    ``run_dir``, as measurement 5) at one torch thread (the kernel's units run on the calling thread),
    alternating ``repeats`` times: the pass unprofiled, then under ``torch.profiler``,
    which gives the time inside torch's operators. The profiler inflates an operator by what recording the
    operators called inside it costs; that cost is measured (``_record_cost``) and taken off. overhead =
    unprofiled time - operator time: the Python, numpy and torch-Python work between operators. The profiler's
    cost for a top-level operator's own record is unknown, hence a range: from that cost 0 to a nested
    record's. On 4x4 inputs the same operators run in the same order with the same Python around them, but
    their arithmetic is small, so the difference of two nearly equal 28x28 times (noisy on a shared machine)
    becomes a difference of small ones: the 4x4 figure is the one to read; 28x28 checks it. The 4x4 run keeps
    28x28's units (clients per unit: ``BackpropKernel.unit_plan`` would make them 16x larger on 4x4, and the
    operators' count with them). All times are wall times, as the profiler's are (a thread's CPU time against
    the profiler's wall intervals would count waiting for a core as operator time); run it on a quiet machine."""
    import torch

    cost = _record_cost()
    print(f"\n6. overhead outside torch's operators (torch.profiler; a nested recorded operator costs "
          f"{cost * 1e6:.2f} us, measured, and is taken off), 1 torch thread, {repeats} alternating repetitions:")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with _units_as_on_28x28():
            _op_time_shapes(run_dir, backends, repeats, cost)
    finally:
        torch.set_num_threads(threads)


def _op_time_shapes(run_dir: Path, backends: list[str], repeats: int, cost: float) -> None:
    """``op_time``'s passes, 28x28 then 4x4 (see there)."""
    import statistics

    from torch.profiler import ProfilerActivity, profile

    from fleet.learning.backends import SequentialBackend, VectorizedBackend

    for shape in ((1, 28, 28), (1, 4, 4)):
        algorithm, states, jobs, datas, updates = _client_jobs(run_dir, shape)
        made = {"vectorized": VectorizedBackend, "sequential": SequentialBackend}

        def one_pass(backend):
            for round_jobs in jobs:
                backend.run(algorithm, states, round_jobs, datas.__getitem__)

        for name in backends:
            backend = made[name]()
            one_pass(backend)  # warm
            rows = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                one_pass(backend)
                plain = time.perf_counter() - t0
                with profile(activities=[ProfilerActivity.CPU]) as prof:
                    one_pass(backend)
                ops, nested, top = _op_seconds(prof)
                ops -= nested * cost
                rows.append(((plain - ops) / updates, (plain - ops + top * cost) / updates, plain / updates,
                             ops / updates, top / updates))
            low = [r[0] * 1e3 for r in rows]
            high = [r[1] * 1e3 for r in rows]
            print(f"   {name:<10} {shape[1]}x{shape[2]}: update {min(r[2] for r in rows) * 1e3:.2f} ms unprofiled, "
                  f"in operators {min(r[3] for r in rows) * 1e3:.2f} ms ({rows[0][4]:.0f} top-level operator "
                  f"calls per update); outside them {min(low):.3f}-{min(high):.3f} ms per update at best, "
                  f"median {statistics.median(low):.3f}-{statistics.median(high):.3f}, "
                  f"all {', '.join(f'{a:.3f}-{b:.3f}' for a, b in zip(low, high))}")


def _report(title: str, stats: dict, updates: int, hook: float, top: int) -> None:
    """Print a profile's split, per update: torch's C functions against the rest, by area and by function."""
    total = sum(v[2] for v in stats.values())
    in_torch = sum(v[2] for k, v in stats.items() if _is_torch(k))
    waiting = sum(v[2] for k, v in stats.items() if "acquire" in k[2])
    overhead = total - in_torch - waiting
    events = sum(v[1] for v in stats.values())
    hooks = min(overhead, events * hook)
    print(f"\n{title}: profiled at 1 thread {total / updates * 1e3:.2f} ms per update: torch "
          f"{in_torch / updates * 1e3:.2f} ms, outside torch {overhead / updates * 1e3:.3f} ms "
          f"({overhead / total:.1%}); "
          f"less cProfile's own cost ({events / updates:.0f} profiled calls per update at {hook * 1e6:.2f} us): "
          f"{(overhead - hooks) / updates * 1e3:.3f} ms")
    areas: dict[str, float] = {}
    for k, v in stats.items():
        if not _is_torch(k) and "acquire" not in k[2]:
            areas[_area(k)] = areas.get(_area(k), 0.0) + v[2]
    print("   outside torch, by area (ms per update): " + ", ".join(
        f"{a} {t / updates * 1e3:.3f}" for a, t in sorted(areas.items(), key=lambda kv: -kv[1])))
    print("   largest outside torch (ms per update, calls):")
    for t, key in sorted(((v[2], k) for k, v in stats.items() if not _is_torch(k) and "acquire" not in k[2]),
                         reverse=True)[:top]:
        filename, line, name = key
        where = name if filename == "~" else f"{Path(filename).name}:{line} {name}"
        print(f"     {t / updates * 1e3:7.3f}  {stats[key][1]:>7}  {where}")
    largest = sorted(((v[2], k) for k, v in stats.items() if _is_torch(k)), reverse=True)[:6]
    print("   largest in torch (ms per update): " + ", ".join(f"{k[2]} {t / updates * 1e3:.2f}" for t, k in largest))


def _profile_plain(run_dir: Path, tmp: Path) -> tuple[dict, int]:
    """cProfile of the benchmark's plain torch loop on the rounds of ``run_dir``, at one thread."""
    import numpy as np
    import torch

    from algorithms.datasets import load_dataset

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from learning import schedule_from
    from plain_loop import plain_rounds, plain_setup

    schedule_from(run_dir, tmp / "schedule.json")
    plan = json.loads((tmp / "schedule.json").read_text())
    data = load_dataset("fashion_mnist")
    model, parts = plain_setup(plan, np.asarray(data.train_y))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    profile = cProfile.Profile(time.thread_time)
    x, y = np.asarray(data.train_x), np.asarray(data.train_y)
    try:
        plain_rounds({**plan, "rounds": plan["rounds"][:1]}, model, parts, x, y)  # warm: torch.optim's lazy imports
        profile.runcall(plain_rounds, plan, model, parts, x, y)
    finally:
        torch.set_num_threads(threads)
    return pstats.Stats(profile).stats, sum(len(r) for r in plan["rounds"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--backends", default="vectorized,sequential",
                        help="the learning planes to profile (measurements 2 and 3)")
    parser.add_argument("--only-backends", action="store_true",
                        help="measurements 1 to 3 only (no plain loop, no 4x4 comparison)")
    parser.add_argument("--op-time", type=int, metavar="REPEATS", default=0,
                        help="measurement 6 only, REPEATS times: the overhead outside torch's operators by "
                             "torch.profiler, without cProfile")
    args = parser.parse_args()
    backends = [b for b in args.backends.split(",") if b]
    unknown = set(backends) - {"vectorized", "sequential"}
    if unknown:
        parser.error(f"--backends: unknown {sorted(unknown)}; known: vectorized, sequential")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        _run("vectorized", args.rounds, tmp / "warm")  # imports, caches, first-call costs
        if args.op_time:
            op_time(tmp / "warm", backends, args.op_time)
            return 0
        summary, _ = _run("vectorized", args.rounds, tmp / "timing", mode="timing")
        tasks = summary["client_tasks"]
        print(f"1. simulator without learning (timing mode): {summary['wall_s'] / tasks * 1e3:.3f} ms per task "
              f"({tasks} tasks, {summary['wall_s']:.2f} s)")
        hook = _hook_cost()
        for n, backend in enumerate(backends):
            summary, wall = _run(backend, args.rounds, tmp / f"{backend}-wall")
            updates = summary["updates_accepted"]
            profile = cProfile.Profile(time.thread_time)  # this thread's CPU time: waiting for a core is not counted
            _run(backend, args.rounds, tmp / backend, profile=profile)
            print(f"\n{2 + n}. learning plane, {backend}: {updates} updates, unprofiled {wall / updates * 1e3:.2f} ms "
                  f"per update ({wall:.2f} s) ")
            _report(f"   {backend}", pstats.Stats(profile).stats, updates, hook, args.top)
        if args.only_backends:
            return 0
        stats, updates = _profile_plain(tmp / "warm", tmp)
        _report("4. the plain torch loop (benchmarks/learning.py), the same updates", stats, updates, hook, args.top)
        operator_overhead(tmp / "warm")
    return 0


if __name__ == "__main__":
    sys.exit(main())
