"""The mask module: sampling, straight-through gradient against a dense reference, clip, freeze."""
import pytest
import torch
from helpers import rand

import mcgraph
from mcgraph.constraints import clip_masks_
from mcgraph.masks import MaskConnect, adapt


def _mc(n=4, k=2, init="uniform", strides=None, chans=None, out=8, seed=0, grad="raw"):
    strides = strides or [(1, 1)] * n
    chans = chans or [out] * n
    return MaskConnect("blk", [f"c{i}" for i in range(n)], strides, chans, out, fan_in=k,
                       init=init, seed=seed, grad=grad)


def test_sample_is_k_hot_and_proportional():
    mc = _mc(n=4, k=1)
    with torch.no_grad():
        mc.mask.copy_(torch.tensor([0.6, 0.3, 0.1, 0.0]))
    counts = torch.zeros(4)
    for step in range(3000):
        mc.set_step(step)
        s = mc.sample()
        assert len(s) == 1
        counts[s] += 1
    freq = counts / counts.sum()
    assert freq[3] == 0                                      # m~ = 0 is never drawn when K fit
    assert torch.allclose(freq[:3], torch.tensor([0.6, 0.3, 0.1]), atol=0.03)


def test_sample_without_replacement_and_all_zero_guard():
    mc = _mc(n=5, k=3)
    with torch.no_grad():
        mc.mask.zero_()
    with pytest.warns(UserWarning, match="every m~ of row 0 is 0"):
        for step in range(50):
            mc.set_step(step)
            s = mc.sample()
            assert len(set(s.tolist())) == 3                 # K distinct even with m~ = 0


def test_sampling_is_seeded_by_seed_and_step():
    a, b, c = _mc(n=8, k=2, seed=1), _mc(n=8, k=2, seed=1), _mc(n=8, k=2, seed=2)
    draws = lambda m: [(m.set_step(t), m.sample().tolist())[1] for t in range(20)]  # noqa: E731
    assert draws(a) == draws(b)
    assert draws(a) != draws(c)


def test_eval_is_stable_topk():
    mc = _mc(n=5, k=2)
    with torch.no_grad():
        mc.mask.copy_(torch.tensor([0.2, 0.7, 0.2, 0.7, 0.1]))
    mc.eval()
    assert mc.selected().tolist() == [1, 3]
    with torch.no_grad():
        mc.mask.copy_(torch.tensor([0.5, 0.5, 0.9, 0.5, 0.5]))
    assert mc.selected().tolist() == [0, 2]                  # tie at 0.5 broken by index


def test_fewer_candidates_than_k_takes_all():
    mc = _mc(n=2, k=5)
    assert mc.fan_in == 2
    mc.train()
    assert mc.binary().tolist() == [True, True]


def _dense_reference(mc, ys, chosen):
    """x = sum_k m_k adapt(y_k) with m a dense tensor: autograd gives dL/dm_k = <g, adapt(y_k)>."""
    m = torch.zeros(len(ys))
    m[list(chosen)] = 1.0
    m.requires_grad_(True)
    x = mc.scale * sum(m[k] * adapt(y, *mc.strides[k], mc.out_channels) for k, y in enumerate(ys))
    return x, m


def test_straight_through_gradient_matches_dense_reference():
    # candidates of mixed shapes: same shape, 2x larger spatially, fewer channels, both
    shapes = [(2, 8, 4, 4), (2, 8, 8, 8), (2, 4, 4, 4), (2, 4, 8, 8), (2, 8, 7, 7)]
    strides = [(1, 1), (2, 2), (1, 1), (2, 2), (2, 2)]
    mc = _mc(n=5, k=3, strides=strides, chans=[s[1] for s in shapes], out=8)
    mc.train()
    ys = [rand(*s, seed=i).requires_grad_(True) for i, s in enumerate(shapes)]
    sel = mc.sample().tolist()               # what the next forward (step 0) draws
    out = mc(*ys)
    g = rand(*out.shape, seed=99)
    (out * g).sum().backward()
    ys_ref = [y.detach().clone().requires_grad_(True) for y in ys]
    x_ref, m_ref = _dense_reference(mc, ys_ref, sel)
    (x_ref * g).sum().backward()
    assert torch.allclose(out, x_ref, atol=1e-6)
    assert torch.allclose(mc.mask.grad, m_ref.grad, atol=1e-4), (mc.mask.grad, m_ref.grad)
    for k in range(5):
        if k in sel:
            assert torch.allclose(ys[k].grad, ys_ref[k].grad, atol=1e-6)
        else:
            assert ys[k].grad is None                         # unchosen inputs get no gradient
    assert (mc.mask.grad != 0).all()                          # every candidate learns


def test_channels_last_inputs_give_same_values_and_gradients():
    mc = _mc(n=3, k=2)
    mc.train()
    ys = [rand(2, 8, 4, 4, seed=i) for i in range(3)]
    ysl = [y.contiguous(memory_format=torch.channels_last).requires_grad_(True) for y in ys]
    ys = [y.requires_grad_(True) for y in ys]
    mc.set_step(0)
    a = mc(*ys)
    (a * a).sum().backward()
    ga = mc.mask.grad.clone()
    mc.mask.grad = None
    mc.set_step(0)
    b = mc(*ysl)
    (b * b).sum().backward()
    assert torch.allclose(a, b) and torch.allclose(ga, mc.mask.grad, rtol=1e-5)


def test_clip_and_freeze():
    mc = _mc(n=4, k=2)
    with torch.no_grad():
        mc.mask.copy_(torch.tensor([1.7, -0.2, 0.4, 0.9]))
    clip_masks_(mc)
    assert mc.mask.min() >= 0 and mc.mask.max() <= 1
    mc.freeze()
    assert bool(mc.frozen) and not mc.mask.requires_grad
    mc.train()
    assert mc.selected().tolist() == [0, 3]                  # frozen: same set in train and eval
    ys = [rand(1, 8, 2, 2, seed=i).requires_grad_(True) for i in range(4)]
    mc(*ys).sum().backward()
    assert mc.mask.grad is None


@pytest.mark.parametrize("init,expect", [("prev", [0, 0, 0, 1]), ("full", [1, 1, 1, 1]),
                                         ("uniform", [0.5] * 4)])
def test_inits(init, expect):
    assert _mc(n=4, init=init).mask.tolist() == expect


def test_random_init_is_seeded():
    assert torch.equal(_mc(init="random", seed=3).mask, _mc(init="random", seed=3).mask)
    assert not torch.equal(_mc(init="random", seed=3).mask, _mc(init="random", seed=4).mask)


def test_centered_gradient_is_the_raw_one_minus_its_mean():
    ys = [rand(2, 8, 4, 4, seed=i).relu() for i in range(4)]
    grads = {}
    for mode in ("raw", "centered"):
        mc = _mc(n=4, k=2, grad=mode)
        mc.train()
        (mc(*ys) * rand(2, 8, 4, 4, seed=7)).sum().backward()
        grads[mode] = mc.mask.grad
    raw = grads["raw"]
    assert torch.allclose(grads["centered"], raw - raw.mean(), atol=1e-6)
    assert abs(float(grads["centered"].sum())) < 1e-5


def test_freeze_rejects_a_wrong_selection():
    mc = _mc(n=4, k=2)
    with pytest.raises(ValueError, match="needs 2 distinct indices"):
        mc.freeze([1])
    with pytest.raises(ValueError, match="needs 2 distinct indices"):
        mc.freeze([1, 7])


def test_host_mirrors_follow_every_update(masked_resnet20):
    """The sampling state read without a device sync always equals the buffers and m~."""
    import copy

    from mcgraph.mask_ops import sync_masks_to_host
    from mcgraph.masks import mask_modules
    gm = masked_resnet20(fan_in=2, init="uniform")
    masks = mask_modules(gm)
    opt = torch.optim.SGD(mcgraph.mask_parameters(gm), lr=0.3)
    x = torch.randn(4, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    for i in range(3):
        if i % 2:
            sync_masks_to_host(gm)                 # batched read on odd steps, on demand on even
        gm.train()(x).sum().backward()
        opt.step()
        mcgraph.clip_masks_(gm)
        for m in masks:                            # the optimizer and clip moved m~: mirror follows
            assert torch.equal(m._m2(), m.mask.detach().view(m.rows, -1))
            assert m._step_h == int(m.step) == i + 1
    other = masked_resnet20(fan_in=2, init="uniform")
    mcgraph.freeze_masks(gm)
    other.load_state_dict(copy.deepcopy(gm.state_dict()))
    for a, b in zip(masks, mask_modules(other)):
        assert b.is_frozen and b._step_h == 3 and torch.equal(b._chosen_h, a._chosen_h)
        assert torch.equal(b._m2(), a.mask.detach().view(a.rows, -1))
        assert torch.equal(b.selected_rows(), a.selected_rows())


# ------------------------------------------------------------------ decisive top-K (no index ties)
def _push(mc, grads, constraint, lr=0.5):
    """SGD steps on m~ with the given gradients, each followed by the constraint."""
    opt = torch.optim.SGD([mc.mask], lr=lr)
    for g in grads:
        mc.mask.grad = torch.as_tensor(g, dtype=torch.float32)
        opt.step()
        mcgraph.constrain_masks_(mc, constraint)


def test_box_ranks_saturated_entries_by_the_push_not_the_index():
    mc = _mc(n=3, k=1)
    _push(mc, [[-1.0, -1.0, -2.0]] * 10, "box")
    assert mc.mask.detach().tolist() == [1.0, 1.0, 1.0]     # all saturated: a tie in m~ itself
    assert mc.topk().tolist() == [2]                       # the entry pushed hardest wins
    mc.freeze()
    assert mc.selected().tolist() == [2]


def test_overflow_resets_inside_and_survives_a_checkpoint():
    mc = _mc(n=3, k=1)
    _push(mc, [[-1.0, 0.0, -2.0]] * 4, "box")
    assert mc.overflow[2] > mc.overflow[0] > 0 and mc.overflow[1] == 0
    _push(mc, [[0.5, 0.0, 0.0]], "box", lr=1.0)            # entry 0 leaves the boundary
    assert 0 < float(mc.mask.detach()[0]) < 1 and float(mc.overflow[0]) == 0.0
    other = _mc(n=3, k=1)
    other.load_state_dict(mc.state_dict())
    assert torch.equal(other.overflow, mc.overflow) and other.topk().tolist() == mc.topk().tolist()
    state = {k: v for k, v in mc.state_dict().items() if k != "overflow"}   # an older checkpoint
    other.load_state_dict(state)
    assert float(other.overflow.abs().sum()) == 0.0


@pytest.mark.parametrize("k", [1, 2])
def test_simplex_keeps_rows_summing_to_k_with_at_most_k_at_one(k):
    mc = _mc(n=5, k=k)
    g = torch.Generator().manual_seed(0)
    _push(mc, [torch.randn(5, generator=g) - 3.0 for _ in range(30)], "simplex", lr=0.3)
    m = mc.mask.detach()
    assert float(m.min()) >= 0.0 and float(m.max()) <= 1.0
    assert abs(float(m.sum()) - k) < 1e-5
    assert int((m > 1 - 1e-6).sum()) <= k


@pytest.mark.parametrize("constraint", ["box", "simplex"])
def test_equally_good_candidates_win_equally_often(constraint):
    """Two candidates with the same expected gradient: the lower index must not be favoured.
    (With ties broken by index, the box clip made index 0 win most trials.)"""
    from mcgraph.masks import KHotMask
    trials = 200
    mask = KHotMask("t", (trials, 2), fan_in=1)             # one independent trial per row
    g = torch.Generator().manual_seed(0)
    _push(mask, [-1.0 + 0.5 * torch.randn(trials, 2, generator=g) for _ in range(40)], constraint,
          lr=0.05)
    wins = int((mask.topk_rows()[:, 0] == 0).sum())
    assert 0.4 < wins / trials < 0.6, wins


def test_project_rows_matches_a_sorted_reference():
    from mcgraph.constraints import project_rows_
    g = torch.Generator().manual_seed(1)
    v = torch.randn(6, 7, generator=g) * 2
    k = torch.tensor([1, 2, 3, 1, 7, 4])
    x = project_rows_(v.clone(), k)
    assert torch.allclose(x.sum(1), k.float(), atol=1e-5)
    # the projection's optimality: x = clamp(v - tau) with one tau per row
    for r in range(6):
        tau = (v[r] - x[r])[(x[r] > 1e-6) & (x[r] < 1 - 1e-6)]
        assert tau.numel() == 0 or float(tau.max() - tau.min()) < 1e-5


# ------------------------------------------------------------------ a row pushed out entirely
def _prev_mc(n=4, k=1, prev=1):
    return MaskConnect("layer9.9", [f"c{i}" for i in range(n)], [(1, 1)] * n, [8] * n, 8,
                       fan_in=k, init="uniform", prev=prev, grad="raw")


@pytest.mark.parametrize("k,want", [(1, [1]), (2, [1, 3])])
def test_a_row_pushed_to_zero_warns_once_and_falls_back_to_the_original_input(k, want):
    import warnings
    mc = _prev_mc(k=k)
    _push(mc, [[1.0, 1.0, 1.0, 1.0]] * 3, "box")            # raw, equal pushes: every m~ at 0
    assert mc.mask.detach().tolist() == [0.0] * 4
    mc.eval()
    with pytest.warns(UserWarning, match=r"KHotMask: layer9.9: every m~ of row 0 is 0.*"
                                         r"sampling is uniform.*original input"):
        got = mc.selected().tolist()
    assert got == want                        # prev first, then the nearest earlier candidates
    with warnings.catch_warnings():
        warnings.simplefilter("error")        # once per mask
        assert mc.selected().tolist() == want
        mc.train()
        assert len(mc.sample()) == k
        mc.freeze()
    assert mc.selected().tolist() == want


def test_a_row_at_zero_still_ranks_by_the_push_when_it_differs():
    mc = _prev_mc(k=1, prev=3)
    _push(mc, [[1.0, 0.5, 2.0, 1.0]] * 3, "box")            # all at 0, pushed unequally
    with pytest.warns(UserWarning, match="layer9.9"):
        assert mc.topk().tolist() == [1]                     # least pushed, not prev


def test_sampling_warns_about_a_zero_row():
    mc = _prev_mc(k=1)
    with torch.no_grad():
        mc.mask.zero_()
    mc.train()
    with pytest.warns(UserWarning, match="layer9.9: every m~ of row 0 is 0"):
        mc.sample()


def test_square_zero_rows_fall_back_to_their_own_branch():
    from mcgraph.masks import KHotMask
    mask = KHotMask("layer2.1", (3, 3), fan_in=1)
    with torch.no_grad():
        mask.mask[1].zero_()
        mask.mask[0].copy_(torch.tensor([0.2, 0.1, 0.9]))
        mask.mask[2].zero_()
    with pytest.warns(UserWarning, match=r"layer2.1: every m~ of rows \[1, 2\] is 0"):
        assert mask.topk_rows().tolist() == [[2], [1], [2]]


# ------------------------------------------------------------------ freeze with tensors / arrays
def test_freeze_accepts_tensors_and_arrays_of_indices():
    import numpy as np

    from mcgraph.masks import KHotMask
    for chosen in (torch.tensor([3, 1]), np.array([1, 3]), [np.int64(1), np.int64(3)],
                   [torch.tensor(1), torch.tensor(3)], [np.array([1, 3])], (1, 3),
                   torch.tensor([[1, 3]]), np.array([[3, 1]], dtype=np.int32)):
        mc = _mc(n=4, k=2)
        mc.freeze(chosen)
        assert mc.selected().tolist() == [1, 3], chosen
    square = KHotMask("b", (3, 3), fan_in=1)
    square.freeze(torch.tensor([[2], [0], [1]]))
    assert square.selected_rows().tolist() == [[2], [0], [1]]
    other = KHotMask("b", (3, 3), fan_in=1)
    other.freeze(square.chosen)                     # a K-hot bool tensor of the mask's shape
    assert torch.equal(other.chosen, square.chosen)
    other.freeze(np.array([[1], [1], [0]]))
    assert other.selected_rows().tolist() == [[1], [1], [0]]


@pytest.mark.parametrize("bad,match", [
    (torch.tensor([1, 1]), r"row 0 needs 2 distinct indices in 0..3, got \[1, 1\]"),
    (torch.tensor([1, 4]), r"needs 2 distinct indices in 0..3, got \[1, 4\]"),
    (torch.tensor([-1, 2]), r"got \[-1, 2\]"),
    (torch.tensor([2]), r"needs 2 distinct indices"),
    ([1, 1], r"needs 2 distinct indices"),
    (torch.tensor([[1, 2], [0, 3]]), r"needs 1 rows of indices, got 2"),
    (torch.tensor([0.0, 2.0]), r"indices must be integers, got torch.float32"),
    (torch.tensor(2), r"indices must be 1-D or 2-D, got 0-D"),
    ([1.0, 2.0], r"indices must be integers, got \[1.0, 2.0\]"),
    (torch.zeros(4, dtype=torch.bool), r"K-hot"),
])
def test_freeze_validates_tensors(bad, match):
    mc = _mc(n=4, k=2)
    with pytest.raises(ValueError, match=match):
        mc.freeze(bad)
    assert not mc.is_frozen
