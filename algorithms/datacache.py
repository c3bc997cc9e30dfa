"""The on-disk cache of decoded datasets: decode the source files once per machine, then map the arrays.

Decoding Fashion-MNIST (gunzip 26 MB, then normalise 55 million pixels to float32) takes about a second and
leaves ~0.3 GB of temporaries behind; every process that loads it (a run, each process-pool or Ray worker,
each run of a sweep) paid it. ``cached(name, sources, build)`` keeps what ``build`` returns (the normalised
arrays and their constants) as plain ``.npy`` files in one folder per source version, and later loads
memory-map them read-only: no decoding, nothing copied, and every process of the machine shares the same
page-cache pages (so a worker holds no copy of its own).

* Where: ``$FLEET_CACHE_DIR``, else ``$XDG_CACHE_HOME/fleet``, else ``~/.cache/fleet``;
  ``FLEET_CACHE_DIR=off`` turns the cache off.
* Key: the dataset's name, this module's ``FORMAT``, and each source file's resolved path, size and
  modification time (ns): a changed or replaced file gets a new entry (old entries are left to the user).
* Concurrent writers: each writes a private temporary folder and renames it into place (atomic on POSIX);
  the loser of a race deletes its copy. A reader sees a whole entry or none, and a half-written entry is
  never visible. An entry that cannot be read (a file removed by hand) is rebuilt.
* The cache is a convenience: a cache folder that cannot be written (read-only, full disk) is silently
  skipped, and ``build``'s result is returned either way.

numpy and the standard library only (no torch), like ``algorithms.datasets``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

__all__ = ["CACHE_DIR_ENV", "FORMAT", "cache_dir", "cached", "entry_path"]

CACHE_DIR_ENV = "FLEET_CACHE_DIR"
FORMAT = 1  # bump when what ``build`` returns changes meaning (the normalisation, the split)
_ARRAYS = ("train_x", "train_y", "test_x", "test_y")


def cache_dir() -> Path | None:
    """The cache folder (not created here), or None when ``FLEET_CACHE_DIR=off``."""
    chosen = os.environ.get(CACHE_DIR_ENV)
    if chosen == "off":
        return None
    if chosen:
        return Path(chosen).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "fleet"


def entry_path(name: str, sources: Sequence[Path]) -> Path | None:
    """The folder that holds (or will hold) ``name`` decoded from ``sources``; None with the cache off."""
    root = cache_dir()
    if root is None:
        return None
    key = hashlib.sha256(f"{name}\0{FORMAT}".encode())
    for path in sources:
        path = Path(path).resolve()
        st = path.stat()
        key.update(f"\0{path}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    return root / f"{name}-{key.hexdigest()[:24]}"


def cached(name: str, sources: Sequence[Path], build: Callable[[], object], make: Callable[..., object]):
    """``build()``'s dataset, read from the cache when an entry for ``sources`` exists, else built and stored.

    ``build`` returns an object with the arrays ``train_x``, ``train_y``, ``test_x``, ``test_y`` and the
    floats ``pixel_mean``, ``pixel_std`` and int ``num_classes``; ``make(**fields)`` builds one from an
    entry (the arrays memory-mapped read-only)."""
    entry = entry_path(name, sources)
    if entry is None:
        return build()
    found = _read(entry, make)
    if found is not None:
        return found
    dataset = build()
    if entry.exists():  # unreadable (a file removed by hand): replaced; a process that mapped it keeps its pages
        shutil.rmtree(entry, ignore_errors=True)
    _write(entry, dataset)
    return dataset


def _read(entry: Path, make: Callable[..., object]):
    try:
        meta = json.loads((entry / "meta.json").read_text())
        arrays = {a: np.load(entry / f"{a}.npy", mmap_mode="r", allow_pickle=False) for a in _ARRAYS}
        return make(name=meta["name"], num_classes=int(meta["num_classes"]), pixel_mean=float(meta["pixel_mean"]),
                    pixel_std=float(meta["pixel_std"]), **arrays)
    except (OSError, ValueError, KeyError, TypeError):
        return None  # absent, or unreadable: rebuilt


def _write(entry: Path, dataset) -> None:
    """Store ``dataset`` as ``entry``, atomically; any OS error leaves no trace and is not raised."""
    tmp = None
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=entry.parent))
        for a in _ARRAYS:
            np.save(tmp / f"{a}.npy", np.ascontiguousarray(getattr(dataset, a)), allow_pickle=False)
        meta = {"name": dataset.name, "num_classes": dataset.num_classes, "pixel_mean": dataset.pixel_mean,
                "pixel_std": dataset.pixel_std, "format": FORMAT}
        (tmp / "meta.json").write_text(json.dumps(meta))  # written last: an entry with it is whole
        os.rename(tmp, entry)  # fails if another writer got there first: theirs is as good
        tmp = None
    except OSError:
        pass
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
