"""Shared numerical asserts (DESIGN §4: max abs diff under 1e-4 relative to the output scale)."""
from __future__ import annotations

import numpy as np
import torch


def max_abs_diff(a, b) -> float:
    a = a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
    b = b.detach().cpu().numpy() if isinstance(b, torch.Tensor) else np.asarray(b)
    assert a.shape == b.shape, f"shapes differ: {a.shape} vs {b.shape}"
    return float(np.abs(a - b).max())


def assert_same_outputs(ref, got, rel: float = 1e-4) -> None:
    """Outputs agree within ``rel`` times the output scale (at least 1)."""
    ref_np = ref.detach().cpu().numpy() if isinstance(ref, torch.Tensor) else np.asarray(ref)
    scale = max(1.0, float(np.abs(ref_np).max()))
    diff = max_abs_diff(ref, got)
    assert diff <= rel * scale, f"max |diff| {diff:.3g} > {rel * scale:.3g} (scale {scale:.3g})"


def eval_outputs(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(x)


def rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def adapter_convs(model) -> tuple[list, list]:
    """The Conv nodes of an ONNX model that conv_adapters wrote: identity adapters (1x1, weight
    the identity padded with zero rows) and mean scales (depthwise 1x1, one constant weight)."""
    import onnx
    model = model if isinstance(model, onnx.ModelProto) else onnx.load(str(model))
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    adapters, scales = [], []
    for n in model.graph.node:
        if n.op_type != "Conv" or n.input[1] not in inits:
            continue
        w = inits[n.input[1]]
        group = next((a.i for a in n.attribute if a.name == "group"), 1)
        if w.shape[2:] == (1, 1) and group == 1 and np.array_equal(
                w[:, :, 0, 0], np.eye(w.shape[0], w.shape[1], dtype=w.dtype)):
            adapters.append(n)
        elif w.shape[1:] == (1, 1, 1) and group == w.shape[0] and len(np.unique(w)) == 1:
            scales.append((n, float(w.flat[0])))
    return adapters, scales


def model_convs(path) -> int:
    """Conv nodes of an ONNX file that are the network's own (not conv_adapters' 1x1 convs)."""
    import onnx
    model = onnx.load(str(path))
    adapters, scales = adapter_convs(model)
    return sum(n.op_type == "Conv" for n in model.graph.node) - len(adapters) - len(scales)


def adapter_weights(path) -> int:
    """Scalars of the initializers conv_adapters' convolutions read."""
    import onnx
    model = onnx.load(str(path))
    adapters, scales = adapter_convs(model)
    names = {n.input[1] for n in adapters} | {n.input[1] for n, _ in scales}
    return int(sum(np.prod(t.dims) for t in model.graph.initializer if t.name in names))
