"""A minimal bridge agent written from docs/protocol.md alone: numpy, pyzmq and msgpack, no project import.

    python tests/bridge/doc_agent.py tcp://HOST:PORT NAME RECORD_DIR

It joins as NAME (device class ``rpi4_4gb``), loads the digits from scikit-learn's own data file (read with
numpy, scikit-learn itself is not imported), trains the ``mlp`` models with ``fedavg`` (sgd, momentum or
adam) and answers ``delta`` tasks; anything else it refuses with cause ``failure``, as the page allows. For
each answered task it writes RECORD_DIR/task-<id>.npz (weights received, delta sent, loss, partition), so a
test can hold its arithmetic against the project's. It exits 0 on ``bye``.
"""

from __future__ import annotations

import gzip
import importlib.util
import sys
import time
from pathlib import Path

import msgpack
import numpy as np
import zmq

HIDDEN = {"mlp": (200, 200), "mlp_small": (64,)}  # section 5, "The model on the wire"
DTYPES = {"float32": "<f4", "int64": "<i8", "bool": "|b1", "uint8": "|u1"}


def tensor(array: np.ndarray, dtype: str) -> dict:
    array = np.ascontiguousarray(array, dtype=DTYPES[dtype])
    return {"dtype": dtype, "shape": list(array.shape), "data": array.tobytes()}


def untensor(t: dict) -> np.ndarray:
    return np.frombuffer(t["data"], dtype=DTYPES[t["dtype"]]).reshape(t["shape"]).copy()


VERSION = 2  # section 3


def encode(kind: str, body: dict) -> bytes:
    return msgpack.packb([VERSION, kind, body], use_bin_type=True)


def decode(frame: bytes):
    version, kind, body = msgpack.unpackb(frame, raw=False)
    if version != VERSION:
        raise ValueError("version")
    return kind, body


def digits_train() -> tuple[np.ndarray, np.ndarray]:
    """Section 5, "The data": the digits' train split (index not a multiple of 5), normalised."""
    root = Path(importlib.util.find_spec("sklearn").submodule_search_locations[0])
    with gzip.open(root / "datasets" / "data" / "digits.csv.gz", "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.int64)
    images, labels = table[:, :64], table[:, 64]
    train = np.arange(len(labels)) % 5 != 0
    grey = images[train]
    mean = grey.sum() / grey.size / 16
    std = np.sqrt((grey.astype(np.float64) ** 2).sum() / grey.size / 16 ** 2 - mean ** 2)
    x = (grey.astype(np.float32) * np.float32(1 / (16 * std)) - np.float32(mean / std))
    return x.astype(np.float32), labels[train]


def unflatten(w: np.ndarray, sizes: list[int]) -> list[tuple[np.ndarray, np.ndarray]]:
    """The flat layout: per Linear layer its weight (out x in, row-major) then its bias (out)."""
    layers, pos = [], 0
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        weight = w[pos:pos + n_in * n_out].reshape(n_out, n_in)
        pos += n_in * n_out
        layers.append((weight, w[pos:pos + n_out]))
        pos += n_out
    assert pos == len(w), "the weights do not fit the model"
    return layers


def loss_and_gradient(w: np.ndarray, sizes: list[int], x: np.ndarray, y: np.ndarray):
    """Mean cross-entropy of the MLP (Linear, ReLU, ..., Linear) and its gradient, in the flat layout."""
    layers = unflatten(w, sizes)
    acts = [x]
    for k, (weight, bias) in enumerate(layers):
        z = acts[-1] @ weight.T + bias
        acts.append(np.maximum(z, 0) if k < len(layers) - 1 else z)
    logits = acts[-1] - acts[-1].max(axis=1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    loss = float(-np.log(p[np.arange(len(y)), y]).mean())
    g = p
    g[np.arange(len(y)), y] -= 1
    g /= len(y)
    grads = []
    for k in range(len(layers) - 1, -1, -1):
        weight, _ = layers[k]
        grads.append((g.T @ acts[k], g.sum(axis=0)))
        if k:
            g = (g @ weight) * (acts[k] > 0)
    return loss, np.concatenate([np.concatenate([gw.ravel(), gb]) for gw, gb in reversed(grads)])


class DocAgent:
    def __init__(self, connect: str, name: str, record: Path) -> None:
        self.record = record
        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.connect(connect)
        self.socket.send(encode("hello", {"device_class": "rpi4_4gb", "free_memory_bytes": 2 ** 30,
                                          "flops_per_s": 1e9, "agent_version": "doc agent 1",
                                          "device_name": name}))
        self.interval_s, self.liveness, self.heard_s = 2.0, 5, time.monotonic()
        self.x = self.y = self.params = None

    def train(self, body: dict) -> dict:
        params = self.params
        hidden = HIDDEN[params.get("model", "mlp_small")]
        sizes = [self.x.shape[1], *hidden, 10]
        lr, optimizer = float(params.get("lr", 0.05)), params.get("optimizer", "sgd")
        w0 = untensor(body["weights"])
        mask = untensor(body["mask"]).astype(np.float32) if "mask" in body else 1.0
        w, m, v = w0.copy(), np.zeros_like(w0), np.zeros_like(w0)
        n = len(self.y)
        batch = min(body["batch_size"], n)
        rng, order, pos, losses = np.random.default_rng(body["seed"]), None, n, []
        for t in range(1, body["local_steps"] + 1):
            if pos + batch > n:
                order, pos = rng.permutation(n), 0
            idx = order[pos:pos + batch]
            pos += batch
            loss, g = loss_and_gradient(w, sizes, self.x[idx], self.y[idx])
            g = (g * mask).astype(np.float32)
            losses.append(loss)
            if optimizer == "sgd":
                w -= np.float32(lr) * g
            elif optimizer == "momentum":
                m = np.float32(0.9) * m + g
                w -= np.float32(lr) * m
            else:
                m = np.float32(0.9) * m + np.float32(0.1) * g
                v = np.float32(0.999) * v + np.float32(0.001) * g * g
                w -= np.float32(lr / (1 - 0.9 ** t)) * m / (np.sqrt(v / (1 - 0.999 ** t)) + np.float32(1e-8))
        delta = (w - w0).astype(np.float32)
        np.savez(self.record / f"task-{body['task_id']}.npz", weights=w0, delta=delta, loss=np.mean(losses))
        return {"task_id": body["task_id"], "kind": "delta", "num_samples": n, "compute_s": 0.0,
                "peak_memory_bytes": 0, "train_loss": float(np.mean(losses)), "delta": tensor(delta, "float32")}

    def run(self) -> int:
        last_beat = 0.0
        while True:
            if self.socket.poll(50):
                try:
                    kind, body = decode(self.socket.recv())
                except Exception:  # noqa: BLE001  (a frame that does not decode is no sign of life)
                    continue
                self.heard_s = time.monotonic()
                if kind == "welcome":
                    self.interval_s, self.liveness = body["heartbeat_interval_s"], body.get("liveness", 3)
                    self.params = body["algorithm"]["params"]
                    partition = untensor(body["dataset"]["partition"])
                    x, y = digits_train()
                    self.x, self.y = x[partition], y[partition]
                    np.save(self.record / "partition.npy", partition)
                    ok = body["algorithm"]["name"] == "fedavg" and body["dataset"]["name"] == "digits"
                    self.supported = ok
                elif kind == "task":
                    start = time.monotonic()
                    if self.supported and body["phase"] == "train" and body["update_kind"] == "delta":
                        reply = self.train(body)
                        reply["compute_s"] = time.monotonic() - start
                        self.socket.send(encode("update", reply))
                    else:
                        self.socket.send(encode("refusal", {"task_id": body["task_id"], "cause": "failure",
                                                            "free_memory_bytes": 2 ** 30}))
                elif kind == "bye":
                    return 0
            now = time.monotonic()
            if self.params is not None and now - last_beat >= self.interval_s:
                self.socket.send(encode("heartbeat", {"sent_s": now}))
                last_beat = now
            if now - self.heard_s > self.liveness * self.interval_s:
                print("doc agent: the hub is silent", file=sys.stderr)
                return 1


if __name__ == "__main__":
    sys.exit(DocAgent(sys.argv[1], sys.argv[2], Path(sys.argv[3])).run())
