"""Shared pieces of the real-training tests: the Fashion-MNIST skip marker and one torch thread."""

from __future__ import annotations

import pytest
import torch

from evaluators.datasets import DatasetError, fashion_mnist_dir


def has_fashion_mnist() -> bool:
    try:
        fashion_mnist_dir()
        return True
    except DatasetError:
        return False


needs_fmnist = pytest.mark.skipif(not has_fashion_mnist(), reason="Fashion-MNIST not installed: run `make setup` or `apt-get install dataset-fashion-mnist`")


@pytest.fixture(autouse=True)
def one_thread():
    """Tests share two cores with other work; one thread each keeps timings stable."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
