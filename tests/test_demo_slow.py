"""The issue's figure, end to end on the real data (about 4 minutes): `make test-slow`."""
import os

import pytest

from mcgraph.demo import DemoConfig, run_demo
from mcgraph.train.data import FASHION_MNIST_DIR

pytestmark = pytest.mark.slow


@pytest.mark.skipif(not os.path.exists(os.path.join(FASHION_MNIST_DIR, "train-images-idx3-ubyte.gz")),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_demo_reaches_89_percent_in_onnxruntime_within_5_minutes(tmp_path):
    res = run_demo(DemoConfig(out=str(tmp_path / "demo"), progress=False), log=lambda s: None)
    assert res["test_acc_onnxruntime"] >= 89.0
    assert abs(res["test_acc_onnxruntime"] - res["test_acc_pytorch"]) < 0.1
    assert res["params_after"] < res["params_before"] and res["removed"]
    assert res["latency_ms_b64_compiled"] < res["latency_ms_b64_original"]
    assert res["total_seconds"] < 300
