"""The demo end to end on the real data (a few minutes): `make test-slow`."""
import os

import pytest

from mcgraph.demo import DemoConfig, run_demo
from mcgraph.train.data import FASHION_MNIST_DIR

pytestmark = pytest.mark.slow


@pytest.mark.skipif(not os.path.exists(os.path.join(FASHION_MNIST_DIR, "train-images-idx3-ubyte.gz")),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_demo_matches_table1_and_compares_itself_with_fixed_prev(tmp_path):
    res = run_demo(DemoConfig(out=str(tmp_path / "demo"), progress=False), log=lambda s: None)
    # Table 1's learned K=1 reached 80-82% with this budget (docs/results.md)
    assert res["test_acc_onnxruntime"] >= 79.0
    assert abs(res["test_acc_onnxruntime"] - res["test_acc_pytorch"]) < 0.1
    assert res["params_after"] < res["params_before"] and res["removed"]
    assert res["latency_ms_b64_compiled"] < res["latency_ms_b64_original"]
    b = res["baseline"]
    assert b["found"] and b["seeds"] >= 2
    assert abs(b["gain_points"] - (res["test_acc_onnxruntime"] - b["test_acc_mean"])) < 1e-9
    assert res["total_seconds"] < 300
