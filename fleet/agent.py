"""The agent a physical device runs to join a simulated fleet:

    python -m fleet.agent --connect tcp://HOST:PORT [--profile NAME] [--keys DIR] [--data DIR] [--name NAME]

It says ``hello`` (its device class, measured free memory and a quick measured FLOP/s), receives a
``welcome`` (its device index, the algorithm and its data partition), then runs every ``task`` it gets with
the project's own algorithms (``Algorithm.local_update``) and replies with the update and what it measured:
compute seconds and peak memory. A task whose demand exceeds its free memory is refused (cause ``memory``).

It keeps going through disconnects: when the hub has been silent for ``liveness`` heartbeat intervals it
closes the socket and reconnects, waiting 1, 2, 4 ... seconds (capped at ``--max-backoff-s``), and says
``hello`` again under the same name, so the hub gives it back its index. ``bye`` from the hub ends it.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time

import zmq

AGENT_VERSION = "1"


def free_memory_bytes() -> int:
    """MemAvailable from /proc/meminfo (Linux), else 0."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def measured_flops_per_s(size: int = 256, repeats: int = 5) -> float:
    """A quick float32 matmul throughput: 2 n^3 FLOPs per product, best of ``repeats``."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2.0 * size ** 3 / max(best, 1e-9)


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class Agent:
    def __init__(self, connect: str, profile: str, name: str, data_dir: str | None, keys: str | None,
                 heartbeat_interval_s: float = 1.0, liveness: int = 3, max_backoff_s: float = 16.0) -> None:
        self.connect, self.profile, self.name = connect, profile, name
        self.data_dir, self.keys = data_dir, keys
        self.heartbeat_interval_s, self.liveness, self.max_backoff_s = heartbeat_interval_s, liveness, max_backoff_s
        self.context = zmq.Context()
        self.socket = None
        self.algorithm = None
        self.data = None
        self.flops_per_s = measured_flops_per_s()

    def _open(self) -> None:
        from fleet import protocol

        if self.socket is not None:
            self.socket.close(0)
        self.socket = self.context.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.MAXMSGSIZE, protocol.MAX_MESSAGE_BYTES)
        if self.keys is not None:
            from fleet.security import ClientSecurity

            ClientSecurity(self.keys, self.name).apply(self.socket)
        self.socket.connect(self.connect)
        self._send("hello", {"device_class": self.profile, "free_memory_bytes": free_memory_bytes(),
                             "flops_per_s": self.flops_per_s, "agent_version": AGENT_VERSION,
                             "device_name": self.name})

    def _send(self, kind: str, body: dict) -> None:
        from fleet import protocol

        self.socket.send(protocol.encode(kind, body, self_check=False))  # the hub checks every frame

    def _welcome(self, body: dict) -> None:
        import numpy as np
        import torch

        from algorithms.datasets import DATASETS, load_dataset
        from algorithms.local import ClientData
        from algorithms.registry import create_algorithm

        spec = DATASETS[body["dataset"]["name"]]
        params = dict(body["algorithm"]["params"])
        params.update(input_shape=spec.input_shape, num_classes=spec.num_classes)
        self.algorithm = create_algorithm(body["algorithm"]["name"], **params)
        dataset = load_dataset(spec.name, self.data_dir)
        idx = torch.from_numpy(np.asarray(body["dataset"]["partition"], dtype=np.int64))
        self.data = ClientData(torch.from_numpy(np.array(dataset.train_x))[idx],
                               torch.from_numpy(np.array(dataset.train_y))[idx])
        torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))

    def _task(self, body: dict) -> tuple[str, dict]:
        """Run one task (in the worker thread); return the reply to send."""
        from algorithms.base import TaskConfig
        from algorithms.local import ModelState
        from fleet import protocol

        if int(body.get("peak_memory_bytes", 0)) > free_memory_bytes() > 0:
            return "refusal", {"task_id": body["task_id"], "cause": "memory",
                               "free_memory_bytes": free_memory_bytes()}
        state = ModelState(protocol.to_torch(body["weights"]),
                           None if body.get("mask") is None else protocol.to_torch(body["mask"]),
                           int(body.get("prune_step", 0)))
        config = TaskConfig(body["phase"], int(body["local_steps"]), int(body["batch_size"]))
        before = _peak_rss_bytes()
        start = time.perf_counter()
        result = self.algorithm.local_update(state, config, self.data, int(body["seed"]))
        compute_s = time.perf_counter() - start
        peak = max(0, _peak_rss_bytes() - before)
        return "update", protocol.update_body(int(body["task_id"]), result, compute_s, peak)

    def run(self) -> int:
        """The socket loop. Work (loading the data, local updates) runs on one worker thread, so the
        heartbeats keep going while the device computes; tasks queue in arrival order."""
        from concurrent.futures import ThreadPoolExecutor

        from fleet import protocol

        backoff = 1.0
        worker = ThreadPoolExecutor(max_workers=1)
        replies: list = []  # futures of queued work, in order
        self._open()
        last_heard = last_beat = time.monotonic()
        while True:
            while replies and replies[0].done():
                reply = replies.pop(0).result()
                if reply is not None:
                    self._send(*reply)
            if self.socket.poll(int(min(self.heartbeat_interval_s, 0.05) * 1000)):
                try:
                    msg = protocol.decode(self.socket.recv())
                except protocol.ProtocolError as error:
                    print(f"fleet.agent: rejected a frame from the hub ({error.reason})", file=sys.stderr)
                    continue
                last_heard, backoff = time.monotonic(), 1.0
                if msg.kind == "welcome":
                    replies.append(worker.submit(self._welcome, msg.body))
                elif msg.kind == "task":
                    replies.append(worker.submit(self._task, msg.body))
                elif msg.kind == "bye":
                    worker.shutdown(wait=False, cancel_futures=True)
                    return 0
            now = time.monotonic()
            if now - last_beat >= self.heartbeat_interval_s:
                self._send("heartbeat", {"sent_s": now})
                last_beat = now
            if now - last_heard > self.liveness * self.heartbeat_interval_s:
                time.sleep(backoff)  # the hub went silent: reconnect with capped exponential back-off
                backoff = min(2 * backoff, self.max_backoff_s)
                replies.clear()  # what was in flight belongs to the lost connection
                self._open()
                last_heard = time.monotonic()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fleet.agent", description=__doc__.split("\n\n")[0])
    p.add_argument("--connect", required=True, help="the hub's address, e.g. tcp://10.0.0.5:5555")
    p.add_argument("--profile", default="rpi4_4gb", help="this device's class (devices/catalog.py)")
    p.add_argument("--name", default=None, help="a stable name, so a restarted agent rejoins (default: host-pid)")
    p.add_argument("--keys", default=None, help="folder with this device's CURVE keys and server.key "
                   "(python -m fleet.keys); omit only for a plain loopback hub")
    p.add_argument("--data", default=None, help="dataset folder (default: $FLEET_DATA_DIR or the Debian one)")
    p.add_argument("--heartbeat-interval-s", type=float, default=1.0)
    p.add_argument("--max-backoff-s", type=float, default=16.0)
    args = p.parse_args(argv)
    name = args.name or f"{os.uname().nodename}-{os.getpid()}"
    agent = Agent(args.connect, args.profile, name, args.data, args.keys, args.heartbeat_interval_s,
                  max_backoff_s=args.max_backoff_s)
    try:
        return agent.run()
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
