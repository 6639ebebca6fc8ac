"""CIFAR folders (fixtures written in the real pickle format), the npz loader, user data sets."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from byzance import data
from byzance.data import cifar
from byzance.errors import DataUnavailableError, InvalidParameterError

PER_BATCH = 4  # images per CIFAR-10 training batch in the fixtures (5 batches)


def write_batch(path: Path, pixels: np.ndarray, labels: dict[str, list[int]], protocol=2) -> None:
    """A batch as the real files hold it: a dict with bytes keys, uint8 data, lists of labels."""
    batch = {
        b"batch_label": b"fixture batch",
        b"data": pixels,
        b"filenames": [f"img_{i}.png".encode() for i in range(len(pixels))],
        **{key.encode(): values for key, values in labels.items()},
    }
    path.write_bytes(pickle.dumps(batch, protocol=protocol))


def pixels(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 3072), dtype=np.uint8)


@pytest.fixture
def cifar10_root(tmp_path: Path) -> Path:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for i in range(1, 6):
        labels = [(i + j) % 10 for j in range(PER_BATCH)]
        write_batch(folder / f"data_batch_{i}", pixels(PER_BATCH, i), {"labels": labels}, 2 + i % 4)
    write_batch(folder / "test_batch", pixels(3, 0), {"labels": [9, 0, 1]})
    return tmp_path


@pytest.fixture
def cifar100_root(tmp_path: Path) -> Path:
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    fine = {"fine_labels": [0, 99, 42, 7, 13, 99], "coarse_labels": [0, 19, 5, 3, 1, 19]}
    write_batch(folder / "train", pixels(6, 1), fine)
    write_batch(folder / "test", pixels(2, 2), {"fine_labels": [5, 6], "coarse_labels": [2, 3]})
    return tmp_path


@pytest.fixture(autouse=True)
def no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(cifar.DATA_DIR_ENV, raising=False)


# -- CIFAR ---------------------------------------------------------------------------------


def test_cifar10_shapes_labels_and_pixel_layout(cifar10_root: Path) -> None:
    ds = data.load("cifar10", data_dir=str(cifar10_root))
    assert ds.name == "cifar10" and ds.task == "classification" and ds.num_classes == 10
    assert ds.input_shape == (3, 32, 32) and ds.augment == "crop_flip"
    assert ds.x_train.shape == (5 * PER_BATCH, 3, 32, 32) and ds.x_test.shape == (3, 3, 32, 32)
    assert ds.x_train.dtype == ds.x_test.dtype == torch.float32
    assert ds.y_train.dtype == ds.y_test.dtype == torch.int64
    assert ds.y_train[:PER_BATCH].tolist() == [1, 2, 3, 4] and ds.y_test.tolist() == [9, 0, 1]
    # Standardized per channel with the training images' exact statistics.
    x = ds.x_train.transpose(0, 1).reshape(3, -1).double()
    assert torch.allclose(x.mean(1), torch.zeros(3, dtype=torch.float64), atol=1e-5)
    assert torch.allclose(x.std(1, correction=0), torch.ones(3, dtype=torch.float64), atol=1e-5)
    # Undo the scaling: channel planes in order, rows of 32 pixels.
    raw = np.concatenate([pixels(PER_BATCH, i) for i in range(1, 6)])
    mean, std = cifar.channel_stats(raw)
    planes = raw.reshape(-1, 3, 1024) / 255.0
    assert np.allclose(mean, planes.transpose(1, 0, 2).reshape(3, -1).mean(1))
    assert np.allclose(std, planes.transpose(1, 0, 2).reshape(3, -1).std(1))
    back = (ds.x_train.double() * torch.tensor(std).view(1, 3, 1, 1)) + torch.tensor(mean).view(
        1, 3, 1, 1
    )
    assert torch.allclose(back * 255, torch.from_numpy(raw).double().view(-1, 3, 32, 32), atol=1e-3)
    assert float(back[7, 2, 5, 9] * 255) == pytest.approx(raw[7, 2 * 1024 + 5 * 32 + 9], abs=1e-3)
    # The test set uses the training statistics.
    test_back = ds.x_test.double() * torch.tensor(std).view(1, 3, 1, 1) + torch.tensor(mean).view(
        1, 3, 1, 1
    )
    assert torch.allclose(
        test_back * 255, torch.from_numpy(pixels(3, 0)).double().view(-1, 3, 32, 32), atol=1e-3
    )


def test_cifar10_folder_itself_env_var_and_augment_off(
    cifar10_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = data.load("cifar10", data_dir=str(cifar10_root / "cifar-10-batches-py"), augment=False)
    assert a.augment is None
    monkeypatch.setenv(cifar.DATA_DIR_ENV, str(cifar10_root))
    b = data.load("cifar10", seed=5, test_fraction=0.5)  # the official split: both unused
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    # data_dir wins over the environment variable.
    monkeypatch.setenv(cifar.DATA_DIR_ENV, "/nonexistent")
    assert len(data.load("cifar10", data_dir=str(cifar10_root)).x_train) == 5 * PER_BATCH


def test_cifar100_fine_and_coarse(cifar100_root: Path) -> None:
    fine = data.load("cifar100", data_dir=str(cifar100_root))
    assert fine.num_classes == 100 and fine.y_train.tolist() == [0, 99, 42, 7, 13, 99]
    assert fine.x_train.shape == (6, 3, 32, 32) and fine.x_test.shape == (2, 3, 32, 32)
    coarse = data.load("cifar100", data_dir=str(cifar100_root), labels="coarse")
    assert coarse.num_classes == 20 and coarse.y_test.tolist() == [2, 3]
    assert torch.equal(fine.x_train, coarse.x_train)
    with pytest.raises(InvalidParameterError, match=r"'fine'.*'coarse'"):
        data.load("cifar100", data_dir=str(cifar100_root), labels="super")


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_labels_as_numpy_integers_or_array(cifar10_root: Path, protocol: int) -> None:
    folder = cifar10_root / "cifar-10-batches-py"
    labels = np.array([3, 4, 5], dtype=np.int64)
    write_batch(folder / "test_batch", pixels(3, 0), {"labels": list(labels)}, protocol)
    assert data.load("cifar10", data_dir=str(cifar10_root)).y_test.tolist() == [3, 4, 5]
    write_batch(folder / "test_batch", pixels(3, 0), {"labels": labels.astype(np.uint8)}, protocol)
    assert data.load("cifar10", data_dir=str(cifar10_root)).y_test.tolist() == [3, 4, 5]


def test_a_rewritten_file_is_read_again(cifar10_root: Path) -> None:
    assert len(data.load("cifar10", data_dir=str(cifar10_root)).x_test) == 3
    folder = cifar10_root / "cifar-10-batches-py"
    write_batch(folder / "test_batch", pixels(5, 0), {"labels": [1] * 5})
    assert data.load("cifar10", data_dir=str(cifar10_root)).y_test.tolist() == [1] * 5


def test_no_directory_says_what_to_put_where() -> None:
    with pytest.raises(DataUnavailableError) as err:
        data.load("cifar10")
    message = str(err.value)
    for part in ("cifar-10-batches-py", "data_dir", "BYZANCE_DATA_DIR", "never downloads"):
        assert part in message
    assert "\n" not in message


def test_missing_folder_names_folder_files_and_directory(tmp_path: Path) -> None:
    with pytest.raises(DataUnavailableError) as err:
        data.load("cifar100", data_dir=str(tmp_path))
    message = str(err.value)
    assert message.startswith(f"data_dir = {tmp_path}: CIFAR-100 not found")
    assert "cifar-100-python/ holding train, test" in message and "tar xzf" in message
    (tmp_path / "cifar-100-python.tar.gz").write_bytes(b"")
    with pytest.raises(DataUnavailableError, match="is there but not extracted"):
        data.load("cifar100", data_dir=str(tmp_path))
    with pytest.raises(DataUnavailableError, match="no such directory"):
        data.load("cifar10", data_dir=str(tmp_path / "nowhere"))


def test_missing_file_is_named(cifar10_root: Path) -> None:
    (cifar10_root / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DataUnavailableError, match="lacks data_batch_3 "):
        data.load("cifar10", data_dir=str(cifar10_root))


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"not a pickle at all", "is not a CIFAR python batch"),
        (pickle.dumps([1, 2, 3]), "holds a list"),
        (pickle.dumps({b"data": pixels(3, 0)}), "holds data; expected"),
        (
            pickle.dumps({b"data": np.zeros((3, 100), np.uint8), b"labels": [0, 1, 2]}),
            "uint8 \\(3, 100\\)",
        ),
        (pickle.dumps({b"data": np.zeros((3, 3072), np.float32), b"labels": [0, 1, 2]}), "float32"),
        (pickle.dumps({b"data": pixels(3, 0), b"labels": [0, 1]}), "for 3 images"),
        (pickle.dumps({b"data": pixels(3, 0), b"labels": [0, 1, 10]}), "runs from 0 to 10"),
        (pickle.dumps({b"data": pixels(3, 0), b"labels": ["a", "b", "c"]}), "b'labels' is <U1"),
    ],
)
def test_malformed_file_is_one_error_naming_it(
    cifar10_root: Path, content: bytes, expected: str
) -> None:
    path = cifar10_root / "cifar-10-batches-py" / "test_batch"
    path.write_bytes(content)
    with pytest.raises(DataUnavailableError, match=expected) as err:
        data.load("cifar10", data_dir=str(cifar10_root))
    assert str(path) in str(err.value) and "\n" not in str(err.value)


class _Evil:
    def __init__(self, call, arg) -> None:
        self.call, self.arg = call, arg

    def __reduce__(self):
        return self.call, (self.arg,)


@pytest.mark.parametrize("call", [os.system, eval, exec])
def test_a_pickle_calling_code_is_refused_unrun(cifar10_root: Path, call) -> None:
    marker = cifar10_root / "pwned"
    payload = f"open({str(marker)!r}, 'w').close()"
    arg = f"touch {marker}" if call is os.system else payload
    path = cifar10_root / "cifar-10-batches-py" / "data_batch_2"
    path.write_bytes(pickle.dumps({b"data": _Evil(call, arg), b"labels": [0]}))
    with pytest.raises(DataUnavailableError, match="refusing to load it") as err:
        data.load("cifar10", data_dir=str(cifar10_root))
    assert call.__name__ in str(err.value) and str(path) in str(err.value)
    assert not marker.exists()


# -- npz -----------------------------------------------------------------------------------


def test_npz_fixed_split_uint8_images(tmp_path: Path) -> None:
    path = tmp_path / "mine.npz"
    rng = np.random.default_rng(0)
    x_train = rng.integers(0, 256, (10, 3, 4, 4), dtype=np.uint8)
    np.savez(
        path,
        x_train=x_train,
        y_train=np.arange(10) % 3,
        x_test=rng.integers(0, 256, (4, 3, 4, 4), dtype=np.uint8),
        y_test=np.array([0, 1, 2, 2]),
    )
    ds = data.load("npz", path=str(path), augment=True)
    assert ds.x_train.shape == (10, 3, 4, 4) and ds.x_test.shape == (4, 3, 4, 4)
    assert ds.num_classes == 3 and ds.task == "classification" and ds.augment == "crop_flip"
    assert ds.y_train.dtype == torch.int64 and ds.y_test.tolist() == [0, 1, 2, 2]
    per_channel = ds.x_train.transpose(0, 1).reshape(3, -1)
    assert torch.allclose(per_channel.mean(1), torch.zeros(3), atol=1e-5)
    raw = data.load("npz", path=str(path), normalize=False)
    assert torch.allclose(raw.x_train, torch.from_numpy(x_train).float() / 255)
    assert raw.augment is None


def test_npz_x_y_split_by_seed_channels_last_and_regression(tmp_path: Path) -> None:
    path = tmp_path / "xy.npz"
    x = np.arange(20 * 5 * 5 * 2, dtype=np.float32).reshape(20, 5, 5, 2)
    np.savez(path, x=x, y=np.linspace(0, 1, 20))
    a = data.load(
        "npz", path=str(path), seed=1, test_fraction=0.25, channels_last=True, normalize=False
    )
    assert a.x_train.shape == (15, 2, 5, 5) and a.x_test.shape == (5, 2, 5, 5)
    assert a.task == "regression" and a.num_classes == 0 and a.y_train.dtype == torch.float32
    first = int(a.y_train[0] * 19 + 0.5)  # which sample came first
    assert torch.equal(a.x_train[0], torch.from_numpy(x[first]).permute(2, 0, 1))
    b = data.load("npz", path=str(path), seed=1, test_fraction=0.25, channels_last=True)
    assert torch.equal(a.y_train, b.y_train)  # same seed, same split
    c = data.load("npz", path=str(path), seed=2, test_fraction=0.25)
    assert not torch.equal(a.y_train, c.y_train)
    gray = tmp_path / "gray.npz"
    np.savez(gray, x=np.zeros((6, 3, 3), np.uint8), y=np.array([0, 1] * 3))
    assert data.load("npz", path=str(gray), test_fraction=0.5).input_shape == (1, 3, 3)


@pytest.mark.parametrize(
    ("arrays", "expected"),
    [
        ({"images": np.zeros((4, 2))}, "holds images; expected x_train"),
        ({"x": np.zeros((4, 2)), "y": np.zeros(3, int)}, "x has 4 samples but y has 3"),
        ({"x": np.array(["a"] * 4), "y": np.zeros(4, int)}, "expected numbers shaped"),
        ({"x": np.full((4, 2), np.nan), "y": np.zeros(4, int)}, "NaN or inf"),
        ({"x": np.zeros((4, 2)), "y": np.array([0, 1, -1, 0])}, "labels run from -1"),
    ],
)
def test_npz_malformed(tmp_path: Path, arrays: dict, expected: str) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataUnavailableError, match=expected) as err:
        data.load("npz", path=str(path), normalize=False)
    assert str(err.value).startswith(f"path = {path}")


def test_npz_never_unpickles_and_names_missing_things(tmp_path: Path) -> None:
    with pytest.raises(InvalidParameterError, match=r"dataset_params = \{path = "):
        data.load("npz")
    with pytest.raises(DataUnavailableError, match="no such file"):
        data.load("npz", path=str(tmp_path / "none.npz"))
    objects = tmp_path / "objects.npz"
    np.savez(objects, x=np.array([{"a": 1}] * 4, dtype=object), y=np.zeros(4, int))
    with pytest.raises(DataUnavailableError, match="Python objects"):
        data.load("npz", path=str(objects))
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"PK nonsense")
    with pytest.raises(DataUnavailableError, match=r"not a \.npz file"):
        data.load("npz", path=str(garbage))
    flat = tmp_path / "flat.npz"
    np.savez(flat, x=np.zeros((4, 2)), y=np.zeros(4, int))
    with pytest.raises(InvalidParameterError, match="augment: the crop and flip need images"):
        data.load("npz", path=str(flat), augment=True)


# -- user data sets ------------------------------------------------------------------------


@pytest.fixture
def scratch_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registrations made by a test vanish after it."""
    monkeypatch.setattr(data.datasets, "_items", dict(data.datasets._items))


def test_register_a_function_returning_tensors(scratch_registry: None) -> None:
    @data.register("blobs")
    def blobs(*, seed: int, samples: int = 100, classes: int = 3):
        """Gaussian blobs."""
        g = torch.Generator().manual_seed(seed)
        y = torch.randint(0, classes, (samples,), generator=g)
        return torch.randn(samples, 2, generator=g) + 3 * y[:, None], y

    assert "blobs" in data.names() and data.get("blobs").description == "Gaussian blobs."
    assert data.get("blobs").params == {"samples": 100, "classes": 3}
    ds = data.load("blobs", samples=50, seed=1, test_fraction=0.2)
    assert ds.x_train.shape == (40, 2) and ds.num_classes == 3 and ds.name == "blobs"
    again = data.load("blobs", samples=50, seed=1, test_fraction=0.2)
    assert torch.equal(ds.x_test, again.x_test)
    with pytest.raises(InvalidParameterError, match="no parameter 'sample'"):
        data.load("blobs", sample=3)

    @data.register("fixed", "a fixed split from numpy, regression")
    def fixed():  # no seed, no test_fraction: not passed
        return np.ones((4, 3)), np.zeros(4), np.ones((2, 3)), np.zeros(2)

    assert data.load("fixed").task == "regression"

    @data.register("bad")
    def bad():
        return torch.zeros(3)

    with pytest.raises(InvalidParameterError, match="return \\(x, y\\)"):
        data.load("bad")


def test_register_a_builder_returning_a_dataset(scratch_registry: None) -> None:
    @data.register("copy", "digits under another name")
    def copy(*, seed: int, test_fraction: float):
        return data.load("digits", seed=seed, test_fraction=test_fraction)

    assert data.load("copy").name == "copy"
    with pytest.raises(ValueError, match="already registered"):
        data.register("copy")(copy)
