"""The CUDA paths, run for real: autocast fp16 + GradScaler with channels-last on masked ResNets
(module level) and ResNeXts (branch level), CUDA against CPU outputs and mask gradients, compiled
models on CUDA, the trainer on CUDA, onnxruntime's CUDA provider. Skipped without CUDA.

Runs only without CUDA: ``--device cuda`` on the command line fails with a one-line error.
"""
from __future__ import annotations

import copy
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F

import mcgraph
from mcgraph import deploy

try:
    from helpers import assert_same_outputs
except ImportError:  # pragma: no cover - tests/helpers.py moved
    def assert_same_outputs(ref, got, rel: float = 1e-4) -> None:
        ref, got = torch.as_tensor(ref).detach().cpu(), torch.as_tensor(got).detach().cpu()
        scale = max(1.0, float(ref.abs().max()))
        diff = float((ref - got).abs().max())
        assert diff <= rel * scale, f"max |diff| {diff:.3g} > {rel * scale:.3g} (scale {scale:.3g})"

HAS_CUDA = torch.cuda.is_available()
cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
ROOT = Path(__file__).resolve().parents[1]
CL = torch.channels_last
FORMATS = [pytest.param(torch.contiguous_format, id="nchw"), pytest.param(CL, id="channels_last")]
# the smallest registered branch-level model (C=2); fall back to the README's 8x8d
RESNEXT = next((m for m in ("resnext29_2x8d", "resnext29_4x16d", "resnext29_8x8d")
                if m in mcgraph.list_models()), "resnext29_8x8d")


def rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def masked_resnet20(fan_in: int = 2, init: str = "uniform", seed: int = 0):
    return mcgraph.rewrite("resnet20", fan_in=fan_in, init=init, seed=seed, in_channels=1,
                           input_size=(16, 16), num_classes=10)


def masked_resnext(fan_in: int = 1, init: str = "uniform", seed: int = 0):
    return mcgraph.rewrite(RESNEXT, fan_in=fan_in, init=init, seed=seed, in_channels=1,
                           input_size=(16, 16), num_classes=10)


@pytest.fixture
def exact_fp32():
    """fp32 on CUDA without TF32 (cuDNN convolutions use TF32 by default, ~1e-3 relative)."""
    old = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old


def _split(model: torch.nn.Module):
    masks = mcgraph.mask_parameters(model)
    ids = {id(p) for p in masks}
    return [p for p in model.parameters() if id(p) not in ids], masks


def amp_train_steps(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int = 4):
    """The trainer's step on CUDA: autocast fp16, GradScaler, unscale, SGD with a mask group,
    clip. Returns per step (loss, weight grads finite, mask grads after unscale)."""
    weights, masks = _split(model)
    opt = torch.optim.SGD([{"params": weights},
                           {"params": masks, "lr": 0.05, "momentum": 0.0, "weight_decay": 0.0}],
                          lr=0.05, momentum=0.9, weight_decay=5e-4)
    # a moderate initial scale: the default 65536 may overflow the first fp16 backward, and a
    # skipped step would change nothing
    scaler = torch.amp.GradScaler("cuda", init_scale=2.0 ** 10)
    out = []
    for _ in range(steps):
        with torch.autocast("cuda", dtype=torch.float16):
            logits = model(x)
            loss = F.cross_entropy(logits, y)
        assert logits.dtype == torch.float16, "autocast did not run the head in fp16"
        assert logits.is_cuda
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        finite = all(bool(torch.isfinite(p.grad).all()) for p in weights if p.grad is not None)
        mgrads = [None if p.grad is None else p.grad.detach().clone() for p in masks]
        scaler.step(opt)
        scaler.update()
        mcgraph.clip_masks_(model)
        out.append((float(loss.detach()), finite, mgrads))
    return out


def check_amp_training(model: torch.nn.Module, batch: int = 16, steps: int = 4) -> None:
    model = model.cuda().to(memory_format=CL).train()
    x = rand(batch, 1, 16, 16).cuda().contiguous(memory_format=CL)
    y = (torch.arange(batch) % 10).cuda()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    masks_before = [p.detach().clone() for p in mcgraph.mask_parameters(model)]
    assert masks_before, "the rewrite has no masks"
    records = amp_train_steps(model, x, y, steps)
    assert all(math.isfinite(loss) for loss, _, _ in records), [r[0] for r in records]
    good = [r for r in records if r[1]]
    assert good, "every step overflowed in fp16 (GradScaler skipped all of them)"
    for _, _, mgrads in good:
        assert all(g is not None for g in mgrads), "a learning mask got no gradient"
        assert all(bool(torch.isfinite(g).all()) for g in mgrads), "a mask gradient is not finite"
        assert all(g.is_cuda and g.dtype == torch.float32 for g in mgrads)
        assert any(float(g.abs().max()) > 0 for g in mgrads), "every mask gradient is zero"
    for p in mcgraph.mask_parameters(model):
        assert p.is_cuda and p.dtype == torch.float32
        m = p.detach()
        assert float(m.min()) >= 0.0 and float(m.max()) <= 1.0, "clip_masks_ left m~ outside [0, 1]"
    changed = [n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])]
    weights, masks = _split(model)
    weight_names = {n for n, p in model.named_parameters() if any(p is w for w in weights)}
    assert set(changed) & weight_names, "no weight changed"
    assert any(not torch.equal(a, b.detach()) for a, b in zip(masks_before, masks)), \
        "no mask value changed"


# ---------------------------------------------------------------- training steps on CUDA

@cuda
def test_masked_resnet20_amp_channels_last_step():
    check_amp_training(masked_resnet20(fan_in=2, init="uniform"))


@cuda
def test_branch_level_resnext_amp_channels_last_step():
    check_amp_training(masked_resnext(fan_in=1, init="uniform"))


@cuda
def test_frozen_masks_amp_step_trains_weights_only():
    model = mcgraph.freeze_masks(masked_resnet20(fan_in=2, init="random"))
    model = model.cuda().to(memory_format=CL)
    masks = [p.detach().clone() for p in mcgraph.mask_parameters(model)]
    x = rand(16, 1, 16, 16).cuda().contiguous(memory_format=CL)
    records = amp_train_steps(model.train(), x, (torch.arange(16) % 10).cuda(), steps=2)
    assert all(math.isfinite(r[0]) for r in records)
    assert all(g is None for r in records for g in r[2]), "frozen masks received gradients"
    assert all(torch.equal(a, b) for a, b in zip(masks, mcgraph.mask_parameters(model)))


# ---------------------------------------------------------------- CUDA against CPU

@cuda
@pytest.mark.parametrize("fmt", FORMATS)
def test_masked_eval_outputs_match_cpu(exact_fp32, fmt):
    cpu = masked_resnet20(fan_in=2, init="random").eval()
    gpu = copy.deepcopy(cpu).cuda().to(memory_format=fmt).eval()
    x = rand(8, 1, 16, 16)
    with torch.no_grad():
        ref = cpu(x)
        got = gpu(x.cuda().contiguous(memory_format=fmt))
    assert got.is_cuda
    assert_same_outputs(ref, got.cpu())


@cuda
@pytest.mark.parametrize("fmt", FORMATS)
def test_masked_training_forward_and_mask_gradients_match_cpu(exact_fp32, fmt):
    """Training mode: the same mask draws on both devices (CPU generators), the same batch
    statistics, and the straight-through mask gradients (dot products, channels-last views)."""
    cpu = masked_resnet20(fan_in=2, init="uniform").train()
    gpu = copy.deepcopy(cpu).cuda().to(memory_format=fmt).train()
    x = rand(8, 1, 16, 16)
    w = rand(8, 10, seed=1)
    ref = cpu(x)
    got = gpu(x.cuda().contiguous(memory_format=fmt))
    assert_same_outputs(ref.detach(), got.detach().cpu())
    (ref * w).sum().backward()
    (got * w.cuda()).sum().backward()
    for a, b in zip(mcgraph.mask_parameters(cpu), mcgraph.mask_parameters(gpu)):
        assert (a.grad is None) == (b.grad is None)
        if a.grad is not None:   # normalized gradients: unit RMS per module, so absolute atol
            torch.testing.assert_close(b.grad.cpu(), a.grad, atol=1e-2, rtol=0)


@cuda
def test_branch_level_eval_outputs_match_cpu(exact_fp32):
    cpu = masked_resnext(fan_in=1, init="random").eval()
    gpu = copy.deepcopy(cpu).cuda().to(memory_format=CL).eval()
    x = rand(4, 1, 16, 16)
    with torch.no_grad():
        assert_same_outputs(cpu(x), gpu(x.cuda().contiguous(memory_format=CL)).cpu())


@cuda
@pytest.mark.parametrize("make", [lambda: masked_resnet20(fan_in=1, init="random"),
                                  lambda: masked_resnet20(fan_in=2, init="random"),
                                  lambda: masked_resnext(fan_in=1, init="random")],
                         ids=["resnet20_k1", "resnet20_k2", "resnext_branch_k1"])
def test_compiled_model_on_cuda_matches_cpu(exact_fp32, make):
    slim, report = mcgraph.compile(mcgraph.freeze_masks(make()))
    assert report.params_after <= report.params_before
    x = rand(8, *report.input_shape)
    slim = slim.eval()
    with torch.no_grad():
        ref = slim(x)
        for fmt in (torch.contiguous_format, CL):
            gpu = copy.deepcopy(slim).cuda().to(memory_format=fmt).eval()
            assert_same_outputs(ref, gpu(x.cuda().contiguous(memory_format=fmt)).cpu())
        half = copy.deepcopy(slim).cuda().half().eval()          # fp16 inference (model.half())
        out16 = half(x.cuda().half()).float().cpu()
    assert bool(torch.isfinite(out16).all())
    assert_same_outputs(ref, out16, rel=5e-2)


# ---------------------------------------------------------------- the trainer on CUDA

@cuda
@pytest.mark.parametrize("model,fan_in", [("resnet20", 2), (RESNEXT, 1)])
def test_train_loop_on_cuda_with_amp(tmp_path, model, fan_in):
    from mcgraph.train.config import TrainConfig
    from mcgraph.train.loop import train
    out = tmp_path / "run"
    res = train(TrainConfig(model=model, data="synthetic", device="cuda", epochs=1, fan_in=fan_in,
                            batch_size=32, max_train_samples=128, max_test_samples=64,
                            freeze_at=0.5, progress=False, out=str(out)))
    assert res.steps == 4 and res.epochs_done == 1
    assert (out / "last.pt").is_file() and (out / "best.pt").is_file()
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["amp"] is True, cfg.get("amp")
    assert str(cfg["device"]).startswith("cuda") and cfg["channels_last"] is True
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows and all(math.isfinite(r["train_loss"]) for r in rows)
    loaded = mcgraph.load(out / "last.pt")          # a checkpoint written from CUDA loads on CPU
    assert all(not p.is_cuda for p in loaded.parameters())
    for p in mcgraph.mask_parameters(loaded):
        assert float(p.detach().min()) >= 0.0 and float(p.detach().max()) <= 1.0


# ---------------------------------------------------------------- CUDA graphs

def _graph_setup(graphs: bool, fan_in: int = 2):
    from mcgraph.train.config import TrainConfig
    from mcgraph.train.step import Stepper
    gm = masked_resnet20(fan_in=fan_in, init="uniform").cuda().to(memory_format=CL).train()
    cfg = TrainConfig(model="resnet20", device="cuda", amp=False, cuda_graph=graphs)
    st = Stepper(gm, cfg, torch.device("cuda"))
    st.set_net(gm)
    if not graphs:
        st.wire_on_device()
    return gm, st


@cuda
def test_branch_level_learning_steps_eagerly_in_graph_mode():
    """Branch-level masks draw their wirings on the host: a captured step would replay one
    wiring for ever, so graph mode steps such a network eagerly (and captures it once its
    masks are frozen)."""
    from mcgraph.train.config import TrainConfig
    from mcgraph.train.step import WARMUP, Stepper
    gm = masked_resnext(fan_in=1, init="uniform").cuda().to(memory_format=CL).train()
    st = Stepper(gm, TrainConfig(model="resnext", device="cuda", cuda_graph=True),
                 torch.device("cuda"))
    st.set_net(gm)
    assert st.graphs and not st.captures and not st.on_device
    x, y = rand(16, 1, 16, 16).cuda(), (torch.arange(16) % 10).cuda()
    before = [p.detach().clone() for p in mcgraph.mask_parameters(gm)]
    for _ in range(WARMUP + 2):
        loss, _, _ = st.step(x, y)
        assert math.isfinite(float(loss))
    assert st._graph is None
    assert any(not torch.equal(a, b) for a, b in zip(before, mcgraph.mask_parameters(gm)))
    frozen = mcgraph.freeze_masks(gm)
    st.set_net(frozen)
    assert st.captures


@cuda
@pytest.mark.parametrize("fan_in", [1, 3])
def test_captured_step_equals_the_eager_device_step(exact_fp32, fan_in):
    """Each replay of the captured step computes what an eager step with device wiring computes
    from the same state: the same draw, weights, masks and BatchNorm statistics. (Runs compared
    over many steps drift apart: a normalized mask gradient turns float noise in a row of nearly
    equal entries into a full step, so each step starts from the replayed side's state.)"""
    from mcgraph.train.step import WARMUP
    old = torch.backends.cudnn.deterministic
    torch.backends.cudnn.deterministic = True
    try:
        (ga, sa), (gb, sb) = _graph_setup(True, fan_in), _graph_setup(False, fan_in)
        for i in range(WARMUP + 3):
            gb.load_state_dict(ga.state_dict())
            if i >= WARMUP:          # the eager side takes a copy of the same optimizer state
                sb.opt.load_state_dict(copy.deepcopy(sa.opt.state_dict()))   # (not aliases)
            x = rand(16, 1, 16, 16, seed=i).cuda()
            y = (torch.arange(16) % 10).cuda()
            la, _, _ = sa.step(x, y)
            lb, _, _ = sb.step(x, y)
            assert abs(float(la) - float(lb)) <= 1e-5 * max(1.0, abs(float(lb))), (i, la, lb)
        assert sa._graph is not None, "the step was never captured"
        for (name, a), b in zip(ga.state_dict().items(), gb.state_dict().values()):
            assert torch.allclose(a.float(), b.float(), rtol=1e-4, atol=1e-5), name
        sa.sync_host()
        assert all(m._step_h == WARMUP + 3 for m in mcgraph.masks.mask_modules(ga))
    finally:
        torch.backends.cudnn.deterministic = old


@cuda
def test_train_loop_with_cuda_graphs_captures_both_phases(tmp_path):
    from mcgraph.train.config import TrainConfig
    from mcgraph.train.loop import train
    out = tmp_path / "run"
    res = train(TrainConfig(model="resnet20", data="synthetic", device="cuda", epochs=2, fan_in=2,
                            batch_size=16, max_train_samples=160, max_test_samples=64, val_size=0,
                            freeze_at=0.5, progress=False, out=str(out)))
    assert res.steps == 20 and res.epochs_done == 2
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["cuda_graph"] is True and cfg["amp_dtype"] == "bfloat16", cfg
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r["train_loss"]) for r in rows) and rows[-1]["masks_frozen"]
    loaded = mcgraph.load(out / "last.pt")
    assert all(int(m.step) == 10 for m in mcgraph.masks.mask_modules(loaded))


# ---------------------------------------------------------------- onnxruntime

def test_onnxruntime_cuda_provider_or_clear_error():
    """Runs everywhere: the CUDA EP when onnxruntime has it, else a one-line McGraphError."""
    if "CUDAExecutionProvider" in ort.get_available_providers():
        assert deploy.providers("cuda")[0] == "CUDAExecutionProvider"
        assert deploy.providers("auto")[0] == "CUDAExecutionProvider"
    else:
        with pytest.raises(mcgraph.McGraphError) as e:
            deploy.providers("cuda")
        msg = str(e.value)
        assert "cuda" in msg.lower() and "\n" not in msg, msg
        assert deploy.providers("auto") == ["CPUExecutionProvider"]
    assert deploy.providers("cpu") == ["CPUExecutionProvider"]


@cuda
@pytest.mark.skipif("CUDAExecutionProvider" not in ort.get_available_providers(),
                    reason="onnxruntime has no CUDA provider (onnxruntime-gpu not installed)")
def test_onnx_on_cuda_provider_matches_pytorch(tmp_path):
    slim, report = mcgraph.compile(masked_resnet20(fan_in=1, init="random"))
    path = mcgraph.export_onnx(slim, tmp_path / "m.onnx", tuple(report.input_shape))
    sess = deploy.make_session(path, device="cuda")
    assert sess.get_providers()[0] == "CUDAExecutionProvider", \
        f"the CUDA EP is listed but the session fell back to {sess.get_providers()}"
    x = rand(4, *report.input_shape)
    with torch.no_grad():
        ref = slim.eval()(x)
    assert_same_outputs(ref, deploy.run(sess, x), rel=5e-3)    # the CUDA EP may use TF32
    assert deploy.latency_ms(sess, (1, *report.input_shape), repeats=3) > 0


# ---------------------------------------------------------------- no CUDA: a clear error

@pytest.mark.skipif(HAS_CUDA, reason="CUDA is present")
@pytest.mark.parametrize("command", ["train", "eval"])
def test_cli_device_cuda_without_cuda_is_a_one_line_error(tmp_path, command):
    if command == "train":
        args = ["train", "resnet20", "--data", "synthetic", "--epochs", "1", "--device", "cuda",
                "--out", str(tmp_path / "run"), "--no-progress"]
    else:
        ckpt = tmp_path / "m.pt"
        mcgraph.save(masked_resnet20(), ckpt)
        args = ["eval", str(ckpt), "--data", "synthetic", "--device", "cuda"]
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONPATH": path}
    r = subprocess.run([sys.executable, "-m", "mcgraph", *args], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0, r.stdout + r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("error:") and "cuda" in lines[0].lower(), lines[0]
    assert not (tmp_path / "run" / "last.pt").exists()
