import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))  # for `import helpers`
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def masked_resnet20():
    """Factory: a masked CIFAR ResNet-20 for 1x16x16 inputs (small and fast)."""
    import mcgraph

    def make(fan_in=1, init="random", seed=0, num_classes=10):
        return mcgraph.rewrite("resnet20", fan_in=fan_in, init=init, seed=seed, in_channels=1,
                               num_classes=num_classes, input_size=(16, 16))
    return make
