"""Device wiring (mcgraph.device_wiring) against the dense reference and the eager op: values,
input gradients and every mask gradient; shared stage buffers with owners; the on-device draw."""
import pytest
import torch
from helpers import (
    CANDIDATE_STRIDES,
    assert_same_outputs,
    candidate_inputs,
    dense_masked_sum,
    masked_resnet20,
    rand,
)

from mcgraph import device_wiring as dw
from mcgraph.masks import KHotMask, adapt, mask_modules


def _op(ys, chosen, scale, samples=None, mode="raw"):
    """One mask owning all five candidates, in a stage buffer of its own."""
    pool = dw.Pool([], [len(ys)])
    p = dw.MaskPlan(0, 0, tuple(range(len(ys))), tuple(range(len(ys))))
    cl = dw._is_cl(ys[0])
    stage = pool.stage(0, ys[0], (8, 4, 4), cl)
    mask = torch.full((len(ys),), 0.5, requires_grad=True)
    out = dw.DeviceMaskedSum.apply(mask, torch.tensor(chosen), p, stage, torch.arange(len(ys)),
                                   tuple(CANDIDATE_STRIDES), 8, mode, scale, samples, *ys)
    return out, mask


@pytest.mark.parametrize("k", [1, 2, 3, 4])
@pytest.mark.parametrize("channels_last", [False, True])
def test_op_equals_dense_reference(k, channels_last):
    chosen = tuple(range(5))[-k:] if k % 2 else tuple(range(k))
    ys = candidate_inputs(channels_last)
    out, mask = _op(ys, chosen, 1.0 / k)
    g = rand(*out.shape, seed=99)
    (out * g).sum().backward()
    ys_ref = [y.detach().clone().requires_grad_(True) for y in ys]
    x_ref, m_ref = dense_masked_sum(ys_ref, chosen, 1.0 / k)
    (x_ref * g).sum().backward()
    assert_same_outputs(x_ref, out, rel=1e-6)
    assert out.is_contiguous(memory_format=torch.channels_last) == channels_last
    assert torch.allclose(mask.grad, m_ref.grad, rtol=1e-5, atol=1e-5), (mask.grad, m_ref.grad)
    for i in range(5):
        want = ys_ref[i].grad if i in chosen else torch.zeros_like(ys[i])
        assert torch.allclose(ys[i].grad, want, atol=1e-6), i   # unchosen: zero, not None


def test_batch_prefix_estimate_matches_the_eager_op():
    from mcgraph.masked_sum import MaskedSum
    ys = candidate_inputs(False)
    out, mask = _op(ys, (1, 3), 0.5, samples=2, mode="normalized")
    g = rand(*out.shape, seed=5)
    (out * g).sum().backward()
    ref_mask = torch.full((5,), 0.5, requires_grad=True)
    ref = MaskedSum.apply(ref_mask, (1, 3), tuple(CANDIDATE_STRIDES), 8, "normalized", 0.5, 2,
                          *[y.detach() for y in ys])
    (ref * g).sum().backward()
    assert torch.allclose(mask.grad, ref_mask.grad, rtol=1e-5, atol=1e-6)


def test_bf16_buffers_give_fp32_mask_gradients():
    ys = [y.detach().to(torch.bfloat16) for y in candidate_inputs(True)]
    out, mask = _op(ys, (0,), 1.0)
    assert out.dtype == torch.bfloat16
    g = rand(*out.shape, seed=3).to(torch.bfloat16)
    out.backward(g)
    want = torch.stack([(g.float()[:, : y.shape[1]] * adapt(y.float(), *s, y.shape[1])).sum()
                        for y, s in zip(ys, CANDIDATE_STRIDES)])
    assert mask.grad.dtype == torch.float32
    assert torch.allclose(mask.grad, want, rtol=1e-2, atol=1e-2)


def test_gumbel_noise_is_a_fixed_function_of_its_counters():
    x = torch.arange(200_000, dtype=torch.int64) * 0x85EBCA77 + 12345
    g = dw.gumbel(x)
    assert torch.equal(g, dw.gumbel(x.clone()))
    assert torch.isfinite(g).all()
    assert abs(float(g.mean()) - 0.5772) < 0.01           # the Gumbel mean (Euler's constant)
    assert abs(float(g.var()) - 1.6449) < 0.03            # and variance (pi^2 / 6)


def _model(fan_in: int, size: int = 8):
    return masked_resnet20(fan_in, "random", seed=3, size=size).train()


def _grads(gm):
    return {n: (p.grad.clone() if p.grad is not None else torch.zeros_like(p))
            for n, p in gm.named_parameters()}


@pytest.mark.parametrize("fan_in", [1, 3])
@pytest.mark.parametrize("channels_last", [False, True])
def test_model_step_equals_the_eager_op_for_the_same_draw(fan_in, channels_last, monkeypatch):
    """A whole masked resnet20: logits, every weight and mask gradient and the BatchNorm
    statistics equal the eager op's when both read the same sampled wiring."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = rand(4, 1, 8, 8, seed=1).contiguous(memory_format=fmt)
    eager, dev = _model(fan_in).to(memory_format=fmt), _model(fan_in).to(memory_format=fmt)
    dev.load_state_dict(eager.state_dict())
    draws = {m.target: torch.randperm(m.num_candidates, generator=torch.Generator().manual_seed(
        m.index))[: m.fan_in] for m in mask_modules(eager)}
    monkeypatch.setattr(KHotMask, "sample_rows",
                        lambda self: draws[self.target].sort().values[None])
    monkeypatch.setattr(dw, "sample", lambda m, noise, tau=None: draws[m.target])
    assert dw.enable(dev)
    out_e, out_d = eager(x), dev(x)
    assert_same_outputs(out_e, out_d, rel=1e-5)
    g = rand(*out_e.shape, seed=2)
    (out_e * g).sum().backward()
    (out_d * g).sum().backward()
    ge, gd = _grads(eager), _grads(dev)
    for name in ge:
        assert torch.allclose(ge[name], gd[name], rtol=1e-4, atol=1e-6), name
    for (name, a), b in zip(eager.named_buffers(), dev.buffers()):
        assert torch.allclose(a.float(), b.float(), rtol=1e-5, atol=1e-6), name


def test_enable_draws_on_the_device_and_disable_restores_the_host_mirrors():
    gm = _model(2)
    assert dw.enable(gm)
    x = rand(2, 1, 8, 8, seed=0)
    for _ in range(3):
        gm(x).sum().backward()
    masks = mask_modules(gm)
    assert all(int(m.step) == 3 for m in masks) and all(m._step_h == 0 for m in masks)
    dw.disable(gm)
    assert all(m._step_h == 3 and m._device is None for m in masks)
    gm(x)                                              # the eager op again
    assert all(int(m.step) == 4 for m in masks)


def test_draws_follow_the_masks():
    """With m~ one-hot the draw is that input; with m~ uniform every input is drawn."""
    gm = _model(1)
    m = mask_modules(gm)[-1]
    with torch.no_grad():
        m.mask.zero_()
        m.mask[2] = 1.0
    pool = dw.Pool([m], [1])
    seen = set()
    for step in range(40):
        m.step.fill_(step)
        pool.begin_step()
        seen.add(int(dw.sample(m, pool.noise[0])[0]))
    assert seen == {2}
    with torch.no_grad():
        m.mask.fill_(0.5)
    for step in range(200):
        m.step.fill_(step)
        pool.begin_step()
        seen.add(int(dw.sample(m, pool.noise[0])[0]))
    assert seen == set(range(m.num_candidates))


def test_enable_refuses_models_with_frozen_masks():
    gm = _model(1)
    mask_modules(gm)[0].freeze([0])
    assert not dw.enable(gm)
    assert all(m._device is None for m in mask_modules(gm))


def test_a_low_temperature_draws_the_top_k_on_the_device_too():
    from mcgraph.mask_ops import set_temperature
    gm = _model(1)
    m = mask_modules(gm)[-1]
    with torch.no_grad():
        m.mask.copy_(torch.linspace(0.2, 0.9, m.num_candidates))   # the last is the top-1
    assert dw.enable(gm)
    pool = m._device.pool
    set_temperature(gm, 0.01)
    seen = set()
    for step in range(50):
        for k in pool.masks:
            k.step.fill_(step)
        pool.begin_step()
        seen.add(int(dw.sample(m, pool.noise[m._device.number], pool.tau)[0]))
    assert seen == {m.num_candidates - 1}
    set_temperature(gm, 1.0)
    assert float(pool.tau) == 1.0
