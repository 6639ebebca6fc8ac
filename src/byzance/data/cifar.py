"""CIFAR-10 and CIFAR-100 from the folders users already have (never downloaded).

``cifar10`` reads the folder ``cifar-10-batches-py`` (``data_batch_1`` ..
``data_batch_5`` and ``test_batch``), ``cifar100`` the folder ``cifar-100-python``
(``train`` and ``test``): the "python version" archives of
https://www.cs.toronto.edu/~kriz/cifar.html, extracted. Each file is a pickled
dict: ``b"data"`` uint8 (N, 3072) (the red, green then blue 32x32 planes of each
image) and ``b"labels"`` (CIFAR-10) or ``b"fine_labels"`` / ``b"coarse_labels"``
(CIFAR-100), lists of N integers.

The directory is ``dataset_params = {data_dir = "..."}``, else the environment
variable ``BYZANCE_DATA_DIR``; it may be the folder itself or the folder that
holds it. The official test batch is the test set (``seed`` and
``test_fraction`` are unused). Images become float32 (N, 3, 32, 32): pixels
scaled to [0, 1], then each channel standardized with the mean and standard
deviation computed exactly over the training images read (on the full
official sets these are :data:`CIFAR10_MEAN`/:data:`CIFAR10_STD` and
:data:`CIFAR100_MEAN`/:data:`CIFAR100_STD`). Training batches get the standard
random crop (padding 4) and horizontal flip (``augment = false`` turns it off).

The files are untrusted: they are unpickled by an unpickler that builds only
dicts, lists, bytes, strings, numbers and numpy arrays; any other global
(``os.system`` ...) stops the load before it is called. Labels may also be
numpy integers or an integer array (files re-pickled from numpy). A missing folder or
file, or a file of the wrong format, raises one
:class:`byzance.errors.DataUnavailableError` naming the file and what was expected.

    >>> from byzance import data
    >>> ds = data.load("cifar10", data_dir="~/data")          # doctest: +SKIP
    >>> ds.x_train.shape, ds.x_test.shape, ds.augment           # doctest: +SKIP
    (torch.Size([50000, 3, 32, 32]), torch.Size([10000, 3, 32, 32]), 'crop_flip')
"""

from __future__ import annotations

import codecs
import functools
import io
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from byzance.data.datasets import Dataset, register
from byzance.errors import DataUnavailableError, InvalidParameterError

try:  # numpy >= 2
    from numpy._core import multiarray as _multiarray
    from numpy._core import numeric as _numeric
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core import multiarray as _multiarray  # type: ignore[no-redef]
    from numpy.core import numeric as _numeric  # type: ignore[no-redef]

__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CIFAR100_MEAN",
    "CIFAR100_STD",
    "DATA_DIR_ENV",
    "channel_stats",
    "cifar_arrays",
    "cifar_folder",
    "read_batch",
]

DATA_DIR_ENV = "BYZANCE_DATA_DIR"
"""Environment variable naming the directory that holds the CIFAR folders."""

CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
"""Per-channel statistics of CIFAR-10's 50,000 training images (pixels in [0, 1])."""
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
"""Per-channel statistics of CIFAR-100's 50,000 training images (pixels in [0, 1])."""

# kind: (title, folder, archive, training files, test files, label key -> number of classes)
_KINDS: dict[str, tuple[str, str, str, tuple[str, ...], tuple[str, ...], dict[str, int]]] = {
    "cifar10": (
        "CIFAR-10",
        "cifar-10-batches-py",
        "cifar-10-python.tar.gz",
        tuple(f"data_batch_{i}" for i in range(1, 6)),
        ("test_batch",),
        {"labels": 10},
    ),
    "cifar100": (
        "CIFAR-100",
        "cifar-100-python",
        "cifar-100-python.tar.gz",
        ("train",),
        ("test",),
        {"fine_labels": 100, "coarse_labels": 20},
    ),
}

# The only globals a CIFAR pickle may name: numpy's array, scalar and dtype reconstruction, under
# its numpy 1 and numpy 2 module names, and the codec Python 3 uses to pickle bytes.
_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): _multiarray._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _multiarray._reconstruct,
    ("numpy.core.multiarray", "scalar"): _multiarray.scalar,  # labels as numpy integers
    ("numpy._core.multiarray", "scalar"): _multiarray.scalar,
    ("numpy.core.numeric", "_frombuffer"): _numeric._frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _numeric._frombuffer,
    ("_codecs", "encode"): codecs.encode,
}


class _RefusedGlobalError(Exception):
    """A pickle named a global outside the allowed few."""


class _SafeUnpickler(pickle.Unpickler):
    """Builds containers, bytes, strings, numbers and numpy arrays; refuses every other global."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise _RefusedGlobalError(f"{module}.{name}") from None


def read_batch(path: str | os.PathLike[str], label_key: str, num_classes: int):
    """One CIFAR python batch: pixels uint8 (N, 3072) and labels int64 (N,) in 0..num_classes-1.

    Raises :class:`DataUnavailableError` naming ``path`` when the file is not
    such a batch (or refers to anything but numpy arrays).
    """
    path = Path(path)
    expected = (
        f"a pickled dict with b'data' (uint8, N x 3072) and b'{label_key}' "
        f"(N integers 0..{num_classes - 1})"
    )
    raw = path.read_bytes()
    try:
        batch = _SafeUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except _RefusedGlobalError as err:
        raise DataUnavailableError(
            f"{path}: the pickle calls {err}, which a CIFAR batch never holds (only dicts, "
            "lists, bytes and numpy arrays); refusing to load it. Replace the file with the "
            "original from https://www.cs.toronto.edu/~kriz/cifar.html."
        ) from None
    except Exception as err:  # anything a corrupt or foreign file raises while unpickling
        raise DataUnavailableError(
            f"{path} is not a CIFAR python batch ({type(err).__name__}: {err}); expected {expected}."
        ) from None
    if not isinstance(batch, dict):
        raise DataUnavailableError(f"{path} holds a {type(batch).__name__}; expected {expected}.")
    batch = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
    pixels, labels = batch.get("data"), batch.get(label_key)
    if pixels is None or labels is None:
        keys = ", ".join(sorted(map(str, batch))) or "nothing"
        raise DataUnavailableError(f"{path} holds {keys}; expected {expected}.")
    if not (
        isinstance(pixels, np.ndarray)
        and pixels.dtype == np.uint8
        and pixels.ndim == 2
        and pixels.shape[1] == 3072
        and len(pixels) > 0
    ):
        what = f"{pixels.dtype} {pixels.shape}" if isinstance(pixels, np.ndarray) else "a "
        what += "" if isinstance(pixels, np.ndarray) else type(pixels).__name__
        raise DataUnavailableError(f"{path}: b'data' is {what}; expected {expected}.")
    try:
        labels = np.asarray(labels)
    except Exception:  # ragged lists and the like
        labels = np.asarray([None])
    if labels.ndim != 1 or labels.dtype.kind not in "iu" or len(labels) != len(pixels):
        raise DataUnavailableError(
            f"{path}: b'{label_key}' is {labels.dtype} {labels.shape} for {len(pixels)} images; "
            f"expected {expected}."
        )
    if labels.min() < 0 or labels.max() >= num_classes:
        raise DataUnavailableError(
            f"{path}: b'{label_key}' runs from {labels.min()} to {labels.max()}; "
            f"expected {expected}."
        )
    return pixels, labels.astype(np.int64)


def cifar_folder(kind: str, data_dir: str | os.PathLike[str] | None = None) -> Path:
    """The folder holding ``kind``'s files (``kind`` is "cifar10" or "cifar100").

    ``data_dir`` (else ``$BYZANCE_DATA_DIR``) is that folder or its parent.
    Raises :class:`DataUnavailableError` saying what to put where.
    """
    title, folder, archive, train, test, _ = _KINDS[kind]
    files = ", ".join((*train, *test))
    how = (
        f"byzance never downloads data: get the python version ({archive}) from "
        f"https://www.cs.toronto.edu/~kriz/cifar.html, extract it (tar xzf {archive}), and set "
        f'dataset_params = {{data_dir = "DIR"}} or ${DATA_DIR_ENV}=DIR, DIR being the '
        f"directory that holds {folder}/ (or {folder}/ itself)."
    )
    source = "data_dir"
    if data_dir is None:
        data_dir, source = os.environ.get(DATA_DIR_ENV) or None, f"${DATA_DIR_ENV}"
    if data_dir is None:
        raise DataUnavailableError(f"{title}: no directory given. {how}")
    root = Path(os.path.expanduser(str(data_dir)))
    for candidate in (root / folder, root):
        if any((candidate / name).is_file() for name in (*train, *test)):
            missing = [name for name in (*train, *test) if not (candidate / name).is_file()]
            if missing:
                raise DataUnavailableError(
                    f"{source} = {root}: {title}: {candidate} lacks {', '.join(missing)} (it must "
                    f"hold {files}). {how}"
                )
            return candidate
    found = "" if root.is_dir() else " (no such directory)"
    if (root / archive).is_file():
        found = f"; {archive} is there but not extracted: run tar xzf {archive} in {root}"
    elif kind == "cifar10" and (root / "cifar-10-batches-bin").is_dir():
        found = "; cifar-10-batches-bin/ there is the binary version, byzance reads the python one"
    raise DataUnavailableError(
        f"{source} = {root}: {title} not found: no {folder}/ holding {files} there{found}. {how}"
    )


@functools.lru_cache(maxsize=2)
def _read_cached(
    files: tuple[tuple[str, int, int], ...], label_key: str, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """The batches ``files`` ((path, mtime_ns, size) each) concatenated, as read-only arrays."""
    parts = [read_batch(path, label_key, num_classes) for path, _, _ in files]
    pixels = np.concatenate([p for p, _ in parts])
    labels = np.concatenate([y for _, y in parts])
    pixels.flags.writeable = labels.flags.writeable = False  # cached: never mutate
    return pixels, labels


def cifar_arrays(
    kind: str, data_dir: str | os.PathLike[str] | None = None, label_key: str | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The official split of ``kind``: pixels uint8 (N, 3072) and labels int64 (N,), train
    then test (read-only arrays, cached per file version: validation and training read once).

    ``label_key``: "labels" for CIFAR-10; "fine_labels" (default) or
    "coarse_labels" for CIFAR-100.
    """
    _, _, _, train, test, keys = _KINDS[kind]
    label_key = label_key or next(iter(keys))
    folder = cifar_folder(kind, data_dir)

    def stamp(names: tuple[str, ...]) -> tuple[tuple[str, int, int], ...]:
        stats = [(folder / name, (folder / name).stat()) for name in names]
        return tuple((str(p), s.st_mtime_ns, s.st_size) for p, s in stats)

    x_train, y_train = _read_cached(stamp(train), label_key, keys[label_key])
    x_test, y_test = _read_cached(stamp(test), label_key, keys[label_key])
    return x_train, y_train, x_test, y_test


def channel_stats(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact per-channel mean and standard deviation of uint8 pixels (N, 3072), scaled to [0, 1].

    Returns two float64 arrays (3,); computed from each channel's histogram
    (no float copy of the images).
    """
    planes = pixels.reshape(len(pixels), 3, -1)
    values = np.arange(256, dtype=np.float64) / 255.0
    mean, std = np.empty(3), np.empty(3)
    for c in range(3):  # three channels, not a loop over images
        counts = np.bincount(planes[:, c].ravel(), minlength=256).astype(np.float64)
        mean[c] = counts @ values / counts.sum()
        std[c] = np.sqrt(counts @ (values - mean[c]) ** 2 / counts.sum())
    return mean, np.where(std > 0, std, 1.0)


def _images(pixels: np.ndarray, mean: np.ndarray, std: np.ndarray) -> torch.Tensor:
    """uint8 (N, 3072) -> float32 (N, 3, 32, 32): (p / 255 - mean[c]) / std[c]."""
    x = torch.from_numpy(pixels.astype(np.float32)).reshape(-1, 3, 32, 32).div_(255.0)
    m = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return x.sub_(m).div_(s)


def _dataset(kind: str, data_dir: str | None, label_key: str | None, augment: bool) -> Dataset:
    if data_dir is not None and not isinstance(data_dir, str | os.PathLike):
        raise InvalidParameterError(f"data_dir must be a path, got {data_dir!r}.")
    if not isinstance(augment, bool):
        raise InvalidParameterError(f"augment must be true or false, got {augment!r}.")
    x_tr, y_tr, x_te, y_te = cifar_arrays(kind, data_dir, label_key)
    mean, std = channel_stats(x_tr)
    return Dataset(
        name=kind,
        x_train=_images(x_tr, mean, std),
        y_train=torch.from_numpy(y_tr.copy()),
        x_test=_images(x_te, mean, std),
        y_test=torch.from_numpy(y_te.copy()),
        num_classes=_KINDS[kind][5][label_key or next(iter(_KINDS[kind][5]))],
        input_shape=(3, 32, 32),
        task="classification",
        augment="crop_flip" if augment else None,
    )


@register(
    "cifar10", "CIFAR-10, 50,000 + 10,000 (3x32x32, 10 classes), from your cifar-10-batches-py"
)
def _cifar10(*, data_dir: str | None = None, augment: bool = True) -> Dataset:
    return _dataset("cifar10", data_dir, "labels", augment)


@register(
    "cifar100",
    "CIFAR-100, 50,000 + 10,000 (3x32x32, 100 or 20 classes), from your cifar-100-python",
)
def _cifar100(
    *, data_dir: str | None = None, labels: str = "fine", augment: bool = True
) -> Dataset:
    if labels not in ("fine", "coarse"):
        raise InvalidParameterError(
            f"labels must be 'fine' (100 classes) or 'coarse' (20 superclasses), got {labels!r}."
        )
    return _dataset("cifar100", data_dir, f"{labels}_labels", augment)
