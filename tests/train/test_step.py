"""The one optimizer step the trainer and the benchmarks run (mcgraph.train.step): eager, with
device wiring, and the rules for CUDA graphs and the autocast dtype (the graph itself needs CUDA:
tests/test_cuda.py)."""
import pytest
import torch
from helpers import masked_resnet20

from mcgraph.errors import McGraphError
from mcgraph.masks import mask_modules
from mcgraph.train.config import TrainConfig
from mcgraph.train.step import Stepper, amp_dtype


def _setup(fan_in=2, seed=0, **cfg):
    gm = masked_resnet20(fan_in, "uniform", seed=seed, size=8).train()
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(8, 1, 8, 8, generator=g), torch.randint(0, 10, (8,), generator=g)
    return gm, Stepper(gm, TrainConfig(model="resnet20", device="cpu", **cfg),
                       torch.device("cpu")), x, y


@pytest.mark.parametrize("on_device", [False, True])
def test_steps_train_weights_and_masks_within_the_constraint(on_device):
    gm, st, x, y = _setup()
    if on_device:
        st.wire_on_device()
    masks = [m.mask.detach().clone() for m in mask_modules(gm)]
    w = gm.conv1.weight.detach().clone()
    losses = [float(st.step(x, y)[0]) for _ in range(4)]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert not torch.equal(w, gm.conv1.weight)
    moved = [not torch.equal(a, m.mask.detach()) for a, m in zip(masks, mask_modules(gm))]
    assert sum(moved) >= len(moved) - 1          # layer1.0 has one candidate: nothing to learn
    for m in mask_modules(gm):                   # the simplex: rows sum to K within [0, 1]
        v = m.mask.detach()
        assert float(v.min()) >= 0 and float(v.max()) <= 1
        assert abs(float(v.sum()) - m.fan_in) < 1e-4
    st.sync_host()
    assert all(m._step_h == int(m.step) == 4 for m in mask_modules(gm))


def test_check_sees_the_loss_before_the_update_in_eager_steps():
    gm, st, x, y = _setup()
    w = gm.conv1.weight.detach().clone()

    def check(loss):
        raise RuntimeError("stop here")
    with pytest.raises(RuntimeError):
        st.step(x, y, check)
    assert torch.equal(w, gm.conv1.weight)       # a diverged step never reaches the weights


def test_device_wiring_learns_like_the_host_sampler():
    """Same settings, different draws: both lower the loss on a fixed batch."""
    for on_device in (False, True):
        gm, st, x, y = _setup(seed=1, lr=0.05)
        if on_device:
            st.wire_on_device()
        first = float(st.step(x, y)[0])
        for _ in range(15):
            last = float(st.step(x, y)[0])
        assert last < first * 0.8, (on_device, first, last)


@pytest.mark.parametrize("cfg,msg", [({"cuda_graph": True}, "needs device 'cuda'")])
def test_graph_options_that_cannot_apply_are_one_line_errors(cfg, msg):
    with pytest.raises(McGraphError) as e:
        _setup(**cfg)
    assert msg in str(e.value) and "\n" not in str(e.value)


def test_graphs_only_where_they_can_run():
    fp16 = TrainConfig(model="m", amp_dtype="float16")
    cuda = torch.device("cuda")
    assert not Stepper._want_graphs(TrainConfig(model="m"), torch.device("cpu"), 1, False)
    assert Stepper._want_graphs(TrainConfig(model="m"), cuda, 1, False)
    assert not Stepper._want_graphs(TrainConfig(model="m"), cuda, 2, False)     # DDP: eager
    assert not Stepper._want_graphs(fp16, cuda, 1, True)                        # loss scaling
    with pytest.raises(McGraphError, match="loss scaling"):
        Stepper._want_graphs(TrainConfig(model="m", amp_dtype="float16", cuda_graph=True), cuda,
                             1, True)
    assert amp_dtype(fp16, cuda) == torch.float16
    assert amp_dtype(TrainConfig(model="m", amp_dtype="bfloat16"), torch.device("cpu")) \
        == torch.bfloat16
