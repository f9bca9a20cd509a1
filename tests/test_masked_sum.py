"""The masked-sum op against a dense reference: values, input and weight gradients, every
candidate's mask gradient; the batch-subsample estimate; fp16 safety."""
import types

import pytest
import torch
from helpers import CANDIDATE_STRIDES, assert_same_outputs, candidate_inputs, dense_masked_sum, rand

from mcgraph.mask_ops import set_grad_samples
from mcgraph.masked_sum import MaskedSum, candidate_grads
from mcgraph.masks import adapt, mask_modules

# the candidates (helpers.CANDIDATE_SHAPES) have mixed shapes for an (N, 8, 4, 4) input; the
# dense reference (helpers.dense_masked_sum) gives every candidate's mask gradient


@pytest.mark.parametrize("k", [1, 2, 3, 4])
@pytest.mark.parametrize("channels_last", [False, True])
def test_op_equals_dense_reference(k, channels_last):
    chosen = tuple(range(5))[-k:] if k % 2 else tuple(range(k))
    scale = 1.0 / k
    ys = candidate_inputs(channels_last)
    mask = torch.full((5,), 0.5, requires_grad=True)
    out = MaskedSum.apply(mask, chosen, tuple(CANDIDATE_STRIDES), 8, "raw", scale, None, *ys)
    g = rand(*out.shape, seed=99)
    (out * g).sum().backward()
    ys_ref = [y.detach().clone().requires_grad_(True) for y in ys]
    x_ref, m_ref = dense_masked_sum(ys_ref, chosen, scale)
    (x_ref * g).sum().backward()
    assert_same_outputs(x_ref, out, rel=1e-6)
    assert torch.allclose(mask.grad, m_ref.grad, rtol=1e-5, atol=1e-5), (mask.grad, m_ref.grad)
    for i in range(5):
        if i in chosen:
            assert torch.allclose(ys[i].grad, ys_ref[i].grad, atol=1e-6)
        else:
            assert ys[i].grad is None                     # unchosen inputs get no gradient


def test_subsample_is_the_prefix_estimate_and_unbiased_over_orders():
    ys = [y.detach() for y in candidate_inputs(False)]
    g = rand(6, 8, 4, 4, seed=7)
    full = candidate_grads(g, tuple(ys), tuple(CANDIDATE_STRIDES))
    est = candidate_grads(g, tuple(ys), tuple(CANDIDATE_STRIDES), samples=2)
    prefix = torch.stack([(g[:2, : y.shape[1]] * adapt(y[:2], *s, y.shape[1])).sum()
                          for y, s in zip(ys, CANDIDATE_STRIDES)]) * 3
    assert torch.allclose(est, prefix, rtol=1e-5)
    assert not torch.allclose(est, full, rtol=1e-2)       # an estimate, not the full gradient
    # the three disjoint prefixes of three rotated batch orders average to the full gradient
    rolled = [candidate_grads(g.roll(2 * i, 0), tuple(y.roll(2 * i, 0) for y in ys),
                              tuple(CANDIDATE_STRIDES), samples=2) for i in range(3)]
    assert torch.allclose(sum(rolled) / 3, full, rtol=1e-5, atol=1e-5)
    assert torch.equal(candidate_grads(g, tuple(ys), tuple(CANDIDATE_STRIDES), samples=6), full)


@pytest.mark.parametrize("channels_last", [False, True])
def test_fp16_mask_gradients_stay_finite_under_a_65536_loss_scale(channels_last):
    ys = [(y.detach() * 30).half() for y in candidate_inputs(channels_last)]   # post-ReLU size
    g = (rand(6, 8, 4, 4, seed=3) * 0.05 * 65536).half()                # a scaled loss gradient
    assert not torch.isfinite(g[:, :4] * ys[2]).all()                  # fp16 products overflow
    got = candidate_grads(g, tuple(ys), tuple(CANDIDATE_STRIDES))
    want = candidate_grads(g.float(), tuple(y.float() for y in ys), tuple(CANDIDATE_STRIDES))
    assert got.dtype == torch.float32 and torch.isfinite(got).all()
    assert torch.allclose(got, want, rtol=1e-4)


def _dense_forward(self, *ys):
    """MaskConnect.forward with the dense formulation (same draws): the model-level reference."""
    chosen = [int(i) for i in self.selected()]
    if self.learning:
        self.step += 1
        self._step_h += 1
    hot = torch.zeros(self.num_candidates)
    hot[chosen] = 1.0
    m = hot + self.mask - self.mask.detach()       # K-hot forward, straight-through backward
    return self.scale * sum(m[k] * adapt(y, *self.strides[k], self.out_channels)
                            for k, y in enumerate(ys))


def _grads(model, x, y):
    for m in mask_modules(model):
        m.set_step(0)
    model.zero_grad(set_to_none=True)
    out = model(x)
    torch.nn.functional.cross_entropy(out, y).backward()
    return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters()
                          if p.grad is not None}


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_model_gradients_equal_the_dense_formulation(masked_resnet20, k):
    model = masked_resnet20(fan_in=k, init="uniform")
    for m in mask_modules(model):
        m.grad = "raw"
    model.train().to(memory_format=torch.channels_last)
    x = rand(8, 1, 16, 16, seed=1).contiguous(memory_format=torch.channels_last)
    y = torch.arange(8) % 10
    out, fast = _grads(model, x, y)
    for m in mask_modules(model):
        m.forward = types.MethodType(_dense_forward, m)
    ref, dense = _grads(model, x, y)
    assert_same_outputs(ref, out)
    assert fast.keys() <= dense.keys() and any(".mask" in n for n in fast)
    for name, gd in dense.items():
        if name not in fast:                 # a block nobody read: the dense sum sends it zeros
            assert not gd.any(), name
            continue
        scale = max(1.0, float(gd.abs().max()))
        assert (fast[name] - gd).abs().max() <= 1e-4 * scale, name


def test_set_grad_samples_changes_only_mask_gradients(masked_resnet20):
    model = masked_resnet20(fan_in=2, init="uniform").train()
    x, y = rand(8, 1, 16, 16, seed=2), torch.arange(8) % 10
    _, full = _grads(model, x, y)
    _, est = _grads(set_grad_samples(model, 3), x, y)
    assert all(m.grad_samples == 3 for m in mask_modules(model))
    for name in full:
        if name.endswith(".mask"):
            continue
        assert torch.equal(full[name], est[name]), name        # forward and weights untouched
    assert any(not torch.allclose(full[n], est[n]) for n in full if n.endswith(".mask"))
    with pytest.raises(ValueError, match="samples"):
        set_grad_samples(model, 0)
