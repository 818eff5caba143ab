"""Datasets that work offline (scikit-learn's digits, the generated MNIST-1D, MNIST-family IDX files
from a directory the user names) and the one seeded training loop every area trains with."""

from dnninfer.data.datasets import DATASETS, Split, load_dataset, load_digits, load_mnist1d, load_mnist_family
from dnninfer.data.idx import read_idx, write_idx
from dnninfer.data.training import FitResult, LossFn, fit

__all__ = ["DATASETS", "FitResult", "LossFn", "Split", "fit", "load_dataset", "load_digits", "load_mnist1d",
           "load_mnist_family", "read_idx", "write_idx"]
