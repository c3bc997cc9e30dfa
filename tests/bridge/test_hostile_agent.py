"""Defects 20 and 21 through ``python -m fleet.run``: a real device that answers every task with valid-looking
but wrong updates (another update kind, an impossible sample count, a huge finite delta) neither crashes the
run nor reaches the model. The hub rejects each by reason, the run exits 0, and the model stays finite."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest
import yaml
import zmq

from fleet.app.run import main
from fleet.bridge import protocol
from tests.accounting import assert_accounting
from tests.helpers import free_port

HELLO = {"device_class": "rpi4_4gb", "free_memory_bytes": 2**31, "flops_per_s": 1e9, "agent_version": "hostile-1",
         "device_name": "hostile"}



def _bad_updates(task: dict) -> list[dict]:
    """Four answers to one task, each wrong in one way the hub must catch."""
    n = len(task["weights"])
    head = {"task_id": task["task_id"], "compute_s": 0.01, "peak_memory_bytes": 1024}
    return [
        {**head, "kind": "seeds", "num_samples": 8, "seeds": np.arange(4, dtype=np.int64),
         "coefficients": np.ones(4, dtype=np.float32)},                                   # wrong_update_kind
        {**head, "kind": "scores", "num_samples": 8, "scores": np.ones(n, dtype=np.float32)},  # wrong_update_kind
        {**head, "kind": "delta", "num_samples": 2**63 - 1, "delta": np.zeros(n, dtype=np.float32)},  # sample_count
        {**head, "kind": "delta", "num_samples": 8, "delta": np.full(n, 3e38, dtype=np.float32)},     # update_norm
    ]


def _hostile_agent(endpoint: str, stop: threading.Event, sent: list) -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    beat = protocol.encode("heartbeat", {"sent_s": 0.0})
    try:
        sock.send(protocol.encode("hello", HELLO))
        last_beat = 0.0
        while not stop.is_set():
            if time.monotonic() - last_beat >= 0.2:  # confirms the hello, then keeps the device alive
                sock.send(beat)
                last_beat = time.monotonic()
            if not sock.poll(50):
                continue
            msg = protocol.decode(sock.recv())
            if msg.kind == "task" and msg["task_id"] not in sent:
                sent.append(msg["task_id"])
                for body in _bad_updates(msg):
                    sock.send(protocol.encode("update", body, self_check=False))
            elif msg.kind == "bye":
                return
    finally:
        sock.close(0)
        ctx.term()


@pytest.mark.slow  # a learning run on digits with a real socket: ~10 s
def test_wrong_and_poisoned_updates_are_rejected_through_the_cli(tmp_path):
    port = free_port()
    scenario = {
        "name": "hostile", "seed": 3, "mode": "learning",
        "fleet": {"devices": 3, "mix": [{"device_class": "rpi4_4gb", "link_class": "ethernet", "fraction": 1.0}]},
        "data": {"dataset": "digits", "partition": "iid"},
        "algorithm": {"name": "fedavg", "params": {"model": "mlp_small", "batch_size": 16, "local_steps": 2,
                                                    "lr": 0.1}},
        "coordinator": {"mode": "sync", "rounds": 2, "clients_per_round": 4, "over_selection": 0.0,
                        "quorum": 0.5, "deadline_s": 3.0},
        "evaluation": {"interval_s": 1.0},
        "executor": {"backend": "sequential"},
        "bridge": {"bind": f"tcp://127.0.0.1:{port}", "expect_devices": 1, "wait_s": 30, "allow_plain": True,
                   "heartbeat_interval_s": 0.5, "liveness": 10},
    }
    path = tmp_path / "hostile.yaml"
    path.write_text(yaml.safe_dump(scenario))
    stop, sent = threading.Event(), []
    agent = threading.Thread(target=_hostile_agent, args=(f"tcp://127.0.0.1:{port}", stop, sent), daemon=True)
    agent.start()
    try:
        assert main([str(path), "--out", str(tmp_path / "out"), "--quiet", "--no-figures"]) == 0
    finally:
        stop.set()
        agent.join(timeout=10)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    rejected = summary["bridge_rejected"]
    tasks = len(sent)
    assert tasks >= 1
    assert rejected.get("wrong_update_kind") == 2 * tasks
    assert rejected.get("sample_count") == tasks
    assert rejected.get("update_norm") == tasks
    assert summary["real_updates_accepted"] == 0
    assert summary["rounds_aggregated"] == 2  # the three simulated devices carried both rounds
    assert summary["final_loss"] is not None and np.isfinite(summary["final_loss"])
    assert_accounting(summary)
