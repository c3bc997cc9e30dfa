"""Checkpoints: every aggregated global state of a learning run on disk, never trusted blindly.

``CheckpointStore`` writes one file per model version in a format of our own (a header with the version,
the scenario fingerprint and the payload's SHA-256, then the tensors' raw bytes), so loading runs no code
and a damaged, truncated, stale or foreign file is recognised, reported in one line and recomputed by the
caller (``executor.LearningPlane``) instead of being loaded. A failed write raises ``CheckpointWriteError``
and leaves no torn file.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from typing import Callable

import numpy as np

from algorithms.local import ModelState

__all__ = ["CheckpointStore", "CheckpointWriteError"]


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (disk full, file too large, no permission): ``filename`` is the
    file, ``errno`` and ``strerror`` the cause, and the message names both. No torn file is left behind,
    and every checkpoint written before stays valid, so the run can be resumed. ``args`` holds all three, so
    a copy made as ``type(exc)(*exc.args)`` (SimPy re-raises a process's exception that way) loses nothing."""

    def __init__(self, errno: int | None, strerror: str, filename: str) -> None:
        super().__init__(errno, strerror, filename)
        self.args = (errno, strerror, filename)

    def __str__(self) -> str:
        return f"checkpoint {self.filename}: cannot be written ({self.strerror}); the run can be resumed"


class CheckpointStore:
    """Every aggregated global state of a run, one file per model version, so a crashed run can resume.

    Resuming relies on determinism: the event loop does not depend on the learned weights (only on the
    task plan, which a resumed state reproduces), so a resumed run replays the same events in seconds and,
    for each version with a good file on disk, loads the state instead of recomputing its local updates.
    Any other version is computed as in a fresh run (and its file rewritten), so the result is bit-identical
    to an uninterrupted run. Only weights are stored: evaluations are always recomputed from them.

    File format (our own; nothing in it is ever executed): the line ``fleet-checkpoint``, a JSON header
    line ``{"format", "version", "fingerprint", "payload_bytes", "sha256"}``, then the payload: a JSON line
    ``{"prune_step", "tensors": [[name, numpy dtype, shape], ...]}`` (and ``"architecture"``, the model's
    widths, when the algorithm changed them) followed by the tensors' raw bytes in that order. ``sha256`` is
    the payload's SHA-256 hex digest. ``load`` trusts a file only if all of it checks out (format, version
    equal to the one in its name, the scenario ``fingerprint``, length, checksum, tensor shapes equal to the
    model's; a state of another architecture than ``like``'s, which structured pruning makes, must hold
    one flat vector of the same dtype); otherwise it prints ``checkpoint <path>: <what>;
    recomputing`` (through ``report``, stderr by default) and returns None. Files are written to a
    temporary name, synced and renamed, so a crash never leaves a torn checkpoint; a failed write raises
    ``CheckpointWriteError``. ``fingerprint`` (a hash of the scenario) also guards the whole folder
    (``scenario.sha256``) against resuming with a different scenario.
    """

    MAGIC = b"fleet-checkpoint\n"
    FORMAT = 1
    _DTYPES = ("<f4", "<f8", "|b1")  # what ModelState holds: float weights, a bool mask

    def __init__(self, directory, fingerprint: str, report: Callable[[str], None] | None = None) -> None:
        from pathlib import Path

        self.directory = Path(directory)
        self.fingerprint = fingerprint
        self.report = report or (lambda line: print(line, file=sys.stderr, flush=True))
        self.directory.mkdir(parents=True, exist_ok=True)
        stamp = self.directory / "scenario.sha256"
        if stamp.exists() and stamp.read_bytes().strip() != fingerprint.encode():
            raise ValueError(f"{self.directory} holds checkpoints of a different scenario; "
                             "use another --out folder")
        self._write(stamp, fingerprint.encode() + b"\n")

    def path(self, version: int):
        return self.directory / f"version_{version:06d}.ckpt"

    def load(self, version: int, like: ModelState) -> ModelState | None:
        """The state of ``version`` if its file is there and sound (``like``: a state of the same model, for
        the shapes); None if there is no file, or, after a one-line report, if it is not sound."""
        path = self.path(version)
        try:
            blob = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            return self._bad(path, f"cannot be read ({exc.strerror or exc})")
        try:
            return self._decode(blob, version, like)
        except _Unsound as exc:
            return self._bad(path, str(exc))

    def _bad(self, path, what: str) -> None:
        self.report(f"checkpoint {path}: {what}; recomputing")
        return None

    def _decode(self, blob: bytes, version: int, like: ModelState) -> ModelState:
        import torch

        if not blob:
            raise _Unsound("empty file")
        if not blob.startswith(self.MAGIC):
            raise _Unsound("not a fleet checkpoint")
        head_end = blob.find(b"\n", len(self.MAGIC))
        head = _json_object(blob[len(self.MAGIC):head_end] if head_end >= 0 else b"", "header")
        if head.get("format") != self.FORMAT:
            raise _Unsound(f"format {head.get('format')!r}, this program reads {self.FORMAT}")
        if head.get("version") != version:
            raise _Unsound(f"holds version {head.get('version')!r}, not {version} (a stale copy)")
        if head.get("fingerprint") != self.fingerprint:
            raise _Unsound("belongs to another scenario")
        payload = blob[head_end + 1:]
        if len(payload) != head.get("payload_bytes"):
            raise _Unsound(f"truncated or padded ({len(payload)} payload bytes, header says "
                           f"{head.get('payload_bytes')!r})")
        if hashlib.sha256(payload).hexdigest() != head.get("sha256"):
            raise _Unsound("checksum mismatch (damaged)")
        meta_end = payload.find(b"\n")
        meta = _json_object(payload[:meta_end], "payload")
        tensors, offset = {}, meta_end + 1
        try:
            prune_step = int(meta["prune_step"])
            architecture = tuple(int(w) for w in meta.get("architecture", ()))
            if any(w < 1 for w in architecture):
                raise ValueError("architecture widths must be positive")
            for name, dtype, shape in meta["tensors"]:
                if dtype not in self._DTYPES:
                    raise _Unsound(f"tensor {name}: dtype {dtype!r}")
                count = int(np.prod(shape, dtype=np.int64))
                array = np.frombuffer(payload, dtype, count, offset).reshape(shape)
                tensors[name] = torch.from_numpy(array.copy())
                offset += array.nbytes
        except (KeyError, TypeError, ValueError):
            raise _Unsound("unparsable payload") from None
        if offset != len(payload):
            raise _Unsound("unparsable payload")
        weights, mask = tensors.get("weights"), tensors.get("mask")
        shape_ok = weights is not None and (weights.shape == like.weights.shape if architecture == like.architecture
                                            else weights.dim() == 1 and weights.numel() > 0)
        if not shape_ok or weights.dtype != like.weights.dtype:
            raise _Unsound(f"weights do not fit the model ({like.weights.numel()} {like.weights.dtype})")
        if mask is not None and mask.shape != weights.shape:
            raise _Unsound("mask does not fit the weights")
        return ModelState(weights, mask, prune_step, architecture)

    def save(self, version: int, state: ModelState) -> None:
        """Write ``version``'s state atomically; ``CheckpointWriteError`` if it cannot be written."""
        arrays = [("weights", state.weights)] + ([("mask", state.mask)] if state.mask is not None else [])
        arrays = [(name, t.detach().cpu().numpy()) for name, t in arrays]
        meta = {"prune_step": int(state.prune_step),
                "tensors": [[name, a.dtype.str, list(a.shape)] for name, a in arrays]}
        if state.architecture:
            meta["architecture"] = [int(w) for w in state.architecture]
        tensors = b"".join(np.ascontiguousarray(a).tobytes() for _, a in arrays)
        payload = json.dumps(meta, allow_nan=False).encode() + b"\n" + tensors
        head = {"format": self.FORMAT, "version": version, "fingerprint": self.fingerprint,
                "payload_bytes": len(payload), "sha256": hashlib.sha256(payload).hexdigest()}
        header = json.dumps(head, allow_nan=False).encode()
        self._write(self.path(version), self.MAGIC + header + b"\n" + payload)

    def _write(self, path, data: bytes) -> None:
        tmp = path.with_name(path.name + ".tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except OSError as exc:
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass
            raise CheckpointWriteError(exc.errno, exc.strerror or str(exc), str(path)) from None


class _Unsound(Exception):
    """Why a checkpoint file cannot be trusted (one phrase)."""


def _json_object(raw: bytes, what: str) -> dict:
    try:
        value = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise _Unsound(f"unparsable {what}") from None
    if not isinstance(value, dict):
        raise _Unsound(f"unparsable {what}")
    return value
