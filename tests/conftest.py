import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))  # for `import helpers`
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def masked_resnet20():
    """Factory: a masked CIFAR ResNet-20 for 1x16x16 inputs (small and fast); the function
    helpers.masked_resnet20, for tests that build one outside a test function."""
    import helpers
    return helpers.masked_resnet20


@pytest.fixture(scope="module")
def synthetic():
    """The synthetic data set (mcgraph.train.data), loaded once per test module."""
    from mcgraph.train.data import load_data
    return load_data("synthetic")
