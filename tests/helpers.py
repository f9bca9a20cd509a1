"""Shared test helpers, one copy each (``import helpers`` works from every test folder: conftest.py
puts tests/ on sys.path).

- numerical asserts (docs/design.md §1: max abs diff under 1e-4 relative to the output scale)
  and inputs;
- the command line in-process (``run_cli``) and what its results must look like;
- ONNX files under onnxruntime, conv_adapters' convolutions in them;
- the masks of a rewritten resnet20 (candidates, top-K choice, dead blocks), recomputed here from
  the mask values rather than read from the package;
- training runs (a small ``TrainConfig``, the ``metrics.jsonl`` rows);
- the masked-sum candidates of mixed shapes and their dense reference."""
from __future__ import annotations

import json
from pathlib import Path

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


def masked_resnet20(fan_in: int = 1, init: str = "random", seed: int = 0, num_classes: int = 10,
                    size: int = 16):
    """A masked CIFAR ResNet-20 for 1 x size x size inputs (small and fast); ``seed`` draws the
    masks (also the conftest fixture of the same name)."""
    import mcgraph
    return mcgraph.rewrite("resnet20", fan_in=fan_in, init=init, seed=seed, in_channels=1,
                           num_classes=num_classes, input_size=(size, size))


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


def ort_logits(path, x) -> np.ndarray:
    """An ONNX file's output for ``x`` (a tensor or an array) under onnxruntime on the CPU."""
    import onnxruntime as ort
    x = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


# ------------------------------------------------------------------ the command line
STATUS_LINES = ("compiling ...", "Usage: ", "Try '")   # stderr lines allowed before an error line


def run_cli(*args, input=None, env=None, catch_exceptions: bool = True):
    """``mcgraph ARGS...`` in this process through click's CliRunner; every argument goes through
    ``str`` (paths and numbers can be passed as they are). The click ``Result``: ``stdout`` and
    ``stderr`` apart, ``output`` both; ``exception`` what ended the command (a ``SystemExit`` when
    it went through the CLI's error handling)."""
    from click.testing import CliRunner

    from mcgraph.cli import main
    return CliRunner().invoke(main, [str(a) for a in args], input=input, env=env,
                              catch_exceptions=catch_exceptions)


def run_cli_ok(*args, **kw):
    """``run_cli``, and the command must succeed: exit code 0, no exception."""
    result = run_cli(*args, **kw)
    assert result.exit_code == 0 and result.exception is None, (result.output, result.exception)
    return result


def run_cli_json(*args, **kw) -> dict | list:
    """``mcgraph ARGS... --json``, which must succeed; its stdout parsed."""
    return json.loads(run_cli_ok(*args, "--json", **kw).stdout)


def assert_one_line_error(result, *reason, exit_code: int | None = 2,
                          stdout: str | None = "") -> str:
    """The command failed through the CLI's error handling in one line; returns that line.

    - exit code ``exit_code`` (``None``: any non-zero), and ``result.exception`` a ``SystemExit``
      (an escaped exception would be exit code 1);
    - stdout is ``stdout`` (``None``: not checked; a command that explains itself before failing);
    - no traceback anywhere in the output;
    - the last non-blank stderr line starts with ``error: `` (or click's ``Error: ``) and contains
      every fragment of ``reason`` (texts, or tuples of texts as parametrized tables give them);
      before it only status lines (``STATUS_LINES``: "compiling ...", click's usage hint)."""
    if exit_code is None:
        assert result.exit_code != 0, (result.exit_code, result.output)
    else:
        assert result.exit_code == exit_code, (result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, SystemExit), \
        f"escaped exception: {result.exception!r}\n{result.output}"
    if stdout is not None:
        assert result.stdout == stdout, result.stdout
    assert "Traceback" not in result.output, result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert lines, "nothing on stderr"
    *before, line = lines
    assert line.startswith(("error: ", "Error: ")), result.stderr
    assert all(ln.startswith(STATUS_LINES) for ln in before), \
        f"more than one line on stderr:\n{result.stderr}"
    fragments = [f for r in reason for f in ((r,) if isinstance(r, str) else r)]
    missing = [f for f in fragments if f not in line]
    assert not missing, f"{missing} not in: {line}"
    return line


# ------------------------------------------------------------------ resnet20's masks, recomputed
RESNET20_BLOCKS = [f"layer{s}.{i}" for s in (1, 2, 3) for i in range(3)]   # its 9 residual blocks


def resnet20_candidates() -> dict[str, list[str]]:
    """Each block's candidate inputs in mask order: the stem ("relu") and every block before it."""
    return {b: ["relu", *RESNET20_BLOCKS[:i]] for i, b in enumerate(RESNET20_BLOCKS)}


def mask_values(model) -> dict[str, list[float]]:
    """Each mask's values by the block it feeds."""
    import mcgraph
    return {m.target: m.mask.detach().flatten().tolist()
            for m in model.modules() if isinstance(m, mcgraph.MaskConnect)}


def top_k(values, k: int) -> list[int]:
    """Indices of the k largest values, ties to the lower index, in candidate order."""
    return sorted(sorted(range(len(values)), key=lambda i: -values[i])[:k])


def resnet20_chosen(model, fan_in: int | None = None) -> dict[str, list[str]]:
    """The inputs each block of a masked resnet20 reads (its top-K mask values) in candidate
    order; K is ``fan_in``, or each mask's own ``fan_in``."""
    import mcgraph
    cands = resnet20_candidates()
    return {m.target: [cands[m.target][i] for i in top_k(m.mask.detach().flatten().tolist(),
                                                         fan_in or m.fan_in)]
            for m in model.modules() if isinstance(m, mcgraph.MaskConnect)}


def resnet20_dead_blocks(chosen: dict[str, list[str]]) -> list[str]:
    """Blocks nothing reads: walk back from the last block (which the head reads)."""
    live = {RESNET20_BLOCKS[-1]}
    for b in reversed(RESNET20_BLOCKS):
        if b in live:
            live.update(chosen[b])
    return [b for b in RESNET20_BLOCKS if b not in live]


# ------------------------------------------------------------------ training runs
TIMINGS = ("images_per_s", "seconds")        # the metrics that differ between identical runs


def train_config(tmp_path, **kw):
    """A small ``TrainConfig``: resnet20 on the synthetic set, 2 epochs of batch 64, out
    ``tmp_path/run``, no progress bar; ``kw`` overrides."""
    from mcgraph.train.config import TrainConfig
    base = dict(model="resnet20", data="synthetic", out=str(Path(tmp_path) / "run"), epochs=2,
                batch_size=64, lr=0.05, mask_lr=0.05, progress=False, seed=0)
    return TrainConfig(**{**base, **kw})


def metrics_rows(run_dir, drop=TIMINGS) -> list[dict]:
    """A run's ``metrics.jsonl``, one dict per epoch, without the keys in ``drop``."""
    return [{k: v for k, v in json.loads(ln).items() if k not in drop}
            for ln in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


# ------------------------------------------------------------------ masked-sum candidates
# for an (N, 8, 4, 4) input: same shape, 2x larger spatially, fewer channels, both (the
# cross-stage case), and an odd size
CANDIDATE_SHAPES = [(6, 8, 4, 4), (6, 8, 8, 8), (6, 4, 4, 4), (6, 4, 8, 8), (6, 8, 7, 7)]
CANDIDATE_STRIDES = [(1, 1), (2, 2), (1, 1), (2, 2), (2, 2)]


def candidate_inputs(channels_last: bool, dtype=torch.float32) -> list[torch.Tensor]:
    """One random tensor per ``CANDIDATE_SHAPES`` (seeds 0, 1, ...), requiring gradients."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return [rand(*s, seed=i).to(dtype).contiguous(memory_format=fmt).requires_grad_(True)
            for i, s in enumerate(CANDIDATE_SHAPES)]


def dense_masked_sum(ys, chosen, scale: float, out_channels: int = 8):
    """x = scale * sum_k m_k adapt(y_k), m a dense K-hot tensor (returned too, requiring
    gradients): autograd gives <g, adapt(y_k)> for every candidate."""
    from mcgraph.masks import adapt
    m = torch.zeros(len(ys))
    m[list(chosen)] = 1.0
    m.requires_grad_(True)
    x = scale * sum(m[k] * adapt(y, *CANDIDATE_STRIDES[k], out_channels) for k, y in enumerate(ys))
    return x, m
