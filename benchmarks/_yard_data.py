"""Offline stand-ins for the datasets Optuna's Keras/TensorFlow examples download.

``benchmarks/yardsticks.py`` gives both sides of an example (plain Optuna and the front
door) the same stand-in in place of ``keras.datasets.mnist``: nothing downloads here. Same
API, shapes and dtypes as MNIST's ``load_data()`` (60000 and 10000 28x28 ``uint8`` images,
``uint8`` labels 0-9), made from scikit-learn's bundled 8x8 digits (upscaled 3x and padded);
the images repeat, so scores are not MNIST's.

    >>> (x, y), (xt, yt) = mnist.load_data()
    >>> x.shape, x.dtype, y.shape, xt.shape, int(y.max())
    ((60000, 28, 28), dtype('uint8'), (60000,), (10000, 28, 28), 9)
"""

from __future__ import annotations

import types

import numpy as np


def _load_mnist(path: str = "mnist.npz"):
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.kron((digits.images / 16.0 * 255).astype(np.uint8), np.ones((3, 3), np.uint8))
    images = np.pad(images, ((0, 0), (2, 2), (2, 2)))
    labels = digits.target.astype(np.uint8)
    split = 1400  # the first 1400 digits for training, the other 397 for testing
    train = np.arange(60000) % split
    test = split + np.arange(10000) % (len(labels) - split)
    return (images[train], labels[train]), (images[test], labels[test])


mnist = types.SimpleNamespace(load_data=_load_mnist)
