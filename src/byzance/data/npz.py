"""Data sets given as arrays: :func:`from_arrays`, and ``npz`` for a ``.npz`` file of your own.

``dataset = "npz"`` with ``dataset_params = {path = "my_data.npz"}`` reads a
file written by ``numpy.savez`` (or ``savez_compressed``) holding either

* ``x_train``, ``y_train``, ``x_test``, ``y_test``: the split is kept as is
  (``seed`` and ``test_fraction`` unused); or
* ``x`` and ``y``: ``test_fraction`` of the samples, drawn with ``seed``, form
  the test set.

``x`` is (N, C, H, W) images, (N, H, W) single-channel images (a channel axis
is added), or (N, D) features; ``channels_last = true`` reads (N, H, W, C).
uint8 values are scaled to [0, 1]. ``normalize = true`` (the default)
standardizes each channel (each feature for (N, D)) with the training set's
mean and standard deviation. Integer ``y`` are class labels 0..K-1, floating
``y`` regression targets. ``augment = true`` applies the standard random crop
and flip (:mod:`byzance.data.augment`) to training batches of images.
The file is read with ``allow_pickle=False``: it can hold numbers only, never code.

    >>> import numpy as np, tempfile, os
    >>> from byzance import data
    >>> path = os.path.join(tempfile.mkdtemp(), "mine.npz")
    >>> rng = np.random.default_rng(0)
    >>> np.savez(path, x=rng.integers(0, 256, (50, 3, 8, 8), dtype=np.uint8),
    ...          y=rng.integers(0, 4, 50))
    >>> data.load("npz", path=path, test_fraction=0.2)
    Dataset('npz', classification, train=40, test=10, input_shape=(3, 8, 8), num_classes=4)
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from byzance.data.datasets import Dataset, register
from byzance.errors import DataUnavailableError, InvalidParameterError

__all__ = ["from_arrays", "standardize"]

_SPLIT = ("x_train", "y_train", "x_test", "y_test")


def _tensor(a: Any) -> torch.Tensor:
    return a.detach().cpu() if isinstance(a, torch.Tensor) else torch.as_tensor(np.asarray(a))


def from_arrays(
    name: str,
    x_train: Any,
    y_train: Any,
    x_test: Any,
    y_test: Any,
    *,
    num_classes: int | None = None,
    augment: str | None = None,
) -> Dataset:
    """A validated :class:`Dataset` from tensors or numpy arrays, taken as they are.

    ``x_*`` (N, *input_shape) of any real dtype become float32 CPU tensors (no scaling);
    ``y_*`` (N,) integer labels make a classification task (int64, ``num_classes``
    defaulting to the largest label + 1), floating ones a regression (float32).
    Raises :class:`InvalidParameterError` naming what is wrong.
    """
    xs = {"train": _tensor(x_train), "test": _tensor(x_test)}
    ys = {"train": _tensor(y_train), "test": _tensor(y_test)}
    for part in ("train", "test"):
        x, y = xs[part], ys[part]
        if x.ndim < 2 or y.ndim != 1 or len(x) != len(y) or len(x) == 0:
            raise InvalidParameterError(
                f"data set {name!r}: x_{part} {tuple(x.shape)} and y_{part} {tuple(y.shape)} must "
                "be (N, *input_shape) and (N,) with the same N >= 1."
            )
        if x.dtype.is_complex or x.dtype == torch.bool or y.dtype.is_complex:
            raise InvalidParameterError(f"data set {name!r}: x_{part} and y_{part} must be real.")
        xs[part] = x = x.to(torch.float32)
        if not torch.isfinite(x).all():
            raise InvalidParameterError(f"data set {name!r}: x_{part} holds NaN or inf.")
    if xs["train"].shape[1:] != xs["test"].shape[1:]:
        raise InvalidParameterError(
            f"data set {name!r}: train samples {tuple(xs['train'].shape[1:])} and test samples "
            f"{tuple(xs['test'].shape[1:])} differ in shape."
        )
    classify = not (ys["train"].is_floating_point() or ys["test"].is_floating_point())
    if classify:
        y = torch.cat([ys["train"], ys["test"]]).to(torch.int64)
        classes = int(y.max()) + 1 if num_classes is None else num_classes
        if int(y.min()) < 0 or int(y.max()) >= classes or classes < 2:
            raise InvalidParameterError(
                f"data set {name!r}: labels run from {int(y.min())} to {int(y.max())}; a "
                f"classification needs labels 0..num_classes-1 and at least 2 classes."
            )
        ys = {k: v.to(torch.int64) for k, v in ys.items()}
    else:
        classes = 0
        ys = {k: v.to(torch.float32) for k, v in ys.items()}
        if not all(torch.isfinite(v).all() for v in ys.values()):
            raise InvalidParameterError(f"data set {name!r}: regression targets hold NaN or inf.")
    return Dataset(
        name=name,
        x_train=xs["train"],
        y_train=ys["train"],
        x_test=xs["test"],
        y_test=ys["test"],
        num_classes=classes,
        input_shape=tuple(xs["train"].shape[1:]),
        task="classification" if classify else "regression",
        augment=augment,
    )


def standardize(x_train: torch.Tensor, x_test: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Standardize float tensors (N, C, ...) per index of dim 1 with the training set's statistics.

    Channels (or features) of zero spread are only centred. Returns new tensors.
    """
    dims = [0, *range(2, x_train.ndim)]
    mean = x_train.double().mean(dim=dims, keepdim=True)
    std = x_train.double().std(dim=dims, keepdim=True, correction=0)
    std = torch.where(std > 0, std, torch.ones_like(std))
    mean, std = mean.squeeze(0).float(), std.squeeze(0).float()
    return (x_train - mean) / std, (x_test - mean) / std


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise DataUnavailableError(
            f"path = {path}: no such file. Write your arrays with numpy.savez(path, x_train=..., "
            "y_train=..., x_test=..., y_test=...) (or x=..., y=...) and set "
            'dataset_params = {path = "..."}.'
        )
    with path.open("rb") as fh:
        magic = fh.read(4)
    if magic != b"PK\x03\x04":  # a zip archive, as numpy.savez writes
        raise DataUnavailableError(
            f"path = {path}: not a .npz file written by numpy.savez (no zip header)."
        )
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except ValueError as err:  # object arrays need pickle: refused
        raise DataUnavailableError(
            f"path = {path}: the file holds an array of Python objects ({err}); save numeric arrays only."
        ) from None
    except (zipfile.BadZipFile, OSError, EOFError, AttributeError) as err:
        raise DataUnavailableError(
            f"path = {path}: not a .npz file written by numpy.savez ({type(err).__name__}: {err})."
        ) from None


@register("npz", "your own arrays in a .npz file: x_train, y_train, x_test, y_test (or x, y)")
def _npz(
    *,
    seed: int,
    test_fraction: float,
    path: str | None = None,
    normalize: bool = True,
    channels_last: bool = False,
    augment: bool = False,
) -> Dataset:
    if path is None:
        raise InvalidParameterError(
            'path: the npz data set reads your file: set dataset_params = {path = "my_data.npz"} '
            "(arrays x_train, y_train, x_test, y_test, or x and y)."
        )
    file = Path(os.path.expanduser(str(path)))
    arrays = _read_npz(file)
    if all(key in arrays for key in _SPLIT):
        x_tr, y_tr, x_te, y_te = (arrays[key] for key in _SPLIT)
    elif "x" in arrays and "y" in arrays:
        x, y = arrays["x"], arrays["y"]
        if len(x) != len(y):
            raise DataUnavailableError(f"path = {file}: x has {len(x)} samples but y has {len(y)}.")
        n_test = round(len(x) * test_fraction)
        if not 1 <= n_test <= len(x) - 1:
            raise InvalidParameterError(
                f"test_fraction={test_fraction} of {len(x)} samples in {file} leaves {n_test} "
                "test samples; both sets need at least one."
            )
        perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed)).numpy()
        train, test = perm[: len(x) - n_test], perm[len(x) - n_test :]
        x_tr, y_tr, x_te, y_te = x[train], y[train], x[test], y[test]
    else:
        raise DataUnavailableError(
            f"path = {file}: the file holds {', '.join(sorted(arrays)) or 'no arrays'}; expected x_train, "
            "y_train, x_test, y_test (a fixed split) or x and y (split by test_fraction)."
        )
    xs = []
    for part, x in (("x_train", x_tr), ("x_test", x_te)):
        if x.dtype.kind not in "uif" or x.ndim < 2:
            raise DataUnavailableError(
                f"path = {file}: {part} is {x.dtype} {x.shape}; expected numbers shaped (N, C, H, W), "
                "(N, H, W) or (N, D)."
            )
        t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        if x.dtype == np.uint8:
            t /= 255.0
        if channels_last and t.ndim >= 3:
            t = t.movedim(-1, 1).contiguous()
        xs.append(t.unsqueeze(1) if t.ndim == 3 else t)
    x_train, x_test = xs
    if normalize and x_train.shape[1:] == x_test.shape[1:] and len(x_train) > 0:
        x_train, x_test = standardize(x_train, x_test)
    if augment and x_train.ndim != 4:
        raise InvalidParameterError(
            f"augment: the crop and flip need images (N, C, H, W); {file} holds "
            f"samples of shape {tuple(x_train.shape[1:])}."
        )
    try:
        return from_arrays(
            "npz", x_train, y_tr, x_test, y_te, augment="crop_flip" if augment else None
        )
    except InvalidParameterError as err:
        raise DataUnavailableError(f"path = {file}: {err}") from None
