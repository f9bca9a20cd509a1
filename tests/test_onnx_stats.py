"""MACs, operators and weights counted from an ONNX graph."""
import torch

from mcgraph.onnx_stats import onnx_macs, op_counts


def test_onnx_macs_counts_convolutions_by_hand(tmp_path):
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv2d(4, 8, 1, stride=2, groups=2), torch.nn.Flatten(),
                              torch.nn.Linear(8 * 4 * 4, 10)).eval()
    path = tmp_path / "n.onnx"
    torch.onnx.export(net, (torch.randn(1, 1, 8, 8),), str(path), dynamo=True,
                      input_names=["input"], dynamic_shapes=({0: torch.export.Dim("batch")},))
    # conv1: 4*8*8 outputs x 1*9; conv2: 8*4*4 outputs x (4/2)*1; linear: 10 x 128
    assert onnx_macs(path) == 4 * 64 * 9 + 8 * 16 * 2 + 10 * 128
    assert onnx_macs(path, batch=3) == 3 * (4 * 64 * 9 + 8 * 16 * 2 + 10 * 128)
    assert op_counts(path)["Conv"] == 2 and op_counts(path)["Gemm"] == 1
