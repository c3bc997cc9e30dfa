"""Dataset loading: the IDX parser, directory resolution, normalisation, caching and the real data sets."""

import gzip
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from algorithms import datasets
from algorithms.datasets import (
    DATASETS,
    IDX_IMAGES_MAGIC,
    IDX_LABELS_MAGIC,
    Dataset,
    DatasetMissing,
    load_dataset,
    read_idx,
)

FASHION_MNIST_INSTALLED = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").is_file()


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file of unsigned bytes, written by hand: magic (0x0000 08 ndim), big-endian dims, data."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write(path: Path, array: np.ndarray) -> Path:
    data = idx_bytes(array)
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


def fake_fashion_mnist(directory: Path, train_labels=(3, 0, 9, 3), test_labels=(1, 2)) -> dict:
    """A four-file Fashion-MNIST with a few 28x28 images; train files gzipped, test files plain."""
    rng = np.random.default_rng(7)
    arrays = {"train_x": rng.integers(0, 256, (len(train_labels), 28, 28), dtype=np.uint8),
              "train_y": np.array(train_labels, dtype=np.uint8),
              "test_x": rng.integers(0, 256, (len(test_labels), 28, 28), dtype=np.uint8),
              "test_y": np.array(test_labels, dtype=np.uint8)}
    directory.mkdir(parents=True, exist_ok=True)
    write(directory / "train-images-idx3-ubyte.gz", arrays["train_x"])
    write(directory / "train-labels-idx1-ubyte.gz", arrays["train_y"])
    write(directory / "t10k-images-idx3-ubyte", arrays["test_x"])
    write(directory / "t10k-labels-idx1-ubyte", arrays["test_y"])
    return arrays


# --- the IDX parser ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["images-idx3-ubyte", "images-idx3-ubyte.gz"])
def test_read_idx_gives_the_exact_array_plain_or_gzipped(tmp_path, name):
    images = np.array([[[0, 1, 2], [253, 254, 255]], [[9, 8, 7], [6, 5, 4]]], dtype=np.uint8)
    path = write(tmp_path / name, images)
    parsed = read_idx(path, IDX_IMAGES_MAGIC)
    assert parsed.dtype == np.uint8 and parsed.shape == (2, 2, 3)
    np.testing.assert_array_equal(parsed, images)
    assert not parsed.flags.writeable


def test_read_idx_labels(tmp_path):
    path = write(tmp_path / "labels", np.array([5, 0, 9], dtype=np.uint8))
    np.testing.assert_array_equal(read_idx(path, IDX_LABELS_MAGIC), [5, 0, 9])


def test_read_idx_header_layout_is_big_endian(tmp_path):
    path = tmp_path / "labels"
    path.write_bytes(bytes([0, 0, 8, 1, 0, 0, 1, 2]) + bytes(258))  # 0x0102 = 258 labels
    assert read_idx(path, IDX_LABELS_MAGIC).shape == (258,)


def test_wrong_magic_names_file_and_numbers(tmp_path):
    path = write(tmp_path / "labels", np.zeros(4, dtype=np.uint8))
    with pytest.raises(ValueError, match=r"labels: magic number 0x00000801, expected 0x00000803"):
        read_idx(path, IDX_IMAGES_MAGIC)


@pytest.mark.parametrize("keep, problem", [(2, "truncated: 2 bytes"), (10, "truncated header"),
                                           (16 + 11, "truncated: 11 data bytes"), (None, "trailing bytes")])
def test_truncated_or_padded_files_are_value_errors_naming_the_file(tmp_path, keep, problem):
    data = idx_bytes(np.zeros((3, 2, 2), dtype=np.uint8))
    path = tmp_path / "images"
    path.write_bytes(data[:keep] if keep is not None else data + b"\x00")
    with pytest.raises(ValueError, match=problem) as error:
        read_idx(path, IDX_IMAGES_MAGIC)
    assert str(path) in str(error.value)


@pytest.mark.parametrize("damage", [lambda z: z[:-12], lambda z: b"not gzip at all"])
def test_corrupt_gzip_is_a_value_error_naming_the_file(tmp_path, damage):
    path = tmp_path / "images.gz"
    path.write_bytes(damage(gzip.compress(idx_bytes(np.zeros((3, 2, 2), dtype=np.uint8)))))
    with pytest.raises(ValueError, match="images.gz: corrupt gzip"):
        read_idx(path, IDX_IMAGES_MAGIC)


# --- Fashion-MNIST from a directory ---------------------------------------------------------------

def test_load_from_data_dir_normalises_with_train_constants(tmp_path):
    raw = fake_fashion_mnist(tmp_path)
    data = load_dataset("fashion_mnist", data_dir=tmp_path)
    train = raw["train_x"] / 255.0
    mean, std = train.mean(), train.std()
    assert data.pixel_mean == pytest.approx(mean, rel=1e-12) and data.pixel_std == pytest.approx(std, rel=1e-12)
    assert data.train_x.dtype == np.float32 and data.train_x.shape == (4, 1, 28, 28)
    assert data.test_x.shape == (2, 1, 28, 28) and data.input_shape == (1, 28, 28)
    np.testing.assert_allclose(data.train_x[:, 0], (train - mean) / std, atol=1e-5)
    np.testing.assert_allclose(data.test_x[:, 0], (raw["test_x"] / 255.0 - mean) / std, atol=1e-5)
    assert data.train_y.dtype == np.int64 and data.train_y.tolist() == [3, 0, 9, 3]
    assert data.test_y.tolist() == [1, 2]
    assert (data.name, data.num_classes) == ("fashion_mnist", 10)


def test_loaded_arrays_are_read_only_and_cached(tmp_path):
    fake_fashion_mnist(tmp_path)
    data = load_dataset("fashion_mnist", data_dir=tmp_path)
    for array in (data.train_x, data.train_y, data.test_x, data.test_y):
        with pytest.raises(ValueError, match="read-only"):
            array[0] = 0
    assert load_dataset("fashion_mnist", data_dir=f"{tmp_path}/../{tmp_path.name}") is data  # same dir


def test_fleet_data_dir_is_honoured_and_data_dir_wins(tmp_path, monkeypatch):
    fake_fashion_mnist(tmp_path / "env", train_labels=(1, 1, 1))
    fake_fashion_mnist(tmp_path / "arg", train_labels=(2, 2))
    monkeypatch.setenv("FLEET_DATA_DIR", str(tmp_path / "env"))
    assert load_dataset("fashion_mnist").train_y.tolist() == [1, 1, 1]
    assert load_dataset("fashion_mnist", data_dir=tmp_path / "arg").train_y.tolist() == [2, 2]


def test_default_directory_without_the_variable(tmp_path, monkeypatch):
    fake_fashion_mnist(tmp_path, train_labels=(4, 5))
    monkeypatch.delenv("FLEET_DATA_DIR", raising=False)
    monkeypatch.setattr(datasets, "FASHION_MNIST_DIR", tmp_path)
    assert load_dataset("fashion_mnist").train_y.tolist() == [4, 5]


def test_missing_directory_says_how_to_get_the_data(tmp_path, monkeypatch):
    monkeypatch.setenv("FLEET_DATA_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(DatasetMissing) as error:
        load_dataset("fashion_mnist")
    message = str(error.value)
    assert isinstance(error.value, FileNotFoundError)
    for needle in (str(tmp_path / "nowhere"), "apt-get install dataset-fashion-mnist", "FLEET_DATA_DIR",
                   "data.dir", "https://github.com/zalandoresearch/fashion-mnist"):
        assert needle in message


def test_missing_file_is_named(tmp_path):
    fake_fashion_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DatasetMissing, match=r"t10k-labels-idx1-ubyte \(or t10k-labels-idx1-ubyte.gz\) not "
                                             r"found in .*apt-get install dataset-fashion-mnist"):
        load_dataset("fashion_mnist", data_dir=tmp_path)


def test_label_count_must_match_image_count(tmp_path):
    fake_fashion_mnist(tmp_path)
    write(tmp_path / "t10k-labels-idx1-ubyte", np.array([1, 2, 3], dtype=np.uint8))
    with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte: 3 labels for 2 images"):
        load_dataset("fashion_mnist", data_dir=tmp_path)


def test_bad_label_and_bad_image_size_are_named(tmp_path):
    fake_fashion_mnist(tmp_path / "a", test_labels=(1, 10))
    with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte: label 10 outside 0..9"):
        load_dataset("fashion_mnist", data_dir=tmp_path / "a")
    fake_fashion_mnist(tmp_path / "b")
    write(tmp_path / "b" / "t10k-images-idx3-ubyte", np.zeros((2, 27, 28), dtype=np.uint8))
    with pytest.raises(ValueError, match="images are 27x28, expected 28x28"):
        load_dataset("fashion_mnist", data_dir=tmp_path / "b")


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="valid names: digits, fashion_mnist"):
        load_dataset("cifar10")


# --- specs, the dataclass and the module's imports ----------------------------------------------------

def test_specs_are_read_only_and_describe_licences():
    assert set(DATASETS) == {"fashion_mnist", "digits"}
    assert DATASETS["fashion_mnist"].input_shape == (1, 28, 28) and DATASETS["digits"].input_shape == (1, 8, 8)
    assert all(spec.num_classes == 10 and spec.name == name for name, spec in DATASETS.items())
    assert "MIT" in DATASETS["fashion_mnist"].description and "BSD" in DATASETS["digits"].description
    with pytest.raises(TypeError):
        DATASETS["mnist"] = DATASETS["digits"]  # type: ignore[index]


def test_dataset_checks_dtypes_and_lengths():
    x, y = np.zeros((2, 1, 4, 4), np.float32), np.zeros(2, np.int64)
    with pytest.raises(ValueError, match="train_x must be float32"):
        Dataset("d", 10, x.astype(np.float64), y, x, y, 0.0, 1.0)
    with pytest.raises(ValueError, match="test_y int64"):
        Dataset("d", 10, x, y, x, y[:1], 0.0, 1.0)


def test_module_imports_neither_torch_nor_sklearn():
    code = "import sys, algorithms.datasets; print('torch' in sys.modules, 'sklearn' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "False"]


# --- the real data sets -----------------------------------------------------------------------------------

@pytest.mark.skipif(not FASHION_MNIST_INSTALLED, reason="Debian's dataset-fashion-mnist is not installed")
def test_real_fashion_mnist(monkeypatch):
    monkeypatch.delenv("FLEET_DATA_DIR", raising=False)
    data = load_dataset("fashion_mnist")
    assert data.train_x.shape == (60000, 1, 28, 28) and data.test_x.shape == (10000, 1, 28, 28)
    assert np.bincount(data.train_y).tolist() == [6000] * 10
    assert np.bincount(data.test_y).tolist() == [1000] * 10
    pixels = data.train_x.reshape(-1)
    mean = float(pixels.mean(dtype=np.float64))
    second_moment = float(np.einsum("i,i->", pixels, pixels, dtype=np.float64)) / pixels.size  # no temporary
    assert abs(mean) < 1e-4 and second_moment - mean**2 == pytest.approx(1.0, abs=1e-4)
    assert data.pixel_mean == pytest.approx(0.2860, abs=1e-4) and data.pixel_std == pytest.approx(0.3530, abs=1e-4)


def test_digits_split_every_fifth_sample_to_test():
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    data = load_dataset("digits")
    assert data.train_x.shape == (1437, 1, 8, 8) and data.test_x.shape == (360, 1, 8, 8)
    target = sklearn_datasets.load_digits().target
    assert data.test_y.tolist() == target[::5].tolist()
    assert data.train_y.tolist() == np.delete(target, np.arange(0, len(target), 5)).tolist()
    assert abs(float(data.train_x.mean())) < 1e-5 and float(data.train_x.std()) == pytest.approx(1.0, abs=1e-5)
    assert data.train_x.min() == pytest.approx(-data.pixel_mean / data.pixel_std, abs=1e-5)  # grey level 0


def test_digits_without_scikit_learn_says_how_to_install(monkeypatch):
    monkeypatch.setattr(datasets, "_CACHE", {})
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(DatasetMissing, match="pip install scikit-learn"):
        load_dataset("digits")
