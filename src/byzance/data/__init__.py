"""Data: data sets shipped inside installed packages, synthetic tasks, partitioning.

    >>> from byzance import data
    >>> data.names()
    ['digits', 'fashion_mnist', 'mnist5k', 'synthetic_linear', 'synthetic_logistic']
    >>> ds = data.load("mnist5k", seed=0)            # Dataset: x_train (4000, 1, 28, 28), ...
    >>> shards = data.partition(ds.y_train, 10, "dirichlet", alpha=0.3, seed=0)

No file is downloaded at run time. ``load(name, *, seed, test_fraction, **params)``
returns a :class:`Dataset`; ``partition(labels, num_workers, scheme)`` returns
one int64 index tensor per worker (schemes ``iid``, ``dirichlet``, ``extreme``).
"""

from byzance.data.datasets import Dataset, DatasetSpec, datasets, get, load, names
from byzance.data.partition import SCHEMES, partition

__all__ = ["SCHEMES", "Dataset", "DatasetSpec", "datasets", "get", "load", "names", "partition"]
