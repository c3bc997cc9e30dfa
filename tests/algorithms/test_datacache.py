"""The on-disk cache of decoded datasets: the same bits, keyed by the source files, atomic, optional."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from algorithms import datacache, datasets
from algorithms.datasets import load_dataset
from tests.algorithms.test_datasets import fake_fashion_mnist

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FLEET_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(datasets, "_CACHE", {})  # no in-process copy: every load goes to the disk
    return tmp_path / "cache"


def _entries(cache):
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


def test_a_second_load_maps_the_same_bits_read_only(tmp_path, cache):
    fake_fashion_mnist(tmp_path / "data")
    first = load_dataset("fashion_mnist", data_dir=tmp_path / "data")
    assert not isinstance(first.train_x, np.memmap)  # decoded
    [entry] = _entries(cache)
    assert entry.startswith("fashion_mnist-")
    datasets._CACHE.clear()
    second = load_dataset("fashion_mnist", data_dir=tmp_path / "data")
    assert isinstance(second.train_x, np.memmap)  # mapped, not decoded
    for name in ("train_x", "train_y", "test_x", "test_y"):
        a, b = getattr(first, name), getattr(second, name)
        assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
        with pytest.raises(ValueError, match="read-only"):
            b[0] = 0
    assert (second.pixel_mean, second.pixel_std) == (first.pixel_mean, first.pixel_std)  # exact


def test_a_changed_source_file_gets_a_new_entry(tmp_path, cache):
    fake_fashion_mnist(tmp_path / "data", train_labels=(1, 1, 1))
    load_dataset("fashion_mnist", data_dir=tmp_path / "data")
    fake_fashion_mnist(tmp_path / "data", train_labels=(2, 2))
    labels = tmp_path / "data" / "train-labels-idx1-ubyte.gz"
    os.utime(labels, ns=(labels.stat().st_atime_ns, labels.stat().st_mtime_ns + 10**9))
    datasets._CACHE.clear()
    assert load_dataset("fashion_mnist", data_dir=tmp_path / "data").train_y.tolist() == [2, 2]
    assert len(_entries(cache)) == 2


def test_off_writes_nothing_and_an_unwritable_folder_is_skipped(tmp_path, monkeypatch, cache):
    fake_fashion_mnist(tmp_path / "data", train_labels=(4, 5))
    monkeypatch.setenv("FLEET_CACHE_DIR", "off")
    assert datacache.cache_dir() is None
    assert load_dataset("fashion_mnist", data_dir=tmp_path / "data").train_y.tolist() == [4, 5]
    assert not cache.exists()
    blocker = tmp_path / "a file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("FLEET_CACHE_DIR", str(blocker / "cache"))
    datasets._CACHE.clear()
    assert load_dataset("fashion_mnist", data_dir=tmp_path / "data").train_y.tolist() == [4, 5]


def test_the_default_folder_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.delenv("FLEET_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert datacache.cache_dir() == tmp_path / "fleet"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert datacache.cache_dir() == Path.home() / ".cache" / "fleet"


def test_a_racing_writer_loses_quietly_and_leaves_no_temporary_folder(tmp_path, cache):
    fake_fashion_mnist(tmp_path / "data")
    dataset = load_dataset("fashion_mnist", data_dir=tmp_path / "data")
    [entry] = _entries(cache)
    datacache._write(cache / entry, dataset)  # the entry exists: the rename fails, the copy is removed
    assert _entries(cache) == [entry]


def test_a_damaged_entry_is_rebuilt(tmp_path, cache):
    fake_fashion_mnist(tmp_path / "data", train_labels=(3, 0, 9, 3))
    load_dataset("fashion_mnist", data_dir=tmp_path / "data")
    [entry] = _entries(cache)
    (cache / entry / "train_x.npy").unlink()
    datasets._CACHE.clear()
    assert load_dataset("fashion_mnist", data_dir=tmp_path / "data").train_y.tolist() == [3, 0, 9, 3]
    assert (cache / entry / "train_x.npy").is_file()


def test_processes_loading_at_once_agree(tmp_path, cache):
    fake_fashion_mnist(tmp_path / "data")
    code = ("import sys; from algorithms.datasets import load_dataset; "
            "d = load_dataset('fashion_mnist', data_dir=sys.argv[1]); print(d.train_x.sum(), d.test_y.tolist())")
    env = {**os.environ, "FLEET_CACHE_DIR": str(cache)}
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "data")], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, text=True) for _ in range(4)]
    outputs = {p.communicate(timeout=60)[0] for p in procs}
    assert all(p.returncode == 0 for p in procs) and len(outputs) == 1
    assert len(_entries(cache)) == 1  # one entry, no temporary folders left
