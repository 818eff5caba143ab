"""Datasets that work offline: scikit-learn's digits (ships with the package) and MNIST-family
IDX files from a directory the user names (MNIST, Fashion-MNIST, KMNIST share the format)."""

from dnninfer.data.datasets import Split, load_dataset, load_digits, load_mnist_family
from dnninfer.data.idx import read_idx, write_idx

__all__ = ["Split", "load_dataset", "load_digits", "load_mnist_family", "read_idx", "write_idx"]
