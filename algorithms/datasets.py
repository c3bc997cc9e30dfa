"""Image classification datasets for the learning plane, read offline from files already on the machine.

Nothing here downloads. Two datasets (``DATASETS``):

* ``fashion_mnist``: the four IDX files of Fashion-MNIST, each plain or ``.gz``, from the first of
  ``load_dataset(data_dir=...)`` (the scenario key ``data.dir``), the environment variable
  ``FLEET_DATA_DIR``, or ``/usr/share/datasets/fashion-mnist`` (Debian's ``dataset-fashion-mnist``).
* ``digits``: the 8×8 digits that ship inside scikit-learn (imported only when this one is loaded).

Contract of a loaded :class:`Dataset`: ``train_x``/``test_x`` are float32 ``(N, C, H, W)``, normalised as
``(raw / max_value - pixel_mean) / pixel_std``, where ``pixel_mean`` and ``pixel_std`` are the mean and standard
deviation of ``raw / max_value`` over every pixel of the *train* split, computed at load time from the data
(never hard-coded; for Fashion-MNIST they come out at about 0.286 and 0.353). ``train_y``/``test_y`` are int64
class indices in ``[0, num_classes)``. All arrays are read-only: a loaded dataset is cached per
(name, directory) for the life of the process and shared by every caller.

Fashion-MNIST is decoded once per machine: ``algorithms.datacache`` keeps the normalised arrays on disk
(``$FLEET_CACHE_DIR``, else ``~/.cache/fleet``; keyed by the IDX files' paths, sizes and modification times)
and later loads memory-map them, so a process starts in milliseconds and all processes share one copy.

This module imports only numpy and the standard library, so the scenario validator can read ``DATASETS``
without torch.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import numpy as np

from algorithms.datacache import cached

__all__ = ["DATASETS", "DATA_DIR_ENV", "FASHION_MNIST_DIR", "IDX_IMAGES_MAGIC", "IDX_LABELS_MAGIC", "Dataset",
           "DatasetMissing", "DatasetSpec", "load_dataset", "read_idx"]

DATA_DIR_ENV = "FLEET_DATA_DIR"
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
IDX_IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions (count, rows, columns)
IDX_LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension (count)
_FASHION_MNIST_FILES = {  # split -> (images file, labels file), without the optional .gz
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_FASHION_MNIST_HOWTO = (
    "get it with `apt-get install dataset-fashion-mnist` on Debian/Ubuntu (into "
    f"{FASHION_MNIST_DIR}), or download the four IDX files from "
    "https://github.com/zalandoresearch/fashion-mnist and point the environment variable "
    f"{DATA_DIR_ENV} or the scenario key data.dir at the directory that holds them")


@dataclass(frozen=True)
class DatasetSpec:
    """What a scenario needs to know about a dataset before loading it: per-sample shape and class count."""

    name: str
    input_shape: tuple[int, int, int]  # (channels, height, width) of one sample
    num_classes: int
    description: str  # one line: what it is, its size and its licence


DATASETS = MappingProxyType({
    "fashion_mnist": DatasetSpec(
        "fashion_mnist", (1, 28, 28), 10,
        "Fashion-MNIST (Xiao et al. 2017): 28x28 greyscale clothing images, 10 classes, 60,000 train / "
        "10,000 test; MIT licence, (c) 2017 Zalando SE"),
    "digits": DatasetSpec(
        "digits", (1, 8, 8), 10,
        "scikit-learn's copy of the UCI optdigits test set: 1,797 8x8 digit images, grey levels 0-16, "
        "10 classes, 1,437 train / 360 test (every 5th sample); BSD-3-Clause (scikit-learn), CC BY 4.0 (UCI)"),
})


class DatasetMissing(FileNotFoundError):
    """A dataset's files (or the package that ships them) are not on this machine; the message says how to
    get them."""


@dataclass(frozen=True, eq=False)
class Dataset:
    """A loaded dataset: normalised read-only arrays and the constants used to normalise them."""

    name: str
    num_classes: int
    train_x: np.ndarray  # float32 (N_train, C, H, W), normalised
    train_y: np.ndarray  # int64 (N_train,), in [0, num_classes)
    test_x: np.ndarray  # float32 (N_test, C, H, W), normalised with the train split's constants
    test_y: np.ndarray  # int64 (N_test,)
    pixel_mean: float  # mean of raw / max_value over every train pixel
    pixel_std: float  # standard deviation of raw / max_value over every train pixel

    def __post_init__(self) -> None:
        for split in ("train", "test"):
            x, y = getattr(self, f"{split}_x"), getattr(self, f"{split}_y")
            if x.dtype != np.float32 or x.ndim != 4 or y.dtype != np.int64 or y.shape != (len(x),):
                raise ValueError(f"Dataset {self.name!r}: {split}_x must be float32 (N, C, H, W) and "
                                 f"{split}_y int64 (N,), got {x.dtype} {x.shape} and {y.dtype} {y.shape}")
        if self.test_x.shape[1:] != self.train_x.shape[1:]:
            raise ValueError(f"Dataset {self.name!r}: test samples {self.test_x.shape[1:]} differ from train "
                             f"samples {self.train_x.shape[1:]}")

    @property
    def input_shape(self) -> tuple[int, ...]:
        """(channels, height, width) of one sample."""
        return tuple(self.train_x.shape[1:])


_CACHE: dict[tuple[str, str | None], Dataset] = {}


def load_dataset(name: str, data_dir: str | os.PathLike[str] | None = None) -> Dataset:
    """Load dataset ``name`` (a key of ``DATASETS``), from the in-process cache after the first time.

    ``data_dir`` (Fashion-MNIST only; ignored for ``digits``) overrides ``$FLEET_DATA_DIR``, which overrides
    ``/usr/share/datasets/fashion-mnist``. Raises ``ValueError`` for an unknown name (listing the valid ones)
    or a corrupt file (naming it), and :class:`DatasetMissing` when the files are not there.
    """
    if name not in DATASETS:
        raise ValueError(f"dataset {name!r} is unknown; valid names: {', '.join(sorted(DATASETS))}")
    directory = _fashion_mnist_dir(data_dir) if name == "fashion_mnist" else None
    key = (name, None if directory is None else str(directory))
    if key not in _CACHE:
        _CACHE[key] = _load_fashion_mnist(directory) if directory is not None else _load_digits()
    return _CACHE[key]


def read_idx(path: str | os.PathLike[str], magic: int) -> np.ndarray:
    """The uint8 array stored in the IDX file ``path`` (gzip-compressed if its name ends in ``.gz``).

    ``magic`` is the expected 4-byte big-endian magic number: ``IDX_IMAGES_MAGIC`` (0x00000803) or
    ``IDX_LABELS_MAGIC`` (0x00000801); its low byte is the number of dimensions, each a big-endian uint32.
    Raises ``ValueError`` naming the file for a bad gzip stream, a wrong magic number, a truncated header or
    body, or trailing bytes. The result is read-only.
    """
    path = Path(path)
    try:
        data = gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes()
    except (gzip.BadGzipFile, EOFError, zlib.error) as error:
        raise ValueError(f"{path}: corrupt gzip stream ({error})") from error
    if len(data) < 4:
        raise ValueError(f"{path}: truncated: {len(data)} bytes, too short for the IDX magic number")
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise ValueError(f"{path}: magic number 0x{found:08x}, expected 0x{magic:08x}; not this kind of IDX file")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path}: truncated header: {len(data)} bytes, {ndim} dimensions need {header}")
    dims = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    size = math.prod(dims)
    if len(data) - header != size:
        problem = "truncated" if len(data) - header < size else "trailing bytes"
        raise ValueError(f"{path}: {problem}: {len(data) - header} data bytes, dimensions {dims} need {size}")
    return np.frombuffer(data, dtype=np.uint8, count=size, offset=header).reshape(dims)


def _fashion_mnist_dir(data_dir: str | os.PathLike[str] | None) -> Path:
    if data_dir is not None:
        chosen, source = data_dir, "data_dir"
    elif os.environ.get(DATA_DIR_ENV):
        chosen, source = os.environ[DATA_DIR_ENV], DATA_DIR_ENV
    else:
        chosen, source = FASHION_MNIST_DIR, "the default"
    directory = Path(chosen).expanduser().resolve()
    if not directory.is_dir():
        raise DatasetMissing(f"Fashion-MNIST: directory {directory} (from {source}) does not exist; "
                             f"{_FASHION_MNIST_HOWTO}")
    return directory


def _find(directory: Path, stem: str) -> Path:
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    raise DatasetMissing(f"Fashion-MNIST: {stem} (or {stem}.gz) not found in {directory}; {_FASHION_MNIST_HOWTO}")


def _load_fashion_mnist(directory: Path) -> Dataset:
    paths = {split: (_find(directory, images_stem), _find(directory, labels_stem))
             for split, (images_stem, labels_stem) in _FASHION_MNIST_FILES.items()}
    sources = [path for pair in paths.values() for path in pair]
    return cached("fashion_mnist", sources, lambda: _decode_fashion_mnist(paths), Dataset)


def _decode_fashion_mnist(paths: dict[str, tuple[Path, Path]]) -> Dataset:
    spec = DATASETS["fashion_mnist"]
    raw: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for split, (images_path, labels_path) in paths.items():
        images, labels = read_idx(images_path, IDX_IMAGES_MAGIC), read_idx(labels_path, IDX_LABELS_MAGIC)
        if images.shape[1:] != spec.input_shape[1:]:
            raise ValueError(f"{images_path}: images are {images.shape[1]}x{images.shape[2]}, "
                             f"expected {spec.input_shape[1]}x{spec.input_shape[2]}")
        if len(labels) != len(images):
            raise ValueError(f"{labels_path}: {len(labels)} labels for {len(images)} images in {images_path}")
        if len(labels) and labels.max() >= spec.num_classes:
            raise ValueError(f"{labels_path}: label {labels.max()} outside 0..{spec.num_classes - 1}")
        raw[split] = (images[:, None], labels)
    return _normalised(spec, raw, max_value=255)


def _load_digits() -> Dataset:
    try:
        from sklearn.datasets import load_digits  # lazy: scipy and scikit-learn take ~1 s to import
    except ImportError as error:
        raise DatasetMissing(f"dataset 'digits' ships with scikit-learn, which is not installed ({error}); "
                             "install it with `pip install scikit-learn`") from error
    bunch = load_digits()
    images = np.asarray(bunch.images, dtype=np.uint8)[:, None]  # grey levels 0..16, exact in uint8
    labels = np.asarray(bunch.target)
    test = np.arange(len(labels)) % 5 == 0
    raw = {"train": (images[~test], labels[~test]), "test": (images[test], labels[test])}
    return _normalised(DATASETS["digits"], raw, max_value=16)


def _normalised(spec: DatasetSpec, raw: dict[str, tuple[np.ndarray, np.ndarray]], max_value: int) -> Dataset:
    """Build the Dataset from uint8 images (N, C, H, W) in 0..max_value.

    The train split's mean and std come from exact integer sums of the grey levels and their squares
    (from the histogram of grey levels), then each split is scaled in place in float32:
    ``raw * (1 / (max_value * std)) - mean / std``.
    """
    images = raw["train"][0]
    if images.size == 0 or int(images.max()) > max_value:
        raise ValueError(f"dataset {spec.name!r}: train images empty or above grey level {max_value}")
    counts = np.bincount(images.reshape(-1), minlength=max_value + 1).tolist()  # exact, no temporaries
    total = sum(level * count for level, count in enumerate(counts))
    squares = sum(level * level * count for level, count in enumerate(counts))
    mean = total / images.size / max_value
    std = math.sqrt(max(squares / images.size / max_value**2 - mean**2, 0.0))
    if not std > 0:
        raise ValueError(f"dataset {spec.name!r}: the train images are constant; cannot normalise")
    arrays = {}
    for split, (split_images, labels) in raw.items():
        x = split_images.astype(np.float32)
        x *= np.float32(1.0 / (max_value * std))
        x -= np.float32(mean / std)
        arrays[f"{split}_x"], arrays[f"{split}_y"] = x, labels.astype(np.int64)
    for array in arrays.values():
        array.flags.writeable = False
    return Dataset(name=spec.name, num_classes=spec.num_classes, pixel_mean=mean, pixel_std=std, **arrays)
