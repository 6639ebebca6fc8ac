"""Data: data sets shipped inside installed packages, CIFAR and your own, partitioning, augmentation.

    >>> from byzance import data
    >>> data.names()
    ['cifar10', 'cifar100', 'digits', 'fashion_mnist', 'mnist5k', 'npz', 'synthetic_linear', 'synthetic_logistic']
    >>> ds = data.load("mnist5k", seed=0)            # Dataset: x_train (4000, 1, 28, 28), ...
    >>> shards = data.partition(ds.y_train, 10, "dirichlet", alpha=0.3, seed=0)

No file is downloaded at run time. ``load(name, *, seed, test_fraction, **params)``
returns a :class:`Dataset`; ``partition(labels, num_workers, scheme)`` returns
one int64 index tensor per worker (schemes ``iid``, ``dirichlet``, ``extreme``).
``cifar10``/``cifar100`` read your extracted folders (``data_dir`` or
``$BYZANCE_DATA_DIR``, :mod:`byzance.data.cifar`), ``npz`` your own arrays
(:mod:`byzance.data.npz`); ``register(name)`` adds a data set of your own, a
function returning tensors (example in :mod:`byzance.data.datasets`).
``augment.get(ds.augment)`` is the training-batch augmentation a data set asks
for (:mod:`byzance.data.augment`).
"""

from byzance.data import augment, cifar, npz  # noqa: F401  (cifar and npz register themselves)
from byzance.data.datasets import Dataset, DatasetSpec, datasets, get, load, names, register
from byzance.data.npz import from_arrays
from byzance.data.partition import SCHEMES, partition

__all__ = [
    "SCHEMES",
    "Dataset",
    "DatasetSpec",
    "augment",
    "datasets",
    "from_arrays",
    "get",
    "load",
    "names",
    "partition",
    "register",
]
