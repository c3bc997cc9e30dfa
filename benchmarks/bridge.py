"""Bridge throughput: task round trips per second through ``fleet.bridge.hub.Hub`` against raw pyzmq + msgpack.

    .venv/bin/python benchmarks/bridge.py            # ~45 s
    .venv/bin/python benchmarks/bridge.py --quick    # ~8 s

Everything below is measured in one run, on plain TCP over 127.0.0.1:

1. Round trips per second with a tiny payload. The hub side is the real ``fleet.bridge.hub.Hub`` (its I/O thread
   reads, decodes every frame with ``protocol.decode``, heartbeats, keeps liveness): ``Hub.send(identity,
   "task", body)`` with a valid ``task`` body (16 float32 weights), ``Hub.poll``, then what
   ``BridgeTransport.pump`` does: the device by identity, the ``update`` matched to its pending task (else
   ``Hub.reject``), ``payloads.result_from_update(msg, **EXPECTED)``. The device side is an echo agent: a
   DEALER that says ``hello``, gets its ``welcome`` (given an index and ``Hub.track``-ed, as
   ``BridgeTransport`` does), decodes each task with ``protocol.decode`` (and ``payloads.validate_task``),
   answers heartbeats, and answers with an ``update`` (kind ``delta``, the weights echoed) built with
   ``protocol.encode(..., self_check=False)``, as ``fleet.agent`` does. Next to it, the same exchange with a
   raw ROUTER/DEALER pair and plain msgpack dicts of the same content, without any validation. The agent
   runs in a thread of the hub's process and in a separate process (fairer on 2 cores: no shared GIL), with
   1 and 8 tasks in flight. A third column runs the raw loop with ``fleet.bridge.protocol`` frames and checks but
   no ``Hub``, which splits the gap between the codec and the hub. Each figure is the best of ``--repeats``
   timed windows, the candidates alternating. Target: bridge/raw >= 0.5.
2. 64 agents at once: ``--procs`` processes each host 64/procs DEALER sockets (each its own device with its
   own name). ``python -m fleet.agent`` imports torch and measures FLOP/s at start-up, too heavy to start 64
   of on a 2-core machine, so these are the echo agents of 1. They connect and say ``hello``; the hub side
   attaches them all, then sends ``--tasks`` tasks to each, round-robin, 64 in flight. Reported: attach
   time, aggregate round trips/s (and the raw loop's, same layout), ``hub.rejected`` (must stay empty), and
   whether every agent answered exactly its tasks.
3. The per-message codec costs behind the ratio (``protocol.encode``/``decode`` against ``msgpack``), with
   ``self_check=False`` on the encodes, as the hub and the agent run them.

The hub's liveness is widened (``liveness=60``) so that an agent idle while the raw loop runs is not purged;
heartbeats are still sent and answered. Its flood guard stays on (every frame pays for it), at 10^7 frames/s
a peer: the default, 500, would cap the figures. Agent processes exit on ``bye`` and are killed otherwise.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import subprocess
import sys
import threading
import time
import timeit
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import msgpack  # noqa: E402
import numpy as np  # noqa: E402
import zmq  # noqa: E402

from fleet.bridge import payloads, protocol  # noqa: E402

P = 16  # model parameters: the tiny payload
WEIGHTS = np.linspace(-1.0, 1.0, P, dtype=np.float32)
RAW_WEIGHTS = WEIGHTS.tobytes()
# what ``BridgeTransport`` checks an update against (``expected(task)``): a delta of P entries, at most the
# 4 samples of ``welcome_body``, the norm bound of ``fleet.bridge.transport.UPDATE_NORM_RATIO``
EXPECTED = {"n_params": P, "update_kind": "delta", "max_samples": 4,
            "max_norm": 10.0 * max(1.0, float(np.linalg.norm(WEIGHTS.astype(np.float64))))}
IDLE_EXIT_S = 30.0  # an agent that hears nothing this long exits by itself
PHASE_LIMIT_S = 20.0  # any single wait of the benchmark longer than this is a failure
_ids = itertools.count(1)  # task ids, unique over the whole run


# --- bodies ----------------------------------------------------------------------------------------------
def task_body(task_id: int) -> dict:
    return {"task_id": task_id, "round_index": 0, "model_version": 0, "phase": "train", "local_steps": 1,
            "batch_size": 1, "seed": task_id, "weights": WEIGHTS, "prune_step": 0, "update_kind": "delta"}


def raw_task(task_id: int) -> bytes:
    return msgpack.packb({"task_id": task_id, "round_index": 0, "model_version": 0, "phase": "train",
                          "local_steps": 1, "batch_size": 1, "seed": task_id, "weights": RAW_WEIGHTS,
                          "prune_step": 0, "update_kind": "delta"})


def welcome_body(index: int) -> dict:
    return {"device": index, "heartbeat_interval_s": 1.0,
            "algorithm": {"name": "fedavg", "params": {"model": "mlp_small"}},
            "dataset": {"name": "digits", "partition": np.arange(4, dtype=np.int64)}, "liveness": 60}


# --- the echo agent (thread or process) ------------------------------------------------------------------
class _Bye(Exception):
    pass


def _bridge_handler(sock: zmq.Socket, name: str, stats: dict):
    sock.send(protocol.encode("hello", {"device_class": "rpi4_4gb", "free_memory_bytes": 2**30,
                                        "flops_per_s": 1e9, "agent_version": "bench-echo",
                                        "device_name": name}))

    def handle(frame: bytes) -> None:
        msg = protocol.decode(frame)
        if msg.kind == "task":
            payloads.validate_task(msg, n_params=P)
            sock.send(protocol.encode("update", {"task_id": msg["task_id"], "kind": "delta", "num_samples": 1,
                                                 "compute_s": 0.0, "peak_memory_bytes": 0,
                                                 "delta": msg["weights"]}, self_check=False))
            stats["handled"] += 1
        elif msg.kind == "heartbeat":
            sock.send(protocol.encode("heartbeat", {"sent_s": time.monotonic()}, self_check=False))
        elif msg.kind == "welcome":
            stats["welcomed"] += 1
        elif msg.kind == "bye":
            raise _Bye
    return handle


def _raw_handler(sock: zmq.Socket, name: str, stats: dict):
    sock.send(msgpack.packb({"hello": name}))

    def handle(frame: bytes) -> None:
        d = msgpack.unpackb(frame)
        if "task_id" in d:
            sock.send(msgpack.packb({"task_id": d["task_id"], "kind": "delta", "num_samples": 1,
                                     "compute_s": 0.0, "peak_memory_bytes": 0, "delta": d["weights"]}))
            stats["handled"] += 1
        elif "bye" in d:
            raise _Bye
    return handle


def echo(endpoint: str, codec: str, names: list[str], stop: threading.Event | None = None) -> list[dict]:
    """Serve one DEALER per name until each got ``bye`` (or ``stop``, or ``IDLE_EXIT_S`` of silence)."""
    context = zmq.Context()
    sockets, handlers, stats = [], {}, []
    try:
        for name in names:
            sock = context.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.RCVTIMEO, 250)
            sock.connect(endpoint)
            stats.append({"name": name, "handled": 0, "welcomed": 0})
            handlers[sock] = (_bridge_handler if codec == "bridge" else _raw_handler)(sock, name, stats[-1])
            sockets.append(sock)
        live, last_heard = set(sockets), time.monotonic()
        poller = zmq.Poller()
        for sock in sockets:
            poller.register(sock, zmq.POLLIN)
        single = sockets[0] if len(sockets) == 1 else None
        while live and not (stop is not None and stop.is_set()):
            if single is not None:  # one socket: a blocking recv, no poller in the way
                try:
                    ready = [(single, single.recv())]
                except zmq.Again:
                    ready = []
            else:
                ready = [(sock, sock.recv(zmq.NOBLOCK)) for sock, _ in poller.poll(250)]
            if not ready:
                if time.monotonic() - last_heard > IDLE_EXIT_S:
                    break
                continue
            last_heard = time.monotonic()
            for sock, frame in ready:
                try:
                    handlers[sock](frame)
                except _Bye:
                    live.discard(sock)
                    poller.unregister(sock)
                    single = None if single is sock else single
        return stats
    finally:
        for sock in sockets:
            sock.close(0)
        context.term()


def _agent_main(args) -> int:
    names = [f"{args.name}-{k}" for k in range(args.sockets)]
    print(json.dumps(echo(args.connect, args.agent, names)), flush=True)
    return 0


class Agents:
    """Echo agents in ``procs`` processes (0: one thread of this process), ``per_proc`` devices each."""

    def __init__(self, endpoint: str, codec: str, prefix: str, procs: int, per_proc: int) -> None:
        self.codec, self.procs, self.threads, self.stats = codec, [], [], []
        self.stop = threading.Event()
        if procs == 0:
            names = [f"{prefix}-{k}" for k in range(per_proc)]
            thread = threading.Thread(target=lambda: self.stats.extend(echo(endpoint, codec, names, self.stop)),
                                      daemon=True)
            thread.start()
            self.threads.append(thread)
            return
        env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        for p in range(procs):
            self.procs.append(subprocess.Popen(
                [sys.executable, __file__, "--agent", codec, "--connect", endpoint, "--sockets", str(per_proc),
                 "--name", f"{prefix}{p}"], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True))

    def finish(self, timeout_s: float = 5.0) -> list[dict]:
        """Wait for the agents to exit (after ``bye``); kill what is left. Returns their per-device stats."""
        deadline = time.monotonic() + timeout_s
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self.stop.set()
        for thread in self.threads:
            thread.join(1.0)
        for proc in self.procs:
            try:
                out, _ = proc.communicate(timeout=max(0.1, deadline - time.monotonic()))
                if out.strip():
                    self.stats.extend(json.loads(out.strip().splitlines()[-1]))
            except subprocess.TimeoutExpired:
                pass
        self.kill()
        return self.stats

    def kill(self) -> None:
        self.stop.set()
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            try:
                proc.communicate(timeout=5)
            except (subprocess.TimeoutExpired, ValueError):
                pass


# --- the hub side: bridge ---------------------------------------------------------------------------------
class BridgeSide:
    """The real ``Hub``, with the bookkeeping ``BridgeTransport`` keeps: identity -> device index, and
    task id -> the device it was sent to."""

    def __init__(self) -> None:
        from fleet.bridge.hub import Hub

        self.hub = Hub("tcp://127.0.0.1:*", heartbeat_interval_s=1.0, liveness=60, flood_frames_per_s=1e7)
        self.endpoint = self.hub.endpoint
        self.devices: dict[bytes, int] = {}
        self.purged = 0
        self.closed = False

    def _events(self, timeout_s: float) -> list:
        """``hub.poll``: the frames; expiries and flood bans are purges, as in ``BridgeTransport.pump``."""
        frames = []
        for event in self.hub.poll(timeout_s):
            if event.event == "frame":
                frames.append(event)
            elif self.devices.pop(event.identity, None) is not None:
                self.purged += 1
        return frames

    def attach(self, n: int) -> tuple[list, float]:
        """Attach ``n`` new devices from their ``hello``; returns their identities and the seconds from the
        first hello to the last welcome."""
        hub, new, first = self.hub, [], None
        deadline = time.monotonic() + PHASE_LIMIT_S
        while len(new) < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {len(new)} of {n} agents attached")
            for event in self._events(0.1):
                if event.message.kind != "hello" or event.identity in self.devices:
                    continue
                first = first or time.perf_counter()
                index = self.devices[event.identity] = len(self.devices)
                hub.track(event.identity)
                hub.send(event.identity, "welcome", welcome_body(index))
                new.append(event.identity)
        return new, time.perf_counter() - first

    def drive(self, identities: list, window: int, duration_s: float | None = None, total: int | None = None):
        """Tasks round-robin over ``identities``, ``window`` in flight, for ``duration_s`` or ``total``
        tasks; returns (round trips, seconds)."""
        hub, devices, pending, done, sent, k = self.hub, self.devices, {}, 0, 0, 0
        n_dev = len(identities)
        start = time.perf_counter()
        limit = start + PHASE_LIMIT_S
        end = start + duration_s if duration_s is not None else float("inf")
        total = total if total is not None else 1 << 62

        def send_one() -> None:
            nonlocal sent, k
            task_id, identity = next(_ids), identities[k]
            k = k + 1 if k + 1 < n_dev else 0
            pending[task_id] = devices[identity]
            hub.send(identity, "task", task_body(task_id))
            sent += 1

        for _ in range(min(window, total)):
            send_one()
        while pending:
            batch = self._events(0.5)
            now = time.perf_counter()
            if not batch and now > limit:
                raise TimeoutError(f"bridge: {len(pending)} replies missing")
            for event in batch:
                msg = event.message
                if msg.kind != "update":
                    continue
                device = devices.get(event.identity)
                if device is None or pending.get(msg["task_id"]) != device:
                    hub.reject("unknown_peer" if device is None else "stale_task")
                    continue
                try:
                    payloads.result_from_update(msg, **EXPECTED)
                except protocol.ProtocolError as error:  # the task stays pending
                    hub.reject(error.reason, str(error))
                    continue
                del pending[msg["task_id"]]
                done += 1
                if sent < total and now < end:
                    send_one()
        return done, time.perf_counter() - start

    def bye(self, identities: list) -> None:
        for identity in identities:
            self.hub.send(identity, "bye", {"reason": "benchmark finished"})

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.hub.close()


# --- the hub side: raw ROUTER + msgpack --------------------------------------------------------------------
class RawSide:
    """A plain ROUTER loop. ``codec="msgpack"``: plain dicts, nothing checked (the baseline);
    ``codec="protocol"``: the same loop with ``fleet.bridge.protocol`` frames and checks (encode, decode,
    ``payloads.result_from_update``) and no ``Hub``, to split the bridge's cost between codec and hub."""

    def __init__(self, codec: str = "msgpack") -> None:
        self.codec = codec
        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.ROUTER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.RCVTIMEO, 500)
        self.socket.bind("tcp://127.0.0.1:*")
        self.endpoint = self.socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self.closed = False

    def attach(self, n: int) -> tuple[list, float]:
        new, first = [], None
        deadline = time.monotonic() + PHASE_LIMIT_S
        while len(new) < n:
            try:
                identity, frame = self.socket.recv_multipart()
            except zmq.Again:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"raw: only {len(new)} of {n} agents said hello") from None
                continue
            first = first or time.perf_counter()
            if self.codec == "protocol":
                if protocol.decode(frame).kind == "hello":
                    new.append(identity)
                    self.socket.send_multipart([identity, protocol.encode("welcome", welcome_body(len(new) - 1))])
            elif "hello" in msgpack.unpackb(frame):
                new.append(identity)
        return new, time.perf_counter() - first

    def drive(self, identities: list, window: int, duration_s: float | None = None, total: int | None = None):
        sock, done, sent, outstanding, k = self.socket, 0, 0, 0, 0
        checked = self.codec == "protocol"
        n_dev = len(identities)
        start = time.perf_counter()
        end = start + duration_s if duration_s is not None else float("inf")
        total = total if total is not None else 1 << 62

        def send_one() -> None:
            nonlocal sent, k
            task_id = next(_ids)
            sock.send_multipart([identities[k], protocol.encode("task", task_body(task_id), self_check=False)
                                 if checked else raw_task(task_id)])
            k = k + 1 if k + 1 < n_dev else 0
            sent += 1

        for _ in range(min(window, total)):
            send_one()
        outstanding = sent
        while outstanding:
            try:
                _identity, frame = sock.recv_multipart()
            except zmq.Again:
                if time.perf_counter() - start > PHASE_LIMIT_S:
                    raise TimeoutError(f"raw: {outstanding} replies missing") from None
                continue
            if checked:
                msg = protocol.decode(frame)
                if msg.kind != "update":
                    continue
                payloads.result_from_update(msg, **EXPECTED)
            elif "task_id" not in msgpack.unpackb(frame):
                continue
            done += 1
            outstanding -= 1
            if sent < total and time.perf_counter() < end:
                send_one()
                outstanding += 1
        return done, time.perf_counter() - start

    def bye(self, identities: list) -> None:
        frame = protocol.encode("bye", {"reason": "done"}) if self.codec == "protocol" else msgpack.packb({"bye": 1})
        for identity in identities:
            self.socket.send_multipart([identity, frame])

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.socket.close(0)
            self.context.term()


# --- the three parts -------------------------------------------------------------------------------------
def part_round_trips(args) -> tuple[list[dict], dict]:
    """Part 1: bridge against raw (and raw + codec), thread and process agents, 1 and 8 in flight."""
    sides = {"bridge": BridgeSide(), "raw": RawSide(), "codec": RawSide("protocol")}
    agent_codec = {"bridge": "bridge", "raw": "raw", "codec": "bridge"}
    agents: list[Agents] = []
    try:
        targets = {}
        for mode, procs in (("thread", 0), ("process", 1)):
            for name, side in sides.items():
                agents.append(Agents(side.endpoint, agent_codec[name], f"{name}-{mode}", procs, 1))
                targets[mode, name], _ = side.attach(1)
                side.drive(targets[mode, name], 8, total=args.warmup)  # warm-up (and torch's import)
        best = {}
        for _ in range(args.repeats):  # alternating, so that a burst of load hits every candidate alike
            for mode in ("thread", "process"):
                for window in args.windows:
                    for name, side in sides.items():
                        done, secs = side.drive(targets[mode, name], window, duration_s=args.window_s)
                        best[mode, window, name] = max(best.get((mode, window, name), 0.0), done / secs)
        rows = [{"agent": mode, "in_flight": window, **{name: best[mode, window, name] for name in sides},
                 "ratio": best[mode, window, "bridge"] / best[mode, window, "raw"]}
                for mode in ("thread", "process") for window in args.windows]
        for (mode, name), devices in targets.items():
            sides[name].bye(devices)
        for group in agents:
            group.finish()
        return rows, {"rejected": dict(sides["bridge"].hub.rejected), "purged": sides["bridge"].purged}
    finally:
        for group in agents:
            group.kill()
        for side in sides.values():
            side.close()


def part_fleet(args) -> dict:
    """Part 2: 64 agents attached at once, N tasks each, round-robin."""
    n, procs = args.agents, args.procs
    per_proc = -(-n // procs)
    out = {}
    for side_name in ("bridge", "raw"):
        side = BridgeSide() if side_name == "bridge" else RawSide()
        group = None
        try:
            launch = time.perf_counter()
            group = Agents(side.endpoint, side_name, f"{side_name[0]}{n}-", procs, per_proc)
            targets, window_s = side.attach(procs * per_proc)
            attach_s = time.perf_counter() - launch
            if side_name == "bridge":
                attached = len(side.devices)
            side.drive(targets, len(targets), total=len(targets) * 2)  # warm-up: 2 tasks each
            done, secs = side.drive(targets, len(targets), total=len(targets) * args.tasks)
            side.bye(targets)
            stats = group.finish()
            handled = sorted(s["handled"] - 2 for s in stats)
            out[side_name] = {"attach_s": attach_s, "window_s": window_s, "round_trips": done, "rate": done / secs,
                              "agents_reported": len(stats), "each_got_n": handled == [args.tasks] * len(targets)}
            if side_name == "bridge":
                out[side_name].update(attached=attached, rejected=dict(side.hub.rejected), purged=side.purged,
                                      welcomed=sum(s["welcomed"] for s in stats))
        finally:
            if group is not None:
                group.kill()
            side.close()
    return out


def part_codec(args) -> dict:
    """Part 3: what each message costs in fleet.bridge.protocol and in plain msgpack, microseconds."""
    body = task_body(1)
    frame = protocol.encode("task", body)
    update = {"task_id": 1, "kind": "delta", "num_samples": 1, "compute_s": 0.0, "peak_memory_bytes": 0,
              "delta": WEIGHTS}
    uframe = protocol.encode("update", update)
    umsg = protocol.decode(uframe)
    raw_t, raw_u = raw_task(1), msgpack.packb({**update, "delta": RAW_WEIGHTS})
    cases = {
        "hub: encode task": lambda: protocol.encode("task", body, self_check=False),
        "agent: decode task": lambda: protocol.decode(frame),
        "agent: encode update": lambda: protocol.encode("update", update, self_check=False),
        "hub: decode update": lambda: protocol.decode(uframe),
        "hub: result_from_update": lambda: payloads.result_from_update(umsg, **EXPECTED),
        "raw: pack task": lambda: raw_task(1),
        "raw: unpack task": lambda: msgpack.unpackb(raw_t),
        "raw: pack update": lambda: msgpack.packb({**update, "delta": RAW_WEIGHTS}),
        "raw: unpack update": lambda: msgpack.unpackb(raw_u),
    }
    number = 2000 if args.quick else 10000
    return {name: min(timeit.repeat(fn, number=number, repeat=3)) / number * 1e6 for name, fn in cases.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short windows, one repetition, fewer tasks")
    parser.add_argument("--agents", type=int, default=64)
    parser.add_argument("--procs", type=int, default=4, help="processes hosting the agents of part 2")
    parser.add_argument("--tasks", type=int, default=None, help="tasks per agent in part 2 (200; quick 30)")
    parser.add_argument("--repeats", type=int, default=None, help="timed windows per figure, best kept (3; quick 1)")
    parser.add_argument("--agent", choices=("bridge", "raw"), help=argparse.SUPPRESS)
    parser.add_argument("--connect", help=argparse.SUPPRESS)
    parser.add_argument("--sockets", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--name", default="echo", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.agent:
        return _agent_main(args)
    args.windows = (1, 8)
    args.window_s = 0.25 if args.quick else 1.0
    args.repeats = args.repeats or (1 if args.quick else 3)
    args.tasks = args.tasks or (30 if args.quick else 200)
    args.warmup = 200 if args.quick else 1000
    t0 = time.perf_counter()
    print(f"bridge benchmark: Python {platform.python_version()}, pyzmq {zmq.__version__}, libzmq "
          f"{zmq.zmq_version()}, msgpack {'.'.join(map(str, msgpack.version))}, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.2f}")

    rows, meta = part_round_trips(args)
    print(f"\n1. task round trips/s, {P} float32 weights, one agent (best of {args.repeats} x {args.window_s:g} s)")
    print(f"{'agent':>8} {'in flight':>9} {'bridge rt/s':>12} {'raw rt/s':>10} {'ratio':>6} "
          f"{'raw loop + fleet.bridge.protocol rt/s':>31}")
    for r in rows:
        print(f"{r['agent']:>8} {r['in_flight']:>9} {r['bridge']:>12.0f} {r['raw']:>10.0f} {r['ratio']:>6.2f} "
              f"{r['codec']:>31.0f}")
    print(f"   hub.rejected: {meta['rejected'] or '{}'}; purged: {meta['purged']}")

    fleet = part_fleet(args)
    b, r = fleet["bridge"], fleet["raw"]
    print(f"\n2. {args.agents} echo agents ({args.procs} processes x {-(-args.agents // args.procs)} DEALERs), "
          f"{args.tasks} tasks each, round-robin, {args.agents} in flight")
    print(f"{'':>8} {'launch->all attached s':>22} {'first hello->last welcome s':>28} {'round trips':>11} "
          f"{'rt/s':>8}")
    for name, f in fleet.items():
        print(f"{name:>8} {f['attach_s']:>22.3f} {f['window_s']:>28.3f} {f['round_trips']:>11} {f['rate']:>8.0f}")
    print(f"   ratio bridge/raw {b['rate'] / r['rate']:.2f}; devices attached {b['attached']}; "
          f"welcomes received {b['welcomed']}; hub.rejected: {b['rejected'] or '{}'}; purged: {b['purged']}; "
          f"every agent answered exactly {args.tasks}: bridge {'yes' if b['each_got_n'] else 'NO'}, "
          f"raw {'yes' if r['each_got_n'] else 'NO'}")

    codec = part_codec(args)
    print("\n3. codec cost per message, microseconds (best of 3)")
    for name, us in codec.items():
        print(f"   {name:<26} {us:6.1f}")
    bridge_us = sum(v for k, v in codec.items() if not k.startswith("raw"))
    raw_us = sum(v for k, v in codec.items() if k.startswith("raw"))
    print(f"   per round trip: fleet.bridge.protocol {bridge_us:.1f} us (of which the two decodes "
          f"{codec['agent: decode task'] + codec['hub: decode update']:.1f} us), msgpack {raw_us:.1f} us")

    ok = (all(row["ratio"] >= 0.5 for row in rows) and not meta["rejected"] and not b["rejected"]
          and b["attached"] == args.agents and b["each_got_n"] and r["each_got_n"])
    print(f"\ntargets (bridge/raw >= 0.5 in every row, 64 attached, nothing rejected): {'met' if ok else 'NOT met'}"
          f"; wall {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
